//! The bytes API and the per-key operations that take no value type.

use crate::error::Result;
#[cfg(doc)]
use crate::error::Error;
use crate::merge::Merge;
use crate::options::Ttl;

use super::FileSystemCache;

impl FileSystemCache {
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

    /// Whether a live entry exists under `key`. Reads only the entry's header (its
    /// own check protects it); a damaged payload is found by the next `get`.
    ///
    /// # Errors
    /// [`Error::KeyTooLong`]; [`Error::Io`] on I/O failure.
    pub fn has(&self, key: &str) -> Result<bool> {
        let path = self.inner.path_for(key)?;
        self.inner.has(key, &path, None)
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
