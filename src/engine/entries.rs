//! Entry files on disk: reading, writing (temp file + rename), and evicting only the
//! write that was decided on.

use std::io::{self, Write};
use std::ops::Range;
use std::sync::atomic::Ordering;

use super::{Durability, Engine};
use crate::disk::entry::{self, HEADER_LEN, Header};
use crate::disk::layout::{self, EVICT_PREFIX, EntryPath, OLD_PREFIX, TEMP_PREFIX};
use crate::disk::lock::LockGuard;
use crate::disk::sys::{self, Commit, RenameMode};
use crate::error::{Error, Result};

/// How a stored entry is recognised when it is removed: an eviction deletes only
/// the very write it decided on, never one that replaced it meanwhile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fingerprint {
    /// A valid entry: its header, which holds a per-write unique id.
    Header([u8; HEADER_LEN]),
    /// A damaged file: a hash of all its bytes.
    Content(blake3::Hash),
    /// A symlink where a file should be.
    Symlink,
    /// A directory, FIFO, socket or device where a file should be.
    NotAFile,
}

/// A live entry read from disk.
pub(crate) struct Loaded {
    pub(crate) bytes: Vec<u8>,
    pub(crate) header: Header,
    pub(crate) payload: Range<usize>,
}

impl Loaded {
    pub(crate) fn payload(&self) -> &[u8] {
        &self.bytes[self.payload.clone()]
    }
}

/// What a read found.
enum Found {
    Live(Loaded),
    Missing,
    /// Expired or damaged: to be removed, then reported as a miss.
    Stale(Fingerprint),
}

fn fingerprint_header(bytes: &[u8]) -> Fingerprint {
    Fingerprint::Header(bytes[..HEADER_LEN].try_into().expect("header length"))
}

/// A rename refused because the target is a directory.
fn is_not_a_file_target(e: &io::Error) -> bool {
    [rustix::io::Errno::ISDIR, rustix::io::Errno::NOTEMPTY, rustix::io::Errno::EXIST]
        .iter()
        .any(|code| e.raw_os_error() == Some(code.raw_os_error()))
}

