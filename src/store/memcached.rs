//! Memcached: `add` for new keys, `gets`/`cas` for merges, `touch`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use memcache::{Client, CommandError, ConnectionManager, MemcacheError, Url};

use super::pool::Pool;
use super::{Store, Version, Versioned, foreign_version};
use crate::error::{Error, Result};

/// How long a connect may take, and a read or a write.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Memcached reads an expiry over 30 days as an absolute Unix time.
const RELATIVE_LIMIT: u64 = 30 * 24 * 3600;

/// Longest key memcached takes.
const MAX_KEY: usize = 250;

/// A [`Store`] on Memcached (feature `memcached`), through the `memcache` crate
/// (binary protocol).
///
/// **Lossy by design**: memcached evicts items under memory pressure and loses
/// everything on restart, so a session can end early. Use it where that is
/// acceptable (or as Flask-Session users do, with memory to spare).
///
/// - Expiry: memcached's own, in whole seconds (a TTL is rounded up; over 30 days
///   it is sent as an absolute time, as memcached requires).
/// - [`insert`](Store::insert): `add`.
/// - Atomic merge: [`update`](Store::update) is optimistic: `gets` returns the CAS
///   id, and `cas` writes only if nothing wrote the key since. Memcached has no
///   conditional delete, so a merge that deletes writes an empty value with a
///   1-second expiry instead, which reads as absent (so does any empty value: this
///   store cannot hold one; session records are never empty).
/// - Keys memcached cannot take (over 250 bytes, or with spaces or control
///   characters) are stored under `fscache:` and the blake3 hash of the key.
pub struct MemcachedStore {
    pool: Pool<Client>,
}

impl std::fmt::Debug for MemcachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemcachedStore").finish_non_exhaustive()
    }
}

fn engine_error(op: &'static str, e: MemcacheError) -> Error {
    let retryable = matches!(e, MemcacheError::IOError(_) | MemcacheError::PoolError(_));
    Error::engine("memcached", op, retryable, e)
}

/// Memcached's expiration argument for `ttl`.
fn expiration(ttl: Duration) -> u32 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    let secs = secs.max(1);
    if secs <= RELATIVE_LIMIT {
        return secs as u32;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    now.saturating_add(secs).min(u64::from(u32::MAX)) as u32
}

/// The key as memcached gets it.
fn wire_key(key: &str) -> std::borrow::Cow<'_, str> {
    if key.len() <= MAX_KEY && key.bytes().all(|b| b > b' ' && b != 0x7f) {
        key.into()
    } else {
        format!("fscache:{}", blake3::hash(key.as_bytes()).to_hex()).into()
    }
}

impl MemcachedStore {
    /// Connects to the server a `memcache://HOST:PORT` URL names and checks it
    /// answers.
    ///
    /// # Errors
    /// [`Error::Config`] for a malformed URL; a retryable [`Error::Engine`] when the
    /// server does not answer.
    pub fn open(url: &str) -> Result<MemcachedStore> {
        let mut parsed = Url::parse(url).map_err(|e| Error::Config {
            message: format!("invalid Memcached URL {url:?}: {e}"),
        })?;
        if parsed.scheme() == "memcached" {
            parsed = Url::parse(&url.replacen("memcached://", "memcache://", 1)).map_err(|e| {
                Error::Config {
                    message: format!("invalid Memcached URL {url:?}: {e}"),
                }
            })?;
        }
        if !parsed.query_pairs().any(|(k, _)| k == "timeout") {
            parsed
                .query_pairs_mut()
                .append_pair("timeout", &TIMEOUT.as_secs_f64().to_string());
        }
        // One connection per client: this pool (not r2d2's) decides when a
        // connection is dropped, and r2d2 does not ping on every checkout.
        let pool = Pool::new(32, move || {
            let manager = ConnectionManager::new(parsed.clone());
            let single = r2d2::Pool::builder()
                .max_size(1)
                .min_idle(Some(0))
                .test_on_check_out(false)
                .connection_timeout(TIMEOUT)
                .build_unchecked(manager);
            Client::with_pool(single).map_err(|e| engine_error("connect", e))
        });
        let store = MemcachedStore { pool };
        store
            .pool
            .with(|c| c.version().map(drop).map_err(|e| engine_error("version", e)))?;
        Ok(store)
    }
}

