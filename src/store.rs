//! What the session layer needs from a backend.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::FileSystemCache;
use crate::error::Result;
use crate::options::Ttl;

/// A key-value backend for [`Sessions`](crate::session::Sessions).
///
/// [`FileSystemCache`] implements it; another backend (Redis, a database) can be added
/// without touching the session code. Values are whole session records; expiry is the
/// backend's job (an expired record must read as `None`).
pub trait Store: Send + Sync {
    /// The record under `key`, or `None` if absent or expired.
    ///
    /// # Errors
    /// Backend failures; a record that does not decode into `T`.
    fn load<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>>;

    /// Stores `value` under `key`, expiring after `ttl`.
    ///
    /// # Errors
    /// Backend failures.
    fn save<T: Serialize>(&self, key: &str, value: &T, ttl: Duration) -> Result<()>;

    /// Removes `key`; `true` if it existed.
    ///
    /// # Errors
    /// Backend failures.
    fn remove(&self, key: &str) -> Result<bool>;

    /// Atomic read-merge-write: `merge` gets the current record (or `None`) while no
    /// other `update` of `key` can run, in any process; its `Some` result is stored
    /// with `ttl`, `None` deletes. Returns what was stored.
    ///
    /// # Errors
    /// Backend failures; a record that does not decode into `T`.
    fn update<T, F>(&self, key: &str, ttl: Duration, merge: F) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Option<T>) -> Option<T>;
}

impl Store for FileSystemCache {
    fn load<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.get(key)
    }

    fn save<T: Serialize>(&self, key: &str, value: &T, ttl: Duration) -> Result<()> {
        self.set_with_ttl(key, value, Ttl::After(ttl))
    }

    fn remove(&self, key: &str) -> Result<bool> {
        self.delete(key)
    }

    fn update<T, F>(&self, key: &str, ttl: Duration, merge: F) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Option<T>) -> Option<T>,
    {
        FileSystemCache::update(self, key, Ttl::After(ttl), merge)
    }
}
