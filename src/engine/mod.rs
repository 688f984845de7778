//! The engine: the state one open cache directory shares between its handles and
//! the operations on it. The public facade ([`crate::FileSystemCache`]) calls in
//! here; the engine calls down into [`crate::disk`] (on-disk format, locks, counter,
//! syscalls) and never up.
//!
//! | file | what |
//! |---|---|
//! | `adopt.rs` | opening a directory: refuse foreign ones, probe, marker, counter |
//! | `entries.rs` | one entry: read, write (temp + rename), delete, evict-if-same |
//! | `scan.rs` | listing shards, reading headers: `len`, `clear`, `keys` |
//! | `sweep.rs` | removal policy: bounded steps, eviction, the full `prune` |

mod adopt;
mod entries;
mod scan;
mod sweep;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::Clock;
use crate::disk::counter::SharedState;
use crate::disk::entry::{CHECKSUM_LEN, EntryWriter, HEADER_LEN, MAX_KEY_LEN};
use crate::disk::layout::{self, EntryPath};
use crate::disk::lock::{LockGuard, Locks};
use crate::disk::sys::{Commit, Root};
use crate::error::{Error, Result};

pub(crate) use crate::disk::entry::Codec;
pub use crate::disk::sys::RenameMode;
pub use scan::{DirReport, Keys};
/// How many shard directories a cache directory has.
pub(crate) const SHARD_COUNT: usize = crate::disk::layout::SHARDS;
pub use sweep::{EVICT_PER_STEP, EVICTION_SAMPLES, POOL, PruneReport, STALE_TEMP_AGE};

/// What a completed write guarantees after a crash.
///
/// Both modes are atomic: a reader, or the cache after a crash of the writing
/// process, sees the old entry or the new one, never a mix. They differ on power loss
/// or a kernel crash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Durability {
    /// Write a temp file and rename it over the entry; no `fsync`. A crash of the
    /// process loses nothing that was written; a power loss may lose recent writes
    /// (or, on filesystems without rename ordering, leave the entry empty — such a
    /// file is detected by its checksum and read as a miss). The default: right for a
    /// cache and for sessions.
    #[default]
    Rename,
    /// Additionally `fsync` the temp file before the rename and the shard directory
    /// after it (and after a delete): once the call returns, the change survives power
    /// loss, at the cost of a few milliseconds per write on real disks.
    Fsync,
}

/// Which entries go first when the cache is past its threshold (see
/// [`FileSystemCacheBuilder::eviction`](crate::FileSystemCacheBuilder::eviction)).
///
/// Expired entries go first under every policy. The order is approximate in the same
/// way for all three: a write's eviction step evicts the best candidates of a pool
/// built from the few entries each step samples (Redis's eviction pool), and a full
/// [`prune`](crate::FileSystemCache::prune) evicts in the exact order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Eviction {
    /// The entries nearest to expiry first, never-expiring entries last: cachelib's
    /// order. Reads the entry headers only. The default.
    #[default]
    NearestExpiry,
    /// The entries stored (written) longest ago first: FIFO by the last write. Reads
    /// each sampled entry's modification time (one `statx` per header the steps read);
    /// a `get` costs nothing more.
    LeastRecentlyStored,
    /// The entries used (read or written) longest ago first. A `get` that finds an
    /// entry stamps the file's modification time with the time of the read (one
    /// `futimens` on the descriptor the read opened; the entry's bytes are never
    /// rewritten), unless this handle stamped the same entry less than
    /// [`LRU_STAMP_RESOLUTION`] ago: a key read a thousand times a second costs one
    /// stamp a second, and the order's resolution is that second (and the
    /// filesystem's timestamp resolution, a few milliseconds on Linux, between entries
    /// stamped or written further apart). The steps read each sampled entry's
    /// modification time, as under [`LeastRecentlyStored`](Self::LeastRecentlyStored).
    /// All handles on a directory should use this policy: reads through one that
    /// does not stamp do not count as uses.
    LeastRecentlyUsed,
}

/// Under [`Eviction::LeastRecentlyUsed`], reads of one entry through one handle
/// within this long stamp it once.
pub const LRU_STAMP_RESOLUTION: Duration = Duration::from_millis(1024);

