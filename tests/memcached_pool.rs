//! `memcache://HOST:PORT,HOST:PORT,…`: a pool of memcached servers, each key on the
//! server pymemcache's `HashClient` (rendezvous hashing, MurmurHash3) picks.
//! Three memcached servers are started by the test on 127.0.0.1 (memcached from
//! Debian's package: a skip locally without it, a failure under `CI=true`).
//!
//! - Keys spread over every server, and removing a server moves only its keys.
//! - A Python process with pymemcache's `HashClient` over the same server list
//!   reads what the store wrote and the store reads what it wrote
//!   (`FSCACHE_TEST_FLASK_PYTHON`, the venv .ci/run makes).
#![cfg(feature = "memcached")]

mod common;

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fscache::store::{MemcachedStore, Store};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const TTL: Duration = Duration::from_secs(600);

struct Memcached {
    child: Child,
    port: u16,
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn memcached() -> Option<Memcached> {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = match Command::new("memcached")
        .args([
            "-l",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "0",
            "-m",
            "64",
        ])
        .args(["-u", "nobody"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            common::cannot_run(&format!(
                "memcached does not start ({e}): apt-get install memcached"
            ));
            return None;
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "memcached did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Memcached { child, port })
}

fn three() -> Option<Vec<Memcached>> {
    (0..3).map(|_| memcached()).collect()
}

fn url(servers: &[&Memcached]) -> String {
    let hosts: Vec<String> = servers
        .iter()
        .map(|m| format!("127.0.0.1:{}", m.port))
        .collect();
    format!("memcache://{}", hosts.join(","))
}

/// Which server (index into `servers`) holds `key`, asked of each directly.
fn holder(singles: &[MemcachedStore], key: &str) -> Vec<usize> {
    singles
        .iter()
        .enumerate()
        .filter(|(_, s)| s.load(key).unwrap().is_some())
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn keys_spread_over_the_servers_and_a_removed_server_moves_only_its_own() -> TestResult {
    let Some(servers) = three() else {
        return Ok(());
    };
    let all: Vec<&Memcached> = servers.iter().collect();
    let store = MemcachedStore::open(&url(&all))?;
    let singles: Vec<MemcachedStore> = servers
        .iter()
        .map(|m| MemcachedStore::open(&url(&[m])))
        .collect::<fscache::Result<_>>()?;
    let keys: Vec<String> = (0..3000).map(|i| format!("session:{i:05}")).collect();
    for k in &keys {
        assert!(store.insert(k, k.as_bytes(), TTL)?);
    }
    let mut on = [Vec::new(), Vec::new(), Vec::new()];
    for k in &keys {
        let h = holder(&singles, k);
        assert_eq!(h.len(), 1, "{k} is on exactly one server: {h:?}");
        on[h[0]].push(k.clone());
        assert_eq!(store.load(k)?.unwrap().value, k.as_bytes());
    }
    for (i, keys) in on.iter().enumerate() {
        assert!(
            (850..=1150).contains(&keys.len()),
            "server {i} holds {} of 3,000 keys",
            keys.len()
        );
    }
    // Without the third server: the keys of the other two are found where they
    // are (nothing moved), the third's are not.
    let two = MemcachedStore::open(&url(&all[..2]))?;
    let found = keys
        .iter()
        .filter(|k| two.load(k).unwrap().is_some())
        .count();
    assert_eq!(found, on[0].len() + on[1].len());
    // The order of the list does not matter.
    let shuffled = MemcachedStore::open(&url(&[all[2], all[0], all[1]]))?;
    assert!(keys.iter().all(|k| shuffled.load(k).unwrap().is_some()));
    Ok(())
}

/// A server that is down fails its own keys with a retryable error; they are not
/// written to another server, and the other servers' keys keep working.
#[test]
fn a_down_server_fails_its_keys_instead_of_moving_them() -> TestResult {
    let Some(mut servers) = three() else {
        return Ok(());
    };
    let all: Vec<&Memcached> = servers.iter().collect();
    let store = MemcachedStore::open(&url(&all))?;
    let singles: Vec<MemcachedStore> = servers
        .iter()
        .map(|m| MemcachedStore::open(&url(&[m])))
        .collect::<fscache::Result<_>>()?;
    let keys: Vec<String> = (0..300).map(|i| format!("down:{i}")).collect();
    for k in &keys {
        store.save(k, b"v", TTL)?;
    }
    let on_last: Vec<&String> = keys.iter().filter(|k| holder(&singles, k) == [2]).collect();
    assert!(!on_last.is_empty());
    let victim = servers.pop().unwrap();
    drop(victim); // SIGKILL
    // A refused connect fails at once (the store connects once itself before
    // handing the server to r2d2, whose checkout would retry for 2 s).
    for k in &keys {
        let on_victim = on_last.contains(&k);
        match store.save(k, b"w", TTL) {
            Ok(()) => assert!(!on_victim, "{k} was written to another server"),
            Err(e) => {
                assert!(on_victim, "{k}: {e}");
                assert!(e.is_retryable(), "{k}: {e:?}");
                assert_eq!(
                    e.engine_kind(),
                    Some(fscache::EngineErrorKind::Unavailable),
                    "{k}: {e:?}"
                );
            }
        }
    }
    for (i, single) in singles.iter().take(2).enumerate() {
        for k in &on_last {
            assert!(single.load(k)?.is_none(), "{k} appeared on server {i}");
        }
    }
    Ok(())
}

#[test]
fn a_pool_url_is_checked_and_never_echoes_the_password() {
    for (u, what) in [
        ("memcache://127.0.0.1", "HOST:PORT"),
        ("memcache://127.0.0.1:1,:2", "HOST:PORT"),
        ("memcache://127.0.0.1:x", "HOST:PORT"),
        ("memcache://127.0.0.1:1,127.0.0.1:1", "named twice"),
        ("memcache://u:hunter2@127.0.0.1:1", "no user or password"),
    ] {
        let e = MemcachedStore::open(u).unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(matches!(e, fscache::Error::Config { .. }), "{u}: {e:?}");
        assert!(shown.contains(what), "{u}: {shown}");
        assert!(!shown.contains("hunter2"), "{u}: {shown}");
    }
}

/// pymemcache's `HashClient` over the same servers: it reads the store's keys
/// where the store put them, and the store reads its keys.
#[test]
fn pymemcache_hash_client_finds_the_same_servers() -> TestResult {
    let Ok(python) = std::env::var("FSCACHE_TEST_FLASK_PYTHON") else {
        common::cannot_run(
            "FSCACHE_TEST_FLASK_PYTHON is not set (a Python with pymemcache==4.0.0: .ci/run \
             makes one from tests/flask/requirements.txt)",
        );
        return Ok(());
    };
    let Some(servers) = three() else {
        return Ok(());
    };
    let all: Vec<&Memcached> = servers.iter().collect();
    let store = MemcachedStore::open(&url(&all))?;
    for i in 0..300 {
        store.save(
            &format!("session:rust-{i}"),
            format!("r{i}").as_bytes(),
            TTL,
        )?;
    }
    let ports: Vec<String> = servers.iter().map(|m| m.port.to_string()).collect();
    let script = r#"
import sys
from pymemcache.client.hash import HashClient
ports = [int(p) for p in sys.argv[1].split(",")]
client = HashClient([("127.0.0.1", p) for p in ports])
singles = [HashClient([("127.0.0.1", p)]) for p in ports]
for i in range(300):
    key = "session:rust-%d" % i
    got = client.get(key)
    assert got == ("r%d" % i).encode(), (key, got)
    # Exactly one server holds it: the one pymemcache asked.
    assert sum(s.get(key) is not None for s in singles) == 1, key
for i in range(300):
    client.set("session:py-%d" % i, ("p%d" % i).encode(), expire=600)
print("ok")
"#;
    let out = Command::new(python)
        .args(["-c", script, &ports.join(",")])
        .output()?;
    assert!(
        out.status.success() && out.stdout.starts_with(b"ok"),
        "pymemcache: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for i in 0..300 {
        let got = store.load(&format!("session:py-{i}"))?;
        assert_eq!(
            got.map(|v| v.value),
            Some(format!("p{i}").into_bytes()),
            "session:py-{i}, written by pymemcache"
        );
    }
    Ok(())
}

/// Threads of this process whose name starts with `prefix`.
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

/// Sixteen connections in use at once cost one scheduler thread in all, not
/// r2d2's three per connection.
#[test]
fn connections_share_one_scheduler_thread() -> TestResult {
    let Some(server) = memcached() else {
        return Ok(());
    };
    let store = MemcachedStore::open(&url(&[&server]))?;
    let barrier = std::sync::Barrier::new(16);
    std::thread::scope(|s| {
        for t in 0..16 {
            let (store, barrier) = (&store, &barrier);
            s.spawn(move || {
                barrier.wait();
                for i in 0..50 {
                    store.save(&format!("t{t}-{i}"), b"v", TTL).unwrap();
                }
            });
        }
    });
    assert_eq!(threads_named("r2d2-worker"), 0);
    assert_eq!(threads_named("fscache-memcach"), 1); // comm is cut at 15 bytes
    Ok(())
}
