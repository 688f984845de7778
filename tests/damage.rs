//! Damaged, foreign and hostile files in the cache directory, and bad input.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::symlink;
use std::time::{Duration, SystemTime};

use common::{TestResult, entry_files, entry_path, open_with_clock, temp_cache_dir, temp_files};
use fscache::{Error, FileSystemCache, Ttl};

fn damage_kinds(original: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut flipped = original.to_vec();
    flipped[original.len() - 20] ^= 0x10; // in the payload
    let mut header_flip = original.to_vec();
    header_flip[9] ^= 0x01; // in the expiry
    let mut wrong_version = original.to_vec();
    wrong_version[4] = 9;
    let mut trailing = original.to_vec();
    trailing.extend_from_slice(b"junk");
    vec![
        ("zero-byte", Vec::new()),
        ("truncated header", original[..10].to_vec()),
        ("truncated payload", original[..original.len() - 5].to_vec()),
        ("payload bit flip", flipped),
        ("header bit flip", header_flip),
        ("wrong version", wrong_version),
        ("trailing bytes", trailing),
        (
            "foreign text",
            b"{\"user\": \"mallory\", \"admin\": true}".to_vec(),
        ),
        ("pickle-like", b"\x80\x04\x95\x10\x00\x00\x00".to_vec()),
    ]
}

#[test]
fn every_kind_of_damage_is_a_counted_miss_and_removed_on_touch() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let (c, _) = open_with_clock(&dir, 0);
    c.set(
        "victim",
        "a value that is long enough to damage in the middle",
    )?;
    let path = entry_path(&dir, "victim");
    let original = std::fs::read(&path)?;
    let kinds = damage_kinds(&original);
    for (what, bytes) in &kinds {
        let before = c.stats().damaged;
        std::fs::write(&path, bytes)?;
        assert_eq!(c.get::<String>("victim")?, None, "{what}");
        assert!(!path.exists(), "{what}: removed on the read that found it");
        assert_eq!(c.stats().damaged, before + 1, "{what}");
        // has() reads only the header (documented): it sees damage there; damage
        // past the header is found by the next full read.
        std::fs::write(&path, bytes)?;
        let header_intact = bytes.len() >= 36 && bytes[..36] == original[..36];
        if header_intact {
            assert!(c.has("victim")?, "{what}");
            assert_eq!(c.get::<String>("victim")?, None, "{what}");
        } else {
            assert!(!c.has("victim")?, "{what}");
        }
        assert!(
            !path.exists(),
            "{what}: removed by has or the read after it"
        );
        // And get_bytes never returns the bytes either.
        std::fs::write(&path, bytes)?;
        assert_eq!(c.get_bytes("victim")?, None, "{what}");
        std::fs::write(&path, bytes)?;
        assert_eq!(
            c.inc("victim", 1)?,
            1,
            "{what}: inc starts over on a damaged counter"
        );
        c.delete("victim")?;
        assert_eq!(
            c.stats().damaged,
            before + 4,
            "{what}: each touch found it once"
        );
    }
    Ok(())
}

#[test]
fn an_entry_copied_under_another_keys_name_is_not_returned() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let (c, _) = open_with_clock(&dir, 0);
    c.set("alice", "alice's secret")?;
    c.set("bob", "bob's data")?;
    // Someone copies alice's entry file over bob's name: valid checksum, wrong key.
    std::fs::copy(entry_path(&dir, "alice"), entry_path(&dir, "bob"))?;
    assert_eq!(c.get::<String>("bob")?, None);
    assert!(!c.has("bob")?);
    assert_eq!(c.get::<String>("alice")?.as_deref(), Some("alice's secret"));
    Ok(())
}

#[test]
fn sweep_removes_damage_and_never_evicts_valid_entries_because_of_it() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let (c, _) = open_with_clock(&dir, 10);
    for i in 0..5 {
        c.set(&format!("valid{i}"), &i)?;
    }
    // 20 damaged files under entry names, as a crash or another program might leave.
    for i in 0..20 {
        let p = entry_path(&dir, &format!("ghost{i}"));
        std::fs::write(&p, if i % 2 == 0 { vec![] } else { vec![0xAB; 100] })?;
    }
    // Make the shared count see them (a count corrected by a scan).
    assert_eq!(c.len()?, 5);
    assert_eq!(c.approximate_len(), 25);
    c.set("valid5", &5)?; // 26 > 10: sweep
    let s = c.stats();
    assert_eq!(
        s.evicted, 0,
        "damaged files must not push valid entries out"
    );
    assert!(s.damaged >= 20);
    assert_eq!(entry_files(&dir).len(), 6);
    for i in 0..6 {
        assert_eq!(c.get::<i32>(&format!("valid{i}"))?, Some(i));
    }
    Ok(())
}

