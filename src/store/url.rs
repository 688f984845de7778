//! One setting picks the backend, like Flask-Session's `SESSION_TYPE`: a URL.

use super::Store;
use crate::cache::FileSystemCache;
use crate::error::{Error, Result};

/// The store a server uses when nothing is configured: a session directory
/// `./sessions` next to where it runs.
pub const DEFAULT_URL: &str = "file://./sessions";

/// Opens the store a URL names (see the [module docs](crate::store) for the table):
/// `file://DIR` (an unbounded [`FileSystemCache`], as sessions want), `redis://`
/// (and `redis-sentinel://`, `redis-cluster://`),
/// `postgres://` (or `postgresql://`), `sqlite://PATH`, `memcache://` and
/// `cachelib://DIR[?hash=md5]` (a Flask-Session directory, [`CachelibStore`](super::CachelibStore)).
/// The engine stores need their cargo feature (`redis`, `postgres`, `sqlite`,
/// `memcached`, and `flask` for cachelib); a
/// URL of an engine this build lacks is a [`Error::Config`] that names the feature.
///
/// # Errors
/// [`Error::Config`] for an unknown scheme, a missing feature or a malformed URL;
/// what opening the store returns otherwise (an unreachable engine is a retryable
/// [`Error::Engine`]).
pub fn open(url: &str) -> Result<Box<dyn Store>> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| Error::Config {
        message: format!(
            "store URL {:?} has no scheme; expected file://DIR, redis://HOST:PORT/DB, \
             postgres://USER@HOST/DB, sqlite://PATH, memcache://HOST:PORT or cachelib://DIR",
            super::redact(url)
        ),
    })?;
    match scheme {
        "file" => {
            if rest.is_empty() {
                return Err(config(url, "names no directory (try file://./sessions)"));
            }
            let cache = FileSystemCache::builder(rest).threshold(0).open()?;
            Ok(Box::new(cache))
        }
        "redis" | "rediss" | "redis+unix" | "redis-sentinel" | "redis-cluster" => redis(url),
        "postgres" | "postgresql" => postgres(url),
        "sqlite" => {
            if rest.is_empty() {
                return Err(config(url, "names no file (try sqlite://./sessions.db)"));
            }
            sqlite(rest)
        }
        "memcache" | "memcached" => memcached(url),
        "cachelib" => cachelib(url, rest),
        other => Err(config(
            url,
            &format!(
                "has the unknown scheme {other:?}; fscache stores are file://, redis:// \
                 (redis-sentinel://, redis-cluster://), postgres://, sqlite://, memcache:// \
                 and cachelib://"
            ),
        )),
    }
}

fn config(url: &str, what: &str) -> Error {
    Error::Config {
        message: format!("store URL {:?} {what}", super::redact(url)),
    }
}

/// The error for an engine this build was compiled without.
#[allow(dead_code)] // unused when every engine feature is on
fn missing(feature: &str) -> Error {
    Error::Config {
        message: format!(
            "this build of fscache has no {feature} store; build it with the cargo feature \
             {feature:?} (cargo build --features {feature})"
        ),
    }
}

macro_rules! engine_opener {
    ($name:ident, $feature:literal, $module:ident :: $store:ident) => {
        #[cfg(feature = $feature)]
        fn $name(arg: &str) -> Result<Box<dyn Store>> {
            Ok(Box::new(super::$module::$store::open(arg)?))
        }
        #[cfg(not(feature = $feature))]
        fn $name(_: &str) -> Result<Box<dyn Store>> {
            Err(missing($feature))
        }
    };
}

/// `cachelib://DIR[?hash=sha256|md5]`: a Flask-Session cachelib directory.
#[cfg(feature = "flask")]
fn cachelib(url: &str, rest: &str) -> Result<Box<dyn Store>> {
    use super::cachelib::{CachelibStore, HashMethod};
    let (dir, query) = rest.split_once('?').unwrap_or((rest, ""));
    if dir.is_empty() {
        return Err(config(url, "names no directory (try cachelib:///path/to/flask_session)"));
    }
    let mut builder = CachelibStore::builder(dir);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        builder = match pair {
            "hash=sha256" => builder.hash_method(HashMethod::Sha256),
            "hash=md5" => builder.hash_method(HashMethod::Md5),
            other => {
                return Err(config(
                    url,
                    &format!("has the unknown option {other:?} (cachelib takes hash=sha256 or hash=md5)"),
                ));
            }
        };
    }
    Ok(Box::new(builder.open()?))
}

#[cfg(not(feature = "flask"))]
fn cachelib(_: &str, _: &str) -> Result<Box<dyn Store>> {
    Err(missing("flask"))
}

engine_opener!(redis, "redis", redis::RedisStore);
engine_opener!(postgres, "postgres", postgres::PostgresStore);
engine_opener!(sqlite, "sqlite", sqlite::SqliteStore);
engine_opener!(memcached, "memcached", memcached::MemcachedStore);
