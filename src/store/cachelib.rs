//! A live Flask-Session directory: cachelib's `FileSystemCache` format, in place.
//!
//! cachelib stores one flat file per key, named by the hex digest of the key
//! (sha256 by default since cachelib 0.16, md5 before), holding a 4-byte
//! native-endian expiry in Unix seconds (0 = never) and the pickled value. It writes
//! a temp file ending in `.__wz_cache` and renames it into place; when it has a
//! threshold it keeps the number of entries in a count file named by the digest of
//! `__wz_cache_count`. This store reads and writes exactly that, so Flask and Rust
//! share one directory.

use std::cell::Cell;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use sha2::Digest as _;

use super::{MergeFn, Store, Version, Versioned};
use crate::merge::Merge;
use crate::clock::{Clock, SystemClock};
use crate::disk::sys::{self, Root};
use crate::error::{Error, Result};
use crate::flask::{PyValue, pickle};

/// cachelib's suffix of its management files; its listings skip every name ending
/// in it, so this store's lock and temp files carry it too.
const MGMT_SUFFIX: &str = ".__wz_cache";
/// The key of cachelib's count file.
const COUNT_KEY: &str = "__wz_cache_count";
/// Lock files: keys map to one of these by their digest.
const STRIPES: usize = 16;
/// Temp files older than this are a crashed writer's, and `cleanup` removes them.
const STALE_TEMP: Duration = Duration::from_secs(3600);
/// A file larger than this is not read whole (no session is anywhere near it).
const MAX_FILE: usize = 64 << 20;

/// How cachelib names a key's file (its `hash_method`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HashMethod {
    /// `hashlib.sha256`: cachelib 0.16 and later (Flask-Session 0.8's default).
    #[default]
    Sha256,
    /// `hashlib.md5`: cachelib before 0.16, or `hash_method=hashlib.md5`.
    Md5,
}

impl HashMethod {
    /// The name cachelib gives the file of `key`: the hex digest of its UTF-8 bytes.
    pub fn file_name(self, key: &str) -> String {
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        match self {
            HashMethod::Sha256 => hex(&sha2::Sha256::digest(key.as_bytes())),
            HashMethod::Md5 => hex(&md5::Md5::digest(key.as_bytes())),
        }
    }

    fn hex_len(self) -> usize {
        match self {
            HashMethod::Sha256 => 64,
            HashMethod::Md5 => 32,
        }
    }
}

thread_local! {
    /// Stripe locks of cachelib stores this thread holds.
    static HELD: Cell<usize> = const { Cell::new(0) };
}

/// A lock file and the process that opened it (a forked child opens its own: a
/// `flock` belongs to the open file description, which fork shares).
struct Opened {
    file: File,
    pid: u32,
}

struct Guard<'a> {
    slot: MutexGuard<'a, Option<Opened>>,
    /// A stripe lock (counted in `HELD`); the count lock is not.
    stripe: bool,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if let Some(o) = self.slot.as_ref() {
            let _ = o.file.unlock();
        }
        if self.stripe {
            HELD.with(|h| h.set(h.get() - 1));
        }
    }
}

/// Whether the umask strips bits of `mode` from files created in `root` (then every
/// write needs an `fchmod`), learned once with a probe file.
fn umask_strips(root: &Root, mode: u32) -> io::Result<bool> {
    let probe = format!("fscache-probe-{}{MGMT_SUFFIX}", std::process::id());
    let _ = root.unlink(&probe);
    let file = root.create_new(&probe, mode)?;
    let created = file.metadata().map(|m| m.permissions().mode() & 0o777);
    drop(file);
    root.unlink(&probe)?;
    Ok(created? != mode)
}

/// Options for [`CachelibStore`]; from [`CachelibStore::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct CachelibStoreBuilder {
    dir: PathBuf,
    hash: HashMethod,
    file_mode: u32,
    clock: Arc<dyn Clock>,
}

impl CachelibStoreBuilder {
    /// How the Flask app's cachelib names files. Default: [`HashMethod::Sha256`].
    pub fn hash_method(mut self, hash: HashMethod) -> Self {
        self.hash = hash;
        self
    }

    /// The mode of files written (cachelib's `mode`, Flask-Session's
    /// `SESSION_FILE_MODE`). Default: `0o600`.
    pub fn file_mode(mut self, mode: u32) -> Self {
        self.file_mode = mode;
        self
    }