#[test]
fn files_of_other_programs_in_shards_are_removed_by_prune_top_level_left_alone() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let (c, _) = open_with_clock(&dir, 0);
    c.set("k", &1)?;
    std::fs::write(dir.join("00").join("notes.txt"), "x")?;
    std::fs::write(dir.join("ab").join("ABCDEF"), "x")?;
    std::fs::create_dir(dir.join("cd").join("subdir"))?;
    std::fs::write(
        dir.join("README-not-ours"),
        "top-level files are not touched",
    )?;
    let report = c.prune()?;
    assert_eq!(report.damaged, 2);
    assert_eq!(report.remaining, 1);
    assert!(!dir.join("00/notes.txt").exists());
    assert!(
        dir.join("cd/subdir").is_dir(),
        "foreign directories are left alone"
    );
    assert!(dir.join("README-not-ours").exists());
    assert_eq!(c.get::<i32>("k")?, Some(1));
    Ok(())
}

#[test]
fn planted_symlinks_are_never_followed() -> TestResult {
    let (tmp, dir) = temp_cache_dir();
    let (c, _) = open_with_clock(&dir, 0);
    c.set("warmup", &0)?;
    let outside = tmp.path().join("outside.txt");
    std::fs::write(&outside, "outside data")?;

    // A symlink where an entry should be.
    let p = entry_path(&dir, "k");
    symlink(&outside, &p)?;
    assert_eq!(c.get_bytes("k")?, None);
    assert!(
        std::fs::symlink_metadata(&p).is_err(),
        "the link itself was removed"
    );
    assert_eq!(
        std::fs::read_to_string(&outside)?,
        "outside data",
        "target untouched"
    );
    symlink(&outside, &p)?;
    assert!(!c.has("k")?);
    // Writing replaces the link, never writes through it.
    symlink(&outside, &p)?;
    c.set("k", "mine")?;
    assert_eq!(std::fs::read_to_string(&outside)?, "outside data");
    assert!(std::fs::symlink_metadata(&p)?.is_file());
    assert_eq!(c.get::<String>("k")?.as_deref(), Some("mine"));

    // A shard directory replaced by a symlink to a directory outside.
    let evil = tmp.path().join("evil-shard");
    std::fs::create_dir(&evil)?;
    let victim_key = "in-evil-shard";
    let vp = entry_path(&dir, victim_key);
    let shard = vp.parent().unwrap().to_path_buf();
    c.set(victim_key, "v")?;
    std::fs::remove_dir_all(&shard)?;
    symlink(&evil, &shard)?;
    // An entry-looking file outside, reachable only through the link.
    std::fs::write(evil.join(vp.file_name().unwrap()), std::fs::read(&p)?)?;
    assert_eq!(
        c.get::<String>(victim_key)?,
        None,
        "not read through the shard link"
    );
    let err = c.set(victim_key, "w").unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("symlink"), "{err}");
    assert_eq!(
        std::fs::read_dir(&evil)?.count(),
        1,
        "nothing written outside"
    );
    // prune repairs the shard.
    let report = c.prune()?;
    assert!(report.damaged >= 1);
    assert!(std::fs::symlink_metadata(&shard)?.is_dir());
    c.set(victim_key, "w")?;
    assert_eq!(c.get::<String>(victim_key)?.as_deref(), Some("w"));
    Ok(())
}

#[test]
fn serialization_failure_is_an_error_and_leaves_nothing() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let (c, _) = open_with_clock(&dir, 0);
    c.set("k", "old")?;
    // JSON maps need string keys.
    let bad: HashMap<(i32, i32), i32> = [((1, 2), 3)].into();
    let err = c.set("k", &bad).unwrap_err();
    assert!(matches!(err, Error::Serialize { .. }), "{err:?}");
    assert!(std::error::Error::source(&err).is_some());
    assert_eq!(c.get::<String>("k")?.as_deref(), Some("old"));
    let err = c.set("new", &bad).unwrap_err();
    assert!(matches!(err, Error::Serialize { .. }));
    assert!(!c.has("new")?);
    assert_eq!(entry_files(&dir).len(), 1);
    assert!(temp_files(&dir).is_empty());
    Ok(())
}

