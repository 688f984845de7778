//! The byte budget (issue 23 item 1): `FileSystemCacheBuilder::max_bytes`. Real files;
//! "on disk" is the sum of the entry files' lengths, which is what the budget counts.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{TestResult, entry_files, entry_path, temp_cache_dir};
use fscache::{Error, Eviction, FileSystemCache, Ttl};

const MIB: u64 = 1 << 20;

fn on_disk(dir: &Path) -> u64 {
    entry_files(dir)
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum()
}

/// 20 MiB of 4 KiB values into a 1 MiB budget: at every point at most 1.25 MiB on
/// disk (measured: the budget plus one entry), and the newest entries are the ones
/// kept, under the default policy (one TTL: the newest expire last) and under
/// least-recently-stored with no TTL; in both rename modes.
#[test]
fn twenty_mib_into_a_one_mib_budget_stays_under_it_and_keeps_the_newest() -> TestResult {
    for (policy, portable) in [
        (Eviction::NearestExpiry, false),
        (Eviction::LeastRecentlyStored, false),
        (Eviction::NearestExpiry, true),
    ] {
        let (_tmp, dir) = temp_cache_dir();
        let mut b = FileSystemCache::builder(&dir)
            .threshold(0)
            .max_bytes(MIB)
            .eviction(policy)
            .force_portable_renames(portable);
        if policy == Eviction::LeastRecentlyStored {
            b = b.no_default_ttl();
        }
        let c = b.open()?;
        let value = vec![7u8; 4096];
        let n = 20 * MIB as usize / value.len();
        let mut worst = 0;
        for i in 0..n {
            c.set_bytes(&format!("k{i:06}"), &value)?;
            if i % 64 == 0 || i == n - 1 {
                let disk = on_disk(&dir);
                worst = worst.max(disk);
                assert!(
                    disk <= MIB + MIB / 4,
                    "{policy:?}: {disk} bytes after {i} writes"
                );
            }
        }
        let stats = c.stats();
        assert_eq!(
            stats.bytes,
            Some(on_disk(&dir)),
            "{policy:?}: the total is exact"
        );
        assert_eq!(stats.max_bytes, Some(MIB));
        let newest = (n - 100..n)
            .filter(|i| entry_path(&dir, &format!("k{i:06}")).exists())
            .count();
        eprintln!(
            "{policy:?} (portable {portable}): at most {worst} bytes on disk, {} entries kept, \
             {newest} of the newest 100",
            c.len()?
        );
        assert!(newest >= 95, "{policy:?}: {newest} of the newest 100 kept");
        assert!(stats.evicted as usize >= n - 260);
    }
    Ok(())
}

#[test]
fn an_entry_larger_than_the_whole_budget_is_refused_with_a_typed_error() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let c = FileSystemCache::builder(&dir)
        .threshold(0)
        .max_bytes(64 * 1024)
        .open()?;
    c.set_bytes("small", &[1u8; 1024])?;
    match c.set_bytes("big", &[0u8; 64 * 1024]) {
        Err(Error::OverByteBudget {
            key,
            size,
            max_bytes,
            ..
        }) => {
            assert_eq!(key, "big");
            assert!(size > 64 * 1024);
            assert_eq!(max_bytes, 64 * 1024);
        }
        other => panic!("expected OverByteBudget, got {other:?}"),
    }
    assert!(!entry_path(&dir, "big").exists());
    assert_eq!(
        c.get_bytes("small")?.map(|v| v.len()),
        Some(1024),
        "nothing evicted for it"
    );
    Ok(())
}

