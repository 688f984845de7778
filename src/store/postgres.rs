//! PostgreSQL: one table with an indexed expiry judged by the database's clock,
//! `SELECT ... FOR UPDATE` for merges, a batched cleanup.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls, Statement};

use super::pool::{Pool, PoolLimits, pool_option};
use super::{Merge, MergeFn, Store, Version, Versioned, foreign_version};
use crate::error::{EngineErrorKind, Error, Result};

/// The table and its expiry index, created at [`open`](PostgresStore::open) when
/// missing, under an advisory lock so processes starting together do not race on
/// `CREATE`.
const SCHEMA: &str = "
SELECT pg_advisory_xact_lock(7472394850143);
CREATE TABLE IF NOT EXISTS fscache_store (
    key TEXT PRIMARY KEY,
    value BYTEA NOT NULL,
    version BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS fscache_store_expires_at ON fscache_store (expires_at);
";

/// `$n` milliseconds from the database's now.
macro_rules! after {
    ($n:literal) => {
        concat!("now() + $", $n, "::float8 * interval '1 millisecond'")
    };
}

/// How long a connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The server settings every connection starts with, unless the URL's `options`
/// set them: no statement, lock wait or abandoned transaction holds a request (or
/// the rows it locked) for long.
const SERVER_DEFAULTS: &str = "-c statement_timeout=5000 -c lock_timeout=2000 \
     -c idle_in_transaction_session_timeout=10000";

/// TCP keepalives and the unacknowledged-data timeout, unless the URL sets them: a
/// server that vanished without closing the connection (a host that died, a
/// network cut) fails the call in about 10 s instead of the OS's 15 minutes.
const KEEPALIVES_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVES_RETRIES: u32 = 3;
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);

const LOAD: &str =
    "SELECT value, version FROM fscache_store WHERE key = $1 AND expires_at > now()";
const LOAD_FOR_UPDATE: &str =
    "SELECT value, version FROM fscache_store WHERE key = $1 AND expires_at > now() FOR UPDATE";
const PUT: &str = concat!(
    "INSERT INTO fscache_store (key, value, version, expires_at) VALUES ($1, $2, $4, ",
    after!(3),
    ") ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value,
         version = EXCLUDED.version, expires_at = EXCLUDED.expires_at"
);
const INSERT: &str = concat!(
    "INSERT INTO fscache_store (key, value, version, expires_at) VALUES ($1, $2, $4, ",
    after!(3),
    ") ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value,
         version = EXCLUDED.version, expires_at = EXCLUDED.expires_at
     WHERE fscache_store.expires_at <= now()"
);
const CAS_SET: &str = concat!(
    "UPDATE fscache_store SET value = $2, version = $5, expires_at = ",
    after!(3),
    " WHERE key = $1 AND version = $4 AND expires_at > now()"
);
const CAS_DELETE: &str =
    "DELETE FROM fscache_store WHERE key = $1 AND version = $2 AND expires_at > now()";
const DELETE: &str = "DELETE FROM fscache_store WHERE key = $1 RETURNING expires_at > now()";
const TOUCH: &str = concat!(
    "UPDATE fscache_store SET expires_at = ",
    after!(2),
    " WHERE key = $1 AND expires_at > now()"
);
const CLEANUP: &str = "DELETE FROM fscache_store WHERE key IN
     (SELECT key FROM fscache_store WHERE expires_at <= now() LIMIT $1 FOR UPDATE SKIP LOCKED)";

