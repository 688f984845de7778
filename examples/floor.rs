//! fscache against the bare syscalls it needs, on the same filesystem.
//!
//! ```text
//! cargo run --release --example floor -- [DIR] [N] [ROUNDS]
//! ```
//! DIR defaults to /dev/shm (tmpfs); pass a directory on a disk to measure that. The
//! example works in a new directory it creates inside DIR (`fscache-floor-XXXXXX`) and
//! removes only that: nothing else in DIR is touched. Each round runs every workload for the floor and for fscache
//! (alternating which goes first); the table gives the median over rounds of the
//! mean time per operation, and the ratio fscache / floor. The floor is:
//! set = open temp (O_EXCL) + write + close + rename; get = open + read to EOF +
//! close; miss = one failed open; delete = unlink; evict = rename aside + unlink
//! (what removing an entry costs when a rewrite made meanwhile must survive), and
//! the churn floor, a set plus an evict — on pre-built paths and bytes, laid out
//! like fscache's shards. The full criterion suite lives in `benches/`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fscache::FileSystemCache;

const VALUE_LEN: usize = 200;

struct Floor {
    paths: Vec<PathBuf>,
    temps: Vec<PathBuf>,
    absent: Vec<PathBuf>,
}

impl Floor {
    fn new(dir: &Path, n: usize) -> Floor {
        for shard in 0..256 {
            std::fs::create_dir_all(dir.join(format!("{shard:02x}"))).unwrap();
        }
        let path = |k: &str| {
            let h = blake3::hash(k.as_bytes()).to_hex();
            dir.join(&h[..2]).join(h.as_str())
        };
        Floor {
            paths: (0..n).map(|i| path(&format!("key-{i}"))).collect(),
            temps: (0..n)
                .map(|i| {
                    let p = path(&format!("key-{i}"));
                    p.with_file_name(format!(".tmp-{i}"))
                })
                .collect(),
            absent: (0..n).map(|i| path(&format!("absent-{i}"))).collect(),
        }
    }

    fn set(&self, value: &[u8]) {
        for (tmp, path) in self.temps.iter().zip(&self.paths) {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(tmp)
                .unwrap();
            f.write_all(value).unwrap();
            drop(f);
            std::fs::rename(tmp, path).unwrap();
        }
    }

