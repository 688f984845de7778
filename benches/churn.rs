//! Threshold churn: new keys inserted into a cache that is full at its threshold,
//! with the latency of every single insert recorded, beside plain sets of new keys
//! into an unbounded cache holding as many entries (the same build, the same run).
//!
//! ```text
//! cargo bench --bench churn -- [THRESHOLD…] [--threads W] [--procs P] [--inserts N]
//!                              [--pruner] [--no-plain] [--samples S]
//! ```
//! Defaults: thresholds 1,000 / 10,000 / 100,000, one writer thread, N = the
//! threshold clamped to 20,000 … 200,000 measured inserts (after filling to the
//! threshold, which is not measured). `--threads W` runs W writer threads on one
//! handle; `--procs P` runs P writer processes (this binary, re-run) on one
//! directory; `--pruner` adds a thread calling `prune_step(64)` in a loop (cleanup off
//! the request path); `--samples S` sets `eviction_samples`. Each row gives the mean, p50, p99, p99.9 and max of the
//! per-insert latencies of all writers, the ratio of the mean to the plain set's,
//! and the largest overshoot of the shared count over the threshold seen after an
//! insert. `FSCACHE_BENCH_DIR` chooses the filesystem (default /dev/shm).

mod common;
use common::bench_base;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use fscache::FileSystemCache;

const CHILD_ENV: &str = "FSCACHE_CHURN_CHILD";

#[derive(Clone, Copy)]
struct Opts {
    threads: usize,
    procs: usize,
    inserts: Option<usize>,
    pruner: bool,
    plain: bool,
    samples: usize,
}

/// Latencies in nanoseconds, and the largest count seen over the threshold.
struct Run {
    lat: Vec<u64>,
    over: i64,
}

fn open(dir: &Path, threshold: usize, samples: usize) -> FileSystemCache {
    FileSystemCache::builder(dir)
        .threshold(threshold)
        .eviction_samples(samples)
        .open()
        .expect("open cache")
}

fn value() -> [u8; 200] {
    [b'x'; 200]
}

/// Fills `dir` to `n` entries (not measured).
fn fill(cache: &FileSystemCache, n: usize) {
    let v = value();
    for i in 0..n {
        cache.set_bytes(&format!("fill-{i}"), &v).unwrap();
    }
}

/// Inserts `keys` new keys through `cache`, timing each; records the overshoot.
fn insert(cache: &FileSystemCache, prefix: &str, keys: usize, threshold: usize) -> (Vec<u64>, i64) {
    let v = value();
    let mut lat = Vec::with_capacity(keys);
    let mut over = i64::MIN;
    for i in 0..keys {
        let key = format!("{prefix}-{i}");
        let t = Instant::now();
        cache.set_bytes(&key, &v).unwrap();
        lat.push(t.elapsed().as_nanos() as u64);
        if threshold > 0 {
            over = over.max(cache.approximate_len() as i64 - threshold as i64);
        }
    }
    (lat, over)
}

fn run(base: &Path, threshold: usize, bounded: bool, n: usize, o: Opts) -> Run {
    let dir = tempfile::tempdir_in(base).expect("bench dir");
    let limit = if bounded { threshold } else { 0 };
    let cache = open(dir.path(), limit, o.samples);
    fill(&cache, threshold);
    let stop = Arc::new(AtomicBool::new(false));
    let pruner = (o.pruner && bounded).then(|| {
        let (c, stop) = (cache.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let r = c.prune_step(64).unwrap();
                if r.removed() == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        })
    });
    let (mut lat, mut over) = (Vec::with_capacity(n), i64::MIN);
    if o.procs > 1 {
        let out = tempfile::tempdir_in(base).expect("latency dir");
        let children: Vec<_> = (0..o.procs)
            .map(|p| {
                Command::new(std::env::current_exe().unwrap())
                    .env(
                        CHILD_ENV,
                        format!(
                            "{}\t{limit}\t{}\t{p}\t{}\t{}",
                            dir.path().display(),
                            n / o.procs,
                            out.path().display(),
                            o.samples
                        ),
                    )
                    .spawn()
                    .expect("spawn writer process")
            })
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success(), "writer process failed");
        }
        for p in 0..o.procs {
            let text = std::fs::read_to_string(out.path().join(format!("lat-{p}"))).unwrap();
            let mut lines = text.lines();
            over = over.max(lines.next().unwrap().parse().unwrap());
            lat.extend(lines.map(|l| l.parse::<u64>().unwrap()));
        }
    } else {
        let barrier = Arc::new(Barrier::new(o.threads));
        let per = n / o.threads;
        let handles: Vec<_> = (0..o.threads)
            .map(|t| {
                let (c, b) = (cache.clone(), barrier.clone());
                std::thread::spawn(move || {
                    b.wait();
                    insert(&c, &format!("new{t}"), per, limit)
                })
            })
            .collect();
        for h in handles {
            let (l, ov) = h.join().unwrap();
            lat.extend(l);
            over = over.max(ov);
        }
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(p) = pruner {
        p.join().unwrap();
    }
    lat.sort_unstable();
    Run { lat, over }
}