/// A [`Store`] on PostgreSQL (feature `postgres`), through the `postgres` crate's
/// sync client and a pool of connections.
///
/// The sync client runs a small tokio runtime inside each connection, so in async
/// code call the store from the blocking pool (`tokio::task::spawn_blocking`, as the
/// framework adapters do): on an executor thread the client panics. Opening and
/// dropping the store work anywhere, `async fn main` included.
///
/// - **Table** `fscache_store (key, value, version, expires_at)` with an index on
///   `expires_at`, created by [`open`](PostgresStore::open) when missing (never by a
///   pooled connection later). A role with only `SELECT, INSERT, UPDATE, DELETE`
///   on an existing table can use the store: it needs no sequence and no DDL.
///   The owner can create the table beforehand with this SQL:
///
///   ```sql
///   CREATE TABLE fscache_store (key TEXT PRIMARY KEY, value BYTEA NOT NULL,
///       version BIGINT NOT NULL, expires_at TIMESTAMPTZ NOT NULL);
///   CREATE INDEX fscache_store_expires_at ON fscache_store (expires_at);
///   GRANT SELECT, INSERT, UPDATE, DELETE ON fscache_store TO app;
///   ```
/// - **Versions** are random 63-bit numbers drawn for each write (a version is
///   never reused in practice: two writes of a key collide with probability
///   2⁻⁶³).
/// - **Expiry** is judged by the database's clock (`now()`), so web servers with
///   skewed clocks agree. Expired rows read as absent; [`cleanup`](Store::cleanup)
///   deletes them in bounded batches (the counterpart of `flask session_cleanup`).
/// - **Atomic merge**: [`update`](Store::update) locks the row with
///   `SELECT ... FOR UPDATE` in a transaction and runs the merge once; for an absent
///   key it inserts with `ON CONFLICT DO NOTHING` semantics and re-runs the merge
///   only if a concurrent insert won.
/// - **PgBouncer** in transaction pooling mode works: every statement is sent
///   unnamed with its parameter types (one round trip, no prepared statement that
///   outlives a transaction), and no session state is relied on. On a direct
///   connection, `prepared_statements=true` prepares each statement once per
///   connection instead, which saves the server parsing and planning it on every
///   call (about 50 µs a statement here; see BENCHMARKS.md). Never use it behind
///   a pooler in transaction mode: a prepared statement belongs to one server
///   connection, and the pooler switches them between transactions.
/// - **Failover**: a URL with several hosts (`postgres://u@a:5432,b:5432/db` or
///   `host=a,b`) and `target_session_attrs=read-write` connects to whichever is the
///   primary. After a failover, a call on a connection to the old primary fails
///   with a retryable [`EngineErrorKind::Unavailable`] and the next connection goes
///   to the new one.
/// - **Nothing waits forever.** Unless the URL's `options` set them, every
///   connection starts with `statement_timeout=5s`, `lock_timeout=2s` and
///   `idle_in_transaction_session_timeout=10s` (a statement that hits one fails
///   with a retryable [`EngineErrorKind::Timeout`]), TCP keepalives every 5 s
///   after 10 s idle, and a 10 s `tcp_user_timeout`; a URL setting wins (e.g.
///   `options=-c%20lock_timeout%3D500`, `keepalives_idle=60`). A pooler that
///   refuses the `options` startup parameter (PgBouncer 1.18 unless it is in its
///   `ignore_startup_parameters`) gets none: set the timeouts on the role there
///   (`ALTER ROLE app SET statement_timeout = '5s'`).
/// - **TLS** (feature `tls`): `sslmode` and `sslrootcert` as libpq reads them:
///   `verify-full` checks the chain and the host name, `verify-ca` the chain,
///   `require` nothing (or the chain, given `sslrootcert`), `prefer`/`allow` use
///   TLS when the server offers it; `disable` is the default. Without the feature
///   a mode that needs TLS is an [`Error::Config`].
/// - **Pool**: at most `pool_size` connections (default 32); a call that finds none
///   free waits up to `pool_timeout_ms` (default 2000) and then fails with a
///   retryable [`EngineErrorKind::Timeout`]. Every call but `remove` that fails on a
///   pooled connection found closed (the server restarted, the pooler dropped
///   it) runs once more on a new connection: a merge's transaction was rolled
///   back (a failed `COMMIT` is reported instead), and an insert or a
///   compare-and-set resends the same random version and recognizes its own
///   write. Idle connections not used since the dead one are then dropped.
pub struct PostgresStore {
    pool: Pool<Conn>,
}

