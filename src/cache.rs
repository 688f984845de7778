//! `FileSystemCache`: opening a directory and the per-key operations.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::engine::{Codec, Engine, Keys, PruneReport, RenameMode};
use crate::error::{Error, Result};
use crate::options::{FileSystemCacheBuilder, Ttl, expires_at};

/// A cache of serde values (or raw bytes) in a directory, one file per key.
///
/// Cheap to clone (clones share one handle) and safe to use from many threads; many
/// processes may open the same directory at once. See the [crate docs](crate) for
/// the on-disk layout and what is guaranteed.
#[derive(Clone, Debug)]
pub struct FileSystemCache {
    inner: Arc<Engine>,
}

/// What a read-merge-write does with the stored value: see
/// [`FileSystemCache::update_bytes`] and [`Store::update`](crate::Store::update).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Merge {
    /// Write nothing; the stored value (or its absence) stays.
    Keep,
    /// Store these bytes.
    Put(Vec<u8>),
    /// Remove the stored value.
    Delete,
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
    /// Expired entries removed (on read, by a cleanup step or by a sweep).
    pub expired: u64,
    /// Live entries evicted by the threshold.
    pub evicted: u64,
    /// Damaged or foreign files found (and removed) in the cache directory.
    pub damaged: u64,
    /// Full sweeps run (`prune`).
    pub sweeps: u64,
    /// Bounded cleanup steps run: eviction steps of writes past the threshold,
    /// periodic expiry steps, and [`prune_step`](FileSystemCache::prune_step) calls.
    pub steps: u64,
    /// Stale temp files of crashed writers removed.
    pub stale_temp: u64,
    /// Housekeeping that failed without failing the operation that ran it: cleanup steps
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

    /// The cache directory.
    pub fn path(&self) -> &Path {
        self.inner.dir()
    }

    /// A snapshot of this handle's counters (this process only).
    pub fn stats(&self) -> Stats {
        let s = self.inner.stats();
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
            steps: l(&s.steps),
            stale_temp: l(&s.stale_temp),
            sweep_errors: l(&s.sweep_errors),
            litter: l(&s.litter),
            rename_mode: self.inner.rename_mode(),
        }
    }

    /// The shared entry count as kept per operation (includes expired entries not yet
    /// removed; may drift after a crash or files removed by hand). [`len`](Self::len)
    /// gives the exact number of live entries and corrects this figure when it runs
    /// quietly.
    pub fn approximate_len(&self) -> usize {
        self.inner.count().max(0) as usize
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
        let expires = self.expires_at(ttl)?;
        let bytes = self.encode(self.inner.codec(), key, value, expires)?;
        let commit = self.inner.write_entry(&path, &bytes, None)?;
        self.inner.after_write(commit, &path);
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
        let expires = self.expires_at(ttl)?;
        let entry = self.encode_raw(key, bytes, expires)?;
        let commit = self.inner.write_entry(&path, &entry, None)?;
        self.inner.after_write(commit, &path);
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
        let expires = self.expires_at(ttl)?;
        let bytes = self.encode(inner.codec(), key, value, expires)?;
        let commit = {
            let guard = inner.lock(&path, "add")?;
            inner.add_entry(key, &path, &bytes, &guard, true)?
        };
        match commit {
            Some(commit) => {
                inner.after_write(commit, &path);
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
                        inner.codec()
                    } else {
                        l.header.codec
                    };
                    (v, l.header.expires_at, codec)
                }
                None => (0, self.expires_at(Ttl::Default)?, inner.codec()),
            };
            let value = current.checked_add(delta).ok_or_else(|| Error::Overflow {
                key: key.to_owned(),
            })?;
            let bytes = self.encode(codec, key, &value, expires)?;
            (value, inner.write_entry(&path, &bytes, Some(&guard))?)
        };
        inner.after_write(commit, &path);
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
    /// instead of deadlocking; a cleanup step a write inside `f` would run is left to a
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
        let expires = self.expires_at(ttl)?;
        let (new, commit) = {
            let guard = inner.lock(&path, "update")?;
            let current = match inner.load(key, &path, Some(&guard))? {
                Some(l) => Some(codec::decode::<T>(l.header.codec, key, l.payload())?),
                None => None,
            };
            let existed = current.is_some();
            match f(current) {
                Some(value) => {
                    let bytes = self.encode(inner.codec(), key, &value, expires)?;
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
            inner.after_write(commit, &path);
        }
        Ok(new)
    }

    /// [`update`](Self::update) over raw bytes: `merge` gets the stored payload (or
    /// `None`) while the key's stripe lock is held, in all threads and processes,
    /// and says what to do: [`Merge::Put`] stores new bytes with `ttl`,
    /// [`Merge::Delete`] removes the entry, [`Merge::Keep`] writes nothing. An error
    /// from `merge` is returned as is and nothing is written. Returns the payload
    /// stored afterwards. `merge` runs exactly once.
    ///
    /// # Errors
    /// `merge`'s error; as [`update`](Self::update) otherwise.
    ///
    /// # Examples
    /// ```
    /// use fscache::{Merge, Ttl};
    /// # fn main() -> fscache::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let cache = fscache::FileSystemCache::open(dir.path())?;
    /// let log = cache.update_bytes("log", Ttl::Default, |old| {
    ///     let mut log = old.unwrap_or_default().to_vec();
    ///     log.extend_from_slice(b"line\n");
    ///     Ok(Merge::Put(log))
    /// })?;
    /// assert_eq!(log.as_deref(), Some(&b"line\n"[..]));
    /// # Ok(())
    /// # }
    /// ```
    pub fn update_bytes<F>(&self, key: &str, ttl: Ttl, merge: F) -> Result<Option<Vec<u8>>>
    where
        F: FnOnce(Option<&[u8]>) -> Result<Merge>,
    {
        let inner = &self.inner;
        let path = inner.path_for(key)?;
        let expires = self.expires_at(ttl)?;
        let (stored, commit) = {
            let guard = inner.lock(&path, "update")?;
            let current = inner.load(key, &path, Some(&guard))?;
            match merge(current.as_ref().map(|l| l.payload()))? {
                Merge::Keep => (current.map(|l| l.payload().to_vec()), None),
                Merge::Put(new) => {
                    let entry = self.encode_raw(key, &new, expires)?;
                    let commit = inner.write_entry(&path, &entry, Some(&guard))?;
                    (Some(new), Some(commit))
                }
                Merge::Delete => {
                    if current.is_some() {
                        inner.remove(&path, Some(&guard))?;
                    }
                    (None, None)
                }
            }
        };
        if let Some(commit) = commit {
            inner.after_write(commit, &path);
        }
        Ok(stored)
    }

    /// Stores raw bytes only if `key` has no live entry; `true` if stored. As
    /// [`add`](Self::add), without serialization.
    ///
    /// # Errors
    /// As [`add`](Self::add), without serialization.
    pub fn add_bytes(&self, key: &str, bytes: &[u8], ttl: Ttl) -> Result<bool> {
        self.add_raw(key, bytes, ttl, true)
    }

    /// [`add_bytes`](Self::add_bytes) for a key that is almost never taken (a new
    /// random session id): no header read before the no-replace rename.
    pub(crate) fn insert_bytes(&self, key: &str, bytes: &[u8], ttl: Ttl) -> Result<bool> {
        self.add_raw(key, bytes, ttl, false)
    }

    fn add_raw(&self, key: &str, bytes: &[u8], ttl: Ttl, precheck: bool) -> Result<bool> {
        let inner = &self.inner;
        let path = inner.path_for(key)?;
        let expires = self.expires_at(ttl)?;
        let entry = self.encode_raw(key, bytes, expires)?;
        let commit = {
            let guard = inner.lock(&path, "add")?;
            inner.add_entry(key, &path, &entry, &guard, precheck)?
        };
        match commit {
            Some(commit) => {
                inner.after_write(commit, &path);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Gives a live entry a new expiry (`ttl` from now) and keeps its value; `false`
    /// if there is no live entry. The entry is rewritten (temp file + rename) under
    /// the key's stripe lock, so it is ordered with `update` and `delete` like any
    /// read-modify-write.
    ///
    /// # Errors
    /// As [`update`](Self::update).
    pub fn touch(&self, key: &str, ttl: Ttl) -> Result<bool> {
        let inner = &self.inner;
        let path = inner.path_for(key)?;
        let expires = self.expires_at(ttl)?;
        let commit = {
            let guard = inner.lock(&path, "touch")?;
            let Some(l) = inner.load(key, &path, Some(&guard))? else {
                return Ok(false);
            };
            let mut w = inner.start_entry(l.header.codec, key, expires, l.payload().len());
            w.payload().extend_from_slice(l.payload());
            let entry = inner.finish_entry(key, w)?;
            inner.write_entry(&path, &entry, Some(&guard))?
        };
        inner.after_write(commit, &path);
        Ok(true)
    }

    /// The payload under `key` and the unique id of the write that stored it (the
    /// version a [`compare_and_set_bytes`](Self::compare_and_set_bytes) checks).
    pub(crate) fn load_versioned(&self, key: &str) -> Result<Option<(Vec<u8>, u64)>> {
        let path = self.inner.path_for(key)?;
        Ok(self.inner.load(key, &path, None)?.map(|l| {
            let id = l.header.write_id;
            let mut bytes = l.bytes;
            bytes.truncate(l.payload.end);
            bytes.drain(..l.payload.start);
            (bytes, id)
        }))
    }

    /// Under the key's stripe lock: if the live entry is the write `expected`, stores
    /// `new` with `ttl` (or deletes the entry for `None`) and returns `true`;
    /// otherwise changes nothing and returns `false`.
    pub(crate) fn compare_and_set_bytes(
        &self,
        key: &str,
        expected: u64,
        new: Option<&[u8]>,
        ttl: Ttl,
    ) -> Result<bool> {
        let inner = &self.inner;
        let path = inner.path_for(key)?;
        let expires = self.expires_at(ttl)?;
        let entry = new.map(|b| self.encode_raw(key, b, expires)).transpose()?;
        let commit = {
            let guard = inner.lock(&path, "compare-and-set")?;
            match inner.load(key, &path, Some(&guard))? {
                Some(l) if l.header.write_id == expected => {}
                _ => return Ok(false),
            }
            match &entry {
                Some(entry) => Some(inner.write_entry(&path, entry, Some(&guard))?),
                None => {
                    inner.remove(&path, Some(&guard))?;
                    None
                }
            }
        };
        if let Some(commit) = commit {
            inner.after_write(commit, &path);
        }
        Ok(true)
    }

    // ----- deletes -----

    /// Removes the entry under `key`; `true` if one existed (live or expired).
    ///
    /// Ordered with read-modify-writes by the key's stripe lock, in all threads and
    /// processes: once `delete` returns, no `add`, `inc`, `update` (or session save)
    /// that started before it can write the key back, and no eviction has it moved
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

    /// [`delete`](Self::delete), but `true` only if the entry was live (what
    /// [`Store::remove`](crate::store::Store::remove) promises): the header is read
    /// under the same stripe lock, before the unlink.
    pub(crate) fn delete_live(&self, key: &str) -> Result<bool> {
        let inner = &self.inner;
        let path = inner.path_for(key)?;
        let guard = inner.lock(&path, "delete")?;
        // An expired or damaged entry is removed by `has` itself and reads as absent.
        let live = inner.has(key, &path, Some(&guard))?;
        let removed = inner.remove(&path, Some(&guard))?;
        Ok(live && removed)
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
        self.inner.prune(&mut |_| {})
    }

    /// [`prune`](Self::prune), calling `progress(done, total)` after each of the
    /// `total` (256) shard directories it sweeps: for a progress bar over a large
    /// directory (`fscache gc` draws one on a terminal).
    ///
    /// ```
    /// # fn main() -> fscache::Result<()> {
    /// # let tmp = tempfile::tempdir().unwrap();
    /// let cache = fscache::FileSystemCache::open(tmp.path())?;
    /// let mut last = (0, 0);
    /// cache.prune_with_progress(|done, total| last = (done, total))?;
    /// assert_eq!(last, (256, 256));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`prune`](Self::prune).
    pub fn prune_with_progress(&self, mut progress: impl FnMut(usize, usize)) -> Result<PruneReport> {
        let total = crate::engine::SHARD_COUNT;
        self.inner.prune(&mut |done| progress(done, total))
    }

    /// One bounded piece of cleanup, for a background thread or a cron job: reads at
    /// most `budget` entry headers and `4 × budget` names (at least 64, in at most
    /// `1 + budget / 4` shard directories), going on where one of this handle's
    /// walkers stopped (each new shard comes from a counter shared by all processes);
    /// removes the expired and damaged entries and stale temp files among them; and,
    /// if the cache has a threshold and the count is past a little under it (1%, or up
    /// to 64 entries), evicts the nearest-expiry entries it has seen, at most `budget`.
    /// Its cost does not grow with the size of the cache, and it never waits: a busy
    /// walker is replaced by a fresh one, a busy stripe skipped.
    ///
    /// Writes already clean up after themselves (an eviction step when a write takes
    /// the count past the threshold, an expiry step of [`expiry_budget`] headers every
    /// 32 writes of a handle), so most programs need not call this. Call it in a loop
    /// on a background thread to take eviction off the request path: writes then
    /// seldom find the count past the threshold (measured in `benches/churn.rs`
    /// `--pruner`), or from a cron job where writes are rare and expired entries
    /// should still go. A full walk over `N` entries takes about `N / budget` calls (at
    /// least `256 / (1 + budget / 4)`).
    ///
    /// [`expiry_budget`]: crate::FileSystemCacheBuilder::expiry_budget
    ///
    /// ```no_run
    /// # fn main() -> fscache::Result<()> {
    /// let cache = fscache::FileSystemCache::builder("/var/cache/app").threshold(100_000).open()?;
    /// let pruner = cache.clone();
    /// std::thread::spawn(move || loop {
    ///     match pruner.prune_step(64) {
    ///         // Nothing to do: the cache is under its threshold and clean here.
    ///         Ok(report) if report.removed() == 0 => {
    ///             std::thread::sleep(std::time::Duration::from_millis(1))
    ///         }
    ///         Ok(_) => {}
    ///         Err(e) => log::warn!("cache cleanup: {e}"),
    ///     }
    /// });
    /// # Ok(())
    /// # }
    /// ```
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
        self.inner.prune_step(budget)
    }

    /// The exact number of live entries (a full scan of the headers; O(entries)).
    /// Also corrects the shared count kept per operation, if no other writer changed
    /// it during the scan.
    ///
    /// # Errors
    /// [`Error::Io`] if a shard cannot be listed or an entry read.
    pub fn len(&self) -> Result<usize> {
        self.inner.len()
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
        self.inner.clear()
    }

    /// The file that holds `key`'s entry (whether or not it exists now): for tools
    /// that read an entry without changing it (`fscache get`). Programs should use
    /// [`get`](Self::get): the file may be replaced at any moment (atomically: a
    /// reader opens the old file or the new one).
    ///
    /// # Errors
    /// [`Error::KeyTooLong`].
    pub fn entry_path(&self, key: &str) -> Result<std::path::PathBuf> {
        Ok(self.inner.dir().join(self.inner.path_for(key)?.rel()))
    }

    /// What `key`'s entry file holds, as [`inspect_entry`](crate::inspect_entry)
    /// describes it, read the way the cache reads entries (beneath the directory, no
    /// symlink followed, non-blocking, at most the largest entry it allows) and
    /// removing nothing, not even an expired or damaged file: for tools (`fscache
    /// get`). `None` if there is no file. A symlink or other non-file at the name is
    /// described as damage, never read.
    ///
    /// # Errors
    /// [`Error::KeyTooLong`]; [`Error::Io`].
    ///
    /// ```
    /// # fn main() -> fscache::Result<()> {
    /// # let tmp = tempfile::tempdir().unwrap();
    /// let cache = fscache::FileSystemCache::open(tmp.path())?;
    /// cache.set_bytes("k", b"v")?;
    /// let info = cache.inspect_key("k")?.expect("a file");
    /// assert_eq!(info.payload.as_deref(), Some(&b"v"[..]));
    /// assert!(cache.inspect_key("missing")?.is_none());
    /// # Ok(())
    /// # }
    /// ```
    pub fn inspect_key(&self, key: &str) -> Result<Option<crate::inspect::EntryFile>> {
        let path = self.inner.path_for(key)?;
        Ok(self.inner.read_file(&path)?.map(|read| match read {
            Ok(bytes) => crate::inspect::inspect_entry(&bytes),
            Err(what) => crate::inspect::not_an_entry(what),
        }))
    }

    /// Reads every name and entry header in the directory and reports what is there,
    /// removing nothing: live entries and their bytes, expired and damaged entries,
    /// litter, foreign files, the shared count and the recorded threshold. A full
    /// scan (one header read per entry); `fscache stats DIR` prints it.
    ///
    /// ```
    /// # fn main() -> fscache::Result<()> {
    /// # let tmp = tempfile::tempdir().unwrap();
    /// let cache = fscache::FileSystemCache::builder(tmp.path()).threshold(100).open()?;
    /// cache.set("a", &1)?;
    /// let report = cache.scan()?;
    /// assert_eq!((report.entries, report.threshold), (1, Some(100)));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Io`] when the directory cannot be listed or a header read fails.
    pub fn scan(&self) -> Result<crate::DirReport> {
        self.inner.scan()
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
        self.inner.keys()
    }

    // ----- encoding -----

    fn expires_at(&self, ttl: Ttl) -> Result<u64> {
        expires_at(ttl, self.inner.default_ttl(), self.inner.now_ms())
    }

    fn encode<T: Serialize + ?Sized>(
        &self,
        codec: Codec,
        key: &str,
        value: &T,
        expires: u64,
    ) -> Result<Vec<u8>> {
        let mut w = self.inner.start_entry(codec, key, expires, 256);
        codec::encode(codec, key, value, w.payload())?;
        self.inner.finish_entry(key, w)
    }

    fn encode_raw(&self, key: &str, payload: &[u8], expires: u64) -> Result<Vec<u8>> {
        let mut w = self.inner.start_entry(Codec::Raw, key, expires, payload.len());
        w.payload().extend_from_slice(payload);
        self.inner.finish_entry(key, w)
    }
}

impl FileSystemCacheBuilder {
    /// Opens (creating if needed) the cache directory.
    ///
    /// # Errors
    /// [`Error::Config`] for invalid options, [`Error::NotACache`] for a non-empty
    /// directory that is not an fscache, [`Error::IncompatibleFormat`] for one of
    /// another format version, [`Error::UnsupportedFilesystem`] where the guarantees
    /// cannot hold, [`Error::Io`] when the directory cannot be created or read.
    pub fn open(self) -> Result<FileSystemCache> {
        Ok(FileSystemCache {
            inner: Arc::new(Engine::open(self.into_config()?)?),
        })
    }

    /// Opens a directory that is already an fscache, for a tool that inspects or
    /// cleans a cache another program owns (the `fscache` command uses it): a missing
    /// directory is an [`Error::Io`] (`NotFound`) and an empty one an
    /// [`Error::NotACache`], where [`open`](Self::open) would create and adopt them;
    /// and the handle does not record its threshold in the directory's state file,
    /// so `fscache stats` keeps showing the owner's.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let tmp = tempfile::tempdir()?;
    /// let empty = tmp.path().join("empty");
    /// std::fs::create_dir(&empty)?;
    /// let err = fscache::FileSystemCache::builder(&empty).open_existing().unwrap_err();
    /// assert!(matches!(err, fscache::Error::NotACache { .. }));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`open`](Self::open), and the two above.
    pub fn open_existing(self) -> Result<FileSystemCache> {
        let mut config = self.into_config()?;
        config.existing_only = true;
        Ok(FileSystemCache {
            inner: Arc::new(Engine::open(config)?),
        })
    }
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<FileSystemCache>();
}
