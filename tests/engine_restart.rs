//! An engine restarting mid-run: while it is down, requests get a typed, retryable
//! error (no panic, no hang); once it is back they succeed, and the sessions stored
//! before are all there. Each test runs its own server (Redis with an append-only
//! file, a PostgreSQL cluster), killed and restarted here on the same port and data.
//! The binaries come from Debian's packages (`.ci/engines.sh` installs them); under
//! `CI=true` a missing one is a failure, locally a printed skip.
#![cfg(any(feature = "redis", feature = "postgres"))]

#[path = "common/servers.rs"]
mod servers;

#[cfg(feature = "redis")]
use std::path::Path;
#[cfg(feature = "redis")]
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use servers::{free_port, missing, wait_port};

use fscache::Error;
use fscache::session::{SessionConfig, Sessions};
use fscache::store::{self, Store};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn cookie(set_cookie: Option<String>) -> String {
    set_cookie.unwrap().split(';').next().unwrap().to_owned()
}

/// Stores 12 sessions from 4 threads at once (so the store's pool holds several
/// connections, all stale after a restart); returns their cookies and users.
fn populate(sessions: &Sessions<Box<dyn Store>>) -> fscache::Result<Vec<(String, String)>> {
    let barrier = std::sync::Barrier::new(4);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let barrier = &barrier;
                scope.spawn(move || -> fscache::Result<Vec<(String, String)>> {
                    // Every thread waits at every round, also after a failure (a
                    // thread that left early would leave the others waiting).
                    let rounds: Vec<fscache::Result<(String, String)>> = (0..3)
                        .map(|i| {
                            barrier.wait();
                            let mut s = sessions.load(None)?;
                            let user = format!("user{t}-{i}");
                            s.insert("user", &user)?;
                            Ok((cookie(sessions.save(&mut s)?.set_cookie), user))
                        })
                        .collect();
                    rounds.into_iter().collect()
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in threads {
            all.extend(t.join().unwrap()?);
        }
        Ok(all)
    })
}

/// While the engine is down: a load and a save each fail with a retryable
/// [`Error::Engine`] within a few seconds.
fn down(sessions: &Sessions<Box<dyn Store>>, cookie: &str, loaded: &mut fscache::session::Session) {
    let started = Instant::now();
    match sessions.load(Some(cookie)) {
        Err(e @ Error::Engine { .. }) => assert!(e.is_retryable(), "{e}"),
        other => panic!("load while down: {other:?}"),
    }
    loaded.insert("during", &"outage").unwrap();
    match sessions.save(loaded) {
        Err(e @ Error::Engine { .. }) => assert!(e.is_retryable(), "{e}"),
        other => panic!("save while down: {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "errors came after {:?}",
        started.elapsed()
    );
}

/// Back up: the very next request succeeds (a call that meets a dead pooled
/// connection runs again on a new one), and every session stored before is intact.
fn back(sessions: &Sessions<Box<dyn Store>>, stored: &[(String, String)]) -> fscache::Result<()> {
    for (cookie, user) in stored {
        let s = sessions.load(Some(cookie))?;
        assert!(!s.is_new(), "{user}'s session survived the restart");
        assert_eq!(s.get::<String>("user")?.as_deref(), Some(user.as_str()));
    }
    let mut s = sessions.load(Some(&stored[0].0))?;
    s.insert("after", &"restart")?;
    sessions.save(&mut s)?;
    assert_eq!(
        sessions
            .load(Some(&stored[0].0))?
            .get::<String>("after")?
            .as_deref(),
        Some("restart")
    );
    Ok(())
}

/// A server process, SIGKILLed and reaped when dropped (also when a test fails).
#[cfg(feature = "redis")]
struct Server(std::process::Child);

#[cfg(feature = "redis")]
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(feature = "redis")]
fn redis_server(dir: &Path, port: u16) -> Server {
    Server(
        Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts"),
    )
}

#[cfg(feature = "redis")]
#[test]
fn redis_restart() -> TestResult {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        missing("redis-server");
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let port = free_port();
    let server = redis_server(tmp.path(), port);
    wait_port(port);
    let sessions = Sessions::new(
        store::open(&format!("redis://127.0.0.1:{port}/0"))?,
        SessionConfig::default(),
    )?;
    let stored = populate(&sessions)?;
    let mut loaded = sessions.load(Some(&stored[1].0))?;

    drop(server); // SIGKILL
    down(&sessions, &stored[0].0, &mut loaded);

    let server = redis_server(tmp.path(), port);
    wait_port(port);
    back(&sessions, &stored)?;

    // A restart with no call while the server was down: the pool's idle
    // connections are all stale (populate leaves 4), and still no request fails:
    // each call that meets one runs again on a new connection.
    populate(&sessions)?;
    drop(server);
    let _server = redis_server(tmp.path(), port);
    wait_port(port);
    back(&sessions, &stored)?;
    Ok(())
}

#[cfg(feature = "postgres")]
#[path = "common/pg.rs"]
mod pg;

#[cfg(feature = "postgres")]
#[test]
fn postgres_restart() -> TestResult {
    let Some(bin) = pg::pg_bin() else {
        missing("PostgreSQL (initdb)");
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let port = free_port();
    let cluster = pg::Cluster::init(&bin, tmp.path(), "pg", port);
    cluster.start("");
    let sessions = Sessions::new(store::open(&cluster.url())?, SessionConfig::default())?;
    let stored = populate(&sessions)?;
    let mut loaded = sessions.load(Some(&stored[1].0))?;
    cluster.stop(); // a crash: no shutdown checkpoint
    down(&sessions, &stored[0].0, &mut loaded);
    cluster.start("");
    wait_port(port);
    back(&sessions, &stored)?;

    // A restart with no call while the server was down: the pool's idle
    // connections are all stale, and still no request fails.
    populate(&sessions)?;
    cluster.stop();
    cluster.start("");
    wait_port(port);
    back(&sessions, &stored)?;
    Ok(())
}
