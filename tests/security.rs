//! Security properties of the session layer: id uniqueness and shape, and that
//! hostile cookies never reach the store.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fscache::FileSystemCache;
use fscache::session::{ID_LEN, MAX_COOKIE_VALUE_LEN, SessionConfig, Sessions};
use fscache::store::{MergeFn, Store, Version, Versioned};

/// A store that counts every call and delegates to a real cache.
struct Counting {
    inner: FileSystemCache,
    calls: AtomicUsize,
}

impl Counting {
    fn count(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
}

impl Store for Counting {
    fn engine(&self) -> &'static str {
        "counting"
    }
    fn load(&self, key: &str) -> fscache::Result<Option<Versioned>> {
        self.count();
        self.inner.load(key)
    }
    fn save(&self, key: &str, value: &[u8], ttl: Duration) -> fscache::Result<()> {
        self.count();
        self.inner.save(key, value, ttl)
    }
    fn insert(&self, key: &str, value: &[u8], ttl: Duration) -> fscache::Result<bool> {
        self.count();
        self.inner.insert(key, value, ttl)
    }
    fn compare_and_set(
        &self,
        key: &str,
        expected: &Version,
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> fscache::Result<bool> {
        self.count();
        self.inner.compare_and_set(key, expected, new, ttl)
    }
    fn remove(&self, key: &str) -> fscache::Result<bool> {
        self.count();
        self.inner.remove(key)
    }
    fn touch(&self, key: &str, ttl: Duration) -> fscache::Result<bool> {
        self.count();
        Store::touch(&self.inner, key, ttl)
    }
    fn update(
        &self,
        key: &str,
        ttl: Duration,
        merge: &mut MergeFn<'_>,
    ) -> fscache::Result<Option<Vec<u8>>> {
        self.count();
        Store::update(&self.inner, key, ttl, merge)
    }
}

#[test]
fn a_million_ids_are_unique_43_char_url_safe_base64() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let sessions = Sessions::new(FileSystemCache::open(tmp.path())?, SessionConfig::default())?;
    let mut seen = HashSet::with_capacity(1_000_000);
    for _ in 0..1_000_000 {
        let s = sessions.load(None)?;
        let id = s.id();
        assert_eq!(id.len(), ID_LEN);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{id}"
        );
        assert!(seen.insert(id.to_owned()), "duplicate id");
    }
    // 256 bits: every character position takes many values across a million ids.
    for pos in [0, 21, 41] {
        let distinct: HashSet<u8> = seen.iter().map(|id| id.as_bytes()[pos]).collect();
        assert_eq!(distinct.len(), 64, "position {pos}");
    }
    // The last character carries 4 bits (256 = 42 × 6 + 4): 16 values.
    let last: HashSet<u8> = seen.iter().map(|id| id.as_bytes()[42]).collect();
    assert_eq!(last.len(), 16);
    Ok(())
}

#[test]
fn hostile_cookies_never_reach_the_store() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    for keys in [vec![], vec!["secret"]] {
        let store = Counting {
            inner: FileSystemCache::open(tmp.path())?,
            calls: AtomicUsize::new(0),
        };
        let sessions = Sessions::new(store, SessionConfig::default().signing_keys(&keys))?;
        let well_formed = "A".repeat(ID_LEN);
        let oversized = format!("session={}", "A".repeat(MAX_COOKIE_VALUE_LEN + 1));
        let mut hostile = vec![
            oversized.clone(),
            "session=../../../etc/passwd".into(),
            "session=AAAA".into(),
            format!("session={}!", &well_formed[1..]),
            format!("session={well_formed}.{}", "0".repeat(64)),
            format!("session={well_formed}.zz"),
            "session=".into(),
        ];
        if keys.is_empty() {
            // Unsigned: a well-formed id is looked up (and misses); here only shape
            // is checked, so leave it out of the no-access list.
        } else {
            hostile.push(format!("session={well_formed}"));
        }
        for cookie in &hostile {
            let s = sessions.load(Some(cookie))?;
            assert!(s.is_new());
        }
        assert_eq!(
            sessions.store().calls.load(Ordering::SeqCst),
            0,
            "keys {keys:?}: no store access"
        );
        // A well-formed (and, with keys, signed) cookie does reach the store.
        let mut s = sessions.load(None)?;
        s.insert("k", &1)?;
        let c = sessions.save(&mut s)?.set_cookie.unwrap();
        let before = sessions.store().calls.load(Ordering::SeqCst);
        assert!(!sessions.load(Some(c.split(';').next().unwrap()))?.is_new());
        assert!(sessions.store().calls.load(Ordering::SeqCst) > before);
    }
    Ok(())
}
