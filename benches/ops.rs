//! Per-operation cost of fscache beside the bare `std::fs` syscalls that do the same
//! work on the same filesystem (the floor): set = temp (O_EXCL) + write + close +
//! rename; get = open + read to EOF + close; miss = one failed open; delete = unlink.
//!
//! `FSCACHE_BENCH_DIR` chooses the filesystem (default /dev/shm if present, else the
//! system temp dir): run once on a tmpfs and once on a disk. `cargo bench --bench ops`.

mod common;
use common::bench_dir;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fscache::{FileSystemCache, Format, Ttl};

const SIZES: [usize; 3] = [200, 4096, 65536];

static NEXT: AtomicU64 = AtomicU64::new(0);
fn fresh(prefix: &str) -> String {
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The floor, laid out like fscache's shards.
struct Floor {
    dir: PathBuf,
}

impl Floor {
    fn new(dir: &Path) -> Floor {
        for s in 0..256 {
            std::fs::create_dir_all(dir.join(format!("{s:02x}"))).unwrap();
        }
        Floor {
            dir: dir.to_path_buf(),
        }
    }
    fn path(&self, key: &str) -> PathBuf {
        let h = blake3::hash(key.as_bytes()).to_hex();
        self.dir.join(&h[..2]).join(h.as_str())
    }
    fn set(&self, path: &Path, value: &[u8]) {
        let tmp = path.with_extension("tmp");
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .unwrap();
        f.write_all(value).unwrap();
        drop(f);
        std::fs::rename(&tmp, path).unwrap();
    }
    fn get(&self, path: &Path, buf: &mut Vec<u8>) -> usize {
        let mut f = File::open(path).unwrap();
        buf.clear();
        let mut chunk = [0u8; 16384];
        loop {
            let n = f.read(&mut chunk).unwrap();
            if n == 0 {
                return buf.len();
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn ops(c: &mut Criterion) {
    let dir = bench_dir();
    let floor = Floor::new(&dir.path().join("floor"));
    // Threshold counting on (a threshold the benchmarks never reach).
    let cache = FileSystemCache::builder(dir.path().join("cache"))
        .threshold(100_000_000)
        .no_default_ttl()
        .open()
        .unwrap();
    let mut buf = Vec::new();
    for size in SIZES {
        let value = vec![b'v'; size];
        let mut g = c.benchmark_group(format!("ops/{size}B"));
        g.throughput(Throughput::Elements(1));
        g.bench_function("set new key/floor", |b| {
            b.iter(|| floor.set(&floor.path(&fresh("f")), &value))
        });
        g.bench_function("set new key/fscache", |b| {
            b.iter(|| cache.set_bytes(&fresh("c"), &value).unwrap())
        });
        let (fk, ck) = (floor.path("hot"), "hot");
        floor.set(&fk, &value);
        cache.set_bytes(ck, &value).unwrap();
        g.bench_function("overwrite/floor", |b| b.iter(|| floor.set(&fk, &value)));
        g.bench_function("overwrite/fscache", |b| {
            b.iter(|| cache.set_bytes(ck, &value).unwrap())
        });
        g.bench_function("get hit/floor", |b| b.iter(|| floor.get(&fk, &mut buf)));
        g.bench_function("get hit/fscache", |b| {
            b.iter(|| cache.get_bytes(ck).unwrap().unwrap())
        });
        let (fa, ca) = (floor.path("absent"), "absent");
        g.bench_function("get miss/floor", |b| b.iter(|| File::open(&fa).is_err()));
        g.bench_function("get miss/fscache", |b| {
            b.iter(|| cache.get_bytes(ca).unwrap().is_none())
        });
        g.bench_function("has/fscache", |b| b.iter(|| cache.has(ck).unwrap()));
        g.bench_function("delete/floor", |b| {
            b.iter_batched(
                || {
                    let p = floor.path(&fresh("d"));
                    floor.set(&p, &value);
                    p
                },
                |p| std::fs::remove_file(p).unwrap(),
                BatchSize::SmallInput,
            )
        });
        g.bench_function("delete/fscache", |b| {
            b.iter_batched(
                || {
                    let k = fresh("d");
                    cache.set_bytes(&k, &value).unwrap();
                    k
                },
                |k| assert!(cache.delete(&k).unwrap()),
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }

    // The cost of an LRU access stamp (issue 23 item 2): a handle on a manual clock
    // moved past the stamp resolution before every read, so every read stamps; the
    // same reads under the default policy beside it. And the common case, a hot key
    // read again within the resolution (no stamp).
    let mut g = c.benchmark_group("lru get");
    g.throughput(Throughput::Elements(1));
    let value = vec![b'v'; 200];
    for (name, policy) in [
        ("nearest expiry", fscache::Eviction::NearestExpiry),
        (
            "lru, every read stamps",
            fscache::Eviction::LeastRecentlyUsed,
        ),
    ] {
        let clock = fscache::ManualClock::new();
        let c = FileSystemCache::builder(dir.path().join(name))
            .threshold(100_000_000)
            .no_default_ttl()
            .clock(clock.clone())
            .eviction(policy)
            .open()
            .unwrap();
        c.set_bytes("k", &value).unwrap();
        let step = fscache::LRU_STAMP_RESOLUTION * 2;
        g.bench_function(name, |b| {
            b.iter(|| {
                clock.advance(step);
                c.get_bytes("k").unwrap().unwrap()
            })
        });
        if policy == fscache::Eviction::LeastRecentlyUsed {
            g.bench_function("lru, hot key (stamped lately)", |b| {
                b.iter(|| c.get_bytes("k").unwrap().unwrap())
            });
        }
    }
    g.finish();

    // Read-modify-write under the stripe lock.
    let mut g = c.benchmark_group("rmw");
    g.bench_function("inc", |b| b.iter(|| cache.inc("counter", 1).unwrap()));
    let cart: Vec<u32> = (0..40).collect();
    cache.set("cart", &cart).unwrap();
    g.bench_function("update (200 B JSON)", |b| {
        b.iter(|| {
            cache
                .update("cart", Ttl::Never, |c: Option<Vec<u32>>| {
                    let mut c = c.unwrap_or_default();
                    c.rotate_left(1);
                    Some(c)
                })
                .unwrap()
        })
    });
    g.finish();
}

/// A ~200 B session-like value through each codec, and raw bytes of the same size.
fn codecs(c: &mut Criterion) {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Session {
        user_id: u64,
        csrf: String,
        cart: Vec<(String, u32)>,
    }
    let value = Session {
        user_id: 4242,
        csrf: "3q2-7wFh0v9sT4kYbL1xZ8mN5pR6cJ0eD2gA".into(),
        cart: (0..6).map(|i| (format!("item-{i}"), i)).collect(),
    };
    let dir = bench_dir();
    let mut g = c.benchmark_group("codec");
    for format in [Format::Json, Format::MessagePack] {
        let cache = FileSystemCache::builder(dir.path().join(format!("{format:?}")))
            .threshold(0)
            .open()
            .unwrap();
        cache.set("s", &value).unwrap();
        g.bench_function(BenchmarkId::new("set", format!("{format:?}")), |b| {
            b.iter(|| cache.set("s", &value).unwrap())
        });
        g.bench_function(BenchmarkId::new("get", format!("{format:?}")), |b| {
            b.iter(|| cache.get::<Session>("s").unwrap().unwrap())
        });
    }
    let raw = FileSystemCache::builder(dir.path().join("raw"))
        .threshold(0)
        .open()
        .unwrap();
    let bytes = serde_json::to_vec(&value).unwrap();
    raw.set_bytes("s", &bytes).unwrap();
    g.bench_function(BenchmarkId::new("set", "raw"), |b| {
        b.iter(|| raw.set_bytes("s", &bytes).unwrap())
    });
    g.bench_function(BenchmarkId::new("get", "raw"), |b| {
        b.iter(|| raw.get_bytes("s").unwrap().unwrap())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(30);
    targets = ops, codecs
}
criterion_main!(benches);
