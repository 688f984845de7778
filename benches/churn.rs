//! Threshold churn: insert 10× the threshold into a bounded cache; amortized cost per
//! insert and the worst single insert, beside the same number of plain sets of new
//! keys into an unbounded cache in the same run. Must be flat in the threshold.
//!
//! `cargo bench --bench churn` (thresholds 1,000 / 10,000 / 100,000; pass thresholds
//! as arguments to choose others). `FSCACHE_BENCH_DIR` chooses the filesystem.

mod common;
use common::bench_dir;

use std::time::{Duration, Instant};

use fscache::FileSystemCache;

/// (amortized per insert, worst insert, sweeps)
fn run(threshold: usize, inserts: usize) -> (Duration, Duration, u64) {
    let dir = bench_dir();
    let cache = FileSystemCache::builder(dir.path())
        .threshold(threshold)
        .open()
        .unwrap();
    let value = [b'x'; 200];
    let mut worst = Duration::ZERO;
    let start = Instant::now();
    for i in 0..inserts {
        let t = Instant::now();
        cache.set_bytes(&format!("churn-{i}"), &value).unwrap();
        worst = worst.max(t.elapsed());
    }
    (
        start.elapsed() / inserts as u32,
        worst,
        cache.stats().sweeps,
    )
}

fn main() {
    let thresholds: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let thresholds = if thresholds.is_empty() {
        vec![1_000, 10_000, 100_000]
    } else {
        thresholds
    };
    println!(
        "{:>9} {:>9} {:>12} {:>12} {:>7} {:>11} {:>7}",
        "threshold", "inserts", "plain µs", "churn µs", "ratio", "worst ms", "sweeps"
    );
    for t in thresholds {
        let inserts = t * 10;
        let (plain, _, _) = run(0, inserts);
        let (churn, worst, sweeps) = run(t, inserts);
        println!(
            "{t:>9} {inserts:>9} {:>12.2} {:>12.2} {:>6.2}× {:>11.1} {sweeps:>7}",
            plain.as_secs_f64() * 1e6,
            churn.as_secs_f64() * 1e6,
            churn.as_secs_f64() / plain.as_secs_f64(),
            worst.as_secs_f64() * 1e3,
        );
    }
}
