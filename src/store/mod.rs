//! The one seam between sessions and any backend: [`Store`], over bytes.
//!
//! A store keeps byte values under string keys, each with a time-to-live, and offers
//! what a safe read-merge-write needs on any engine: a versioned
//! [`load`](Store::load), a [`compare_and_set`](Store::compare_and_set) against that
//! version, an [`insert`](Store::insert) that only succeeds if the key is absent,
//! and [`update`](Store::update), a re-runnable merge. Optimistic engines (Redis,
//! Memcached) use the provided `update`, which retries a lost compare-and-set up to
//! [`MAX_ATTEMPTS`] times and then fails with [`Error::Conflict`]; locking engines
//! (the file cache, PostgreSQL, SQLite) override it and run the merge once under
//! their lock. Serde stays a typed layer on top (the sessions encode their records
//! themselves).
//!
//! The trait is object-safe: a server can pick its backend at run time with
//! [`open`] and keep it as a `Box<dyn Store>` or `Arc<dyn Store>`.
//!
//! | URL | store | cargo feature |
//! |---|---|---|
//! | `file://./sessions`, `file:///var/lib/app/sessions` | [`FileSystemCache`](crate::FileSystemCache) (unbounded) | default |
//! | `redis://127.0.0.1:6379/0` | `RedisStore` | `redis` |
//! | `redis-sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster` | `RedisStore` (the master Sentinel names) | `redis` |
//! | `redis-cluster://10.0.0.1:6379,10.0.0.2:6379` | `RedisStore` (a Redis Cluster) | `redis` |
//! | `postgres://user:pw@127.0.0.1:5432/db` (or `postgresql://`) | `PostgresStore` | `postgres` |
//! | `sqlite:///var/lib/app/sessions.db`, `sqlite://./sessions.db` | `SqliteStore` | `sqlite` |
//! | `memcache://127.0.0.1:11211`, `memcache://10.0.0.1:11211,10.0.0.2:11211` | `MemcachedStore` (one server, or a pool) | `memcached` |
//! | `cachelib:///srv/app/flask_session`, `cachelib://./flask_session?hash=md5` | `CachelibStore` (a live Flask-Session directory) | `flask` |
//!
//! ```
//! use std::time::Duration;
//! use fscache::store::{self, Merge, Store};
//!
//! # fn main() -> fscache::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let url = format!("file://{}", dir.path().display());
//! let store: Box<dyn Store> = store::open(&url)?; // e.g. "file://./sessions"
//! let ttl = Duration::from_secs(60);
//! assert!(store.insert("k", b"1", ttl)?);
//! assert!(!store.insert("k", b"2", ttl)?); // already there
//! let stored = store.update("k", ttl, &mut |old| {
//!     let n: u32 = std::str::from_utf8(old.unwrap_or(b"0")).unwrap().parse().unwrap();
//!     Ok(Merge::Put((n + 1).to_string().into_bytes()))
//! })?;
//! assert_eq!(stored.as_deref(), Some(&b"2"[..]));
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "sessions")]
pub(crate) mod calls;
#[cfg(any(feature = "redis", feature = "postgres", feature = "memcached"))]
mod builder;
#[cfg(feature = "flask")]
mod cachelib;
mod file;
#[cfg(feature = "memcached")]
mod memcached;
#[cfg(any(feature = "redis", feature = "postgres", feature = "sqlite", feature = "memcached"))]
mod pool;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
pub(crate) mod redis;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "tls")]
mod tls;
mod url;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};

pub use crate::merge::Merge;

