//! The file cache as a [`Store`]: the embedded default.

use std::time::Duration;

use super::{clamp_ttl, foreign_version, MergeFn, Store, Version, Versioned};
use crate::cache::FileSystemCache;
use crate::error::Result;
use crate::options::Ttl;

/// Versions are the unique id every entry write carries in its header. `update`,
/// `compare_and_set`, `insert`, `touch` and `remove` hold the key's stripe lock (in
/// all threads and processes), so `update` runs its merge exactly once.
impl Store for FileSystemCache {
    fn engine(&self) -> &'static str {
        "file"
    }

    fn load(&self, key: &str) -> Result<Option<Versioned>> {
        Ok(self
            .load_versioned(key)?
            .map(|(value, id)| Versioned {
                value,
                version: Version::from_number(id),
            }))
    }

    fn save(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        self.set_bytes_with_ttl(key, value, Ttl::After(clamp_ttl(ttl)))
    }

    fn insert(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        self.insert_bytes(key, value, Ttl::After(clamp_ttl(ttl)))
    }

    fn compare_and_set(
        &self,
        key: &str,
        expected: &Version,
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<bool> {
        let Some(expected) = expected.as_number() else {
            return Err(foreign_version(key));
        };
        self.compare_and_set_bytes(key, expected, new, Ttl::After(clamp_ttl(ttl)))
    }

    /// `true` only for a live value: an expired entry is removed too, but reads as
    /// absent, as on the engines.
    fn remove(&self, key: &str) -> Result<bool> {
        self.delete_live(key)
    }

    fn touch(&self, key: &str, ttl: Duration) -> Result<bool> {
        FileSystemCache::touch(self, key, Ttl::After(clamp_ttl(ttl)))
    }

    fn update(&self, key: &str, ttl: Duration, merge: &mut MergeFn<'_>) -> Result<Option<Vec<u8>>> {
        self.update_bytes(key, Ttl::After(clamp_ttl(ttl)), merge)
    }

    /// Runs the cache's bounded expiry steps ([`FileSystemCache::prune_step`]) until
    /// `batch` files were removed (expired, damaged or stale temp files) or about one
    /// pass over the directory was made (every shard listed, about as many headers
    /// read as the cache holds); returns how many were removed, so a caller that
    /// loops while it gets `batch` back (`server --cleanup`, tower-sessions'
    /// `delete_expired`) stops after one pass that found fewer.
    fn cleanup(&self, batch: usize) -> Result<usize> {
        let batch = batch.max(1);
        // Files on disk, live or expired: what one pass reads.
        let pass = self.approximate_len();
        // A step lists at most 1 + batch/4 of the 256 shard directories.
        let cycle = 256usize.div_ceil(1 + batch / 4) + 1;
        let (mut removed, mut examined, mut steps) = (0, 0, 0);
        while removed < batch && (steps < cycle || examined < pass) && steps < 4 * cycle {
            let step = self.prune_step(batch)?;
            removed += step.expired + step.damaged + step.stale_temp;
            examined += step.examined;
            steps += 1;
        }
        Ok(removed)
    }
}
