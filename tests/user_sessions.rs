//! "Log out everywhere": a user's sessions are listed and ended together, on every
//! store, with the session layer's guarantees: an ended session is never brought
//! back by a request of it that was in flight (forced interleavings, through a
//! store wrapper that runs code before a chosen call), two logins at once are both
//! indexed, a logout racing "log out everywhere" leaves nothing behind, a save that
//! failed and is retried is indexed once, the index shrinks as sessions expire, and
//! a process SIGKILLed between the index and the records leaves no ended session
//! usable.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use common::faulty::{Faulty, When};
use common::stores::{prefix, subjects};
use common::{TestResult, child_command};
use fscache::session::{SaveOutcome, Session, SessionConfig, Sessions};
use fscache::store::Store;

const USER: &str = "user-42";

struct Pair {
    name: &'static str,
    url: String,
    prefix: String,
    store: &'static dyn Store,
    /// The sessions under test, behind the fault/interleaving wrapper.
    s: Sessions<Faulty<&'static dyn Store>>,
    /// Another server on the same store (what a hook runs "meanwhile").
    other: Arc<Sessions<&'static dyn Store>>,
}

fn config(prefix: &str) -> SessionConfig {
    SessionConfig::default()
        .key_prefix(prefix)
        .lifetime(Duration::from_secs(600))
}

/// Runs `f` on every store the build and the environment have.
fn each(test: &str, f: impl Fn(&Pair) -> TestResult) -> TestResult {
    for subject in subjects() {
        // Leaked so hooks (which must be 'static) can reach the store; a few per test.
        let store: &'static dyn Store = Box::leak(subject.store);
        let prefix = prefix(test);
        let pair = Pair {
            name: subject.name,
            url: subject.url.clone(),
            prefix: prefix.clone(),
            store,
            s: Sessions::new(Faulty::new(store), config(&prefix))?,
            other: Arc::new(Sessions::new(store, config(&prefix))?),
        };
        eprintln!("{test}: {}", pair.name);
        f(&pair).map_err(|e| format!("{test} on {}: {e}", pair.name))?;
    }
    Ok(())
}

fn cookie(outcome: &SaveOutcome) -> String {
    let set = outcome.set_cookie.as_deref().expect("a Set-Cookie");
    set.split(';').next().unwrap().to_owned()
}

/// A login as a real app does it: regenerate, tie to the user, store something.
fn login<S: Store>(s: &Sessions<S>, label: &str) -> fscache::Result<String> {
    let mut session = s.load(None)?;
    session.regenerate()?;
    session.set_user(USER, Some(label))?;
    session.insert("cart", &vec![label])?;
    Ok(cookie(&s.save(&mut session)?))
}

fn live<S: Store>(s: &Sessions<S>, cookie: &str) -> fscache::Result<bool> {
    Ok(!s.load(Some(cookie))?.is_new())
}

fn labels<S: Store>(s: &Sessions<S>) -> fscache::Result<Vec<String>> {
    let mut labels: Vec<String> = s
        .user_sessions(USER, None)?
        .into_iter()
        .map(|d| d.label.unwrap_or_default())
        .collect();
    labels.sort();
    Ok(labels)
}

/// The raw index: how many live and ended entries it holds.
fn raw_index(p: &Pair) -> (usize, usize) {
    let key = format!(
        "{}user:{}",
        p.prefix,
        blake3::hash(USER.as_bytes()).to_hex()
    );
    let Some(stored) = p.store.load(&key).unwrap() else {
        return (0, 0);
    };
    let v: serde_json::Value = serde_json::from_slice(&stored.value).unwrap();
    let n = |k: &str| v[k].as_array().map_or(0, Vec::len);
    (n("live"), n("ended"))
}

