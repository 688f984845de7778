//! Removal policy: what goes, when, and how much work each step may do.
//!
//! **Bounded steps.** No write ever runs a whole-directory sweep, and no writer waits
//! for another's cleanup. A write that makes a new name while the shared count is past
//! the threshold runs one *eviction step*: it reads a few more names and entry headers
//! where its walker stopped ([`EVICTION_SAMPLES`] headers, plus the names between
//! them), adds the live entries it saw to its walker's candidate pool (the
//! [`POOL`] nearest-expiry entries seen so far, as in Redis's eviction pool), and
//! evicts the pool's nearest-expiry entries until the count is back at the threshold
//! (at most [`EVICT_PER_STEP`] a step). Expired, damaged and stale leftovers it meets
//! are removed on the way. Writes also run *expiry steps* of the same kind (no
//! eviction; adaptive rounds and cadence, see [`expiry_step`] and
//! [`EXPIRY_EVERY`]) so that expired entries go below the threshold too.
//!
//! **Walkers.** A handle has [`WALKERS`] walkers; a step takes a free one with a
//! `try_lock` and, if all are busy, walks with a fresh one, so steps of many threads
//! run side by side and none waits. A walker reads one shard directory at a time
//! through a directory stream kept open between steps, and takes its next shard from
//! a counter in the shared state page, so all walkers of all processes spread over
//! the 256 shards.
//!
//! **Order.** Eviction takes the nearest-expiry entries *of the pool*, which holds
//! the best of the entries the walker has seen; how close that is to the exact order
//! is measured in `tests/bounded.rs` and stated in the crate docs.
//!
//! **The full sweep** (`prune`) lists every shard, removes what is expired or damaged
//! and, past the threshold, evicts the nearest-expiry entries down to the low-water
//! mark. Every removal goes through [`Engine::evict_if_same`], so an entry rewritten
//! after a step or sweep looked at it survives.

use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, TryLockError};
use std::time::{Duration, SystemTime};

use super::entries::Fingerprint;
use super::{Engine, Eviction};
use super::scan::{
    Item, Litter, Peek, classify, correct_count, evict, for_each_item_progress, open_shard, peek, try_evict,
};
use crate::disk::entry::{HEADER_LEN, Header};
use crate::disk::layout::{self, EntryPath, SHARDS};
use crate::disk::sys::{DirStream, Kind};
use crate::error::{Error, Result};

/// Temp files older than this belong to a writer that crashed; sweeps remove them.
/// Writes take milliseconds, so a live writer's file is never this old.
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(600);

/// What a sweep or step removed and what is left.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PruneReport {
    /// Expired entries removed.
    pub expired: usize,
    /// Live entries evicted because the threshold was passed.
    pub evicted: usize,
    /// Damaged or foreign files removed (truncated, bit-flipped, wrong version,
    /// symlinks, files of other programs inside shard directories).
    pub damaged: usize,
    /// Temp files older than [`STALE_TEMP_AGE`] (from crashed writers) removed.
    pub stale_temp: usize,
    /// Live entries left (a full sweep); live entries seen ([`prune_step`]).
    ///
    /// [`prune_step`]: crate::FileSystemCache::prune_step
    pub remaining: usize,
    /// Entry headers read.
    pub examined: usize,
}

impl PruneReport {
    /// Adds `other`'s figures to these (the rounds of one step).
    pub(crate) fn absorb(&mut self, other: &PruneReport) {
        self.expired += other.expired;
        self.evicted += other.evicted;
        self.damaged += other.damaged;
        self.stale_temp += other.stale_temp;
        self.remaining += other.remaining;
        self.examined += other.examined;
    }

    /// Everything removed: expired, evicted, damaged and stale temp files.
    pub fn removed(&self) -> usize {
        self.expired + self.evicted + self.damaged + self.stale_temp
    }
}

/// The count a sweep prunes down to: `percent` of the threshold (at least 1).
pub(crate) fn low_water(threshold: usize, percent: u8) -> usize {
    let p = percent as usize;
    (threshold / 100 * p + threshold % 100 * p / 100).max(1)
}


