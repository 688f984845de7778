//! The session layer through its API: lifetimes, merging, signing, config rules, and
//! a second (in-memory) backend through the `Store` trait.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use fscache::session::{SameSite, SaveOutcome, SessionConfig, Sessions};
use fscache::store::{Store, Version, Versioned};
use fscache::{Clock, Error, FileSystemCache, ManualClock};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn setup(
    config: impl FnOnce(SessionConfig) -> SessionConfig,
) -> (tempfile::TempDir, Sessions, ManualClock) {
    let tmp = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let cache = FileSystemCache::builder(tmp.path())
        .threshold(0)
        .clock(clock.clone())
        .open()
        .unwrap();
    let sessions =
        Sessions::new(cache, config(SessionConfig::default().clock(clock.clone()))).unwrap();
    (tmp, sessions, clock)
}

fn cookie_of(outcome: &SaveOutcome) -> String {
    outcome
        .set_cookie
        .as_deref()
        .expect("Set-Cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

fn new_session_cookie(sessions: &Sessions<impl Store>) -> String {
    let mut s = sessions.load(None).unwrap();
    s.insert("k", &0).unwrap();
    cookie_of(&sessions.save(&mut s).unwrap())
}

#[test]
fn empty_sessions_are_not_stored_and_get_no_cookie() -> TestResult {
    let (_t, sessions, _) = setup(|c| c);
    let mut s = sessions.load(None)?;
    assert!(s.is_empty());
    let out = sessions.save(&mut s)?;
    assert_eq!(out.set_cookie, None);
    assert!(out.vary_cookie, "is_empty() read the session");
    assert_eq!(sessions.store().len()?, 0);
    Ok(())
}

#[test]
fn a_stored_session_that_becomes_empty_is_deleted_and_its_cookie_expired() -> TestResult {
    let (_t, sessions, _) = setup(|c| c);
    let c = new_session_cookie(&sessions);
    let mut s = sessions.load(Some(&c))?;
    assert!(s.remove("k"));
    let out = sessions.save(&mut s)?;
    assert!(out.set_cookie.unwrap().contains("Max-Age=0"));
    assert_eq!(sessions.store().len()?, 0);
    Ok(())
}

#[test]
fn concurrent_requests_merge_key_level_changes() -> TestResult {
    let (_t, sessions, _) = setup(|c| c);
    let c = new_session_cookie(&sessions);
    let mut a = sessions.load(Some(&c))?;
    let mut b = sessions.load(Some(&c))?;
    a.insert("from_a", &1)?;
    b.insert("from_b", &2)?;
    a.insert("same", &"a")?;
    b.insert("same", &"b")?;
    b.update("counter", |n: Option<i32>| Some(n.unwrap_or(0) + 1))?;
    a.update("counter", |n: Option<i32>| Some(n.unwrap_or(0) + 1))?;
    sessions.save(&mut a)?;
    sessions.save(&mut b)?;
    let s = sessions.load(Some(&c))?;
    assert_eq!(s.get::<i32>("from_a")?, Some(1));
    assert_eq!(s.get::<i32>("from_b")?, Some(2));
    assert_eq!(
        s.get::<String>("same")?.as_deref(),
        Some("b"),
        "last writer wins"
    );
    assert_eq!(
        s.get::<i32>("counter")?,
        Some(2),
        "updates are replayed, not overwritten"
    );
    assert_eq!(s.get::<i32>("k")?, Some(0));
    Ok(())
}

#[test]
fn destroy_wins_over_a_concurrent_change() -> TestResult {
    let (_t, sessions, _) = setup(|c| c);
    let c = new_session_cookie(&sessions);
    let mut a = sessions.load(Some(&c))?;
    let mut b = sessions.load(Some(&c))?;
    a.destroy();
    b.insert("late", &true)?;
    assert!(
        sessions
            .save(&mut a)?
            .set_cookie
            .unwrap()
            .contains("Max-Age=0")
    );
    let out = sessions.save(&mut b)?;
    assert_eq!(
        out.set_cookie, None,
        "only the destroying request expires the cookie"
    );
    assert_eq!(sessions.store().len()?, 0, "not resurrected");
    assert!(sessions.load(Some(&c))?.is_new());
    Ok(())
}

#[test]
fn a_request_running_during_a_login_does_not_log_the_user_out() -> TestResult {
    let (_t, sessions, _) = setup(|c| c);
    let before_login = new_session_cookie(&sessions);
    // Two requests carry the pre-login cookie.
    let mut login = sessions.load(Some(&before_login))?;
    let mut other = sessions.load(Some(&before_login))?;
    login.regenerate()?;
    login.insert("user", &"ada")?;
    let login_cookie = sessions.save(&mut login)?.set_cookie.expect("the new id");
    assert!(!login_cookie.contains("Max-Age=0"));
    // The other request saves afterwards: its record went with the old id. If its
    // response arrives second, any Set-Cookie it sends replaces the login cookie.
    other.insert("theme", &"dark")?;
    let out = sessions.save(&mut other)?;
    assert_eq!(
        out.set_cookie, None,
        "must not expire the fresh login cookie"
    );
    let pair = login_cookie.split(';').next().unwrap();
    let after = sessions.load(Some(pair))?;
    assert_eq!(
        after.get::<String>("user")?.as_deref(),
        Some("ada"),
        "still logged in"
    );
    Ok(())
}

#[test]
fn sliding_expiry_idle_timeout_and_absolute_cap() -> TestResult {
    let (_t, sessions, clock) = setup(|c| {
        c.lifetime(Duration::from_secs(100))
            .idle_timeout(Duration::from_secs(10))
            .absolute_lifetime(Duration::from_secs(25))
    });
    let c = new_session_cookie(&sessions);
    // Activity every 8 s keeps it alive past the 10 s idle timeout...
    for _ in 0..2 {
        clock.advance(Duration::from_secs(8));
        let mut s = sessions.load(Some(&c))?;
        assert!(!s.is_new());
        let out = sessions.save(&mut s)?;
        let max_age: u64 = out
            .set_cookie
            .unwrap()
            .split("Max-Age=")
            .nth(1)
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .parse()?;
        assert!(max_age <= 10);
    }
    // ...and the cookie's Max-Age never passes the absolute cap (25 − 16 = 9 s left).
    clock.advance(Duration::from_secs(8)); // t = 24
    let mut s = sessions.load(Some(&c))?;
    let out = sessions.save(&mut s)?;
    assert!(out.set_cookie.unwrap().contains("Max-Age=1;"));
    clock.advance(Duration::from_secs(1)); // t = 25: past the cap however active
    assert!(sessions.load(Some(&c))?.is_new());

    // Idle: 10 s without a request ends it.
    let c = new_session_cookie(&sessions);
    clock.advance(Duration::from_secs(10));
    assert!(sessions.load(Some(&c))?.is_new());
    Ok(())
}

#[test]
fn non_permanent_sessions_get_a_browser_session_cookie_and_a_server_ttl() -> TestResult {
    let (_t, sessions, clock) = setup(|c| c.permanent(false).lifetime(Duration::from_secs(60)));
    let mut s = sessions.load(None)?;
    s.insert("k", &1)?;
    let out = sessions.save(&mut s)?;
    let set = out.set_cookie.clone().unwrap();
    assert!(
        !set.contains("Max-Age") && !set.contains("Expires"),
        "{set}"
    );
    let c = cookie_of(&out);
    // No cookie re-sent for an unchanged non-permanent session.
    let mut s = sessions.load(Some(&c))?;
    assert_eq!(sessions.save(&mut s)?.set_cookie, None);
    // Switching to permanent sends Max-Age.
    let mut s = sessions.load(Some(&c))?;
    s.set_permanent(true);
    assert!(
        sessions
            .save(&mut s)?
            .set_cookie
            .unwrap()
            .contains("Max-Age=60")
    );
    clock.advance(Duration::from_secs(61));
    assert!(
        sessions.load(Some(&c))?.is_new(),
        "the server-side TTL ended it"
    );
    Ok(())
}

#[test]
fn without_refresh_an_unchanged_session_is_not_rewritten() -> TestResult {
    let (_t, sessions, clock) = setup(|c| {
        c.refresh_each_request(false)
            .lifetime(Duration::from_secs(10))
    });
    let c = new_session_cookie(&sessions);
    clock.advance(Duration::from_secs(6));
    let mut s = sessions.load(Some(&c))?;
    assert_eq!(s.get::<i32>("k")?, Some(0));
    let out = sessions.save(&mut s)?;
    assert_eq!(out.set_cookie, None);
    assert!(out.vary_cookie);
    clock.advance(Duration::from_secs(5));
    assert!(
        sessions.load(Some(&c))?.is_new(),
        "reads did not slide the expiry"
    );
    Ok(())
}

#[test]
fn regenerate_moves_data_to_a_new_id_and_deletes_the_old() -> TestResult {
    let (_t, sessions, _) = setup(|c| c);
    let c = new_session_cookie(&sessions);
    let mut s = sessions.load(Some(&c))?;
    let old_id = s.id().to_owned();
    s.regenerate()?;
    s.insert("user", &"ada")?;
    assert_ne!(s.id(), old_id);
    let c2 = cookie_of(&sessions.save(&mut s)?);
    assert_ne!(c2, c);
    assert!(sessions.load(Some(&c))?.is_new());
    let s = sessions.load(Some(&c2))?;
    assert_eq!(s.get::<i32>("k")?, Some(0));
    assert_eq!(sessions.store().len()?, 1);
    Ok(())
}

#[test]
fn signing_key_rotation() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let cache = FileSystemCache::builder(tmp.path()).threshold(0).open()?;
    let old = Sessions::new(
        cache.clone(),
        SessionConfig::default().signing_keys(["old"]),
    )?;
    let c = new_session_cookie(&old);
    assert!(c.contains('.'), "signed: id.signature");
    let rotated = Sessions::new(
        cache.clone(),
        SessionConfig::default().signing_keys(["new", "old"]),
    )?;
    let mut s = rotated.load(Some(&c))?;
    assert!(!s.is_new(), "old signatures still verify");
    s.insert("x", &1)?;
    let c2 = cookie_of(&rotated.save(&mut s)?);
    let new_only = Sessions::new(cache, SessionConfig::default().signing_keys(["new"]))?;
    assert!(new_only.load(Some(&c))?.is_new(), "old key retired");
    assert!(
        !new_only.load(Some(&c2))?.is_new(),
        "re-signed with the newest key"
    );
    Ok(())
}

#[test]
fn hostile_cookie_headers_never_error() -> TestResult {
    let (_t, sessions, _) = setup(|c| c);
    let long = "a".repeat(100_000);
    for header in [
        "",
        ";",
        "session",
        "session=",
        "=",
        "session=ünïcødé",
        "session=\u{0}\u{7f}",
        &long,
        "session=\"\"",
        &format!("session={long}"),
    ] {
        let s = sessions.load(Some(header))?;
        assert!(s.is_new(), "{header:.30}");
    }
    Ok(())
}

#[test]
fn cookie_rules_are_validated() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = FileSystemCache::open(tmp.path()).unwrap();
    let bad = [
        SessionConfig::default().cookie_name("__Host-sid"),
        SessionConfig::default()
            .cookie_name("__Host-sid")
            .secure(true)
            .path("/app"),
        SessionConfig::default()
            .cookie_name("__Host-sid")
            .secure(true)
            .domain("example.com"),
        SessionConfig::default().cookie_name("__Secure-sid"),
        SessionConfig::default().same_site(SameSite::None),
        SessionConfig::default().cookie_name("bad name"),
        SessionConfig::default().cookie_name(""),
        SessionConfig::default().lifetime(Duration::ZERO),
    ];
    for config in bad {
        assert!(matches!(
            Sessions::new(cache.clone(), config),
            Err(Error::Config { .. })
        ));
    }
    let ok = SessionConfig::default()
        .cookie_name("__Host-sid")
        .secure(true);
    let sessions = Sessions::new(cache, ok).unwrap();
    let mut s = sessions.load(None).unwrap();
    s.insert("k", &1).unwrap();
    let set = sessions.save(&mut s).unwrap().set_cookie.unwrap();
    assert!(
        set.starts_with("__Host-sid=") && set.contains("Secure") && set.contains("Path=/"),
        "{set}"
    );
}