/// A pooled connection, and its prepared statements when the URL asks for them
/// (`prepared_statements=true`), prepared on first use.
struct Conn {
    client: Client,
    cache: Option<Vec<(&'static str, Statement)>>,
}

impl Conn {
    /// The prepared statement for `sql`, or `None` when statements are sent
    /// unnamed.
    fn prepared(&mut self, sql: &'static str, op: &'static str) -> Result<Option<Statement>> {
        let Some(cache) = &mut self.cache else {
            return Ok(None);
        };
        if let Some((_, st)) = cache.iter().find(|(s, _)| std::ptr::eq(*s, sql)) {
            return Ok(Some(st.clone()));
        }
        let st = self.client.prepare(sql).map_err(|e| engine_error(op, e))?;
        cache.push((sql, st.clone()));
        Ok(Some(st))
    }
}


impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

fn engine_error(op: &'static str, e: postgres::Error) -> Error {
    use EngineErrorKind as K;
    let kind = match e.code().map(|c| c.code()) {
        Some(code) => match code {
            // statement_timeout (query_canceled), lock_timeout (lock_not_available),
            // idle_in_transaction_session_timeout.
            "57014" | "55P03" | "25P03" => K::Timeout,
            "40001" | "40P01" => K::Conflict,
            // Too many connections, out of memory or disk, a standby (after a
            // failover), shutting down or starting, a connection exception.
            "53300" | "53200" | "53100" | "25006" => K::Unavailable,
            c if c.starts_with("08") || c.starts_with("57P") => K::Unavailable,
            c if c.starts_with("28") => K::Auth,
            // No permission, no such database, table or column.
            "42501" | "3D000" => K::Refused,
            c if c.starts_with("42") => K::Refused,
            _ => return Error::engine("postgres", op, false, e),
        },
        None => {
            let what = e.to_string();
            let timed_out = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
            if timed_out || what.starts_with("timeout waiting for server") {
                K::Timeout
            } else if what.starts_with("authentication error") {
                K::Auth
            } else if e.is_closed()
                || what.starts_with("error communicating with the server")
                || what.starts_with("error connecting to server")
                || what.starts_with("unexpected message from server")
                || what.starts_with("error parsing response from server")
            {
                K::Unavailable
            } else {
                // A row in a shape fscache did not write, a bad parameter.
                return Error::engine("postgres", op, false, e);
            }
        }
    };
    Error::engine_with_kind("postgres", op, kind, e)
}

fn millis(ttl: Duration) -> f64 {
    super::clamp_ttl(ttl).as_millis() as f64
}

/// A fresh version for a write: random, 63 bits (positive as a `BIGINT`).
fn new_version() -> Result<i64> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| {
        Error::engine_with_kind(
            "postgres",
            "draw a version",
            EngineErrorKind::Other,
            format!("the OS random number generator failed: {e}"),
        )
    })?;
    Ok((u64::from_le_bytes(bytes) >> 1) as i64)
}

/// What a PostgreSQL URL holds for the store rather than for the client.
struct Options {
    limits: PoolLimits,
    prepared: bool,
    /// `sslmode`, as given (the client crate knows only disable/prefer/require).
    sslmode: Option<String>,
    /// `sslrootcert`: the CA file that TLS connections trust.
    sslrootcert: Option<String>,
}

