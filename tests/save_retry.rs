//! `Sessions::save` is safe to retry: after a store call fails (a dropped
//! connection, ENOSPC, EACCES), the `Session` still holds its changes, its version,
//! the id `regenerate` retired and the id `destroy` ends, so saving it again stores
//! the change, completes the logout, deletes the pre-login id — or fails again.
//!
//! Each case runs on every store (tests/common/stores.rs) behind a wrapper that
//! fails chosen calls (tests/common/faulty.rs), before they reach the store or
//! after it applied them (a lost reply).

mod common;

use std::time::Duration;

use common::faulty::{Faulty, When};
use common::stores::{prefix, subjects};
use fscache::session::{SaveOutcome, Session, SessionConfig, Sessions};
use fscache::store::Store;

type TestResult = Result<(), Box<dyn std::error::Error>>;

type Subject<'a> = Sessions<Faulty<&'a dyn Store>>;

fn sessions<'a>(store: &'a dyn Store, test: &str) -> fscache::Result<Subject<'a>> {
    let config = SessionConfig::default()
        .key_prefix(prefix(test))
        .lifetime(Duration::from_secs(600));
    Sessions::new(Faulty::new(store), config)
}

fn cookie(outcome: &SaveOutcome) -> String {
    let set = outcome.set_cookie.as_deref().expect("a Set-Cookie");
    set.split(';').next().unwrap().to_owned()
}

/// A stored session holding `user = "ada"`; its cookie.
fn logged_in(s: &Subject<'_>) -> fscache::Result<String> {
    let mut session = s.load(None)?;
    session.insert("user", &"ada")?;
    Ok(cookie(&s.save(&mut session)?))
}

/// Saves until it succeeds; how many attempts failed.
fn save_retrying(s: &Subject<'_>, session: &mut Session) -> (SaveOutcome, usize) {
    for failures in 0..10 {
        match s.save(session) {
            Ok(outcome) => return (outcome, failures),
            Err(e) => assert!(e.is_retryable(), "an injected fault is retryable: {e}"),
        }
    }
    panic!("save never succeeded");
}

const WRITES: &[&str] = &[
    "insert",
    "compare_and_set",
    "update",
    "remove",
    "touch",
    "replace",
];

#[test]
fn a_change_whose_save_failed_is_stored_by_the_retry() -> TestResult {
    for subject in subjects() {
        let n = subject.name;
        for (failures, when) in [(1, When::Before), (2, When::Before), (1, When::After)] {
            let s = sessions(&*subject.store, "change")?;
            let c = logged_in(&s)?;
            let mut session = s.load(Some(&c))?;
            session.insert("cart", &vec![1, 2])?;
            session.update("visits", |v: Option<u32>| Some(v.unwrap_or(0) + 1))?;
            s.store().fail_next(failures, WRITES, when);
            let (_, failed) = save_retrying(&s, &mut session);
            assert_eq!(failed, failures, "{n}: {:?}", s.store().failed());
            let again = s.load(Some(&c))?;
            assert_eq!(
                again.get::<Vec<u32>>("cart")?,
                Some(vec![1, 2]),
                "{n}: {failures} failure(s) {when:?}: the change is stored"
            );
            assert_eq!(again.get::<String>("user")?.as_deref(), Some("ada"), "{n}");
            // Before: nothing reached the store before the retry. After: the first
            // attempt landed and only its reply was lost; the retry finds its save
            // id in the record and replays nothing. Either way the update ran once.
            assert_eq!(
                again.get::<u32>("visits")?,
                Some(1),
                "{n}: {failures} failure(s) {when:?}: the update is applied once"
            );
        }
    }
    Ok(())
}

#[test]
fn a_change_whose_merge_failed_is_merged_by_the_retry() -> TestResult {
    for subject in subjects() {
        let n = subject.name;
        for when in [When::Before, When::After] {
            let s = sessions(&*subject.store, "merge")?;
            let c = logged_in(&s)?;
            let mut first = s.load(Some(&c))?;
            let mut second = s.load(Some(&c))?;
            second.insert("theme", &"dark")?;
            s.save(&mut second)?;
            // `first` is stale now: its save goes to the merge, which fails once
            // (After: the merge was written and its reply lost).
            first.update("visits", |v: Option<u32>| Some(v.unwrap_or(0) + 1))?;
            s.store().fail_next(1, &["update", "load"], when);
            let failed = s.save(&mut first).expect_err("the injected fault");
            assert!(failed.is_retryable(), "{n}: {failed}");
            // Another request's update lands between the failure and the retry:
            // the retry must still find its own write (and keep this one).
            let mut third = s.load(Some(&c))?;
            third.update("visits", |v: Option<u32>| Some(v.unwrap_or(0) + 10))?;
            s.save(&mut third)?;
            s.save(&mut first)?;
            let again = s.load(Some(&c))?;
            assert_eq!(
                again.get::<u32>("visits")?,
                Some(11),
                "{n} {when:?}: each update applied once"
            );
            assert_eq!(
                again.get::<String>("theme")?.as_deref(),
                Some("dark"),
                "{n}"
            );
        }
    }
    Ok(())
}