/// The total is shared and kept by every handle once one had a budget: a second
/// handle without one (another process would do the same) overwrites, deletes and
/// lets entries expire, and the total stays the files' sum; the budgeted handle's
/// steps count the other's writes. A quiet `len` corrects files removed by hand.
#[test]
fn every_handle_keeps_the_shared_total_and_len_corrects_it() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    // Entries written before any budget: counted when the first budget arrives.
    let plain = FileSystemCache::builder(&dir).threshold(0).open()?;
    for i in 0..20 {
        plain.set_bytes(&format!("before{i}"), &vec![1u8; 100 * i])?;
    }
    assert_eq!(plain.stats().bytes, None, "not kept before any budget");
    let budgeted = FileSystemCache::builder(&dir)
        .threshold(0)
        .max_bytes(256 * 1024)
        .open()?;
    assert_eq!(budgeted.stats().bytes, Some(on_disk(&dir)));
    for i in 0..200usize {
        let k = format!("k{}", i % 50);
        match i % 5 {
            0 => {
                // A key the `_` arm below wrote (i + 2 ≡ 2 mod 5).
                assert!(i < 50 || plain.delete(&format!("k{}", (i + 2) % 50))?);
            }
            1 => plain.set_bytes_with_ttl(
                &k,
                &vec![2u8; 10 * i],
                Ttl::After(Duration::from_millis(1)),
            )?,
            _ => plain.set_bytes(&k, &vec![3u8; 37 * i])?,
        }
        if i % 7 == 0 {
            // Reads remove expired entries, a step may too.
            std::thread::sleep(Duration::from_millis(2));
            budgeted.get_bytes(&format!("k{}", (i + 1) % 50))?;
        }
        assert_eq!(plain.stats().bytes, Some(on_disk(&dir)), "after op {i}");
    }
    // Past the budget through the plain handle (which keeps the total but has no
    // budget to enforce, as a handle without a threshold evicts nothing): each write
    // of the budgeted handle evicts up to 4 entries until the total is back under.
    for i in 0..100 {
        plain.set_bytes(&format!("bulk{i}"), &[4u8; 4000])?;
    }
    let over = on_disk(&dir);
    assert!(over > 256 * 1024);
    let files_before = entry_files(&dir).len();
    let mut writes = 0;
    while on_disk(&dir) > 256 * 1024 {
        budgeted.set_bytes(&format!("more{writes}"), b"x")?;
        writes += 1;
        assert!(
            writes <= 100,
            "{} bytes after {writes} writes",
            on_disk(&dir)
        );
    }
    // Entries removed by the budgeted writes' steps (each write adds one).
    let evicted = files_before + writes - entry_files(&dir).len();
    eprintln!(
        "{over} bytes: back under the budget after {writes} budgeted writes, \
         {evicted} entries evicted"
    );
    // Several entries per write while the total is far over the budget: up to
    // EVICT_PER_STEP (4), as many entries of average size as the total is past
    // it. Which entries go depends on what the walker samples (expired ones
    // first), so neither their sizes nor the number of writes is asserted
    // beyond the loop's bound.
    assert!(
        evicted >= 3 * writes,
        "{evicted} entries evicted by {writes} writes: not several per write"
    );
    // Files removed by hand: the total is off until a quiet `len` recounts.
    for p in entry_files(&dir).iter().take(5) {
        std::fs::remove_file(p)?;
    }
    assert_ne!(budgeted.stats().bytes, Some(on_disk(&dir)));
    budgeted.len()?;
    assert_eq!(budgeted.stats().bytes, Some(on_disk(&dir)));
    Ok(())
}

/// `prune` evicts down to `low_water_percent` of the budget, in the policy's order.
#[test]
fn prune_evicts_down_to_the_low_water_mark_of_the_budget() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let plain = FileSystemCache::builder(&dir)
        .threshold(0)
        .no_default_ttl()
        .open()?;
    for i in 0..100 {
        plain.set_bytes(&format!("k{i:03}"), &[0u8; 1000])?;
    }
    drop(plain);
    let c = FileSystemCache::builder(&dir)
        .threshold(0)
        .max_bytes(50_000)
        .low_water_percent(50)
        .no_default_ttl()
        .eviction(Eviction::LeastRecentlyStored)
        .open()?;
    let r = c.prune()?;
    let disk = on_disk(&dir);
    assert!(disk <= 25_000 && disk > 24_000, "{disk}");
    assert_eq!(c.stats().bytes, Some(disk));
    assert_eq!(r.evicted + r.remaining, 100);
    Ok(())
}

/// Four threads writing into one budget: at any instant the total exceeds it by at
/// most what the writes in flight add (4 entries here), read from a second handle.
#[test]
fn four_writers_keep_the_budget_within_the_writes_in_flight() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let budget = 512 * 1024;
    let c = FileSystemCache::builder(&dir)
        .threshold(0)
        .max_bytes(budget)
        .open()?;
    let watcher = FileSystemCache::builder(&dir).threshold(0).open()?;
    let entry = 4096 + 52 + 8;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let worst = std::thread::scope(|s| {
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let c = c.clone();
                s.spawn(move || -> fscache::Result<()> {
                    for i in 0..2_000 {
                        c.set_bytes(&format!("t{t}-{i:05}"), &[9u8; 4096])?;
                    }
                    Ok(())
                })
            })
            .collect();
        let watch = s.spawn(|| {
            let mut worst = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                worst = worst.max(watcher.stats().bytes.unwrap_or(0));
            }
            worst
        });
        for w in writers {
            w.join().unwrap().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        watch.join().unwrap()
    });
    eprintln!("4 writers, budget {budget}: at most {worst} bytes at an instant");
    assert!(worst <= budget + 4 * entry, "{worst}");
    assert_eq!(c.stats().bytes, Some(on_disk(&dir)));
    Ok(())
}
