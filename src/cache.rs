//! `FileSystemCache`: opening a directory and the per-key operations.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::clock::Clock;
use crate::codec;
use crate::entry::{CHECKSUM_LEN, Codec, EntryWriter, HEADER_LEN};
use crate::error::{Error, Result};
use crate::layout::{self, EntryPath, TEMP_PREFIX};
use crate::lock::{LockGuard, Locks};
use crate::options::{Durability, FileSystemCacheBuilder, Ttl, expires_at};
use crate::state::SharedState;
use crate::sys::{Commit, RenameMode, Root};

/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 64 * 1024;

/// A cache of serde values (or raw bytes) in a directory, one file per key.
///
/// Cheap to clone (clones share one handle) and safe to use from many threads; many
/// processes may open the same directory at once. See the [crate docs](crate) for
/// the on-disk layout and what is guaranteed.
#[derive(Clone, Debug)]
pub struct FileSystemCache {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) root: Root,
    pub(crate) state: SharedState,
    pub(crate) locks: Locks,
    pub(crate) threshold: usize,
    pub(crate) low_water_percent: u8,
    pub(crate) default_ttl: Option<Duration>,
    pub(crate) codec: Codec,
    pub(crate) file_mode: u32,
    pub(crate) dir_mode: u32,
    /// The umask strips bits of `file_mode`, so new files need an explicit `fchmod`.
    pub(crate) needs_fchmod: bool,
    pub(crate) durability: Durability,
    pub(crate) max_value_size: usize,
    pub(crate) clock: Arc<dyn Clock>,
    /// Temp and moved-aside files older than this (by ctime) are swept.
    pub(crate) stale_temp_age: Duration,
    /// Entry headers an automatic expiry step reads (0: no automatic steps).
    pub(crate) expiry_budget: usize,
    /// Writes through this handle, for the expiry step's cadence.
    pub(crate) writes_since_open: AtomicU64,
    /// Where this handle's expiry walk stands.
    pub(crate) walk: std::sync::Mutex<crate::prune::Walk>,
    pub(crate) stats: StatCounters,
}

/// Counters since this handle was opened (per process, not shared).
#[derive(Debug, Default)]
pub(crate) struct StatCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub writes: AtomicU64,
    pub deletes: AtomicU64,
    pub expired: AtomicU64,
    pub evicted: AtomicU64,
    pub damaged: AtomicU64,
    pub sweeps: AtomicU64,
    pub stale_temp: AtomicU64,
    pub sweep_errors: AtomicU64,
    pub litter: AtomicU64,
}

/// A snapshot of a cache handle's counters; see [`FileSystemCache::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Reads that found a live entry.
    pub hits: u64,
    /// Reads that found nothing live (absent, expired or damaged).
    pub misses: u64,
    /// Entries written.
    pub writes: u64,
    /// Entries removed by `delete`/`delete_many`/`clear`.
    pub deletes: u64,
    /// Expired entries removed (on read or by a sweep).
    pub expired: u64,
    /// Live entries evicted by the threshold.
    pub evicted: u64,
    /// Damaged or foreign files found (and removed) in the cache directory.
    pub damaged: u64,
    /// Sweeps run (automatic and `prune`).
    pub sweeps: u64,
    /// Stale temp files of crashed writers removed.
    pub stale_temp: u64,
    /// Housekeeping that failed without failing the operation that ran it: sweeps
    /// started by a write, removals of stale entries found by a read. Each is logged
    /// at warn; the write or read itself succeeded.
    pub sweep_errors: u64,
    /// Replaced entries a committed write could not remove (left as litter for the
    /// next sweep, logged at warn).
    pub litter: u64,
    /// How this directory commits writes (chosen when it was opened).
    pub rename_mode: RenameMode,
}

