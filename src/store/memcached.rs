//! Memcached: `add` for new keys, `gets`/`cas` for merges, `touch`.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use memcache::{Client, CommandError, ConnectionManager, MemcacheError, Url};

use super::pool::{Pool, PoolLimits, pool_option};
use super::{Store, Version, Versioned, foreign_version};
use crate::error::{EngineErrorKind, Error, Result};
use crate::hooks::Point;

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
/// - [`insert`](Store::insert): `add`; over a deletion's tombstone, `cas` (and `add`
///   again if the tombstone expired in between).
/// - Atomic merge: [`update`](Store::update) is optimistic: `gets` returns the CAS
///   id, and `cas` writes only if nothing wrote the key since. Memcached has no
///   conditional delete, so a merge that deletes writes an empty value with a
///   1-second expiry instead, which reads as absent (so does any empty value: this
///   store cannot hold one; session records are never empty).
/// - Keys memcached cannot take (over 250 bytes, or with spaces or control
///   characters) are stored under `fscache:` and the blake3 hash of the key.
///
/// **A pool of servers** (`memcache://HOST:PORT,HOST:PORT,…`): each key lives on
/// one server, chosen by rendezvous (highest random weight) hashing exactly as
/// pymemcache's `HashClient` chooses (what Flask-Session's memcached sessions
/// use): the server named `HOST:PORT` whose MurmurHash3 (32-bit, seed 0) of
/// `"HOST:PORT-KEY"` is highest, the greater name on a tie. So a Rust service and
/// a Flask app given the same server list (same spelling, e.g. `127.0.0.1:11211`)
/// find each key on the same server, and adding or removing a server moves only
/// the keys that go to or came from it (about 1/n). A server that is down makes
/// its keys fail with a retryable error; they are not moved elsewhere (that would
/// make a second, divergent copy when it comes back).
pub struct MemcachedStore {
    /// `HOST:PORT` (the name hashed) and a connection pool, per server.
    servers: Vec<(String, Pool<Client>)>,
}

/// MurmurHash3's x86 32-bit variant, as pymemcache computes it (on the key's
/// characters, which are bytes for the ASCII keys memcached takes).
pub(crate) fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h1 = seed;
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k1 = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k1 = k1.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h1 ^= k1;
        h1 = h1.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let mut k1 = 0u32;
        for (i, b) in tail.iter().enumerate() {
            k1 |= u32::from(*b) << (8 * i);
        }
        h1 ^= k1.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    }
    h1 ^= data.len() as u32;
    h1 ^= h1 >> 16;
    h1 = h1.wrapping_mul(0x85eb_ca6b);
    h1 ^= h1 >> 13;
    h1 = h1.wrapping_mul(0xc2b2_ae35);
    h1 ^= h1 >> 16;
    h1
}

/// The index of the server `key` lives on among `names` (rendezvous hashing, as
/// pymemcache's `RendezvousHash`).
pub(crate) fn pick_server<S: AsRef<str>>(names: &[S], key: &str) -> usize {
    let mut best: Option<(u32, usize)> = None;
    for (i, name) in names.iter().enumerate() {
        let name = name.as_ref();
        let score = murmur3_32(format!("{name}-{key}").as_bytes(), 0);
        best = match best {
            Some((top, j)) if score < top || (score == top && names[j].as_ref() >= name) => {
                Some((top, j))
            }
            _ => Some((score, i)),
        };
    }
    best.map_or(0, |(_, i)| i)
}

impl std::fmt::Debug for MemcachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemcachedStore").finish_non_exhaustive()
    }
}

fn engine_error(op: &'static str, e: MemcacheError) -> Error {
    let kind = match &e {
        MemcacheError::IOError(io)
            if matches!(io.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) =>
        {
            EngineErrorKind::Timeout
        }
        MemcacheError::IOError(_) => EngineErrorKind::Unavailable,
        // r2d2 found no connection within its timeout.
        MemcacheError::PoolError(_) => EngineErrorKind::Timeout,
        MemcacheError::ServerError(_) | MemcacheError::CommandError(_) => EngineErrorKind::Refused,
        _ => return Error::engine("memcached", op, false, e),
    };
    Error::engine_with_kind("memcached", op, kind, e)
}

