//! Bounded pruning (issue 11): the count stays within the documented margin of the
//! threshold at every instant, with threads and with processes; no writer waits for
//! another's cleanup (a paused step holding a stripe, forced with a hook); expired
//! entries go within the documented number of writes below the threshold; eviction
//! order is close to exact (measured, with a floor asserted); `prune_step` works off
//! the request path.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use common::{TestResult, child_command, temp_cache_dir};
use fscache::hooks::{self, Point};
use fscache::{FileSystemCache, ManualClock, Ttl};

const VALUE: [u8; 200] = [b'x'; 200];

fn open(dir: &Path, threshold: usize) -> fscache::Result<FileSystemCache> {
    FileSystemCache::builder(dir).threshold(threshold).open()
}

/// Watches the shared count from its own handle until stopped; returns the largest
/// value seen.
fn watch(dir: &Path, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<i64> {
    let c = open(dir, 0).unwrap();
    std::thread::spawn(move || {
        let mut max = 0i64;
        while !stop.load(Ordering::Relaxed) {
            max = max.max(c.approximate_len() as i64);
            std::hint::spin_loop();
        }
        max
    })
}

fn fill(c: &FileSystemCache, n: usize) -> fscache::Result<()> {
    for i in 0..n {
        c.set_bytes(&format!("fill-{i}"), &VALUE)?;
    }
    Ok(())
}

/// `n` keys `prefix-i`, leaving out those on stripe `skip` (a key's stripe is the
/// second byte of its blake3 hash, modulo the 64 lock files).
fn keys_off_stripe(prefix: &str, n: usize, skip: Option<u8>) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .filter(|k| skip.is_none_or(|s| blake3::hash(k.as_bytes()).as_bytes()[1] % 64 != s))
        .take(n)
        .collect()
}

/// The documented margin: the threshold plus one per writer in flight.
#[test]
fn the_count_never_exceeds_the_threshold_by_more_than_the_writers_in_flight() -> TestResult {
    const T: usize = 2_000;
    const THREADS: usize = 4;
    let (_tmp, dir) = temp_cache_dir();
    let c = open(&dir, T)?;
    fill(&c, T)?;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch(&dir, stop.clone());
    let barrier = Arc::new(Barrier::new(THREADS));
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (c, b) = (c.clone(), barrier.clone());
            std::thread::spawn(move || -> fscache::Result<()> {
                b.wait();
                for i in 0..5_000 {
                    c.set_bytes(&format!("t{t}-{i}"), &VALUE)?;
                }
                Ok(())
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap()?;
    }
    stop.store(true, Ordering::Relaxed);
    let max = watcher.join().unwrap() as usize;
    println!("4 threads: largest count seen {max} (threshold {T})");
    assert!(max <= T + THREADS, "count reached {max}");
    assert!(c.stats().evicted >= 20_000 - THREADS as u64);
    assert_eq!(c.stats().sweeps, 0, "no full sweep ran");
    // The count is exact: no drift from the concurrent steps.
    assert_eq!(c.approximate_len(), c.len()?);
    Ok(())
}

#[test]
fn child_entry_point() -> TestResult {
    let Ok(job) = std::env::var("FSCACHE_CHILD") else {
        return Ok(());
    };
    let dir = std::path::PathBuf::from(std::env::var("FSCACHE_CHILD_DIR")?);
    let id = std::env::var("FSCACHE_CHILD_ID")?;
    match job.as_str() {
        "churn" => {
            let c = open(&dir, 2_000)?;
            for i in 0..5_000 {
                c.set_bytes(&format!("p{id}-{i}"), &VALUE)?;
            }
        }
        "churn-100" => {
            let c = open(&dir, 50)?;
            let skip = std::env::var("FSCACHE_SKIP_STRIPE")
                .ok()
                .map(|s| s.parse().unwrap());
            for key in keys_off_stripe(&format!("p{id}"), 100, skip) {
                c.set_bytes(&key, &VALUE)?;
            }
        }
        other => panic!("unknown job {other}"),
    }
    println!("DONE");
    Ok(())
}

#[test]
fn the_margin_holds_across_processes() -> TestResult {
    const T: usize = 2_000;
    let (_tmp, dir) = temp_cache_dir();
    fill(&open(&dir, T)?, T)?;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch(&dir, stop.clone());
    let children: Vec<_> = (0..2)
        .map(|p| child_command("churn", &dir, p).output())
        .collect::<Result<_, _>>()?;
    stop.store(true, Ordering::Relaxed);
    let max = watcher.join().unwrap() as usize;
    for out in &children {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("DONE"));
    }
    println!("2 processes: largest count seen {max} (threshold {T})");
    assert!(max <= T + 2, "count reached {max}");
    let c = open(&dir, T)?;
    assert_eq!(c.approximate_len(), c.len()?);
    assert!(c.len()? <= T);
    Ok(())
}

