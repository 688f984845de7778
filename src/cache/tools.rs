//! Whole-directory operations for operators and tools.

use crate::engine::{Keys, PruneReport};
use crate::error::Result;
#[cfg(doc)]
use crate::error::Error;

use super::FileSystemCache;

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
    /// the count past the threshold, adaptive expiry steps of [`expiry_budget`] headers
    /// a round), so most programs need not call this. Call it in a loop
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
}
