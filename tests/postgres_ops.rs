//! PostgreSQL as a team runs it: a role with only DML rights, PgBouncer in
//! transaction pooling mode, a multi-host URL that follows a promoted standby,
//! timeouts so that no call waits forever, a bounded pool, and typed error kinds.
//!
//! The shared server is `FSCACHE_TEST_POSTGRES` (`.ci/engines.sh`); the failover
//! and PgBouncer tests start servers of their own on 127.0.0.1 (Debian's
//! `postgresql` and `pgbouncer` packages). Under `CI=true` anything missing is a
//! failure, locally a printed skip.
#![cfg(feature = "postgres")]

#[path = "common/servers.rs"]
mod servers;

#[path = "common/pg.rs"]
mod pg;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use servers::{free_port, missing, wait_port};

use fscache::session::{SessionConfig, Sessions};
use fscache::store::{self, Merge, Store};
use fscache::{EngineErrorKind, Error};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn shared_url() -> Option<String> {
    match std::env::var("FSCACHE_TEST_POSTGRES") {
        Ok(url) => Some(url),
        Err(_) => {
            missing("FSCACHE_TEST_POSTGRES");
            None
        }
    }
}

fn admin(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).expect("connect as the admin")
}

/// `url` with its user replaced by `user`.
/// A login role (made if missing, with `options` such as a connection limit)
/// with only SELECT, INSERT, UPDATE and DELETE on the store's table.
fn dml_role(db: &mut postgres::Client, name: &str, options: &str) -> Result<(), postgres::Error> {
    db.batch_execute(&format!(
        "DO $$ BEGIN CREATE ROLE {name} LOGIN {options};
         EXCEPTION WHEN duplicate_object THEN NULL; END $$;
         GRANT SELECT, INSERT, UPDATE, DELETE ON fscache_store TO {name};"
    ))
}

fn as_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let rest = rest.split_once('@').map_or(rest, |(_, r)| r);
    format!("{scheme}://{user}@{rest}")
}

fn with_query(url: &str, query: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

fn counter(store: &dyn Store, key: &str) -> u64 {
    store
        .load(key)
        .unwrap()
        .map_or(0, |v| String::from_utf8(v.value).unwrap().parse().unwrap())
}

fn bump(store: &dyn Store, key: &str) -> fscache::Result<()> {
    store.update(key, Duration::from_secs(600), &mut |cur| {
        let n: u64 = cur.map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap());
        Ok(Merge::Put((n + 1).to_string().into_bytes()))
    })?;
    Ok(())
}

/// Every store call, by a role that may only SELECT, INSERT, UPDATE and DELETE on
/// the table (no sequence, no DDL, no ownership).
#[test]
fn a_role_with_only_dml_rights_can_use_the_store() -> TestResult {
    let Some(url) = shared_url() else {
        return Ok(());
    };
    // The owner opens it once: the table exists from then on.
    drop(store::open(&url)?);
    let mut db = admin(&url);
    dml_role(&mut db, "fscache_dml_only", "")?;
    let dml = store::open(&as_user(&url, "fscache_dml_only"))?;
    let ttl = Duration::from_secs(60);
    let key = format!("dml:{}", std::process::id());
    dml.save(&key, b"one", ttl)?;
    assert_eq!(dml.load(&key)?.unwrap().value, b"one");
    let v = dml.load(&key)?.unwrap().version;
    assert!(dml.compare_and_set(&key, &v, Some(b"two"), ttl)?);
    assert!(
        !dml.compare_and_set(&key, &v, Some(b"three"), ttl)?,
        "a stale version loses"
    );
    bump(&*dml, &format!("{key}:n"))?;
    bump(&*dml, &format!("{key}:n"))?;
    assert_eq!(counter(&*dml, &format!("{key}:n")), 2);
    assert!(dml.touch(&key, ttl)?);
    assert!(!dml.insert(&key, b"x", ttl)?);
    assert!(dml.remove(&key)?);
    assert!(dml.insert(&key, b"x", ttl)?);
    dml.cleanup(100)?;
    // What it may not do is refused with a typed, non-retryable error.
    let e = db
        .batch_execute("SET ROLE fscache_dml_only; DROP TABLE fscache_store")
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("42501"));
    Ok(())
}