/// Takes the store's own options (`pool_size`, `pool_timeout_ms`,
/// `prepared_statements`, `sslmode`, `sslrootcert`) out of a `postgres://` URL's
/// query or a key-value string.
fn split_options(url: &str) -> Result<(String, Options)> {
    let mut o = Options {
        limits: PoolLimits::default(),
        prepared: false,
        sslmode: None,
        sslrootcert: None,
    };
    let bad = |m: String| Error::Config {
        message: format!("invalid PostgreSQL URL {:?}: {m}", super::redact(url)),
    };
    let mut own = |name: &str, value: &str| -> Result<bool> {
        match name {
            "prepared_statements" => o.prepared = flag(value).map_err(&bad)?,
            "sslmode" => o.sslmode = Some(value.trim_matches('\'').to_owned()),
            "sslrootcert" => o.sslrootcert = Some(value.trim_matches('\'').to_owned()),
            _ => return pool_option(&mut o.limits, name, value).map_err(&bad),
        }
        Ok(true)
    };
    if url.contains("://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), o));
        };
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !own(name, &super::builder::percent_decode(value))? {
                rest.push(pair);
            }
        }
        let url = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        return Ok((url, o));
    }
    let mut rest = Vec::new();
    for word in url.split_whitespace() {
        match word.split_once('=') {
            Some((name, value)) if own(name, value)? => {}
            _ => rest.push(word),
        }
    }
    Ok((rest.join(" "), o))
}

/// How connections are made: in the clear, or with TLS (feature `tls`).
#[derive(Clone)]
enum Connector {
    Plain,
    #[cfg(feature = "tls")]
    Tls(tokio_postgres_rustls::MakeRustlsConnect),
}

impl Connector {
    /// The connector and the client crate's own mode for `sslmode`:
    /// `disable` (the default) in the clear; `allow` and `prefer` with TLS when the
    /// server offers it; `require` (any certificate, or the chain when
    /// `sslrootcert` is set, as libpq does), `verify-ca` (the chain) and
    /// `verify-full` (the chain and the host name) with TLS or not at all.
    fn new(url: &str, o: &Options) -> Result<(Connector, postgres::config::SslMode)> {
        use postgres::config::SslMode;
        let bad = |m: String| Error::Config {
            message: format!("invalid PostgreSQL URL {:?}: {m}", super::redact(url)),
        };
        let mode = o.sslmode.as_deref().unwrap_or("disable");
        let (ssl, verify) = match mode {
            "disable" => return Ok((Connector::Plain, SslMode::Disable)),
            "allow" | "prefer" => (SslMode::Prefer, 0),
            "require" => (SslMode::Require, if o.sslrootcert.is_some() { 1 } else { 0 }),
            "verify-ca" => (SslMode::Require, 1),
            "verify-full" => (SslMode::Require, 2),
            other => {
                return Err(bad(format!(
                    "sslmode {other:?} is not disable, allow, prefer, require, verify-ca or verify-full"
                )));
            }
        };
        #[cfg(feature = "tls")]
        {
            use super::tls::{Verify, client_config};
            let verify = [Verify::Nothing, Verify::Chain, Verify::Full][verify];
            let ca = o.sslrootcert.as_deref().map(std::path::Path::new);
            let config = client_config(verify, ca).map_err(bad)?;
            Ok((
                Connector::Tls(tokio_postgres_rustls::MakeRustlsConnect::new(config)),
                ssl,
            ))
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = verify;
            if ssl == SslMode::Prefer {
                return Ok((Connector::Plain, SslMode::Disable));
            }
            Err(bad(format!(
                "sslmode={mode} needs TLS: build fscache with the cargo feature \"tls\""
            )))
        }
    }

    fn connect(&self, config: &postgres::Config) -> std::result::Result<Client, postgres::Error> {
        match self {
            Connector::Plain => config.connect(NoTls),
            #[cfg(feature = "tls")]
            Connector::Tls(tls) => config.connect(tls.clone()),
        }
    }
}

fn flag(value: &str) -> std::result::Result<bool, String> {
    match value {
        "true" | "on" | "1" => Ok(true),
        "false" | "off" | "0" => Ok(false),
        _ => Err(format!("prepared_statements takes true or false, not {value:?}")),
    }
}

