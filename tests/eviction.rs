//! Eviction policies (issue 23 item 2): `FileSystemCacheBuilder::eviction` with
//! `Eviction::{NearestExpiry, LeastRecentlyStored, LeastRecentlyUsed}`. Real files, the
//! real clock (the recency policies rank by the files' modification times).

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{TestResult, entry_path, temp_cache_dir};
use fscache::{Eviction, FileSystemCache, Ttl};

fn open(dir: &Path, policy: Eviction) -> fscache::Result<FileSystemCache> {
    FileSystemCache::builder(dir)
        .threshold(1_000)
        .no_default_ttl()
        .eviction(policy)
        .open()
}

/// A full cache of 1,000 entries whose first 100 (the oldest) are read often while 600
/// new keys flood in; returns how many of those 100 hot keys are left.
fn hot_keys_left(policy: Eviction) -> fscache::Result<usize> {
    let (_tmp, dir) = temp_cache_dir();
    let c = open(&dir, policy)?;
    for i in 0..1_000 {
        c.set_bytes(&format!("key{i}"), &[b'x'; 200])?;
    }
    // Past the filesystem's timestamp resolution: the flood's writes and reads are
    // later than every write of the fill.
    std::thread::sleep(Duration::from_millis(30));
    let mut hot = 0;
    for i in 0..600 {
        for _ in 0..2 {
            c.get_bytes(&format!("key{hot}"))?;
            hot = (hot + 1) % 100;
        }
        c.set_bytes(&format!("new{i}"), &[b'y'; 200])?;
    }
    assert!(c.approximate_len() <= 1_000 + fscache::EVICT_PER_STEP);
    Ok((0..100)
        .filter(|i| entry_path(&dir, &format!("key{i}")).exists())
        .count())
}

#[test]
fn with_lru_keys_read_often_survive_a_flood_of_new_keys() -> TestResult {
    let lru = hot_keys_left(Eviction::LeastRecentlyUsed)?;
    let stored = hot_keys_left(Eviction::LeastRecentlyStored)?;
    let expiry = hot_keys_left(Eviction::NearestExpiry)?;
    eprintln!(
        "hot keys left of 100 after 600 new keys into a full 1,000: LRU {lru}, \
         least recently stored {stored}, nearest expiry {expiry}"
    );
    assert!(lru >= 80, "LRU kept {lru} of 100 hot keys");
    // The oldest writes go first without the reads counting.
    assert!(
        stored <= 30,
        "least recently stored kept {stored} of the 100 oldest"
    );
    Ok(())
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[test]
fn lru_reads_stamp_the_entry_and_other_policies_never_do() -> TestResult {
    for policy in [
        Eviction::LeastRecentlyUsed,
        Eviction::LeastRecentlyStored,
        Eviction::NearestExpiry,
    ] {
        let (_tmp, dir) = temp_cache_dir();
        // The stamp resolution is judged by the handle's clock; the stamps themselves
        // are real times, like the files' own.
        let clock = fscache::ManualClock::new();
        let c = FileSystemCache::builder(&dir)
            .no_default_ttl()
            .clock(clock.clone())
            .eviction(policy)
            .open()?;
        c.set_bytes_with_ttl("k", b"v", Ttl::Never)?;
        let path = entry_path(&dir, "k");
        let (written, bytes) = (mtime(&path), std::fs::read(&path)?);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(c.get_bytes("k")?.as_deref(), Some(&b"v"[..]));
        let first = mtime(&path);
        assert_eq!(
            first > written,
            policy == Eviction::LeastRecentlyUsed,
            "{policy:?}"
        );
        // More reads within the stamp resolution (1.024 s) stamp nothing more.
        std::thread::sleep(Duration::from_millis(30));
        for _ in 0..60 {
            assert_eq!(c.get_bytes("k")?.as_deref(), Some(&b"v"[..]));
        }
        assert_eq!(mtime(&path), first, "{policy:?}");
        if policy == Eviction::LeastRecentlyUsed {
            clock.advance(fscache::LRU_STAMP_RESOLUTION);
            std::thread::sleep(Duration::from_millis(30));
            c.get_bytes("k")?;
            assert!(
                mtime(&path) > first,
                "a read after the resolution stamps again"
            );
        }
        assert_eq!(
            std::fs::read(&path)?,
            bytes,
            "{policy:?}: the bytes are never rewritten"
        );
    }
    Ok(())
}

/// A full `prune` evicts in the policy's exact order: least recently stored keeps the
/// newest writes, whatever their TTLs.
#[test]
fn prune_evicts_in_the_policys_exact_order() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let c = FileSystemCache::builder(&dir)
        .threshold(0)
        .no_default_ttl()
        .open()?;
    // Written in two batches, far enough apart for the timestamps; the old batch
    // expires last, so nearest expiry would keep it.
    for i in 0..50 {
        c.set_with_ttl(
            &format!("old{i}"),
            &i,
            Ttl::After(Duration::from_secs(3_600)),
        )?;
    }
    std::thread::sleep(Duration::from_millis(30));
    for i in 0..50 {
        c.set_with_ttl(&format!("new{i}"), &i, Ttl::After(Duration::from_secs(60)))?;
    }
    drop(c);
    let c = FileSystemCache::builder(&dir)
        .threshold(50)
        .low_water_percent(98)
        .no_default_ttl()
        .eviction(Eviction::LeastRecentlyStored)
        .open()?;
    let r = c.prune()?;
    // Down to 98% of 50: 49 stay, all of them from the newer batch.
    assert_eq!(r.evicted, 51);
    let kept = |prefix: &str| {
        (0..50)
            .filter(|i| entry_path(&dir, &format!("{prefix}{i}")).exists())
            .count()
    };
    assert_eq!(
        (kept("old"), kept("new")),
        (0, 49),
        "the newest writes stay"
    );
    Ok(())
}
