//! One system, one directory, all workloads: prints `RESULT workload ops seconds capped`.
//!
//! ```text
//! fscache-compare SYSTEM DIR N SIZE CAP_SECONDS
//! ```
//! SYSTEM: `fscache`, `floor` (the bare syscalls fscache needs, on pre-built paths) or
//! `cacache`. Workloads: W1 set N new keys, W2 N random gets (hits), W3 N gets of
//! absent keys, W4 overwrite all, W6 delete all, W5 threshold churn (threshold N/10,
//! insert N) in a fresh directory. A workload stops early after CAP_SECONDS
//! (`capped` = 1) and reports the operations it did.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

trait System {
    fn set(&mut self, key: &str, value: &[u8]);
    fn get(&mut self, key: &str) -> Option<usize>;
    fn delete(&mut self, key: &str);
}

struct Fs(fscache::FileSystemCache);
impl System for Fs {
    fn set(&mut self, key: &str, value: &[u8]) {
        self.0.set_bytes(key, value).unwrap()
    }
    fn get(&mut self, key: &str) -> Option<usize> {
        self.0.get_bytes(key).unwrap().map(|v| v.len())
    }
    fn delete(&mut self, key: &str) {
        self.0.delete(key).unwrap();
    }
}

struct Floor {
    dir: PathBuf,
    buf: Vec<u8>,
}
impl Floor {
    fn new(dir: &Path) -> Floor {
        for s in 0..256 {
            std::fs::create_dir_all(dir.join(format!("{s:02x}"))).unwrap();
        }
        Floor { dir: dir.to_path_buf(), buf: Vec::new() }
    }
    fn path(&self, key: &str) -> PathBuf {
        let h = blake3::hash(key.as_bytes()).to_hex();
        self.dir.join(&h[..2]).join(h.as_str())
    }
}
impl System for Floor {
    fn set(&mut self, key: &str, value: &[u8]) {
        let path = self.path(key);
        let tmp = path.with_extension("tmp");
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).unwrap();
        f.write_all(value).unwrap();
        drop(f);
        std::fs::rename(&tmp, &path).unwrap();
    }
    fn get(&mut self, key: &str) -> Option<usize> {
        let mut f = File::open(self.path(key)).ok()?;
        self.buf.clear();
        f.read_to_end(&mut self.buf).unwrap();
        Some(self.buf.len())
    }
    fn delete(&mut self, key: &str) {
        let _ = std::fs::remove_file(self.path(key));
    }
}

struct Cacache(PathBuf);
impl System for Cacache {
    fn set(&mut self, key: &str, value: &[u8]) {
        cacache::write_sync(&self.0, key, value).unwrap();
    }
    fn get(&mut self, key: &str) -> Option<usize> {
        cacache::read_sync(&self.0, key).ok().map(|v| v.len())
    }
    fn delete(&mut self, key: &str) {
        cacache::remove_sync(&self.0, key).unwrap();
    }
}

fn open(system: &str, dir: &Path, threshold: usize) -> Option<Box<dyn System>> {
    Some(match system {
        "fscache" => Box::new(Fs(fscache::FileSystemCache::builder(dir)
            .threshold(threshold)
            .no_default_ttl()
            .open()
            .unwrap())),
        "floor" if threshold == 0 => Box::new(Floor::new(dir)),
        "cacache" if threshold == 0 => Box::new(Cacache(dir.to_path_buf())),
        // No threshold to enforce: W5 does not apply.
        _ => return None,
    })
}

/// A session-like JSON object padded to `size` bytes (200 B: user id, csrf token, cart).
fn value(size: usize) -> Vec<u8> {
    let mut v = br#"{"user_id":4242,"csrf":"3q2-7wFh0v9sT4kYbL1xZ8mN5pR6cJ0eD2gA","cart":[["apple",3],["pear",1],["plum",12]],"pad":""#.to_vec();
    while v.len() + 2 < size {
        v.push(b'x');
    }
    v.extend_from_slice(b"\"}");
    v
}

fn run(name: &str, n: usize, cap: Duration, mut op: impl FnMut(usize)) -> usize {
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        op(done);
        done += 1;
        if done % 64 == 0 && start.elapsed() > cap {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("RESULT {name} {done} {secs:.6} {}", u8::from(done < n));
    done
}

/// Prints `LAT inserts mean p50 p99 p99.9 max capped` (µs) of per-insert latencies.
fn report_latencies(mut lat: Vec<u64>, capped: bool) {
    lat.sort_unstable();
    let pct = |p: f64| {
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i] as f64 / 1e3
    };
    let mean = lat.iter().sum::<u64>() as f64 / lat.len() as f64 / 1e3;
    println!(
        "LAT {} {mean:.2} {:.2} {:.2} {:.2} {:.2} {}",
        lat.len(),
        pct(0.5),
        pct(0.99),
        pct(0.999),
        pct(1.0),
        u8::from(capped)
    );
}

