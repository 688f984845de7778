//! Redis: `SET ... PX` (with `NX` for new keys), a Lua compare-and-set, `PEXPIRE`;
//! on one server, the master Redis Sentinel names, or a Redis Cluster.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::{Commands, ConnectionLike, RetryMethod};

use super::pool::{Pool, PoolLimits, pool_option};
use super::builder::{Parts, percent_decode};
use super::{foreign_version, redact, Store, Version, Versioned};
use crate::error::{EngineErrorKind, Error, Result};

/// Compares the stored bytes with the expected ones and, if equal, stores the new
/// value (ARGV[2] = "1") or deletes the key; atomic because Redis runs a script
/// without interleaving other commands. Returns `{1, nil}` when it wrote and
/// `{0, current}` when not (current is nil for an absent key): the async path's
/// merge retries from that value without a separate load; the sync path reads
/// only the flag.
///
/// Idempotent: a write also stores this attempt's id (ARGV[5]) under a marker key
/// (KEYS[2], in the key's hash slot) for a minute, and a call that finds the key
/// already holding what this attempt writes, under a marker that names this
/// attempt, reports that it wrote. So a call sent again after its connection
/// dropped (by the store, or by the cluster client, which resends on its own) does
/// not turn a success into a conflict that would make `update` run the merge twice.
/// The axum layer's async path sends `CAS_OR_GET` instead, once, with no marker
/// (see `AsyncRedis::cas_or_get`).
const CAS: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] then
  if KEYS[2] and redis.call('GET', KEYS[2]) == ARGV[5] then
    if (ARGV[2] == '1' and cur == ARGV[3]) or (ARGV[2] ~= '1' and not cur) then
      -- Written again, so that a WAIT after this call covers the first write.
      redis.call('SET', KEYS[2], ARGV[5], 'PX', 60000)
      return {1, false}
    end
  end
  return {0, cur}
end
if ARGV[2] == '1' then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
else
  redis.call('DEL', KEYS[1])
end
if KEYS[2] then redis.call('SET', KEYS[2], ARGV[5], 'PX', 60000) end
return {1, false}
";

/// The async path's compare-and-set: [`CAS`] without the marker, which that path
/// never sends (see `AsyncRedis::cas_or_get`), and with a leaner reply: the
/// integer 1 when it stored the new value (ARGV[2], with a TTL of ARGV[3] ms) or
/// deleted the key (no ARGV[2]), else the current value (nil for an absent key).
/// Redis runs it in 0.7–0.8× `CAS`'s time (`INFO commandstats`, in
/// BENCHMARKS.md).
#[cfg(feature = "axum")]
const CAS_OR_GET: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] then return cur end
if ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else
  redis.call('DEL', KEYS[1])
end
return 1
";

/// How long a connect, a read or a write may take before the call fails (with a
/// retryable error), unless the URL says (`timeout_ms`).
const TIMEOUT: Duration = Duration::from_secs(2);