impl FileSystemCache {
    /// Opens the cache in `dir` with default options (threshold 500, TTL 300 s, JSON).
    ///
    /// A missing directory is created (mode 0700), an empty one is adopted; a
    /// non-empty directory that is not an fscache is refused.
    ///
    /// # Errors
    /// See [`FileSystemCacheBuilder::open`].
    ///
    /// # Examples
    /// ```
    /// # fn main() -> fscache::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = fscache::FileSystemCache::open(dir.path().join("cache"))?;
    /// cache.set("greeting", "hello")?;
    /// assert_eq!(cache.get::<String>("greeting")?.as_deref(), Some("hello"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn open(dir: impl AsRef<Path>) -> Result<FileSystemCache> {
        FileSystemCache::builder(dir).open()
    }

    /// Options for opening a cache.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use fscache::{Durability, FileSystemCache, Format};
    /// # fn main() -> fscache::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = FileSystemCache::builder(dir.path())
    ///     .threshold(10_000)
    ///     .default_ttl(Duration::from_secs(3600))
    ///     .format(Format::MessagePack)
    ///     .durability(Durability::Fsync)
    ///     .open()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder(dir: impl AsRef<Path>) -> FileSystemCacheBuilder {
        FileSystemCacheBuilder::new(dir.as_ref())
    }

    pub(crate) fn open_with(opts: FileSystemCacheBuilder) -> Result<FileSystemCache> {
        let dir = opts.dir.clone();
        let io_err = |op, e| Error::io(op, &dir, e);
        match std::fs::symlink_metadata(&dir) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(opts.dir_mode)
                    .create(&dir)
                    .map_err(|e| io_err("create cache directory", e))?;
                // Exactly dir_mode whatever the umask, keeping a setgid bit inherited
                // from the parent (a group-shared cache).
                use std::os::unix::fs::PermissionsExt;
                let inherited = std::fs::metadata(&dir)
                    .map(|m| m.permissions().mode() & crate::sys::SETGID)
                    .unwrap_or(0);
                std::fs::set_permissions(
                    &dir,
                    std::fs::Permissions::from_mode(opts.dir_mode | inherited),
                )
                .map_err(|e| io_err("set cache directory permissions", e))?;
            }
            Err(e) => return Err(io_err("inspect cache directory", e)),
        }
        let mut root = Root::open(&dir).map_err(|e| io_err("open cache directory", e))?;
        // Refuse a foreign directory before writing anything into it (the probe below
        // creates files); the marker itself is written after the probe, which decides
        // how a no-replace rename is done here.
        let found = crate::open::check_dir(&root, &dir)?;
        let needs_fchmod = probe(&mut root, &dir, opts.file_mode, opts.force_portable_renames)?;
        if root.mode() == RenameMode::Portable {
            log::warn!(
                "fscache: {} has no renameat2 flags (or the portable mode was forced): using \
                 link + unlink and a lock per write (RenameMode::Portable)",
                dir.display()
            );
        }
        let fresh = found == crate::open::Found::Empty
            && crate::open::adopt(&root, &dir, opts.file_mode)?;

        let locks = Locks::new(&dir, root.id(), opts.file_mode, opts.dir_mode);
        let state = crate::open::open_state(&root, &dir, opts.file_mode, opts.dir_mode, fresh)?;

        Ok(FileSystemCache {
            inner: Arc::new(Inner {
                dir,
                root,
                state,
                locks,
                threshold: opts.threshold,
                low_water_percent: opts.low_water_percent,
                default_ttl: opts.default_ttl,
                codec: opts.format.codec(),
                file_mode: opts.file_mode,
                dir_mode: opts.dir_mode,
                needs_fchmod,
                durability: opts.durability,
                max_value_size: opts.max_value_size,
                clock: opts.clock,
                stale_temp_age: opts.stale_temp_age,
                expiry_budget: opts.expiry_budget,
                writes_since_open: AtomicU64::new(0),
                walk: std::sync::Mutex::default(),
                stats: StatCounters::default(),
            }),
        })
    }

    /// The cache directory.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// A snapshot of this handle's counters (this process only).
    pub fn stats(&self) -> Stats {
        let s = &self.inner.stats;
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            hits: l(&s.hits),
            misses: l(&s.misses),
            writes: l(&s.writes),
            deletes: l(&s.deletes),
            expired: l(&s.expired),
            evicted: l(&s.evicted),
            damaged: l(&s.damaged),
            sweeps: l(&s.sweeps),
            stale_temp: l(&s.stale_temp),
            sweep_errors: l(&s.sweep_errors),
            litter: l(&s.litter),
            rename_mode: self.inner.root.mode(),
        }
    }

    /// The shared entry count as kept per operation (includes expired entries not yet
    /// removed; may drift after a crash or files removed by hand). [`len`](Self::len)
    /// gives the exact number of live entries and corrects this figure when it runs
    /// quietly.
    pub fn approximate_len(&self) -> usize {
        self.inner.state.load().max(0) as usize
    }

    // ----- reads -----

    /// The value stored under `key`, or `None` if there is none or it expired.
    ///
    /// The entry may have been written with either format; it is decoded with the
    /// codec recorded in it. An expired or damaged entry reads as `None` and is
    /// removed.
    ///
    /// # Errors
    /// [`Error::Deserialize`] if the stored value does not fit `T`;
    /// [`Error::KeyTooLong`]; [`Error::Io`] on I/O failure.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> fscache::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let cache = fscache::FileSystemCache::open(dir.path())?;
    /// cache.set("answer", &42u32)?;
    /// assert_eq!(cache.get::<u32>("answer")?, Some(42));
    /// assert_eq!(cache.get::<u32>("question")?, None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let path = self.inner.path_for(key)?;
        match self.inner.load(key, &path, None)? {
            None => Ok(None),
            Some(l) => codec::decode(l.header.codec, key, l.payload()).map(Some),
        }
    }

    /// The stored payload bytes under `key`: what [`set_bytes`](Self::set_bytes)
    /// stored, or the encoded form of a typed value.
    ///
    /// # Errors
    /// As [`get`](Self::get), without deserialization.
    pub fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let path = self.inner.path_for(key)?;
        Ok(self.inner.load(key, &path, None)?.map(|l| {
            let mut bytes = l.bytes;
            bytes.truncate(l.payload.end);
            bytes.drain(..l.payload.start);
            bytes
        }))
    }

    /// The values of several keys, in order.
    ///
    /// # Errors
    /// The first error of [`get`](Self::get).
    pub fn get_many<T, K>(&self, keys: impl IntoIterator<Item = K>) -> Result<Vec<Option<T>>>
    where
        T: DeserializeOwned,
        K: AsRef<str>,
    {
        keys.into_iter().map(|k| self.get(k.as_ref())).collect()
    }

    /// Whether a live entry exists under `key`. Reads only the entry's header (its
    /// own check protects it); a damaged payload is found by the next `get`.
    ///
    /// # Errors
    /// [`Error::KeyTooLong`]; [`Error::Io`] on I/O failure.
    pub fn has(&self, key: &str) -> Result<bool> {
        let path = self.inner.path_for(key)?;
        self.inner.has(key, &path, None)
    }

    // ----- writes -----

    /// Stores `value` under `key` with the default TTL, replacing any entry.
    ///
    /// # Errors
    /// [`Error::Serialize`] (nothing is written), [`Error::ValueTooLarge`],
    /// [`Error::KeyTooLong`], [`Error::Io`] (the old value stays intact and no temp
    /// file is left behind).
    pub fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        self.set_with_ttl(key, value, Ttl::Default)
    }

    /// Stores `value` under `key` with `ttl`.
    ///
    /// # Errors
    /// As [`set`](Self::set), plus [`Error::InvalidTtl`].
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use fscache::Ttl;
    /// # fn main() -> fscache::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let cache = fscache::FileSystemCache::open(dir.path())?;
    /// cache.set_with_ttl("token", "abc", Ttl::After(Duration::from_secs(60)))?;
    /// cache.set_with_ttl("config", &[1, 2, 3], Ttl::Never)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_with_ttl<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Ttl,
    ) -> Result<()> {
        let path = self.inner.path_for(key)?;
        let expires = self.inner.expires_at(ttl)?;
        let bytes = self.inner.encode(key, value, expires)?;
        let commit = self.inner.write_entry(&path, &bytes, None)?;
        self.inner.after_write(commit);
        Ok(())
    }

    /// Stores raw bytes under `key` with the default TTL.
    ///
    /// # Errors
    /// As [`set`](Self::set), without serialization.
    pub fn set_bytes(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.set_bytes_with_ttl(key, bytes, Ttl::Default)
    }

    /// Stores raw bytes under `key` with `ttl`.
    ///
    /// # Errors
    /// As [`set_with_ttl`](Self::set_with_ttl), without serialization.
    pub fn set_bytes_with_ttl(&self, key: &str, bytes: &[u8], ttl: Ttl) -> Result<()> {
        let path = self.inner.path_for(key)?;
        let expires = self.inner.expires_at(ttl)?;
        let entry = self.inner.encode_raw(key, bytes, expires)?;
        let commit = self.inner.write_entry(&path, &entry, None)?;
        self.inner.after_write(commit);
        Ok(())
    }

    /// Stores several values with one TTL. Not atomic as a group: each entry is
    /// written atomically on its own, and an error stops at that entry.
    ///
    /// # Errors
    /// The first error of [`set_with_ttl`](Self::set_with_ttl).
    pub fn set_many<K, V>(&self, items: impl IntoIterator<Item = (K, V)>, ttl: Ttl) -> Result<()>
    where
        K: AsRef<str>,
        V: Serialize,
    {
        for (k, v) in items {
            self.set_with_ttl(k.as_ref(), &v, ttl)?;
        }
        Ok(())
    }

    /// Stores `value` only if `key` has no live entry; `true` if it was stored.
    ///
    /// Linearizable against every other operation, plain [`set`](Self::set)
    /// included, in all threads and processes: it holds the key's stripe lock (so no
    /// `add`, `inc`, `update` or `delete` of the key interleaves) and commits with a
    /// no-replace rename, so a `set` that lands between its check and its commit
    /// wins and `add` returns `false`.
    ///
    /// # Errors
    /// As [`set_with_ttl`](Self::set_with_ttl), plus [`Error::Lock`] and
    /// [`Error::Reentrant`].
    pub fn add<T: Serialize + ?Sized>(&self, key: &str, value: &T, ttl: Ttl) -> Result<bool> {
        let inner = &self.inner;
        let path = inner.path_for(key)?;
        let expires = inner.expires_at(ttl)?;
        let bytes = inner.encode(key, value, expires)?;
        let commit = {
            let guard = inner.lock(&path, "add")?;
            inner.add_entry(key, &path, &bytes, &guard)?
        };
        match commit {
            Some(commit) => {
                inner.after_write(commit);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Adds `delta` to the integer under `key` and returns the new value. A missing
    /// key starts from 0 and gets the default TTL; an existing entry keeps its expiry.
    /// Atomic across threads and processes.
    ///
    /// # Errors
    /// [`Error::Deserialize`] if the stored value is not an integer,
    /// [`Error::Overflow`] if the result does not fit an `i64` (nothing is written),
    /// [`Error::Lock`], [`Error::Io`].
    ///
    /// # Examples
    /// ```
    /// # fn main() -> fscache::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let cache = fscache::FileSystemCache::open(dir.path())?;
    /// assert_eq!(cache.inc("hits", 1)?, 1);
    /// assert_eq!(cache.inc("hits", 10)?, 11);
    /// assert_eq!(cache.dec("hits", 2)?, 9);
    /// # Ok(())
    /// # }
    /// ```
    pub fn inc(&self, key: &str, delta: i64) -> Result<i64> {
        let inner = &self.inner;
        let path = inner.path_for(key)?;
        let (value, commit) = {
            let guard = inner.lock(&path, "inc")?;
            let (current, expires, codec) = match inner.load(key, &path, Some(&guard))? {
                Some(l) => {
                    let v: i64 = codec::decode(l.header.codec, key, l.payload())?;
                    let codec = if l.header.codec == Codec::Raw {
                        inner.codec
                    } else {
                        l.header.codec
                    };
                    (v, l.header.expires_at, codec)
                }
                None => (0, inner.expires_at(Ttl::Default)?, inner.codec),
            };
            let value = current.checked_add(delta).ok_or_else(|| Error::Overflow {
                key: key.to_owned(),
            })?;
            let bytes = inner.encode_with(codec, key, &value, expires)?;
            (value, inner.write_entry(&path, &bytes, Some(&guard))?)
        };
        inner.after_write(commit);
        Ok(value)
    }

    /// Subtracts `delta`; see [`inc`](Self::inc).
    ///
    /// # Errors
    /// As [`inc`](Self::inc).
    pub fn dec(&self, key: &str, delta: i64) -> Result<i64> {
        let neg = delta.checked_neg().ok_or_else(|| Error::Overflow {
            key: key.to_owned(),
        })?;
        self.inc(key, neg)
    }

    /// Atomic read-modify-write: calls `f` with the current value (or `None`) while
    /// holding the key's stripe lock across threads and processes; stores what it
    /// returns with `ttl`, or deletes the entry if it returns `None`. Returns the new
    /// value.
    ///
    /// Inside `f`, the lock-free operations ([`get`](Self::get),
    /// [`get_bytes`](Self::get_bytes), [`has`](Self::has), [`set`](Self::set),
    /// [`set_bytes`](Self::set_bytes)) work on any key of any cache. Operations that
    /// take a stripe lock of the same directory (`add`, `inc`, `dec`, `update`,
    /// `delete`, `prune`, `clear`), through any handle, return [`Error::Reentrant`]
    /// instead of deadlocking; a sweep a write inside `f` would start is left to a
    /// later write. Keep `f` short: other read-modify-writes of keys on its stripe,
    /// in every process, wait for it.
    ///
    /// # Errors
    /// [`Error::Deserialize`] if the stored value does not fit `T` (`f` is not
    /// called), [`Error::Reentrant`] if called from inside another `update`'s closure,
    /// plus the errors of [`set_with_ttl`](Self::set_with_ttl).
    ///
    /// # Examples
    /// ```
    /// use fscache::Ttl;
    /// # fn main() -> fscache::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let cache = fscache::FileSystemCache::open(dir.path())?;
    /// let cart = cache.update("cart", Ttl::Default, |cart: Option<Vec<String>>| {
    ///     let mut cart = cart.unwrap_or_default();
    ///     cart.push("apple".into());
    ///     Some(cart)
    /// })?;
    /// assert_eq!(cart, Some(vec!["apple".to_string()]));
    /// # Ok(())
    /// # }
    /// ```
    pub fn update<T, F>(&self, key: &str, ttl: Ttl, f: F) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Option<T>) -> Option<T>,
    {
        let inner = &self.inner;
        let path = inner.path_for(key)?;
        let expires = inner.expires_at(ttl)?;
        let (new, commit) = {
            let guard = inner.lock(&path, "update")?;
            let current = match inner.load(key, &path, Some(&guard))? {
                Some(l) => Some(codec::decode::<T>(l.header.codec, key, l.payload())?),
                None => None,
            };
            let existed = current.is_some();
            match f(current) {
                Some(value) => {
                    let bytes = inner.encode(key, &value, expires)?;
                    (
                        Some(value),
                        Some(inner.write_entry(&path, &bytes, Some(&guard))?),
                    )
                }
                None => {
                    if existed {
                        inner.remove(&path, Some(&guard))?;
                    }
                    (None, None)
                }
            }
        };
        if let Some(commit) = commit {
            inner.after_write(commit);
        }
        Ok(new)
    }

    // ----- deletes -----

    /// Removes the entry under `key`; `true` if one existed (live or expired).
    ///
    /// Ordered with read-modify-writes by the key's stripe lock, in all threads and
    /// processes: once `delete` returns, no `add`, `inc`, `update` (or session save)
    /// that started before it can write the key back, and no sweep has it moved
    /// aside. A plain [`set`](Self::set) racing it is ordered before or after it,
    /// as in Redis.
    ///
    /// # Errors
    /// [`Error::KeyTooLong`]; [`Error::Lock`]; [`Error::Reentrant`] inside an
    /// `update` closure; [`Error::Io`] on I/O failure.
    pub fn delete(&self, key: &str) -> Result<bool> {
        let path = self.inner.path_for(key)?;
        self.inner.remove(&path, None)
    }

    /// Removes several keys (missing ones are ignored); returns how many existed.
    ///
    /// # Errors
    /// The first error of [`delete`](Self::delete).
    pub fn delete_many<K: AsRef<str>>(&self, keys: impl IntoIterator<Item = K>) -> Result<usize> {
        let mut n = 0;
        for k in keys {
            n += usize::from(self.delete(k.as_ref())?);
        }
        Ok(n)
    }
}

/// Learns, with two probe files, whether the umask strips bits of `file_mode` (the
/// result), whether `flock` works, and which [`RenameMode`] the filesystem supports
/// (set on `root`). Refuses a filesystem that lacks what the guarantees need.
fn probe(root: &mut Root, dir: &Path, file_mode: u32, force_portable: bool) -> Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let id = layout::next_write_id();
    let a = format!("{TEMP_PREFIX}probe-{id:016x}");
    let b = format!("{TEMP_PREFIX}probe-{id:016x}-b");
    let io_err = |e| Error::io("create a file in the cache directory", dir, e);
    let file = root.create_new(&a, file_mode).map_err(io_err)?;
    let cleanup = |root: &Root| {
        let _ = root.unlink(&a);
        let _ = root.unlink(&b);
    };
    let mode = file.metadata().map(|m| m.permissions().mode() & 0o777);
    let locked = file.try_lock();
    drop(file);
    let unsupported = |missing, source| Error::UnsupportedFilesystem {
        path: dir.to_path_buf(),
        missing,
        source,
    };
    match locked {
        Ok(()) | Err(std::fs::TryLockError::WouldBlock) => {}
        Err(std::fs::TryLockError::Error(e)) => {
            cleanup(root);
            return Err(unsupported("flock", e));
        }
    }
    let mode = match mode {
        Ok(m) => m,
        Err(e) => {
            cleanup(root);
            return Err(io_err(e));
        }
    };
    if let Err(e) = root.create_new(&b, file_mode) {
        cleanup(root);
        return Err(io_err(e));
    }
    // probe_mode consumes (removes) both probe files, also on error.
    root.probe_mode(dir, &a, &b, force_portable)
        .map_err(|(missing, e)| unsupported(missing, e))?;
    Ok(mode != file_mode)
}