    /// The clock that judges expiry. Default: the system clock.
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Opens the directory, creating it (mode 0700) if missing, as cachelib does.
    ///
    /// # Errors
    /// [`Error::Config`] if the path exists and is not a directory, or the file mode
    /// is not a permission mode; [`Error::Io`] if it cannot be created or read.
    pub fn open(self) -> Result<CachelibStore> {
        if self.file_mode & !0o777 != 0 {
            return Err(Error::Config {
                message: format!("file mode {:o} is not a permission mode (0o000-0o777)", self.file_mode),
            });
        }
        match fs::symlink_metadata(&self.dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::Config {
                    message: format!(
                        "{} is not a directory; point the cachelib store at Flask-Session's \
                         session directory",
                        self.dir.display()
                    ),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&self.dir)
                    .map_err(|e| Error::io("create the cachelib directory", &self.dir, e))?;
            }
            Err(e) => return Err(Error::io("read the cachelib directory", &self.dir, e)),
        }
        let root = Root::open(&self.dir).map_err(|e| Error::io("open the cachelib directory", &self.dir, e))?;
        let needs_fchmod = umask_strips(&root, self.file_mode)
            .map_err(|e| Error::io("create a file in the cachelib directory", &self.dir, e))?;
        let count_name = self.hash.file_name(COUNT_KEY);
        Ok(CachelibStore {
            dir: self.dir,
            root,
            hash: self.hash,
            file_mode: self.file_mode,
            needs_fchmod,
            clock: self.clock,
            count_name,
            stripes: (0..STRIPES).map(|_| Mutex::new(None)).collect(),
            count_lock: Mutex::new(None),
        })
    }
}

/// A [`Store`] on a live Flask-Session cachelib directory (feature `flask`), in
/// cachelib's own format, so that a Flask app and [`Sessions`](crate::session::Sessions)
/// (with [`SessionConfig::flask_session`](crate::session::SessionConfig::flask_session))
/// share sessions both ways.
///
/// - A key's file is `<dir>/<hex digest of the key>` ([`HashMethod`]); its content a
///   4-byte native-endian expiry in Unix seconds (0: never) and the value (a pickle,
///   for Flask). Expiry has whole-second resolution, as cachelib's: a TTL is rounded
///   up to the next second.
/// - Writes go to a temp file `fscache-….__wz_cache` in the directory (cachelib
///   ignores that suffix), set to the file mode, and are renamed over the entry:
///   Flask and Rust readers see the old or the new file, never a torn one.
/// - Among fscache processes and threads, every write takes a stripe lock (a
///   `flock`ed file `fscache-lock-NN.__wz_cache` plus a mutex), so `insert`,
///   `compare_and_set`, `update` and `remove` are atomic against one another, as on
///   the other stores. Flask writes without locks: a Flask write landing inside one
///   of those is ordered after it (last writer wins, as between two Flask workers),
///   and no file is ever torn.
/// - The version of a load is the file's content, as Redis's is its value.
/// - When the directory has cachelib's count file (the Flask app set a
///   threshold), new and removed entries adjust it as cachelib does, so Flask's
///   threshold keeps counting Rust's sessions.
/// - [`cleanup`](Store::cleanup) removes expired entries and temp files over an hour
///   old; it only ever touches files named like cachelib's entries (a hex digest of
///   the right length) whose content is an expiry and a pickle, or named like temp
///   files. Nothing else in the directory is read or removed.
/// - Symlinks inside the directory are not followed.
pub struct CachelibStore {
    dir: PathBuf,
    /// The directory's descriptor: every name is opened beneath it, never through
    /// a symlink.
    root: Root,
    hash: HashMethod,
    file_mode: u32,
    needs_fchmod: bool,
    clock: Arc<dyn Clock>,
    count_name: String,
    stripes: Box<[Mutex<Option<Opened>>]>,
    count_lock: Mutex<Option<Opened>>,
}

impl std::fmt::Debug for CachelibStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachelibStore")
            .field("dir", &self.dir)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// One file read: its whole content, and whether it is live now.
struct Entry {
    bytes: Vec<u8>,
    live: bool,
}

impl CachelibStore {
    /// Opens a Flask-Session cachelib directory with cachelib's defaults (sha256
    /// names, files 0600).
    ///
    /// # Errors
    /// As [`CachelibStoreBuilder::open`].
    pub fn open(dir: impl AsRef<Path>) -> Result<CachelibStore> {
        Self::builder(dir).open()
    }

    /// Options: the hash method, file mode and clock.
    pub fn builder(dir: impl AsRef<Path>) -> CachelibStoreBuilder {
        CachelibStoreBuilder {
            dir: dir.as_ref().to_path_buf(),
            hash: HashMethod::Sha256,
            file_mode: 0o600,
            clock: Arc::new(SystemClock),
        }
    }