/// Whether the connection string sets `name` itself (a URL query parameter or a
/// key-value pair).
fn sets(url: &str, name: &str) -> bool {
    let query = if url.contains("://") {
        url.split_once('?').map_or("", |(_, q)| q)
    } else {
        url
    };
    query
        .split(['&', ' '])
        .any(|p| p.split_once('=').is_some_and(|(n, _)| n.trim() == name))
}

/// A [`PostgresStore`] with its settings made in code rather than in the URL:
/// from [`PostgresStore::builder`]. Each setter is an option of the URL (the
/// README's table); a setting here wins over the URL's. `Debug` never shows the
/// password.
///
/// ```no_run
/// # fn main() -> fscache::Result<()> {
/// use std::time::Duration;
/// use fscache::store::PostgresStore;
/// let password = std::env::var("DB_PASSWORD").unwrap_or_default();
/// let store = PostgresStore::builder("postgres://app@db1:5432,db2:5432/app")
///     .password(&password)
///     .option("target_session_attrs", "read-write")
///     .pool_size(16)
///     .pool_timeout(Duration::from_millis(500))
///     .open()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct PostgresStoreBuilder {
    parts: super::builder::Parts,
}

impl PostgresStoreBuilder {
    /// The role to connect as (the URL's user otherwise).
    pub fn user(mut self, user: &str) -> Self {
        self.parts.username(user);
        self
    }

    /// The password, kept out of the URL you write (the builder encodes it).
    pub fn password(mut self, password: &str) -> Self {
        self.parts.password(password);
        self
    }

    /// At most this many connections (`pool_size`, 1 to 10,000; default 32).
    pub fn pool_size(mut self, n: usize) -> Self {
        self.parts.set("pool_size", n);
        self
    }

    /// How long a call waits for a free connection (`pool_timeout_ms`; default 2 s).
    pub fn pool_timeout(mut self, wait: Duration) -> Self {
        self.parts.set_millis("pool_timeout_ms", wait);
        self
    }

    /// How long a connection attempt may take (`connect_timeout`, whole seconds,
    /// at least 1; default 2 s). Statement and lock timeouts are server settings:
    /// `option("options", "-c statement_timeout=2000")`.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.parts.set("connect_timeout", timeout.as_secs().max(1));
        self
    }

    /// Prepare each statement once per connection (`prepared_statements`; never
    /// behind PgBouncer in transaction mode).
    pub fn prepared_statements(mut self, on: bool) -> Self {
        self.parts.set("prepared_statements", on);
        self
    }

    /// TLS as libpq's `sslmode` (`disable`, `allow`, `prefer`, `require`,
    /// `verify-ca`, `verify-full`); see the type's docs. Feature `tls` for the
    /// modes that need TLS.
    pub fn sslmode(mut self, mode: &str) -> Self {
        self.parts.set("sslmode", mode);
        self
    }

    /// The CA file (PEM) TLS connections trust (`sslrootcert`).
    pub fn sslrootcert(mut self, path: impl AsRef<std::path::Path>) -> Self {
        self.parts.set_path("sslrootcert", path.as_ref());
        self
    }

    /// Any other setting of the URL (`target_session_attrs`, `connect_timeout`,
    /// `options`, …).
    pub fn option(mut self, name: &'static str, value: &str) -> Self {
        self.parts.set(name, value);
        self
    }

    /// Opens the store, as [`PostgresStore::open`] with the composed URL.
    ///
    /// # Errors
    /// As [`PostgresStore::open`].
    pub fn open(self) -> Result<PostgresStore> {
        PostgresStore::open(&self.parts.url())
    }
}

impl PostgresStore {
    /// A builder for a store on the database `url` names (a `postgres://` URL or
    /// the key-value form), to set the pool, TLS and password in code.
    pub fn builder(url: &str) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            parts: super::builder::Parts::new(url),
        }
    }
}