/// `churn SYSTEM DIR THRESHOLD INSERTS SIZE CAP`: fills a cache bounded at THRESHOLD
/// entries (not measured), then times each of INSERTS inserts of new keys (or as many
/// as CAP seconds allow). SYSTEM: `fscache`; `fscache-plain` (unbounded, the same
/// fill: plain sets of new keys); `fscache-pruner` (a thread calls `prune_step(64)`).
fn churn(args: &[String]) {
    let [system, dir, threshold, inserts, size, cap] = args else {
        eprintln!("usage: fscache-compare churn SYSTEM DIR THRESHOLD INSERTS SIZE CAP_SECONDS");
        std::process::exit(2);
    };
    let threshold: usize = threshold.parse().unwrap();
    let inserts: usize = inserts.parse().unwrap();
    let value = value(size.parse().unwrap());
    let cap = Duration::from_secs_f64(cap.parse().unwrap());
    // fscache-bytes: the bound as a byte budget (the same entry count, in the
    // length of its entry files: 52 bytes of header and checksum, the key, the value),
    // as diskcache's size_limit bounds it; fscache-lru: the threshold in LRU order.
    let entry_len = (52 + "session:00000000".len() + value.len()) as u64;
    let mut builder = fscache::FileSystemCache::builder(dir).no_default_ttl();
    builder = match system.as_str() {
        "fscache-plain" => builder.threshold(0),
        "fscache-bytes" => builder.threshold(0).max_bytes(threshold as u64 * entry_len),
        "fscache-lru" => builder
            .threshold(threshold)
            .eviction(fscache::Eviction::LeastRecentlyUsed),
        _ => builder.threshold(threshold),
    };
    let cache = builder.open().unwrap();
    for i in 0..threshold {
        cache.set_bytes(&format!("fill:{i:08}"), &value).unwrap();
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pruner = (system == "fscache-pruner").then(|| {
        let (c, stop) = (cache.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if c.prune_step(64).unwrap().removed() == 0 {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
        })
    });
    let start = Instant::now();
    let mut lat = Vec::with_capacity(inserts);
    for i in 0..inserts {
        let key = format!("session:{i:08}");
        let t = Instant::now();
        cache.set_bytes(&key, &value).unwrap();
        lat.push(t.elapsed().as_nanos() as u64);
        if i % 64 == 0 && start.elapsed() > cap {
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(p) = pruner {
        p.join().unwrap();
    }
    let capped = lat.len() < inserts;
    report_latencies(lat, capped);
}

/// `lruget SYSTEM DIR N SIZE CAP`: N entries, then each read once in a shuffled
/// order, every read timed (under LRU each such read stamps its entry).
fn lru_get(args: &[String]) {
    let [system, dir, n, size, cap] = args else {
        eprintln!("usage: fscache-compare lruget SYSTEM DIR N SIZE CAP_SECONDS");
        std::process::exit(2);
    };
    let n: usize = n.parse().unwrap();
    let value = value(size.parse().unwrap());
    let cap = Duration::from_secs_f64(cap.parse().unwrap());
    let policy = if system == "fscache-lru" {
        fscache::Eviction::LeastRecentlyUsed
    } else {
        fscache::Eviction::NearestExpiry
    };
    let cache = fscache::FileSystemCache::builder(dir)
        .threshold(n * 2)
        .no_default_ttl()
        .eviction(policy)
        .open()
        .unwrap();
    for i in 0..n {
        cache.set_bytes(&format!("session:{i:08}"), &value).unwrap();
    }
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order);
    let start = Instant::now();
    let mut lat = Vec::with_capacity(n);
    for (done, i) in order.into_iter().enumerate() {
        let key = format!("session:{i:08}");
        let t = Instant::now();
        assert!(cache.get_bytes(&key).unwrap().is_some());
        lat.push(t.elapsed().as_nanos() as u64);
        if done % 64 == 0 && start.elapsed() > cap {
            break;
        }
    }
    let capped = lat.len() < n;
    report_latencies(lat, capped);
}

/// A fixed-seed Fisher–Yates shuffle (xorshift), so every run reads in one order.
fn shuffle(v: &mut [usize]) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("churn") {
        return churn(&args[2..]);
    }
    if args.get(1).map(String::as_str) == Some("lruget") {
        return lru_get(&args[2..]);
    }
    let [_, system, dir, n, size, cap] = &args[..] else {
        eprintln!("usage: fscache-compare SYSTEM DIR N SIZE CAP_SECONDS");
        std::process::exit(2);
    };
    let dir = PathBuf::from(dir);
    let n: usize = n.parse().unwrap();
    let value = value(size.parse().unwrap());
    let cap = Duration::from_secs_f64(cap.parse().unwrap());
    let keys: Vec<String> = (0..n).map(|i| format!("session:{i:08}")).collect();
    // A fixed pseudo-random order for W2.
    let mut order: Vec<usize> = (0..n).collect();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }

    let mut s = open(system, &dir.join("main"), 0).expect("system");
    // If W1 was capped, the later workloads use the keys it wrote.
    let written = run("W1", n, cap, |i| s.set(&keys[i], &value));
    run("W2", n, cap, |i| assert!(s.get(&keys[order[i] % written]).is_some()));
    run("W3", n, cap, |i| assert!(s.get(&format!("absent:{i:08}")).is_none()));
    run("W4", written, cap, |i| s.set(&keys[i], &value));
    run("W6", written, cap, |i| s.delete(&keys[i]));
    drop(s);
    let threshold = (n / 10).max(1);
    if let Some(mut s) = open(system, &dir.join("churn"), threshold) {
        run("W5", n, cap, |i| s.set(&keys[i], &value));
    }
}