#[test]
fn devices_are_listed_and_the_others_ended() -> TestResult {
    each("devices", |p| {
        let laptop = login(&p.s, "laptop")?;
        let phone = login(&p.s, "phone")?;
        let tablet = login(&p.s, "tablet")?;
        let current = p.s.load(Some(&laptop))?;
        assert_eq!(current.user(), Some(USER));
        assert_eq!(current.user_label(), Some("laptop"));
        let list = p.s.user_sessions(USER, Some(&current))?;
        assert_eq!(list.len(), 3, "{list:?}");
        let marked: Vec<_> = list.iter().filter(|d| d.current).collect();
        assert_eq!(marked.len(), 1);
        assert_eq!(marked[0].label.as_deref(), Some("laptop"));
        for d in &list {
            assert_eq!(d.handle.len(), 64);
            assert!(d.created_ms > 0 && d.last_seen_ms >= d.created_ms);
            // No cookie value shows in a listing.
            for c in [&laptop, &phone, &tablet] {
                let id = c.split('=').nth(1).unwrap();
                assert!(!d.handle.contains(id) && !id.contains(&d.handle));
            }
        }
        // Another user's index is another list.
        assert!(p.s.user_sessions("someone-else", None)?.is_empty());

        assert_eq!(p.s.end_user_sessions(USER, Some(&current))?, 2);
        assert!(live(&p.s, &laptop)?);
        assert!(!live(&p.s, &phone)?);
        assert!(!live(&p.s, &tablet)?);
        assert_eq!(labels(&p.s)?, ["laptop"]);

        // Log out everywhere, the current one too.
        assert_eq!(p.s.end_user_sessions(USER, None)?, 1);
        assert!(!live(&p.s, &laptop)?);
        assert!(labels(&p.s)?.is_empty());
        assert_eq!(raw_index(p).0, 0);
        Ok(())
    })
}

#[test]
fn one_device_is_ended_by_its_handle_even_after_it_regenerated() -> TestResult {
    each("end-one", |p| {
        let laptop = login(&p.s, "laptop")?;
        let phone = login(&p.s, "phone")?;
        let list = p.s.user_sessions(USER, None)?;
        let handle = list
            .iter()
            .find(|d| d.label.as_deref() == Some("phone"))
            .unwrap()
            .handle
            .clone();
        // The phone regenerates its id (a privilege change) after the page was listed.
        let mut session = p.s.load(Some(&phone))?;
        session.regenerate()?;
        let phone = cookie(&p.s.save(&mut session)?);
        assert!(live(&p.s, &phone)?);
        assert_eq!(labels(&p.s)?, ["laptop", "phone"]);

        assert!(p.s.end_user_session(USER, &handle)?);
        assert!(!live(&p.s, &phone)?, "the regenerated id is ended too");
        assert!(live(&p.s, &laptop)?);
        assert_eq!(labels(&p.s)?, ["laptop"]);
        // Unknown, malformed and other users' handles end nothing.
        assert!(!p.s.end_user_session(USER, &handle)?);
        assert!(!p.s.end_user_session(USER, "not a handle")?);
        let laptop_handle = p.s.user_sessions(USER, None)?[0].handle.clone();
        assert!(!p.s.end_user_session("someone-else", &laptop_handle)?);
        assert!(live(&p.s, &laptop)?);
        Ok(())
    })
}

#[test]
fn a_request_in_flight_when_its_session_ends_never_brings_it_back() -> TestResult {
    each("in-flight", |p| {
        for (what, act) in [
            ("a plain change", 0),
            ("a regenerate", 1),
            ("a login again", 2),
        ] {
            let _laptop = login(&p.s, "laptop")?;
            let phone = login(&p.s, "phone")?;
            // The phone's request loads its session...
            let mut session = p.s.load(Some(&phone))?;
            // ...the laptop logs out everywhere...
            assert_eq!(p.other.end_user_sessions(USER, None)?, 2, "{what}");
            // ...and the phone's request goes on and saves.
            session.insert("cart", &vec!["more"])?;
            if act >= 1 {
                session.regenerate()?;
            }
            if act == 2 {
                session.set_user(USER, Some("phone again"))?;
            }
            let outcome = p.s.save(&mut session)?;
            if act >= 1 {
                // Refused, and no Set-Cookie: this answer may arrive after a new
                // login's, whose cookie must stand.
                assert_eq!(outcome.set_cookie, None, "{what}");
            }
            assert!(!live(&p.s, &phone)?, "{what}");
            assert!(!live(&p.s, session.id())?, "{what}");
            assert!(labels(&p.s)?.is_empty(), "{what}: {:?}", labels(&p.s)?);
        }
        Ok(())
    })
}