/// A row lock held elsewhere: the store's write gives up after `lock_timeout`
/// (2 s by default; what the URL's `options` say when it does) with a retryable
/// `EngineErrorKind::Timeout`, and never waits for the lock's holder.
#[test]
fn a_write_behind_a_held_lock_times_out_with_kind_timeout() -> TestResult {
    let Some(url) = shared_url() else {
        return Ok(());
    };
    let ttl = Duration::from_secs(60);
    let key = format!("locked:{}", std::process::id());
    let default = store::open(&url)?;
    let quick = store::open(&with_query(&url, "options=-c%20lock_timeout%3D100"))?;
    default.save(&key, b"before", ttl)?;
    let mut holder = admin(&url);
    let mut tx = holder.transaction()?;
    tx.execute(
        "SELECT 1 FROM fscache_store WHERE key = $1 FOR UPDATE",
        &[&key],
    )?;

    for (store, at_least, at_most) in [
        (&quick, Duration::ZERO, Duration::from_millis(1500)),
        (
            &default,
            Duration::from_millis(1500),
            Duration::from_secs(30),
        ),
    ] {
        let started = Instant::now();
        let e = store.save(&key, b"blocked", ttl).unwrap_err();
        let took = started.elapsed();
        assert_eq!(e.engine_kind(), Some(EngineErrorKind::Timeout), "{e}");
        assert!(e.is_retryable());
        assert!(
            (at_least..at_most).contains(&took),
            "gave up after {took:?}, expected {at_least:?}..{at_most:?}"
        );
    }
    tx.rollback()?;
    default.save(&key, b"after", ttl)?;
    assert_eq!(quick.load(&key)?.unwrap().value, b"after");
    Ok(())
}

/// A pool of one connection, held by a merge that waits: another call waits
/// `pool_timeout_ms` for it and fails with a retryable `Timeout`; once the
/// connection is free the next call gets it. The server sees one connection.
#[test]
fn a_full_pool_fails_a_waiting_call_with_kind_timeout() -> TestResult {
    let Some(url) = shared_url() else {
        return Ok(());
    };
    let name = format!("fscache_pool_{}", std::process::id());
    let store = store::open(&with_query(
        &url,
        &format!("pool_size=1&pool_timeout_ms=200&application_name={name}"),
    ))?;
    let key = format!("pool:{}", std::process::id());
    let in_merge = Barrier::new(2);
    let release = Barrier::new(2);
    std::thread::scope(|s| -> TestResult {
        let holder = s.spawn(|| {
            store.update(&key, Duration::from_secs(60), &mut |_| {
                in_merge.wait();
                release.wait();
                Ok(Merge::Put(b"held".to_vec()))
            })
        });
        in_merge.wait();
        let e = store.load(&key).unwrap_err();
        assert_eq!(e.engine_kind(), Some(EngineErrorKind::Timeout), "{e}");
        assert!(e.is_retryable());
        assert!(
            e.to_string().contains("wait for a pooled connection"),
            "{e}"
        );
        let open: i64 = admin(&url)
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&name],
            )?
            .get(0);
        assert_eq!(open, 1, "the pool opened one connection");
        release.wait();
        holder.join().unwrap()?;
        Ok(())
    })?;
    assert_eq!(store.load(&key)?.unwrap().value, b"held");
    Ok(())
}

