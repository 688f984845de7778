//! `FileSystemCache`: opening a directory and the per-key operations.

use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::clock::Clock;
use crate::codec;
use crate::entry::{self, CHECKSUM_LEN, Codec, EntryWriter, HEADER_LEN, Header};
use crate::error::{Error, Result};
use crate::layout::{self, EVICT_PREFIX, EntryPath, TEMP_PREFIX};
use crate::lock::{LockGuard, Locks};
use crate::options::{Durability, FileSystemCacheBuilder, Ttl, expires_at};
use crate::state::SharedState;
use crate::sys::{self, Commit, Root};

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
    default_ttl: Option<Duration>,
    codec: Codec,
    file_mode: u32,
    dir_mode: u32,
    /// The umask strips bits of `file_mode`, so new files need an explicit `fchmod`.
    needs_fchmod: bool,
    durability: Durability,
    pub(crate) max_value_size: usize,
    pub(crate) clock: Arc<dyn Clock>,
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
}

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
}

/// A live entry read from disk.
pub(crate) struct Loaded {
    bytes: Vec<u8>,
    header: Header,
    payload: Range<usize>,
}

impl Loaded {
    fn payload(&self) -> &[u8] {
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

fn is_symlink_error(e: &io::Error) -> bool {
    // ELOOP from O_NOFOLLOW / RESOLVE_NO_SYMLINKS, EXDEV from RESOLVE_BENEATH.
    matches!(
        e.raw_os_error(),
        Some(code) if code == rustix::io::Errno::LOOP.raw_os_error()
            || code == rustix::io::Errno::XDEV.raw_os_error()
    )
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
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(opts.dir_mode))
                    .map_err(|e| io_err("set cache directory permissions", e))?;
            }
            Err(e) => return Err(io_err("inspect cache directory", e)),
        }
        let root = Root::open(&dir).map_err(|e| io_err("open cache directory", e))?;
        let fresh = crate::open::ensure_marker(&root, &dir, opts.file_mode)?;

        let locks = Locks::new(&dir, opts.file_mode);
        let state = crate::open::open_state(&root, &dir, opts.file_mode, opts.dir_mode, fresh)?;
        let needs_fchmod = probe_umask(&root, opts.file_mode)
            .map_err(|e| io_err("create a file in the cache directory", e))?;

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
        }
    }

    /// The shared entry count as kept per operation (includes expired entries not yet
    /// removed; may drift after a crash or files removed by hand). [`len`](Self::len)
    /// gives the exact number of live entries and corrects this figure.
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
        let commit = self.inner.write_entry(&path, &bytes)?;
        self.inner.after_write(commit)
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
        let commit = self.inner.write_entry(&path, &entry)?;
        self.inner.after_write(commit)
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
    /// Atomic across threads and processes (holds the key's stripe lock).
    ///
    /// # Errors
    /// As [`set_with_ttl`](Self::set_with_ttl), plus [`Error::Lock`].
    pub fn add<T: Serialize + ?Sized>(&self, key: &str, value: &T, ttl: Ttl) -> Result<bool> {
        let inner = &self.inner;
        let path = inner.path_for(key)?;
        let expires = inner.expires_at(ttl)?;
        let bytes = inner.encode(key, value, expires)?;
        let commit = {
            let guard = inner.lock(&path)?;
            if inner.has(key, &path, Some(&guard))? {
                return Ok(false);
            }
            inner.write_entry(&path, &bytes)?
        };
        inner.after_write(commit)?;
        Ok(true)
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
            let guard = inner.lock(&path)?;
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
            (value, inner.write_entry(&path, &bytes)?)
        };
        inner.after_write(commit)?;
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
    /// `f` must not call back into the cache for keys that may share the stripe (it
    /// would deadlock); keep it a pure function of the value.
    ///
    /// # Errors
    /// [`Error::Deserialize`] if the stored value does not fit `T` (`f` is not
    /// called), plus the errors of [`set_with_ttl`](Self::set_with_ttl).
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
            let guard = inner.lock(&path)?;
            let current = match inner.load(key, &path, Some(&guard))? {
                Some(l) => Some(codec::decode::<T>(l.header.codec, key, l.payload())?),
                None => None,
            };
            let existed = current.is_some();
            match f(current) {
                Some(value) => {
                    let bytes = inner.encode(key, &value, expires)?;
                    (Some(value), Some(inner.write_entry(&path, &bytes)?))
                }
                None => {
                    if existed {
                        inner.remove(&path)?;
                    }
                    (None, None)
                }
            }
        };
        if let Some(commit) = commit {
            inner.after_write(commit)?;
        }
        Ok(new)
    }

    // ----- deletes -----

    /// Removes the entry under `key`; `true` if one existed (live or expired).
    ///
    /// # Errors
    /// [`Error::KeyTooLong`]; [`Error::Io`] on I/O failure.
    pub fn delete(&self, key: &str) -> Result<bool> {
        let path = self.inner.path_for(key)?;
        self.inner.remove(&path)
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

/// Creates one probe file to learn whether the umask strips bits of `file_mode`.
fn probe_umask(root: &Root, file_mode: u32) -> io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let rel = format!("{TEMP_PREFIX}probe-{:016x}", layout::next_write_id());
    let file = root.create_new(&rel, file_mode)?;
    let mode = file.metadata().map(|m| m.permissions().mode() & 0o777);
    drop(file);
    root.unlink(&rel)?;
    Ok(mode? != file_mode)
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

    fn io(&self, op: &'static str, rel: &str, e: io::Error) -> Error {
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

    pub(crate) fn lock(&self, path: &EntryPath) -> Result<LockGuard<'_>> {
        self.locks.stripe(&self.root, path.stripe())
    }

    /// Writes `bytes` to a temp file in the entry's shard and renames it over the
    /// entry: the rename is the commit point. Counts a new name in the shared count.
    pub(crate) fn write_entry(&self, path: &EntryPath, bytes: &[u8]) -> Result<Commit> {
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
                Err(e) if is_symlink_error(&e) => {
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
        let committed = written.and_then(|()| self.root.rename_commit(&tmp, path.rel()));
        let commit = match committed {
            Ok(c) => c,
            Err(e) => {
                let _ = self.root.unlink(&tmp);
                return Err(self.io("write entry", path.rel(), e));
            }
        };
        if self.durability == Durability::Fsync {
            self.root
                .sync_dir(path.shard_rel())
                .map_err(|e| self.io("fsync shard directory", path.shard_rel(), e))?;
        }
        if commit == Commit::Created {
            self.state.add(1);
        }
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        Ok(commit)
    }

    /// Removes an entry name unconditionally (user `delete`).
    pub(crate) fn remove(&self, path: &EntryPath) -> Result<bool> {
        let removed = self
            .root
            .unlink(path.rel())
            .map_err(|e| self.io("delete entry", path.rel(), e))?;
        if removed {
            self.state.add(-1);
            self.stats.deletes.fetch_add(1, Ordering::Relaxed);
            if self.durability == Durability::Fsync {
                self.root
                    .sync_dir(path.shard_rel())
                    .map_err(|e| self.io("fsync shard directory", path.shard_rel(), e))?;
            }
        }
        Ok(removed)
    }

    /// After a write outside any stripe lock: start a sweep if the threshold is passed.
    pub(crate) fn after_write(&self, commit: Commit) -> Result<()> {
        if commit == Commit::Created && self.threshold > 0 {
            let count = self.state.load();
            if count > self.threshold as i64 {
                crate::prune::on_over_threshold(self, count)?;
            }
        }
        Ok(())
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
        let removed = match held {
            Some(_) => self.evict_if_same(path, fp)?,
            None => {
                let _guard = self.lock(path)?;
                self.evict_if_same(path, fp)?
            }
        };
        if removed && matches!(fp, Fingerprint::Header(_)) {
            self.stats.expired.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn read(&self, key: &str, path: &EntryPath) -> Result<Found> {
        let mut file = match self.root.open_read(path.rel()) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Missing),
            Err(e) if is_symlink_error(&e) => {
                self.report_damage(path.rel(), "a symlink, not followed");
                return Ok(Found::Stale(Fingerprint::Symlink));
            }
            Err(e) => return Err(self.io("open entry", path.rel(), e)),
        };
        let bytes = sys::read_entry_file(&mut file, self.max_file_len())
            .map_err(|e| self.io("read entry", path.rel(), e))?;
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
            Err(e) if is_symlink_error(&e) => return Ok(self.load(key, path, held)?.is_some()),
            Err(e) => return Err(self.io("open entry", path.rel(), e)),
        };
        let prefix = sys::read_prefix(&mut file, HEADER_LEN + key.len())
            .map_err(|e| self.io("read entry", path.rel(), e))?;
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
        let aside = path.sibling(EVICT_PREFIX, layout::next_write_id());
        match self.root.rename(path.rel(), &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.io("move entry aside for eviction", path.rel(), e)),
        }
        let same = self.matches(&aside, fp);
        if !same {
            let restored = self
                .root
                .rename_noreplace(&aside, path.rel())
                .map_err(|e| self.io("restore entry", path.rel(), e))?;
            if restored {
                return Ok(false);
            }
            // A newer write took the name while ours was aside: ours is superseded.
        }
        self.root
            .unlink(&aside)
            .map_err(|e| self.io("remove evicted entry", &aside, e))?;
        self.state.add(-1);
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

#[allow(dead_code)]
fn assert_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<FileSystemCache>();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_fp(cache: &FileSystemCache, key: &str) -> Fingerprint {
        let path = EntryPath::for_key(key);
        let bytes = std::fs::read(cache.path().join(path.rel())).unwrap();
        fingerprint_header(&bytes)
    }

    #[test]
    fn eviction_removes_only_the_write_it_decided_on() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileSystemCache::builder(dir.path())
            .threshold(0)
            .open()
            .unwrap();
        let inner = &cache.inner;
        let path = EntryPath::for_key("k");

        // Decided on write 1; write 2 replaced it: eviction must put write 2 back.
        cache.set("k", &1).unwrap();
        let decided = header_fp(&cache, "k");
        cache.set("k", &2).unwrap();
        assert!(!inner.evict_if_same(&path, &decided).unwrap());
        assert_eq!(cache.get::<i32>("k").unwrap(), Some(2));
        assert_eq!(cache.approximate_len(), 1);

        // The same value rewritten is still another write (a new write id).
        cache.set("k", &2).unwrap();
        assert!(!inner.evict_if_same(&path, &decided).unwrap());
        assert_eq!(cache.get::<i32>("k").unwrap(), Some(2));

        // Unchanged since the decision: removed.
        let decided = header_fp(&cache, "k");
        assert!(inner.evict_if_same(&path, &decided).unwrap());
        assert_eq!(cache.get::<i32>("k").unwrap(), None);
        assert_eq!(cache.approximate_len(), 0);
        // Already gone: nothing to do.
        assert!(!inner.evict_if_same(&path, &decided).unwrap());
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
        let cache = FileSystemCache::builder(dir.path())
            .threshold(0)
            .open()
            .unwrap();
        let path = EntryPath::for_key("k");
        let file = dir.path().join(path.rel());
        std::fs::write(&file, b"garbage").unwrap();
        let decided = Fingerprint::Content(blake3::hash(b"garbage"));
        cache.set("k", &7).unwrap();
        assert!(!cache.inner.evict_if_same(&path, &decided).unwrap());
        assert_eq!(cache.get::<i32>("k").unwrap(), Some(7));
    }
}