/// Memcached's expiration argument for `ttl`.
fn expiration(ttl: Duration) -> u32 {
    let ttl = super::clamp_ttl(ttl);
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

/// The one scheduler thread every memcached connection's r2d2 pool shares (r2d2
/// starts 3 threads per pool otherwise, and this store keeps a pool per
/// connection).
fn scheduler() -> std::sync::Arc<scheduled_thread_pool::ScheduledThreadPool> {
    static SCHEDULER: std::sync::OnceLock<std::sync::Arc<scheduled_thread_pool::ScheduledThreadPool>> =
        std::sync::OnceLock::new();
    SCHEDULER
        .get_or_init(|| {
            std::sync::Arc::new(
                scheduled_thread_pool::ScheduledThreadPool::builder()
                    .num_threads(1)
                    .thread_name_pattern("fscache-memcache-{}")
                    .build(),
            )
        })
        .clone()
}

/// Connects to `addr` (`HOST:PORT`) and closes the connection: whether a server
/// takes connections there now.
fn probe(addr: &str) -> Result<()> {
    use std::net::ToSocketAddrs;
    let unavailable = |e: std::io::Error| {
        let kind = if e.kind() == std::io::ErrorKind::TimedOut {
            EngineErrorKind::Timeout
        } else {
            EngineErrorKind::Unavailable
        };
        Error::engine_with_kind("memcached", "connect", kind, e)
    };
    let mut last = None;
    for a in addr.to_socket_addrs().map_err(unavailable)? {
        match std::net::TcpStream::connect_timeout(&a, TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(unavailable(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, format!("{addr} resolves to no address"))
    })))
}

/// The key as memcached gets it.
fn wire_key(key: &str) -> std::borrow::Cow<'_, str> {
    if key.len() <= MAX_KEY && key.bytes().all(|b| b > b' ' && b != 0x7f) {
        key.into()
    } else {
        format!("fscache:{}", blake3::hash(key.as_bytes()).to_hex()).into()
    }
}

/// A [`MemcachedStore`] with its pool set in code rather than in the URL: from
/// [`MemcachedStore::builder`]; a setting here wins over the URL's.
///
/// ```no_run
/// # fn main() -> fscache::Result<()> {
/// use std::time::Duration;
/// let store = fscache::store::MemcachedStore::builder("memcache://10.0.0.1:11211,10.0.0.2:11211")
///     .pool_size(8)
///     .pool_timeout(Duration::from_millis(300))
///     .open()?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct MemcachedStoreBuilder {
    parts: super::builder::Parts,
}

impl MemcachedStoreBuilder {
    /// At most this many connections per server (`pool_size`; default 32).
    pub fn pool_size(mut self, n: usize) -> Self {
        self.parts.set("pool_size", n);
        self
    }

    /// How long a call waits for a free connection (`pool_timeout_ms`; default 2 s).
    pub fn pool_timeout(mut self, wait: Duration) -> Self {
        self.parts.set_millis("pool_timeout_ms", wait);
        self
    }

    /// How long a read or a write may take (the `memcache` crate's `timeout`, in
    /// seconds; default 2 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.parts.set("timeout", timeout.as_secs_f64());
        self
    }

    /// Opens the store, as [`MemcachedStore::open`] with the composed URL.
    ///
    /// # Errors
    /// As [`MemcachedStore::open`].
    pub fn open(self) -> Result<MemcachedStore> {
        MemcachedStore::open(&self.parts.url())
    }
}

impl MemcachedStore {
    /// A builder for a store on the servers `url` names.
    pub fn builder(url: &str) -> MemcachedStoreBuilder {
        MemcachedStoreBuilder {
            parts: super::builder::Parts::new(url),
        }
    }
}