/// Runs `f` once, the first time `op` is called on a key containing `key_part`.
fn once_before(
    p: &Pair,
    op: &'static str,
    key_part: String,
    f: impl Fn() + Send + Sync + 'static,
) -> Arc<AtomicBool> {
    let fired = Arc::new(AtomicBool::new(false));
    let flag = fired.clone();
    p.s.store().before(Some(Box::new(move |o, key| {
        if o == op && key.contains(&key_part) && !flag.swap(true, Ordering::SeqCst) {
            f();
        }
    })));
    fired
}

fn user_key_part() -> String {
    format!("user:{}", blake3::hash(USER.as_bytes()).to_hex())
}

#[test]
fn a_login_whose_record_lands_after_log_out_everywhere_is_undone() -> TestResult {
    each("login-vs-end", |p| {
        let laptop = login(&p.s, "laptop")?;
        // The phone's login has joined the index; before its record is written,
        // another server logs the user out everywhere.
        let other = p.other.clone();
        let fired = once_before(p, "insert", p.prefix.clone(), move || {
            assert_eq!(other.end_user_sessions(USER, None).unwrap(), 2);
        });
        let mut session = p.s.load(None)?;
        session.set_user(USER, Some("phone"))?;
        let outcome = p.s.save(&mut session)?;
        p.s.store().before(None);
        assert!(fired.load(Ordering::SeqCst));
        assert_eq!(outcome.set_cookie, None, "no cookie for an ended login");
        assert!(!live(&p.s, session.id())?);
        assert!(!live(&p.s, &laptop)?);
        assert!(labels(&p.s)?.is_empty());
        Ok(())
    })
}

#[test]
fn a_login_between_the_steps_of_log_out_everywhere_is_ended() -> TestResult {
    each("end-steps", |p| {
        let laptop = login(&p.s, "laptop")?;
        let phone = Arc::new(Mutex::new(String::new()));
        // The records are removed; before the index marks them ended, the phone
        // logs in on another server.
        let (other, slot) = (p.other.clone(), phone.clone());
        let fired = once_before(p, "update", user_key_part(), move || {
            *slot.lock().unwrap() = login(&*other, "phone").unwrap();
        });
        assert_eq!(p.s.end_user_sessions(USER, None)?, 2);
        p.s.store().before(None);
        assert!(fired.load(Ordering::SeqCst));
        let phone = phone.lock().unwrap().clone();
        assert!(
            !live(&p.s, &phone)?,
            "the phone that joined meanwhile is ended"
        );
        assert!(!live(&p.s, &laptop)?);
        assert!(labels(&p.s)?.is_empty());
        Ok(())
    })
}

#[test]
fn two_logins_at_once_are_both_indexed() -> TestResult {
    each("two-logins", |p| {
        // Forced: the second login's index update runs while the first one's is
        // about to run (optimistic stores replay the loser).
        let other = p.other.clone();
        let fired = once_before(p, "update", user_key_part(), move || {
            login(&*other, "phone").unwrap();
        });
        login(&p.s, "laptop")?;
        p.s.store().before(None);
        assert!(fired.load(Ordering::SeqCst));
        assert_eq!(labels(&p.s)?, ["laptop", "phone"]);

        // And 8 threads released together.
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (other, barrier) = (p.other.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    login(&*other, &format!("t{i}")).unwrap()
                })
            })
            .collect();
        let cookies: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(labels(&p.s)?.len(), 10);
        for c in &cookies {
            assert!(live(&p.s, c)?);
        }
        assert_eq!(p.s.end_user_sessions(USER, None)?, 10);
        for c in &cookies {
            assert!(!live(&p.s, c)?);
        }
        Ok(())
    })
}