/// A [`Store`] on Redis (feature `redis`), through the `redis` crate's sync client
/// and a pool of connections: one server, a master found through Redis Sentinel,
/// or a Redis Cluster, by URL.
///
/// | URL | what it names |
/// |---|---|
/// | `redis://[[USER]:PASSWORD@]HOST:PORT/DB` (`redis+unix://PATH`) | one server |
/// | `rediss://[[USER]:PASSWORD@]HOST:PORT/DB` | one server over TLS (feature `tls`; without it, an [`Error::Config`]) |
/// | `redis-sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT…]/SERVICE[/DB]` | the master the sentinels at those addresses monitor as SERVICE (the password is the master's) |
/// | `redis-cluster://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT…]` | a Redis Cluster, through any of those seed nodes |
///
/// Options, on every Redis URL (`?name=value&…`):
///
/// | option | default | what it does |
/// |---|---|---|
/// | `wait_replicas=N` | 0 (off) | after each write, `WAIT N`: the call succeeds only once N replicas have the write (otherwise a retryable [`Error::Engine`]; the write may or may not survive a failover, and a retry is safe) |
/// | `wait_timeout_ms=MS` | 1000 | how long that `WAIT` waits |
/// | `sentinel_password=PW` | none | the sentinels' own password (`redis-sentinel://` only) |
/// | `timeout_ms=MS` | 2000 | how long a connect, a read or a write may take before the call fails with a retryable `Timeout` |
/// | `ssl_ca_certs=PATH` | the system's roots | the CA file (PEM) a `rediss://` server's certificate must chain to (redis-py's name for it) |
/// | `pool_size=N` | 32 | connections the store keeps open at most |
/// | `pool_timeout_ms=MS` | 2000 | how long a call waits for a free connection before a retryable `Timeout` error |
///
/// - **Failover (Sentinel).** Each new connection asks the sentinels for the
///   master, and the master is asked its `ROLE`. A connection error, a timeout or a
///   `READONLY` reply (a master demoted to replica) drops that connection and every
///   idle one, and the call fails with a retryable [`Error::Engine`]; the next call
///   asks the sentinels again. So writes never keep going to a demoted master.
///   Redis replication is asynchronous: a write acknowledged just before the master
///   dies can be lost, unless `wait_replicas` is set.
/// - **Cluster.** The `redis` crate's cluster client routes each key by slot,
///   follows `MOVED`/`ASK` and refreshes its slot map after a failover or a
///   resharding. Every command and the compare-and-set script touch one key (and
///   the script's marker, in the same slot through a `{hash tag}`).
/// - Expiry: Redis's own (`PX` on every write, `PEXPIRE` for [`touch`](Store::touch)),
///   to the millisecond; TTLs are clamped to [`MAX_TTL`](super::MAX_TTL).
/// - [`insert`](Store::insert): `SET key value NX PX ttl`.
/// - Atomic merge: [`update`](Store::update) is optimistic. The version of a load is
///   the value itself, and [`compare_and_set`](Store::compare_and_set) is a Lua
///   script (`EVALSHA`) that writes only if the stored bytes are still those; a lost
///   race re-runs the merge. The script is idempotent: a compare-and-set whose
///   connection dropped is sent once more on a new connection, and reports success
///   if its first send had written (see the script's docs in the source). Tested
///   against Redis 7.0 (what Debian ships); it uses only `GET`, `SET ... NX PX`,
///   `PEXPIRE`, `DEL`, `WAIT` and `EVALSHA`/`EVAL`.
///   Comparing values means a key rewritten with identical bytes (A, then B, then A
///   again) counts as unchanged; a merge of the same bytes gives the same result, so
///   no update is lost (session records also carry the time of their last write).
/// - Values are stored as plain strings under the key as given (the session layer
///   adds `session:`), so `redis-cli GET` shows them.
pub struct RedisStore {
    pool: std::sync::Arc<Pool<Conn>>,
    cas: redis::Script,
    #[cfg(feature = "axum")]
    cas_or_get: redis::Script,
    /// `WAIT` after each write: how many replicas, for how long.
    wait: Option<(u32, u64)>,
    /// Where the store connects; named in errors.
    topology: &'static str,
    /// Connect, read and write timeout (`timeout_ms`).
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    timeout: Duration,
    /// For the axum layer's async calls (single-server URLs only): the client, and
    /// the multiplexed connection made from it on first use (inside the app's
    /// runtime).
    #[cfg(feature = "axum")]
    client: Option<redis::Client>,
    #[cfg(feature = "axum")]
    multiplexed: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("topology", &self.topology)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

fn engine_error(op: &'static str, e: redis::RedisError) -> Error {
    use redis::{ErrorKind as K, ServerErrorKind as S};
    let code = e.code();
    let kind = if e.is_timeout() {
        EngineErrorKind::Timeout
    } else if matches!(e.kind(), K::AuthenticationFailed)
        || matches!(code, Some("WRONGPASS" | "NOAUTH"))
    {
        EngineErrorKind::Auth
    } else if e.is_connection_refusal() || e.is_connection_dropped() || e.is_io_error() {
        EngineErrorKind::Unavailable
    } else {
        match e.kind() {
            K::Server(S::BusyLoading | S::TryAgain | S::ClusterDown | S::MasterDown | S::ReadOnly)
            | K::MasterNameNotFoundBySentinel
            | K::NoValidReplicasFoundBySentinel
            | K::ClusterConnectionNotFound => EngineErrorKind::Unavailable,
            // Out of memory, a failing snapshot, a busy script: the server is up
            // but takes no writes for now.
            K::Server(S::ResponseError)
                if matches!(code, Some("OOM" | "MISCONF" | "BUSY"))
                    || e.detail().is_some_and(|d| d.starts_with("max number of clients")) =>
            {
                EngineErrorKind::Unavailable
            }
            K::Server(S::NoPerm) => EngineErrorKind::Refused,
            K::Server(S::ResponseError) if matches!(code, Some("ERR")) => EngineErrorKind::Refused,
            _ => EngineErrorKind::Other,
        }
    };
    match kind {
        EngineErrorKind::Other => {
            let retryable = !matches!(e.retry_method(), RetryMethod::NoRetry);
            Error::engine("redis", op, retryable, e)
        }
        kind => Error::engine_with_kind("redis", op, kind, e),
    }
}

fn millis(ttl: Duration) -> u64 {
    (super::clamp_ttl(ttl).as_millis() as u64).max(1)
}

/// How often a Sentinel store's watcher asks every sentinel about the master.
const WATCH_EVERY: Duration = Duration::from_millis(50);

/// Keeps a Sentinel store's connections on the master the sentinels name.
///
/// A failover that kills the master shows as connection errors, and a master
/// demoted to replica answers writes with `READONLY`; both drop the connection.
/// But a forced failover (`SENTINEL FAILOVER`, an operator's switch) leaves the
/// old master up and taking writes, as a master, until the sentinels reconfigure
/// it (seen here: 15 s and more), while a replica is promoted: every write that
/// goes there meanwhile is lost when it resyncs (measured: all writes of the
/// 1–5 s the sentinels took to name the new master). So a thread per store
/// (`fscache-sentinel`) asks every sentinel `SENTINEL MASTER` every 50 ms (a
/// sentinel's own timer ticks every 100 ms, so this sees a failover start before
/// the replica is promoted):
/// - while one reports `failover_in_progress`, the pool drops its connections and
///   makes no new ones (calls fail with a retryable [`Error::Engine`]);
/// - when they name another master than the one the pool's connections go to,
///   the pool drops them all.
///
/// New connections ask a sentinel `SENTINEL get-master-addr-by-name` and check
/// the server's `ROLE`. The thread ends when the store is dropped.
struct Watch {
    sentinels: Vec<(String, u16)>,
    service: String,
    sentinel_password: Option<String>,
    /// The master the pool's connections go to (set by its connect).
    master: std::sync::Mutex<Option<(String, u16)>>,
    /// A sentinel reports a failover of the master in progress.
    failover: AtomicBool,
    /// The sentinel connection new pool connections ask.
    conn: std::sync::Mutex<Option<redis::Connection>>,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Watch {
    fn connect_sentinel(&self, host: &str, port: u16) -> Option<redis::Connection> {
        use redis::IntoConnectionInfo;
        let info = redis::ConnectionAddr::Tcp(host.to_owned(), port)
            .into_connection_info()
            .ok()?;
        let info = match &self.sentinel_password {
            Some(pw) => {
                let settings = info.redis_settings().clone().set_password(pw.clone());
                info.set_redis_settings(settings)
            }
            None => info,
        };
        let c = redis::Client::open(info)
            .ok()?
            .get_connection_with_timeout(Duration::from_millis(500))
            .ok()?;
        c.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
        c.set_write_timeout(Some(Duration::from_millis(500))).ok()?;
        Some(c)
    }

    /// The master's address as a sentinel names it (`None`: no sentinel answers).
    fn ask(&self) -> Option<(String, u16)> {
        let mut conn = lock(&self.conn);
        for _ in 0..2 {
            if conn.is_none() {
                *conn = self
                    .sentinels
                    .iter()
                    .find_map(|(host, port)| self.connect_sentinel(host, *port));
            }
            let c = conn.as_mut()?;
            match redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&self.service)
                .query::<Option<(String, u16)>>(c)
            {
                Ok(named) => return named,
                Err(_) => *conn = None,
            }
        }
        None
    }

