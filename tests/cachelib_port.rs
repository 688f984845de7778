//! The behaviours of cachelib's own FileSystemCache test suite, ported, with a manual
//! clock instead of sleeps.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{TestResult, entry_files, entry_path, open_with_clock, temp_cache_dir};
use fscache::{Error, Ttl};

#[test]
fn set_get() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let (c, _) = open_with_clock(&dir, 0);
    for i in 0..3 {
        c.set(&format!("key{i}"), &format!("value{i}"))?;
    }
    for i in 0..3 {
        assert_eq!(
            c.get::<String>(&format!("key{i}"))?,
            Some(format!("value{i}"))
        );
    }
    assert_eq!(c.get::<String>("absent")?, None);
    Ok(())
}

#[test]
fn set_get_many_and_dict_like_access() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let (c, _) = open_with_clock(&dir, 0);
    c.set_many([("a", 1), ("b", 2), ("c", 3)], Ttl::Default)?;
    assert_eq!(
        c.get_many::<i32, _>(["a", "b", "x", "c"])?,
        vec![Some(1), Some(2), None, Some(3)]
    );
    // get_dict: the same as a map.
    let keys = ["a", "b", "x"];
    let dict: HashMap<&str, Option<i32>> = keys.iter().copied().zip(c.get_many(keys)?).collect();
    assert_eq!(dict["a"], Some(1));
    assert_eq!(dict["x"], None);
    Ok(())
}

#[test]
fn delete_and_delete_many_ignore_missing() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let (c, _) = open_with_clock(&dir, 0);
    c.set("foo", "bar")?;
    assert!(c.delete("foo")?);
    assert!(!c.delete("foo")?, "second delete finds nothing");
    assert_eq!(c.get::<String>("foo")?, None);
    c.set_many([("a", 1), ("b", 2)], Ttl::Default)?;
    assert_eq!(c.delete_many(["a", "missing", "b"])?, 2);
    assert_eq!(c.get_many::<i32, _>(["a", "b"])?, vec![None, None]);
    Ok(())
}

#[test]
fn add_never_overwrites() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let (c, clock) = open_with_clock(&dir, 0);
    assert!(c.add("foo", "bar", Ttl::Default)?);
    assert!(!c.add("foo", "qux", Ttl::Default)?);
    assert_eq!(c.get::<String>("foo")?.as_deref(), Some("bar"));
    // ...but an expired entry is absent for add.
    c.set_with_ttl("short", "old", Ttl::After(Duration::from_secs(1)))?;
    clock.advance(Duration::from_secs(2));
    assert!(c.add("short", "new", Ttl::Default)?);
    assert_eq!(c.get::<String>("short")?.as_deref(), Some("new"));
    Ok(())
}

#[test]
fn inc_dec_after_set_and_on_missing_keys() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let (c, _) = open_with_clock(&dir, 0);
    c.set("foo", &1)?;
    assert_eq!(c.inc("foo", 1)?, 2);
    assert_eq!(c.dec("foo", 1)?, 1);
    assert_eq!(c.inc("foo", 10)?, 11);
    assert_eq!(c.get::<i64>("foo")?, Some(11));
    assert_eq!(c.inc("new-up", 5)?, 5);
    assert_eq!(c.dec("new-down", 3)?, -3);
    c.set("text", "not a number")?;
    assert!(matches!(c.inc("text", 1), Err(Error::Deserialize { .. })));
    assert_eq!(c.get::<String>("text")?.as_deref(), Some("not a number"));
    c.set("max", &i64::MAX)?;
    assert!(matches!(c.inc("max", 1), Err(Error::Overflow { .. })));
    assert!(matches!(c.dec("x", i64::MIN), Err(Error::Overflow { .. })));
    assert_eq!(c.get::<i64>("max")?, Some(i64::MAX));
    Ok(())
}

#[test]
fn bool_and_other_types_round_trip() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let (c, _) = open_with_clock(&dir, 0);
    c.set("t", &true)?;
    c.set("f", &false)?;
    c.set("none", &Option::<i32>::None)?;
    c.set("list", &vec![1.5, -2.0])?;
    assert_eq!(c.get::<bool>("t")?, Some(true));
    assert_eq!(c.get::<bool>("f")?, Some(false));
    assert_eq!(
        c.get::<Option<i32>>("none")?,
        Some(None),
        "a stored None is not a miss"
    );
    assert_eq!(c.get::<Vec<f64>>("list")?, Some(vec![1.5, -2.0]));
    Ok(())
}

#[test]
fn expiration_never_vs_short_ttl() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let (c, clock) = open_with_clock(&dir, 0);
    c.set_with_ttl("short", "a", Ttl::After(Duration::from_secs(1)))?;
    c.set_with_ttl("never", "b", Ttl::Never)?;
    c.set("default", "c")?; // 300 s
    clock.advance(Duration::from_millis(999));
    assert!(c.has("short")?);
    clock.advance(Duration::from_millis(1));
    assert_eq!(c.get::<String>("short")?, None);
    assert!(!c.has("short")?);
    assert_eq!(
        entry_files(&dir).len(),
        2,
        "reading the expired entry removed its file"
    );
    clock.advance(Duration::from_secs(298)); // 299 s after the write
    assert!(c.has("default")?);
    clock.advance(Duration::from_secs(1));
    assert!(!c.has("default")?);
    clock.advance(Duration::from_secs(100 * 365 * 24 * 3600));
    assert_eq!(c.get::<String>("never")?.as_deref(), Some("b"));
    Ok(())
}

