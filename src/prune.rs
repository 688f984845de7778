//! Whole-directory work: threshold sweeps, `prune`, `len`, `clear`, `keys`.
//!
//! A sweep lists each shard, reads only the 36-byte header of each entry, removes
//! expired and damaged entries and stale temp files, then — if more live entries than
//! the threshold remain — evicts the ones nearest to expiry (never-expiring last)
//! down to the low-water mark. Every removal goes through
//! [`Inner::evict_if_same`], so an entry rewritten after the sweep looked at it
//! survives.

use std::collections::BinaryHeap;
use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use crate::cache::{FileSystemCache, Inner};
use crate::entry::{self, HEADER_LEN, Header};
use crate::error::{Error, Result};
use crate::files::Fingerprint;
use crate::layout::{self, EVICT_PREFIX, EntryPath, OLD_PREFIX, SHARDS, TEMP_PREFIX};
use crate::sys::{self, DirStream, Kind, Root};

/// Temp files older than this belong to a writer that crashed; sweeps remove them.
/// Writes take milliseconds, so a live writer's file is never this old.
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(600);

/// What a sweep removed and what is left.
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
    /// [`prune_step`]: FileSystemCache::prune_step
    pub remaining: usize,
    /// Entry headers read.
    pub examined: usize,
}

impl PruneReport {
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

/// Past this count, writers wait for a running sweep instead of going on.
pub(crate) fn hard_limit(threshold: usize) -> usize {
    threshold.saturating_add((threshold / 4).max(1))
}

/// A thing found in a shard directory.
enum Item {
    Entry(EntryPath),
    Litter(String, Litter),
    Foreign(String, Kind),
}

/// A name the cache itself left in a shard.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Litter {
    /// `.fscache-tmp-`: a write in progress, or the leftover of one that crashed.
    Temp,
    /// `.fscache-evict-`: an entry moved aside by an eviction (still counted).
    Evict,
    /// `.fscache-old-`: a replaced entry a committed write could not remove.
    Old,
}

/// The names in a shard directory and their kinds.
type Listing = Vec<(Vec<u8>, Kind)>;

/// Opens one shard for reading its names. A missing shard is recreated, and one that
/// is a symlink or a file is removed and recreated: both give `None` (`bad` counts
/// the second).
fn open_shard(
    root: &Root,
    dir: &Path,
    dir_mode: u32,
    shard: u8,
    bad: &mut usize,
) -> Result<Option<DirStream>> {
    let rel = layout::shard_str(shard);
    match DirStream::open(root, &rel) {
        Ok(stream) => Ok(Some(stream)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            root.mkdir(&rel, dir_mode)
                .map_err(|e| Error::io("create shard directory", dir.join(&rel), e))?;
            Ok(None)
        }
        Err(e) if e.kind() == io::ErrorKind::NotADirectory || is_loop(&e) => {
            log::warn!(
                "fscache: shard {} is not a directory (symlink or file); replacing it",
                dir.join(&rel).display()
            );
            root.unlink(&rel)
                .map_err(|e| Error::io("remove bad shard", dir.join(&rel), e))?;
            root.mkdir(&rel, dir_mode)
                .map_err(|e| Error::io("create shard directory", dir.join(&rel), e))?;
            *bad += 1;
            Ok(None)
        }
        Err(e) => Err(Error::io("list shard directory", dir.join(&rel), e)),
    }
}

/// The names in one shard (see [`open_shard`]).
fn list_shard(
    root: &Root,
    dir: &Path,
    dir_mode: u32,
    shard: u8,
    bad: &mut usize,
) -> Result<Option<Listing>> {
    let Some(mut stream) = open_shard(root, dir, dir_mode, shard, bad)? else {
        return Ok(None);
    };
    let mut names = Vec::new();
    while let Some(entry) = stream.next_entry(root) {
        names.push(entry.map_err(|e| {
            Error::io("list shard directory", dir.join(layout::shard_str(shard)), e)
        })?);
    }
    Ok(Some(names))
}