impl PostgresStore {
    /// Connects to the database a `postgres://USER:PASSWORD@HOST:PORT/DB` URL names
    /// (or the key-value form `host=… user=…`; several hosts for failover), and
    /// creates the table if it is missing.
    ///
    /// Besides the `postgres` crate's settings the URL takes `pool_size=N` and
    /// `pool_timeout_ms=MS` (see the type's docs).
    ///
    /// # Errors
    /// [`Error::Config`] for a malformed URL; a retryable [`Error::Engine`] when the
    /// server does not answer; a non-retryable one when it refuses (bad password:
    /// [`EngineErrorKind::Auth`]; no such database, no right to create a missing
    /// table: [`EngineErrorKind::Refused`]).
    pub fn open(url: &str) -> Result<PostgresStore> {
        let (client_url, options) = split_options(url)?;
        let (connector, ssl_mode) = Connector::new(url, &options)?;
        let (limits, prepared) = (options.limits, options.prepared);
        let mut config: postgres::Config = client_url.parse().map_err(|e| Error::Config {
            message: format!("invalid PostgreSQL URL {:?}: {e}", super::redact(url)),
        })?;
        config.ssl_mode(ssl_mode);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if !sets(&client_url, "keepalives_idle") {
            config.keepalives_idle(KEEPALIVES_IDLE);
        }
        if !sets(&client_url, "keepalives_interval") {
            config.keepalives_interval(KEEPALIVES_INTERVAL);
        }
        if !sets(&client_url, "keepalives_retries") {
            config.keepalives_retries(KEEPALIVES_RETRIES);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        // The URL's own options come after the defaults: PostgreSQL applies `-c`
        // settings in order, so the URL's win.
        let plain = config.clone();
        match config.get_options() {
            Some(own) => config.options(&format!("{SERVER_DEFAULTS} {own}")),
            None => config.options(SERVER_DEFAULTS),
        };
        let refused_options = Arc::new(AtomicBool::new(false));
        let pool = Pool::new("postgres", limits, move || {
            let client = connect(&connector, &config, &plain, &refused_options)?;
            Ok(Conn {
                client,
                cache: prepared.then(Vec::new),
            })
        })
        .with_check(|c| !c.client.is_closed());
        let store = PostgresStore { pool };
        off_runtime(|| store.pool.with(|c| create_schema(&mut c.client)))?;
        Ok(store)
    }
}

/// Creates the table and its index unless both exist (a role with only DML
/// rights then never needs more). Only here, once per [`PostgresStore::open`]:
/// even with `IF NOT EXISTS`, `CREATE INDEX` takes a SHARE lock on the table that
/// waits for every open write and queues later writes behind it.
fn create_schema(client: &mut Client) -> Result<()> {
    let exists = client
        .query_one(
            "SELECT to_regclass('fscache_store') IS NOT NULL
                AND to_regclass('fscache_store_expires_at') IS NOT NULL",
            &[],
        )
        .map_err(|e| engine_error("look up the table", e))?
        .get::<_, bool>(0);
    if !exists {
        client
            .batch_execute(&format!("BEGIN; {SCHEMA} COMMIT;"))
            .map_err(|e| engine_error("create table", e))?;
    }
    Ok(())
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

/// A new connection, with the server defaults in its startup `options` unless a
/// pooler refused them once (then `plain`, without them).
fn connect(
    connector: &Connector,
    config: &postgres::Config,
    plain: &postgres::Config,
    refused: &AtomicBool,
) -> Result<Client> {
    if !refused.load(Ordering::Relaxed) {
        match connector.connect(config) {
            Ok(client) => return Ok(client),
            Err(e) if e.as_db_error().is_some_and(|d| {
                d.message().contains("unsupported startup parameter")
            }) =>
            {
                refused.store(true, Ordering::Relaxed);
            }
            Err(e) => return Err(engine_error("connect", e)),
        }
    }
    connector.connect(plain).map_err(|e| engine_error("connect", e))
}

fn versioned(row: &postgres::Row) -> Result<Versioned> {
    let value = row
        .try_get(0)
        .map_err(|e| engine_error("read a row", e))?;
    let version: i64 = row
        .try_get(1)
        .map_err(|e| engine_error("read a row", e))?;
    Ok(Versioned {
        value,
        version: Version::from_number(version as u64),
    })
}

/// Parameters with their types, as `query_typed` takes them.
type Params<'a> = [(&'a (dyn ToSql + Sync), Type)];

