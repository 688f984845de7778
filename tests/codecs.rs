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

#[test]
fn non_finite_floats_round_trip_or_fail() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let json = FileSystemCache::builder(&dir).threshold(0).open()?;
    json.set("f", &Some(1.5f64))?;
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        // JSON has no NaN or infinity: refused, nothing written, the old value kept.
        for err in [
            json.set("f", &Some(bad)).unwrap_err(),
            json.set("f", &vec![("x", bad)]).unwrap_err(),
            json.set("f", &(bad as f32)).unwrap_err(),
        ] {
            assert!(matches!(err, Error::Serialize { .. }), "{err:?}");
            let cause = std::error::Error::source(&err).unwrap().to_string();
            assert!(cause.contains("MessagePack"), "says what to do: {cause}");
        }
        assert_eq!(json.get::<Option<f64>>("f")?, Some(Some(1.5)));
    }
    // A real null, and the word "null", are still fine.
    json.set("n", &(None::<f64>, "null", 0.25))?;
    assert_eq!(
        json.get::<(Option<f64>, String, f64)>("n")?,
        Some((None, "null".into(), 0.25))
    );
    assert!(common::temp_files(&dir).is_empty());

    // MessagePack stores them as they are.
    let (_tmp2, dir2) = temp_cache_dir();
    let mp = FileSystemCache::builder(&dir2)
        .format(Format::MessagePack)
        .open()?;
    mp.set("f", &(f64::NAN, f64::INFINITY, Some(f64::NEG_INFINITY)))?;
    let (nan, inf, neg) = mp.get::<(f64, f64, Option<f64>)>("f")?.unwrap();
    assert!(nan.is_nan() && inf == f64::INFINITY && neg == Some(f64::NEG_INFINITY));
    Ok(())
}

#[cfg(feature = "sessions")]
#[test]
fn session_values_refuse_non_finite_floats() -> TestResult {
    use fscache::session::{SessionConfig, Sessions};
    let (_tmp, dir) = temp_cache_dir();
    let sessions = Sessions::new(FileSystemCache::open(&dir)?, SessionConfig::default())?;
    let mut s = sessions.load(None)?;
    let err = s.insert("score", &f64::NAN).unwrap_err();
    assert!(matches!(err, Error::Serialize { .. }), "{err:?}");
    assert!(s.get::<f64>("score")?.is_none(), "nothing stored");
    s.insert("score", &0.5)?;
    assert_eq!(s.get::<f64>("score")?, Some(0.5));
    Ok(())
}

/// Floats come back bit for bit through JSON (serde_json's default parser can miss
/// the last bit; fscache turns on its exact one), in the cache and in sessions.
#[test]
fn json_floats_round_trip_exactly() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let cache = FileSystemCache::builder(&dir).format(Format::Json).open()?;
    // 0.10576222443769079 is one the fast parser reads as 0.1057622244376908.
    let mut samples = vec![0.10576222443769079f64, 1e-300, 5e-324, f64::MAX, 0.1 + 0.2];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let f = f64::from_bits(x);
        if f.is_finite() {
            samples.push(f);
        }
    }
    cache.set("floats", &samples)?;
    let back: Vec<f64> = cache.get("floats")?.expect("stored");
    for (a, b) in samples.iter().zip(&back) {
        assert_eq!(a.to_bits(), b.to_bits(), "{a:e} came back {b:e}");
    }
    let sessions =
        fscache::session::Sessions::new(cache, fscache::session::SessionConfig::default())?;
    let mut s = sessions.load(None)?;
    s.insert("f", &samples[0])?;
    let cookie = sessions.save(&mut s)?.set_cookie.expect("cookie");
    let s = sessions.load(Some(cookie.split(';').next().unwrap()))?;
    assert_eq!(
        s.get::<f64>("f")?.map(f64::to_bits),
        Some(samples[0].to_bits())
    );
    Ok(())
}
