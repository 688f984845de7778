//! Soak under load: 4 threads and 2 processes doing mixed operations with a small
//! threshold and short TTLs. Zero errors, the entry count within the documented
//! bound, no leaked descriptors or temp files, memory flat.
//!
//! `FSCACHE_SOAK_SECS` sets the duration (default 10; CI runs 60).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{TestResult, child_command, entry_files, temp_cache_dir, temp_files};
use fscache::{FileSystemCache, Ttl};

const THRESHOLD: usize = 50;
const THREADS: usize = 4;
const PROCS: usize = 2;

fn soak_secs() -> u64 {
    std::env::var("FSCACHE_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

fn open(dir: &std::path::Path) -> FileSystemCache {
    FileSystemCache::builder(dir)
        .threshold(THRESHOLD)
        .open()
        .unwrap()
}

/// One worker's loop: returns (operations, errors).
fn work(cache: &FileSystemCache, seed: u64, stop: &AtomicBool) -> (u64, u64) {
    let mut x = seed | 1;
    let mut rng = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut ops, mut errors) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let key = format!("k{}", rng() % 200);
        let ttl = Ttl::After(Duration::from_millis(50 + rng() % 450));
        let r = match rng() % 8 {
            0 | 1 => cache.set_with_ttl(&key, &(key.clone(), ops), ttl).map(drop),
            2 | 3 => cache.get::<(String, u64)>(&key).map(|v| {
                if let Some((k, _)) = v {
                    assert_eq!(k, key);
                }
            }),
            4 => cache.delete(&key).map(drop),
            5 => cache.inc(&format!("n{}", rng() % 10), 1).map(drop),
            6 => cache
                .update(&key, ttl, |v: Option<(String, u64)>| {
                    Some((key.clone(), v.map_or(0, |v| v.1 + 1)))
                })
                .map(drop),
            _ => cache.add(&key, &(key.clone(), 0u64), ttl).map(drop),
        };
        ops += 1;
        if let Err(e) = r {
            errors += 1;
            eprintln!("soak error: {e}");
        }
    }
    (ops, errors)
}

#[test]
fn child_entry_point() -> TestResult {
    let Ok(job) = std::env::var("FSCACHE_CHILD") else {
        return Ok(());
    };
    assert_eq!(job, "soak");
    let dir = std::env::var("FSCACHE_CHILD_DIR")?;
    let id: u64 = std::env::var("FSCACHE_CHILD_ID")?.parse()?;
    let cache = open(dir.as_ref());
    let stop = AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_secs(soak_secs());
    let (ops, errors) = std::thread::scope(|s| {
        let h = s.spawn(|| work(&cache, 1000 + id, &stop));
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap()
    });
    println!("\nRESULT {ops} {errors}");
    Ok(())
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0)
        * 4
}

#[test]
fn mixed_load_with_sweeps_and_short_ttls() -> TestResult {
    let secs = soak_secs();
    let (_tmp, dir) = temp_cache_dir();
    let cache = open(&dir);
    // Warm up: every stripe lock and the sweep lock are opened lazily, once per
    // handle (at most 65 descriptors); open them all before counting.
    for i in 0..2000 {
        cache.inc(&format!("warm{i}"), 1)?;
    }
    cache.clear()?;
    cache.prune()?;
    let fds_before = open_fds();
    let children: Vec<_> = (0..PROCS)
        .map(|i| {
            child_command("soak", &dir, i)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let stop = AtomicBool::new(false);
    let total_ops = AtomicU64::new(0);
    let total_errors = AtomicU64::new(0);
    // The documented margin: one name per writer in flight past the threshold.
    let bound = THRESHOLD + THREADS + PROCS;
    let (mut max_entries, mut max_listed, mut rss_samples) = (0usize, 0usize, Vec::new());
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (cache, stop, total_ops, total_errors) = (&cache, &stop, &total_ops, &total_errors);
            s.spawn(move || {
                let (ops, errors) = work(cache, 42 + t as u64, stop);
                total_ops.fetch_add(ops, Ordering::Relaxed);
                total_errors.fetch_add(errors, Ordering::Relaxed);
            });
        }
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(250));
            // The shared count is exact at an instant; a directory listing is not (it
            // spans milliseconds of churn), so it is only reported.
            max_entries = max_entries.max(cache.approximate_len());
            max_listed = max_listed.max(entry_files(&dir).len());
            rss_samples.push(rss_kib());
        }
        stop.store(true, Ordering::Relaxed);
    });
    for child in children {
        let out = child.wait_with_output()?;
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r.to_owned()))
            .expect("child result");
        let mut it = line.split_whitespace().map(|n| n.parse::<u64>().unwrap());
        total_ops.fetch_add(it.next().unwrap(), Ordering::Relaxed);
        total_errors.fetch_add(it.next().unwrap(), Ordering::Relaxed);
    }
    let (ops, errors) = (total_ops.into_inner(), total_errors.into_inner());
    let first = rss_samples[rss_samples.len() / 4];
    let last = *rss_samples.last().unwrap();
    eprintln!(
        "soak: {secs} s, {ops} operations, {errors} errors, max {max_entries} entries counted \
         ({max_listed} listed; bound {bound}), fds {fds_before} -> {}, RSS {first} -> {last} KiB",
        open_fds()
    );
    assert_eq!(errors, 0);
    assert!(ops > 1000);
    assert!(max_entries <= bound, "{max_entries} entries > {bound}");
    // A handle keeps its walkers' directory streams open between cleanup steps: at
    // most 4 (one per walker), whatever the load.
    let fds_after = open_fds();
    assert!(
        (fds_before..=fds_before + 4).contains(&fds_after),
        "leaked file descriptors: {fds_before} -> {fds_after}"
    );
    assert!(temp_files(&dir).is_empty(), "temp files left behind");
    assert!(
        last <= first + 8 * 1024,
        "RSS grew from {first} to {last} KiB"
    );
    assert_eq!(cache.stats().damaged, 0);
    // Quiet now: the shared count and the files agree exactly.
    let files = entry_files(&dir).len();
    assert_eq!(cache.approximate_len(), files);
    assert!(
        cache.len()? <= files,
        "live entries are a subset (short TTLs expire)"
    );
    Ok(())
}