#[test]
fn a_logout_racing_log_out_everywhere_leaves_nothing_behind() -> TestResult {
    each("logout-vs-end", |p| {
        let phone = login(&p.s, "phone")?;
        let laptop = login(&p.other, "laptop")?;
        // The phone logs out: its record is removed; before the index hears of it,
        // the laptop logs the user out everywhere.
        let other = p.other.clone();
        let fired = once_before(p, "update", user_key_part(), move || {
            other.end_user_sessions(USER, None).unwrap();
        });
        let mut session = p.s.load(Some(&phone))?;
        session.destroy();
        let outcome = p.s.save(&mut session)?;
        p.s.store().before(None);
        assert!(fired.load(Ordering::SeqCst));
        assert!(outcome.set_cookie.unwrap().contains("Max-Age=0"));
        assert!(!live(&p.s, &phone)? && !live(&p.s, &laptop)?);
        assert!(labels(&p.s)?.is_empty());
        assert_eq!(raw_index(p).0, 0, "no live entry is left in the index");
        Ok(())
    })
}

#[test]
fn a_login_whose_save_failed_is_indexed_once_by_the_retry() -> TestResult {
    each("retry", |p| {
        for (op, when) in [
            ("update", When::After),
            ("update", When::Before),
            ("insert", When::Before),
            ("load", When::Before),
        ] {
            let mut session = p.s.load(None)?;
            session.set_user(USER, Some("laptop"))?;
            p.s.store().fail_next(1, &[op], when);
            let err = p.s.save(&mut session).expect_err("the injected fault");
            assert!(err.is_retryable(), "{err}");
            let outcome = p.s.save(&mut session)?;
            let cookie = cookie(&outcome);
            assert!(live(&p.s, &cookie)?, "{op} {when:?}");
            assert_eq!(labels(&p.s)?, ["laptop"], "{op} {when:?}");
            assert_eq!(raw_index(p).0, 1, "{op} {when:?}: indexed once");
            p.s.end_user_sessions(USER, None)?;
        }
        // A logout whose index update failed: the retry completes it.
        let phone = login(&p.s, "phone")?;
        let mut session = p.s.load(Some(&phone))?;
        session.destroy();
        p.s.store().fail_next(1, &["update"], When::Before);
        assert!(p.s.save(&mut session).is_err());
        assert!(!live(&p.s, &phone)?, "the record went first");
        p.s.save(&mut session)?;
        assert_eq!(raw_index(p).0, 0);
        Ok(())
    })
}

#[test]
fn clear_and_destroy_untie_the_user() -> TestResult {
    each("untie", |p| {
        let laptop = login(&p.s, "laptop")?;
        let phone = login(&p.s, "phone")?;
        let mut session = p.s.load(Some(&laptop))?;
        session.clear();
        session.insert("theme", &"dark")?;
        p.s.save(&mut session)?;
        let session = p.s.load(Some(&laptop))?;
        assert!(!session.is_new() && session.user().is_none());
        assert_eq!(labels(&p.s)?, ["phone"], "a cleared session is not listed");
        // Ending the user's sessions leaves the untied one alone.
        assert_eq!(p.s.end_user_sessions(USER, None)?, 1);
        assert!(live(&p.s, &laptop)? && !live(&p.s, &phone)?);
        Ok(())
    })
}

