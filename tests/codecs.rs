//! Formats, raw bytes, update, and reading across formats.

mod common;

use std::collections::BTreeMap;

use common::{TestResult, temp_cache_dir};
use fscache::{Error, FileSystemCache, Format, Ttl};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Session {
    user_id: u64,
    csrf: String,
    cart: BTreeMap<String, u32>,
    admin: bool,
}

fn sample() -> Session {
    Session {
        user_id: 42,
        csrf: "0123456789abcdef".into(),
        cart: [("apple".to_string(), 3), ("pear".to_string(), 1)].into(),
        admin: false,
    }
}

#[test]
fn values_written_in_one_format_read_after_reopening_with_the_other() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let json = FileSystemCache::builder(&dir).format(Format::Json).open()?;
    json.set("j", &sample())?;
    drop(json);
    let mp = FileSystemCache::builder(&dir)
        .format(Format::MessagePack)
        .open()?;
    assert_eq!(mp.get::<Session>("j")?, Some(sample()));
    mp.set("m", &sample())?;
    // MessagePack is not JSON on disk.
    assert!(serde_json::from_slice::<serde_json::Value>(&mp.get_bytes("m")?.unwrap()).is_err());
    assert_eq!(mp.inc("count-m", 2)?, 2);
    drop(mp);
    let json = FileSystemCache::builder(&dir).format(Format::Json).open()?;
    assert_eq!(json.get::<Session>("m")?, Some(sample()));
    assert_eq!(
        json.inc("count-m", 1)?,
        3,
        "a counter keeps working across formats"
    );
    Ok(())
}

#[test]
fn raw_bytes_round_trip_and_typed_reads_of_them_are_errors() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let c = FileSystemCache::open(&dir)?;
    let blob: Vec<u8> = (0..=255).collect();
    c.set_bytes("blob", &blob)?;
    assert_eq!(c.get_bytes("blob")?, Some(blob));
    c.set_bytes("empty", b"")?;
    assert_eq!(c.get_bytes("empty")?, Some(vec![]));
    let err = c.get::<String>("blob").unwrap_err();
    assert!(matches!(err, Error::Deserialize { .. }), "{err:?}");
    let cause = std::error::Error::source(&err).map(ToString::to_string);
    assert!(
        cause.as_deref().is_some_and(|c| c.contains("get_bytes")),
        "{err}: {cause:?}"
    );
    // get_bytes of a typed value returns its encoding.
    c.set("n", &5)?;
    assert_eq!(c.get_bytes("n")?.as_deref(), Some(&b"5"[..]));
    Ok(())
}

#[test]
fn wrong_type_is_an_error_and_the_entry_stays() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let c = FileSystemCache::open(&dir)?;
    c.set("s", "text")?;
    assert!(matches!(c.get::<u32>("s"), Err(Error::Deserialize { .. })));
    assert_eq!(c.get::<String>("s")?.as_deref(), Some("text"));
    assert_eq!(c.stats().damaged, 0, "a type mismatch is not damage");
    Ok(())
}

#[test]
fn update_reads_modifies_writes_and_deletes() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let c = FileSystemCache::open(&dir)?;
    let v = c.update("cart", Ttl::Default, |cur: Option<Vec<String>>| {
        assert!(cur.is_none());
        Some(vec!["a".into()])
    })?;
    assert_eq!(v, Some(vec!["a".to_string()]));
    let v = c.update("cart", Ttl::Never, |cur: Option<Vec<String>>| {
        let mut cur = cur.unwrap();
        cur.push("b".into());
        Some(cur)
    })?;
    assert_eq!(v.as_deref(), Some(&["a".to_string(), "b".to_string()][..]));
    assert_eq!(c.approximate_len(), 1);
    assert_eq!(
        c.update("cart", Ttl::Default, |_: Option<Vec<String>>| None)?,
        None
    );
    assert!(!c.has("cart")?);
    assert_eq!(c.approximate_len(), 0);
    // A type mismatch does not call the closure and leaves the entry.
    c.set("n", &1)?;
    let r = c.update("n", Ttl::Default, |_: Option<String>| panic!("not called"));
    assert!(matches!(r, Err(Error::Deserialize { .. })));
    assert_eq!(c.get::<i32>("n")?, Some(1));
    Ok(())
}

#[test]
fn a_panicking_update_closure_releases_the_lock() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let c = FileSystemCache::open(&dir)?;
    c.set("k", &1)?;
    let c2 = c.clone();
    let r = std::thread::spawn(move || {
        c2.update("k", Ttl::Default, |_: Option<i32>| -> Option<i32> {
            panic!("boom")
        })
    })
    .join();
    assert!(r.is_err());
    assert_eq!(c.inc("k", 1)?, 2, "the stripe is usable again");
    Ok(())
}

#[test]
fn fsync_durability_writes_and_deletes() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let c = FileSystemCache::builder(&dir)
        .durability(fscache::Durability::Fsync)
        .open()?;
    c.set("k", &sample())?;
    assert_eq!(c.get::<Session>("k")?, Some(sample()));
    assert!(c.delete("k")?);
    assert_eq!(c.inc("n", 3)?, 3);
    Ok(())
}
