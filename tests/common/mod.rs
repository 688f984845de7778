//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use fscache::{FileSystemCache, ManualClock};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A fresh cache directory path (not yet created) inside a temp dir.
pub fn temp_cache_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("cache");
    (tmp, dir)
}

/// A cache with a manual clock and the given threshold.
pub fn open_with_clock(dir: &Path, threshold: usize) -> (FileSystemCache, ManualClock) {
    let clock = ManualClock::at(1_800_000_000_000);
    let cache = FileSystemCache::builder(dir)
        .threshold(threshold)
        .clock(clock.clone())
        .open()
        .expect("open cache");
    (cache, clock)
}

/// Every entry file (not temp files) under the cache directory.
pub fn entry_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(dir).expect("read cache dir") {
        let shard = shard.expect("dir entry");
        let name = shard.file_name();
        let name = name.to_string_lossy();
        if name.len() != 2 || !shard.file_type().expect("file type").is_dir() {
            continue;
        }
        for f in std::fs::read_dir(shard.path()).expect("read shard") {
            let f = f.expect("dir entry");
            if f.file_name().len() == 64 {
                out.push(f.path());
            }
        }
    }
    out.sort();
    out
}

/// Every temp or evict file left in shard directories.
pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(dir).expect("read cache dir") {
        let shard = shard.expect("dir entry");
        if !shard.file_type().expect("file type").is_dir() || shard.file_name().len() != 2 {
            continue;
        }
        for f in std::fs::read_dir(shard.path()).expect("read shard") {
            let f = f.expect("dir entry");
            if f.file_name().to_string_lossy().starts_with(".fscache-") {
                out.push(f.path());
            }
        }
    }
    out
}

/// The path of `key`'s entry file (the documented layout: shard = first two hex digits).
pub fn entry_path(dir: &Path, key: &str) -> PathBuf {
    let hex = blake3::hash(key.as_bytes()).to_hex();
    dir.join(&hex[..2]).join(hex.as_str())
}

/// A command that re-runs this test binary as a child process running only the test
/// named `child_entry_point`, with `FSCACHE_CHILD=<job>`, the cache directory and an
/// id in its environment. Each test file that spawns children defines that test.
pub fn child_command(job: &str, dir: &Path, id: usize) -> std::process::Command {
    child_command_of(&std::env::current_exe().expect("test binary"), job, dir, id)
}

/// [`child_command`] running the test binary `exe` (a copy other users can run).
pub fn child_command_of(exe: &Path, job: &str, dir: &Path, id: usize) -> std::process::Command {
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "child_entry_point",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("FSCACHE_CHILD", job)
    .env("FSCACHE_CHILD_DIR", dir)
    .env("FSCACHE_CHILD_ID", id.to_string());
    cmd
}

/// A test that cannot run here: under `CI=true` that is a failure (CI must run every
/// test), elsewhere a visible skip. Never a silent pass.
pub fn cannot_run(why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI must run this test, but: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

/// The `name=value` part of a response's (first) `Set-Cookie` header.
pub fn set_cookie_pair(resp: &ureq::http::Response<ureq::Body>) -> String {
    let header = resp
        .headers()
        .get("set-cookie")
        .expect("a Set-Cookie header");
    let value = header.to_str().expect("an ASCII Set-Cookie header");
    value.split(';').next().unwrap_or_default().to_owned()
}

/// The example server's binary (`examples/server.rs`; `cargo test` builds the server
/// package's example beside the test binaries).
pub fn server_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/server");
    assert!(
        bin.exists(),
        "{} is missing: cargo test builds it (or: cargo build --example server)",
        bin.display()
    );
    bin
}
pub mod faulty;
pub mod lossy_proxy;
pub mod stores;