    /// One look at every sentinel (`conns`: the watcher's connections to them).
    fn look(&self, conns: &mut [Option<redis::Connection>], pool: &Pool<Conn>) {
        let mut answered = false;
        let mut in_progress = false;
        let mut named = None;
        for ((host, port), conn) in self.sentinels.iter().zip(conns.iter_mut()) {
            if conn.is_none() {
                *conn = self.connect_sentinel(host, *port);
            }
            let Some(c) = conn.as_mut() else { continue };
            let master: std::collections::HashMap<String, String> = match redis::cmd("SENTINEL")
                .arg("MASTER")
                .arg(&self.service)
                .query(c)
            {
                Ok(m) => m,
                Err(_) => {
                    *conn = None;
                    continue;
                }
            };
            answered = true;
            let flags = master.get("flags").map_or("", String::as_str);
            in_progress |= flags.contains("failover_in_progress");
            if named.is_none()
                && let (Some(ip), Some(port)) = (master.get("ip"), master.get("port"))
                && let Ok(port) = port.parse::<u16>()
            {
                named = Some((ip.clone(), port));
            }
        }
        if !answered {
            return;
        }
        if in_progress && !self.failover.swap(true, Ordering::SeqCst) {
            log::warn!(
                "fscache: a Sentinel failover of {:?} is in progress; no writes until it ends",
                self.service
            );
            pool.invalidate();
        } else if !in_progress {
            self.failover.store(false, Ordering::SeqCst);
        }
        if let Some(named) = named {
            let mut master = lock(&self.master);
            if master.as_ref().is_some_and(|current| *current != named) {
                log::warn!(
                    "fscache: the sentinels name a new master for {:?} ({}:{}); dropping the \
                     connections to the old one",
                    self.service,
                    named.0,
                    named.1
                );
                *master = None;
                pool.invalidate();
            }
        }
    }
}

/// Starts the thread that runs [`Watch::look`] until the store is dropped.
fn spawn_watcher(watch: &std::sync::Arc<Watch>, pool: &std::sync::Arc<Pool<Conn>>) -> Result<()> {
    let (watch, pool) = (std::sync::Arc::downgrade(watch), std::sync::Arc::downgrade(pool));
    std::thread::Builder::new()
        .name("fscache-sentinel".to_owned())
        .spawn(move || {
            let mut conns = Vec::new();
            loop {
                let (Some(watch), Some(pool)) = (watch.upgrade(), pool.upgrade()) else {
                    return;
                };
                conns.resize_with(watch.sentinels.len(), || None);
                watch.look(&mut conns, &pool);
                drop((watch, pool));
                std::thread::sleep(WATCH_EVERY);
            }
        })
        .map_err(|e| Error::io("start the Sentinel watcher thread", "spawn", e))?;
    Ok(())
}

/// A pooled connection: to one server, or a cluster client's set of them.
enum Conn {
    Node(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl ConnectionLike for Conn {
    fn req_packed_command(&mut self, cmd: &[u8]) -> redis::RedisResult<redis::Value> {
        match self {
            Conn::Node(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> redis::RedisResult<Vec<redis::Value>> {
        match self {
            Conn::Node(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn req_command(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
        match self {
            Conn::Node(c) => c.req_command(cmd),
            Conn::Cluster(c) => c.req_command(cmd),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Node(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }

    fn supports_pipelining(&self) -> bool {
        match self {
            Conn::Node(c) => c.supports_pipelining(),
            Conn::Cluster(c) => c.supports_pipelining(),
        }
    }

    fn check_connection(&mut self) -> bool {
        match self {
            Conn::Node(c) => c.check_connection(),
            Conn::Cluster(c) => c.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            Conn::Node(c) => c.is_open(),
            Conn::Cluster(c) => c.is_open(),
        }
    }
}

impl Conn {
    /// `WAIT replicas timeout` on the connection (on a cluster, on the node that
    /// holds `key`) that just wrote `key`: an error unless enough replicas have it.
    fn wait(&mut self, key: &str, (replicas, timeout_ms): (u32, u64)) -> Result<()> {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(replicas).arg(timeout_ms);
        let acked: i64 = match self {
            Conn::Node(c) => cmd.query(c),
            Conn::Cluster(c) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = Route::with_key(key, SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                c.route_command(&cmd, routing)
                    .and_then(|v| redis::from_redis_value(v).map_err(Into::into))
            }
        }
        .map_err(|e| engine_error("wait", e))?;
        if acked < i64::from(replicas) {
            return Err(Error::engine_with_kind(
                "redis",
                "wait",
                EngineErrorKind::Timeout,
                format!(
                    "the write reached {acked} of the {replicas} replicas wait_replicas asks \
                     for within {timeout_ms} ms; it may be lost in a failover"
                ),
            ));
        }
        Ok(())
    }
}

/// The marker key of the compare-and-set script (see [`CAS`]): in `key`'s hash
/// slot, so the script stays single-slot on a cluster. `None` for a key with a `}`
/// and no hash tag of its own, whose slot no other name is sure to share (such
/// keys get a compare-and-set that is not idempotent).
fn marker_key(key: &str) -> Option<String> {
    let tagged = key
        .find('{')
        .and_then(|open| key[open + 1..].find('}'))
        .is_some_and(|len| len > 0);
    if tagged {
        Some(format!("{key}:cas"))
    } else if !key.contains('}') {
        Some(format!("{{{key}}}:cas"))
    } else {
        None
    }
}

/// A fresh id for one compare-and-set attempt: a per-process random seed (from the
/// standard library's randomly keyed hasher) and a counter.
fn attempt_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish()
    });
    format!("{seed:016x}{:x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// What a Redis URL's query holds for the store (the rest goes to the client).
#[derive(Default)]
struct Options {
    wait_replicas: u32,
    wait_timeout_ms: Option<u64>,
    sentinel_password: Option<String>,
    /// `ssl_ca_certs`: the CA file a `rediss://` connection trusts.
    ssl_ca_certs: Option<String>,
    /// `timeout_ms`: connect, read and write timeout.
    timeout: Option<Duration>,
    pool: PoolLimits,
}


/// The query options the redis crate itself reads (any other it would ignore).
const CLIENT_OPTIONS: [&str; 4] = ["db", "protocol", "user", "pass"];

fn config_error(url: &str, what: impl std::fmt::Display) -> Error {
    Error::Config {
        message: format!("invalid Redis URL {:?}: {what}", redact(url)),
    }
}

/// Splits `?a=b&c=d` off `url`, takes the store's own options out and returns the
/// URL with the client's options left in it.
fn split_options(url: &str) -> Result<(String, Options)> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut options = Options::default();
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        // The store's own values are percent-decoded (a builder encodes them); the
        // rest go to the redis crate as written.
        let value = &percent_decode(value);
        let number = |what: &str| -> Result<u64> {
            value.parse().map_err(|_| {
                config_error(url, format!("{what} takes a whole number, not {value:?}"))
            })
        };
        match name {
            "wait_replicas" => {
                options.wait_replicas = u32::try_from(number(name)?)
                    .map_err(|_| config_error(url, "wait_replicas is too large"))?;
            }
            "wait_timeout_ms" => options.wait_timeout_ms = Some(number(name)?),
            "sentinel_password" => options.sentinel_password = Some(value.to_owned()),
            "ssl_ca_certs" => options.ssl_ca_certs = Some(value.to_owned()),
            "timeout_ms" => match number(name)? {
                ms @ 1..=3_600_000 => options.timeout = Some(Duration::from_millis(ms)),
                _ => return Err(config_error(url, "timeout_ms takes 1 to 3600000 milliseconds")),
            },
            _ if pool_option(&mut options.pool, name, value).map_err(|m| config_error(url, m))? => {}
            _ if CLIENT_OPTIONS.contains(&name) => rest.push(pair),
            // The redis crate ignores what it does not read: a misspelt
            // `wait_replica=1` would silently write without waiting.
            _ => {
                return Err(config_error(
                    url,
                    format!(
                        "has the unknown option {name:?} (fscache's: wait_replicas, \
                         wait_timeout_ms, sentinel_password, ssl_ca_certs, timeout_ms, \
                         pool_size, pool_timeout_ms; the redis crate's: {})",
                        CLIENT_OPTIONS.join(", ")
                    ),
                ));
            }
        }
    }
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, options))
}

/// The parts of a `redis-sentinel://` or `redis-cluster://` URL: credentials, the
/// `HOST:PORT` list and the path.
struct Hosts {
    username: Option<String>,
    password: Option<String>,
    addrs: Vec<(String, u16)>,
    path: String,
}

fn parse_hosts(url: &str, rest: &str) -> Result<Hosts> {
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => match u.split_once(':') {
            // Percent-decoded, as the redis crate decodes a redis:// URL's.
            Some((user, pw)) => (
                (!user.is_empty()).then(|| percent_decode(user)),
                Some(percent_decode(pw)),
            ),
            None => ((!u.is_empty()).then(|| percent_decode(u)), None),
        },
    };
    let mut addrs = Vec::new();
    for host in hosts.split(',') {
        let (h, port) = host
            .rsplit_once(':')
            .ok_or_else(|| config_error(url, format!("{host:?} is not HOST:PORT")))?;
        let port = port
            .parse()
            .map_err(|_| config_error(url, format!("{host:?} has no valid port")))?;
        if h.is_empty() {
            return Err(config_error(url, format!("{host:?} names no host")));
        }
        addrs.push((h.trim_matches(['[', ']']).to_owned(), port));
    }
    Ok(Hosts {
        username,
        password,
        addrs,
        path: path.to_owned(),
    })
}

/// The client of a single-server URL: `rediss://` with TLS (feature `tls`),
/// trusting `ssl_ca_certs` or the system's roots.
fn node_client(url: &str, scheme: &str, client_url: &str, options: &Options) -> Result<redis::Client> {
    if scheme != "rediss" {
        return redis::Client::open(client_url).map_err(|e| config_error(url, e));
    }
    #[cfg(feature = "tls")]
    {
        super::tls::provider();
        let root_cert = match &options.ssl_ca_certs {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| config_error(url, format!("cannot read ssl_ca_certs {path:?}: {e}")))?;
                // Checked here, so a bad file is a Config error at open, not a
                // connection error at each call.
                super::tls::roots(Some(std::path::Path::new(path))).map_err(|e| config_error(url, e))?;
                Some(pem)
            }
            None => None,
        };
        redis::Client::build_with_tls(
            client_url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert,
            },
        )
        .map_err(|e| config_error(url, e))
    }
    #[cfg(not(feature = "tls"))]
    {
        let _ = options;
        Err(config_error(
            url,
            "rediss:// needs TLS: build fscache with the cargo feature \"tls\"",
        ))
    }
}

/// Connects through one client with the store's timeouts.
fn connect_node(client: &redis::Client, timeout: Duration) -> Result<redis::Connection> {
    let conn = client
        .get_connection_with_timeout(timeout)
        .map_err(|e| engine_error("connect", e))?;
    conn.set_read_timeout(Some(timeout))
        .and_then(|()| conn.set_write_timeout(Some(timeout)))
        .map_err(|e| engine_error("connect", e))?;
    Ok(conn)
}

/// A [`RedisStore`] with its settings made in code rather than in the URL: from
/// [`RedisStore::builder`]. Each setter is an option of the URL (the README's
/// table); a setting here wins over the URL's. `Debug` never shows a password.
///
/// ```no_run
/// # fn main() -> fscache::Result<()> {
/// use std::time::Duration;
/// use fscache::store::RedisStore;
/// let password = std::env::var("REDIS_PASSWORD").unwrap_or_default();
/// let store = RedisStore::builder("redis-sentinel://10.0.0.1:26379,10.0.0.2:26379/main")
///     .password(&password)
///     .pool_size(16)
///     .pool_timeout(Duration::from_millis(500))
///     .wait_replicas(1)
///     .open()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct RedisStoreBuilder {
    parts: Parts,
}

impl RedisStoreBuilder {
    /// The ACL user (Redis 6+; the URL's otherwise).
    pub fn username(mut self, user: &str) -> Self {
        self.parts.username(user);
        self
    }

