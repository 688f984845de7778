//! The typed API: serde values in, serde values out.

use serde::Serialize;
use serde::de::DeserializeOwned;
use crate::codec;
use crate::engine::Codec;
use crate::error::{Error, Result};
use crate::options::Ttl;

use super::FileSystemCache;

impl FileSystemCache {
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
}