/// The per-handle memory of recent stamps (see `Engine::lru_stamp_due`): slots.
const LRU_STAMP_SLOTS: usize = 1024;

/// What the engine needs to open a directory (the builder's validated options).
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) dir: PathBuf,
    pub(crate) threshold: usize,
    /// The byte budget (0: none).
    pub(crate) max_bytes: u64,
    pub(crate) low_water_percent: u8,
    pub(crate) default_ttl: Option<Duration>,
    pub(crate) codec: Codec,
    pub(crate) file_mode: u32,
    pub(crate) dir_mode: u32,
    pub(crate) durability: Durability,
    pub(crate) max_value_size: usize,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) force_portable_renames: bool,
    pub(crate) stale_temp_age: Duration,
    pub(crate) expiry_budget: usize,
    pub(crate) eviction_samples: usize,
    pub(crate) eviction: Eviction,
    /// Open only a directory that is already an fscache, and record nothing in it
    /// (a tool's handle: see `FileSystemCacheBuilder::open_existing`).
    pub(crate) existing_only: bool,
}

/// One open cache directory, shared by the clones of a handle.
#[derive(Debug)]
pub(crate) struct Engine {
    dir: PathBuf,
    root: Root,
    state: SharedState,
    locks: Locks,
    threshold: usize,
    /// The byte budget: the total length of the entry files it keeps to (0: none).
    max_bytes: u64,
    low_water_percent: u8,
    default_ttl: Option<Duration>,
    codec: Codec,
    file_mode: u32,
    dir_mode: u32,
    /// The umask strips bits of `file_mode`, so new files need an explicit `fchmod`.
    needs_fchmod: bool,
    durability: Durability,
    max_value_size: usize,
    clock: Arc<dyn Clock>,
    /// Temp and moved-aside files older than this (by ctime) are swept.
    stale_temp_age: Duration,
    /// Entry headers an automatic expiry step reads (0: no automatic steps).
    expiry_budget: usize,
    /// Entry headers an eviction step reads.
    eviction_samples: usize,
    eviction: Eviction,
    /// Under LRU, which entries this handle stamped lately: per slot (by the key's
    /// hash), 32 bits of the hash and the time in 16 ms units; empty otherwise.
    lru_stamps: Box<[AtomicU64]>,
    /// Writes through this handle, for the expiry step's cadence.
    writes_since_open: AtomicU64,
    /// Writes between two expiry steps (adapts; see `sweep::EXPIRY_EVERY`).
    expiry_every: AtomicU64,
    /// The walkers of this handle's bounded steps (see `sweep.rs`).
    walkers: sweep::Walkers,
    stats: StatCounters,
}

/// Counters since this handle was opened (per process, not shared).
#[derive(Debug, Default)]
pub(crate) struct StatCounters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) deletes: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) evicted: AtomicU64,
    pub(crate) damaged: AtomicU64,
    pub(crate) sweeps: AtomicU64,
    pub(crate) steps: AtomicU64,
    pub(crate) stale_temp: AtomicU64,
    pub(crate) sweep_errors: AtomicU64,
    pub(crate) litter: AtomicU64,
}

impl Engine {
    /// Opens (creating or adopting) the directory `config.dir`.
    pub(crate) fn open(config: Config) -> Result<Engine> {
        let opened = adopt::open(&config)?;
        if !config.existing_only {
            opened.state.record_threshold(config.threshold);
        }
        let engine = Engine {
            dir: config.dir,
            root: opened.root,
            state: opened.state,
            locks: opened.locks,
            threshold: config.threshold,
            max_bytes: config.max_bytes,
            low_water_percent: config.low_water_percent,
            default_ttl: config.default_ttl,
            codec: config.codec,
            file_mode: config.file_mode,
            dir_mode: config.dir_mode,
            needs_fchmod: opened.needs_fchmod,
            durability: config.durability,
            max_value_size: config.max_value_size,
            clock: config.clock,
            stale_temp_age: config.stale_temp_age,
            expiry_budget: config.expiry_budget,
            eviction_samples: config.eviction_samples,
            eviction: config.eviction,
            lru_stamps: if config.eviction == Eviction::LeastRecentlyUsed {
                (0..LRU_STAMP_SLOTS).map(|_| AtomicU64::new(0)).collect()
            } else {
                Box::default()
            },
            writes_since_open: AtomicU64::new(0),
            expiry_every: AtomicU64::new(sweep::EXPIRY_EVERY),
            walkers: sweep::Walkers::default(),
            stats: StatCounters::default(),
        };
        if engine.max_bytes > 0 && !config.existing_only {
            // The first handle with a budget counts what is there; from then on every
            // handle (with a budget or not) keeps the total per operation.
            let total = if engine.state.bytes_kept() {
                0
            } else {
                engine.entry_bytes()?.1 as i64
            };
            engine.state.keep_bytes(total, engine.max_bytes);
        }
        Ok(engine)
    }