    /// The file that holds `key`.
    pub fn entry_path(&self, key: &str) -> PathBuf {
        self.dir.join(self.hash.file_name(key))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// cachelib's test: live while `expiry == 0 || expiry >= time()`.
    fn is_live(&self, expiry: u32) -> bool {
        expiry == 0 || u64::from(expiry) * 1000 >= self.now_ms()
    }

    /// The expiry written for a TTL from now, rounded up to whole seconds.
    fn expiry(&self, ttl: Duration) -> u32 {
        let ms = self.now_ms().saturating_add(super::clamp_ttl(ttl).as_millis() as u64);
        u32::try_from(ms.div_ceil(1000)).unwrap_or(u32::MAX)
    }

    fn stripe_of(&self, name: &str) -> usize {
        usize::from_str_radix(&name[..2], 16).unwrap_or(0) % STRIPES
    }

    /// Takes a lock. Stripe locks are never nested (a merge closure that writes
    /// to the store gets [`Error::Reentrant`]); the count lock is taken only inside
    /// a stripe lock or alone, always last, so no two threads wait on each other.
    fn lock<'a>(&self, slot: &'a Mutex<Option<Opened>>, name: &str, stripe: bool) -> Result<Guard<'a>> {
        if stripe && HELD.with(Cell::get) > 0 {
            return Err(Error::Reentrant { op: "a cachelib store write" });
        }
        let mut g = slot.lock().unwrap_or_else(|e| e.into_inner());
        let pid = std::process::id();
        if g.as_ref().is_none_or(|o| o.pid != pid) {
            let file = self
                .root
                .open_rw_create(name, self.file_mode)
                .map_err(|e| Error::io("open a lock file", self.dir.join(name), e))?;
            // Replacing an inherited descriptor must not unlock the parent's lock.
            if let Some(old) = g.take() {
                std::mem::forget(old.file);
            }
            *g = Some(Opened { file, pid });
        }
        let opened = g.as_ref().expect("opened above");
        opened
            .file
            .lock()
            .map_err(|e| Error::io("lock", self.dir.join(name), e))?;
        if stripe {
            HELD.with(|h| h.set(h.get() + 1));
        }
        Ok(Guard { slot: g, stripe })
    }

    fn lock_key(&self, name: &str) -> Result<Guard<'_>> {
        let i = self.stripe_of(name);
        self.lock(&self.stripes[i], &format!("fscache-lock-{i:02}{MGMT_SUFFIX}"), true)
    }

    /// Reads the file `name`; `None` if absent, or not a regular file (a symlink, a
    /// directory, a FIFO are not entries). No `fstat`: a read returning 0 ends it.
    fn read(&self, name: &str) -> Result<Option<Entry>> {
        let not_an_entry = |what: &str| {
            log::warn!("fscache: {} is {what}, not a cachelib entry; ignored", self.dir.join(name).display());
            Ok(None)
        };
        let mut file = match self.root.open_read(name) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if sys::is_symlink_error(&e) => return not_an_entry("a symlink"),
            Err(e) if sys::is_not_a_file_error(&e) => return not_an_entry("not a regular file"),
            Err(e) => return Err(Error::io("open a cachelib entry", self.dir.join(name), e)),
        };
        let bytes = match sys::read_entry_file(&mut file, MAX_FILE) {
            Ok(b) => b,
            Err(e) if sys::is_not_a_file_error(&e) => return not_an_entry("not a regular file"),
            Err(e) => return Err(Error::io("read a cachelib entry", self.dir.join(name), e)),
        };
        if bytes.len() < 4 || bytes.len() > MAX_FILE {
            // cachelib reads a short file as a miss too.
            log::warn!("fscache: {} is no cachelib entry (length {}); read as absent", self.dir.join(name).display(), bytes.len());
            return Ok(Some(Entry { bytes, live: false }));
        }
        let expiry = u32::from_ne_bytes(bytes[..4].try_into().expect("4 bytes"));
        let live = self.is_live(expiry);
        Ok(Some(Entry { bytes, live }))
    }

    /// Writes `header + value` to `name` through a temp file and a rename. The
    /// caller holds the key's stripe lock and says whether a file was there (it has
    /// just read it), which cachelib's count needs.
    fn write(&self, name: &str, value: &[u8], ttl: Duration, existed: bool) -> Result<()> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let tmp = format!(
            "fscache-{}-{}{MGMT_SUFFIX}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let result = (|| {
            let mut f = self.root.create_new(&tmp, self.file_mode)?;
            if self.needs_fchmod {
                sys::set_mode(&f, self.file_mode)?;
            }
            let mut bytes = Vec::with_capacity(4 + value.len());
            bytes.extend_from_slice(&self.expiry(ttl).to_ne_bytes());
            bytes.extend_from_slice(value);
            f.write_all(&bytes)?;
            drop(f);
            // The commit point: readers see the old file or this one.
            self.root.rename(&tmp, name)
        })();
        if let Err(e) = result {
            let _ = self.root.unlink(&tmp);
            return Err(Error::io("write a cachelib entry", self.dir.join(name), e));
        }
        if !existed {
            self.adjust_count(1);
        }
        Ok(())
    }

    /// Unlinks `name`; whether it was there.
    fn unlink(&self, name: &str) -> Result<bool> {
        let removed = self
            .root
            .unlink(name)
            .map_err(|e| Error::io("remove a cachelib entry", self.dir.join(name), e))?;
        if removed {
            self.adjust_count(-1);
        }
        Ok(removed)
    }

    /// Adds `delta` to cachelib's count file, if the directory has one (the Flask
    /// app set a threshold). Best effort, as cachelib's own: a failure is logged,
    /// never returned (the entry itself is committed).
    fn adjust_count(&self, delta: i128) {
        // Most Flask apps set no threshold: one lstat, no lock.
        if matches!(self.root.lstat(&self.count_name), Err(e) if e.kind() == io::ErrorKind::NotFound) {
            return;
        }
        let result = (|| -> Result<()> {
            let _g = self.lock(&self.count_lock, &format!("fscache-lock-count{MGMT_SUFFIX}"), false)?;
            let Some(read) = self.read(&self.count_name)? else {
                return Ok(());
            };
            let Some(payload) = read.bytes.get(4..) else {
                return Ok(());
            };
            let Ok(PyValue::Int(n)) = pickle::decode(payload) else {
                log::warn!("fscache: cachelib's count file does not hold an int; left alone");
                return Ok(());
            };
            let new = pickle::encode(&PyValue::Int((n + delta).max(0)))
                .map_err(|e| Error::callback(io::Error::other(e.to_string())))?;
            let tmp = format!("fscache-count-{}{MGMT_SUFFIX}", std::process::id());
            let mut bytes = 0u32.to_ne_bytes().to_vec();
            bytes.extend_from_slice(&new);
            let written = (|| {
                let _ = self.root.unlink(&tmp);
                let mut f = self.root.create_new(&tmp, self.file_mode)?;
                if self.needs_fchmod {
                    sys::set_mode(&f, self.file_mode)?;
                }
                f.write_all(&bytes)?;
                drop(f);
                self.root.rename(&tmp, &self.count_name)
            })();
            written.map_err(|e| {
                let _ = self.root.unlink(&tmp);
                Error::io("update cachelib's count file", self.dir.join(&self.count_name), e)
            })
        })();
        if let Err(e) = result {
            log::warn!("fscache: {e}");
        }
    }

    /// Whether `name` is a cachelib entry name of this hash method.
    fn is_entry_name(&self, name: &str) -> bool {
        name.len() == self.hash.hex_len()
            && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && name != self.count_name
    }
}