/// Whether `key` holds the write that carried `version`.
fn holds(c: &mut Conn, key: &str, version: i64) -> Result<bool> {
    let row = query_opt(c, LOAD, &[(&key, Type::TEXT)], "read back")?;
    Ok(row.map(|r| versioned(&r)).transpose()?.is_some_and(|v| v.version.as_number() == Some(version as u64)))
}

fn untyped<'a>(params: &'a Params<'a>) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|(v, _)| *v).collect()
}

fn query_opt(
    c: &mut Conn,
    sql: &'static str,
    params: &Params<'_>,
    op: &'static str,
) -> Result<Option<postgres::Row>> {
    let rows = match c.prepared(sql, op)? {
        Some(st) => c.client.query(&st, &untyped(params)),
        None => c.client.query_typed(sql, params),
    };
    Ok(rows.map_err(|e| engine_error(op, e))?.pop())
}

fn execute(c: &mut Conn, sql: &'static str, params: &Params<'_>, op: &'static str) -> Result<u64> {
    match c.prepared(sql, op)? {
        Some(st) => c.client.execute(&st, &untyped(params)),
        None => c.client.execute_typed(sql, params),
    }
    .map_err(|e| engine_error(op, e))
}

impl Store for PostgresStore {
    fn engine(&self) -> &'static str {
        "postgres"
    }

    fn load(&self, key: &str) -> Result<Option<Versioned>> {
        self.pool.with_retry(|c| {
            query_opt(c, LOAD, &[(&key, Type::TEXT)], "load")?
                .as_ref()
                .map(versioned)
                .transpose()
        })
    }

    fn save(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        self.pool.with_retry(|c| {
            let params: &Params<'_> = &[
                (&key, Type::TEXT),
                (&value, Type::BYTEA),
                (&millis(ttl), Type::FLOAT8),
                (&new_version()?, Type::INT8),
            ];
            execute(c, PUT, params, "save").map(drop)
        })
    }

    /// Run again on a new connection when its pooled one was found closed: both
    /// sends carry the same version, so a resend that finds the key holding it
    /// knows the first send wrote it.
    fn insert(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        let version = new_version()?;
        let mut sent = false;
        self.pool.with_retry(|c| {
            let params: &Params<'_> = &[
                (&key, Type::TEXT),
                (&value, Type::BYTEA),
                (&millis(ttl), Type::FLOAT8),
                (&version, Type::INT8),
            ];
            let resend = std::mem::replace(&mut sent, true);
            if execute(c, INSERT, params, "insert")? == 1 {
                return Ok(true);
            }
            Ok(resend && holds(c, key, version)?)
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
        // As insert: a resend (on a new connection, when the pooled one was found
        // closed) carries the same new version and recognizes its own write.
        let version = new_version()?;
        let mut sent = false;
        self.pool.with_retry(|c| {
            let resend = std::mem::replace(&mut sent, true);
            let n = match new {
                Some(v) => execute(
                    c,
                    CAS_SET,
                    &[
                        (&key, Type::TEXT),
                        (&v, Type::BYTEA),
                        (&millis(ttl), Type::FLOAT8),
                        (&expected, Type::INT8),
                        (&version, Type::INT8),
                    ],
                    "compare-and-set",
                )?,
                None => execute(
                    c,
                    CAS_DELETE,
                    &[(&key, Type::TEXT), (&expected, Type::INT8)],
                    "compare-and-set",
                )?,
            };
            if n == 1 || !resend {
                return Ok(n == 1);
            }
            match new {
                Some(_) => holds(c, key, version),
                // Gone: deleted by the first send, or by a later writer after it.
                None => Ok(query_opt(c, LOAD, &[(&key, Type::TEXT)], "compare-and-set")?.is_none()),
            }
        })
    }

    fn remove(&self, key: &str) -> Result<bool> {
        self.pool.with(|c| {
            let row = query_opt(c, DELETE, &[(&key, Type::TEXT)], "remove")?;
            match row {
                None => Ok(false),
                Some(r) => r.try_get::<_, bool>(0).map_err(|e| engine_error("remove", e)),
            }
        })
    }

    fn touch(&self, key: &str, ttl: Duration) -> Result<bool> {
        self.pool.with_retry(|c| {
            execute(
                c,
                TOUCH,
                &[(&key, Type::TEXT), (&millis(ttl), Type::FLOAT8)],
                "touch",
            )
            .map(|n| n == 1)
        })
    }

    /// One transaction: `SELECT ... FOR UPDATE`, the merge, the write, `COMMIT`. A
    /// failure before the `COMMIT` rolls everything back, so the call runs again
    /// on a new connection when its pooled one was found closed; a failed `COMMIT`
    /// is reported (it may have been applied).
    fn update(&self, key: &str, ttl: Duration, merge: &mut MergeFn<'_>) -> Result<Option<Vec<u8>>> {
        for _ in 0..super::MAX_ATTEMPTS {
            let attempt = |c: &mut Conn| {
                let load = c.prepared(LOAD_FOR_UPDATE, "update")?;
                let put = c.prepared(PUT, "update")?;
                let insert = c.prepared(INSERT, "update")?;
                let delete = c.prepared(CAS_DELETE, "update")?;
                let mut tx = c.client.transaction().map_err(|e| engine_error("begin", e))?;
                let key_param: &Params<'_> = &[(&key, Type::TEXT)];
                let current = match &load {
                    Some(st) => tx.query(st, &untyped(key_param)),
                    None => tx.query_typed(LOAD_FOR_UPDATE, key_param),
                }
                .map_err(|e| engine_error("update", e))?
                .pop()
                    .as_ref()
                    .map(versioned)
                    .transpose()?;
                let stored = match merge(current.as_ref().map(|v| &v.value[..]))? {
                    Merge::Keep => return Ok(Some(current.map(|v| v.value))),
                    Merge::Put(new) => {
                        let (sql, st) = if current.is_some() { (PUT, &put) } else { (INSERT, &insert) };
                        let params: &Params<'_> = &[
                            (&key, Type::TEXT),
                            (&new, Type::BYTEA),
                            (&millis(ttl), Type::FLOAT8),
                            (&new_version()?, Type::INT8),
                        ];
                        let n = match st {
                            Some(st) => tx.execute(st, &untyped(params)),
                            None => tx.execute_typed(sql, params),
                        }
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
                            let params: &Params<'_> = &[(&key, Type::TEXT), (&version, Type::INT8)];
                            match &delete {
                                Some(st) => tx.execute(st, &untyped(params)),
                                None => tx.execute_typed(CAS_DELETE, params),
                            }
                            .map_err(|e| engine_error("update", e))?;
                        }
                        None
                    }
                };
                tx.commit().map_err(|e| engine_error("commit", e))?;
                Ok(Some(stored))
            };
            // A failed COMMIT may have been applied: not run again.
            let done = self.pool.with_retry_unless(attempt, |e| {
                matches!(e, Error::Engine { op: "commit", .. })
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
        self.pool.with_retry(|c| {
            execute(c, CLEANUP, &[(&batch, Type::INT8)], "cleanup").map(|n| n as usize)
        })
    }
}
