//! Reading a cache directory: listing shards, classifying names, reading entry
//! headers; `len`, `clear` and `keys` are scans.

use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;

use super::Engine;
use super::entries::Fingerprint;
use crate::disk::entry::{self, HEADER_LEN, Header, MAX_KEY_LEN};
use crate::disk::layout::{self, EVICT_PREFIX, EntryPath, OLD_PREFIX, SHARDS, TEMP_PREFIX};
use crate::disk::sys::{self, DirStream, Kind, RenameMode, Root};
use crate::error::{Error, Result};

/// A thing found in a shard directory.
pub(super) enum Item {
    Entry(EntryPath),
    Litter(String, Litter),
    Foreign(String, Kind),
}

/// A name the cache itself left in a shard.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Litter {
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
pub(super) fn open_shard(
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
pub(super) fn classify(shard: u8, name: &[u8], kind: Kind) -> Item {
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
pub(super) fn for_each_item(
    root: &Root,
    dir: &Path,
    dir_mode: u32,
    f: impl FnMut(Item) -> Result<()>,
) -> Result<usize> {
    for_each_item_progress(root, dir, dir_mode, f, &mut |_| {})
}

/// As [`for_each_item`], calling `progress(n)` after the `n`th of the [`SHARDS`]
/// shard directories.
pub(super) fn for_each_item_progress(
    root: &Root,
    dir: &Path,
    dir_mode: u32,
    mut f: impl FnMut(Item) -> Result<()>,
    progress: &mut dyn FnMut(usize),
) -> Result<usize> {
    let mut bad_shards = 0;
    for shard in 0..SHARDS {
        if let Some(names) = list_shard(root, dir, dir_mode, shard as u8, &mut bad_shards)? {
            for (name, kind) in names {
                f(classify(shard as u8, &name, kind))?;
            }
        }
        progress(shard + 1);
    }
    Ok(bad_shards)
}

pub(super) fn is_loop(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
}

/// Counts entry names (used when the state file must be rebuilt).
pub(super) fn count_entry_names(root: &Root, dir: &Path, dir_mode: u32) -> Result<usize> {
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
pub(super) fn correct_count(
    inner: &Engine,
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
pub(super) enum Peek {
    /// A valid entry's header, its bytes, and its stamp: the file's modification
    /// time in nanoseconds when the eviction policy ranks by it (else 0).
    Valid(Header, [u8; HEADER_LEN], u64),
    Damaged(Fingerprint),
    Gone,
}

/// A file's modification time in nanoseconds since the epoch (0 if unknown: ranks
/// first, as the oldest).
pub(super) fn file_stamp(file: &std::fs::File) -> u64 {
    file.metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1))
}

/// Reads an entry's header; with `stamp`, under a recency policy, also its stamp
/// (one `statx`; only eviction needs it, so scans that count or list pass `false`).
pub(super) fn peek(inner: &Engine, path: &EntryPath, stamp: bool) -> Result<Peek> {
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
                && h.key_len as usize <= MAX_KEY_LEN =>
        {
            let stamp = if stamp && inner.eviction != super::Eviction::NearestExpiry {
                file_stamp(&file)
            } else {
                0
            };
            Ok(Peek::Valid(h, prefix.try_into().expect("header length"), stamp))
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

pub(super) fn content_fingerprint(inner: &Engine, path: &EntryPath) -> Result<Fingerprint> {
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

pub(super) fn evict(inner: &Engine, path: &EntryPath, fp: &Fingerprint, op: &'static str) -> Result<bool> {
    let _guard = inner.lock(path, op)?;
    inner.evict_if_same(path, fp)
}

/// As [`evict`], but only if the key's stripe is free: `None` if another thread or
/// process holds it (a cleanup step skips the entry rather than wait).
pub(super) fn try_evict(engine: &Engine, path: &EntryPath, fp: &Fingerprint) -> Result<Option<bool>> {
    match engine.locks.try_stripe(&engine.root, path.stripe(), "evict")? {
        Some(_guard) => engine.evict_if_same(path, fp).map(Some),
        None => Ok(None),
    }
}


impl Engine {
    /// The exact number of live entries; corrects the shared count if no other
    /// writer changed it during the scan.
    /// Also corrects the shared total length, if it is kept and nobody changed it.
    pub(crate) fn len(&self) -> Result<usize> {
        let now = self.clock.now_ms();
        let start_changes = self.state.changes();
        let start_bytes = self.state.bytes_changes();
        let (mut names, mut live, mut bytes) = (0usize, 0usize, 0u64);
        for_each_item(&self.root, &self.dir, self.dir_mode, |item| {
            if let Item::Entry(path) = item {
                names += 1;
                if let Peek::Valid(h, _, _) = peek(self, &path, false)? {
                    live += usize::from(!h.is_expired(now));
                    bytes += h.total_len() as u64;
                }
            }
            Ok(())
        })?;
        correct_count(self, start_changes, (0, 0), names);
        if self.state.bytes_kept() {
            self.state.correct_bytes(start_bytes, bytes as i64);
        }
        Ok(live)
    }

    /// Entry names and the total length of the valid entry files (a first count
    /// when a byte budget starts being kept).
    pub(crate) fn entry_bytes(&self) -> Result<(usize, u64)> {
        let (mut names, mut bytes) = (0usize, 0u64);
        for_each_item(&self.root, &self.dir, self.dir_mode, |item| {
            if let Item::Entry(path) = item {
                names += 1;
                if let Peek::Valid(h, _, _) = peek(self, &path, false)? {
                    bytes += h.total_len() as u64;
                }
            }
            Ok(())
        })?;
        Ok((names, bytes))
    }

    /// Removes every entry present when it runs, each only if unchanged since it was
    /// read; returns how many it removed.
    pub(crate) fn clear(&self) -> Result<usize> {
        self.locks.ensure_not_held("clear")?;
        let start_changes = self.state.changes();
        let start_bytes = self.state.bytes_changes();
        let (mut names, mut removed) = (0usize, 0usize);
        for_each_item(&self.root, &self.dir, self.dir_mode, |item| {
            if let Item::Entry(path) = item {
                names += 1;
                let fp = match peek(self, &path, false)? {
                    Peek::Gone => return Ok(()),
                    Peek::Valid(_, header, _) => Fingerprint::Header(header),
                    Peek::Damaged(fp) => fp,
                };
                if evict(self, &path, &fp, "clear")? {
                    removed += 1;
                    self.stats.deletes.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        })?;
        correct_count(self, start_changes, (removed, 0), names);
        if removed == names && self.state.bytes_kept() {
            // Everything listed is gone, and if the only changes to the total were
            // this clear's own removals (one each), nothing else is there.
            self.state
                .correct_bytes(start_bytes.wrapping_add(removed as i64), 0);
        }
        Ok(removed)
    }

    /// Reads every name and entry header and removes nothing (missing shard
    /// directories aside, which it recreates as any scan does).
    pub(crate) fn scan(&self) -> Result<DirReport> {
        let now = self.clock.now_ms();
        let mut r = DirReport {
            counted: self.state.load(),
            threshold: self.state.recorded_threshold(),
            counted_bytes: self.bytes(),
            max_bytes: self.state.recorded_byte_budget(),
            rename_mode: self.root.mode(),
            ..DirReport::default()
        };
        let bad = for_each_item(&self.root, &self.dir, self.dir_mode, |item| {
            match item {
                Item::Entry(path) => match peek(self, &path, false)? {
                    Peek::Valid(h, _, _) if h.is_expired(now) => r.expired += 1,
                    Peek::Valid(h, _, _) => {
                        r.entries += 1;
                        r.bytes += h.total_len() as u64;
                    }
                    Peek::Damaged(_) => r.damaged += 1,
                    Peek::Gone => {}
                },
                Item::Litter(..) => r.litter += 1,
                Item::Foreign(..) => r.foreign += 1,
            }
            Ok(())
        })?;
        r.damaged += bad;
        Ok(r)
    }

    pub(crate) fn keys(&self) -> Keys<'_> {
        Keys {
            engine: self,
            next_shard: 0,
            pending: Vec::new(),
        }
    }
}

/// What [`FileSystemCache::scan`](crate::FileSystemCache::scan) found in a cache
/// directory. Entries are judged by their 36-byte header (its own check included);
/// a payload whose trailing checksum fails is found by the read or the sweep that
/// reads it whole.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DirReport {
    /// Live entries.
    pub entries: usize,
    /// Bytes of the live entries' files (header, key, payload and checksum).
    pub bytes: u64,
    /// Entries past their expiry, not yet removed.
    pub expired: usize,
    /// Files under entry names whose header does not parse (or is not a regular
    /// file), and shard names that are not directories.
    pub damaged: usize,
    /// Names fscache itself leaves for a moment (`.fscache-tmp-`, `-evict-`, `-old-`):
    /// writes in progress, or the leftovers of crashed ones.
    pub litter: usize,
    /// Other names inside shard directories (files of other programs).
    pub foreign: usize,
    /// The shared entry count (`fscache.state`): entry names, live or not.
    pub counted: i64,
    /// The threshold of the handle that opened the directory last, if one recorded
    /// it (tools that use `open_existing` do not).
    pub threshold: Option<usize>,
    /// The shared total length of the entry files (`fscache.state`), kept once a
    /// handle with a byte budget has opened the directory; `None` before.
    pub counted_bytes: Option<u64>,
    /// The byte budget of the handle with one that opened the directory last.
    pub max_bytes: Option<u64>,
    /// How this directory commits writes.
    pub rename_mode: RenameMode,
}

/// Iterator over live keys; see [`FileSystemCache::keys`](crate::FileSystemCache::keys).
#[derive(Debug)]
pub struct Keys<'a> {
    engine: &'a Engine,
    next_shard: usize,
    pending: Vec<EntryPath>,
}

impl Iterator for Keys<'_> {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Result<String>> {
        loop {
            while let Some(path) = self.pending.pop() {
                let inner = self.engine;
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
            match sys::list_dir(&self.engine.root, &rel) {
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
                        self.engine.dir.join(&rel),
                        e,
                    )));
                }
            }
        }
    }
}