/// A store URL with every secret in it replaced by `***`, for logs, error messages
/// and pages: the password of `USER:PASSWORD@` (in every host list form), any
/// query option whose name contains `password` (`?password=`,
/// `?sentinel_password=`, `?sslpassword=`) or is `pass` (`redis+unix://`), and
/// the `password` of PostgreSQL's
/// key-value form (`host=db password='a b'`). The store's own errors already go
/// through it; use it wherever your code shows a store URL.
///
/// When it cannot tell where a password ends (an `@` but no `://`, an unclosed
/// quote) it hides everything after the point where the secret starts, never less.
///
/// ```
/// use fscache::store::redact;
/// assert_eq!(
///     redact("redis://:hunter2@127.0.0.1:6379/0"),
///     "redis://:***@127.0.0.1:6379/0"
/// );
/// assert_eq!(
///     redact("redis-sentinel://s1:26379,s2:26379/main?sentinel_password=pw2"),
///     "redis-sentinel://s1:26379,s2:26379/main?sentinel_password=***"
/// );
/// assert_eq!(
///     redact("host=db user=app password='s e c' dbname=app"),
///     "host=db user=app password=*** dbname=app"
/// );
/// assert_eq!(redact("file:///var/lib/sessions"), "file:///var/lib/sessions");
/// ```
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return redact_key_values(url);
    };
    // The userinfo ends at the last `@` before the query; a password may hold `/`.
    let query_at = rest.find('?').unwrap_or(rest.len());
    let (before, query) = rest.split_at(query_at);
    let mut out = format!("{scheme}://");
    match before.rfind('@') {
        Some(at) => {
            match before[..at].split_once(':') {
                Some((user, _)) => out.push_str(&format!("{user}:***")),
                None => out.push_str(&before[..at]),
            }
            out.push_str(&before[at..]);
        }
        None => out.push_str(before),
    }
    if let Some(query) = query.strip_prefix('?') {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if is_secret(name) => format!("{name}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    out
}

/// Whether an option of that name holds a secret (`pass` is the redis crate's
/// password option of `redis+unix://` URLs).
fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.contains("password") || name == "pass"
}

/// PostgreSQL's `key=value key='quoted value'` form with secret values hidden; a
/// string that is not of that form but holds an `@` (perhaps a URL without its
/// scheme) is cut at the `@`'s userinfo.
fn redact_key_values(s: &str) -> String {
    if !s.contains('=') {
        return match s.rfind('@') {
            Some(at) => format!("***{}", &s[at..]),
            None => s.to_owned(),
        };
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    loop {
        let trimmed = rest.trim_start();
        out.push_str(&rest[..rest.len() - trimmed.len()]);
        rest = trimmed;
        if rest.is_empty() {
            return out;
        }
        let Some(eq) = rest.find('=') else {
            out.push_str(rest);
            return out;
        };
        let name = rest[..eq].trim();
        out.push_str(&rest[..=eq]);
        let value = &rest[eq + 1..];
        let after = value.trim_start();
        out.push_str(&value[..value.len() - after.len()]);
        // The value: quoted (with `\'` and `\\` escapes) or up to whitespace.
        let len = if let Some(quoted) = after.strip_prefix('\'') {
            let mut escaped = false;
            match quoted.char_indices().find(|&(_, c)| {
                let end = !escaped && c == '\'';
                escaped = !escaped && c == '\\';
                end
            }) {
                Some((i, _)) => i + 2,
                // Unclosed: the rest is the value.
                None => after.len(),
            }
        } else {
            after.find(char::is_whitespace).unwrap_or(after.len())
        };
        if is_secret(name) {
            out.push_str("***");
        } else {
            out.push_str(&after[..len]);
        }
        rest = &after[len..];
    }
}

#[cfg(test)]
mod redact_tests {
    use super::redact;

    #[test]
    fn every_form_hides_the_password() {
        for (url, shown) in [
            ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
            ("redis://u:pw@h:1/0", "redis://u:***@h:1/0"),
            ("redis://u@h:1/0", "redis://u@h:1/0"),
            ("rediss://u:p/w@h:1/0", "rediss://u:***@h:1/0"),
            ("redis://u:p@w@h:1", "redis://u:***@h:1"),
            ("redis-cluster://:pw@a:1,b:2", "redis-cluster://:***@a:1,b:2"),
            (
                "redis-sentinel://:pw@a:1,b:2/svc/1?sentinel_password=pw2&pool_size=4",
                "redis-sentinel://:***@a:1,b:2/svc/1?sentinel_password=***&pool_size=4",
            ),
            (
                "postgres://u:pw@a:5432,b:5432/db?target_session_attrs=read-write",
                "postgres://u:***@a:5432,b:5432/db?target_session_attrs=read-write",
            ),
            ("postgres://u@h/db?password=pw", "postgres://u@h/db?password=***"),
            ("postgres://h/db?sslPassword=pw", "postgres://h/db?sslPassword=***"),
            ("redis+unix:///run/r.sock?db=1&pass=pw", "redis+unix:///run/r.sock?db=1&pass=***"),
            ("host=h password=pw user=u", "host=h password=*** user=u"),
            ("host=h password = pw", "host=h password = ***"),
            ("password='p w\\' x' user=u", "password=*** user=u"),
            ("password='unclosed pw", "password=***"),
            ("u:pw@h:1/0", "***@h:1/0"),
            ("memcache://a:1,b:2", "memcache://a:1,b:2"),
            ("file:///tmp/x", "file:///tmp/x"),
            ("sqlite:///tmp/x.db", "sqlite:///tmp/x.db"),
        ] {
            let got = redact(url);
            assert_eq!(got, shown, "{url}");
            assert!(!got.contains("pw") || shown.contains("pw"), "{url}");
        }
    }
}

pub use url::{DEFAULT_URL, open};

#[cfg(feature = "flask")]
pub use cachelib::{CachelibStore, CachelibStoreBuilder, HashMethod};
#[cfg(feature = "memcached")]
pub use memcached::{MemcachedStore, MemcachedStoreBuilder};
#[cfg(feature = "postgres")]
pub use postgres::{PostgresStore, PostgresStoreBuilder};
#[cfg(feature = "redis")]
pub use redis::{RedisStore, RedisStoreBuilder};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteStore, SqliteStoreBuilder};