impl MemcachedStore {
    /// Connects to the server or servers a `memcache://HOST:PORT[,HOST:PORT…]` URL
    /// names (`memcached://` too) and checks each answers.
    ///
    /// # Errors
    /// [`Error::Config`] for a malformed URL; a retryable [`Error::Engine`] when the
    /// server does not answer.
    pub fn open(url: &str) -> Result<MemcachedStore> {
        let config = |what: String| Error::Config {
            message: format!("invalid Memcached URL {:?}: {what}", super::redact(url)),
        };
        let rest = url
            .strip_prefix("memcache://")
            .or_else(|| url.strip_prefix("memcached://"))
            .ok_or_else(|| config("expected memcache://HOST:PORT[,HOST:PORT…]".into()))?;
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let hosts = hosts.trim_end_matches('/');
        if hosts.contains('@') {
            return Err(config(
                "memcached takes no user or password (the URL is HOST:PORT[,HOST:PORT…])".into(),
            ));
        }
        let mut limits = PoolLimits::default();
        let mut client_query = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !pool_option(&mut limits, name, value).map_err(config)? {
                client_query.push(pair);
            }
        }
        let mut query = client_query.join("&");
        if !query.split('&').any(|p| p.starts_with("timeout=")) {
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str(&format!("timeout={}", TIMEOUT.as_secs_f64()));
        }
        let mut servers = Vec::new();
        for host in hosts.split(',') {
            if host.rsplit_once(':').and_then(|(h, p)| (!h.is_empty()).then_some(p)).is_none_or(|p| p.parse::<u16>().is_err()) {
                return Err(config(format!("{host:?} is not HOST:PORT")));
            }
            if servers.iter().any(|(name, _)| name == host) {
                return Err(config(format!("{host:?} is named twice")));
            }
            let parsed = Url::parse(&format!("memcache://{host}?{query}"))
                .map_err(|e| config(e.to_string()))?;
            // One connection per client: this pool (not r2d2's) decides when a
            // connection is dropped, and r2d2 does not ping on every checkout.
            let addr = host.to_owned();
            let pool = Pool::new("memcached", limits, move || {
                // r2d2 keeps retrying a refused connect until its timeout (2 s a
                // call while a server is down): one plain connect first fails at
                // once instead. The probe is closed; r2d2 then connects for real.
                probe(&addr)?;
                let manager = ConnectionManager::new(parsed.clone());
                let single = r2d2::Pool::builder()
                    .thread_pool(scheduler())
                    .max_size(1)
                    .min_idle(Some(0))
                    .test_on_check_out(false)
                    .connection_timeout(TIMEOUT)
                    .build_unchecked(manager);
                Client::with_pool(single).map_err(|e| engine_error("connect", e))
            });
            servers.push((host.to_owned(), pool));
        }
        let store = MemcachedStore { servers };
        for (_, pool) in &store.servers {
            pool.with(|c| c.version().map(drop).map_err(|e| engine_error("version", e)))?;
        }
        Ok(store)
    }

    /// The pool of the server that holds `wire` (a key as memcached gets it).
    fn pool(&self, wire: &str) -> &Pool<Client> {
        let i = if self.servers.len() == 1 {
            0
        } else {
            let names: Vec<&str> = self.servers.iter().map(|(n, _)| n.as_str()).collect();
            pick_server(&names, wire)
        };
        &self.servers[i].1
    }
}

impl Store for MemcachedStore {
    fn engine(&self) -> &'static str {
        "memcached"
    }

    fn load(&self, key: &str) -> Result<Option<Versioned>> {
        let key = wire_key(key);
        let got: Option<(Vec<u8>, u32, Option<u64>)> = self
            .pool(&key)
            .with_retry(|c| c.get(&key).map_err(|e| engine_error("load", e)))?;
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
        self.pool(&key).with_retry(|c| {
            c.set(&key, value, expiration(ttl))
                .map_err(|e| engine_error("save", e))
        })
    }

    /// `add`; when that finds the key taken by a deletion's tombstone, `cas` over
    /// the tombstone. A tombstone expires within a second, so it can vanish between
    /// the read and the `cas`: then the next round's `add` takes the key. Each round
    /// ends on a live value (`false`), a write of ours (`true`) or another change to
    /// the key; after 4 such changes the call fails with a retryable
    /// conflict (nothing of ours was written).
    fn insert(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        let wire = wire_key(key);
        for _ in 0..INSERT_ROUNDS {
            if self.add(&wire, value, ttl)? {
                return Ok(true);
            }
            let got: Option<(Vec<u8>, u32, Option<u64>)> = self
                .pool(&wire)
                .with(|c| c.get(&wire).map_err(|e| engine_error("insert", e)))?;
            match got {
                Some((v, _, Some(cas))) if v.is_empty() => {
                    crate::hooks::run(Point::InsertOverTombstone, Path::new(key))
                        .map_err(|e| Error::engine("memcached", "insert", true, e))?;
                    if self.compare_and_set(key, &Version::from_number(cas), Some(value), ttl)? {
                        return Ok(true);
                    }
                }
                Some(_) => return Ok(false),
                None => {}
            }
        }
        Err(Error::engine_with_kind(
            "memcached",
            "insert",
            EngineErrorKind::Conflict,
            "the key kept changing between add and cas",
        ))
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
        self.pool(&key).with(|c| match c.cas(&key, value, exp, cas) {
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
            .pool(&key)
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
        self.pool(&key).with_retry(|c| match c.touch(&key, expiration(ttl)) {
            Ok(found) => Ok(found),
            Err(MemcacheError::CommandError(CommandError::KeyNotFound)) => Ok(false),
            Err(e) => Err(engine_error("touch", e)),
        })
    }
}

/// How many `add`/`get`/`cas` rounds [`MemcachedStore::insert`] takes before it
/// reports a conflict.
const INSERT_ROUNDS: usize = 4;

impl MemcachedStore {
    /// `add`: `true` if it stored the value, `false` if the key is taken.
    fn add(&self, wire: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        self.pool(wire).with(|c| match c.add(wire, value, expiration(ttl)) {
            Ok(()) => Ok(true),
            Err(MemcacheError::CommandError(CommandError::KeyExists)) => Ok(false),
            Err(e) => Err(engine_error("insert", e)),
        })
    }
}