/// Whether a temp or moved-aside file is old enough to belong to a crashed process.
/// Judged by ctime, which `rename` updates: a file a live evictor just moved aside
/// has a fresh ctime even if its mtime (copied from the entry) is old.
#[allow(clippy::unnecessary_cast)]
fn is_stale_temp(inner: &Engine, rel: &str) -> bool {
    let Ok(st) = inner.root.lstat(rel) else {
        return false;
    };
    let ctime = SystemTime::UNIX_EPOCH
        + Duration::new(
            st.st_ctime.max(0) as u64,
            st.st_ctime_nsec.clamp(0, 999_999_999) as u32,
        );
    SystemTime::now()
        .duration_since(ctime)
        .is_ok_and(|age| age >= inner.stale_temp_age)
}

/// Removes litter a sweep found: `.fscache-old-` files at once, temp and moved-aside
/// files once stale; directories (left by damage) too. Returns whether it removed a
/// moved-aside entry, which was still counted.
fn sweep_litter(inner: &Engine, rel: &str, litter: Litter, report: &mut PruneReport) -> bool {
    if litter != Litter::Old && !is_stale_temp(inner, rel) {
        return false;
    }
    let len = if litter == Litter::Evict && inner.bytes_kept() {
        inner.file_len(rel)
    } else {
        0
    };
    match inner.root.remove_tree(rel) {
        Ok(true) => {
            report.stale_temp += 1;
            inner.stats.stale_temp.fetch_add(1, Ordering::Relaxed);
            if litter == Litter::Evict {
                inner.state.add(-1);
                inner.state.add_bytes(-(len as i64));
                return true;
            }
        }
        Ok(false) => {}
        Err(e) => {
            inner.stats.sweep_errors.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "fscache: could not remove leftover {}: {e}",
                inner.dir.join(rel).display()
            );
        }
    }
    false
}

/// A live entry that may be evicted; ordered by rank, the lowest first.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    /// The policy's rank: the expiry (`u64::MAX`: never) under
    /// [`Eviction::NearestExpiry`], else the file's modification time (ns).
    rank: u64,
    write_id: u64,
    /// The expiry, `u64::MAX` for never.
    expires: u64,
    path: EntryPath,
    header: [u8; HEADER_LEN],
    /// The entry file's length.
    len: u64,
}

impl Candidate {
    fn new(
        policy: Eviction,
        path: EntryPath,
        h: &Header,
        header: [u8; HEADER_LEN],
        stamp: u64,
    ) -> Candidate {
        let expires = if h.expires_at == 0 {
            u64::MAX
        } else {
            h.expires_at
        };
        Candidate {
            rank: match policy {
                Eviction::NearestExpiry => expires,
                _ => stamp.min(u64::MAX - 1),
            },
            write_id: h.write_id,
            expires,
            path,
            header,
            len: h.total_len() as u64,
        }
    }
}

impl PartialOrd for EntryPath {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for EntryPath {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rel().cmp(other.rel())
    }
}

/// A sweep's own changes to the count, and the entry names it saw.
#[derive(Default)]
struct Own {
    names_seen: usize,
    /// Entry names it removed.
    removed: usize,
    /// Moved-aside entries of crashed evictions it removed (counted, not names).
    aside: usize,
}

/// Evicts `path` if unchanged; a step (`wait` false) skips it if its stripe is busy.
fn remove(engine: &Engine, path: &EntryPath, fp: &Fingerprint, wait: bool) -> Result<bool> {
    if wait {
        evict(engine, path, fp, "prune")
    } else {
        Ok(try_evict(engine, path, fp)?.unwrap_or(false))
    }
}

/// A live entry a sweep or step read: its path, header, header bytes and stamp (see
/// `Peek::Valid`).
type Live = (EntryPath, Header, [u8; HEADER_LEN], u64);

