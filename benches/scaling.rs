//! Scaling: 1, 2, 4 threads and 1, 2, 4 processes, on distinct keys (set + get) and on
//! one hot key (`update`). Each cell runs for `FSCACHE_SCALING_SECS` (default 2) and
//! reports operations per second and the speed-up over one worker.
//!
//! `cargo bench --bench scaling`. `FSCACHE_BENCH_DIR` chooses the filesystem.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fscache::{FileSystemCache, Ttl};

fn secs() -> f64 {
    std::env::var("FSCACHE_SCALING_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2.0)
}

/// One worker: runs until the deadline, returns operations done.
fn work(dir: &Path, mode: &str, id: usize, deadline: Instant) -> u64 {
    let cache = FileSystemCache::builder(dir).threshold(0).open().unwrap();
    let value = [b'x'; 200];
    let mut ops = 0u64;
    while Instant::now() < deadline {
        for _ in 0..32 {
            match mode {
                "distinct" => {
                    let key = format!("w{id}-{}", ops % 1000);
                    if ops.is_multiple_of(2) {
                        cache.set_bytes(&key, &value).unwrap();
                    } else {
                        cache.get_bytes(&key).unwrap();
                    }
                }
                _ => {
                    cache
                        .update("hot", Ttl::Never, |n: Option<u64>| Some(n.unwrap_or(0) + 1))
                        .unwrap();
                }
            }
            ops += 1;
        }
    }
    ops
}

fn main() {
    // Child process: FSCACHE_SCALING_CHILD=mode,id,dir,deadline_ms_from_now
    if let Ok(spec) = std::env::var("FSCACHE_SCALING_CHILD") {
        let mut parts = spec.splitn(4, ',');
        let (mode, id, ms, dir) = (
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().parse().unwrap(),
            parts.next().unwrap().parse().unwrap(),
            parts.next().unwrap().to_owned(),
        );
        let ops = work(
            Path::new(&dir),
            &mode,
            id,
            Instant::now() + Duration::from_millis(ms),
        );
        println!("{ops}");
        return;
    }
    let base = common::bench_base();
    let secs = secs();
    println!(
        "{} cores; {secs} s per cell",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<9} {:<9} {:>7} {:>12} {:>9}",
        "mode", "workers", "count", "ops/s", "speed-up"
    );
    for mode in ["distinct", "hot"] {
        for kind in ["threads", "processes"] {
            let mut one = 0.0;
            for n in [1usize, 2, 4] {
                let dir = tempfile::tempdir_in(&base).unwrap();
                FileSystemCache::builder(dir.path())
                    .threshold(0)
                    .open()
                    .unwrap();
                let ms = (secs * 1000.0) as u64;
                let total: u64 = if kind == "threads" {
                    let deadline = Instant::now() + Duration::from_millis(ms);
                    let path = dir.path();
                    std::thread::scope(|s| {
                        let hs: Vec<_> = (0..n)
                            .map(|id| s.spawn(move || work(path, mode, id, deadline)))
                            .collect();
                        hs.into_iter().map(|h| h.join().unwrap()).sum()
                    })
                } else {
                    let exe = std::env::current_exe().unwrap();
                    let children: Vec<_> = (0..n)
                        .map(|id| {
                            Command::new(&exe)
                                .env(
                                    "FSCACHE_SCALING_CHILD",
                                    format!("{mode},{id},{ms},{}", dir.path().display()),
                                )
                                .stdout(Stdio::piped())
                                .spawn()
                                .unwrap()
                        })
                        .collect();
                    children
                        .into_iter()
                        .map(|c| {
                            String::from_utf8(c.wait_with_output().unwrap().stdout)
                                .unwrap()
                                .trim()
                                .parse::<u64>()
                                .unwrap()
                        })
                        .sum()
                };
                let rate = total as f64 / secs;
                if n == 1 {
                    one = rate;
                }
                println!(
                    "{mode:<9} {kind:<9} {n:>7} {rate:>12.0} {:>8.2}×",
                    rate / one
                );
            }
        }
    }
}