impl Store for MemcachedStore {
    fn engine(&self) -> &'static str {
        "memcached"
    }

    fn load(&self, key: &str) -> Result<Option<Versioned>> {
        let key = wire_key(key);
        let got: Option<(Vec<u8>, u32, Option<u64>)> = self
            .pool
            .with(|c| c.get(&key).map_err(|e| engine_error("load", e)))?;
        Ok(got.and_then(|(value, _flags, cas)| {
            // An empty value is a deletion's tombstone.
            (!value.is_empty()).then(|| Versioned {
                value,
                version: Version::from_number(cas.unwrap_or(0)),
            })
        }))
    }

    fn save(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        let key = wire_key(key);
        self.pool.with(|c| {
            c.set(&key, value, expiration(ttl))
                .map_err(|e| engine_error("save", e))
        })
    }

    fn insert(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        let wire = wire_key(key);
        let added = self.pool.with(|c| match c.add(&wire, value, expiration(ttl)) {
            Ok(()) => Ok(true),
            Err(MemcacheError::CommandError(CommandError::KeyExists)) => Ok(false),
            Err(e) => Err(engine_error("insert", e)),
        })?;
        if added {
            return Ok(true);
        }
        // Taken, unless by a tombstone: replace that, if nothing else wrote meanwhile.
        let got: Option<(Vec<u8>, u32, Option<u64>)> = self
            .pool
            .with(|c| c.get(&wire).map_err(|e| engine_error("insert", e)))?;
        match got {
            Some((v, _, Some(cas))) if v.is_empty() => {
                self.compare_and_set(key, &Version::from_number(cas), Some(value), ttl)
            }
            None => self.insert_again(&wire, value, ttl),
            _ => Ok(false),
        }
    }

    fn compare_and_set(
        &self,
        key: &str,
        expected: &Version,
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<bool> {
        let Some(cas) = expected.as_number() else {
            return Err(foreign_version(key));
        };
        let key = wire_key(key);
        let (value, exp) = match new {
            Some(v) => (v, expiration(ttl)),
            None => (&[][..], 1),
        };
        self.pool.with(|c| match c.cas(&key, value, exp, cas) {
            Ok(won) => Ok(won),
            Err(MemcacheError::CommandError(
                CommandError::KeyExists | CommandError::KeyNotFound,
            )) => Ok(false),
            Err(e) => Err(engine_error("compare-and-set", e)),
        })
    }

    fn remove(&self, key: &str) -> Result<bool> {
        let live = self.load(key)?.is_some();
        let key = wire_key(key);
        let deleted = self
            .pool
            .with(|c| c.delete(&key).map_err(|e| engine_error("remove", e)))?;
        Ok(live && deleted)
    }

    /// `get` and then `touch`: a bare `touch` would also extend a deletion's
    /// tombstone and report it live. A deletion that lands between the two still
    /// reads as absent afterwards (the tombstone just lives longer); only this
    /// call's `true` is then stale.
    fn touch(&self, key: &str, ttl: Duration) -> Result<bool> {
        if self.load(key)?.is_none() {
            return Ok(false);
        }
        let key = wire_key(key);
        self.pool.with(|c| match c.touch(&key, expiration(ttl)) {
            Ok(found) => Ok(found),
            Err(MemcacheError::CommandError(CommandError::KeyNotFound)) => Ok(false),
            Err(e) => Err(engine_error("touch", e)),
        })
    }
}

impl MemcachedStore {
    /// The key vanished between a failed `add` and the read after it: one more `add`.
    fn insert_again(&self, wire: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        self.pool.with(|c| match c.add(wire, value, expiration(ttl)) {
            Ok(()) => Ok(true),
            Err(MemcacheError::CommandError(CommandError::KeyExists)) => Ok(false),
            Err(e) => Err(engine_error("insert", e)),
        })
    }
}