/// Removes `item` if it is an expired, damaged or foreign entry or stale litter,
/// counting into `report` and `own`; returns a live entry's header.
fn clean_item(
    inner: &Engine,
    item: Item,
    now: u64,
    wait: bool,
    report: &mut PruneReport,
    own: &mut Own,
) -> Result<Option<Live>> {
    match item {
        Item::Litter(rel, litter) => {
            if sweep_litter(inner, &rel, litter, report) {
                own.aside += 1;
            }
        }
        Item::Foreign(rel, Kind::Dir) => {
            log::warn!(
                "fscache: leaving foreign directory {} alone",
                inner.dir.join(rel).display()
            );
        }
        Item::Foreign(rel, _) => {
            inner.report_damage(&rel, "not an entry file");
            if inner.root.unlink(&rel).unwrap_or(false) {
                report.damaged += 1;
            }
        }
        Item::Entry(path) => {
            own.names_seen += 1;
            report.examined += 1;
            match peek(inner, &path, true)? {
                Peek::Gone => {}
                Peek::Damaged(fp) => {
                    if remove(inner, &path, &fp, wait)? {
                        report.damaged += 1;
                        own.removed += 1;
                    }
                }
                Peek::Valid(h, header, _) if h.is_expired(now) => {
                    if remove(inner, &path, &Fingerprint::Header(header), wait)? {
                        report.expired += 1;
                        own.removed += 1;
                        inner.stats.expired.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Peek::Valid(h, header, stamp) => return Ok(Some((path, h, header, stamp))),
            }
        }
    }
    Ok(None)
}

/// Runs a full sweep. The caller holds the sweep lock.
pub(crate) fn sweep(inner: &Engine, progress: &mut dyn FnMut(usize)) -> Result<PruneReport> {
    inner.stats.sweeps.fetch_add(1, Ordering::Relaxed);
    let now = inner.clock.now_ms();
    let threshold = inner.threshold;
    let start_changes = inner.state.changes();
    let start_count = inner.state.load();
    let keep = low_water(threshold, inner.low_water_percent);
    // The heap keeps the `cap` nearest-expiry live entries seen: memory is bounded by
    // how many may need evicting, not by the number of entries.
    let start_bytes = inner.state.bytes_changes();
    let cap = if inner.max_bytes > 0 {
        // How many go depends on their lengths: every live entry is a candidate
        // (one small record each, for the length of the sweep).
        usize::MAX
    } else if threshold == 0 {
        0
    } else {
        (start_count.max(0) as usize)
            .saturating_sub(keep)
            .saturating_add(64)
    };
    let mut heap: BinaryHeap<Candidate> = BinaryHeap::new();
    let mut report = PruneReport::default();
    let mut own = Own::default();
    let (mut live, mut live_bytes) = (0usize, 0u64);
    // The earliest expiry among the entries left: the new expiry floor.
    let mut earliest = u64::MAX;
    inner.state.floor_scan_begin();
    let bad_shards = for_each_item_progress(&inner.root, &inner.dir, inner.dir_mode, |item| {
        if let Some((path, h, header, stamp)) =
            clean_item(inner, item, now, true, &mut report, &mut own)?
        {
            live += 1;
            live_bytes += h.total_len() as u64;
            if h.expires_at != 0 {
                earliest = earliest.min(h.expires_at);
            }
            if cap > 0 {
                heap.push(Candidate::new(inner.eviction, path, &h, header, stamp));
                if heap.len() > cap {
                    heap.pop();
                }
            }
        }
        Ok(())
    }, progress)?;
    report.damaged += bad_shards;
    if bad_shards == 0 {
        // Every shard was listed: no entry on disk expires before `earliest`, but
        // for writes since the scan began, which lowered the scratch cell themselves.
        inner.state.floor_scan_end(earliest);
    }
    let max_bytes = inner.max_bytes;
    let need = if threshold > 0 && live > threshold {
        live - keep
    } else {
        0
    };
    let need_bytes = if max_bytes > 0 && live_bytes > max_bytes {
        let keep_bytes = low_water(usize::try_from(max_bytes).unwrap_or(usize::MAX), inner.low_water_percent);
        live_bytes - keep_bytes as u64
    } else {
        0
    };
    if need > 0 || need_bytes > 0 {
        // The first in the policy's order until both are met, grouped by stripe so
        // each stripe lock is taken once per sweep rather than once per eviction.
        let mut chosen = heap.into_sorted_vec();
        let (mut taken, mut taken_bytes) = (0usize, 0u64);
        let n = chosen
            .iter()
            .take_while(|c| {
                let more = taken < need || taken_bytes < need_bytes;
                taken += 1;
                taken_bytes += c.len;
                more
            })
            .count();
        chosen.truncate(n);
        chosen.sort_by_key(|c| c.path.stripe());
        for group in chosen.chunk_by(|a, b| a.path.stripe() == b.path.stripe()) {
            let _guard = inner.lock(&group[0].path, "prune")?;
            for c in group {
                if inner.evict_if_same(&c.path, &Fingerprint::Header(c.header))? {
                    live -= 1;
                    live_bytes -= c.len;
                    own.removed += 1;
                    report.evicted += 1;
                    inner.stats.evicted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    correct_count(
        inner,
        start_changes,
        (own.removed, own.aside),
        own.names_seen,
    );
    if inner.state.bytes_kept() {
        // As for the count: only if every change to the total since the start was
        // one of this sweep's removals (one each).
        let own_changes = (own.removed + own.aside) as i64;
        inner
            .state
            .correct_bytes(start_bytes.wrapping_add(own_changes), live_bytes as i64);
    }
    report.remaining = live;
    if report.removed() > 0 {
        log::debug!("fscache: sweep of {}: {report:?}", inner.dir.display());
    }
    Ok(report)
}

/// Writes per handle between two automatic expiry steps, at first: a step that finds
/// nothing expired doubles the interval (up to [`EXPIRY_EVERY_MAX`]), one that finds
/// mostly expired entries (a quarter or more of what it read) halves it (down to
/// [`EXPIRY_EVERY_MIN`]).
pub(crate) const EXPIRY_EVERY: u64 = 32;
/// The shortest interval between expiry steps, in writes of a handle.
pub(crate) const EXPIRY_EVERY_MIN: u64 = 8;
/// The longest interval between expiry steps, in writes of a handle.
pub(crate) const EXPIRY_EVERY_MAX: u64 = 1024;
/// Rounds of [`expiry_budget`](crate::FileSystemCacheBuilder::expiry_budget) headers
/// one expiry step reads at most: it reads on while a quarter or more of what it read
/// was expired (as Redis's active expiry does).
pub(crate) const EXPIRY_ROUNDS: usize = 16;
/// The time after which an expiry step reads no further round, whatever it finds
/// (a write's slowest case stays a few milliseconds); measured with the handle's
/// clock, at its millisecond resolution.
pub(crate) const EXPIRY_STEP_TIME: Duration = Duration::from_millis(2);

/// Walkers per handle: this many steps of one handle run side by side with a kept
/// directory stream and pool; more run with a fresh walker.
pub(crate) const WALKERS: usize = 4;

/// Candidates a walker's eviction pool keeps (the nearest-expiry ones it has seen).
pub const POOL: usize = 16;

/// Entry headers an eviction step reads to refresh its pool, by default (see
/// [`eviction_samples`](crate::FileSystemCacheBuilder::eviction_samples)).
pub const EVICTION_SAMPLES: usize = 2;

/// Steps a walker goes without reading on for an entry that expires, after such a
/// read found only never-expiring ones.
const NEVER_ONLY_PAUSE: u32 = 64;

/// Most entries one eviction step evicts (it evicts what the count is past the
/// threshold, up to this).
pub const EVICT_PER_STEP: usize = 4;

/// The walkers of one handle.
#[derive(Debug, Default)]
pub(crate) struct Walkers {
    slots: [Mutex<Walker>; WALKERS],
}

/// Where one walker stands: the shard it reads, that shard's directory stream (kept
/// open between steps, so a step reads only the names it examines), and the
/// nearest-expiry live entries it has seen.
#[derive(Debug, Default)]
struct Walker {
    /// The fork generation (plus one) that opened `stream`: a forked child must not share its parent's
    /// directory offset.
    pid: u64,
    shard: u8,
    stream: Option<DirStream>,
    /// Sorted, nearest expiry first; at most [`POOL`].
    pool: Vec<Candidate>,
    /// Steps left before the walker again reads on to find an entry that expires,
    /// after a read-on found only never-expiring ones (a cache of mostly
    /// never-expiring entries must not pay for a long read every step).
    never_only: u32,
}

impl Walker {
    /// Keeps `c` if it is among the [`POOL`] nearest-expiry candidates seen.
    fn offer(&mut self, c: Candidate) {
        if self.pool.len() == POOL && self.pool.last().is_some_and(|worst| c >= *worst) {
            return;
        }
        if self.pool.iter().any(|p| p.path == c.path) {
            // Seen again (the walk came round): the newer look replaces the older.
            self.pool.retain(|p| p.path != c.path);
        }
        let at = self.pool.partition_point(|p| *p < c);
        self.pool.insert(at, c);
        self.pool.truncate(POOL);
    }
}

/// How much one step may do.
#[derive(Clone, Copy, Debug)]
struct Budget {
    /// Entry headers to read.
    headers: usize,
    /// Names to read (entries, leftovers, foreign files).
    names: usize,
    /// Shard directories to open.
    shards: usize,
    /// Entries to evict, at most; only while the count is past `target` or the
    /// total length past `bytes_target`.
    evict: usize,
    target: i64,
    bytes_target: i64,
    /// May read past `headers` to find something evictable (a write's step; a
    /// `prune_step` keeps to its budget).
    read_past: bool,
}

impl Budget {
    /// Reads `headers` headers, `4 × headers` names (at least 64), `1 + headers / 4`
    /// shards.
    fn reading(headers: usize) -> Budget {
        Budget {
            headers,
            names: headers.saturating_mul(4).max(64),
            shards: 1 + headers / 4,
            evict: 0,
            target: i64::MAX,
            bytes_target: i64::MAX,
            read_past: false,
        }
    }
}

impl Walkers {
    /// Runs `f` with a free walker, or a fresh one if all are busy (never waits).
    fn with<R>(&self, f: impl FnOnce(&mut Walker) -> R) -> R {
        let start = (thread_slot() % WALKERS as u64) as usize;
        for i in 0..WALKERS {
            match self.slots[(start + i) % WALKERS].try_lock() {
                Ok(mut w) => return f(&mut w),
                Err(TryLockError::Poisoned(p)) => return f(&mut p.into_inner()),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        f(&mut Walker::default())
    }
}

/// A per-thread number, so threads of one handle start at different walkers.
fn thread_slot() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        static SLOT: u64 = {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0);
            h.finish()
        };
    }
    SLOT.with(|s| *s)
}

/// One bounded step with `walker`: reads names and headers within `budget`, going on
/// where the walker stopped; removes expired, damaged and stale leftovers it meets;
/// then, while the shared count is past `budget.target`, evicts the pool's
/// nearest-expiry entries (at most `budget.evict`).
fn walk(
    engine: &Engine,
    walker: &mut Walker,
    budget: Budget,
    spare: Option<&EntryPath>,
) -> Result<PruneReport> {
    engine.stats.steps.fetch_add(1, Ordering::Relaxed);
    // The fork generation (plus one: 0 is a fresh walker), not the pid: no syscall.
    let pid = crate::disk::fork::generation().wrapping_add(1);
    if walker.pid != pid {
        *walker = Walker {
            pid,
            ..Walker::default()
        };
    }
    let mut r = Reader {
        engine,
        now: engine.clock.now_ms(),
        report: PruneReport::default(),
        own: Own::default(),
        names: 0,
        shards: 0,
    };
    let limit = if budget.read_past {
        budget.shards.min(1 + budget.headers / 4)
    } else {
        budget.shards
    };
    r.read(walker, budget.headers, budget.names, limit, |_| false)?;
    // One extra read when the pool is thin or has only never-expiring entries; an
    // empty pool (or one of only never-expiring entries, unless such a read found
    // nothing else lately) is read on, past the header budget and through empty
    // shards (a sparse cache), until it holds a candidate that expires, or the name
    // budget or one full cycle of shards is spent. And damage counts as names until
    // it is found: where a step finds some, there may be more, and the count may be
    // past the threshold because of it, so the step reads on through its name
    // budget, removing it, before it evicts any live entry. What reading removed
    // counts toward what the step must remove.
    let (mut extended, mut read_on, mut spare_read) = (false, false, false);
    let mut busy = Vec::new();
    loop {
        if budget.read_past && r.report.damaged > 0 && !read_on {
            read_on = true;
            r.read(walker, usize::MAX, budget.names, budget.shards, |_| true)?;
        }
        if r.report.removed() >= budget.evict
            || (engine.state.load() <= budget.target && engine.state.bytes() <= budget.bytes_target)
        {
            break;
        }
        // A pool that is thin (the first steps, or after the entries it held were
        // removed by others) or holds only never-expiring entries gets one more
        // sample's worth of headers first, since eviction picks the best of the pool;
        // an empty one is read on until it holds a candidate.
        // Under a recency policy no rank is u64::MAX: "never" means an empty pool.
        let never = |w: &Walker| w.pool.first().is_none_or(|c| c.rank == u64::MAX);
        // Not where no entry on disk expires (the shared expiry floor says so): such
        // a read-on would find nothing, and cost a pass over the names budget.
        let look_for_expiring = never(walker)
            && walker.never_only == 0
            && !engine.state.nothing_expires();
        let thin = walker.pool.len() < POOL / 2 || look_for_expiring;
        if !extended && budget.read_past {
            extended = true;
            walker.never_only = walker.never_only.saturating_sub(1);
            if thin {
                let more = r.report.examined + engine.eviction_samples * budget.evict;
                if look_for_expiring {
                    r.read(walker, more, budget.names, budget.shards, never)?;
                    if never(walker) {
                        walker.never_only = NEVER_ONLY_PAUSE;
                    }
                } else {
                    r.read(walker, more, budget.names, budget.shards, |w| w.pool.is_empty())?;
                }
            }
            continue;
        }
        if walker.pool.is_empty() {
            break;
        }
        let c = walker.pool.remove(0);
        // The entry the write that runs this step just made is never its victim:
        // set-then-get holds for one writer however full the cache is.
        // If it expires and the rest of the pool never does, read on (once, within
        // the name budget) for another entry that expires before evicting one that
        // never does. If none turns up, a never-expiring entry goes: the bound on
        // the count comes before the order.
        if spare == Some(&c.path) {
            let expires = c.rank != u64::MAX;
            busy.push(c);
            if expires && !spare_read && never(walker) {
                spare_read = true;
                r.read(walker, usize::MAX, budget.names, budget.shards, never)?;
            }
            continue;
        }
        let fp = Fingerprint::Header(c.header);
        let expired = c.expires != u64::MAX && c.expires <= r.now;
        match try_evict(engine, &c.path, &fp)? {
            // Its stripe is busy (an update, a delete, another step): skip it, never
            // wait; it stays a candidate for a later step.
            None => busy.push(c),
            Some(false) => {}
            // Expired since it was seen: removed as expired, not evicted.
            Some(true) if expired => {
                r.report.expired += 1;
                engine.stats.expired.fetch_add(1, Ordering::Relaxed);
            }
            Some(true) => {
                r.report.evicted += 1;
                engine.stats.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    for c in busy {
        walker.offer(c);
    }
    Ok(r.report)
}

/// The reading half of a step.
struct Reader<'a> {
    engine: &'a Engine,
    now: u64,
    report: PruneReport,
    own: Own,
    names: usize,
    shards: usize,
}

impl Reader<'_> {
    /// Reads names until `headers` headers were read in this step (or, while
    /// `read_on(walker)` holds, beyond), or `names` names or `shards` shard
    /// directories were read in this step.
    fn read(
        &mut self,
        walker: &mut Walker,
        headers: usize,
        names: usize,
        shards: usize,
        read_on: impl Fn(&Walker) -> bool,
    ) -> Result<()> {
        let engine = self.engine;
        while (self.report.examined < headers || read_on(walker)) && self.names < names {
            if walker.stream.is_none() {
                if self.shards >= shards {
                    break;
                }
                self.shards += 1;
                let shard = (engine.state.next_shard() % SHARDS as u64) as u8;
                walker.shard = shard;
                let (root, dir) = (&engine.root, &engine.dir);
                walker.stream =
                    open_shard(root, dir, engine.dir_mode, shard, &mut self.report.damaged)?;
                continue;
            }
            let shard = walker.shard;
            let next = walker.stream.as_mut().and_then(|s| s.next_entry(&engine.root));
            match next {
                None => walker.stream = None,
                Some(Err(e)) => {
                    walker.stream = None;
                    let rel = layout::shard_str(shard);
                    return Err(Error::io("list shard directory", engine.dir.join(rel), e));
                }
                Some(Ok((name, kind))) => {
                    self.names += 1;
                    let item = classify(shard, &name, kind);
                    let live = clean_item(engine, item, self.now, false, &mut self.report, &mut self.own)?;
                    if let Some((path, h, header, stamp)) = live {
                        self.report.remaining += 1;
                        if engine.threshold > 0 || engine.max_bytes > 0 {
                            walker.offer(Candidate::new(engine.eviction, path, &h, header, stamp));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The step a write runs when it made a new name past the threshold: evicts what the
/// count is past the threshold (at most [`EVICT_PER_STEP`]) after reading
/// `eviction_samples` more headers per entry to evict into the pool. It never
/// evicts `written`, the entry that write made (another writer's step may).
pub(super) fn evict_step(engine: &Engine, written: &EntryPath) -> Result<()> {
    let (target, bytes_target) = engine.targets();
    let over = engine.state.load() - target;
    let over_bytes = engine.over_bytes();
    if over <= 0 && !over_bytes {
        return Ok(());
    }
    // What the count is past the threshold, or the entries of average length the
    // total is past the budget (at least one), whichever is more, at most
    // EVICT_PER_STEP: the step reads `eviction_samples` headers per entry to evict.
    let by_bytes = if over_bytes {
        let (total, names) = (engine.state.bytes(), engine.state.load().max(1));
        let average = (total / names).max(1);
        ((total - bytes_target + average - 1) / average).max(1)
    } else {
        0
    };
    let evict = (over.max(by_bytes) as usize).min(EVICT_PER_STEP);
    let budget = Budget {
        evict,
        target,
        bytes_target,
        // See `walk`: a step that finds nothing evictable may read on through one
        // full cycle of shards (a sparse cache has fewer entries than shards).
        shards: SHARDS,
        read_past: true,
        ..Budget::reading(engine.eviction_samples * evict)
    };
    engine.walkers.with(|w| walk(engine, w, budget, Some(written))).map(drop)
}

/// An expiry step (no eviction): rounds of `headers` headers (and up to `1 + headers`
/// shard directories, so a sparse cache is read too), on while a quarter or more of
/// what the step read was expired or damaged, or while it has read fewer than
/// `headers` headers in all (a sparse cache), for at most [`EXPIRY_ROUNDS`] rounds
/// or [`EXPIRY_STEP_TIME`].
pub(super) fn expiry_step(engine: &Engine, headers: usize) -> Result<PruneReport> {
    // Timed with the handle's clock (millisecond resolution), so a test's manual
    // clock decides whether the cap is reached, not the load of the machine.
    let start = engine.clock.now_ms();
    let cap = EXPIRY_STEP_TIME.as_millis() as u64;
    let budget = Budget {
        shards: 1 + headers,
        ..Budget::reading(headers)
    };
    engine.walkers.with(|w| {
        let mut total = PruneReport::default();
        for _ in 0..EXPIRY_ROUNDS {
            let r = walk(engine, w, budget, None)?;
            total.absorb(&r);
            let found = total.expired + total.damaged;
            let spent = engine.clock.now_ms().saturating_sub(start);
            // In a sparse cache (fewer entries than shards) a round may read only
            // a header or two, or none: too few to say that little is expired.
            // Read on until the step has read a round's worth of headers.
            let told = total.examined >= headers;
            if spent >= cap || (told && (found == 0 || found * 4 < total.examined)) {
                break;
            }
        }
        Ok(total)
    })
}

/// The next interval between expiry steps after a step that read `r`, from `every`.
pub(super) fn next_expiry_interval(every: u64, r: &PruneReport) -> u64 {
    let found = r.expired + r.damaged;
    if r.examined == 0 {
        // Read only empty shard directories: nothing learned.
        every
    } else if found == 0 {
        (every * 2).min(EXPIRY_EVERY_MAX)
    } else if found * 4 >= r.examined {
        (every / 2).max(EXPIRY_EVERY_MIN)
    } else {
        every
    }
}

/// The count a background step evicts down to: 1% under the threshold, or a quarter
/// of it up to 64 entries if that is more, so that writes between two background
/// steps seldom find the count past the threshold.
pub(crate) fn headroom_target(threshold: usize) -> usize {
    threshold.saturating_sub((threshold / 100).max(threshold.min(256) / 4).max(1))
}

impl Engine {
    /// A bounded step for background cleanup: see `FileSystemCache::prune_step`.
    /// The count and total length a write's eviction step evicts down to (`i64::MAX`
    /// where there is no bound).
    fn targets(&self) -> (i64, i64) {
        let count = if self.threshold > 0 {
            self.threshold as i64
        } else {
            i64::MAX
        };
        let bytes = if self.max_bytes > 0 {
            i64::try_from(self.max_bytes).unwrap_or(i64::MAX - 1)
        } else {
            i64::MAX
        };
        (count, bytes)
    }

    pub(crate) fn prune_step(&self, budget: usize) -> Result<PruneReport> {
        self.locks.ensure_not_held("prune_step")?;
        let b = if self.threshold > 0 || self.max_bytes > 0 {
            let (count, bytes) = self.targets();
            Budget {
                evict: budget,
                target: if self.threshold > 0 {
                    headroom_target(self.threshold) as i64
                } else {
                    count
                },
                bytes_target: if self.max_bytes > 0 {
                    bytes - bytes / 100
                } else {
                    bytes
                },
                ..Budget::reading(budget)
            }
        } else {
            Budget::reading(budget)
        };
        self.walkers.with(|w| walk(self, w, b, None))
    }

    /// The full sweep: see `FileSystemCache::prune`.
    pub(crate) fn prune(&self, progress: &mut dyn FnMut(usize)) -> Result<PruneReport> {
        let _guard = self.locks.sweep(&self.root, "prune")?;
        sweep(self, progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The adaptive cadence: halved (to 8) when a step found mostly expired
    /// entries, kept when some, doubled (to 1,024) when none, and kept when the step
    /// read no header at all (only empty directories: nothing learned).
    #[test]
    fn the_expiry_interval_follows_what_a_step_read() {
        let read = |examined, expired| PruneReport {
            examined,
            expired,
            ..PruneReport::default()
        };
        assert_eq!(next_expiry_interval(32, &read(8, 2)), 16);
        assert_eq!(next_expiry_interval(EXPIRY_EVERY_MIN, &read(8, 8)), EXPIRY_EVERY_MIN);
        assert_eq!(next_expiry_interval(32, &read(8, 1)), 32);
        assert_eq!(next_expiry_interval(32, &read(8, 0)), 64);
        assert_eq!(next_expiry_interval(EXPIRY_EVERY_MAX, &read(8, 0)), EXPIRY_EVERY_MAX);
        assert_eq!(next_expiry_interval(32, &read(0, 0)), 32);
    }

    #[test]
    fn low_water_and_headroom() {
        assert_eq!(low_water(1, 50), 1);
        assert_eq!(low_water(2, 50), 1);
        assert_eq!(low_water(5, 80), 4);
        assert_eq!(low_water(500, 50), 250);
        assert_eq!(low_water(1001, 80), 800);
        assert_eq!(
            low_water(usize::MAX, 99),
            usize::MAX / 100 * 99 + 15 * 99 / 100
        );
        assert_eq!(headroom_target(1), 0);
        assert_eq!(headroom_target(10), 8);
        assert_eq!(headroom_target(500), 436);
        assert_eq!(headroom_target(10_000), 9_900);
        assert_eq!(headroom_target(1_000_000), 990_000);
    }

    fn candidate(expires: u64, n: u8) -> Candidate {
        let mut header = [0u8; HEADER_LEN];
        header[0] = n;
        Candidate {
            rank: expires,
            expires,
            write_id: u64::from(n),
            path: EntryPath::for_key(&n.to_string()),
            header,
            len: 0,
        }
    }

    #[test]
    fn the_pool_keeps_the_nearest_expiry_candidates_in_order() {
        let mut w = Walker::default();
        for n in 0..40u8 {
            // Expiries 39, 38, … 0 offered in that order; never-expiring ones too.
            let expires = if n % 10 == 0 { u64::MAX } else { 100 - u64::from(n) };
            w.offer(candidate(expires, n));
        }
        assert_eq!(w.pool.len(), POOL);
        let expiries: Vec<u64> = w.pool.iter().map(|c| c.expires).collect();
        let mut sorted = expiries.clone();
        sorted.sort_unstable();
        assert_eq!(expiries, sorted);
        assert_eq!(expiries[0], 61, "the nearest expiry offered");
        assert!(expiries.iter().all(|&e| e != u64::MAX), "never-expiring last");
        // An entry seen again replaces its older look.
        w.offer(candidate(1, 39));
        assert_eq!(w.pool.iter().filter(|c| c.write_id == 39).count(), 1);
        assert_eq!(w.pool[0].expires, 1);
    }
}