/// The longest TTL a store keeps: every [`Store`] clamps a longer one (up to
/// `Duration::MAX`) to this, 100 years, the same way on every engine, instead of
/// overflowing or refusing it. Memcached's own limit is lower: it takes an
/// absolute Unix time in 32 bits, so its keys live at most until 2106.
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `ttl`, at most [`MAX_TTL`].
pub(crate) fn clamp_ttl(ttl: Duration) -> Duration {
    ttl.min(MAX_TTL)
}

/// How many compare-and-set attempts the provided [`Store::update`] makes before it
/// fails with [`Error::Conflict`].
pub const MAX_ATTEMPTS: u32 = 64;

/// Which write of a key a [`Store::load`] saw; what
/// [`compare_and_set`](Store::compare_and_set) checks. Opaque to callers: a store
/// makes it from a number (a write id, a row version, Memcached's CAS id) or from
/// bytes (Redis compares the stored value itself).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Version(Repr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    Number(u64),
    Bytes(Arc<[u8]>),
}

impl Version {
    /// A version that is a number.
    pub fn from_number(n: u64) -> Version {
        Version(Repr::Number(n))
    }

    /// A version that is a byte string (for example the stored value itself).
    pub fn from_bytes(bytes: &[u8]) -> Version {
        Version(Repr::Bytes(bytes.into()))
    }

    /// The number, if this version was made from one.
    pub fn as_number(&self) -> Option<u64> {
        match &self.0 {
            Repr::Number(n) => Some(*n),
            Repr::Bytes(_) => None,
        }
    }

    /// The bytes, if this version was made from bytes.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match &self.0 {
            Repr::Number(_) => None,
            Repr::Bytes(b) => Some(b),
        }
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Number(n) => write!(f, "Version({n})"),
            Repr::Bytes(b) => write!(f, "Version(<{} bytes>)", b.len()),
        }
    }
}

/// A value and the version it was read at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The stored bytes.
    pub value: Vec<u8>,
    /// Which write stored them.
    pub version: Version,
}

/// A merge for [`Store::update`]: gets the stored value (or `None`) and says what to
/// do. It may run more than once (optimistic engines re-run it after a lost race),
/// so it must not have effects beyond what it returns. Its error aborts the update
/// with nothing written.
pub type MergeFn<'a> = dyn FnMut(Option<&[u8]>) -> Result<Merge> + 'a;