/// Error kinds a caller can match on: an unknown role is `Auth`, a role over its
/// connection limit is a retryable `Unavailable` (the "too many clients" of a full
/// server), a closed port is `Unavailable`.
#[test]
fn engine_errors_say_what_kind_they_are() -> TestResult {
    let Some(url) = shared_url() else {
        return Ok(());
    };
    drop(store::open(&url)?);
    let Err(e) = store::open(&as_user(&url, "fscache_no_such_role")) else {
        panic!("an unknown role connected")
    };
    assert_eq!(e.engine_kind(), Some(EngineErrorKind::Auth), "{e}");
    assert!(!e.is_retryable());

    dml_role(&mut admin(&url), "fscache_one_conn", "CONNECTION LIMIT 1")?;
    let one = as_user(&url, "fscache_one_conn");
    let first = store::open(&one)?; // holds its one connection, idle in its pool
    let Err(e) = store::open(&one) else {
        panic!("a second connection over the limit")
    };
    assert_eq!(e.engine_kind(), Some(EngineErrorKind::Unavailable), "{e}");
    assert!(e.is_retryable());
    drop(first);

    let closed = format!("postgres://postgres@127.0.0.1:{}/postgres", free_port());
    let Err(e) = store::open(&closed) else {
        panic!("connected to a closed port")
    };
    assert_eq!(e.engine_kind(), Some(EngineErrorKind::Unavailable), "{e}");
    assert!(matches!(
        e,
        Error::Engine {
            retryable: true,
            ..
        }
    ));
    Ok(())
}