/// What the name `name` of kind `kind` in `shard` is.
fn classify(shard: u8, name: &[u8], kind: Kind) -> Item {
    let child = || format!("{}/{}", layout::shard_str(shard), String::from_utf8_lossy(name));
    let litter = [
        (TEMP_PREFIX, Litter::Temp),
        (EVICT_PREFIX, Litter::Evict),
        (OLD_PREFIX, Litter::Old),
    ]
    .into_iter()
    .find(|(prefix, _)| name.starts_with(prefix.as_bytes()));
    if let Some((_, litter)) = litter {
        return Item::Litter(child(), litter);
    }
    match (EntryPath::from_name(shard, name), kind) {
        // A directory, FIFO or socket under an entry name is read as damage (opened
        // non-blocking) and evicted like any damaged entry.
        (Some(path), Kind::File | Kind::Dir | Kind::Other) => Item::Entry(path),
        _ => Item::Foreign(child(), kind),
    }
}

/// Visits every name in every shard; returns how many shards had to be replaced.
fn for_each_item(
    root: &Root,
    dir: &Path,
    dir_mode: u32,
    mut f: impl FnMut(Item) -> Result<()>,
) -> Result<usize> {
    let mut bad_shards = 0;
    for shard in 0..SHARDS {
        let shard = shard as u8;
        let Some(names) = list_shard(root, dir, dir_mode, shard, &mut bad_shards)? else {
            continue;
        };
        for (name, kind) in names {
            f(classify(shard, &name, kind))?;
        }
    }
    Ok(bad_shards)
}

fn is_loop(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
}

/// Counts entry names (used when the state file must be rebuilt).
pub(crate) fn count_entry_names(root: &Root, dir: &Path, dir_mode: u32) -> Result<usize> {
    let mut n = 0;
    for_each_item(root, dir, dir_mode, |item| {
        if let Item::Entry(_) = item {
            n += 1;
        }
        Ok(())
    })?;
    Ok(n)
}

/// Sets the shared count to a scan's figure, but only if nobody else changed it during
/// the scan. Per-operation counting is exact under any concurrency, while a scan cannot
/// tell which concurrent changes it saw, so correcting during concurrent writes could
/// introduce the drift it means to remove. Drift (a crash between a rename and the count
/// update, files removed by hand) is corrected by the next scan that runs quietly.
/// `start_changes` is the state's change number read before the scan; each of the
/// scan's own removals made one change: `own_removed` of the `names_seen` entry names,
/// plus `other_changes` (moved-aside entries of crashed evictions, counted but not
/// among the names seen).
fn correct_count(
    inner: &Inner,
    start_changes: i64,
    (own_removed, other_changes): (usize, usize),
    names_seen: usize,
) {
    inner.state.correct(
        start_changes + (own_removed + other_changes) as i64,
        names_seen as i64 - own_removed as i64,
    );
}

/// What an entry's header says.
enum Peek {
    Valid(Header, [u8; HEADER_LEN]),
    Damaged(Fingerprint),
    Gone,
}

fn peek(inner: &Inner, path: &EntryPath) -> Result<Peek> {
    let io_err = |op, e| Error::io(op, inner.dir.join(path.rel()), e);
    let not_a_file = || {
        inner.report_damage(path.rel(), "not a regular file");
        Ok(Peek::Damaged(Fingerprint::NotAFile))
    };
    let mut file = match inner.root.open_read(path.rel()) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Peek::Gone),
        Err(e) if sys::is_not_a_file_error(&e) => return not_a_file(),
        Err(e) => return Err(io_err("open entry", e)),
    };
    let prefix = match sys::read_prefix(&mut file, HEADER_LEN) {
        Ok(p) => p,
        Err(e) if sys::is_not_a_file_error(&e) => return not_a_file(),
        Err(e) => return Err(io_err("read entry", e)),
    };
    match Header::parse(&prefix) {
        Ok(h)
            if (h.payload_len as usize) <= inner.max_value_size
                && h.key_len as usize <= crate::MAX_KEY_LEN =>
        {
            Ok(Peek::Valid(h, prefix.try_into().expect("header length")))
        }
        Ok(_) => {
            inner.report_damage(path.rel(), entry::Damage::TooLarge);
            Ok(Peek::Damaged(content_fingerprint(inner, path)?))
        }
        Err(damage) => {
            inner.report_damage(path.rel(), damage);
            Ok(Peek::Damaged(content_fingerprint(inner, path)?))
        }
    }
}