#[test]
fn oversized_values_are_refused() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let c = FileSystemCache::builder(&dir).max_value_size(1000).open()?;
    c.set_bytes("ok", &[1u8; 1000])?;
    let err = c.set_bytes("big", &[1u8; 1001]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ValueTooLarge {
                size: 1001,
                max: 1000,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(matches!(
        c.set("big", &"x".repeat(2000)),
        Err(Error::ValueTooLarge { .. })
    ));
    assert!(!c.has("big")?);
    assert!(temp_files(&dir).is_empty());
    // A cache opened with a smaller limit treats bigger files as damaged, not data.
    drop(c);
    let small = FileSystemCache::builder(&dir).max_value_size(10).open()?;
    assert_eq!(small.get_bytes("ok")?, None);
    assert_eq!(small.stats().damaged, 1);
    Ok(())
}

#[test]
fn any_utf8_key_works_and_stays_inside() -> TestResult {
    let (tmp, dir) = temp_cache_dir();
    let (c, _) = open_with_clock(&dir, 0);
    let long = "k".repeat(10_000);
    let keys = [
        "",
        "../x",
        "../../etc/passwd",
        "/abs/path",
        "a/b",
        "\0",
        "nul\0inside",
        "ünïcødé 🔑",
        ".",
        "..",
        long.as_str(),
    ];
    for (i, k) in keys.iter().enumerate() {
        c.set(k, &i)?;
    }
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(c.get::<usize>(k)?, Some(i), "{k:?}");
    }
    let mut listed = c.keys().collect::<fscache::Result<Vec<_>>>()?;
    listed.sort();
    let mut expected: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    expected.sort();
    assert_eq!(listed, expected);
    // Nothing appeared next to the cache directory.
    let siblings: Vec<_> = std::fs::read_dir(tmp.path())?
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(siblings, vec![std::ffi::OsString::from("cache")]);
    assert!(matches!(
        c.set(&"x".repeat(fscache::MAX_KEY_LEN + 1), &1),
        Err(Error::KeyTooLong { .. })
    ));
    assert!(matches!(
        c.get::<i32>(&"x".repeat(fscache::MAX_KEY_LEN + 1)),
        Err(Error::KeyTooLong { .. })
    ));
    Ok(())
}

#[test]
fn stale_temp_files_are_judged_by_ctime_not_mtime() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let age = Duration::from_millis(300);
    let c = FileSystemCache::builder(&dir)
        .threshold(0)
        .stale_temp_age(age)
        .open()?;
    let stale = dir.join("3f").join(".fscache-tmp-00000000deadbeef");
    std::fs::write(&stale, b"half a write")?;
    std::thread::sleep(age + Duration::from_millis(100));
    // A file just moved aside by a live evictor keeps its entry's old mtime but gets a
    // fresh ctime from the rename: it must not be taken for a crashed writer's.
    let fresh = dir.join("3f").join(".fscache-evict-00000000cafebabe");
    std::fs::write(&fresh, b"an entry being evicted")?;
    let old = SystemTime::now() - fscache::STALE_TEMP_AGE - Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&fresh)?
        .set_modified(old)?;
    let report = c.prune()?;
    assert_eq!(report.stale_temp, 1);
    assert!(!stale.exists());
    assert!(
        fresh.exists(),
        "a file renamed just now is not stale, whatever its mtime"
    );
    Ok(())
}

#[test]
fn a_crashed_evictions_moved_aside_entry_is_swept_and_uncounted() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let clock = fscache::ManualClock::new();
    let c = FileSystemCache::builder(&dir)
        .threshold(0)
        .clock(clock.clone())
        .stale_temp_age(Duration::ZERO)
        .open()?;
    c.set("a", &1)?;
    c.set("b", &2)?;
    c.set_with_ttl("x", &3, Ttl::After(Duration::from_secs(1)))?;
    clock.advance(Duration::from_secs(2));
    assert_eq!(c.approximate_len(), 3);
    // An evictor killed between moving "a" aside and unlinking it: still counted.
    let a = entry_path(&dir, "a");
    let aside = a.with_file_name(".fscache-evict-0000000000000001");
    std::fs::rename(&a, &aside)?;
    // Another process writes while the sweep runs (when it evicts the expired "x"), so
    // the sweep cannot reset the count from its scan: only per-removal counting keeps
    // it right.
    let other = FileSystemCache::builder(&dir).threshold(0).open()?;
    let once = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let own = dir.clone();
    fscache::hooks::set_hook(fscache::hooks::Point::EvictMovedAside, move |d| {
        if d == own && !once.swap(true, std::sync::atomic::Ordering::SeqCst) {
            other.set("c", &4).map_err(std::io::Error::from)?;
        }
        Ok(())
    });
    let report = c.prune();
    fscache::hooks::clear_hooks();
    let report = report?;
    assert_eq!((report.stale_temp, report.expired), (1, 1));
    assert!(!aside.exists());
    assert_eq!(
        c.approximate_len(),
        2,
        "b and c: the moved-aside a was uncounted"
    );
    assert_eq!(c.len()?, 2);
    Ok(())
}