    /// The password (of the master, for Sentinel), kept out of the URL you write.
    pub fn password(mut self, password: &str) -> Self {
        self.parts.password(password);
        self
    }

    /// The sentinels' own password (`sentinel_password`).
    pub fn sentinel_password(mut self, password: &str) -> Self {
        self.parts.set("sentinel_password", password);
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

    /// How long a connect, a read or a write may take (`timeout_ms`; default 2 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.parts.set_millis("timeout_ms", timeout);
        self
    }

    /// After each write, wait until `n` replicas have it (`wait_replicas`).
    pub fn wait_replicas(mut self, n: u32) -> Self {
        self.parts.set("wait_replicas", n);
        self
    }

    /// How long that wait may take (`wait_timeout_ms`; default 1 s).
    pub fn wait_timeout(mut self, wait: Duration) -> Self {
        self.parts.set_millis("wait_timeout_ms", wait);
        self
    }

    /// The CA file (PEM) a `rediss://` server's certificate must chain to
    /// (`ssl_ca_certs`; feature `tls`).
    pub fn ssl_ca_certs(mut self, path: impl AsRef<std::path::Path>) -> Self {
        self.parts.set_path("ssl_ca_certs", path.as_ref());
        self
    }

    /// Opens the store, as [`RedisStore::open`] with the composed URL.
    ///
    /// # Errors
    /// As [`RedisStore::open`].
    pub fn open(self) -> Result<RedisStore> {
        RedisStore::open(&self.parts.url())
    }
}

impl RedisStore {
    /// The [`CAS`] script's call: replace `expected` under `key` with `new` (or
    /// delete the key when `new` is `None`), for `ttl`, as attempt `attempt` (the
    /// id the marker holds, which makes sending it again safe).
    fn cas_call(
        &self,
        key: &str,
        expected: &[u8],
        new: Option<&[u8]>,
        ttl: Duration,
        attempt: &str,
    ) -> redis::ScriptInvocation<'_> {
        let mut call = self.cas.key(key);
        if let Some(marker) = marker_key(key) {
            call.key(marker);
        }
        call.arg(expected);
        match new {
            Some(v) => call.arg("1").arg(v).arg(millis(ttl)),
            None => call.arg("0").arg("").arg(0),
        };
        call.arg(attempt);
        call
    }