/// A writer process: `dir threshold keys id outdir` in the environment.
fn child(spec: &str) {
    let f: Vec<&str> = spec.split('\t').collect();
    let (dir, threshold, keys, id, out) = (
        PathBuf::from(f[0]),
        f[1].parse::<usize>().unwrap(),
        f[2].parse::<usize>().unwrap(),
        f[3],
        PathBuf::from(f[4]),
    );
    let cache = open(&dir, threshold, f[5].parse().unwrap());
    let (lat, over) = insert(&cache, &format!("proc{id}"), keys, threshold);
    let mut text = format!("{over}\n");
    for l in lat {
        text.push_str(&format!("{l}\n"));
    }
    std::fs::write(out.join(format!("lat-{id}")), text).unwrap();
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1e3
}

fn mean(sorted: &[u64]) -> f64 {
    sorted.iter().sum::<u64>() as f64 / sorted.len() as f64 / 1e3
}

fn row(threshold: usize, what: &str, writers: &str, r: &Run, plain: Option<f64>) {
    let m = mean(&r.lat);
    println!(
        "{threshold:>9} {what:<14} {writers:>7} {:>8} {m:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>9.2} {:>6} {:>8}",
        r.lat.len(),
        pct(&r.lat, 0.50),
        pct(&r.lat, 0.99),
        pct(&r.lat, 0.999),
        r.lat.last().copied().unwrap_or(0) as f64 / 1e3,
        plain.map_or("".into(), |p| format!("{:.2}×", m / p)),
        if r.over == i64::MIN {
            String::new()
        } else {
            r.over.max(0).to_string()
        },
    );
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return child(&spec);
    }
    let mut thresholds = Vec::new();
    let mut o = Opts {
        threads: 1,
        procs: 1,
        inserts: None,
        pruner: false,
        plain: true,
        samples: fscache::EVICTION_SAMPLES,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{what} needs a number"))
        };
        match a.as_str() {
            "--threads" => o.threads = num("--threads").max(1),
            "--procs" => o.procs = num("--procs").max(1),
            "--inserts" => o.inserts = Some(num("--inserts")),
            "--pruner" => o.pruner = true,
            "--no-plain" => o.plain = false,
            "--samples" => o.samples = num("--samples"),
            "--bench" => {}
            other => {
                if let Ok(t) = other.replace([',', '_'], "").parse::<usize>() {
                    thresholds.push(t);
                }
            }
        }
    }
    if thresholds.is_empty() {
        thresholds = vec![1_000, 10_000, 100_000];
    }
    let base = bench_base();
    let writers = if o.procs > 1 {
        format!("{}p", o.procs)
    } else {
        format!("{}t", o.threads)
    };
    println!("# {} ({})", base.display(), fs_type(&base));
    println!(
        "{:>9} {:<14} {:>7} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>6} {:>8}",
        "threshold",
        "run",
        "writers",
        "inserts",
        "mean µs",
        "p50",
        "p99",
        "p99.9",
        "max µs",
        "ratio",
        "max over"
    );
    for t in thresholds {
        let n = o.inserts.unwrap_or(t.clamp(20_000, 200_000));
        let plain = o.plain.then(|| {
            let r = run(&base, t, false, n, o);
            row(t, "plain set", &writers, &r, None);
            mean(&r.lat)
        });
        let r = run(&base, t, true, n, Opts { pruner: false, ..o });
        row(t, "churn", &writers, &r, plain);
        if o.pruner {
            let r = run(&base, t, true, n, o);
            row(t, "churn+pruner", &writers, &r, plain);
        }
    }
}

fn fs_type(p: &Path) -> String {
    Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(p)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