#[test]
fn litter_of_committed_writes_is_swept_at_once_directories_too() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let c = FileSystemCache::builder(&dir).threshold(0).open()?;
    let shard = dir.join("3f");
    let old_file = shard.join(".fscache-old-0000000000000001");
    let old_dir = shard.join(".fscache-old-0000000000000002");
    std::fs::write(&old_file, b"a replaced entry")?;
    std::fs::create_dir_all(old_dir.join("nested"))?;
    std::fs::write(old_dir.join("nested/f"), b"x")?;
    // A symlink inside is removed, never followed.
    let outside = tempfile::tempdir()?;
    std::fs::write(outside.path().join("keep"), b"not the cache's")?;
    std::os::unix::fs::symlink(outside.path(), old_dir.join("link"))?;
    let report = c.prune()?;
    assert_eq!(report.stale_temp, 2);
    assert!(!old_file.exists() && !old_dir.exists());
    assert!(
        outside.path().join("keep").exists(),
        "nothing outside touched"
    );
    Ok(())
}

#[test]
fn ttl_errors_are_typed() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let (c, _) = open_with_clock(&dir, 0);
    assert!(matches!(
        c.set_with_ttl("k", &1, Ttl::After(Duration::ZERO)),
        Err(Error::InvalidTtl { .. })
    ));
    assert!(matches!(
        c.set_with_ttl("k", &1, Ttl::After(Duration::MAX)),
        Err(Error::InvalidTtl { .. })
    ));
    // Past 2^32 seconds (cachelib crashes here) is fine.
    c.set_with_ttl("k", &1, Ttl::After(Duration::from_secs(1 << 33)))?;
    assert_eq!(c.get::<i32>("k")?, Some(1));
    assert!(temp_files(&dir).is_empty());
    Ok(())
}

/// Runs `f` on a thread; fails if it takes more than `secs` (a read that blocks).
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .expect("finished in time (did not block on a FIFO)")
}

#[test]
fn anything_but_a_regular_file_at_an_entry_path_is_a_miss_and_is_removed() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let c = FileSystemCache::builder(&dir).threshold(0).open()?;
    // A directory (with content), a FIFO (a reader would block on it forever) and a
    // socket, each where an entry file should be.
    let d = entry_path(&dir, "dir");
    std::fs::create_dir_all(d.join("inner"))?;
    std::fs::write(d.join("inner/f"), b"x")?;
    let fifo = entry_path(&dir, "fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()?
            .success()
    );
    let sock = entry_path(&dir, "sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock)?;
    for key in ["dir", "fifo", "sock"] {
        let c2 = c.clone();
        let k = key.to_owned();
        let (got, has) = within(10, move || {
            (
                c2.get::<i32>(&k).map_err(|e| e.to_string()),
                c2.has(&k).map_err(|e| e.to_string()),
            )
        });
        assert_eq!(got, Ok(None), "{key}: a miss, not an error");
        assert_eq!(has, Ok(false), "{key}");
    }
    // The reads removed them (damage), so the keys work normally again, in every mode.
    assert!(!d.exists() && !fifo.exists() && !sock.exists());
    assert!(c.stats().damaged >= 3);
    for key in ["dir", "fifo", "sock"] {
        c.set(key, &1)?;
        assert_eq!(c.get::<i32>(key)?, Some(1));
    }

    // Planted again, a sweep removes them without anyone reading the keys first.
    std::fs::remove_file(entry_path(&dir, "dir"))?;
    std::fs::create_dir_all(d.join("inner"))?;
    std::fs::remove_file(&fifo)?;
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()?
            .success()
    );
    let c2 = c.clone();
    let report = within(10, move || c2.prune().map_err(|e| e.to_string()))?;
    assert_eq!(report.damaged, 2, "{report:?}");
    assert!(!d.exists() && !fifo.exists());
    assert_eq!(c.len()?, 1, "sock's entry is intact");
    Ok(())
}
