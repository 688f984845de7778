//! The engine stores' builders, against real servers: a password set in code
//! (with characters a URL must escape) opens a password-protected redis-server
//! started here; a pool sized to one connection makes a second caller wait
//! `pool_timeout` and fail with a retryable `Timeout` while the first holds it
//! (PostgreSQL and SQLite, whose merges hold their connection); `Debug` of a
//! builder never shows a password. Servers from `FSCACHE_TEST_POSTGRES` and
//! `FSCACHE_TEST_MEMCACHED` (a skip locally without them, a failure under `CI=true`).
#![cfg(all(
    feature = "redis",
    feature = "postgres",
    feature = "memcached",
    feature = "sqlite"
))]

mod common;

#[path = "common/servers.rs"]
mod servers;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use fscache::store::{MemcachedStore, PostgresStore, RedisStore, SqliteStore, Store};
use fscache::{EngineErrorKind, Merge};

use common::stores::{engine_url, prefix};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const MINUTE: Duration = Duration::from_secs(60);

/// A password that needs escaping in a URL's userinfo.
const PASSWORD: &str = "p@ss:w/rd ü&=%";

#[test]
fn a_redis_password_set_in_code_opens_a_protected_server() -> TestResult {
    let port = servers::free_port();
    let args = ["--port", &port.to_string(), "--requirepass", PASSWORD].map(str::to_owned);
    let Some(_redis) = servers::redis_server(port, &args) else {
        return Ok(());
    };
    let url = format!("redis://127.0.0.1:{port}/0");
    let builder = RedisStore::builder(&url).password(PASSWORD).pool_size(2);
    assert!(!format!("{builder:?}").contains("rd ü"), "{builder:?}");
    let st = builder.open()?;
    st.save("k", b"v", MINUTE)?;
    assert_eq!(st.load("k")?.unwrap().value, b"v");
    // The user named in code (Redis's default user) and the same password.
    let st = RedisStore::builder(&url)
        .username("default")
        .password(PASSWORD)
        .open()?;
    assert_eq!(st.load("k")?.unwrap().value, b"v");
    // A builder's password replaces one in the URL.
    let wrong = format!("redis://:wrong@127.0.0.1:{port}/0");
    assert!(
        RedisStore::builder(&wrong)
            .password(PASSWORD)
            .open()
            .is_ok()
    );
    let e = RedisStore::builder(&url)
        .password("wrong")
        .open()
        .expect_err("a wrong password");
    assert_eq!(e.engine_kind(), Some(EngineErrorKind::Auth), "{e:?}");
    // Sentinel URLs decode the userinfo as redis:// URLs do.
    let e = RedisStore::builder("redis-sentinel://127.0.0.1:1/main")
        .password(PASSWORD)
        .sentinel_password(PASSWORD)
        .open()
        .expect_err("no sentinel listens");
    assert!(!format!("{e} {e:?}").contains("rd ü"), "{e:?}");
    Ok(())
}

/// A server that accepts connections and never answers: a timeout set in code
/// ends the wait with a retryable `Timeout`, sooner than the 2 s default.
#[test]
fn a_timeout_set_in_code_ends_the_wait_on_a_silent_server() -> TestResult {
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = silent.local_addr()?.port();
    let t = Instant::now();
    let e = RedisStore::builder(&format!("redis://127.0.0.1:{port}/0"))
        .timeout(Duration::from_millis(200))
        .open()
        .expect_err("a silent server");
    let took = t.elapsed();
    assert_eq!(e.engine_kind(), Some(EngineErrorKind::Timeout), "{e:?}");
    assert!(e.is_retryable());
    assert!(
        took < Duration::from_millis(1900),
        "the 2 s default applied: {took:?}"
    );
    drop(silent);
    Ok(())
}

/// Holds the only connection of `st` inside a merge until the test has seen a
/// second caller time out; returns how long that caller waited.
fn second_caller_waits(st: Arc<dyn Store>, key: &str) -> Result<Duration, String> {
    let (inside, done) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
    let holder = {
        let (st, key, inside, done) = (st.clone(), key.to_owned(), inside.clone(), done.clone());
        std::thread::spawn(move || {
            st.update(&key, MINUTE, &mut |_| {
                inside.wait();
                done.wait();
                Ok(Merge::Put(b"held".to_vec()))
            })
        })
    };
    inside.wait();
    let t = Instant::now();
    let second = st.load(key);
    let waited = t.elapsed();
    done.wait();
    holder.join().unwrap().map_err(|e| e.to_string())?;
    match second {
        Err(e) if e.engine_kind() == Some(EngineErrorKind::Timeout) && e.is_retryable() => {
            Ok(waited)
        }
        other => Err(format!("expected a pool Timeout, got {other:?}")),
    }
}

