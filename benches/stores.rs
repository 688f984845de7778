//! The session round trip on every store: load a session by its cookie, change one
//! key, save it. Beside it, in the same run and on the same connection settings,
//! the engine's own commands for the same work through the same client crate
//! (Redis GET + SET PX, Memcached get + set, PostgreSQL SELECT + UPDATE and SQLite
//! SELECT + UPSERT with prepared statements, the file cache's get_bytes +
//! set_bytes) on a record of the same size. The SQL baselines use the same table
//! shape as the stores (an expiry column with an index, updated on every write):
//! the index is what bounded cleanup needs, and it is most of a write's cost.
//!
//! ```text
//! eval "$(bash .ci/engines.sh start)"
//! cargo bench --features engines --bench stores -- [--rounds N] [STORE…]
//! ```
//! STORE is file, sqlite, redis, redis-sentinel, redis-cluster, postgres,
//! memcached (default: all whose server is configured; the Sentinel and Cluster
//! topologies come from `eval "$(bash bench/redis-topologies.sh start)"`). One client thread; raw and session round trips alternate one by
//! one, so drift on a shared machine hits both alike. (In blocks of 500 the
//! PostgreSQL baseline ran 2–3× faster than the very same statements interleaved:
//! a backend kept hot by one connection is not a fair baseline for another.) Prints p50, p99, p99.9 and
//! max per round trip and the ratio of the medians.

mod common;

use std::time::{Duration, Instant};

use fscache::session::{SessionConfig, Sessions};
use fscache::store::{self, Store};

#[allow(dead_code)]
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn row(name: &str, what: &str, lat: &mut [u64]) -> u64 {
    lat.sort_unstable();
    let us = |ns: u64| ns as f64 / 1000.0;
    println!(
        "{name:<17} {what:<8} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
        us(pct(lat, 0.5)),
        us(pct(lat, 0.99)),
        us(pct(lat, 0.999)),
        us(*lat.last().unwrap())
    );
    pct(lat, 0.5)
}

/// The engine's own commands for one round trip: read the record, write it back
/// changed. Boxed so each engine keeps its own client.
type Raw = Box<dyn FnMut(&str, &[u8])>;

/// Redis's own round trip on connection `c`: `GET`, then `SET … PX`.
#[cfg(feature = "redis")]
fn redis_get_set(mut c: impl redis::Commands + 'static) -> Raw {
    Box::new(move |key, value| {
        let v: Option<Vec<u8>> = c.get(key).unwrap();
        std::hint::black_box(v);
        let () = c.pset_ex(key, value, 3_600_000).unwrap();
    })
}

#[allow(unused_variables)]
fn raw(name: &str, url: &str) -> Raw {
    let ttl = Duration::from_secs(3600);
    match name.split('+').next().unwrap_or(name) {
        "file" => {
            let cache = fscache::FileSystemCache::builder(url.trim_start_matches("file://"))
                .threshold(0)
                .open()
                .unwrap();
            Box::new(move |key, value| {
                std::hint::black_box(cache.get_bytes(key).unwrap());
                cache
                    .set_bytes_with_ttl(key, value, fscache::Ttl::After(ttl))
                    .unwrap();
            })
        }
        #[cfg(feature = "redis")]
        "redis" => {
            let c = redis::Client::open(url).unwrap().get_connection().unwrap();
            redis_get_set(c)
        }
        // Sentinel: the same commands on a plain connection to the master the
        // sentinels name (what the store's pooled connections are).
        #[cfg(feature = "redis")]
        "redis-sentinel" => {
            let (sentinels, rest) = url
                .trim_start_matches("redis-sentinel://")
                .split_once('/')
                .unwrap();
            let service = rest.split('/').next().unwrap();
            let first = sentinels.split(',').next().unwrap();
            let mut s = redis::Client::open(format!("redis://{first}/"))
                .unwrap()
                .get_connection()
                .unwrap();
            let (host, port): (String, u16) = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(service)
                .query(&mut s)
                .unwrap();
            let c = redis::Client::open(format!("redis://{host}:{port}/0"))
                .unwrap()
                .get_connection()
                .unwrap();
            redis_get_set(c)
        }
        // Cluster: the same commands through the redis crate's cluster client (slot
        // routing), as the store uses it.
        #[cfg(feature = "redis")]
        "redis-cluster" => {
            let nodes: Vec<String> = url
                .trim_start_matches("redis-cluster://")
                .split(',')
                .map(|n| format!("redis://{n}/"))
                .collect();
            let c = redis::cluster::ClusterClient::new(nodes)
                .unwrap()
                .get_connection()
                .unwrap();
            redis_get_set(c)
        }
        #[cfg(feature = "memcached")]
        "memcached" => {
            // The crate's client with one connection and no ping per checkout, as the
            // store builds it (memcache's default pool sends `version` before every
            // command, which would double the baseline).
            let pool = r2d2::Pool::builder()
                .max_size(1)
                .test_on_check_out(false)
                .build(memcache::ConnectionManager::new(
                    memcache::Url::parse(url).unwrap(),
                ))
                .unwrap();
            let c = memcache::Client::with_pool(pool).unwrap();
            Box::new(move |key, value| {
                let v: Option<Vec<u8>> = c.get(key).unwrap();
                std::hint::black_box(v);
                c.set(key, value, 3600).unwrap();
            })
        }
        #[cfg(feature = "postgres")]
        "postgres" => {
            let url = url
                .replace("?prepared_statements=true", "")
                .replace("&prepared_statements=true", "");
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            c.batch_execute(
                "CREATE TABLE IF NOT EXISTS bench_raw (key TEXT PRIMARY KEY, value BYTEA NOT NULL,
                 expires_at TIMESTAMPTZ NOT NULL);
                 CREATE INDEX IF NOT EXISTS bench_raw_expires_at ON bench_raw (expires_at)",
            )
            .unwrap();
            let get = c
                .prepare("SELECT value FROM bench_raw WHERE key = $1 AND expires_at > now()")
                .unwrap();
            let put = c
                .prepare(
                    "INSERT INTO bench_raw VALUES ($1, $2, now() + interval '1 hour')
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value,
                     expires_at = EXCLUDED.expires_at",
                )
                .unwrap();
            Box::new(move |key, value| {
                std::hint::black_box(c.query_opt(&get, &[&key]).unwrap());
                c.execute(&put, &[&key, &value]).unwrap();
            })
        }
        #[cfg(feature = "sqlite")]
        "sqlite" => {
            let path = format!("{}.raw", url.trim_start_matches("sqlite://"));
            let c = rusqlite::Connection::open(path).unwrap();
            c.pragma_update(None, "journal_mode", "WAL").unwrap();
            c.pragma_update(None, "synchronous", "NORMAL").unwrap();
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS raw (key TEXT PRIMARY KEY, value BLOB NOT NULL,
                 expires_at INTEGER NOT NULL) WITHOUT ROWID;
                 CREATE INDEX IF NOT EXISTS raw_expires_at ON raw (expires_at)",
            )
            .unwrap();
            Box::new(move |key, value| {
                let v: Option<Vec<u8>> = c
                    .prepare_cached("SELECT value FROM raw WHERE key = ?1 AND expires_at > ?2")
                    .unwrap()
                    .query_row(rusqlite::params![key, now_ms()], |r| r.get(0))
                    .ok();
                std::hint::black_box(v);
                c.prepare_cached(
                    "INSERT INTO raw VALUES (?1, ?2, ?3) ON CONFLICT (key) DO UPDATE
                     SET value = excluded.value, expires_at = excluded.expires_at",
                )
                .unwrap()
                .execute(rusqlite::params![key, value, now_ms() + 3_600_000])
                .unwrap();
            })
        }
        other => panic!("{other}: built without its feature (--features engines)"),
    }
}