    fn get(&self, buf: &mut Vec<u8>) {
        for path in &self.paths {
            let mut f = File::open(path).unwrap();
            buf.clear();
            let mut chunk = [0u8; 4096];
            loop {
                let n = f.read(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            assert_eq!(buf.len(), VALUE_LEN);
        }
    }

    fn miss(&self) {
        for path in &self.absent {
            assert!(File::open(path).is_err());
        }
    }

    fn delete(&self) {
        for path in &self.paths {
            std::fs::remove_file(path).unwrap();
        }
    }

    /// What an eviction that never removes a rewrite it did not decide on needs at
    /// least: move the name aside (the decision point), then unlink what was moved.
    /// (fscache also reads the moved file's header, and samples candidates.)
    fn evict(&self) {
        for (path, tmp) in self.paths.iter().zip(&self.temps) {
            std::fs::rename(path, tmp).unwrap();
            std::fs::remove_file(tmp).unwrap();
        }
    }
}

fn per_op(n: usize, f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed() / n as u32
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let parent = PathBuf::from(args.next().unwrap_or_else(|| "/dev/shm".into()));
    let n: usize = args.next().map_or(2000, |s| s.parse().expect("N"));
    let rounds: usize = args.next().map_or(7, |s| s.parse().expect("ROUNDS"));
    // Our own directory inside DIR: removed when this ends, and nothing else is.
    let _ = std::fs::create_dir_all(&parent);
    let work = tempfile::Builder::new()
        .prefix("fscache-floor-")
        .tempdir_in(&parent)
        .unwrap_or_else(|e| {
            eprintln!(
                "floor: cannot create a work directory in {}: {e}",
                parent.display()
            );
            std::process::exit(2);
        });
    let base = work.path().to_path_buf();
    let fs_type = std::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(&base)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();

    let floor = Floor::new(&base.join("floor"), n);
    // Threshold counting on (a threshold above N, so no sweep runs in these workloads).
    let cache = FileSystemCache::builder(base.join("cache"))
        .threshold(n * 10)
        .open()
        .unwrap();
    let keys: Vec<String> = (0..n).map(|i| format!("key-{i}")).collect();
    let absent: Vec<String> = (0..n).map(|i| format!("absent-{i}")).collect();
    let value = vec![b'x'; VALUE_LEN];
    let names = [
        "set (new key)",
        "overwrite",
        "get (hit)",
        "get (miss)",
        "delete",
    ];
    let mut results: Vec<[Vec<Duration>; 2]> = names.iter().map(|_| [vec![], vec![]]).collect();
    let mut buf = Vec::with_capacity(4096);
    let mut evict_floor = Vec::new();

    for round in 0..rounds {
        for pass in 0..2 {
            let fscache_turn = (round + pass) % 2 == 1;
            let r = if fscache_turn {
                [
                    per_op(n, || {
                        keys.iter()
                            .for_each(|k| cache.set_bytes(k, &value).unwrap())
                    }),
                    per_op(n, || {
                        keys.iter()
                            .for_each(|k| cache.set_bytes(k, &value).unwrap())
                    }),
                    per_op(n, || {
                        keys.iter().for_each(|k| {
                            assert_eq!(
                                cache.get_bytes(k).unwrap().map(|v| v.len()),
                                Some(VALUE_LEN)
                            )
                        })
                    }),
                    per_op(n, || {
                        absent
                            .iter()
                            .for_each(|k| assert!(cache.get_bytes(k).unwrap().is_none()))
                    }),
                    per_op(n, || {
                        keys.iter().for_each(|k| assert!(cache.delete(k).unwrap()))
                    }),
                ]
            } else {
                [
                    per_op(n, || floor.set(&value)),
                    per_op(n, || floor.set(&value)),
                    per_op(n, || floor.get(&mut buf)),
                    per_op(n, || floor.miss()),
                    per_op(n, || floor.delete()),
                ]
            };
            if !fscache_turn {
                floor.set(&value);
                evict_floor.push(per_op(n, || floor.evict()));
            }
            for (i, d) in r.into_iter().enumerate() {
                results[i][usize::from(fscache_turn)].push(d);
            }
        }
    }

    println!(
        "fscache vs bare syscalls: {} ({fs_type}), N = {n}, {VALUE_LEN} B values, median of {rounds} rounds",
        base.display()
    );
    println!(
        "{:<15} {:>10} {:>10} {:>7}",
        "operation", "floor µs", "fscache µs", "ratio"
    );
    let set_floor = median(results[0][0].clone());
    for (name, [f, c]) in names.iter().zip(results) {
        let (f, c) = (median(f), median(c));
        println!(
            "{name:<15} {:>10.2} {:>10.2} {:>6.2}×",
            f.as_secs_f64() * 1e6,
            c.as_secs_f64() * 1e6,
            c.as_secs_f64() / f.as_secs_f64()
        );
    }

    // The floor of an insert into a full cache: a set and an eviction.
    let evict_floor = median(evict_floor);
    println!(
        "{:<15} {:>10.2} {:>10} {:>7}   (rename aside + unlink; fscache: see churn)",
        "evict",
        evict_floor.as_secs_f64() * 1e6,
        "—",
        "",
    );
    println!(
        "churn floor: set + evict = {:.2} µs = {:.2}× the set floor",
        (set_floor + evict_floor).as_secs_f64() * 1e6,
        (set_floor + evict_floor).as_secs_f64() / set_floor.as_secs_f64()
    );

    // Threshold churn: insert 10× the threshold; amortized cost per insert against
    // the same number of plain sets of new keys into an unbounded cache, same run.
    for threshold in [n / 2, n * 5] {
        let inserts = threshold * 10;
        let run = |threshold: usize| {
            let dir = base.join(format!("churn-{threshold}"));
            let c = FileSystemCache::builder(&dir)
                .threshold(threshold)
                .open()
                .unwrap();
            let mut worst = Duration::ZERO;
            let start = Instant::now();
            for i in 0..inserts {
                let t = Instant::now();
                c.set_bytes(&format!("churn-{i}"), &value).unwrap();
                worst = worst.max(t.elapsed());
            }
            let per = start.elapsed() / inserts as u32;
            let steps = c.stats().steps;
            drop(c);
            std::fs::remove_dir_all(&dir).unwrap();
            (per, worst, steps)
        };
        let (plain, _, _) = run(0);
        let (churn, worst, steps) = run(threshold);
        println!(
            "churn threshold {threshold:>6} ({inserts} inserts): {:.2} µs/insert vs {:.2} plain = {:.2}×, worst insert {:.1} ms, {steps} cleanup steps",
            churn.as_secs_f64() * 1e6,
            plain.as_secs_f64() * 1e6,
            churn.as_secs_f64() / plain.as_secs_f64(),
            worst.as_secs_f64() * 1e3,
        );
    }
    drop(work);
}
