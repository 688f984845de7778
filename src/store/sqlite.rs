//! SQLite: one table in WAL mode, `BEGIN IMMEDIATE` for merges, a batched cleanup.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};

use super::pool::{Pool, PoolLimits};
use super::{Merge, MergeFn, Store, Version, Versioned, foreign_version};
use crate::error::{EngineErrorKind, Error, Result};

/// The table; `version` is a random 64-bit id per write (so a key deleted and
/// written again never repeats a version a stale compare-and-set could match).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS fscache_store (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    version INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS fscache_store_expires_at ON fscache_store (expires_at);
";

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A [`Store`] in an SQLite database file (feature `sqlite`, SQLite bundled through
/// `rusqlite`): the embedded choice when several processes on one host share
/// sessions and a directory of files is not wanted.
///
/// - Table `fscache_store (key, value, version, expires_at)`, `WITHOUT ROWID`, an
///   index on `expires_at`; WAL journal, `synchronous = NORMAL` (a power loss can
///   lose the last commits, never corrupt the file).
/// - Expiry: `expires_at` in Unix milliseconds by this host's clock; an expired row
///   reads as absent and is removed by [`cleanup`](Store::cleanup) (or replaced by a
///   write).
/// - Atomic merge: [`update`](Store::update) runs in a `BEGIN IMMEDIATE`
///   transaction, which takes the database's write lock, so the merge runs once.
pub struct SqliteStore {
    pool: Pool<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

fn engine_error(op: &'static str, e: rusqlite::Error) -> Error {
    let kind = match e.sqlite_error_code() {
        // Still locked by another writer after the busy timeout.
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => EngineErrorKind::Timeout,
        Some(ErrorCode::SystemIoFailure) => EngineErrorKind::Unavailable,
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::ReadOnly) => {
            EngineErrorKind::Refused
        }
        _ => return Error::engine("sqlite", op, false, e),
    };
    Error::engine_with_kind("sqlite", op, kind, e)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn expires(now: i64, ttl: Duration) -> i64 {
    now.saturating_add(super::clamp_ttl(ttl).as_millis() as i64)
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and its table.
    ///
    /// # Errors
    /// [`Error::Config`] for `:memory:` (each pooled connection would get its own
    /// empty database); [`Error::Engine`] if the file cannot be opened or is not an
    /// SQLite database.
    pub fn open(path: &str) -> Result<SqliteStore> {
        SqliteStore::builder(path).open()
    }

    /// A builder for a store in the database file at `path`, to size its pool.
    ///
    /// ```no_run
    /// # fn main() -> fscache::Result<()> {
    /// use std::time::Duration;
    /// let store = fscache::store::SqliteStore::builder("/var/lib/app/sessions.db")
    ///     .pool_size(4)
    ///     .pool_timeout(Duration::from_millis(500))
    ///     .open()?;
    /// # Ok(()) }
    /// ```
    pub fn builder(path: &str) -> SqliteStoreBuilder {
        SqliteStoreBuilder {
            path: path.to_owned(),
            limits: PoolLimits {
                max_size: 16,
                ..PoolLimits::default()
            },
        }
    }
}

/// A [`SqliteStore`] with its pool sized in code: from [`SqliteStore::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct SqliteStoreBuilder {
    path: String,
    limits: PoolLimits,
}

impl SqliteStoreBuilder {
    /// At most this many connections (default 16; at least 1). SQLite runs one
    /// writer at a time; more connections serve more concurrent readers.
    pub fn pool_size(mut self, n: usize) -> Self {
        self.limits.max_size = n.max(1);
        self
    }

    /// How long a call waits for a free connection (default 2 s).
    pub fn pool_timeout(mut self, wait: Duration) -> Self {
        self.limits.wait = wait;
        self
    }

    /// Opens (creating if needed) the database file and its table.
    ///
    /// # Errors
    /// As [`SqliteStore::open`].
    pub fn open(self) -> Result<SqliteStore> {
        let path = self.path.as_str();
        // Each pooled connection would open its own, empty in-memory database.
        if path == ":memory:" || path.is_empty() || path.starts_with("file::memory:") {
            return Err(Error::Config {
                message: format!(
                    "sqlite store {path:?}: an in-memory database is private to one \
                     connection and this store pools several; give a file path \
                     (sqlite://./sessions.db)"
                ),
            });
        }
        let limits = self.limits;
        let path = path.to_owned();
        let pool = Pool::new("sqlite", limits, move || {
            let conn = Connection::open(&path).map_err(|e| engine_error("open", e))?;
            conn.busy_timeout(BUSY_TIMEOUT)
                .map_err(|e| engine_error("open", e))?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .and_then(|()| conn.pragma_update(None, "synchronous", "NORMAL"))
                .map_err(|e| engine_error("open", e))?;
            Ok(conn)
        });
        pool.with(|c| c.execute_batch(SCHEMA).map_err(|e| engine_error("create table", e)))?;
        Ok(SqliteStore { pool })
    }
}

fn load(c: &Connection, key: &str, now: i64) -> Result<Option<Versioned>> {
    c.prepare_cached(
        "SELECT value, version FROM fscache_store WHERE key = ?1 AND expires_at > ?2",
    )
    .and_then(|mut s| {
        s.query_row(params![key, now], |r| {
            Ok(Versioned {
                value: r.get(0)?,
                version: Version::from_number(r.get::<_, i64>(1)? as u64),
            })
        })
        .optional()
    })
    .map_err(|e| engine_error("load", e))
}

fn put(c: &Connection, key: &str, value: &[u8], expires_at: i64) -> rusqlite::Result<usize> {
    c.prepare_cached(
        "INSERT INTO fscache_store (key, value, version, expires_at) VALUES (?1, ?2, random(), ?3)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version,
             expires_at = excluded.expires_at",
    )?
    .execute(params![key, value, expires_at])
}

fn insert(c: &Connection, key: &str, value: &[u8], expires_at: i64, now: i64) -> rusqlite::Result<bool> {
    c.prepare_cached(
        "INSERT INTO fscache_store (key, value, version, expires_at) VALUES (?1, ?2, random(), ?3)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version,
             expires_at = excluded.expires_at
         WHERE fscache_store.expires_at <= ?4",
    )?
    .execute(params![key, value, expires_at, now])
    .map(|n| n == 1)
}

fn delete(c: &Connection, key: &str, now: i64) -> rusqlite::Result<bool> {
    let expired: Option<i64> = c
        .prepare_cached("DELETE FROM fscache_store WHERE key = ?1 RETURNING expires_at")?
        .query_row(params![key], |r| r.get(0))
        .optional()?;
    Ok(expired.is_some_and(|at| at > now))
}

impl Store for SqliteStore {
    fn engine(&self) -> &'static str {
        "sqlite"
    }

    fn load(&self, key: &str) -> Result<Option<Versioned>> {
        self.pool.with(|c| load(c, key, now_ms()))
    }

    fn save(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        self.pool.with(|c| {
            put(c, key, value, expires(now_ms(), ttl))
                .map(drop)
                .map_err(|e| engine_error("save", e))
        })
    }

    fn insert(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        let now = now_ms();
        self.pool.with(|c| {
            insert(c, key, value, expires(now, ttl), now).map_err(|e| engine_error("insert", e))
        })
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
        let now = now_ms();
        self.pool.with(|c| {
            let n = match new {
                Some(v) => c
                    .prepare_cached(
                        "UPDATE fscache_store SET value = ?1, version = random(), expires_at = ?2
                         WHERE key = ?3 AND version = ?4 AND expires_at > ?5",
                    )
                    .and_then(|mut s| {
                        s.execute(params![v, expires(now, ttl), key, expected as i64, now])
                    }),
                None => c
                    .prepare_cached(
                        "DELETE FROM fscache_store WHERE key = ?1 AND version = ?2
                         AND expires_at > ?3",
                    )
                    .and_then(|mut s| s.execute(params![key, expected as i64, now])),
            };
            n.map(|n| n == 1)
                .map_err(|e| engine_error("compare-and-set", e))
        })
    }

    fn remove(&self, key: &str) -> Result<bool> {
        self.pool
            .with(|c| delete(c, key, now_ms()).map_err(|e| engine_error("remove", e)))
    }

    fn touch(&self, key: &str, ttl: Duration) -> Result<bool> {
        let now = now_ms();
        self.pool.with(|c| {
            c.prepare_cached(
                "UPDATE fscache_store SET expires_at = ?1 WHERE key = ?2 AND expires_at > ?3",
            )
            .and_then(|mut s| s.execute(params![expires(now, ttl), key, now]))
            .map(|n| n == 1)
            .map_err(|e| engine_error("touch", e))
        })
    }

    fn update(&self, key: &str, ttl: Duration, merge: &mut MergeFn<'_>) -> Result<Option<Vec<u8>>> {
        self.pool.with(|c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| engine_error("begin", e))?;
            let now = now_ms();
            let current = load(&tx, key, now)?;
            let stored = match merge(current.as_ref().map(|v| &v.value[..]))? {
                Merge::Keep => return Ok(current.map(|v| v.value)),
                Merge::Put(new) => {
                    put(&tx, key, &new, expires(now, ttl)).map_err(|e| engine_error("update", e))?;
                    Some(new)
                }
                Merge::Delete => {
                    if current.is_some() {
                        delete(&tx, key, now).map_err(|e| engine_error("update", e))?;
                    }
                    None
                }
            };
            tx.commit().map_err(|e| engine_error("commit", e))?;
            Ok(stored)
        })
    }

    fn cleanup(&self, batch: usize) -> Result<usize> {
        let now = now_ms();
        self.pool.with(|c| {
            c.prepare_cached(
                "DELETE FROM fscache_store WHERE key IN
                     (SELECT key FROM fscache_store WHERE expires_at <= ?1 LIMIT ?2)",
            )
            .and_then(|mut s| s.execute(params![now, batch.min(i64::MAX as usize) as i64]))
            .map_err(|e| engine_error("cleanup", e))
        })
    }
}
