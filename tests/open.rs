//! Opening directories: the marker rules, options, and opening without a scan.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{TestResult, temp_cache_dir};
use fscache::{Error, FileSystemCache};

#[test]
fn missing_directory_is_created_0700_with_marker() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let nested = dir.join("a/b");
    let c = FileSystemCache::open(&nested)?;
    assert_eq!(
        std::fs::metadata(&nested)?.permissions().mode() & 0o777,
        0o700
    );
    let marker = std::fs::read_to_string(nested.join("FSCACHE"))?;
    assert!(marker.contains("format=1"), "{marker}");
    c.set("k", &1)?;
    assert_eq!(c.path(), nested);
    Ok(())
}

#[test]
fn empty_directory_is_adopted() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let c = FileSystemCache::open(tmp.path())?;
    c.set("k", &1)?;
    assert!(tmp.path().join("FSCACHE").exists());
    Ok(())
}

#[test]
fn non_empty_foreign_directory_is_refused_and_untouched() -> TestResult {
    let tmp = tempfile::tempdir()?;
    std::fs::write(tmp.path().join("notes.txt"), "precious")?;
    let before = std::fs::metadata(tmp.path())?.modified()?;
    std::thread::sleep(std::time::Duration::from_millis(20));
    let err = FileSystemCache::open(tmp.path()).unwrap_err();
    // Not even a file created and removed again (the directory's mtime would move).
    assert_eq!(
        std::fs::metadata(tmp.path())?.modified()?,
        before,
        "the directory was written to"
    );
    assert!(matches!(err, Error::NotACache { .. }), "{err:?}");
    assert!(
        err.to_string().contains("not an fscache directory"),
        "{err}"
    );
    let names: Vec<_> = std::fs::read_dir(tmp.path())?.collect();
    assert_eq!(
        names.len(),
        1,
        "nothing was created next to the user's file"
    );
    Ok(())
}

#[test]
fn other_format_versions_are_refused() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    drop(FileSystemCache::open(&dir)?);
    std::fs::write(dir.join("FSCACHE"), "fscache cache directory\nformat=2\n")?;
    let err = FileSystemCache::open(&dir).unwrap_err();
    match &err {
        Error::IncompatibleFormat {
            found, supported, ..
        } => {
            assert_eq!((found.as_str(), *supported), ("2", 1));
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(dir.join("FSCACHE"), "something else entirely")?;
    assert!(matches!(
        FileSystemCache::open(&dir),
        Err(Error::IncompatibleFormat { .. })
    ));
    Ok(())
}

#[test]
fn reopening_keeps_entries_and_count() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let c = FileSystemCache::builder(&dir).threshold(0).open()?;
    for i in 0..50 {
        c.set(&format!("k{i}"), &i)?;
    }
    drop(c);
    let c = FileSystemCache::open(&dir)?;
    assert_eq!(c.approximate_len(), 50);
    assert_eq!(c.get::<i32>("k7")?, Some(7));
    Ok(())
}

/// Open reads the count from the state file, not from the entries: a directory of
/// any size opens in constant time. Proved by planting a wrong count that only a
/// scan (len) corrects.
#[test]
fn open_does_not_scan_entries() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let c = FileSystemCache::builder(&dir).threshold(0).open()?;
    for i in 0..3 {
        c.set(&format!("k{i}"), &i)?;
    }
    drop(c);
    let mut state = std::fs::read(dir.join("fscache.state"))?;
    state[8..16].copy_from_slice(&1_000_000i64.to_ne_bytes());
    std::fs::write(dir.join("fscache.state"), &state)?;
    let c = FileSystemCache::builder(&dir).threshold(0).open()?;
    assert_eq!(
        c.approximate_len(),
        1_000_000,
        "open trusted the shared count"
    );
    assert_eq!(c.stats().damaged, 0);
    assert_eq!(c.len()?, 3);
    assert_eq!(c.approximate_len(), 3, "len corrected it");
    Ok(())
}

#[test]
fn damaged_or_missing_state_file_is_rebuilt_from_a_count() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let c = FileSystemCache::builder(&dir).threshold(0).open()?;
    for i in 0..7 {
        c.set(&format!("k{i}"), &i)?;
    }
    drop(c);
    std::fs::write(dir.join("fscache.state"), b"garbage")?;
    let c = FileSystemCache::builder(&dir).threshold(0).open()?;
    assert_eq!(c.approximate_len(), 7);
    drop(c);
    std::fs::remove_file(dir.join("fscache.state"))?;
    let c = FileSystemCache::builder(&dir).threshold(0).open()?;
    assert_eq!(c.approximate_len(), 7);
    assert_eq!(c.get::<i32>("k3")?, Some(3));
    Ok(())
}

#[test]
fn invalid_options_are_config_errors_not_panics() {
    let (_tmp, dir) = temp_cache_dir();
    let cases = [
        FileSystemCache::builder(&dir).file_mode(0o400),
        FileSystemCache::builder(&dir).file_mode(0o10600),
        FileSystemCache::builder(&dir).dir_mode(0o600),
        FileSystemCache::builder(&dir).default_ttl(Duration::ZERO),
        FileSystemCache::builder(&dir).default_ttl(Duration::MAX),
        FileSystemCache::builder(&dir).max_value_size(0),
        FileSystemCache::builder(&dir).max_value_size(usize::MAX),
        FileSystemCache::builder(&dir).low_water_percent(0),
        FileSystemCache::builder(&dir).low_water_percent(100),
    ];
    for (i, b) in cases.into_iter().enumerate() {
        match b.open() {
            Err(Error::Config { message, .. }) => assert!(!message.is_empty()),
            Err(Error::InvalidTtl { .. }) => {}
            other => panic!("case {i}: {other:?}"),
        }
    }
    assert!(!dir.exists(), "a refused configuration creates nothing");
}

#[test]
fn no_default_ttl_means_entries_never_expire() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let clock = fscache::ManualClock::new();
    let c = FileSystemCache::builder(&dir)
        .no_default_ttl()
        .clock(clock.clone())
        .open()?;
    c.set("k", &1)?;
    clock.advance(Duration::from_secs(10 * 365 * 86400));
    assert_eq!(c.get::<i32>("k")?, Some(1));
    Ok(())
}

#[test]
fn two_handles_opening_a_new_directory_at_once_agree() -> TestResult {
    for _ in 0..20 {
        let (_tmp, dir) = temp_cache_dir();
        std::fs::create_dir(&dir)?;
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || FileSystemCache::open(dir))
            })
            .collect();
        let caches: Vec<FileSystemCache> = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect::<Result<_, _>>()?;
        caches[0].set("k", &1)?;
        assert_eq!(caches[3].get::<i32>("k")?, Some(1));
        assert_eq!(caches[2].approximate_len(), 1);
    }
    Ok(())
}
