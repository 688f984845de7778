//! An embedded, file-backed cache: one file per key, written atomically, shared
//! safely by threads and processes, bounded in size, honest about damage.
//!
//! fscache is Python cachelib's `FileSystemCache` (the store behind Flask-Session's
//! file sessions) done right: no count file rewritten per write, no full directory
//! scan per write once past the threshold, locks for read-modify-write, checksums so a
//! damaged file is never returned as data, and cleanup done in small bounded steps,
//! so no insert ever stalls on a directory sweep.
//!
//! ```
//! use std::time::Duration;
//! use fscache::{FileSystemCache, Ttl};
//!
//! # fn main() -> fscache::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let cache = FileSystemCache::builder(dir.path().join("cache"))
//!     .threshold(10_000)
//!     .default_ttl(Duration::from_secs(600))
//!     .open()?;
//!
//! cache.set("user:42", &("Ada", 36))?;
//! assert_eq!(cache.get::<(String, u32)>("user:42")?, Some(("Ada".into(), 36)));
//!
//! assert!(cache.add("lock:report", &true, Ttl::After(Duration::from_secs(30)))?);
//! assert!(!cache.add("lock:report", &true, Ttl::Default)?); // already there
//!
//! assert_eq!(cache.inc("visits", 1)?, 1);
//! assert!(cache.delete("user:42")?);
//! assert_eq!(cache.len()?, 2);
//! # Ok(())
//! # }
//! ```
//!
//! Server-side sessions for sync web servers (Flask-Session's model) are in
//! [`session`] (feature `sessions`, on by default), on top of any [`Store`]: this
//! cache, or Redis, PostgreSQL, SQLite or Memcached ([`store`], one cargo feature
//! each), picked at run time by a URL with [`store::open`]. With the feature `flask`,
//! the same sessions can be shared with a live Flask app: its Flask-Session cachelib
//! directory or Redis records, its signed session ids, and Flask's own signed cookie
//! session (`fscache::flask`).
//!
//! # On disk
//!
//! ```text
//! <dir>/FSCACHE            marker naming the format version; open() refuses a non-empty
//!                          directory without it (the cache deletes files)
//! <dir>/fscache.state      the shared entry count, memory-mapped by every process
//! <dir>/locks/             stripe lock files (flock)
//! <dir>/00 … ff/           256 shards; an entry is <shard>/<blake3(key) in hex>
//! ```
//!
//! An entry file holds a 36-byte header (magic `FSCE`, format version, codec, expiry
//! in Unix milliseconds, a per-write id, lengths, a header check), the key, the
//! payload and a 16-byte blake3 checksum of all of it. Keys never become path
//! components, so no key can reach outside the directory. Files are created 0600
//! and directories 0700 by default; no symlink inside the directory is followed.
//!
//! # Guarantees
//!
//! - **Atomic writes.** A write goes to a temp file in the entry's shard and is
//!   renamed over the entry. Readers, and the cache after a crash of any process, see
//!   the old entry or the new one, never a partial one. Temp files of crashed writers
//!   are removed by the next step or sweep that meets them once [`STALE_TEMP_AGE`] old.
//! - **Durability** is chosen with [`Durability`]: `Rename` (default) does not
//!   `fsync` — a power loss may lose recent writes; `Fsync` syncs the file before the
//!   rename and the directory after, so a returned write survives power loss.
//! - **Many threads and processes**, including processes forked from one that
//!   already used the handle (pre-fork servers: lock files are re-opened per
//!   process). What is atomic against what — Redis without `WATCH` is the model:
//!
//!   | operation | lock | atomic against |
//!   |---|---|---|
//!   | `get`, `get_bytes`, `has` | none | everything (a rename is atomic: the old entry or the new one) |
//!   | `set`, `set_bytes` | none (portable mode: the key's stripe lock) | everything; concurrent `set`s of one key: last rename wins |
//!   | `add` | stripe lock + no-replace rename | everything, plain `set` included: a `set` that lands first wins, `add` returns `false` |
//!   | `inc`, `dec`, `update` | stripe lock | each other, `add` and `delete` of the key; a plain `set` racing them is ordered before or after (it may be overwritten by their write) |
//!   | `delete` | stripe lock | everything: once it returns, no read-modify-write that started before it writes the key back |
//!   | `prune`, `clear` | sweep lock (`prune`), stripe lock per eviction | never delete an entry written after they decided to remove it |
//!   | cleanup steps (a write's eviction and expiry steps, `prune_step`) | a walker (per handle, `try_lock`); the stripe per eviction, `try_lock`: a busy stripe is skipped, never waited for | as `prune`; never block a writer, nor wait for one |
//!
//!   Stripe locks are an in-process mutex plus `flock` on one of 64 lock files. An
//!   [`update`](FileSystemCache::update) closure that calls a locking operation of
//!   the same directory gets [`Error::Reentrant`] instead of a deadlock. Evictions
//!   (steps, sweeps and [`clear`](FileSystemCache::clear)) move a name aside, check
//!   it against the per-write id read earlier, and put it back (with a no-replace
//!   rename, so a newer `set` is never overwritten) if it changed. (During that
//!   moment — microseconds, only when an eviction races a rewrite of the very entry it
//!   is evicting — a plain `get` of that key can miss.)
//! - **Filesystems.** `open` probes the directory: where `renameat2` has
//!   `RENAME_NOREPLACE` and `RENAME_EXCHANGE` (Linux: ext4, xfs, btrfs, tmpfs,
//!   overlayfs), writes take no lock; elsewhere (NFS, SMB, FUSE such as sshfs and
//!   Docker Desktop shares, 9p, vboxsf; macOS and FreeBSD) the
//!   [portable mode](RenameMode::Portable) keeps the same guarantees with `linkat` +
//!   `unlinkat` and a stripe lock per write. A filesystem with neither, or without
//!   `flock`, is refused with [`Error::UnsupportedFilesystem`]. [`Stats::rename_mode`]
//!   says which mode runs, and a portable-mode open logs it at warn.
//! - **Committed means committed.** Once a write's rename is done, nothing after it
//!   turns the result into an error: a cleanup step it runs that fails is logged and
//!   counted in [`Stats::sweep_errors`], and a replaced entry that cannot be unlinked
//!   is left as litter for the next step or sweep ([`Stats::litter`]). The one exception is
//!   `Durability::Fsync`, whose directory `fsync` failing is reported (the write is
//!   visible but may not survive power loss).
//! - **Damage is a miss.** A truncated, zero-byte, bit-flipped, foreign or
//!   other-version file — or a directory, FIFO or socket where an entry should be
//!   (entries are opened non-blocking) — is never returned as data: it reads as a
//!   miss, is removed, is counted in [`Stats::damaged`] and logged through the `log`
//!   crate. A damaged `fscache.state` is repaired in place at the next `open`.
//! - **Not promised:** several *machines* sharing one network directory keep the
//!   per-key guarantees (NFS locks, server-side links and renames) but not one shared
//!   entry count (the count page is shared through each machine's page cache), so
//!   the threshold is per machine there; Windows (a build stops with a
//!   `compile_error!`).
//!
//! # Threshold
//!
//! With a threshold `T > 0` (default 500), every write that creates a new entry adds
//! one to a counter in the memory-mapped `fscache.state` (an atomic add: no syscall),
//! and every delete subtracts one. No write ever sweeps the directory: a write that
//! makes a new name while the count is past `T` runs one **bounded step** with one of
//! its handle's four *walkers* (taken with `try_lock`; a fresh one if all are busy, so
//! no writer waits for another's cleanup). The walker reads on where it stopped,
//! one shard directory at a time (each new shard from a counter in the shared page,
//! so all walkers of all processes spread over the 256 shards): it reads
//! [`eviction_samples`](FileSystemCacheBuilder::eviction_samples) entry headers (36
//! bytes each; default [`EVICTION_SAMPLES`] = 2) per entry it must evict, removes
//! the expired, damaged and stale files it meets, keeps the [`POOL`] = 16
//! nearest-expiry live entries it has seen (Redis's eviction pool), and evicts the
//! pool's nearest-expiry entries until the count is back at `T` — at most
//! [`EVICT_PER_STEP`] = 4 per step. A busy stripe lock (an `update` in progress) is
//! skipped, not waited for. (In the [portable mode](RenameMode::Portable) a `set`
//! commits under its key's stripe lock, so it can wait for the one eviction in
//! progress on that stripe — a rename, a header read and an unlink — never for a
//! step or a sweep.)
//!
//! - **Latency.** A step's work is bounded whatever the size of the cache: it reads a
//!   few headers and names, and only a step that finds nothing evictable reads on, at
//!   most 64 names or one pass over the 256 shard directories. Measured
//!   (`benches/churn.rs`, tmpfs, one writer): the slowest insert of 20,000 to 200,000
//!   at thresholds 1,000 to 1,000,000 took 1.0–1.8 ms (the old whole-directory sweep:
//!   21.6 ms at 1,000, 2.3 s at 100,000); see the README for the tables.
//! - **Bound.** At any instant the shared count exceeds `T` by at most the number of
//!   writes in flight (threads, in all processes, between their commit and the end of
//!   their step), plus what steps could not evict yet (candidates on a busy stripe),
//!   which the next steps take. `tests/bounded.rs` checks it at an instant, from a
//!   second handle, during 4-thread and 2-process churn: never more than `T + W`.
//! - **Order.** Eviction is nearest-expiry first *within the pool*, not over the whole
//!   directory: with `s` samples per eviction, a step evicts the best of what it has
//!   seen lately. Measured (`tests/bounded.rs`, 2,000 entries of distinct expiries,
//!   1,000 longer-lived inserts): 82% of the evicted entries were among the 1,000
//!   the exact order would evict at `s = 2`, 92% at 4, 97% at 8, and about random
//!   at 1; no never-expiring entry was evicted while others remained, nor any of the
//!   longer-lived new ones at `s ≥ 2`. Damage found by a step is removed before it
//!   evicts any live entry (damage never pushes valid entries out).
//! - **Own write.** A step never evicts the entry its own write made, even when it
//!   ties on expiry with everything else (a `set` then a `get` in one thread finds
//!   the value; another writer's step may evict it later). If that entry is the only
//!   one in the pool that expires, the step reads on for another before it evicts a
//!   never-expiring one (`tests/bounded.rs`, `a_writes_own_eviction_step_spares_the_entry_it_wrote`).
//! - **Off the request path.** [`prune_step`](FileSystemCache::prune_step), called
//!   from a background thread or a cron job, does the same work with a budget you
//!   choose and evicts down to a little under `T` (1%, or up to 64 entries), so that
//!   writes seldom find the count past `T` and do no eviction themselves.
//! - **Full sweep.** [`prune`](FileSystemCache::prune) still reads every header and
//!   evicts exactly in expiry order down to the low-water mark
//!   ([`low_water_percent`](FileSystemCacheBuilder::low_water_percent), 50% of `T` by
//!   default); nothing runs it automatically.
//!
//! **Byte budget.** [`max_bytes`](FileSystemCacheBuilder::max_bytes) bounds the total
//! length of the entry files instead of (or as well as) their number: a write that
//! leaves the shared total past the budget runs the same bounded step, which evicts
//! until the total is back under it. The total is kept in `fscache.state` beside the
//! count; see the method for its cost and exactness.
//!
//! **Eviction policies.** [`eviction`](FileSystemCacheBuilder::eviction) picks the
//! order; the steps, the pool and the bound above are the same for all three:
//!
//! | [`Eviction`] | goes first | a step reads per sampled entry | a `get` |
//! |---|---|---|---|
//! | `NearestExpiry` (default) | nearest expiry, never-expiring last (cachelib) | its header | nothing more |
//! | `LeastRecentlyStored` | oldest write (FIFO) | its header and `statx` (mtime) | nothing more |
//! | `LeastRecentlyUsed` | oldest read or write | its header and `statx` (mtime) | one `futimens`, once per entry per [`LRU_STAMP_RESOLUTION`] per handle |
//!
//! The recency policies rank by the entry file's modification time: a write sets it,
//! and under LRU a read stamps it (the entry's bytes are never rewritten). Measured
//! (`benches/ops.rs`, tmpfs, 200 B): a `get` that stamps 4.72 µs against 3.96 µs
//! unstamped; a hot key's repeated reads 3.92 µs. `tests/eviction.rs`: with LRU,
//! 93 of 100 keys read often survived 600 new keys into a full 1,000 (6 under
//! least-recently-stored, 55 under nearest-expiry, where they were the oldest
//! writes). Expired entries go first under every policy.
//!
//! Counting is exact under any concurrency in both rename modes; it can drift only
//! after a crash between a rename and the counter update, or when files are removed by
//! hand, and the next [`prune`](FileSystemCache::prune), [`len`](FileSystemCache::len)
//! or [`clear`](FileSystemCache::clear) that runs while no other writer changes the
//! count corrects it. Opening a cache reads no entry, whatever its size. A handle keeps
//! at most 69 descriptors open: 64 stripe lock files, the sweep lock and its four
//! walkers' directory streams.
//!
//! # Expiry without a threshold
//!
//! Expired entries also go when the cache is below its threshold or unbounded
//! (`threshold(0)`, as for sessions): now and then a write runs one *expiry step*
//! that reads up to [`expiry_budget`](FileSystemCacheBuilder::expiry_budget) entry
//! headers (default 8), 64 names or 9 shard directories, and removes the expired and
//! damaged entries it meets. While a quarter or more of what the step read was
//! expired, it reads another round, up to 16 rounds or 2 ms (as Redis's active
//! expiry does), so the removal keeps up with the writes whatever their mix.
//!
//! - **Cadence.** Every 32nd write of a handle at first; a step that finds nothing
//!   doubles the interval (up to 1,024 writes), one that finds mostly expired entries
//!   halves it (down to 8).
//! - **Nothing to find, no step.** A write of an entry with a TTL lowers a shared
//!   *expiry floor* (the earliest expiry on disk, in the state file); a write runs no
//!   step while the clock is before it, so a cache whose entries have no TTL, or whose
//!   TTLs all lie ahead, pays nothing. Only a full [`prune`](FileSystemCache::prune)
//!   raises the floor again. The floor only decides whether steps look: a read never
//!   returns an expired entry.
//! - **Bound.** Under any write mix, about a quarter of the files at most are expired
//!   ones: under the worst (every write a new key that expires soon) the files on disk
//!   stay within 2 × the live entries, measured at most 1.6 × (`tests/expiry.rs`).
//!   200 expired entries went within 56 writes of new keys, 1,000 expired within 144
//!   overwrites of one key (`tests/bounded.rs`). Where steps had found nothing for a
//!   long time, the first expired entries are noticed within 1,024 writes.
//!
//! [`prune_step`](FileSystemCache::prune_step) runs the same step from a background
//! thread, and a read removes an expired entry it meets.
//!
//! # Hot path
//!
//! A `set` of a new key is `openat2` (temp, `O_EXCL`) + `write` + `close` +
//! `renameat2(RENAME_NOREPLACE)`; an overwrite commits with
//! `renameat2(RENAME_EXCHANGE)` and unlinks the replaced entry, which keeps the entry
//! count exact while other processes delete (the expiry steps add nothing while no
//! entry can have expired, and 0.05 syscalls per write, amortized, once one has). A `get` is `openat2` + `read` ×2 + `close`
//! (no `fstat`: the header declares the length), a miss one failed `openat2`, a
//! `delete` `flock` + `unlinkat` + `flock` (its stripe lock).
#![deny(unsafe_code, missing_docs)]
#![warn(rust_2018_idioms)]