fn content_fingerprint(inner: &Inner, path: &EntryPath) -> Result<Fingerprint> {
    let bytes = inner
        .root
        .open_read(path.rel())
        .and_then(|mut f| sys::read_entry_file(&mut f, inner.max_file_len()))
        .or_else(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Ok(Vec::new())
            } else {
                Err(e)
            }
        })
        .map_err(|e| Error::io("read entry", inner.dir.join(path.rel()), e))?;
    Ok(Fingerprint::Content(blake3::hash(&bytes)))
}

fn evict(inner: &Inner, path: &EntryPath, fp: &Fingerprint, op: &'static str) -> Result<bool> {
    let _guard = inner.lock(path, op)?;
    inner.evict_if_same(path, fp)
}

/// Whether a temp or moved-aside file is old enough to belong to a crashed process.
/// Judged by ctime, which `rename` updates: a file a live evictor just moved aside
/// has a fresh ctime even if its mtime (copied from the entry) is old.
#[allow(clippy::unnecessary_cast)]
fn is_stale_temp(inner: &Inner, rel: &str) -> bool {
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
fn sweep_litter(inner: &Inner, rel: &str, litter: Litter, report: &mut PruneReport) -> bool {
    if litter != Litter::Old && !is_stale_temp(inner, rel) {
        return false;
    }
    match inner.root.remove_tree(rel) {
        Ok(true) => {
            report.stale_temp += 1;
            inner.stats.stale_temp.fetch_add(1, Ordering::Relaxed);
            if litter == Litter::Evict {
                inner.state.add(-1);
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

/// A live entry that may be evicted; ordered by expiry, never-expiring last.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    expires: u64,
    write_id: u64,
    path: EntryPath,
    header: [u8; HEADER_LEN],
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

/// Removes `item` if it is an expired, damaged or foreign entry or stale litter,
/// counting into `report` and `own`; returns a live entry's header.
fn clean_item(
    inner: &Inner,
    item: Item,
    now: u64,
    report: &mut PruneReport,
    own: &mut Own,
) -> Result<Option<(EntryPath, Header, [u8; HEADER_LEN])>> {
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
            match peek(inner, &path)? {
                Peek::Gone => {}
                Peek::Damaged(fp) => {
                    if evict(inner, &path, &fp, "prune")? {
                        report.damaged += 1;
                        own.removed += 1;
                    }
                }
                Peek::Valid(h, header) if h.is_expired(now) => {
                    if evict(inner, &path, &Fingerprint::Header(header), "prune")? {
                        report.expired += 1;
                        own.removed += 1;
                        inner.stats.expired.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Peek::Valid(h, header) => return Ok(Some((path, h, header))),
            }
        }
    }
    Ok(None)
}

/// Runs a full sweep. The caller holds the sweep lock.
pub(crate) fn sweep(inner: &Inner) -> Result<PruneReport> {
    inner.stats.sweeps.fetch_add(1, Ordering::Relaxed);
    let now = inner.clock.now_ms();
    let threshold = inner.threshold;
    let start_changes = inner.state.changes();
    let start_count = inner.state.load();
    let keep = low_water(threshold, inner.low_water_percent);
    // The heap keeps the `cap` nearest-expiry live entries seen: memory is bounded by
    // how many may need evicting, not by the number of entries.
    let cap = if threshold == 0 {
        0
    } else {
        (start_count.max(0) as usize)
            .saturating_sub(keep)
            .saturating_add(64)
    };
    let mut heap: BinaryHeap<Candidate> = BinaryHeap::new();
    let mut report = PruneReport::default();
    let mut own = Own::default();
    let mut live = 0usize;
    let bad_shards = for_each_item(&inner.root, &inner.dir, inner.dir_mode, |item| {
        if let Some((path, h, header)) = clean_item(inner, item, now, &mut report, &mut own)? {
            live += 1;
            if cap > 0 {
                heap.push(Candidate {
                    expires: if h.expires_at == 0 {
                        u64::MAX
                    } else {
                        h.expires_at
                    },
                    write_id: h.write_id,
                    path,
                    header,
                });
                if heap.len() > cap {
                    heap.pop();
                }
            }
        }
        Ok(())
    })?;
    report.damaged += bad_shards;
    if threshold > 0 && live > threshold {
        // The nearest-expiry `live - keep`, grouped by stripe so each stripe lock is
        // taken once per sweep rather than once per eviction.
        let mut chosen = heap.into_sorted_vec();
        chosen.truncate(live - keep);
        chosen.sort_by_key(|c| c.path.stripe());
        for group in chosen.chunk_by(|a, b| a.path.stripe() == b.path.stripe()) {
            let _guard = inner.lock(&group[0].path, "prune")?;
            for c in group {
                if inner.evict_if_same(&c.path, &Fingerprint::Header(c.header))? {
                    live -= 1;
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
    report.remaining = live;
    if report.removed() > 0 {
        log::debug!("fscache: sweep of {}: {report:?}", inner.dir.display());
    }
    Ok(report)
}

/// Writes per handle between two automatic expiry steps.
pub(crate) const EXPIRY_EVERY: u64 = 32;

/// Where this handle's expiry walk stands: the shard it is reading, and that shard's
/// directory stream, kept open between steps so a step reads only the names it
/// examines (re-listing a whole shard per step would cost O(entries / 256) a step).
#[derive(Debug, Default)]
pub(crate) struct Walk {
    /// The process that opened `stream`: a forked child must not read its parent's
    /// directory offset.
    pid: u32,
    shard: u8,
    stream: Option<DirStream>,
}

/// One bounded expiry step: reads at most `4 × budget` names and `budget` entry
/// headers, in at most `1 + budget / 4` shards, going on from where this handle's
/// walk stopped (each new shard is taken from a counter shared by all processes), and
/// removes what is expired, damaged or stale litter there. Runs only if no sweep or
/// other step holds the sweep lock (it never waits); then reports nothing.
pub(crate) fn step(inner: &Inner, budget: usize) -> Result<PruneReport> {
    let mut report = PruneReport::default();
    let Some(_guard) = inner.locks.try_sweep(&inner.root)? else {
        return Ok(report);
    };
    let mut walk = match inner.walk.try_lock() {
        Ok(w) => w,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return Ok(report),
    };
    let pid = std::process::id();
    if walk.pid != pid {
        walk.pid = pid;
        walk.stream = None;
    }
    let now = inner.clock.now_ms();
    let mut own = Own::default();
    let (mut bad, mut names, mut shards) = (0, 0, 0);
    while report.examined < budget && names < budget.saturating_mul(4).max(1) {
        if walk.stream.is_none() {
            if shards > budget / 4 {
                break;
            }
            shards += 1;
            let shard = (inner.state.next_shard() % SHARDS as u64) as u8;
            walk.shard = shard;
            walk.stream = open_shard(&inner.root, &inner.dir, inner.dir_mode, shard, &mut bad)?;
            continue;
        }
        let shard = walk.shard;
        let next = walk.stream.as_mut().and_then(|s| s.next_entry(&inner.root));
        match next {
            None => walk.stream = None,
            Some(Err(e)) => {
                walk.stream = None;
                let rel = layout::shard_str(shard);
                return Err(Error::io("list shard directory", inner.dir.join(rel), e));
            }
            Some(Ok((name, kind))) => {
                names += 1;
                let item = classify(shard, &name, kind);
                if clean_item(inner, item, now, &mut report, &mut own)?.is_some() {
                    report.remaining += 1;
                }
            }
        }
    }
    report.damaged += bad;
    Ok(report)
}

/// Called after a write created a new name and the count passed the threshold.
pub(crate) fn on_over_threshold(inner: &Inner, count: i64) -> Result<()> {
    let guard = match inner.locks.try_sweep(&inner.root)? {
        Some(g) => g,
        // Another thread or process is sweeping; go on unless far past the threshold.
        None if count <= hard_limit(inner.threshold) as i64 => return Ok(()),
        None => inner.locks.sweep(&inner.root, "set")?,
    };
    crate::hooks::run(crate::hooks::Point::SweepAfterWrite, &inner.dir)
        .map_err(|e| Error::io("sweep (test hook)", &inner.dir, e))?;
    if inner.state.load() > inner.threshold as i64 {
        sweep(inner)?;
    }
    drop(guard);
    Ok(())
}

impl FileSystemCache {
    /// Sweeps the whole directory now: removes expired and damaged entries and stale
    /// temp files, evicts nearest-expiry entries if more live entries than the
    /// threshold remain, and resets the shared count to the exact figure.
    ///
    /// # Errors
    /// [`Error::Io`] if a shard cannot be listed or an entry removed; [`Error::Lock`].
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use fscache::{FileSystemCache, ManualClock, Ttl};
    /// # fn main() -> fscache::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let clock = ManualClock::new();
    /// let cache = FileSystemCache::builder(dir.path()).clock(clock.clone()).open()?;
    /// cache.set_with_ttl("a", &1, Ttl::After(Duration::from_secs(1)))?;
    /// cache.set_with_ttl("b", &2, Ttl::Never)?;
    /// clock.advance(Duration::from_secs(2));
    /// let report = cache.prune()?;
    /// assert_eq!((report.expired, report.remaining), (1, 1));
    /// # Ok(())
    /// # }
    /// ```
    pub fn prune(&self) -> Result<PruneReport> {
        let inner = &*self.inner;
        let _guard = inner.locks.sweep(&inner.root, "prune")?;
        sweep(inner)
    }

    /// One bounded piece of cleanup, for a background thread or a cron job: reads at
    /// most `budget` entry headers and `4 × budget` names (in at most
    /// `1 + budget / 4` shard directories), going on where this handle's previous step
    /// stopped (each new shard comes from a counter shared by all processes), and
    /// removes the expired and damaged entries and stale temp files among them. Its
    /// cost does not grow with the size of the cache. It never waits: if
    /// a sweep or another step is running it returns an empty report.
    ///
    /// Writes already run a step of [`expiry_budget`] headers every 32 writes of a
    /// handle, so most programs need not call this; call it where writes are rare and
    /// expired entries should still go. A full cycle over `N` entries takes about
    /// `N / budget` calls (at least `256 / (1 + budget / 4)`).
    ///
    /// [`expiry_budget`]: crate::FileSystemCacheBuilder::expiry_budget
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Lock`]; [`Error::Reentrant`] inside an `update` closure.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use fscache::{FileSystemCache, ManualClock, Ttl};
    /// # fn main() -> fscache::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let clock = ManualClock::new();
    /// let cache = FileSystemCache::builder(dir.path()).threshold(0).clock(clock.clone()).open()?;
    /// for i in 0..100 {
    ///     cache.set_with_ttl(&format!("k{i}"), &i, Ttl::After(Duration::from_secs(1)))?;
    /// }
    /// clock.advance(Duration::from_secs(2));
    /// let mut removed = 0;
    /// while removed < 100 {
    ///     let report = cache.prune_step(64)?;
    ///     assert!(report.examined <= 64);
    ///     removed += report.expired;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn prune_step(&self, budget: usize) -> Result<PruneReport> {
        self.inner.locks.ensure_not_held("prune_step")?;
        step(&self.inner, budget)
    }

    /// The exact number of live entries (a full scan of the headers; O(entries)).
    /// Also corrects the shared count kept per operation, if no other writer changed
    /// it during the scan.
    ///
    /// # Errors
    /// [`Error::Io`] if a shard cannot be listed or an entry read.
    pub fn len(&self) -> Result<usize> {
        let inner = &*self.inner;
        let now = inner.clock.now_ms();
        let start_changes = inner.state.changes();
        let (mut names, mut live) = (0usize, 0usize);
        for_each_item(&inner.root, &inner.dir, inner.dir_mode, |item| {
            if let Item::Entry(path) = item {
                names += 1;
                if let Peek::Valid(h, _) = peek(inner, &path)? {
                    live += usize::from(!h.is_expired(now));
                }
            }
            Ok(())
        })?;
        correct_count(inner, start_changes, (0, 0), names);
        Ok(live)
    }

    /// Whether there are no live entries (a scan, stopping at the first live one).
    ///
    /// # Errors
    /// As [`len`](Self::len).
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.keys().next().transpose()?.is_none())
    }

    /// Removes every entry present when it runs; returns how many it removed. An
    /// entry written while it runs is not lost: only entries it has read are removed,
    /// each only if unchanged since.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Lock`].
    pub fn clear(&self) -> Result<usize> {
        let inner = &*self.inner;
        inner.locks.ensure_not_held("clear")?;
        let start_changes = inner.state.changes();
        let (mut names, mut removed) = (0usize, 0usize);
        for_each_item(&inner.root, &inner.dir, inner.dir_mode, |item| {
            if let Item::Entry(path) = item {
                names += 1;
                let fp = match peek(inner, &path)? {
                    Peek::Gone => return Ok(()),
                    Peek::Valid(_, header) => Fingerprint::Header(header),
                    Peek::Damaged(fp) => fp,
                };
                if evict(inner, &path, &fp, "clear")? {
                    removed += 1;
                    inner.stats.deletes.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        })?;
        correct_count(inner, start_changes, (removed, 0), names);
        Ok(removed)
    }

    /// Iterates over the keys of live entries, one shard at a time (memory bounded by
    /// one shard's listing). Entries written or removed during the iteration may or
    /// may not be seen. Damaged and expired entries are skipped (`prune` removes them).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> fscache::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let cache = fscache::FileSystemCache::open(dir.path())?;
    /// cache.set("a", &1)?;
    /// cache.set("b", &2)?;
    /// let mut keys = cache.keys().collect::<fscache::Result<Vec<_>>>()?;
    /// keys.sort();
    /// assert_eq!(keys, ["a", "b"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn keys(&self) -> Keys<'_> {
        Keys {
            inner: &self.inner,
            next_shard: 0,
            pending: Vec::new(),
        }
    }
}

/// Iterator over live keys; see [`FileSystemCache::keys`].
#[derive(Debug)]
pub struct Keys<'a> {
    inner: &'a Inner,
    next_shard: usize,
    pending: Vec<EntryPath>,
}

impl Iterator for Keys<'_> {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Result<String>> {
        loop {
            while let Some(path) = self.pending.pop() {
                let inner = self.inner;
                let bytes = match inner
                    .root
                    .open_read(path.rel())
                    .and_then(|mut f| sys::read_entry_file(&mut f, inner.max_file_len()))
                {
                    Ok(b) => b,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) if is_loop(&e) => continue,
                    Err(e) => {
                        return Some(Err(Error::io("read entry", inner.dir.join(path.rel()), e)));
                    }
                };
                if let Ok(entry) = entry::decode(&bytes, inner.max_value_size)
                    && !entry.header.is_expired(inner.clock.now_ms())
                    && EntryPath::for_key(entry.key) == path
                {
                    return Some(Ok(entry.key.to_owned()));
                }
            }
            if self.next_shard >= SHARDS {
                return None;
            }
            let shard = self.next_shard as u8;
            self.next_shard += 1;
            let rel = layout::shard_str(shard);
            match sys::list_dir(&self.inner.root, &rel) {
                Ok(names) => {
                    self.pending = names
                        .into_iter()
                        .filter(|(_, kind)| *kind == Kind::File)
                        .filter_map(|(name, _)| EntryPath::from_name(shard, &name))
                        .collect();
                }
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        || e.kind() == io::ErrorKind::NotADirectory
                        || is_loop(&e) => {}
                Err(e) => {
                    return Some(Err(Error::io(
                        "list shard directory",
                        self.inner.dir.join(&rel),
                        e,
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_water_and_hard_limit() {
        assert_eq!(low_water(1, 50), 1);
        assert_eq!(low_water(2, 50), 1);
        assert_eq!(low_water(5, 80), 4);
        assert_eq!(low_water(500, 50), 250);
        assert_eq!(low_water(500, 80), 400);
        assert_eq!(low_water(1001, 80), 800);
        assert_eq!(
            low_water(usize::MAX, 99),
            usize::MAX / 100 * 99 + 15 * 99 / 100
        );
        assert_eq!(hard_limit(1), 2);
        assert_eq!(hard_limit(500), 625);
        assert_eq!(hard_limit(usize::MAX), usize::MAX);
    }
}