/// A key-value backend for [`Sessions`](crate::session::Sessions): bytes under
/// string keys, each with a time-to-live. An expired value must read as absent.
///
/// What is atomic against what: `insert`, `compare_and_set` and `update` are each
/// atomic against every other operation on the same key (in all threads, processes
/// and, for engine stores, clients). `save` is a blind overwrite: ordered before or
/// after the others, never interleaved. `remove` is final: once it returns, no
/// `update` or `compare_and_set` that started before it can bring the key back,
/// because their version no longer matches (`insert` can, as a new value).
pub trait Store: Send + Sync {
    /// A short name of the engine for messages ("file", "redis", …).
    fn engine(&self) -> &'static str;

    /// The value under `key` and its version, or `None` if absent or expired.
    ///
    /// # Errors
    /// Engine failures.
    fn load(&self, key: &str) -> Result<Option<Versioned>>;

    /// Stores `value` under `key` for `ttl`, replacing any value.
    ///
    /// # Errors
    /// Engine failures; a value the engine refuses (too large).
    fn save(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()>;

    /// Stores `value` only if `key` holds no live value; `true` if stored.
    ///
    /// # Errors
    /// As [`save`](Self::save).
    fn insert(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool>;

    /// If `key` still holds the write `expected` names, stores `new` for `ttl` (or
    /// removes the key when `new` is `None`) and returns `true`; else changes
    /// nothing and returns `false`.
    ///
    /// # Errors
    /// As [`save`](Self::save).
    fn compare_and_set(
        &self,
        key: &str,
        expected: &Version,
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<bool>;

    /// Removes `key`; `true` if a live value was there.
    ///
    /// # Errors
    /// Engine failures.
    fn remove(&self, key: &str) -> Result<bool>;

    /// Slides a live value's expiry to `ttl` from now without changing it (engines
    /// do it in place; the file cache rewrites the entry with the same value); `false`
    /// if there is no live value.
    ///
    /// # Errors
    /// Engine failures.
    fn touch(&self, key: &str, ttl: Duration) -> Result<bool>;

    /// Atomic read-merge-write: `merge` gets the current value (or `None`) and its
    /// [`Merge`] is applied only if nothing changed the key meanwhile; the value
    /// stored afterwards is returned. The provided implementation is optimistic
    /// (load, merge, compare-and-set or insert, retried up to [`MAX_ATTEMPTS`]
    /// times); locking engines run `merge` once under a lock.
    ///
    /// # Errors
    /// [`Error::Conflict`] when every attempt lost its race (nothing was written);
    /// `merge`'s error; engine failures.
    fn update(&self, key: &str, ttl: Duration, merge: &mut MergeFn<'_>) -> Result<Option<Vec<u8>>> {
        optimistic_update(self, key, ttl, merge)
    }

    /// Stores `value` only if `key` holds a live value (Redis's `SET … XX`); `true`
    /// if stored. A value removed by another client stays removed: the write of a
    /// request that loaded a session before another request's logout does not bring
    /// it back. The provided implementation is an [`update`](Self::update) that
    /// keeps an absent key absent; an engine with a native conditional write may
    /// override it.
    ///
    /// # Errors
    /// As [`update`](Self::update).
    fn replace(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        let mut stored = false;
        self.update(key, ttl, &mut |current| {
            stored = current.is_some();
            Ok(match current {
                Some(_) => Merge::Put(value.to_vec()),
                None => Merge::Keep,
            })
        })?;
        Ok(stored)
    }

    /// Removes up to `batch` expired records and returns how many: the SQL stores
    /// delete expired rows, the file cache runs its bounded expiry step over about
    /// `batch` entries; engines that expire records by themselves (Redis,
    /// Memcached) return 0.
    ///
    /// # Errors
    /// Engine failures.
    fn cleanup(&self, batch: usize) -> Result<usize> {
        let _ = batch;
        Ok(0)
    }

    /// The store itself as [`Any`](std::any::Any), for code that has a faster path
    /// for one engine: the axum layer talks to a `RedisStore` through the redis
    /// crate's async client. The provided implementation returns `None`, which is
    /// right for a store that wraps another (logging, metrics, fault injection):
    /// its calls then all go through the wrapper.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

/// The store key of a session id under `prefix`: `prefix` + blake3(id) in hex, so a
/// listing of the store never shows a live id (fscache's sessions and the framework
/// adapters key their records this way).
#[allow(dead_code)] // used by sessions and the adapters, each behind a feature
pub(crate) fn hashed_key(prefix: &str, id: &str) -> String {
    format!("{prefix}{}", blake3::hash(id.as_bytes()).to_hex())
}

/// The error for a [`Version`] that another kind of store made.
#[allow(dead_code)] // used by the stores, some behind features
pub(crate) fn foreign_version(key: &str) -> Error {
    Error::Config {
        message: format!(
            "compare_and_set of {key:?} got a version of another store; pass the version \
             this store's load returned"
        ),
    }
}

/// The provided [`Store::update`]: load, merge, then compare-and-set (or insert,
/// when the key was absent), retried with a short randomized back-off while other
/// writers win, up to [`MAX_ATTEMPTS`] times.
///
/// # Errors
/// As [`Store::update`].
pub fn optimistic_update<S: Store + ?Sized>(
    store: &S,
    key: &str,
    ttl: Duration,
    merge: &mut MergeFn<'_>,
) -> Result<Option<Vec<u8>>> {
    for attempt in 0..MAX_ATTEMPTS {
        if attempt > 0 {
            backoff(attempt);
        }
        let current = store.load(key)?;
        let won = match (merge(current.as_ref().map(|v| &v.value[..]))?, current) {
            (Merge::Keep, current) => return Ok(current.map(|v| v.value)),
            (Merge::Delete, None) => return Ok(None),
            (Merge::Delete, Some(cur)) => {
                if store.compare_and_set(key, &cur.version, None, ttl)? {
                    return Ok(None);
                }
                None
            }
            (Merge::Put(new), None) => store.insert(key, &new, ttl)?.then_some(new).map(Some),
            (Merge::Put(new), Some(cur)) => store
                .compare_and_set(key, &cur.version, Some(&new), ttl)?
                .then_some(new)
                .map(Some),
        };
        if let Some(stored) = won {
            return Ok(stored);
        }
    }
    Err(Error::Conflict {
        key: key.to_owned(),
        attempts: MAX_ATTEMPTS,
    })
}

/// Sleeps [`backoff_delay`]`(attempt)`.
fn backoff(attempt: u32) {
    std::thread::sleep(backoff_delay(attempt));
}

/// 20 µs × 2^attempt (capped at 1.28 ms), times a random factor in [0.5, 1.5), so
/// writers that collided do not collide again in lock step. The cap is low: a
/// loser that sleeps long only lets the others win again.
pub(crate) fn backoff_delay(attempt: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let base = 20u64 << attempt.min(6);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(attempt);
    let jitter = h.finish() % base;
    Duration::from_micros(base / 2 + jitter)
}

macro_rules! forward {
    ($($t:ty),*) => {$(
        impl<S: Store + ?Sized> Store for $t {
            fn engine(&self) -> &'static str { (**self).engine() }
            fn load(&self, key: &str) -> Result<Option<Versioned>> { (**self).load(key) }
            fn save(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
                (**self).save(key, value, ttl)
            }
            fn insert(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
                (**self).insert(key, value, ttl)
            }
            fn compare_and_set(
                &self, key: &str, expected: &Version, new: Option<&[u8]>, ttl: Duration,
            ) -> Result<bool> {
                (**self).compare_and_set(key, expected, new, ttl)
            }
            fn remove(&self, key: &str) -> Result<bool> { (**self).remove(key) }
            fn touch(&self, key: &str, ttl: Duration) -> Result<bool> { (**self).touch(key, ttl) }
            fn update(
                &self, key: &str, ttl: Duration, merge: &mut MergeFn<'_>,
            ) -> Result<Option<Vec<u8>>> {
                (**self).update(key, ttl, merge)
            }
            fn replace(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
                (**self).replace(key, value, ttl)
            }
            fn cleanup(&self, batch: usize) -> Result<usize> { (**self).cleanup(batch) }
            fn as_any(&self) -> Option<&dyn std::any::Any> { (**self).as_any() }
        }
    )*};
}

forward!(&S, Box<S>, Arc<S>);