#[cfg(not(unix))]
compile_error!(
    "fscache supports Unix only (Linux, macOS, FreeBSD): its guarantees rest on openat, \
     renameat/linkat, flock and a shared mmap of the count file. Windows is not supported."
);

/// Declares items for Unix only, so a Windows build stops at the one error above.
macro_rules! unix {
    ($($item:item)*) => { $( #[cfg(unix)] $item )* };
}

unix! {
    // Layers, top down; a module imports only from layers below it (and from the
    // leaves: error, clock, hooks, merge). `.ci/layers.py` checks this.
    #[cfg(feature = "sessions")]
    pub mod session;
    #[cfg(feature = "flask")]
    pub mod flask;
    pub mod store;
    #[cfg(any(feature = "tower-sessions", feature = "actix", feature = "axum"))]
    mod adapters;
    #[cfg(feature = "axum")]
    pub use adapters::axum;
    #[cfg(feature = "tower-sessions")]
    pub use adapters::tower as tower_sessions;
    #[cfg(feature = "actix")]
    pub use adapters::actix;
    mod cache;
    mod options;
    mod inspect;
    mod codec;
    #[cfg(feature = "json")]
    mod finite;
    mod engine;
    mod disk;
    mod clock;
    mod error;
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub mod hooks;
    #[cfg(not(feature = "test-hooks"))]
    mod hooks;
    mod merge;

    pub use cache::{FileSystemCache, Stats};
    pub use merge::Merge;
    pub use disk::entry::MAX_KEY_LEN;
    pub use clock::{Clock, ManualClock, SystemClock};
    pub use codec::Format;
    pub use error::{BoxError, EngineErrorKind, Error, Result};
    pub use options::{
        Durability, FORCE_PORTABLE_ENV, FileSystemCacheBuilder, MAX_VALUE_SIZE_LIMIT, Ttl,
    };
    pub use engine::{
        DirReport, EVICT_PER_STEP, EVICTION_SAMPLES, Eviction, Keys, LRU_STAMP_RESOLUTION, POOL, PruneReport,
        RenameMode, STALE_TEMP_AGE,
    };
    pub use store::Store;
    pub use inspect::{EntryFile, EntryHeader, inspect_entry, inspect_file};
}

/// Internal entry points for `fuzz/` (feature `fuzzing`); not a public API.
#[cfg(all(unix, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing {
    use crate::disk::entry::{self, EntryWriter};

    /// Decodes arbitrary bytes as an entry file; whatever decodes must re-encode to
    /// the same bytes. Panics on a violation.
    pub fn check_entry_bytes(data: &[u8]) {
        let _ = entry::Header::parse(data);
        if let Ok(e) = entry::decode(data, 1 << 20) {
            let h = e.header;
            let mut w =
                EntryWriter::start(h.codec, h.expires_at, h.write_id, e.key, e.payload.len());
            w.payload().extend_from_slice(e.payload);
            assert_eq!(
                w.finish(),
                data,
                "decoded entry does not re-encode identically"
            );
        }
    }
}

/// The README's examples, compiled and run as doctests.
#[cfg(all(unix, doctest))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
