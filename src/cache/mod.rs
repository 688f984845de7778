//! `FileSystemCache`, by audience:
//!
//! | file | for |
//! |---|---|
//! | `mod.rs` | the handle: opening, stats, the entry encoding every write shares |
//! | `typed.rs` | apps storing serde values: get, set, add, inc/dec, update |
//! | `bytes.rs` | callers with their own encoding, and the store layer: the bytes API, has, touch, delete |
//! | `tools.rs` | operators and tools: prune, len, clear, inspect, scan, keys |
//!
//! The `Store` implementation over it is `store/file.rs`.

mod bytes;
mod tools;
mod typed;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::codec;
use crate::engine::{Codec, Engine, RenameMode};
use crate::error::Result;
#[cfg(doc)]
use crate::error::Error;
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
    /// The shared total length of the entry files, kept once a handle with a byte
    /// budget opened the directory (see
    /// [`max_bytes`](crate::FileSystemCacheBuilder::max_bytes)); `None` before.
    pub bytes: Option<u64>,
    /// This handle's byte budget, if it has one.
    pub max_bytes: Option<u64>,
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
            bytes: self.inner.bytes(),
            max_bytes: Some(self.inner.max_bytes()).filter(|&m| m > 0),
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
}


impl FileSystemCache {
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