#[test]
fn a_pool_sized_in_code_makes_the_second_caller_wait_its_timeout() -> TestResult {
    let wait = Duration::from_millis(300);
    let tmp = tempfile::tempdir()?;
    let sqlite = SqliteStore::builder(tmp.path().join("s.db").to_str().unwrap())
        .pool_size(1)
        .pool_timeout(wait)
        .open()?;
    let mut stores: Vec<(&str, Arc<dyn Store>)> = vec![("sqlite", Arc::new(sqlite))];
    if let Some(url) = engine_url("FSCACHE_TEST_POSTGRES") {
        let pg = PostgresStore::builder(&url)
            .pool_size(1)
            .pool_timeout(wait)
            .password("unused by a trusting server")
            .open()?;
        stores.push(("postgres", Arc::new(pg)));
    }
    for (name, st) in stores {
        let key = format!("{}held", prefix("pool"));
        let waited = second_caller_waits(st.clone(), &key).map_err(|e| format!("{name}: {e}"))?;
        assert!(
            waited >= wait,
            "{name}: failed after {waited:?}, before the {wait:?} wait"
        );
        // The connection is back: calls work again, and the holder's merge landed.
        assert_eq!(st.load(&key)?.unwrap().value, b"held", "{name}");
        assert!(st.remove(&key)?, "{name}");
    }
    Ok(())
}

#[test]
fn postgres_and_memcached_builders_compose_their_urls() -> TestResult {
    if let Some(url) = engine_url("FSCACHE_TEST_POSTGRES") {
        // The same server in the key-value form, with the user and a password set
        // in code (the test server trusts 127.0.0.1, so any password opens it).
        let cfg: postgres::Config = url.parse()?;
        let Some(postgres::config::Host::Tcp(host)) = cfg.get_hosts().first() else {
            panic!("FSCACHE_TEST_POSTGRES names no TCP host: {url}");
        };
        let port = cfg.get_ports().first().copied().unwrap_or(5432);
        let db = cfg.get_dbname().unwrap_or("postgres");
        let b = PostgresStore::builder(&format!("host={host} port={port} dbname={db}"))
            .user("postgres")
            .password("it's a secret")
            .pool_size(2);
        assert!(!format!("{b:?}").contains("secret"), "{b:?}");
        let st = b.open()?;
        let k = format!("{}kv", prefix("builder"));
        st.save(&k, b"v", MINUTE)?;
        assert!(st.remove(&k)?);
        // A schema per app through the connection's search_path: the store's table
        // is created there, and the app's keys stay apart from another's.
        let schema = format!("app_{}", std::process::id());
        let mut admin = postgres::Client::connect(&url, postgres::NoTls)?;
        admin.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))?;
        let st = PostgresStore::builder(&url)
            .option("options", &format!("-c search_path={schema}"))
            .open()?;
        st.save("in-schema", b"v", MINUTE)?;
        let n: i64 = admin
            .query_one(
                &format!("SELECT count(*) FROM {schema}.fscache_store WHERE key = 'in-schema'"),
                &[],
            )?
            .get(0);
        assert_eq!(n, 1, "the row is in the app's schema");
        drop(st);
        admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))?;
        // A bad value set in code is the URL's Config error.
        let e = PostgresStore::builder(&url)
            .pool_size(0)
            .open()
            .expect_err("pool_size 0");
        assert!(matches!(e, fscache::Error::Config { .. }), "{e:?}");
    }
    if let Some(url) = engine_url("FSCACHE_TEST_MEMCACHED") {
        let st = MemcachedStore::builder(&url)
            .pool_size(1)
            .pool_timeout(Duration::from_millis(200))
            .open()?;
        let k = format!("{}mc", prefix("builder"));
        st.save(&k, b"v", MINUTE)?;
        assert_eq!(st.load(&k)?.unwrap().value, b"v");
        st.remove(&k)?;
    }
    Ok(())
}