/// A step paused inside an eviction holds a walker and a stripe lock; writes of other
/// threads and of another process past the threshold go on (their steps skip the busy
/// stripe) instead of waiting for it. In the portable mode a `set` commits under its
/// key's stripe lock, so there the writers use keys of other stripes: a `set` of a key
/// on the busy stripe waits for that one eviction (microseconds in real use), never
/// for a step.
#[test]
fn no_writer_waits_for_another_writers_cleanup() -> TestResult {
    static HOOKS: Mutex<()> = Mutex::new(());
    let _only = HOOKS.lock().unwrap_or_else(|p| p.into_inner());
    let (_tmp, dir) = temp_cache_dir();
    let c = open(&dir, 50)?;
    fill(&c, 50)?;
    let (paused_tx, paused_rx) = mpsc::channel();
    let release = Arc::new(AtomicBool::new(false));
    let paused_once = Arc::new(AtomicBool::new(false));
    {
        let (own, release, paused_once) = (dir.clone(), release.clone(), paused_once.clone());
        let paused_tx = Mutex::new(paused_tx);
        hooks::set_hook(Point::EvictBegin, move |d| {
            if d == own && !paused_once.swap(true, Ordering::SeqCst) {
                paused_tx.lock().unwrap().send(()).unwrap();
                while !release.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Ok(())
        });
    }
    let c1 = c.clone();
    let paused = std::thread::spawn(move || c1.set_bytes("the-paused-one", &VALUE));
    paused_rx.recv_timeout(Duration::from_secs(10))?;
    // The paused step holds a stripe (and its walker): find which, from the lock files.
    let held: Vec<u8> = (0..64u8)
        .filter(|s| {
            // Lock files are made when first used; one that does not exist is not held.
            std::fs::File::open(dir.join(format!("locks/{s:02x}")))
                .is_ok_and(|f| matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)))
        })
        .collect();
    assert_eq!(
        held.len(),
        1,
        "the paused eviction holds one stripe: {held:?}"
    );
    let skip = (c.stats().rename_mode == fscache::RenameMode::Portable).then_some(held[0]);
    // Other writers:
    let (done_tx, done_rx) = mpsc::channel();
    for t in 0..3 {
        let (c, done_tx) = (c.clone(), done_tx.clone());
        std::thread::spawn(move || {
            for key in keys_off_stripe(&format!("t{t}"), 100, skip) {
                c.set_bytes(&key, &VALUE).unwrap();
            }
            done_tx.send(()).unwrap();
        });
    }
    for _ in 0..3 {
        done_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("a writer waited for the paused step");
    }
    let mut child = child_command("churn-100", &dir, 9);
    if let Some(s) = skip {
        child.env("FSCACHE_SKIP_STRIPE", s.to_string());
    }
    let child = child.output()?;
    assert!(
        child.status.success(),
        "{}",
        String::from_utf8_lossy(&child.stderr)
    );
    assert!(String::from_utf8_lossy(&child.stdout).contains("DONE"));
    // They kept the bound while the paused step could not finish its eviction.
    assert!(c.approximate_len() <= 50 + 2, "{}", c.approximate_len());
    release.store(true, Ordering::SeqCst);
    paused.join().unwrap()?;
    hooks::clear_hooks();
    Ok(())
}

/// The expiry bound below the threshold, as it stood before the steps became
/// adaptive (one step of `expiry_budget` (8) headers, 3 shards or 64 names every 32
/// writes: a cycle over the 256 shards in at most 32 × (N / 8 + 256 / 3) writes, an
/// expired entry gone within two cycles); adaptive steps must never do worse. Here
/// they need 144 writes where that bound allows 13,504.
#[test]
fn expired_entries_go_within_the_documented_number_of_writes_below_the_threshold() -> TestResult {
    const N: usize = 1_000;
    let (_tmp, dir) = temp_cache_dir();
    let clock = ManualClock::new();
    let c = FileSystemCache::builder(&dir)
        .threshold(0)
        .clock(clock.clone())
        .open()?;
    for i in 0..N {
        c.set_with_ttl(&format!("short{i}"), &i, Ttl::After(Duration::from_secs(1)))?;
    }
    clock.advance(Duration::from_secs(2));
    let bound = 2 * 32 * (N / 8 + 256 / 3 + 1);
    let mut writes = 0;
    while c.stats().expired < N as u64 {
        // Overwrites of one key: no new names, nothing to evict.
        c.set("busy", &writes)?;
        writes += 1;
        assert!(
            writes <= bound,
            "{} of {N} expired entries removed after {writes} writes",
            c.stats().expired
        );
    }
    println!("{N} expired entries removed within {writes} writes (bound {bound})");
    assert_eq!(c.approximate_len(), 1);
    Ok(())
}