#[test]
fn the_index_follows_sessions_that_expire() -> TestResult {
    // A user who logs in daily for years and never logs out: the index holds
    // about the live sessions, not every login. (File store with a manual clock;
    // the pruning is the same code on every store.)
    let dir = tempfile::tempdir()?;
    let clock = fscache::ManualClock::new();
    let store = fscache::FileSystemCache::builder(dir.path())
        .threshold(0)
        .clock(clock.clone())
        .open()?;
    let store: &'static dyn Store = Box::leak(Box::new(store));
    let prefix = prefix("expire");
    let cfg = config(&prefix).clock(clock.clone());
    let p = Pair {
        name: "file",
        url: String::new(),
        prefix: prefix.clone(),
        store,
        s: Sessions::new(Faulty::new(store), cfg.clone())?,
        other: Arc::new(Sessions::new(store, cfg)?),
    };
    let mut max = 0;
    for day in 0..400 {
        login(&p.s, &format!("day {day}"))?;
        clock.advance(Duration::from_secs(601));
        max = max.max(raw_index(&p).0);
    }
    assert!(max <= 12, "the index grew to {max} entries");
    assert!(labels(&p.s)?.is_empty());
    assert_eq!(raw_index(&p).0, 0, "a listing drops what expired");
    Ok(())
}

#[cfg(feature = "flask")]
#[test]
fn flask_mode_keeps_no_user_index() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = fscache::store::open(&format!("cachelib://{}", dir.path().display()))?;
    let config = SessionConfig::flask_session(fscache::flask::FlaskFormat::Pickle);
    let sessions = Sessions::new(store, config)?;
    let mut session = sessions.load(None)?;
    session.insert("user", &"ada")?;
    session.set_user(USER, None)?;
    match sessions.save(&mut session) {
        Err(fscache::Error::Config { message, .. }) => {
            assert!(message.contains("Flask"), "{message}")
        }
        other => panic!("expected a Config error, got {other:?}"),
    }
    assert!(sessions.user_sessions(USER, None)?.is_empty());
    Ok(())
}

// ---- SIGKILL between the index and the records ----

fn session_of<S: Store>(s: &Sessions<S>, cookie: &str) -> Session {
    s.load(Some(cookie)).unwrap()
}

/// Child: pauses (a marker file, then sleep) at the chosen point; the parent kills
/// it with SIGKILL there.
#[test]
fn child_entry_point() -> TestResult {
    let Ok(job) = std::env::var("FSCACHE_CHILD") else {
        return Ok(());
    };
    let dir = std::path::PathBuf::from(std::env::var("FSCACHE_CHILD_DIR")?);
    let url = std::env::var("FSCACHE_USER_URL")?;
    let prefix = std::env::var("FSCACHE_USER_PREFIX")?;
    let store: &'static dyn Store = Box::leak(fscache::store::open(&url)?);
    let s = Sessions::new(Faulty::new(store), config(&prefix))?;
    let (op, part) = match job.as_str() {
        "end-all" => ("update", user_key_part()),
        "login" => ("insert", prefix.clone()),
        _ => unreachable!(),
    };
    let marker = dir.join("paused");
    s.store().before(Some(Box::new(move |o, key| {
        if o == op && key.contains(&part) {
            std::fs::write(&marker, b"").unwrap();
            std::thread::sleep(Duration::from_secs(60));
        }
    })));
    match job.as_str() {
        "end-all" => {
            s.end_user_sessions(USER, None)?;
        }
        _ => {
            login(&s, "killed")?;
        }
    }
    unreachable!("the parent kills this process while it is paused");
}