#[test]
fn has() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let (c, _) = open_with_clock(&dir, 0);
    assert!(!c.has("foo")?);
    c.set("foo", "bar")?;
    assert!(c.has("foo")?);
    c.delete("foo")?;
    assert!(!c.has("foo")?);
    Ok(())
}

#[test]
fn clear() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let (c, _) = open_with_clock(&dir, 0);
    c.set_many((0..20).map(|i| (format!("k{i}"), i)), Ttl::Default)?;
    assert_eq!(c.clear()?, 20);
    assert_eq!(c.len()?, 0);
    assert!(c.is_empty()?);
    assert!(entry_files(&dir).is_empty());
    assert_eq!(c.approximate_len(), 0);
    Ok(())
}

#[test]
fn file_counting_overwrite_not_counted_twice() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let (c, _) = open_with_clock(&dir, 0);
    c.set("foo", "bar")?;
    c.set("foo", "baz")?;
    assert_eq!(c.approximate_len(), 1);
    assert_eq!(c.len()?, 1);
    c.set("moo", "mar")?;
    assert_eq!(c.approximate_len(), 2);
    c.delete("foo")?;
    c.delete("foo")?;
    assert_eq!(c.approximate_len(), 1);
    assert_eq!(c.len()?, 1);
    // The count is shared and survives reopening.
    drop(c);
    let (c, _) = open_with_clock(&dir, 0);
    assert_eq!(c.approximate_len(), 1);
    Ok(())
}

#[test]
fn threshold_bounds_the_entry_count() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let threshold = 13;
    let (c, _) = open_with_clock(&dir, threshold);
    for i in 0..100 {
        c.set(&format!("key{i}"), &i)?;
        let files = entry_files(&dir).len();
        assert!(files <= threshold, "after insert {i}: {files} files");
    }
    // The most recent insert is always kept.
    assert_eq!(c.get::<i32>("key99")?, Some(99));
    // Bounded steps did it: no full sweep ran.
    assert!(c.stats().steps >= 87, "{:?}", c.stats());
    assert_eq!(c.stats().sweeps, 0);
    Ok(())
}

#[test]
fn prune_removes_expired_first_then_keeps_longer_lived() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let clock = fscache::ManualClock::new();
    // Filled without a threshold, then pruned by a handle with one.
    let fill = fscache::FileSystemCache::builder(&dir)
        .threshold(0)
        .clock(clock.clone())
        .open()?;
    fill.set_with_ttl("expired1", &0, Ttl::After(Duration::from_secs(1)))?;
    fill.set_with_ttl("expired2", &0, Ttl::After(Duration::from_secs(1)))?;
    clock.advance(Duration::from_secs(2));
    for (k, ttl) in [("t100", 100), ("t200", 200), ("t300", 300), ("t400", 400)] {
        fill.set_with_ttl(k, &1, Ttl::After(Duration::from_secs(ttl)))?;
    }
    fill.set_with_ttl("never", &2, Ttl::Never)?;
    assert_eq!(entry_files(&dir).len(), 7);
    let c = fscache::FileSystemCache::builder(&dir)
        .threshold(4)
        .low_water_percent(75)
        .clock(clock.clone())
        .open()?;
    // The full sweep: both expired ones go, then five live > 4: evict the
    // nearest-expiry down to the low-water mark of 3: t100 and t200 go, never stays.
    let report = c.prune()?;
    assert_eq!(
        (report.expired, report.evicted, report.remaining),
        (2, 2, 3)
    );
    for (k, live) in [
        ("t100", false),
        ("t200", false),
        ("t300", true),
        ("t400", true),
        ("never", true),
    ] {
        assert_eq!(c.has(k)?, live, "{k}");
    }
    // Past the threshold again, a write's bounded step evicts what is over, nearest
    // expiry first among what it read (here, every entry), never-expiring last.
    c.set_with_ttl("t500", &5, Ttl::After(Duration::from_secs(500)))?;
    assert_eq!(c.approximate_len(), 4, "not past the threshold");
    c.set_with_ttl("t600", &6, Ttl::After(Duration::from_secs(600)))?;
    assert_eq!(c.approximate_len(), 4);
    for (k, live) in [
        ("t300", false),
        ("t400", true),
        ("never", true),
        ("t500", true),
        ("t600", true),
    ] {
        assert_eq!(c.has(k)?, live, "{k}");
    }
    Ok(())
}

#[test]
fn never_expiring_entries_are_evicted_last() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let (c, _) = open_with_clock(&dir, 10);
    for i in 0..5 {
        c.set_with_ttl(&format!("keep{i}"), &i, Ttl::Never)?;
    }
    for i in 0..50 {
        c.set(&format!("churn{i}"), &i)?;
    }
    for i in 0..5 {
        assert!(c.has(&format!("keep{i}"))?);
    }
    Ok(())
}

#[test]
fn truncated_file_is_a_miss_and_removed() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let (c, _) = open_with_clock(&dir, 0);
    c.set("foo", "a value long enough to truncate")?;
    let path = entry_path(&dir, "foo");
    let bytes = std::fs::read(&path)?;
    std::fs::write(&path, &bytes[..bytes.len() / 2])?;
    assert_eq!(c.get::<String>("foo")?, None);
    assert!(!path.exists(), "damaged file removed on touch");
    assert_eq!(c.stats().damaged, 1);
    c.set("foo", "again")?;
    assert_eq!(c.get::<String>("foo")?.as_deref(), Some("again"));
    Ok(())
}