/// A second backend: sessions work unchanged on anything implementing `Store`. This
/// one is a map with a version counter and no `update` of its own, so sessions go
/// through the trait's optimistic compare-and-set loop.
#[derive(Default)]
struct MemoryStore(Mutex<(Entries, u64)>);

/// Key → (value, version).
type Entries = HashMap<String, (Vec<u8>, u64)>;

impl Store for MemoryStore {
    fn engine(&self) -> &'static str {
        "memory"
    }
    fn load(&self, key: &str) -> fscache::Result<Option<Versioned>> {
        Ok(self.0.lock().unwrap().0.get(key).map(|(v, n)| Versioned {
            value: v.clone(),
            version: Version::from_number(*n),
        }))
    }
    fn save(&self, key: &str, value: &[u8], _ttl: Duration) -> fscache::Result<()> {
        let mut m = self.0.lock().unwrap();
        m.1 += 1;
        let n = m.1;
        m.0.insert(key.into(), (value.to_vec(), n));
        Ok(())
    }
    fn insert(&self, key: &str, value: &[u8], ttl: Duration) -> fscache::Result<bool> {
        if self.0.lock().unwrap().0.contains_key(key) {
            return Ok(false);
        }
        self.save(key, value, ttl).map(|()| true)
    }
    fn compare_and_set(
        &self,
        key: &str,
        expected: &Version,
        new: Option<&[u8]>,
        _ttl: Duration,
    ) -> fscache::Result<bool> {
        let mut m = self.0.lock().unwrap();
        if m.0.get(key).map(|e| e.1) != expected.as_number() {
            return Ok(false);
        }
        m.1 += 1;
        let n = m.1;
        match new {
            Some(v) => m.0.insert(key.into(), (v.to_vec(), n)),
            None => m.0.remove(key),
        };
        Ok(true)
    }
    fn remove(&self, key: &str) -> fscache::Result<bool> {
        Ok(self.0.lock().unwrap().0.remove(key).is_some())
    }
    fn touch(&self, key: &str, _ttl: Duration) -> fscache::Result<bool> {
        Ok(self.0.lock().unwrap().0.contains_key(key))
    }
}