impl Engine {
    /// Writes `bytes` to a new temp file in the entry's shard; returns its name. On
    /// error nothing is left behind.
    fn write_temp(&self, path: &EntryPath, bytes: &[u8]) -> Result<String> {
        let write_id = u64::from_le_bytes(bytes[16..24].try_into().expect("header"));
        let mut attempt = 0u64;
        let (tmp, mut file) = loop {
            let tmp = path.sibling(TEMP_PREFIX, write_id.wrapping_add(attempt));
            match self.root.create_new(&tmp, self.file_mode) {
                Ok(file) => break (tmp, file),
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt == 0 => {
                    // The shard directory is gone (removed by hand): recreate it.
                    self.root
                        .mkdir(path.shard_rel(), self.dir_mode)
                        .map_err(|e| self.io("create shard directory", path.shard_rel(), e))?;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 8 => {}
                Err(e) if sys::is_symlink_error(&e) => {
                    return Err(self.io(
                        "create temp file (the shard directory is a symlink; run prune to repair)",
                        &tmp,
                        e,
                    ));
                }
                Err(e) => return Err(self.io("create temp file", &tmp, e)),
            }
            attempt += 1;
        };
        let written = (|| {
            if self.needs_fchmod {
                use std::os::unix::fs::PermissionsExt;
                file.set_permissions(std::fs::Permissions::from_mode(self.file_mode))?;
            }
            file.write_all(bytes)?;
            if self.durability == Durability::Fsync {
                file.sync_all()?;
            }
            Ok(())
        })();
        drop(file);
        if let Err(e) = written {
            let _ = self.root.unlink(&tmp);
            return Err(self.io("write entry", path.rel(), e));
        }
        Ok(tmp)
    }

    /// Writes `bytes` to a temp file in the entry's shard and renames it over the
    /// entry: the rename is the commit point. Counts a new name in the shared count.
    ///
    /// In [`RenameMode::Portable`] the commit runs under the key's stripe lock (taken
    /// here unless the caller passes it as `held`), so a concurrent delete cannot
    /// make it miscount.
    pub(crate) fn write_entry(
        &self,
        path: &EntryPath,
        bytes: &[u8],
        held: Option<&LockGuard<'_>>,
    ) -> Result<Commit> {
        let tmp = self.write_temp(path, bytes)?;
        let guard = if self.root.mode() == RenameMode::Portable
            && held.is_none()
            && !self.locks.held_by_this_thread()
        {
            match self.lock(path, "set") {
                Ok(g) => Some(g),
                Err(e) => {
                    let _ = self.root.unlink(&tmp);
                    return Err(e);
                }
            }
        } else {
            // No lock here: renameat2 commits need none, or the caller holds the
            // stripe, or (portable mode, inside an update closure on another key) a
            // second stripe lock could deadlock; then only the shared count can be
            // off, until the next quiet scan corrects it.
            None
        };
        // The portable mode's plain rename over an entry says nothing of what it
        // replaced: when the total length is kept, read the old length first (the
        // stripe lock is held, so nothing else replaces it in between).
        let old_len = if self.root.mode() == RenameMode::Portable && self.bytes_kept() {
            self.file_len(path.rel())
        } else {
            0
        };
        let mut commit = self.root.rename_commit(&tmp, path.rel());
        if let Err(e) = &commit
            && self.root.mode() == RenameMode::Portable
            && is_not_a_file_target(e)
        {
            // A plain rename cannot replace a directory planted at the entry path
            // (an exchange can, in the other mode). It is damage: remove it and retry.
            self.report_damage(path.rel(), "a directory, not an entry file");
            if self.root.remove_tree(path.rel()).is_ok() {
                commit = self.root.rename_commit(&tmp, path.rel());
            }
        }
        let commit = match commit {
            Ok(c) => c,
            Err(e) => {
                let _ = self.root.unlink(&tmp);
                return Err(self.io("write entry", path.rel(), e));
            }
        };
        drop(guard);
        self.committed(path, &tmp, commit, bytes, old_len)
    }

    /// Stores `bytes` only if `key` has no live entry, committing with a no-replace
    /// rename, so a plain `set` that lands first is never overwritten. The caller
    /// holds the key's stripe lock. `None` if a live entry was there.
    ///
    /// `precheck` reads the entry's header first, which saves writing a temp file
    /// when the key is usually taken (a job claim); without it (a new random session
    /// id, almost never taken) the no-replace rename alone finds a taken name, and
    /// the failed open of the check is saved.
    pub(crate) fn add_entry(
        &self,
        key: &str,
        path: &EntryPath,
        bytes: &[u8],
        guard: &LockGuard<'_>,
        precheck: bool,
    ) -> Result<Option<Commit>> {
        if precheck && self.has(key, path, Some(guard))? {
            return Ok(None);
        }
        let tmp = self.write_temp(path, bytes)?;
        let discard = |e: Error| {
            let _ = self.root.unlink(&tmp);
            e
        };
        crate::hooks::run(crate::hooks::Point::AddBeforeCommit, &self.dir)
            .map_err(|e| discard(self.io("add entry", path.rel(), e)))?;
        for _ in 0..4 {
            match self.root.rename_noreplace(&tmp, path.rel()) {
                Ok(true) => return self.committed(path, &tmp, Commit::Created, bytes, 0).map(Some),
                Ok(false) => {
                    // Taken: by a live entry (a plain set that landed first: it wins),
                    // or by an expired or damaged one, which `has` removes.
                    if self.has(key, path, Some(guard)).map_err(discard)? {
                        let _ = self.root.unlink(&tmp);
                        return Ok(None);
                    }
                }
                Err(e) => return Err(discard(self.io("add entry", path.rel(), e))),
            }
        }
        Err(discard(self.io(
            "add entry",
            path.rel(),
            io::Error::other("the entry name stayed occupied by something that is not an entry"),
        )))
    }

    /// Bookkeeping after the rename committed `path` with `bytes`. Nothing here turns
    /// the commit into an error except a failed directory `fsync` under
    /// `Durability::Fsync`.
    /// `old_len`: the length of the entry a [`Commit::Replaced`] replaced.
    fn committed(
        &self,
        path: &EntryPath,
        tmp: &str,
        commit: Commit,
        bytes: &[u8],
        old_len: u64,
    ) -> Result<Commit> {
        if commit == Commit::Created {
            self.state.add(1);
        }
        if self.bytes_kept() {
            let replaced = match commit {
                Commit::Created => 0,
                // The exchange left the old entry at the temp name.
                Commit::Exchanged => self.file_len(tmp),
                Commit::Replaced => old_len,
            };
            self.state.add_bytes(bytes.len() as i64 - replaced as i64);
        }
        // After the commit, never before (see `SharedState::expiry_floor`).
        let expires = entry::expiry_of(bytes);
        if expires != 0 {
            self.state.note_expiry(expires);
        }
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        if commit == Commit::Exchanged {
            self.discard_replaced(path, tmp);
        }
        if self.durability == Durability::Fsync {
            self.root.sync_dir(path.shard_rel()).map_err(|e| {
                self.io(
                    "fsync shard directory (the write is committed and visible, but may not \
                     survive a power loss)",
                    path.shard_rel(),
                    e,
                )
            })?;
        }
        Ok(commit)
    }

    /// The length of the file at `rel` (0 if it cannot be read: a miscount that a
    /// quiet `len` corrects).
    pub(crate) fn file_len(&self, rel: &str) -> u64 {
        self.root.lstat(rel).map_or(0, |st| st.st_size.max(0) as u64)
    }

    /// Removes the entry an exchange moved to `tmp`. If that fails (a directory was
    /// planted at the entry path, a read-only inode), the write still stands: the
    /// leftover is renamed to litter that the next sweep removes whatever its age.
    fn discard_replaced(&self, path: &EntryPath, tmp: &str) {
        let Err(e) = self.root.unlink(tmp) else {
            return;
        };
        let litter = path.sibling(OLD_PREFIX, layout::next_write_id());
        let kept = match self.root.rename(tmp, &litter) {
            Ok(()) => litter,
            Err(_) => tmp.to_owned(),
        };
        self.stats.litter.fetch_add(1, Ordering::Relaxed);
        log::warn!(
            "fscache: the write of {} is committed, but the entry it replaced could not be \
             removed ({e}); left as {} for the next sweep",
            self.dir.join(path.rel()).display(),
            self.dir.join(&kept).display()
        );
    }

    /// Removes an entry name unconditionally (user `delete`), under the key's stripe
    /// lock (`held`, or taken here): once it returns, no read-modify-write that
    /// started before it can write the key back, and no eviction has it moved aside.
    pub(crate) fn remove(&self, path: &EntryPath, held: Option<&LockGuard<'_>>) -> Result<bool> {
        let _guard = match held {
            Some(_) => None,
            None => Some(self.lock(path, "delete")?),
        };
        // Its length, when the total is kept (an overwrite committing between this
        // and the unlink makes it off by the difference, until a quiet `len`).
        let len = if self.bytes_kept() {
            self.file_len(path.rel())
        } else {
            0
        };
        let removed = self
            .root
            .unlink(path.rel())
            .map_err(|e| self.io("delete entry", path.rel(), e))?;
        if removed {
            self.state.add(-1);
            self.state.add_bytes(-(len as i64));
            self.stats.deletes.fetch_add(1, Ordering::Relaxed);
            if self.durability == Durability::Fsync {
                self.root
                    .sync_dir(path.shard_rel())
                    .map_err(|e| self.io("fsync shard directory", path.shard_rel(), e))?;
            }
        }
        Ok(removed)
    }

    /// Reads `key`'s entry. Expired and damaged files read as `None` and are removed
    /// (under the stripe lock: `held` if the caller has it, else taken here).
    pub(crate) fn load(
        &self,
        key: &str,
        path: &EntryPath,
        held: Option<&LockGuard<'_>>,
    ) -> Result<Option<Loaded>> {
        match self.read(key, path)? {
            Found::Live(l) => {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                Ok(Some(l))
            }
            Found::Missing => {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
            Found::Stale(fp) => {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                self.remove_stale(path, &fp, held)?;
                Ok(None)
            }
        }
    }

    fn remove_stale(
        &self,
        path: &EntryPath,
        fp: &Fingerprint,
        held: Option<&LockGuard<'_>>,
    ) -> Result<()> {
        // A read's removal of a stale file is housekeeping: its failure is logged and
        // the read still answers "miss". Inside an update closure on another key it is
        // left to the next sweep (a second stripe lock could deadlock).
        let removed = match held {
            Some(_) => self.evict_if_same(path, fp),
            None if self.locks.held_by_this_thread() => return Ok(()),
            None => self
                .lock(path, "get")
                .and_then(|_guard| self.evict_if_same(path, fp)),
        };
        match removed {
            Ok(true) if matches!(fp, Fingerprint::Header(_)) => {
                self.stats.expired.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => {
                self.stats.sweep_errors.fetch_add(1, Ordering::Relaxed);
                log::warn!("fscache: could not remove a stale entry ({e}); a sweep will retry");
            }
        }
        Ok(())
    }

    fn read(&self, key: &str, path: &EntryPath) -> Result<Found> {
        let not_a_file = || {
            self.report_damage(path.rel(), "not a regular file");
            Ok(Found::Stale(Fingerprint::NotAFile))
        };
        let mut file = match self.root.open_read(path.rel()) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Missing),
            Err(e) if sys::is_symlink_error(&e) => {
                self.report_damage(path.rel(), "a symlink, not followed");
                return Ok(Found::Stale(Fingerprint::Symlink));
            }
            Err(e) if sys::is_not_a_file_error(&e) => return not_a_file(),
            Err(e) => return Err(self.io("open entry", path.rel(), e)),
        };
        let bytes = match sys::read_entry_file(&mut file, self.max_file_len()) {
            Ok(b) => b,
            Err(e) if sys::is_not_a_file_error(&e) => return not_a_file(),
            Err(e) => return Err(self.io("read entry", path.rel(), e)),
        };
        if self.lru_stamp_due(path) {
            // The access stamp (see `Eviction::LeastRecentlyUsed`): best effort, on
            // the descriptor already open; the entry's bytes are not touched.
            let now = std::time::SystemTime::now();
            let _ = file.set_times(std::fs::FileTimes::new().set_modified(now));
        }
        drop(file);
        let entry = match entry::decode(&bytes, self.max_value_size) {
            Ok(e) => e,
            Err(damage) => {
                self.report_damage(path.rel(), damage);
                return Ok(Found::Stale(Fingerprint::Content(blake3::hash(&bytes))));
            }
        };
        if entry.key != key {
            self.report_damage(path.rel(), "holds another key (foreign file)");
            return Ok(Found::Stale(Fingerprint::Content(blake3::hash(&bytes))));
        }
        if entry.header.is_expired(self.clock.now_ms()) {
            return Ok(Found::Stale(fingerprint_header(&bytes)));
        }
        let header = entry.header;
        let start = HEADER_LEN + header.key_len as usize;
        let payload = start..start + entry.payload.len();
        Ok(Found::Live(Loaded {
            bytes,
            header,
            payload,
        }))
    }

    /// The bytes of the file at an entry's name, read as `read` reads entries (no
    /// symlinks, non-blocking, at most the largest entry) and removing nothing:
    /// `Ok(None)` if there is none, `Err(what)` for a name that is not a regular
    /// file. For tools.
    pub(crate) fn read_file(
        &self,
        path: &EntryPath,
    ) -> Result<Option<std::result::Result<Vec<u8>, &'static str>>> {
        let mut file = match self.root.open_read(path.rel()) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if sys::is_symlink_error(&e) => return Ok(Some(Err("a symlink, not followed"))),
            Err(e) if sys::is_not_a_file_error(&e) => return Ok(Some(Err("not a regular file"))),
            Err(e) => return Err(self.io("open entry", path.rel(), e)),
        };
        match sys::read_entry_file(&mut file, self.max_file_len()) {
            Ok(b) => Ok(Some(Ok(b))),
            Err(e) if sys::is_not_a_file_error(&e) => Ok(Some(Err("not a regular file"))),
            Err(e) => Err(self.io("read entry", path.rel(), e)),
        }
    }

    /// Whether `key` has a live entry, from its header and key alone.
    pub(crate) fn has(
        &self,
        key: &str,
        path: &EntryPath,
        held: Option<&LockGuard<'_>>,
    ) -> Result<bool> {
        let mut file = match self.root.open_read(path.rel()) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                return Ok(false);
            }
            // Symlinks and other oddities: the full read path classifies and removes.
            Err(e) if sys::is_symlink_error(&e) || sys::is_not_a_file_error(&e) => {
                return Ok(self.load(key, path, held)?.is_some());
            }
            Err(e) => return Err(self.io("open entry", path.rel(), e)),
        };
        let prefix = match sys::read_prefix(&mut file, HEADER_LEN + key.len()) {
            Ok(p) => p,
            Err(e) if sys::is_not_a_file_error(&e) => {
                drop(file);
                return Ok(self.load(key, path, held)?.is_some());
            }
            Err(e) => return Err(self.io("read entry", path.rel(), e)),
        };
        drop(file);
        let header = match Header::parse(&prefix) {
            Ok(h) if h.key_len as usize == key.len() && &prefix[HEADER_LEN..] == key.as_bytes() => {
                h
            }
            // Damaged or foreign: the full read classifies and removes it.
            _ => return Ok(self.load(key, path, held)?.is_some()),
        };
        if header.is_expired(self.clock.now_ms()) {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            self.remove_stale(path, &fingerprint_header(&prefix), held)?;
            return Ok(false);
        }
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    pub(crate) fn report_damage(&self, rel: &str, what: impl std::fmt::Display) {
        self.stats.damaged.fetch_add(1, Ordering::Relaxed);
        log::warn!(
            "fscache: {} is damaged or foreign ({what}); treating it as a miss and removing it",
            self.dir.join(rel).display()
        );
    }

    /// Removes the entry at `path` only if it is still the one `fp` describes; a write
    /// that replaced it meanwhile survives. The caller holds the key's stripe lock, so
    /// no read-modify-write runs during the brief moment the name is moved aside.
    ///
    /// Moving the name aside is the decision point: after the rename, whatever was
    /// moved is checked; if it is not the entry decided on, it is put back unless a
    /// newer write has taken the name since.
    pub(crate) fn evict_if_same(&self, path: &EntryPath, fp: &Fingerprint) -> Result<bool> {
        if let Err(e) = crate::hooks::run(crate::hooks::Point::EvictBegin, &self.dir) {
            log::debug!("fscache: test hook: {e}");
        }
        let aside = path.sibling(EVICT_PREFIX, layout::next_write_id());
        match self.root.rename(path.rel(), &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.io("move entry aside for eviction", path.rel(), e)),
        }
        if let Err(e) = crate::hooks::run(crate::hooks::Point::EvictMovedAside, &self.dir) {
            log::debug!("fscache: test hook: {e}");
        }
        let same = self.matches(&aside, fp);
        if !same {
            match self.root.rename_noreplace(&aside, path.rel()) {
                Ok(true) => return Ok(false),
                // A newer write took the name while ours was aside: ours is superseded.
                Ok(false) => {}
                // Someone else removed the moved-aside file (and counted it): gone.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(self.io("restore entry", path.rel(), e)),
            }
        }
        let len = match fp {
            _ if !self.bytes_kept() => 0,
            Fingerprint::Header(h) if same => entry::total_len_of(h),
            _ => self.file_len(&aside),
        };
        let unlinked = self
            .root
            .remove_tree(&aside)
            .map_err(|e| self.io("remove evicted entry", &aside, e))?;
        if !unlinked {
            return Ok(false);
        }
        self.state.add(-1);
        self.state.add_bytes(-(len as i64));
        if self.durability == Durability::Fsync {
            self.root
                .sync_dir(path.shard_rel())
                .map_err(|e| self.io("fsync shard directory", path.shard_rel(), e))?;
        }
        Ok(same)
    }

    fn matches(&self, rel: &str, fp: &Fingerprint) -> bool {
        match fp {
            Fingerprint::Symlink => self
                .root
                .lstat(rel)
                .is_ok_and(|st| sys::kind_of(&st) == sys::Kind::Symlink),
            Fingerprint::NotAFile => self
                .root
                .lstat(rel)
                .is_ok_and(|st| matches!(sys::kind_of(&st), sys::Kind::Dir | sys::Kind::Other)),
            Fingerprint::Header(h) => self
                .root
                .open_read(rel)
                .and_then(|mut f| sys::read_prefix(&mut f, HEADER_LEN))
                .is_ok_and(|prefix| prefix == h[..]),
            Fingerprint::Content(hash) => self
                .root
                .open_read(rel)
                .and_then(|mut f| sys::read_entry_file(&mut f, self.max_file_len()))
                .is_ok_and(|bytes| blake3::hash(&bytes) == *hash),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_fp(engine: &Engine, key: &str) -> Fingerprint {
        let path = EntryPath::for_key(key);
        let bytes = std::fs::read(engine.dir().join(path.rel())).unwrap();
        fingerprint_header(&bytes)
    }

    #[test]
    fn eviction_removes_only_the_write_it_decided_on() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open_for_test(dir.path());
        let path = EntryPath::for_key("k");

        // Decided on write 1; write 2 replaced it: eviction must put write 2 back.
        engine.put_for_test("k", b"1");
        let decided = header_fp(&engine, "k");
        engine.put_for_test("k", b"2");
        assert!(!engine.evict_if_same(&path, &decided).unwrap());
        assert_eq!(engine.get_for_test("k").as_deref(), Some(&b"2"[..]));
        assert_eq!(engine.count(), 1);

        // The same value rewritten is still another write (a new write id).
        engine.put_for_test("k", b"2");
        assert!(!engine.evict_if_same(&path, &decided).unwrap());
        assert_eq!(engine.get_for_test("k").as_deref(), Some(&b"2"[..]));

        // Unchanged since the decision: removed.
        let decided = header_fp(&engine, "k");
        assert!(engine.evict_if_same(&path, &decided).unwrap());
        assert_eq!(engine.get_for_test("k"), None);
        assert_eq!(engine.count(), 0);
        // Already gone: nothing to do.
        assert!(!engine.evict_if_same(&path, &decided).unwrap());
        assert!(
            std::fs::read_dir(dir.path().join(path.shard_rel()))
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn damaged_content_is_removed_only_if_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open_for_test(dir.path());
        let path = EntryPath::for_key("k");
        let file = dir.path().join(path.rel());
        std::fs::write(&file, b"garbage").unwrap();
        let decided = Fingerprint::Content(blake3::hash(b"garbage"));
        engine.put_for_test("k", b"7");
        assert!(!engine.evict_if_same(&path, &decided).unwrap());
        assert_eq!(engine.get_for_test("k").as_deref(), Some(&b"7"[..]));
    }
}
