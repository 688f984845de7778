//! The file cache as a [`Store`]: the embedded default.

use std::time::Duration;

use super::{foreign_version, MergeFn, Store, Version, Versioned};
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
        self.set_bytes_with_ttl(key, value, Ttl::After(ttl))
    }

    fn insert(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        self.insert_bytes(key, value, Ttl::After(ttl))
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
        self.compare_and_set_bytes(key, expected, new, Ttl::After(ttl))
    }

    fn remove(&self, key: &str) -> Result<bool> {
        self.delete(key)
    }

    fn touch(&self, key: &str, ttl: Duration) -> Result<bool> {
        FileSystemCache::touch(self, key, Ttl::After(ttl))
    }

    fn update(&self, key: &str, ttl: Duration, merge: &mut MergeFn<'_>) -> Result<Option<Vec<u8>>> {
        self.update_bytes(key, Ttl::After(ttl), merge)
    }
}