/// PgBouncer 1.18 in transaction pooling mode, 2 server connections for 8 client
/// threads: counters bumped concurrently through it all count, and no call fails
/// (a named prepared statement would be looked for on the wrong server
/// connection).
#[test]
fn pgbouncer_in_transaction_mode_under_concurrency() -> TestResult {
    let Some(url) = shared_url() else {
        return Ok(());
    };
    let Some(bouncer) = which("pgbouncer") else {
        missing("pgbouncer");
        return Ok(());
    };
    let upstream = url.split_once('@').unwrap().1; // HOST:PORT/DB
    let (hostport, _db) = upstream.split_once('/').unwrap();
    let (host, port) = hostport.rsplit_once(':').unwrap();
    let tmp = tempfile::tempdir()?;
    let listen = free_port();
    let ini = tmp.path().join("pgbouncer.ini");
    std::fs::write(tmp.path().join("users.txt"), "\"postgres\" \"\"\n")?;
    std::fs::write(
        &ini,
        format!(
            "[databases]\npostgres = host={host} port={port} dbname=postgres\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {listen}\n\
             unix_socket_dir =\nauth_type = trust\nauth_file = {users}\n\
             pool_mode = transaction\ndefault_pool_size = 2\nmax_client_conn = 100\n\
             logfile = {log}\npidfile = {pid}\n",
            users = tmp.path().join("users.txt").display(),
            log = tmp.path().join("pgbouncer.log").display(),
            pid = tmp.path().join("pgbouncer.pid").display(),
        ),
    )?;
    pg::give_to_postgres(tmp.path());
    pg::run_as_postgres(&bouncer, &["-d", ini.to_str().unwrap()])?;
    let _stop = KillOnDrop(tmp.path().join("pgbouncer.pid"));
    wait_port(listen);

    let via = format!("postgres://postgres@127.0.0.1:{listen}/postgres");
    let store = store::open(&via)?;
    let run = std::process::id();
    let keys: Vec<String> = (0..4).map(|k| format!("bouncer:{run}:{k}")).collect();
    let failures = Mutex::new(Vec::new());
    let barrier = Barrier::new(8);
    std::thread::scope(|s| {
        for t in 0..8 {
            let (store, keys, failures, barrier) = (&store, &keys, &failures, &barrier);
            s.spawn(move || {
                barrier.wait();
                for i in 0..25 {
                    let key = &keys[(t + i) % keys.len()];
                    let r = bump(&**store, key)
                        .and_then(|()| store.load(key).map(drop))
                        .and_then(|()| {
                            store.save(&format!("{key}:{t}"), b"v", Duration::from_secs(60))
                        });
                    if let Err(e) = r {
                        failures.lock().unwrap().push(e.to_string());
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} calls failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    let total: u64 = keys.iter().map(|k| counter(&*store, k)).sum();
    assert_eq!(total, 200, "every increment through PgBouncer counted");
    Ok(())
}

/// A primary and a streaming standby made with pg_basebackup, synchronous (so an
/// acknowledged write is on both). A multi-host URL with
/// `target_session_attrs=read-write` (the standby listed first) writes to the
/// primary; the primary is SIGKILLed under a writer, the standby promoted: calls
/// during the switch fail with retryable errors, then succeed on the new primary,
/// and no acknowledged write is lost.
#[test]
fn a_multi_host_url_follows_a_promoted_standby() -> TestResult {
    let Some(bin) = pg::pg_bin() else {
        missing("PostgreSQL (initdb)");
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let primary = pg::Cluster::init(&bin, tmp.path(), "primary", free_port());
    primary.start("-c synchronous_standby_names='*' -c wal_level=replica");
    let standby = pg::Cluster::standby_of(&primary, tmp.path(), "standby", free_port());
    standby.start("");
    // Wait until the standby streams (synchronous commits need it).
    let deadline = Instant::now() + Duration::from_secs(30);
    while primary
        .client()
        .query_one(
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
            &[],
        )?
        .get::<_, i64>(0)
        == 0
    {
        assert!(Instant::now() < deadline, "the standby never streamed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        standby.port, primary.port
    );
    let sessions = Sessions::new(store::open(&url)?, SessionConfig::default())?;
    let mut before = Vec::new();
    for i in 0..50 {
        let mut s = sessions.load(None)?;
        s.insert("user", &format!("user{i}"))?;
        let cookie = sessions.save(&mut s)?.set_cookie.unwrap();
        before.push((
            cookie.split(';').next().unwrap().to_owned(),
            format!("user{i}"),
        ));
    }

    // A writer bumps one counter as fast as it can; it records what was acknowledged.
    let store = sessions.store();
    let key = "failover:counter";
    let acked = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let errors = Mutex::new(Vec::<Error>::new());
    std::thread::scope(|s| -> TestResult {
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                match bump(&**store, key) {
                    Ok(()) => {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        errors.lock().unwrap().push(e);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        });
        std::thread::sleep(Duration::from_millis(500));
        primary.kill();
        let killed_at = acked.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        standby.promote();
        // Writes go on, on the new primary.
        let deadline = Instant::now() + Duration::from_secs(30);
        while acked.load(Ordering::SeqCst) < killed_at + 50 {
            assert!(
                Instant::now() < deadline,
                "no write succeeded after the promotion"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::SeqCst);
        Ok(())
    })?;
    let errors = errors.into_inner().unwrap();
    assert!(!errors.is_empty(), "the switch was seen");
    for e in &errors {
        assert!(e.is_retryable(), "{e}");
    }
    let stored = counter(&**store, key);
    let acked = acked.load(Ordering::SeqCst);
    // A bump whose reply was lost may have been applied: at most one per error.
    assert!(
        stored >= acked && stored <= acked + errors.len() as u64,
        "acknowledged {acked}, stored {stored}, {} errors",
        errors.len()
    );
    eprintln!(
        "failover: {acked} acknowledged, {stored} stored, {} retryable errors, 0 lost",
        errors.len()
    );
    for (cookie, user) in &before {
        let s = sessions.load(Some(cookie))?;
        assert_eq!(s.get::<String>("user")?.as_deref(), Some(user.as_str()));
    }
    Ok(())
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"]
        .iter()
        .map(|d| std::path::Path::new(d).join(tool))
        .find(|p| p.exists())
}

/// Kills the process whose pid file this names when dropped.
struct KillOnDrop(std::path::PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0) {
            let _ = std::process::Command::new("kill").arg(pid.trim()).status();
        }
    }
}
