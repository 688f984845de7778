//! One conformance suite, run against every store: the file cache and SQLite always
//! (SQLite with the feature `sqlite`), a Flask-Session cachelib directory (feature
//! `flask`), Redis, PostgreSQL and Memcached against real
//! servers named by `FSCACHE_TEST_REDIS`, `FSCACHE_TEST_POSTGRES` and
//! `FSCACHE_TEST_MEMCACHED` (`.ci/engines.sh start` starts them and prints these).
//! Under `CI=true` a store whose server is not configured is a failure; locally it is
//! a printed skip.
//!
//! Every test runs each store in turn and names it in its assertions; keys carry a
//! random prefix, so tests sharing a server do not see each other.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use fscache::session::{SessionConfig, Sessions};
use fscache::store::{self, Merge, Store, Version};
use fscache::{Error, FileSystemCache};

mod common;

use common::stores::{getrandom, prefix, subjects};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn load_save_insert_compare_and_set_remove() -> TestResult {
    for s in subjects() {
        let (n, st) = (s.name, &s.store);
        let k = format!("{}a", prefix("basic"));
        assert_eq!(st.load(&k)?, None, "{n}: absent");
        assert!(st.insert(&k, b"one", MINUTE)?, "{n}: insert into absent");
        assert!(
            !st.insert(&k, b"two", MINUTE)?,
            "{n}: insert over a live value"
        );
        let v1 = st.load(&k)?.unwrap_or_else(|| panic!("{n}: inserted"));
        assert_eq!(v1.value, b"one", "{n}");
        st.save(&k, b"three", MINUTE)?;
        let v2 = st.load(&k)?.unwrap();
        assert_eq!(v2.value, b"three", "{n}: save overwrites");
        assert!(
            !st.compare_and_set(&k, &v1.version, Some(b"stale"), MINUTE)?,
            "{n}: compare-and-set against a replaced version"
        );
        assert!(
            st.compare_and_set(&k, &v2.version, Some(b"four"), MINUTE)?,
            "{n}"
        );
        assert_eq!(st.load(&k)?.unwrap().value, b"four", "{n}");
        assert!(
            !st.compare_and_set(&k, &v2.version, None, MINUTE)?,
            "{n}: a delete against a replaced version"
        );
        let v3 = st.load(&k)?.unwrap();
        assert!(st.compare_and_set(&k, &v3.version, None, MINUTE)?, "{n}");
        assert_eq!(st.load(&k)?, None, "{n}: deleted by compare-and-set");
        // A deleted key written again never matches a version read before.
        assert!(
            st.insert(&k, b"five", MINUTE)?,
            "{n}: insert after a delete"
        );
        assert!(
            !st.compare_and_set(&k, &v3.version, Some(b"stale"), MINUTE)?,
            "{n}: an old version after delete and insert"
        );
        assert!(st.remove(&k)?, "{n}: remove a live value");
        assert!(!st.remove(&k)?, "{n}: remove again");
        assert_eq!(st.load(&k)?, None, "{n}");
        assert!(!st.touch(&k, MINUTE)?, "{n}: touch an absent key");
        // A version from another store is refused, not misread.
        let other = Version::from_bytes(b"not a number");
        let foreign = Version::from_number(7);
        st.save(&k, b"x", MINUTE)?;
        let refused = st
            .compare_and_set(&k, &other, Some(b"y"), MINUTE)
            .and_then(|a| Ok(a || st.compare_and_set(&k, &foreign, Some(b"y"), MINUTE)?));
        assert!(
            matches!(refused, Ok(false) | Err(Error::Config { .. })),
            "{n}: {refused:?}"
        );
        assert_eq!(st.load(&k)?.unwrap().value, b"x", "{n}");
        st.remove(&k)?;
    }
    Ok(())
}