    /// A builder for a store on what `url` names (any URL of the table above), to
    /// set the pool, replication wait, TLS and passwords in code.
    pub fn builder(url: &str) -> RedisStoreBuilder {
        RedisStoreBuilder {
            parts: Parts::new(url),
        }
    }

    /// Connects to the Redis server, the Sentinel-monitored master or the Redis
    /// Cluster a URL names (the table above) and checks it answers.
    ///
    /// # Errors
    /// [`Error::Config`] for a malformed URL or option (the message never shows
    /// the URL's password); a retryable [`Error::Engine`] when the server does not
    /// answer.
    pub fn open(url: &str) -> Result<RedisStore> {
        let (client_url, options) = split_options(url)?;
        let timeout = options.timeout.unwrap_or(TIMEOUT);
        let wait = (options.wait_replicas > 0)
            .then(|| (options.wait_replicas, options.wait_timeout_ms.unwrap_or(1000)));
        let (scheme, rest) = client_url.split_once("://").unwrap_or(("", ""));
        if options.ssl_ca_certs.is_some() && scheme != "rediss" {
            return Err(config_error(
                url,
                "ssl_ca_certs is for rediss:// (TLS to one server); Sentinel and Cluster URLs have no TLS form yet",
            ));
        }
        #[cfg(feature = "axum")]
        let mut async_client = None;
        let mut watch = None;
        let (topology, pool): (&'static str, Pool<Conn>) = match scheme {
            "redis-sentinel" => {
                let (pool, w) = Self::sentinel_pool(url, rest, &options)?;
                watch = Some(w);
                ("sentinel", pool)
            }
            "redis-cluster" => ("cluster", Self::cluster_pool(url, rest, options.pool, timeout)?),
            _ => {
                let client = node_client(url, scheme, &client_url, &options)?;
                // The async path has no TLS (the redis crate's async TLS would add
                // tokio-rustls); a rediss:// store takes the blocking path.
                #[cfg(feature = "axum")]
                if scheme != "rediss" {
                    async_client = Some(client.clone());
                }
                let pool = Pool::new("redis", options.pool, move || connect_node(&client, timeout).map(Conn::Node));
                ("node", pool)
            }
        };
        let pool = std::sync::Arc::new(pool);
        if let Some(watch) = &watch {
            spawn_watcher(watch, &pool)?;
        }
        let store = RedisStore {
            pool,
            cas: redis::Script::new(CAS),
            #[cfg(feature = "axum")]
            cas_or_get: redis::Script::new(CAS_OR_GET),
            wait,
            topology,
            timeout,
            #[cfg(feature = "axum")]
            client: async_client,
            #[cfg(feature = "axum")]
            multiplexed: tokio::sync::OnceCell::new(),
        };
        store.pool.with(|c| {
            redis::cmd("PING")
                .query::<()>(c)
                .map_err(|e| engine_error("ping", e))
        })?;
        Ok(store)
    }