    /// Whether writes and deletes keep the shared total length (see
    /// `FileSystemCacheBuilder::max_bytes`).
    pub(crate) fn bytes_kept(&self) -> bool {
        self.max_bytes > 0 || self.state.bytes_kept()
    }

    /// The shared total length of the entry files, if it is kept.
    pub(crate) fn bytes(&self) -> Option<u64> {
        self.state
            .bytes_kept()
            .then(|| self.state.bytes().max(0) as u64)
    }

    pub(crate) fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Whether the total length is past the byte budget.
    pub(crate) fn over_bytes(&self) -> bool {
        self.max_bytes > 0 && self.state.bytes() > self.max_bytes as i64
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn stats(&self) -> &StatCounters {
        &self.stats
    }

    pub(crate) fn rename_mode(&self) -> RenameMode {
        self.root.mode()
    }

    /// The shared entry-name count as kept per operation.
    pub(crate) fn count(&self) -> i64 {
        self.state.load()
    }

    /// The codec new typed values are written with.
    pub(crate) fn codec(&self) -> Codec {
        self.codec
    }

    pub(crate) fn default_ttl(&self) -> Option<Duration> {
        self.default_ttl
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub(crate) fn path_for(&self, key: &str) -> Result<EntryPath> {
        if key.len() > MAX_KEY_LEN {
            return Err(Error::KeyTooLong {
                len: key.len(),
                max: MAX_KEY_LEN,
            });
        }
        Ok(EntryPath::for_key(key))
    }

    fn io(&self, op: &'static str, rel: &str, e: io::Error) -> Error {
        Error::io(op, self.dir.join(rel), e)
    }

    fn max_file_len(&self) -> usize {
        HEADER_LEN + MAX_KEY_LEN + self.max_value_size + CHECKSUM_LEN
    }

    /// Starts the bytes of a new entry; the caller appends the payload to
    /// [`EntryWriter::payload`] and passes the writer to [`Engine::finish_entry`].
    pub(crate) fn start_entry(
        &self,
        codec: Codec,
        key: &str,
        expires: u64,
        capacity: usize,
    ) -> EntryWriter {
        EntryWriter::start(codec, expires, layout::next_write_id(), key, capacity)
    }

    /// The finished entry bytes, or [`Error::ValueTooLarge`] or
    /// [`Error::OverByteBudget`].
    pub(crate) fn finish_entry(&self, key: &str, w: EntryWriter) -> Result<Vec<u8>> {
        let size = w.payload_len();
        if size > self.max_value_size {
            return Err(Error::ValueTooLarge {
                key: key.to_owned(),
                size,
                max: self.max_value_size,
            });
        }
        let bytes = w.finish();
        if self.max_bytes > 0 && bytes.len() as u64 > self.max_bytes {
            return Err(Error::OverByteBudget {
                key: key.to_owned(),
                size: bytes.len() as u64,
                max_bytes: self.max_bytes,
            });
        }
        Ok(bytes)
    }

    /// After a write outside any stripe lock: if the write made a new name and the
    /// count is past the threshold, a bounded eviction step; else, every so many
    /// writes of this handle (32 at first, adapting between 8 and 1,024 to what the
    /// steps find: see `sweep::EXPIRY_EVERY`), a bounded expiry step, unless the
    /// shared expiry floor says no entry can have expired yet. The write is
    /// committed, so a failing step is logged and counted in `Stats::sweep_errors`,
    /// never returned (a retried `inc` would count twice). Inside an `update` closure
    /// neither runs: they would need a stripe lock. `path` is the entry written; its
    /// own eviction step spares it.
    pub(crate) fn after_write(&self, commit: Commit, path: &EntryPath) {
        // The cheap conditions first: most writes start no step.
        let over = (commit == Commit::Created
            && self.threshold > 0
            && self.state.load() > self.threshold as i64)
            || self.over_bytes();
        let step_due = !over
            && self.expiry_budget > 0
            && (self.writes_since_open.fetch_add(1, Ordering::Relaxed) + 1)
                .is_multiple_of(self.expiry_every.load(Ordering::Relaxed))
            && self.state.expiry_floor() <= self.clock.now_ms();
        if (!over && !step_due) || self.locks.held_by_this_thread() {
            return;
        }
        let result = crate::hooks::run(crate::hooks::Point::SweepAfterWrite, &self.dir)
            .map_err(|e| Error::io("cleanup step (test hook)", &self.dir, e));
        let result = result.and_then(|()| if over {
            sweep::evict_step(self, path)
        } else {
            sweep::expiry_step(self, self.expiry_budget).map(|r| {
                let every = self.expiry_every.load(Ordering::Relaxed);
                let next = sweep::next_expiry_interval(every, &r);
                self.expiry_every.store(next, Ordering::Relaxed);
            })
        });
        if let Err(e) = result {
            self.stats.sweep_errors.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "fscache: cleanup of {} after a write failed (the write itself is stored): {e}",
                self.dir.display()
            );
        }
    }

    /// Under LRU: whether a read of `path` now stamps it, that is, whether this
    /// handle has not stamped it within [`LRU_STAMP_RESOLUTION`] (records it if so).
    /// Two keys sharing a slot only cost an extra stamp.
    /// Judged by the handle's clock (a test's `ManualClock` decides it).
    pub(crate) fn lru_stamp_due(&self, path: &EntryPath) -> bool {
        if self.lru_stamps.is_empty() {
            return false;
        }
        let tag = path.tag();
        let units = (self.clock.now_ms() / 16) as u32;
        let slot = &self.lru_stamps[(tag as usize) % self.lru_stamps.len()];
        let seen = slot.load(Ordering::Relaxed);
        let window = (LRU_STAMP_RESOLUTION.as_millis() / 16) as u32;
        if seen >> 32 == tag >> 32 && units.wrapping_sub(seen as u32) < window {
            return false;
        }
        slot.store(((tag >> 32) << 32) | u64::from(units), Ordering::Relaxed);
        true
    }

    pub(crate) fn lock(&self, path: &EntryPath, op: &'static str) -> Result<LockGuard<'_>> {
        self.locks.stripe(&self.root, path.stripe(), op)
    }
}

#[cfg(test)]
impl Engine {
    /// An unbounded engine on `dir` with raw values and no default TTL, for the
    /// engine's own unit tests.
    pub(crate) fn open_for_test(dir: &Path) -> Engine {
        Engine::open(Config {
            dir: dir.to_path_buf(),
            threshold: 0,
            max_bytes: 0,
            low_water_percent: 50,
            default_ttl: None,
            codec: Codec::Raw,
            file_mode: 0o600,
            dir_mode: 0o700,
            durability: Durability::Rename,
            max_value_size: 1 << 20,
            clock: Arc::new(crate::clock::SystemClock),
            force_portable_renames: false,
            stale_temp_age: STALE_TEMP_AGE,
            expiry_budget: 0,
            eviction_samples: EVICTION_SAMPLES,
            eviction: Eviction::NearestExpiry,
            existing_only: false,
        })
        .expect("open a test engine")
    }

    /// Stores raw `value` under `key` with no expiry.
    pub(crate) fn put_for_test(&self, key: &str, value: &[u8]) {
        let mut w = self.start_entry(Codec::Raw, key, 0, value.len());
        w.payload().extend_from_slice(value);
        let bytes = self.finish_entry(key, w).unwrap();
        let path = self.path_for(key).unwrap();
        self.write_entry(&path, &bytes, None).unwrap();
    }

    /// The raw value under `key`.
    pub(crate) fn get_for_test(&self, key: &str) -> Option<Vec<u8>> {
        let path = self.path_for(key).unwrap();
        self.load(key, &path, None).unwrap().map(|l| l.payload().to_vec())
    }
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Engine>();
}