/// A key deleted by compare-and-set can always be inserted again, round after
/// round (on Memcached each delete leaves a tombstone that `insert` writes over).
#[test]
fn insert_after_a_delete_always_wins() -> TestResult {
    for s in subjects() {
        let (n, st) = (s.name, &s.store);
        let k = format!("{}a", prefix("reinsert"));
        for round in 0..50 {
            assert!(st.insert(&k, b"v", MINUTE)?, "{n}: insert, round {round}");
            let v = st.load(&k)?.unwrap_or_else(|| panic!("{n}: inserted"));
            assert!(
                st.compare_and_set(&k, &v.version, None, MINUTE)?,
                "{n}: delete, round {round}"
            );
        }
        st.remove(&k)?;
    }
    Ok(())
}

/// The forced form of the race in `insert_after_a_delete_always_wins`, on
/// Memcached: the tombstone `insert` found is gone (it expires within a second)
/// when its `cas` runs. The insert still wins, through `add`.
#[cfg(feature = "memcached")]
#[test]
fn memcached_insert_wins_when_the_tombstone_expires_under_it() -> TestResult {
    use fscache::hooks::{self, Point};
    let Some(url) = common::stores::engine_url("FSCACHE_TEST_MEMCACHED") else {
        return Ok(());
    };
    let st = store::open(&url)?;
    let expirer = store::open(&url)?;
    let k = format!("{}a", prefix("tombstone"));
    st.save(&k, b"v", MINUTE)?;
    let v = st.load(&k)?.unwrap();
    assert!(st.compare_and_set(&k, &v.version, None, MINUTE)?);
    let fired = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (key, count) = (k.clone(), fired.clone());
    hooks::set_hook(Point::InsertOverTombstone, move |p| {
        if p.to_str() == Some(key.as_str()) {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // What the tombstone's 1-second expiry does: the key is gone.
            expirer.remove(&key).map_err(std::io::Error::other)?;
        }
        Ok(())
    });
    let won = st.insert(&k, b"new", MINUTE);
    hooks::clear_hooks();
    assert_eq!(fired.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(won?, "the insert lost to an expired tombstone");
    assert_eq!(st.load(&k)?.unwrap().value, b"new");
    st.remove(&k)?;
    Ok(())
}

/// One rule on every store: a TTL past `store::MAX_TTL` (up to `Duration::MAX`)
/// is clamped to it; the key lives, nothing overflows or is refused.
#[test]
fn a_huge_ttl_is_clamped_the_same_way_on_every_store() -> TestResult {
    for subject in subjects() {
        let n = subject.name;
        let s = &*subject.store;
        let key = format!("{}huge-ttl", prefix("huge"));
        for ttl in [
            Duration::MAX,
            store::MAX_TTL + Duration::from_secs(1),
            store::MAX_TTL,
        ] {
            assert!(s.insert(&key, b"v", ttl)?, "{n}: insert with {ttl:?}");
            assert!(s.touch(&key, ttl)?, "{n}: touch with {ttl:?}");
            s.save(&key, b"w", ttl)?;
            let loaded = s
                .load(&key)?
                .unwrap_or_else(|| panic!("{n}: the key lives"));
            assert_eq!(loaded.value, b"w", "{n}");
            assert!(
                s.compare_and_set(&key, &loaded.version, Some(b"x"), ttl)?,
                "{n}: compare-and-set with {ttl:?}"
            );
            let stored = s.update(&key, ttl, &mut |_| Ok(Merge::Put(b"y".to_vec())))?;
            assert_eq!(stored.as_deref(), Some(&b"y"[..]), "{n}");
            assert_eq!(s.load(&key)?.map(|v| v.value), Some(b"y".to_vec()), "{n}");
            assert!(s.remove(&key)?, "{n}");
        }
    }
    Ok(())
}

#[cfg(feature = "sqlite")]
#[test]
fn an_in_memory_sqlite_url_is_refused() {
    for url in ["sqlite://:memory:", "sqlite://file::memory:?cache=shared"] {
        let Err(e) = store::open(url) else {
            panic!("{url} was opened");
        };
        assert!(
            matches!(&e, Error::Config { message, .. } if message.contains("in-memory")),
            "{url}: {e:?}"
        );
    }
}

#[test]
fn ttl_expiry_touch_and_cleanup() -> TestResult {
    let subjects = subjects();
    let p = prefix("ttl");
    for s in &subjects {
        let st = &s.store;
        st.save(&format!("{p}gone"), b"1", Duration::from_millis(1500))?;
        st.save(&format!("{p}kept"), b"2", Duration::from_millis(1500))?;
        assert!(st.touch(&format!("{p}kept"), MINUTE)?, "{}: touch", s.name);
    }
    // Memcached counts whole seconds: 1.5 s is 2 s there.
    std::thread::sleep(Duration::from_millis(3100));
    for s in &subjects {
        let (n, st) = (s.name, &s.store);
        assert_eq!(st.load(&format!("{p}gone"))?, None, "{n}: expired");
        assert_eq!(
            st.load(&format!("{p}kept"))?.map(|v| v.value),
            Some(b"2".to_vec()),
            "{n}: touch slid the expiry"
        );
        assert!(
            !st.touch(&format!("{p}gone"), MINUTE)?,
            "{n}: touch an expired key"
        );
        let cleaned = st.cleanup(1000)?;
        if matches!(n, "sqlite" | "postgres") {
            assert!(cleaned >= 1, "{n}: cleanup removed the expired row");
        }
        assert!(
            st.insert(&format!("{p}gone"), b"3", MINUTE)?,
            "{n}: insert where only an expired value was"
        );
        st.remove(&format!("{p}gone"))?;
        st.remove(&format!("{p}kept"))?;
    }
    Ok(())
}

#[test]
fn insert_if_absent_has_exactly_one_winner() -> TestResult {
    for s in subjects() {
        let store: Arc<dyn Store> = Arc::from(s.store);
        let k = format!("{}race", prefix("insert"));
        let barrier = Arc::new(Barrier::new(8));
        let winners: Vec<bool> = (0..8u8)
            .map(|i| {
                let (store, k, barrier) = (store.clone(), k.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    store.insert(&k, &[b'a' + i], MINUTE).unwrap()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        assert_eq!(winners.iter().filter(|w| **w).count(), 1, "{}", s.name);
        let i = winners.iter().position(|w| *w).unwrap() as u8;
        assert_eq!(
            store.load(&k)?.unwrap().value,
            [b'a' + i],
            "{}: the winner's value",
            s.name
        );
        store.remove(&k)?;
    }
    Ok(())
}

#[test]
fn large_values_round_trip() -> TestResult {
    for s in subjects() {
        let k = format!("{}big", prefix("large"));
        let mut big = vec![0u8; 512 * 1024];
        getrandom(&mut big);
        s.store.save(&k, &big, MINUTE)?;
        assert!(
            s.store.load(&k)?.unwrap().value == big,
            "{}: 512 KiB",
            s.name
        );
        s.store.remove(&k)?;
    }
    Ok(())
}

#[test]
fn update_merges_and_its_error_writes_nothing() -> TestResult {
    for s in subjects() {
        let (n, st) = (s.name, &s.store);
        let k = format!("{}u", prefix("update"));
        let got = st.update(&k, MINUTE, &mut |old| {
            assert_eq!(old, None);
            Ok(Merge::Put(b"1".to_vec()))
        })?;
        assert_eq!(got.as_deref(), Some(&b"1"[..]), "{n}");
        let kept = st.update(&k, MINUTE, &mut |_| Ok(Merge::Keep))?;
        assert_eq!(kept.as_deref(), Some(&b"1"[..]), "{n}: keep");
        let err = st.update(&k, MINUTE, &mut |_| {
            Err(Error::callback("the merge gives up"))
        });
        assert!(matches!(err, Err(Error::Callback { .. })), "{n}: {err:?}");
        let err = err.unwrap_err();
        let cause = std::error::Error::source(&err).unwrap().to_string();
        assert_eq!(cause, "the merge gives up");
        assert!(!err.to_string().contains(&cause), "{err}");
        assert_eq!(
            st.load(&k)?.unwrap().value,
            b"1",
            "{n}: untouched by the error"
        );
        assert_eq!(
            st.update(&k, MINUTE, &mut |_| Ok(Merge::Delete))?,
            None,
            "{n}"
        );
        assert_eq!(st.load(&k)?, None, "{n}: deleted");
    }
    Ok(())
}

/// 4 threads × 200 read-merge-writes of one key: every one is applied. Locking
/// stores (file, SQLite, PostgreSQL) run each merge exactly once; optimistic ones
/// (Redis, Memcached) re-run a merge whose compare-and-set lost.
#[test]
fn concurrent_merges_of_one_key_are_all_applied() -> TestResult {
    for s in subjects() {
        let name = s.name;
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let store: Arc<dyn Store> = Arc::from(s.store);
        let k = format!("{}n", prefix("merges"));
        let barrier = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (store, k, barrier) = (store.clone(), k.clone(), barrier.clone());
                let runs = runs.clone();
                std::thread::spawn(move || -> fscache::Result<()> {
                    barrier.wait();
                    for _ in 0..200 {
                        store.update(&k, MINUTE, &mut |old| {
                            runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let n: u64 = old
                                .map(|b| std::str::from_utf8(b).unwrap().parse().unwrap())
                                .unwrap_or(0);
                            Ok(Merge::Put((n + 1).to_string().into_bytes()))
                        })?;
                    }
                    Ok(())
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap()?;
        }
        assert_eq!(store.load(&k)?.unwrap().value, b"800", "{name}");
        let runs = runs.load(std::sync::atomic::Ordering::Relaxed);
        if matches!(name, "file" | "sqlite") {
            assert_eq!(runs, 800, "{name}: one merge run per update");
        } else if name == "postgres" {
            // The first updates race to insert the absent key: the losers' merges
            // run again (at most 3 of them); every later one runs once.
            assert!(runs <= 803, "{name}: {runs} merge runs for 800 updates");
        } else {
            assert!(runs >= 800, "{name}: {runs}");
        }
        eprintln!("{name}: {runs} merge runs for 800 updates");
        store.remove(&k)?;
    }
    Ok(())
}

fn sessions_on(store: Box<dyn Store>, test: &str) -> fscache::Result<Sessions<Box<dyn Store>>> {
    Sessions::new(
        store,
        SessionConfig::default().key_prefix(format!("{}session:", prefix(test))),
    )
}

fn cookie(set_cookie: Option<String>) -> String {
    set_cookie.unwrap().split(';').next().unwrap().to_owned()
}

/// 4 threads × 200 requests, each `Session::update` of one counter in one session:
/// 800 counted, on every store (the compare-and-set fast path loses races here and
/// the replayed merge must count them all).
#[test]
fn concurrent_session_requests_count_every_update() -> TestResult {
    for s in subjects() {
        let name = s.name;
        let sessions = Arc::new(sessions_on(s.store, "count")?);
        let mut first = sessions.load(None)?;
        first.insert("n", &0u64)?;
        let c = cookie(sessions.save(&mut first)?.set_cookie);
        let barrier = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (sessions, c, barrier) = (sessions.clone(), c.clone(), barrier.clone());
                std::thread::spawn(move || -> fscache::Result<()> {
                    barrier.wait();
                    for _ in 0..200 {
                        let mut s = sessions.load(Some(&c))?;
                        assert!(!s.is_new(), "the session stays");
                        s.update("n", |n: Option<u64>| Some(n.unwrap_or(0) + 1))?;
                        sessions.save(&mut s)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().map_err(|e| format!("{name}: {e}"))?;
        }
        let s = sessions.load(Some(&c))?;
        assert_eq!(s.get::<u64>("n")?, Some(800), "{name}");
    }
    Ok(())
}

/// Two requests of one session, both loaded before either saves (the interleaving
/// Flask-Session loses): each changes its own key, and both changes stay. A third,
/// loaded before a logout and saved after it, does not bring the session back.
#[test]
fn concurrent_requests_keep_both_changes_and_logout_stays() -> TestResult {
    for s in subjects() {
        let name = s.name;
        let sessions = sessions_on(s.store, "both")?;
        let mut first = sessions.load(None)?;
        first.insert("user", &"ada")?;
        let c = cookie(sessions.save(&mut first)?.set_cookie);

        let mut a = sessions.load(Some(&c))?;
        let mut b = sessions.load(Some(&c))?;
        a.insert("theme", &"dark")?;
        b.insert("cart", &["apple"])?;
        sessions.save(&mut a)?;
        sessions.save(&mut b)?;
        let now = sessions.load(Some(&c))?;
        assert_eq!(
            now.get::<String>("theme")?.as_deref(),
            Some("dark"),
            "{name}"
        );
        assert_eq!(
            now.get::<Vec<String>>("cart")?,
            Some(vec!["apple".into()]),
            "{name}"
        );
        assert_eq!(now.get::<String>("user")?.as_deref(), Some("ada"), "{name}");

        let mut late = sessions.load(Some(&c))?;
        let mut logout = sessions.load(Some(&c))?;
        logout.destroy();
        sessions.save(&mut logout)?;
        late.insert("cart", &["pear"])?;
        let out = sessions.save(&mut late)?;
        assert_eq!(
            out.set_cookie, None,
            "{name}: no cookie for a session gone meanwhile"
        );
        assert!(
            sessions.load(Some(&c))?.is_new(),
            "{name}: logout stays a logout"
        );
        assert_eq!(
            sessions.store().load(&sessions.store_key(id_of(&c)))?,
            None,
            "{name}"
        );
    }
    Ok(())
}

fn id_of(cookie: &str) -> &str {
    cookie.split_once('=').unwrap().1
}

/// Bytes under a session key that are not a session record read as no session (a
/// new one), never a panic or an error page.
#[test]
fn bytes_that_are_not_a_record_are_no_session() -> TestResult {
    for s in subjects() {
        let name = s.name;
        let sessions = sessions_on(s.store, "foreign")?;
        for junk in [
            &b"\xff\xfe not utf-8"[..],
            b"{\"data\": 5}",
            b"[1, 2, 3]",
            b"\x80\x05\x95pickle",
            b"{}",
        ] {
            let mut s = sessions.load(None)?;
            s.insert("user", &"ada")?;
            let c = cookie(sessions.save(&mut s)?.set_cookie);
            let key = sessions.store_key(id_of(&c));
            sessions.store().save(&key, junk, MINUTE)?;
            let again = sessions.load(Some(&c))?;
            assert!(again.is_new() && again.is_empty(), "{name}: {junk:?}");
            assert_eq!(sessions.store().load(&key)?, None, "{name}: removed");
        }
    }
    Ok(())
}

/// A store picked at run time: `Sessions<Box<dyn Store>>` from a URL, and an
/// unknown or unbuilt scheme is a typed configuration error.
#[test]
fn urls_pick_the_store() -> TestResult {
    let dir = tempfile::tempdir()?;
    let url = format!("file://{}", dir.path().join("s").display());
    let sessions = Sessions::new(store::open(&url)?, SessionConfig::default())?;
    let mut s = sessions.load(None)?;
    s.insert("k", &1)?;
    sessions.save(&mut s)?;
    assert_eq!(FileSystemCache::open(dir.path().join("s"))?.len()?, 1);
    for bad in ["nosuch://x", "no-scheme", "file://", "sqlite://"] {
        let Err(e) = store::open(bad) else {
            panic!("{bad} opened")
        };
        assert!(matches!(e, Error::Config { .. }), "{bad}: {e}");
    }
    #[cfg(not(feature = "redis"))]
    {
        let Err(e) = store::open("redis://127.0.0.1:1/0") else {
            panic!("redis without the feature")
        };
        assert!(e.to_string().contains("--features redis"), "{e}");
    }
    Ok(())
}

/// An engine that is not there is a retryable engine error, quickly.
#[test]
fn an_unreachable_engine_is_a_retryable_error() {
    for url in [
        "redis://127.0.0.1:1/0",
        "postgres://postgres@127.0.0.1:1/postgres",
        "memcache://127.0.0.1:1",
    ] {
        match store::open(url) {
            Err(e @ Error::Engine { .. }) => {
                assert!(e.is_retryable(), "{url}: {e}");
                assert!(
                    std::error::Error::source(&e).is_some(),
                    "{url}: keeps the cause"
                );
            }
            Err(Error::Config { .. }) => {} // built without that engine
            Err(e) => panic!("{url}: {e:?}"),
            Ok(_) => panic!("{url}: opened"),
        }
    }
}

// ----- model-based: random operation sequences against every store and a map -----

mod model {
    use std::collections::HashMap;

    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    pub enum Op {
        Load(u8),
        Save(u8),
        Insert(u8),
        /// Compare-and-set with the version of the key's last load; `true` deletes.
        Cas(u8, bool),
        Remove(u8),
        Touch(u8),
        Update(u8),
    }

    pub fn op() -> impl Strategy<Value = Op> {
        let k = 0u8..3;
        prop_oneof![
            3 => k.clone().prop_map(Op::Load),
            2 => k.clone().prop_map(Op::Save),
            2 => k.clone().prop_map(Op::Insert),
            3 => (k.clone(), any::<bool>()).prop_map(|(k, d)| Op::Cas(k, d)),
            1 => k.clone().prop_map(Op::Remove),
            1 => k.clone().prop_map(Op::Touch),
            2 => k.prop_map(Op::Update),
        ]
    }

    /// Runs `ops` on `store`. The model holds each key's value and a write number;
    /// every value written is unique, so a store that compares values (Redis) and
    /// one that compares write ids agree on what a compare-and-set should do.
    pub fn run(name: &str, store: &dyn Store, ops: &[Op]) -> Result<(), TestCaseError> {
        let p = prefix("model");
        let key = |k: u8| format!("{p}{k}");
        let mut model: HashMap<u8, (Vec<u8>, u64)> = HashMap::new();
        // The last load of each key: its version and the write it saw.
        let mut loaded: HashMap<u8, (Version, u64)> = HashMap::new();
        let mut writes = 0u64;
        for (i, op) in ops.iter().enumerate() {
            let ctx = format!("{name}: op {i} {op:?}");
            let mut fresh = |tag: &str| {
                writes += 1;
                (format!("{tag}{writes}").into_bytes(), writes)
            };
            match *op {
                Op::Load(k) => {
                    let got = store.load(&key(k)).map_err(|e| fail(&ctx, e))?;
                    prop_assert_eq!(
                        got.as_ref().map(|v| &v.value),
                        model.get(&k).map(|m| &m.0),
                        "{}",
                        ctx
                    );
                    match got {
                        Some(v) => loaded.insert(k, (v.version, model[&k].1)),
                        None => loaded.remove(&k),
                    };
                }
                Op::Save(k) => {
                    let (v, w) = fresh("s");
                    store.save(&key(k), &v, MINUTE).map_err(|e| fail(&ctx, e))?;
                    model.insert(k, (v, w));
                }
                Op::Insert(k) => {
                    let (v, w) = fresh("i");
                    let done = store
                        .insert(&key(k), &v, MINUTE)
                        .map_err(|e| fail(&ctx, e))?;
                    prop_assert_eq!(done, !model.contains_key(&k), "{}", ctx);
                    if done {
                        model.insert(k, (v, w));
                    }
                }
                Op::Cas(k, delete) => {
                    let Some((version, seen)) = loaded.get(&k).cloned() else {
                        continue;
                    };
                    let (v, w) = fresh("c");
                    let new = (!delete).then_some(&v[..]);
                    let done = store
                        .compare_and_set(&key(k), &version, new, MINUTE)
                        .map_err(|e| fail(&ctx, e))?;
                    let expect = model.get(&k).is_some_and(|m| m.1 == seen);
                    prop_assert_eq!(done, expect, "{}", ctx);
                    if done {
                        if delete {
                            model.remove(&k);
                        } else {
                            model.insert(k, (v, w));
                        }
                    }
                }
                Op::Remove(k) => {
                    let done = store.remove(&key(k)).map_err(|e| fail(&ctx, e))?;
                    prop_assert_eq!(done, model.remove(&k).is_some(), "{}", ctx);
                }
                Op::Touch(k) => {
                    let done = store.touch(&key(k), MINUTE).map_err(|e| fail(&ctx, e))?;
                    prop_assert_eq!(done, model.contains_key(&k), "{}", ctx);
                    // A touch may count as a write (the file cache rewrites the entry):
                    // versions read before it are not used again.
                    loaded.remove(&k);
                }
                Op::Update(k) => {
                    let (suffix, w) = fresh("u");
                    let stored = store
                        .update(&key(k), MINUTE, &mut |old| {
                            let mut v = old.unwrap_or(b"").to_vec();
                            v.extend_from_slice(&suffix);
                            Ok(Merge::Put(v))
                        })
                        .map_err(|e| fail(&ctx, e))?;
                    let mut expect = model.get(&k).map(|m| m.0.clone()).unwrap_or_default();
                    expect.extend_from_slice(&suffix);
                    prop_assert_eq!(stored.as_deref(), Some(&expect[..]), "{}", ctx);
                    model.insert(k, (expect, w));
                }
            }
        }
        for k in 0..3 {
            store.remove(&key(k)).map_err(|e| fail("cleanup", e))?;
        }
        Ok(())
    }

    fn fail(ctx: &str, e: Error) -> TestCaseError {
        TestCaseError::fail(format!("{ctx}: {e}"))
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

    /// Every store behaves like a map with versions, for any sequence of loads,
    /// saves, inserts, compare-and-sets (fresh or stale), removes, touches and
    /// merges.
    #[test]
    fn every_store_matches_the_model(ops in proptest::collection::vec(model::op(), 1..40)) {
        for s in subjects() {
            model::run(s.name, s.store.as_ref(), &ops)?;
        }
    }
}

/// `replace` writes only over a live value (a logout stays a logout), and `remove`
/// reports `true` only for a live value (an expired one reads as absent).
#[test]
fn replace_only_over_a_live_value_and_remove_reports_live_values() -> TestResult {
    let subjects = subjects();
    let p = prefix("replace");
    for s in &subjects {
        let (n, st) = (s.name, &s.store);
        let k = format!("{p}k");
        assert!(
            !st.replace(&k, b"x", MINUTE)?,
            "{n}: replace of an absent key"
        );
        assert_eq!(st.load(&k)?, None, "{n}: still absent");
        st.save(&k, b"1", MINUTE)?;
        assert!(
            st.replace(&k, b"2", MINUTE)?,
            "{n}: replace of a live value"
        );
        assert_eq!(st.load(&k)?.unwrap().value, b"2", "{n}");
        assert!(st.remove(&k)?, "{n}");
        assert!(
            !st.replace(&k, b"3", MINUTE)?,
            "{n}: replace after a remove"
        );
        assert_eq!(st.load(&k)?, None, "{n}: a removed key stays removed");
        st.save(&format!("{p}short"), b"1", Duration::from_millis(1200))?;
    }
    // Memcached counts whole seconds.
    std::thread::sleep(Duration::from_millis(2600));
    for s in &subjects {
        let (n, st) = (s.name, &s.store);
        let k = format!("{p}short");
        assert!(
            !st.replace(&k, b"x", MINUTE)?,
            "{n}: replace of an expired key"
        );
        assert!(
            !st.remove(&k)?,
            "{n}: remove of an expired value reports no live value"
        );
    }
    Ok(())
}

/// `cleanup` removes expired records on the stores that keep them (SQL rows, the
/// file cache's files; `server --cleanup file://…` and tower-sessions'
/// `delete_expired` rely on it).
#[test]
fn cleanup_removes_expired_files_and_rows() -> TestResult {
    for s in subjects()
        .into_iter()
        .filter(|s| matches!(s.name, "file" | "sqlite" | "postgres"))
    {
        let (n, st) = (s.name, &s.store);
        let p = prefix("cleanup");
        for i in 0..40 {
            st.save(&format!("{p}old{i}"), b"1", Duration::from_millis(300))?;
        }
        for i in 0..10 {
            st.save(&format!("{p}new{i}"), b"1", MINUTE)?;
        }
        std::thread::sleep(Duration::from_millis(700));
        let mut removed = 0;
        loop {
            let r = st.cleanup(16)?;
            removed += r;
            if r < 16 {
                break;
            }
        }
        assert!(
            removed >= 40,
            "{n}: cleanup removed {removed} of 40 expired"
        );
        for i in 0..10 {
            assert!(st.load(&format!("{p}new{i}"))?.is_some(), "{n}: live kept");
        }
    }
    Ok(())
}

/// Opening a connection to PostgreSQL never waits for other clients' open writes:
/// the schema's DDL runs only when the table is missing (its `CREATE INDEX IF NOT
/// EXISTS` takes a SHARE lock on the table, which waits for every open write and
/// makes later writes queue behind it). When every new connection ran it, a burst
/// of requests that opened connections stalled writes by PostgreSQL's
/// `deadlock_timeout` (1 s) each. Forced here: a write is left open in another
/// client while a fresh store connects and loads.
#[cfg(feature = "postgres")]
#[test]
fn a_new_postgres_connection_does_not_wait_for_open_writes() -> TestResult {
    let Some(url) = common::stores::engine_url("FSCACHE_TEST_POSTGRES") else {
        return Ok(());
    };
    drop(store::open(&url)?); // the table exists from here on
    let key = format!("{}open-write", prefix("pg-connect"));
    let mut writer = postgres::Client::connect(&url, postgres::NoTls)?;
    let mut open_write = writer.transaction()?;
    open_write.execute(
        "INSERT INTO fscache_store (key, value, version, expires_at)
         VALUES ($1, '\\x00', 0, now() + interval '1 minute')",
        &[&key],
    )?;
    let (done_tx, done) = std::sync::mpsc::channel();
    let (url2, key2) = (url.clone(), key.clone());
    std::thread::spawn(move || {
        let result = store::open(&url2).and_then(|s| s.load(&key2));
        let _ = done_tx.send(result.map(|v| v.is_none()).map_err(|e| e.to_string()));
    });
    let finished = done.recv_timeout(Duration::from_secs(10));
    open_write.rollback()?;
    assert_eq!(
        finished,
        Ok(Ok(true)),
        "a new connection waited for another client's open write"
    );
    Ok(())
}

/// Without the feature `tls`, a URL that asks for TLS is refused before any
/// connection, never sent in the clear (CI runs this in its portable-mode pass,
/// which builds without `tls`; `tests/tls.rs` covers the build with it).
#[cfg(all(not(feature = "tls"), feature = "redis", feature = "postgres"))]
#[test]
fn tls_urls_need_the_tls_feature() {
    for url in [
        "rediss://127.0.0.1:1/0",
        "postgres://app@127.0.0.1:1/db?sslmode=require",
        "postgres://app@127.0.0.1:1/db?sslmode=verify-full&sslrootcert=/ca.pem",
    ] {
        let e = store::open(url).err().expect("refused");
        assert!(
            matches!(&e, Error::Config { message, .. } if message.contains("\"tls\"")),
            "{url}: {e:?}"
        );
    }
    // `prefer` asks for TLS only if the server offers it: without the feature, the
    // clear (as libpq built without SSL does).
    assert!(matches!(
        store::open("postgres://app@127.0.0.1:1/db?sslmode=prefer"),
        Err(Error::Engine { .. })
    ));
}