    fn sentinel_pool(
        url: &str,
        rest: &str,
        options: &Options,
    ) -> Result<(Pool<Conn>, std::sync::Arc<Watch>)> {
        let timeout = options.timeout.unwrap_or(TIMEOUT);
        let hosts = parse_hosts(url, rest)?;
        let mut path = hosts.path.split('/').filter(|p| !p.is_empty());
        let service = path
            .next()
            .ok_or_else(|| config_error(url, "names no service (redis-sentinel://HOST:PORT/SERVICE)"))?;
        let db = match path.next() {
            Some(db) => db
                .parse::<i64>()
                .map_err(|_| config_error(url, format!("the database {db:?} is not a number")))?,
            None => 0,
        };
        let watch = std::sync::Arc::new(Watch {
            sentinels: hosts.addrs.clone(),
            service: service.to_owned(),
            sentinel_password: options.sentinel_password.clone(),
            master: std::sync::Mutex::new(None),
            failover: AtomicBool::new(false),
            conn: std::sync::Mutex::new(None),
        });
        let mut settings = redis::RedisConnectionInfo::default().set_db(db);
        if let Some(user) = &hosts.username {
            settings = settings.set_username(user);
        }
        if let Some(pw) = &hosts.password {
            settings = settings.set_password(pw);
        }
        let asker = watch.clone();
        let pool = Pool::new("redis", options.pool, move || {
            // Asked for every new connection: after a failover the pool has dropped
            // its connections, and the next one goes to the promoted master.
            if asker.failover.load(Ordering::SeqCst) {
                return Err(Error::engine(
                    "redis",
                    "connect",
                    true,
                    "a Sentinel failover of the master is in progress",
                ));
            }
            let (host, port) = asker.ask().ok_or_else(|| {
                Error::engine(
                    "redis",
                    "find the master",
                    true,
                    "no sentinel answered with the master's address",
                )
            })?;
            let info = redis::IntoConnectionInfo::into_connection_info(
                redis::ConnectionAddr::Tcp(host.clone(), port),
            )
            .map_err(|e| engine_error("connect", e))?
            .set_redis_settings(settings.clone());
            let client = redis::Client::open(info).map_err(|e| engine_error("connect", e))?;
            let mut conn = connect_node(&client, timeout)?;
            let role: redis::Value = redis::cmd("ROLE")
                .query(&mut conn)
                .map_err(|e| engine_error("connect", e))?;
            let is_master = matches!(&role, redis::Value::Array(items)
                if matches!(items.first(), Some(redis::Value::BulkString(b)) if b == b"master"));
            if !is_master {
                return Err(Error::engine(
                    "redis",
                    "connect",
                    true,
                    "the sentinels named a server that is not a master (a failover in progress)",
                ));
            }
            *lock(&asker.master) = Some((host, port));
            Ok(Conn::Node(conn))
        });
        Ok((pool, watch))
    }

    fn cluster_pool(url: &str, rest: &str, limits: PoolLimits, timeout: Duration) -> Result<Pool<Conn>> {
        let hosts = parse_hosts(url, rest)?;
        if !hosts.path.is_empty() {
            return Err(config_error(
                url,
                "has a path; a Redis Cluster has only database 0 (redis-cluster://HOST:PORT,…)",
            ));
        }
        let nodes: Vec<String> = hosts
            .addrs
            .iter()
            .map(|(h, p)| format!("redis://{h}:{p}"))
            .collect();
        let mut builder = redis::cluster::ClusterClient::builder(nodes)
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(3);
        if let Some(user) = &hosts.username {
            builder = builder.username(user);
        }
        if let Some(pw) = &hosts.password {
            builder = builder.password(pw);
        }
        let client = builder.build().map_err(|e| config_error(url, e))?;
        Ok(Pool::new("redis", limits, move || {
            let conn = client
                .get_connection()
                .map_err(|e| engine_error("connect", e))?;
            Ok(Conn::Cluster(Box::new(conn)))
        }))
    }