impl Store for CachelibStore {
    fn engine(&self) -> &'static str {
        "cachelib"
    }

    fn load(&self, key: &str) -> Result<Option<Versioned>> {
        let name = self.hash.file_name(key);
        Ok(match self.read(&name)? {
            Some(r) if r.live => Some(Versioned {
                value: r.bytes[4..].to_vec(),
                version: Version::from_bytes(&r.bytes),
            }),
            _ => None,
        })
    }

    fn save(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        let name = self.hash.file_name(key);
        let _g = self.lock_key(&name)?;
        let existed = self
            .root
            .lstat(&name)
            .map(|_| true)
            .or_else(|e| if e.kind() == io::ErrorKind::NotFound { Ok(false) } else { Err(e) })
            .map_err(|e| Error::io("stat a cachelib entry", self.dir.join(&name), e))?;
        self.write(&name, value, ttl, existed)
    }

    fn insert(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        let name = self.hash.file_name(key);
        let _g = self.lock_key(&name)?;
        let current = self.read(&name)?;
        if current.as_ref().is_some_and(|r| r.live) {
            return Ok(false);
        }
        self.write(&name, value, ttl, current.is_some())?;
        Ok(true)
    }

    fn compare_and_set(&self, key: &str, expected: &Version, new: Option<&[u8]>, ttl: Duration) -> Result<bool> {
        let Some(expected) = expected.as_bytes() else {
            return Err(super::foreign_version(key));
        };
        let name = self.hash.file_name(key);
        let _g = self.lock_key(&name)?;
        match self.read(&name)? {
            Some(r) if r.live && r.bytes == expected => {}
            _ => return Ok(false),
        }
        match new {
            Some(v) => self.write(&name, v, ttl, true).map(|()| true),
            None => self.unlink(&name).map(|_| true),
        }
    }

    fn remove(&self, key: &str) -> Result<bool> {
        let name = self.hash.file_name(key);
        let _g = self.lock_key(&name)?;
        let live = self.read(&name)?.is_some_and(|r| r.live);
        self.unlink(&name)?;
        Ok(live)
    }

    fn touch(&self, key: &str, ttl: Duration) -> Result<bool> {
        let name = self.hash.file_name(key);
        let _g = self.lock_key(&name)?;
        match self.read(&name)? {
            Some(r) if r.live => self.write(&name, &r.bytes[4..], ttl, true).map(|()| true),
            _ => Ok(false),
        }
    }

    /// Runs `merge` once under the key's stripe lock.
    fn update(&self, key: &str, ttl: Duration, merge: &mut MergeFn<'_>) -> Result<Option<Vec<u8>>> {
        let name = self.hash.file_name(key);
        let _g = self.lock_key(&name)?;
        let read = self.read(&name)?;
        let existed = read.is_some();
        let current = read.filter(|r| r.live);
        let value = current.as_ref().map(|r| &r.bytes[4..]);
        match merge(value)? {
            Merge::Keep => Ok(value.map(<[u8]>::to_vec)),
            Merge::Put(new) => {
                self.write(&name, &new, ttl, existed)?;
                Ok(Some(new))
            }
            Merge::Delete => {
                if current.is_some() {
                    self.unlink(&name)?;
                }
                Ok(None)
            }
        }
    }

    /// Removes up to `batch` expired entries (and temp files over an hour old).
    fn cleanup(&self, batch: usize) -> Result<usize> {
        let entries = fs::read_dir(&self.dir).map_err(|e| Error::io("list the cachelib directory", &self.dir, e))?;
        let mut removed = 0;
        for entry in entries {
            if removed >= batch {
                break;
            }
            let entry = entry.map_err(|e| Error::io("list the cachelib directory", &self.dir, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.ends_with(MGMT_SUFFIX) && !name.starts_with("fscache-lock-") {
                let stale = entry
                    .metadata()
                    .ok()
                    .filter(|m| m.is_file())
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_some_and(|age| age > STALE_TEMP);
                if stale && self.root.unlink(&name).unwrap_or(false) {
                    removed += 1;
                }
                continue;
            }
            if !self.is_entry_name(&name) {
                continue;
            }
            let _g = self.lock_key(&name)?;
            // An expired entry holding a pickle: cachelib's own, or ours.
            let expired = self
                .read(&name)?
                .is_some_and(|r| !r.live && r.bytes.len() > 4 && r.bytes[4] == 0x80);
            if expired && self.unlink(&name)? {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn names_are_cachelibs() {
        // hashlib.sha256(b"session:abc").hexdigest(), hashlib.md5(...).hexdigest()
        assert_eq!(
            HashMethod::Sha256.file_name("__wz_cache_count"),
            "79bc207ee04a581ab2348ca1f3494e64cd0ec36128735b8c6bc85ddd8fe1938c"
        );
        assert_eq!(HashMethod::Md5.file_name(""), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn expiry_is_whole_seconds_like_cachelib() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at(1_000_000_500);
        let s = CachelibStore::builder(dir.path()).clock(clock.clone()).open().unwrap();
        s.save("k", b"\x80\x05N.", Duration::from_millis(1)).unwrap();
        let bytes = fs::read(s.entry_path("k")).unwrap();
        assert_eq!(u32::from_ne_bytes(bytes[..4].try_into().unwrap()), 1_000_001);
        assert!(s.load("k").unwrap().is_some());
        clock.set(1_000_001_000);
        assert!(s.load("k").unwrap().is_some(), "live while expiry >= now, as cachelib");
        clock.set(1_000_001_001);
        assert!(s.load("k").unwrap().is_none());
        assert_eq!(s.cleanup(10).unwrap(), 1);
        assert!(!s.entry_path("k").exists());
    }
}