/// A write past the threshold never evicts the entry it just made, even when every
/// entry ties on expiry (a frozen clock, one TTL), so that the eviction order among
/// them is the write ids' (random) order: set-then-get holds for one writer. Each
/// insert here would otherwise lose its own entry about half the time (threshold 1:
/// the pool holds the old entry and the new one).
#[test]
fn a_writes_own_eviction_step_spares_the_entry_it_wrote() -> TestResult {
    for threshold in [1, 2, 13] {
        let (_tmp, dir) = temp_cache_dir();
        let c = FileSystemCache::builder(&dir)
            .threshold(threshold)
            .clock(ManualClock::new())
            .open()?;
        for i in 0..300 {
            let key = format!("key{i}");
            c.set(&key, &i)?;
            assert_eq!(
                c.get::<i32>(&key)?,
                Some(i),
                "threshold {threshold}, insert {i}"
            );
            let len = c.approximate_len();
            assert!(
                len <= threshold + 1,
                "threshold {threshold}, insert {i}: {len} entries"
            );
        }
        assert!(
            c.stats().evicted >= 280,
            "threshold {threshold}: {:?}",
            c.stats()
        );
    }
    Ok(())
}

/// How close eviction is to the exact nearest-expiry order: entries with distinct
/// expiries, then new longer-lived ones past the threshold; the share of the evicted
/// entries that the exact order would have evicted too. Printed for several sample
/// sizes; the default must reach the documented floor.
#[test]
fn eviction_order_is_close_to_exact_and_never_expiring_entries_go_last() -> TestResult {
    const T: usize = 2_000;
    const NEW: usize = 1_000;
    let mut default_precision = 0.0;
    for samples in [1, 2, 4, 8] {
        let (_tmp, dir) = temp_cache_dir();
        let c = FileSystemCache::builder(&dir)
            .threshold(T)
            .eviction_samples(samples)
            .open()?;
        // Expiries 1..=1900 minutes in a shuffled order, and 100 never-expiring.
        let mut order: Vec<usize> = (0..T).collect();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in (1..T).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        for &i in &order {
            let ttl = if i >= T - 100 {
                Ttl::Never
            } else {
                Ttl::After(Duration::from_secs(60 * (i as u64 + 1)))
            };
            c.set_bytes_with_ttl(&format!("old{i}"), &VALUE, ttl)?;
        }
        for i in 0..NEW {
            c.set_bytes_with_ttl(
                &format!("new{i}"),
                &VALUE,
                Ttl::After(Duration::from_secs(1 << 20)),
            )?;
        }
        let survivors: HashSet<usize> = (0..T)
            .filter(|i| c.has(&format!("old{i}")).unwrap())
            .collect();
        let evicted_old: Vec<usize> = (0..T).filter(|i| !survivors.contains(i)).collect();
        let evicted_new = (0..NEW)
            .filter(|i| !c.has(&format!("new{i}")).unwrap())
            .count();
        let evicted = evicted_old.len() + evicted_new;
        assert_eq!(evicted, NEW, "samples {samples}: the count is exact");
        // The exact order evicts old0 … old{NEW-1}: the nearest expiries.
        let exact = evicted_old.iter().filter(|&&i| i < NEW).count();
        let never = evicted_old.iter().filter(|&&i| i >= T - 100).count();
        let precision = exact as f64 / NEW as f64;
        println!(
            "eviction_samples {samples}: {:.1}% of evictions in the exact order's set, \
             {evicted_new} of the new (farthest-expiry) entries evicted, \
             {never} never-expiring evicted",
            precision * 100.0
        );
        assert_eq!(never, 0, "never-expiring entries go last");
        if samples == fscache::EVICTION_SAMPLES {
            default_precision = precision;
        }
    }
    // Measured 82% at the default of 2 samples (92% at 4, 97% at 8); 1 is random.
    assert!(default_precision >= 0.75, "{default_precision}");
    Ok(())
}

/// `prune_step` from a background thread keeps the count under the threshold, so
/// writes seldom evict inline; each call reads at most its budget of headers.
#[test]
fn a_background_prune_step_keeps_cleanup_off_the_request_path() -> TestResult {
    const T: usize = 1_000;
    let (_tmp, dir) = temp_cache_dir();
    let c = open(&dir, T)?;
    fill(&c, T)?;
    let stop = Arc::new(AtomicBool::new(false));
    let max_examined = Arc::new(AtomicI64::new(0));
    let pruner = {
        let (c, stop, max_examined) = (c.clone(), stop.clone(), max_examined.clone());
        std::thread::spawn(move || -> fscache::Result<u64> {
            let mut evicted = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = c.prune_step(64)?;
                max_examined.fetch_max(r.examined as i64, Ordering::Relaxed);
                evicted += r.evicted as u64;
                if r.removed() == 0 {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
            Ok(evicted)
        })
    };
    let before = c.stats().steps;
    for i in 0..5_000 {
        c.set_bytes(&format!("new{i}"), &VALUE)?;
        if i % 500 == 0 {
            // Give the pruner its turn on a loaded machine.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let by_pruner = pruner.join().unwrap()?;
    let inline = c.stats().evicted - by_pruner;
    println!("evicted by the background step: {by_pruner}, inline by writes: {inline}");
    assert!(by_pruner > 0);
    // Within the margin: a write's step may find its candidates just evicted by the
    // background step and leave one name over, which the next step takes.
    assert!(c.approximate_len() <= T + 1, "{}", c.approximate_len());
    assert!(max_examined.load(Ordering::Relaxed) <= 64);
    assert!(c.stats().steps > before);
    Ok(())
}