    /// Whether the axum layer can take the async path: a single-server URL
    /// without `wait_replicas` (the async path has no `WAIT`: on its one
    /// multiplexed connection a `WAIT` would hold every request's commands behind
    /// it, so those stores take the sync client, whose pooled connections each
    /// wait for their own writes).
    #[cfg(feature = "axum")]
    pub(crate) fn has_async_client(&self) -> bool {
        self.client.is_some() && self.wait.is_none()
    }

    /// Runs a write on a pooled connection, then `WAIT`s if the URL asked for it.
    fn write<R>(&self, key: &str, f: impl FnOnce(&mut Conn) -> Result<R>) -> Result<R> {
        self.pool.with(|c| {
            let r = f(c)?;
            if let Some(wait) = self.wait {
                c.wait(key, wait)?;
            }
            Ok(r)
        })
    }

    /// [`write`](RedisStore::write) for a write that is safe to send twice (a `SET`
    /// of the same value, a `PEXPIRE`): retried once on a new connection when its
    /// pooled connection turns out to be gone.
    fn write_again<R>(&self, key: &str, mut f: impl FnMut(&mut Conn) -> Result<R>) -> Result<R> {
        self.pool.with_retry(|c| {
            let r = f(c)?;
            if let Some(wait) = self.wait {
                c.wait(key, wait)?;
            }
            Ok(r)
        })
    }
}