#[test]
fn a_logout_whose_save_failed_is_completed_by_the_retry() -> TestResult {
    for subject in subjects() {
        let n = subject.name;
        for when in [When::Before, When::After] {
            let s = sessions(&*subject.store, "logout")?;
            let c = logged_in(&s)?;
            let mut session = s.load(Some(&c))?;
            session.destroy();
            s.store().fail_next(1, &["remove"], when);
            let (outcome, failed) = save_retrying(&s, &mut session);
            assert_eq!(failed, 1, "{n}");
            let expired = outcome.set_cookie.expect("the retry expires the cookie");
            assert!(expired.contains("Max-Age=0"), "{n}: {expired}");
            let after = s.load(Some(&c))?;
            assert!(
                after.is_new(),
                "{n} {when:?}: the old cookie no longer loads the session"
            );
            let key = s.store_key(c.split_once('=').unwrap().1);
            assert_eq!(s.store().load(&key)?, None, "{n}: the record is gone");
        }
    }
    Ok(())
}

#[test]
fn a_login_whose_save_failed_still_retires_the_old_id() -> TestResult {
    for subject in subjects() {
        let n = subject.name;
        // Fail the removal of the pre-login id, then the insert of the new one.
        // A remove whose reply was lost (When::After) is the ambiguous case: the
        // retry finds the old record gone and must take that for its own remove,
        // not for a concurrent logout.
        for (ops, when) in [
            (&["remove"][..], When::Before),
            (&["insert"][..], When::Before),
            (&["remove", "insert"][..], When::Before),
            (&["remove"][..], When::After),
        ] {
            let s = sessions(&*subject.store, "login")?;
            let c = logged_in(&s)?;
            let mut session = s.load(Some(&c))?;
            session.regenerate()?;
            session.insert("role", &"admin")?;
            s.store().fail_next(ops.len(), ops, when);
            let (outcome, failed) = save_retrying(&s, &mut session);
            assert_eq!(failed, ops.len(), "{n} {ops:?}");
            let new_cookie = cookie(&outcome);
            assert_ne!(new_cookie, c, "{n}");
            assert!(
                s.load(Some(&c))?.is_new(),
                "{n} {ops:?}: the pre-login id loads no session (fixation defence)"
            );
            let after = s.load(Some(&new_cookie))?;
            assert_eq!(
                after.get::<String>("role")?.as_deref(),
                Some("admin"),
                "{n}"
            );
            assert_eq!(after.get::<String>("user")?.as_deref(), Some("ada"), "{n}");
        }
    }
    Ok(())
}

#[test]
fn a_new_session_whose_insert_failed_is_stored_by_the_retry() -> TestResult {
    for subject in subjects() {
        let n = subject.name;
        for when in [When::Before, When::After] {
            let s = sessions(&*subject.store, "new")?;
            let mut session = s.load(None)?;
            session.insert("user", &"bob")?;
            let id = session.id().to_owned();
            s.store().fail_next(1, &["insert"], when);
            let (outcome, failed) = save_retrying(&s, &mut session);
            assert_eq!(failed, 1, "{n}");
            // After a lost reply the first id's record exists already: the retry
            // finds this session in it and keeps it, rather than storing the
            // session again under a new id and leaving that record behind.
            assert_eq!(session.id(), id, "{n} {when:?}: one record, the first id");
            let c = cookie(&outcome);
            let again = s.load(Some(&c))?;
            assert_eq!(
                again.get::<String>("user")?.as_deref(),
                Some("bob"),
                "{n} {when:?}"
            );
        }
    }
    Ok(())
}

/// A session dropped after a failed save loses only its own changes.
#[test]
fn a_dropped_session_after_an_error_loses_only_its_own_changes() -> TestResult {
    for subject in subjects() {
        let n = subject.name;
        let s = sessions(&*subject.store, "drop")?;
        let c = logged_in(&s)?;
        let mut session = s.load(Some(&c))?;
        session.insert("cart", &1)?;
        s.store().fail_next(1, WRITES, When::Before);
        assert!(s.save(&mut session).is_err(), "{n}");
        drop(session);
        let again = s.load(Some(&c))?;
        assert_eq!(again.get::<String>("user")?.as_deref(), Some("ada"), "{n}");
        assert_eq!(again.get::<u32>("cart")?, None, "{n}");
    }
    Ok(())
}

#[test]
fn a_regenerate_racing_a_logout_or_another_login_does_not_bring_the_old_session_back() -> TestResult
{
    for subject in subjects() {
        let n = subject.name;
        for other in ["logout", "login"] {
            let s = sessions(&*subject.store, "regen-race")?;
            let c = logged_in(&s)?;
            // A request loads the session and will regenerate its id (a privilege
            // change, a second click on "log in")...
            let mut late = s.load(Some(&c))?;
            // ...while another request of the same session logs out, or logs in.
            let mut first = s.load(Some(&c))?;
            let first_cookie = if other == "logout" {
                first.destroy();
                s.save(&mut first)?;
                None
            } else {
                first.regenerate()?;
                Some(cookie(&s.save(&mut first)?))
            };
            late.regenerate()?;
            late.insert("role", &"admin")?;
            let outcome = s.save(&mut late)?;
            assert_eq!(
                outcome.set_cookie, None,
                "{n} {other}: no cookie that could replace the other request's"
            );
            assert!(s.load(Some(late.id()))?.is_new(), "{n} {other}: not stored");
            assert!(s.load(Some(&c))?.is_new(), "{n} {other}");
            if let Some(first_cookie) = first_cookie {
                let kept = s.load(Some(&first_cookie))?;
                assert_eq!(kept.get::<String>("user")?.as_deref(), Some("ada"), "{n}");
                assert_eq!(kept.get::<String>("role")?, None, "{n}");
            }
        }
    }
    Ok(())
}