fn main() {
    let mut rounds = 20_000usize;
    let mut only = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--rounds N")
            }
            "--bench" => {}
            s if s.starts_with('-') => {}
            s => only.push(s.to_owned()),
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = common::bench_base();
    let file_dir = tempfile::tempdir_in(&base).unwrap();
    let mut stores = vec![
        (
            "file",
            format!("file://{}", file_dir.path().join("s").display()),
        ),
        (
            "sqlite",
            format!("sqlite://{}", tmp.path().join("s.db").display()),
        ),
    ];
    for (name, var) in [
        ("redis", "FSCACHE_TEST_REDIS"),
        ("redis-sentinel", "FSCACHE_TEST_REDIS_SENTINEL"),
        ("redis-cluster", "FSCACHE_TEST_REDIS_CLUSTER"),
        ("postgres", "FSCACHE_TEST_POSTGRES"),
        ("memcached", "FSCACHE_TEST_MEMCACHED"),
    ] {
        match std::env::var(var) {
            Ok(url) => stores.push((name, url)),
            Err(_) => eprintln!("skip {name}: {var} is not set"),
        }
    }
    // PostgreSQL twice: statements sent unnamed (the default, which works behind
    // PgBouncer) and prepared once per connection (prepared_statements=true).
    if let Some((_, url)) = stores.iter().find(|(n, _)| *n == "postgres") {
        let sep = if url.contains('?') { '&' } else { '?' };
        let prepared = format!("{url}{sep}prepared_statements=true");
        stores.push(("postgres+prepared", prepared));
    }
    stores.retain(|(n, _)| {
        only.is_empty()
            || only
                .iter()
                .any(|o| o == n || n.split(['+', '-']).next() == Some(o.as_str()))
    });
    println!("session round trip (load, change one key, save) vs the engine's own commands");
    println!("{rounds} round trips each, one client; µs");
    println!(
        "{:<17} {:<8} {:>9} {:>9} {:>9} {:>9}",
        "store", "", "p50", "p99", "p99.9", "max"
    );
    for (name, url) in stores {
        let sessions = Sessions::new(store::open(&url).unwrap(), SessionConfig::default()).unwrap();
        let mut first = sessions.load(None).unwrap();
        first.insert("user", &"ada").unwrap();
        first.insert("n", &0u64).unwrap();
        let cookie = sessions.save(&mut first).unwrap().set_cookie.unwrap();
        let cookie = cookie.split(';').next().unwrap().to_owned();
        let key = sessions.store_key(cookie.split_once('=').unwrap().1);
        let record = sessions.store().load(&key).unwrap().unwrap().value;
        let raw_key = format!("raw:{key}");
        let mut raw = raw(name, &url);
        raw(&raw_key, &record);
        let (mut lr, mut ls) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
        let mut n = 0u64;
        while ls.len() < rounds {
            let t = Instant::now();
            raw(&raw_key, &record);
            lr.push(t.elapsed().as_nanos() as u64);
            n += 1;
            let t = Instant::now();
            let mut s = sessions.load(Some(&cookie)).unwrap();
            s.insert("n", &n).unwrap();
            sessions.save(&mut s).unwrap();
            ls.push(t.elapsed().as_nanos() as u64);
        }
        let r = row(name, "engine", &mut lr);
        let s = row(name, "session", &mut ls);
        println!("{name:<17} ratio of medians {:.2}x", s as f64 / r as f64);
        sessions.store().remove(&key).unwrap();
    }
}