#[test]
fn sessions_run_on_another_store() -> TestResult {
    let sessions = Sessions::new(MemoryStore::default(), SessionConfig::default())?;
    let c = new_session_cookie(&sessions);
    let mut s = sessions.load(Some(&c))?;
    assert_eq!(s.get::<i32>("k")?, Some(0));
    s.insert("x", &"y")?;
    sessions.save(&mut s)?;
    assert_eq!(sessions.store().0.lock().unwrap().0.len(), 1);
    let key = sessions
        .store()
        .0
        .lock()
        .unwrap()
        .0
        .keys()
        .next()
        .unwrap()
        .clone();
    assert!(key.starts_with("session:") && !key.contains(c.trim_start_matches("session=")));
    Ok(())
}

#[test]
fn cookie_attributes_that_could_break_a_header_are_refused() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let store = || {
        FileSystemCache::builder(tmp.path())
            .threshold(0)
            .open()
            .unwrap()
    };
    for path in [
        "/a\r\nSet-Cookie: x=1",
        "/a\nb",
        "/\u{7f}",
        "/a;b",
        "relative",
        "/é",
    ] {
        let err = Sessions::new(store(), SessionConfig::default().path(path)).unwrap_err();
        assert!(
            matches!(err, fscache::Error::Config { .. }),
            "{path:?}: {err:?}"
        );
    }
    for domain in [
        "example.com\r\nX: y",
        "a b.com",
        "",
        ".",
        "-bad.com",
        "x..com",
        "a;b",
    ] {
        let err = Sessions::new(store(), SessionConfig::default().domain(domain)).unwrap_err();
        assert!(
            matches!(err, fscache::Error::Config { .. }),
            "{domain:?}: {err:?}"
        );
    }
    for (path, domain) in [
        ("/", "example.com"),
        ("/app/v1", ".example.co.uk"),
        ("/a b", "x-y.z"),
    ] {
        let sessions = Sessions::new(store(), SessionConfig::default().path(path).domain(domain))?;
        let mut s = sessions.load(None)?;
        s.insert("k", &1)?;
        let cookie = sessions.save(&mut s)?.set_cookie.unwrap();
        assert!(!cookie.contains('\r') && !cookie.contains('\n'), "{cookie}");
    }
    Ok(())
}