impl Store for RedisStore {
    fn engine(&self) -> &'static str {
        "redis"
    }

    fn load(&self, key: &str) -> Result<Option<Versioned>> {
        let value: Option<Vec<u8>> = self
            .pool
            .with_retry(|c| c.get(key).map_err(|e| engine_error("load", e)))?;
        Ok(value.map(|value| Versioned {
            version: Version::from_bytes(&value),
            value,
        }))
    }

    fn save(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        self.write_again(key, |c| {
            c.pset_ex(key, value, millis(ttl))
                .map_err(|e| engine_error("save", e))
        })
    }

    fn insert(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        self.write(key, |c| {
            let set: Option<String> = redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("NX")
                .arg("PX")
                .arg(millis(ttl))
                .query(c)
                .map_err(|e| engine_error("insert", e))?;
            Ok(set.is_some())
        })
    }

    /// One `SET key value XX PX ttl`: stored only over a live value.
    fn replace(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        self.write(key, |c| {
            let set: Option<String> = redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("XX")
                .arg("PX")
                .arg(millis(ttl))
                .query(c)
                .map_err(|e| engine_error("replace", e))?;
            Ok(set.is_some())
        })
    }

    /// The compare-and-set Lua script. When its connection drops (an I/O error or a timeout:
    /// the script may or may not have run), the same attempt is sent once more on
    /// a new connection, and the script's marker makes that safe.
    fn compare_and_set(
        &self,
        key: &str,
        expected: &Version,
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<bool> {
        let Some(expected) = expected.as_bytes() else {
            return Err(foreign_version(key));
        };
        let attempt = attempt_id();
        let call = self.cas_call(key, expected, new, ttl, &attempt);
        let dropped = std::cell::Cell::new(false);
        let send = |c: &mut Conn| {
            let (won, _): (i64, Option<Vec<u8>>) = call.invoke(c).map_err(|e| {
                dropped.set(e.is_io_error() || e.is_timeout() || e.is_connection_dropped());
                engine_error("compare-and-set", e)
            })?;
            Ok(won == 1)
        };
        match self.write(key, send) {
            // The pool dropped that connection: this goes out on a new one.
            Err(_) if dropped.get() && marker_key(key).is_some() => self.write(key, send),
            result => result,
        }
    }

    fn remove(&self, key: &str) -> Result<bool> {
        self.write(key, |c| {
            let n: i64 = c.del(key).map_err(|e| engine_error("remove", e))?;
            Ok(n > 0)
        })
    }

    fn touch(&self, key: &str, ttl: Duration) -> Result<bool> {
        self.write_again(key, |c| {
            let n: bool = c
                .pexpire(key, millis(ttl) as i64)
                .map_err(|e| engine_error("touch", e))?;
            Ok(n)
        })
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

/// The axum layer's path to Redis: the redis crate's [`ConnectionManager`], one
/// multiplexed connection shared by all requests (commands of concurrent requests
/// are pipelined on it, and it reconnects after the connection drops), awaited on
/// the request's own task. The commands and the compare-and-set script are the
/// sync store's, so the two paths work on the same records.
///
/// Made per save, with what the caller knows a key holds (the layer passes what
/// the previous save of the session in this process wrote, under the session's
/// turn). Knowledge only saves round trips, never decides an outcome: every
/// write is a compare-and-set against the value it replaces.
/// - A compare-and-set whose expected value is not what is known to be stored
///   reports a loss without asking Redis (the session logic then merges).
/// - The merge starts from the known value instead of loading it.
/// - A compare-and-set that loses learns the current value (the script returns
///   it) for the next attempt.
///
/// So a save that raced another save of this process costs one round trip, and
/// one that raced another process two or three.
///
/// [`ConnectionManager`]: redis::aio::ConnectionManager
#[cfg(feature = "axum")]
pub(crate) struct AsyncRedis<'a> {
    store: &'a RedisStore,
    /// A key and what it is known to hold (`None`: absent).
    known: std::sync::Mutex<Option<Known>>,
}

/// A key and what it was last seen or written to hold (`None`: absent).
#[cfg(feature = "axum")]
pub(crate) type Known = (String, Option<Vec<u8>>);

#[cfg(feature = "axum")]
impl<'a> AsyncRedis<'a> {
    pub(crate) fn new(store: &'a RedisStore, known: Option<Known>) -> Self {
        AsyncRedis {
            store,
            known: std::sync::Mutex::new(known),
        }
    }

    /// What is known after the calls made through this value.
    pub(crate) fn into_known(self) -> Option<Known> {
        self.known
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Option<Known>> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What `key` is known to hold, if anything is known.
    fn known_value(&self, key: &str) -> Option<Option<Vec<u8>>> {
        self.known()
            .as_ref()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    fn learn(&self, key: &str, value: Option<Vec<u8>>) {
        *self.known() = Some((key.to_owned(), value));
    }

    /// The compare-and-set script that returns the current value when it loses:
    /// `Ok(None)` when it wrote, `Ok(Some(current))` when not.
    ///
    /// Sent once, without the script's marker: the connection manager never sends
    /// a command again, so the marker would never be read. A save that fails
    /// here is retried by the layer as a new save, and the session record's save
    /// ids (not this call) keep that retry from applying its changes twice.
    async fn cas_or_get(
        &self,
        key: &str,
        expected: &[u8],
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<Option<Option<Vec<u8>>>> {
        let mut call = self.store.cas_or_get.key(key);
        call.arg(expected);
        if let Some(v) = new {
            call.arg(v).arg(millis(ttl));
        }
        let reply: redis::Value = call
            .invoke_async(&mut self.conn().await?)
            .await
            .map_err(|e| engine_error("compare-and-set", e))?;
        match reply {
            redis::Value::Int(1) => Ok(None),
            redis::Value::Nil => Ok(Some(None)),
            redis::Value::BulkString(current) => Ok(Some(Some(current))),
            // (Not shown: a reply may hold a session's data.)
            _ => Err(Error::engine(
                "redis",
                "compare-and-set",
                false,
                "the compare-and-set script answered neither 1 nor a value",
            )),
        }
    }

    async fn conn(&self) -> Result<redis::aio::ConnectionManager> {
        let manager = self
            .store
            .multiplexed
            .get_or_try_init(|| async {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.store.timeout))
                    .set_response_timeout(Some(self.store.timeout))
                    .set_number_of_retries(2);
                let client = self.store.client.clone().ok_or_else(|| {
                    Error::engine(
                        "redis",
                        "connect",
                        false,
                        "the async path takes single-server Redis URLs only",
                    )
                })?;
                redis::aio::ConnectionManager::new_with_config(client, config)
                    .await
                    .map_err(|e| engine_error("connect", e))
            })
            .await?;
        Ok(manager.clone())
    }

    async fn set(&self, op: &'static str, cmd: &redis::Cmd) -> Result<bool> {
        let set: Option<String> = cmd
            .query_async(&mut self.conn().await?)
            .await
            .map_err(|e| engine_error(op, e))?;
        Ok(set.is_some())
    }
}

#[cfg(feature = "axum")]
impl crate::store::calls::Calls for AsyncRedis<'_> {
    fn engine(&self) -> &'static str {
        "redis"
    }

    async fn load(&self, key: &str) -> Result<Option<Versioned>> {
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.conn().await?)
            .await
            .map_err(|e| engine_error("load", e))?;
        Ok(value.map(|value| Versioned {
            version: Version::from_bytes(&value),
            value,
        }))
    }

    async fn insert(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("NX").arg("PX").arg(millis(ttl));
        self.set("insert", &cmd).await
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: &Version,
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<bool> {
        let Some(expected) = expected.as_bytes() else {
            return Err(foreign_version(key));
        };
        if let Some(known) = self.known_value(key)
            && known.as_deref() != Some(expected)
        {
            // Written since `expected` was read (by this process): this would lose.
            return Ok(false);
        }
        match self.cas_or_get(key, expected, new, ttl).await? {
            None => {
                self.learn(key, new.map(<[u8]>::to_vec));
                Ok(true)
            }
            Some(found) => {
                self.learn(key, found);
                Ok(false)
            }
        }
    }

    async fn remove(&self, key: &str) -> Result<bool> {
        let n: i64 = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut self.conn().await?)
            .await
            .map_err(|e| engine_error("remove", e))?;
        self.learn(key, None);
        Ok(n > 0)
    }

    async fn touch(&self, key: &str, ttl: Duration) -> Result<bool> {
        let n: bool = redis::cmd("PEXPIRE")
            .arg(key)
            .arg(millis(ttl))
            .query_async(&mut self.conn().await?)
            .await
            .map_err(|e| engine_error("touch", e))?;
        Ok(n)
    }

    async fn update(
        &self,
        key: &str,
        ttl: Duration,
        merge: &mut crate::store::calls::SendMergeFn<'_>,
    ) -> Result<Option<Vec<u8>>> {
        use crate::store::{MAX_ATTEMPTS, Merge};
        let mut current = match self.known_value(key) {
            Some(known) => known,
            None => self.load(key).await?.map(|v| v.value),
        };
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                crate::store::calls::backoff(attempt).await;
            }
            let decision = merge(current.as_deref())?;
            let (expected, new) = match (decision, current) {
                (Merge::Keep, current) => return Ok(current),
                (Merge::Delete, None) => return Ok(None),
                (Merge::Delete, Some(cur)) => (cur, None),
                (Merge::Put(new), None) => {
                    if self.insert(key, &new, ttl).await? {
                        self.learn(key, Some(new.clone()));
                        return Ok(Some(new));
                    }
                    current = self.load(key).await?.map(|v| v.value);
                    continue;
                }
                (Merge::Put(new), Some(cur)) => (cur, Some(new)),
            };
            match self.cas_or_get(key, &expected, new.as_deref(), ttl).await? {
                None => {
                    self.learn(key, new.clone());
                    return Ok(new);
                }
                Some(found) => current = found,
            }
        }
        Err(Error::Conflict {
            key: key.to_owned(),
            attempts: MAX_ATTEMPTS,
        })
    }
}
