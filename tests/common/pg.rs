//! PostgreSQL clusters of a test's own, on 127.0.0.1: initdb, start, a SIGKILL, a
//! streaming standby made with pg_basebackup, a promotion. Included with
//! `#[path = "common/pg.rs"] mod pg;` by the tests that run servers of their own.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The newest PostgreSQL's bin directory from Debian's packages.
pub fn pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    rustix::process::getuid().is_root()
}

/// Runs a command line as the postgres user when we are root (initdb, postgres and
/// pgbouncer refuse root); `Err` when it fails (its stderr goes to the test's:
/// a server it starts keeps a captured stderr open, so none is captured).
pub fn run_as_postgres(program: &Path, args: &[&str]) -> Result<(), String> {
    let status = if is_root() {
        let line = std::iter::once(program.display().to_string())
            .chain(args.iter().map(|a| format!("'{a}'")))
            .collect::<Vec<_>>()
            .join(" ");
        Command::new("su")
            .args(["postgres", "-s", "/bin/sh", "-c", &line])
            .stdout(Stdio::null())
            .status()
    } else {
        Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .status()
    }
    .map_err(|e| format!("{}: {e}", program.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{} {args:?}: {status}", program.display()))
    }
}

/// Runs a PostgreSQL tool as the postgres user; panics if it fails.
pub fn pg(tool: &Path, args: &[&str]) {
    if let Err(e) = run_as_postgres(tool, args) {
        panic!("{e}");
    }
}

/// Makes `dir` (and what is under it) the postgres user's when we are root.
pub fn give_to_postgres(dir: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(dir)
            .status()
            .expect("chown");
        assert!(status.success());
    }
}

/// A cluster in a directory of a test's temp dir, listening on 127.0.0.1:`port`;
/// stopped (immediate mode) when dropped.
pub struct Cluster {
    pub bin: PathBuf,
    pub data: PathBuf,
    pub port: u16,
    pub log: PathBuf,
    pub socket_dir: PathBuf,
}

impl Cluster {
    /// A new cluster (initdb, trust authentication, user postgres); not started.
    pub fn init(bin: &Path, dir: &Path, name: &str, port: u16) -> Cluster {
        let data = dir.join(name);
        std::fs::create_dir_all(&data).unwrap();
        give_to_postgres(dir);
        let c = Cluster::at(bin, dir, name, port);
        pg(
            &bin.join("initdb"),
            &["-D", c.data(), "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        c
    }

    /// A streaming standby of `primary` made with pg_basebackup (-R: it follows
    /// the primary once started); not started.
    pub fn standby_of(primary: &Cluster, dir: &Path, name: &str, port: u16) -> Cluster {
        let c = Cluster::at(&primary.bin, dir, name, port);
        give_to_postgres(dir);
        pg(
            &primary.bin.join("pg_basebackup"),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
                "-D",
                c.data(),
                "-R",
                "-X",
                "stream",
                "--no-sync",
            ],
        );
        c
    }

    fn at(bin: &Path, dir: &Path, name: &str, port: u16) -> Cluster {
        Cluster {
            bin: bin.to_owned(),
            data: dir.join(name),
            port,
            log: dir.join(format!("{name}.log")),
            socket_dir: dir.to_owned(),
        }
    }

    fn data(&self) -> &str {
        self.data.to_str().unwrap()
    }

    /// Starts the server with `extra` settings (`-c name=value …`) and waits for it.
    pub fn start(&self, extra: &str) {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off {extra}",
            self.port,
            self.socket_dir.display()
        );
        pg(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                self.data(),
                "-l",
                self.log.to_str().unwrap(),
                "-o",
                &opts,
                "-w",
                "start",
            ],
        );
    }

    /// An immediate stop (a crash: no shutdown checkpoint).
    pub fn stop(&self) {
        let _ = run_as_postgres(
            &self.bin.join("pg_ctl"),
            &["-D", self.data(), "-m", "immediate", "stop"],
        );
    }

    /// SIGKILLs the postmaster (its backends exit when they notice).
    pub fn kill(&self) {
        let pid =
            std::fs::read_to_string(self.data.join("postmaster.pid")).expect("postmaster.pid");
        let pid: i32 = pid.lines().next().unwrap().trim().parse().unwrap();
        let status = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Promotes a standby to primary and waits until it is.
    pub fn promote(&self) {
        pg(
            &self.bin.join("pg_ctl"),
            &["-D", self.data(), "-w", "promote"],
        );
    }

    /// The URL of its postgres database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A plain client of its postgres database.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url(), postgres::NoTls).expect("connect")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.data.join("postmaster.pid").exists() {
            self.stop();
        }
    }
}
