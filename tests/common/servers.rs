//! Helpers for tests that start servers of their own on 127.0.0.1. Included with
//! `#[path = "common/servers.rs"] mod servers;`.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// A tool or server the test needs is missing: a failure under `CI=true` (where
/// `.ci/engines.sh` installs it), a printed skip locally.
pub fn missing(what: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} is missing under CI=true (.ci/engines.sh installs it)"
    );
    eprintln!("skip: {what} is missing");
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits up to 30 s until something listens on 127.0.0.1:`port`.
pub fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process, killed and reaped when dropped.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A redis-server on 127.0.0.1 with no persistence and `args` (which name the
/// ports: `--port N`, or `--port 0 --tls-port N`), once `port` answers. `None`
/// without redis-server (a failure under `CI=true`, a printed skip locally).
pub fn redis_server<S: AsRef<std::ffi::OsStr>>(port: u16, args: &[S]) -> Option<Proc> {
    let child = std::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(args)
        .stdout(std::process::Stdio::null())
        .spawn();
    match child {
        Ok(child) => {
            let p = Proc(child);
            wait_port(port);
            Some(p)
        }
        Err(_) => {
            missing("redis-server");
            None
        }
    }
}