fn run_child_until_killed(p: &Pair, job: &str) -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut child = child_command(job, dir.path(), 0)
        .env("FSCACHE_USER_URL", &p.url)
        .env("FSCACHE_USER_PREFIX", &p.prefix)
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let marker = dir.path().join("paused");
    for _ in 0..600 {
        if marker.exists() {
            break;
        }
        if let Some(status) = child.try_wait()? {
            return Err(format!("the child exited early: {status}").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(marker.exists(), "the child never reached its pause point");
    child.kill()?; // SIGKILL
    child.wait()?;
    Ok(())
}

#[test]
fn a_process_killed_in_log_out_everywhere_leaves_no_session_usable() -> TestResult {
    each("kill-end", |p| {
        let cookies = [login(&p.s, "laptop")?, login(&p.s, "phone")?];
        // Killed after removing the records, before the index update.
        run_child_until_killed(p, "end-all")?;
        for c in &cookies {
            assert!(!live(&p.s, c)?, "an ended session stays ended");
        }
        assert_eq!(raw_index(p).0, 2, "the index still lists them");
        assert!(labels(&p.s)?.is_empty(), "a listing shows none");
        // Entries are dropped once they are a minute old (a younger one may be a
        // login still writing its record).
        let clock = fscache::ManualClock::new();
        clock.advance(Duration::from_secs(61));
        let later = Sessions::new(p.store, config(&p.prefix).clock(clock))?;
        assert!(labels(&later)?.is_empty());
        assert_eq!(raw_index(p).0, 0, "a listing drops them");
        // Running it again is harmless.
        assert_eq!(p.s.end_user_sessions(USER, None)?, 0);
        Ok(())
    })
}

#[test]
fn a_process_killed_in_a_login_leaves_no_listed_ghost() -> TestResult {
    each("kill-login", |p| {
        let laptop = login(&p.s, "laptop")?;
        // Killed after the index took the login, before the record was written.
        run_child_until_killed(p, "login")?;
        assert_eq!(raw_index(p).0, 2);
        assert_eq!(labels(&p.s)?, ["laptop"], "the ghost is not listed");
        // A minute on, a listing drops it.
        let clock = fscache::ManualClock::new();
        clock.advance(Duration::from_secs(61));
        let later = Sessions::new(p.store, config(&p.prefix).clock(clock))?;
        assert_eq!(labels(&later)?, ["laptop"]);
        assert_eq!(raw_index(p).0, 1);
        let current = session_of(&p.s, &laptop);
        assert_eq!(p.s.end_user_sessions(USER, Some(&current))?, 0);
        assert!(live(&p.s, &laptop)?);
        Ok(())
    })
}

#[test]
fn the_index_outlives_every_session_that_stays_active() -> TestResult {
    // A session used every few days for months (its expiry sliding) stays listed
    // and endable: its saves renew the index's expiry. (File store, manual clock.)
    let dir = tempfile::tempdir()?;
    let clock = fscache::ManualClock::new();
    let store = fscache::FileSystemCache::builder(dir.path())
        .threshold(0)
        .clock(clock.clone())
        .open()?;
    let lifetime = Duration::from_secs(7 * 86_400);
    let cfg = SessionConfig::default()
        .lifetime(lifetime)
        .clock(clock.clone());
    let sessions = Sessions::new(store, cfg)?;
    let cookie = login(&sessions, "laptop")?;
    for _ in 0..60 {
        clock.advance(Duration::from_secs(3 * 86_400));
        let mut s = sessions.load(Some(&cookie))?;
        assert!(!s.is_new(), "the session slid");
        s.update("visits", |n: Option<u64>| Some(n.unwrap_or(0) + 1))?;
        sessions.save(&mut s)?;
    }
    assert_eq!(
        labels(&sessions)?,
        ["laptop"],
        "still listed after 180 days"
    );
    assert_eq!(sessions.end_user_sessions(USER, None)?, 1);
    assert!(!live(&sessions, &cookie)?);
    Ok(())
}

#[test]
fn requests_between_login_and_logout_make_no_index_call() -> TestResult {
    // The README's cost claim: after the login, a session's requests (reads,
    // changes, counter bumps) touch only its own record until the index renewal
    // is due (a tenth of the lifetime, 60 s here).
    each("no-index-calls", |p| {
        let cookie = login(&p.s, "laptop")?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (log, part) = (seen.clone(), user_key_part());
        p.s.store().before(Some(Box::new(move |op, key| {
            if key.contains(&part) {
                log.lock().unwrap().push(op);
            }
        })));
        for i in 0..10 {
            let mut s = p.s.load(Some(&cookie))?;
            assert_eq!(s.user(), Some(USER));
            s.insert("page", &i)?;
            s.update("visits", |n: Option<u64>| Some(n.unwrap_or(0) + 1))?;
            p.s.save(&mut s)?;
        }
        p.s.store().before(None);
        let seen = seen.lock().unwrap();
        assert!(seen.is_empty(), "index calls: {seen:?}");
        Ok(())
    })
}
