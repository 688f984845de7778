//! PostgreSQL: one table with an indexed expiry judged by the database's clock,
//! `SELECT ... FOR UPDATE` for merges, a batched cleanup.

use std::time::Duration;

use postgres::{Client, NoTls, Statement};

use super::pool::Pool;
use super::{Merge, MergeFn, Store, Version, Versioned, foreign_version};
use crate::error::{Error, Result};

/// The table, its expiry index and the sequence that numbers writes (a version is
/// never reused, even for a key deleted and written again). Created under an
/// advisory lock so processes starting together do not race on `CREATE`.
const SCHEMA: &str = "
SELECT pg_advisory_xact_lock(7472394850143);
CREATE TABLE IF NOT EXISTS fscache_store (
    key TEXT PRIMARY KEY,
    value BYTEA NOT NULL,
    version BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS fscache_store_expires_at ON fscache_store (expires_at);
CREATE SEQUENCE IF NOT EXISTS fscache_store_version;
";

/// `$n` milliseconds from the database's now.
macro_rules! after {
    ($n:literal) => {
        concat!("now() + $", $n, "::float8 * interval '1 millisecond'")
    };
}

/// How long a connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A pooled connection with its statements prepared once (each query is then one
/// round trip).
struct Conn {
    client: Client,
    load: Statement,
    load_for_update: Statement,
    put: Statement,
    insert: Statement,
    cas_set: Statement,
    cas_delete: Statement,
    delete: Statement,
    touch: Statement,
}

/// A [`Store`] on PostgreSQL (feature `postgres`), through the `postgres` crate's
/// sync client and a pool of connections.
///
/// The sync client runs a small tokio runtime inside each connection, so in async
/// code call the store from the blocking pool (`tokio::task::spawn_blocking`, as the
/// framework adapters do): on an executor thread the client panics. Opening and
/// dropping the store work anywhere, `async fn main` included.
///
/// - Table `fscache_store (key, value, version, expires_at)` with an index on
///   `expires_at`; created on first open.
/// - Expiry is judged by the database's clock (`now()`), so web servers with skewed
///   clocks agree. Expired rows read as absent; [`cleanup`](Store::cleanup) deletes
///   them in bounded batches (the counterpart of `flask session_cleanup`).
/// - Atomic merge: [`update`](Store::update) locks the row with
///   `SELECT ... FOR UPDATE` in a transaction and runs the merge once; for an absent
///   key it inserts with `ON CONFLICT DO NOTHING` semantics and re-runs the merge
///   only if a concurrent insert won.
pub struct PostgresStore {
    pool: Pool<Conn>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

fn engine_error(op: &'static str, e: postgres::Error) -> Error {
    // Not a database error (I/O, a closed connection), or one that says "try
    // again": serialization failure, deadlock, shutdown, connection exceptions.
    let retryable = match e.code() {
        None => true,
        Some(code) => {
            let c = code.code();
            c.starts_with("08") || c.starts_with("57P") || c == "40001" || c == "40P01"
        }
    };
    Error::engine("postgres", op, retryable, e)
}

fn millis(ttl: Duration) -> f64 {
    super::clamp_ttl(ttl).as_millis() as f64
}

impl PostgresStore {
    /// Connects to the database a `postgres://USER:PASSWORD@HOST:PORT/DB` URL names
    /// (or the key-value form `host=… user=…`), creating the table if needed.
    ///
    /// # Errors
    /// [`Error::Config`] for a malformed URL; a retryable [`Error::Engine`] when the
    /// server does not answer; a non-retryable one when it refuses (bad password, no
    /// such database, no right to create the table).
    pub fn open(url: &str) -> Result<PostgresStore> {
        let mut config: postgres::Config = url.parse().map_err(|e| Error::Config {
            message: format!("invalid PostgreSQL URL {url:?}: {e}"),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let pool = Pool::new(32, move || connect(&config));
        // The first connection creates the table and checks the server answers.
        off_runtime(|| pool.with(|_| Ok(())))?;
        Ok(PostgresStore { pool })
    }
}

/// Runs `f` where the `postgres` client may block: on this thread, or on a helper
/// thread when this one is inside a tokio runtime. The sync client drives each call
/// with a runtime of its own, and tokio panics when a runtime is started or dropped
/// on a thread that already runs one, as `async fn main` does. A store is commonly
/// opened and dropped there (the framework adapters' users do); its calls run on
/// the blocking pool, where blocking is allowed.
fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Each pooled client owns a runtime; dropping one inside a tokio runtime
        // panics (see off_runtime).
        let idle = self.pool.take_idle();
        if !idle.is_empty() {
            off_runtime(move || drop(idle));
        }
    }
}

fn connect(config: &postgres::Config) -> Result<Conn> {
    let mut client = config
        .connect(NoTls)
        .map_err(|e| engine_error("connect", e))?;
    // The table may not exist yet on the very first connection: create it first.
    // Only then: even with IF NOT EXISTS, CREATE INDEX takes a SHARE lock on the
    // table, which waits for every open write and makes later writes queue behind
    // it; new connections opened under load (a burst of requests) then stalled
    // writes for PostgreSQL's deadlock_timeout (1 s) each.
    let exists = client
        .query_one(
            "SELECT to_regclass('fscache_store') IS NOT NULL
                AND to_regclass('fscache_store_expires_at') IS NOT NULL
                AND to_regclass('fscache_store_version') IS NOT NULL",
            &[],
        )
        .map_err(|e| engine_error("look up the table", e))?
        .get::<_, bool>(0);
    if !exists {
        client
            .batch_execute(&format!("BEGIN; {SCHEMA} COMMIT;"))
            .map_err(|e| engine_error("create table", e))?;
    }
    let mut prepare = |sql: &str| {
        client
            .prepare(sql)
            .map_err(|e| engine_error("prepare", e))
    };
    let load = prepare(
        "SELECT value, version FROM fscache_store WHERE key = $1 AND expires_at > now()",
    )?;
    let load_for_update = prepare(
        "SELECT value, version FROM fscache_store WHERE key = $1 AND expires_at > now()
         FOR UPDATE",
    )?;
    let put = prepare(concat!(
        "INSERT INTO fscache_store (key, value, version, expires_at)
         VALUES ($1, $2, nextval('fscache_store_version'), ",
        after!(3),
        ")
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value,
             version = EXCLUDED.version, expires_at = EXCLUDED.expires_at"
    ))?;
    let insert = prepare(concat!(
        "INSERT INTO fscache_store (key, value, version, expires_at)
         VALUES ($1, $2, nextval('fscache_store_version'), ",
        after!(3),
        ")
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value,
             version = EXCLUDED.version, expires_at = EXCLUDED.expires_at
         WHERE fscache_store.expires_at <= now()"
    ))?;
    let cas_set = prepare(concat!(
        "UPDATE fscache_store SET value = $2, version = nextval('fscache_store_version'),
             expires_at = ",
        after!(3),
        "
         WHERE key = $1 AND version = $4 AND expires_at > now()"
    ))?;
    let cas_delete = prepare(
        "DELETE FROM fscache_store WHERE key = $1 AND version = $2 AND expires_at > now()",
    )?;
    let delete = prepare(
        "DELETE FROM fscache_store WHERE key = $1 RETURNING expires_at > now()",
    )?;
    let touch = prepare(concat!(
        "UPDATE fscache_store SET expires_at = ",
        after!(2),
        " WHERE key = $1 AND expires_at > now()"
    ))?;
    Ok(Conn {
        client,
        load,
        load_for_update,
        put,
        insert,
        cas_set,
        cas_delete,
        delete,
        touch,
    })
}

fn versioned(row: &postgres::Row) -> Versioned {
    Versioned {
        value: row.get(0),
        version: Version::from_number(row.get::<_, i64>(1) as u64),
    }
}

impl Store for PostgresStore {
    fn engine(&self) -> &'static str {
        "postgres"
    }

    fn load(&self, key: &str) -> Result<Option<Versioned>> {
        self.pool.with(|c| {
            let row = c
                .client
                .query_opt(&c.load, &[&key])
                .map_err(|e| engine_error("load", e))?;
            Ok(row.as_ref().map(versioned))
        })
    }

    fn save(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        self.pool.with(|c| {
            c.client
                .execute(&c.put, &[&key, &value, &millis(ttl)])
                .map(drop)
                .map_err(|e| engine_error("save", e))
        })
    }

    fn insert(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        self.pool.with(|c| {
            c.client
                .execute(&c.insert, &[&key, &value, &millis(ttl)])
                .map(|n| n == 1)
                .map_err(|e| engine_error("insert", e))
        })
    }

    fn compare_and_set(
        &self,
        key: &str,
        expected: &Version,
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<bool> {
        let Some(expected) = expected.as_number().map(|n| n as i64) else {
            return Err(foreign_version(key));
        };
        self.pool.with(|c| {
            let n = match new {
                Some(v) => c
                    .client
                    .execute(&c.cas_set, &[&key, &v, &millis(ttl), &expected]),
                None => c.client.execute(&c.cas_delete, &[&key, &expected]),
            };
            n.map(|n| n == 1)
                .map_err(|e| engine_error("compare-and-set", e))
        })
    }

    fn remove(&self, key: &str) -> Result<bool> {
        self.pool.with(|c| {
            let row = c
                .client
                .query_opt(&c.delete, &[&key])
                .map_err(|e| engine_error("remove", e))?;
            Ok(row.is_some_and(|r| r.get::<_, bool>(0)))
        })
    }

    fn touch(&self, key: &str, ttl: Duration) -> Result<bool> {
        self.pool.with(|c| {
            c.client
                .execute(&c.touch, &[&key, &millis(ttl)])
                .map(|n| n == 1)
                .map_err(|e| engine_error("touch", e))
        })
    }

    fn update(&self, key: &str, ttl: Duration, merge: &mut MergeFn<'_>) -> Result<Option<Vec<u8>>> {
        for _ in 0..super::MAX_ATTEMPTS {
            let done = self.pool.with(|c| {
                let Conn {
                    client,
                    load_for_update,
                    put,
                    insert,
                    cas_delete,
                    ..
                } = c;
                let mut tx = client
                    .transaction()
                    .map_err(|e| engine_error("begin", e))?;
                let current = tx
                    .query_opt(&*load_for_update, &[&key])
                    .map_err(|e| engine_error("update", e))?
                    .as_ref()
                    .map(versioned);
                let stored = match merge(current.as_ref().map(|v| &v.value[..]))? {
                    Merge::Keep => return Ok(Some(current.map(|v| v.value))),
                    Merge::Put(new) => {
                        let statement = if current.is_some() { &*put } else { &*insert };
                        let n = tx
                            .execute(statement, &[&key, &new, &millis(ttl)])
                            .map_err(|e| engine_error("update", e))?;
                        if n == 0 {
                            // A concurrent insert of the absent key won: merge again.
                            return Ok(None);
                        }
                        Some(new)
                    }
                    Merge::Delete => {
                        if let Some(cur) = &current {
                            let version = cur.version.as_number().unwrap_or(0) as i64;
                            tx.execute(&*cas_delete, &[&key, &version])
                                .map_err(|e| engine_error("update", e))?;
                        }
                        None
                    }
                };
                tx.commit().map_err(|e| engine_error("commit", e))?;
                Ok(Some(stored))
            })?;
            if let Some(stored) = done {
                return Ok(stored);
            }
        }
        Err(Error::Conflict {
            key: key.to_owned(),
            attempts: super::MAX_ATTEMPTS,
        })
    }

    fn cleanup(&self, batch: usize) -> Result<usize> {
        let batch = batch.min(i64::MAX as usize) as i64;
        self.pool.with(|c| {
            c.client
                .execute(
                    "DELETE FROM fscache_store WHERE key IN
                         (SELECT key FROM fscache_store WHERE expires_at <= now()
                          LIMIT $1 FOR UPDATE SKIP LOCKED)",
                    &[&batch],
                )
                .map(|n| n as usize)
                .map_err(|e| engine_error("cleanup", e))
        })
    }
}