impl Inner {
    pub(crate) fn path_for(&self, key: &str) -> Result<EntryPath> {
        if key.len() > MAX_KEY_LEN {
            return Err(Error::KeyTooLong {
                len: key.len(),
                max: MAX_KEY_LEN,
            });
        }
        Ok(EntryPath::for_key(key))
    }

    pub(crate) fn expires_at(&self, ttl: Ttl) -> Result<u64> {
        expires_at(ttl, self.default_ttl, self.clock.now_ms())
    }

    pub(crate) fn io(&self, op: &'static str, rel: &str, e: io::Error) -> Error {
        Error::io(op, self.dir.join(rel), e)
    }

    pub(crate) fn max_file_len(&self) -> usize {
        HEADER_LEN + crate::MAX_KEY_LEN + self.max_value_size + CHECKSUM_LEN
    }

    pub(crate) fn encode<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        expires: u64,
    ) -> Result<Vec<u8>> {
        self.encode_with(self.codec, key, value, expires)
    }

    fn encode_with<T: Serialize + ?Sized>(
        &self,
        codec: Codec,
        key: &str,
        value: &T,
        expires: u64,
    ) -> Result<Vec<u8>> {
        let mut w = EntryWriter::start(codec, expires, layout::next_write_id(), key, 256);
        codec::encode(codec, key, value, w.payload())?;
        self.check_size(key, w.payload_len())?;
        Ok(w.finish())
    }

    pub(crate) fn encode_raw(&self, key: &str, payload: &[u8], expires: u64) -> Result<Vec<u8>> {
        self.check_size(key, payload.len())?;
        let mut w = EntryWriter::start(
            Codec::Raw,
            expires,
            layout::next_write_id(),
            key,
            payload.len(),
        );
        w.payload().extend_from_slice(payload);
        Ok(w.finish())
    }

    fn check_size(&self, key: &str, size: usize) -> Result<()> {
        if size > self.max_value_size {
            return Err(Error::ValueTooLarge {
                key: key.to_owned(),
                size,
                max: self.max_value_size,
            });
        }
        Ok(())
    }

    /// After a write outside any stripe lock: start a sweep if the threshold is passed,
    /// else, every [`EXPIRY_EVERY`](crate::prune::EXPIRY_EVERY)th write of this handle,
    /// a bounded expiry step. The write is committed, so a failing sweep or step is
    /// logged and counted in [`Stats::sweep_errors`], never returned (a retried `inc`
    /// would count twice). Inside an `update` closure neither runs: they would need
    /// the held stripe.
    pub(crate) fn after_write(&self, commit: Commit) {
        // The cheap conditions first: most writes start neither a sweep nor a step.
        let over = (commit == Commit::Created && self.threshold > 0)
            .then(|| self.state.load())
            .filter(|&count| count > self.threshold as i64);
        let step_due = over.is_none()
            && self.expiry_budget > 0
            && (self.writes_since_open.fetch_add(1, Ordering::Relaxed) + 1)
                .is_multiple_of(crate::prune::EXPIRY_EVERY);
        if (over.is_none() && !step_due) || self.locks.held_by_this_thread() {
            return;
        }
        let result = match over {
            Some(count) => crate::prune::on_over_threshold(self, count),
            None => crate::prune::step(self, self.expiry_budget).map(drop),
        };
        if let Err(e) = result {
            self.stats.sweep_errors.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "fscache: cleanup of {} after a write failed (the write itself is stored): {e}",
                self.dir.display()
            );
        }
    }

    pub(crate) fn lock(&self, path: &EntryPath, op: &'static str) -> Result<LockGuard<'_>> {
        self.locks.stripe(&self.root, path.stripe(), op)
    }
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<FileSystemCache>();
}