#[test]
fn reads_keep_a_session_alive_under_an_idle_timeout_without_refresh_each_request() -> TestResult {
    let (_t, sessions, clock) = setup(|c| {
        c.idle_timeout(Duration::from_secs(15 * 60))
            .refresh_each_request(false)
    });
    let c = new_session_cookie(&sessions);
    // Read-only requests every 10 minutes, for an hour: still logged in.
    for minute in (10..=60).step_by(10) {
        clock.advance(Duration::from_secs(10 * 60));
        let mut s = sessions.load(Some(&c))?;
        assert!(!s.is_new(), "alive at {minute} min");
        let _ = s.get::<i32>("k")?;
        let cookie = sessions
            .save(&mut s)?
            .set_cookie
            .expect("the cookie slides too");
        assert!(cookie.contains("Max-Age=900"), "{cookie}");
    }
    // Reads closer together than a tenth of the window write nothing.
    let file = || -> std::io::Result<std::time::SystemTime> {
        let dir = sessions.store().path();
        let entry = walk(dir)
            .into_iter()
            .find(|p| p.file_name().unwrap().len() == 64);
        std::fs::metadata(entry.expect("the record"))?.modified()
    };
    let before = file()?;
    clock.advance(Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(20));
    let mut s = sessions.load(Some(&c))?;
    sessions.save(&mut s)?;
    assert_eq!(file()?, before, "no rewrite within 1.5 min of the last one");
    // Then 15 minutes without a request end it.
    clock.advance(Duration::from_secs(15 * 60));
    assert!(
        sessions.load(Some(&c))?.is_new(),
        "idle for the whole window"
    );
    Ok(())
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// A store that logs which trait methods the session layer calls.
struct Logged<S> {
    inner: S,
    calls: Mutex<Vec<&'static str>>,
}

impl<S: Store> Logged<S> {
    fn log(&self, name: &'static str) {
        self.calls.lock().unwrap().push(name);
    }
    fn take(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

impl<S: Store> Store for Logged<S> {
    fn engine(&self) -> &'static str {
        self.inner.engine()
    }
    fn load(&self, key: &str) -> fscache::Result<Option<Versioned>> {
        self.log("load");
        self.inner.load(key)
    }
    fn save(&self, key: &str, value: &[u8], ttl: Duration) -> fscache::Result<()> {
        self.log("save");
        self.inner.save(key, value, ttl)
    }
    fn insert(&self, key: &str, value: &[u8], ttl: Duration) -> fscache::Result<bool> {
        self.log("insert");
        self.inner.insert(key, value, ttl)
    }
    fn compare_and_set(
        &self,
        key: &str,
        expected: &Version,
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> fscache::Result<bool> {
        self.log("compare_and_set");
        self.inner.compare_and_set(key, expected, new, ttl)
    }
    fn remove(&self, key: &str) -> fscache::Result<bool> {
        self.log("remove");
        self.inner.remove(key)
    }
    fn touch(&self, key: &str, ttl: Duration) -> fscache::Result<bool> {
        self.log("touch");
        self.inner.touch(key, ttl)
    }
    fn update(
        &self,
        key: &str,
        ttl: Duration,
        merge: &mut fscache::store::MergeFn<'_>,
    ) -> fscache::Result<Option<Vec<u8>>> {
        self.log("update");
        self.inner.update(key, ttl, merge)
    }
}

/// What each kind of request costs in store calls: a new session one insert; a
/// changed one a load and one compare-and-set (no merge unless another request
/// wrote meanwhile, then one update); an unchanged one a load only, until the
/// refresh granularity has passed (then a compare-and-set slides it); logout a load
/// and a remove.
#[test]
fn each_request_costs_the_fewest_store_calls() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let store = Logged {
        inner: FileSystemCache::builder(tmp.path()).threshold(0).open()?,
        calls: Mutex::new(Vec::new()),
    };
    let sessions = Sessions::new(store, SessionConfig::default())?;
    let c = new_session_cookie(&sessions);
    assert_eq!(sessions.store().take(), ["insert"]);

    let mut s = sessions.load(Some(&c))?;
    s.insert("k", &1)?;
    sessions.save(&mut s)?;
    assert_eq!(sessions.store().take(), ["load", "compare_and_set"]);

    // A read-only request within the refresh granularity (1% of 31 days) writes
    // nothing.
    let mut s = sessions.load(Some(&c))?;
    let _ = s.get::<i32>("k")?;
    assert_eq!(sessions.save(&mut s)?.set_cookie, None);
    assert_eq!(sessions.store().take(), ["load"]);

    // Another request wrote between this one's load and save: one merge.
    let mut a = sessions.load(Some(&c))?;
    let mut b = sessions.load(Some(&c))?;
    b.insert("b", &2)?;
    sessions.save(&mut b)?;
    a.insert("a", &3)?;
    sessions.store().take();
    sessions.save(&mut a)?;
    assert_eq!(sessions.store().take(), ["compare_and_set", "update"]);
    let s = sessions.load(Some(&c))?;
    assert_eq!((s.get::<i32>("a")?, s.get::<i32>("b")?), (Some(3), Some(2)));

    let mut s = sessions.load(Some(&c))?;
    s.destroy();
    sessions.store().take();
    sessions.save(&mut s)?;
    assert_eq!(sessions.store().take(), ["remove"]);
    Ok(())
}

/// With refresh-each-request, a request that changes nothing writes only once the
/// expiry would move by the refresh granularity; when it writes, the cookie's
/// Max-Age/Expires and the stored expiry name the same moment, and between writes
/// neither moves.
#[test]
fn read_only_requests_slide_the_expiry_in_steps_the_cookie_agrees_with() -> TestResult {
    let (_t, sessions, clock) = setup(|c| {
        c.lifetime(Duration::from_secs(100))
            .refresh_granularity(0.1)
    });
    let c = new_session_cookie(&sessions);
    let key = sessions.store_key(c.split_once('=').unwrap().1);
    let stored_expiry = || -> u64 {
        let info = sessions.store().inspect_key(&key).unwrap().expect("stored");
        info.header.unwrap().expires_at_ms.unwrap()
    };
    let start = clock.now_ms();
    assert_eq!(stored_expiry(), start + 100_000);
    // Within 10% of the lifetime: nothing written, no cookie.
    clock.advance(Duration::from_secs(9));
    let mut s = sessions.load(Some(&c))?;
    let _ = s.get::<i32>("k")?;
    assert_eq!(sessions.save(&mut s)?.set_cookie, None);
    assert_eq!(stored_expiry(), start + 100_000, "not rewritten");
    // Past it: rewritten, and the cookie names the same expiry.
    clock.advance(Duration::from_secs(2));
    let mut s = sessions.load(Some(&c))?;
    let _ = s.get::<i32>("k")?;
    let set = sessions
        .save(&mut s)?
        .set_cookie
        .expect("re-sent with the new expiry");
    assert!(set.contains("Max-Age=100"), "{set}");
    let expires = set
        .split("Expires=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    let expires = time_of(expires);
    assert_eq!(stored_expiry(), start + 111_000);
    assert_eq!(
        expires * 1000,
        (start + 111_000) / 1000 * 1000,
        "cookie {expires} vs store"
    );
    // The slid expiry holds: alive at 110 s after the last write, gone after 100.
    clock.advance(Duration::from_secs(99));
    assert!(
        !sessions.load(Some(&c))?.is_new(),
        "alive before the slid expiry"
    );
    clock.advance(Duration::from_secs(2));
    assert!(sessions.load(Some(&c))?.is_new(), "gone after it");
    Ok(())
}

/// Seconds since the epoch of an IMF-fixdate ("Thu, 01 Jan 1970 00:01:51 GMT").
fn time_of(date: &str) -> u64 {
    let parts: Vec<&str> = date.split_whitespace().collect();
    let day: u64 = parts[1].parse().unwrap();
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])
    .unwrap() as u64;
    let year: i64 = parts[3].parse().unwrap();
    let hms: Vec<u64> = parts[4].split(':').map(|x| x.parse().unwrap()).collect();
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if month < 2 {
        (year - 1, month + 13)
    } else {
        (year, month + 1)
    };
    let era = y.div_euclid(400);
    let yoe = (y - era * 400) as u64;
    let doy = (153 * (m - 3) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe as i64 - 719_468;
    days as u64 * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2]
}

#[test]
fn refresh_granularity_outside_a_fraction_is_a_config_error() {
    for bad in [-0.1, 1.0, 2.0, f64::NAN] {
        let r = Sessions::new(
            FileSystemCache::open(tempfile::tempdir().unwrap().path()).unwrap(),
            SessionConfig::default().refresh_granularity(bad),
        );
        assert!(matches!(r, Err(Error::Config { .. })), "{bad}");
    }
}
