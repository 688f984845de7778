//! The interleavings the engine's guarantees are about, forced (test hooks, channels
//! with timeouts) rather than hoped for in a stress loop. Each test runs in whichever
//! rename mode the environment selects (CI runs this file in both).

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use common::{TestResult, entry_files, entry_path, temp_cache_dir, temp_files};
use fscache::hooks::{self, Point};
use fscache::{Error, FileSystemCache, RenameMode, Ttl};

/// Hooks are process-wide: the tests that arm them run one at a time.
fn hook_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Clears the hooks when dropped, also when an assertion fails.
struct Armed(#[allow(dead_code)] MutexGuard<'static, ()>);
impl Drop for Armed {
    fn drop(&mut self) {
        hooks::clear_hooks();
    }
}

fn open(dir: &std::path::Path, threshold: usize) -> fscache::Result<FileSystemCache> {
    FileSystemCache::builder(dir).threshold(threshold).open()
}

/// Runs `f` on a thread and fails if it does not finish in time (a deadlock).
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what} did not finish in {secs} s: deadlock")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what} panicked (see above)"),
    }
}

// ----- item 2: delete is ordered with read-modify-write -----

#[test]
fn delete_during_an_update_is_not_undone_by_it() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let c = open(&dir, 0)?;
    c.set("session", &1u32)?;
    let (entered_tx, entered_rx) = mpsc::channel();
    let (deleted_tx, deleted_rx) = mpsc::channel();
    let updater = {
        let c = c.clone();
        std::thread::spawn(move || {
            c.update("session", Ttl::Default, |v: Option<u32>| {
                entered_tx.send(()).unwrap();
                // Before the fix the delete completed here, and this write brought
                // the key back. Now it waits for this update to finish.
                let delete_finished_inside = deleted_rx.recv_timeout(Duration::from_millis(300));
                assert!(
                    delete_finished_inside.is_err(),
                    "delete returned while an update of the key was in progress"
                );
                v.map(|n| n + 1)
            })
        })
    };
    entered_rx.recv()?;
    let existed = c.delete("session")?;
    deleted_tx.send(()).ok();
    let updated = updater.join().expect("updater panicked")?;
    assert_eq!(
        updated,
        Some(2),
        "the update saw the record before the delete"
    );
    assert!(existed, "delete removed the updated record");
    assert_eq!(c.get::<u32>("session")?, None, "a delete stays a delete");
    Ok(())
}

#[test]
fn delete_while_a_sweep_has_a_rewritten_entry_moved_aside_removes_it() -> TestResult {
    let _armed = Armed(hook_lock());
    let (_tmp, dir) = temp_cache_dir();
    let clock = fscache::ManualClock::new();
    let c = FileSystemCache::builder(&dir)
        .threshold(0)
        .clock(clock.clone())
        .open()?;
    // The sweep decides to evict "k" (expired); before it moves the name aside, "k"
    // is rewritten (live). The sweep then moves the new write aside, finds it is not
    // the one it decided on, and restores it. A delete of "k" in that window must
    // not report "absent" and then see the key come back.
    c.set_with_ttl("k", &1, Ttl::After(Duration::from_secs(1)))?;
    clock.advance(Duration::from_secs(2));
    let writer = c.clone();
    let own = dir.clone();
    let rewritten = Arc::new(AtomicBool::new(false));
    let r2 = rewritten.clone();
    hooks::set_hook(Point::EvictBegin, move |d| {
        if d == own && !r2.swap(true, Ordering::SeqCst) {
            writer
                .set_with_ttl("k", &2, Ttl::Never)
                .map_err(std::io::Error::from)?;
        }
        Ok(())
    });
    let (deleter_tx, deleter_rx) = mpsc::channel();
    let deleter_tx = Mutex::new(Some(deleter_tx));
    let (c2, own) = (c.clone(), dir.clone());
    hooks::set_hook(Point::EvictMovedAside, move |d| {
        if d != own {
            return Ok(());
        }
        if let Some(tx) = deleter_tx.lock().unwrap().take() {
            let c3 = c2.clone();
            let (done_tx, done_rx) = mpsc::channel();
            std::thread::spawn(move || {
                let r = c3.delete("k");
                done_tx.send(()).ok();
                tx.send(r.map_err(|e| e.to_string())).ok();
            });
            // Where delete takes no lock it finishes now, while "k" is aside.
            let _ = done_rx.recv_timeout(Duration::from_millis(300));
        }
        Ok(())
    });
    let report = c.prune();
    hooks::clear_hooks();
    report?;
    let deleted = deleter_rx.recv_timeout(Duration::from_secs(10))??;
    assert!(
        rewritten.load(Ordering::SeqCst),
        "the forced rewrite happened"
    );
    assert!(
        deleted,
        "the key was live when delete started: it must report it"
    );
    assert_eq!(c.get::<i32>("k")?, None, "deleted keys stay deleted");
    assert_eq!(c.approximate_len(), 0);
    Ok(())
}

#[cfg(feature = "sessions")]
#[test]
fn a_logout_during_a_concurrent_request_stays_a_logout() -> TestResult {
    use fscache::session::{SessionConfig, Sessions};
    let (_tmp, dir) = temp_cache_dir();
    let store = open(&dir, 0)?;
    let sessions = Arc::new(Sessions::new(store.clone(), SessionConfig::default())?);
    let mut login = sessions.load(None)?;
    login.insert("user", &"ada")?;
    let cookie = sessions
        .save(&mut login)?
        .set_cookie
        .expect("a new session sets a cookie");
    let pair = cookie.split(';').next().unwrap().to_owned();

    // Request A is saving a change; request B logs out while A's merge runs.
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let entered_tx = Mutex::new(entered_tx);
    let mut a = sessions.load(Some(&pair))?;
    a.update("visits", move |n: Option<u64>| {
        entered_tx.lock().unwrap().send(()).ok();
        std::thread::sleep(Duration::from_millis(200));
        Some(n.unwrap_or(0) + 1)
    })?;
    let saver = {
        let sessions = sessions.clone();
        std::thread::spawn(move || sessions.save(&mut a).map(|o| o.set_cookie))
    };
    entered_rx.recv()?;
    let mut b = sessions.load(Some(&pair))?;
    b.destroy();
    sessions.save(&mut b)?;
    saver.join().expect("saver")?;
    let after = sessions.load(Some(&pair))?;
    assert!(
        after.get::<String>("user")?.is_none(),
        "logged out for good"
    );
    assert_ne!(after.id(), login.id(), "the old id names no session");
    assert_eq!(entry_files(&dir).len(), 0, "no record resurrected on disk");
    Ok(())
}

// ----- item 3: add is atomic against plain set -----

#[test]
fn a_set_that_lands_before_adds_commit_wins() -> TestResult {
    let _armed = Armed(hook_lock());
    let (_tmp, dir) = temp_cache_dir();
    let c = open(&dir, 0)?;
    let landed_between = Arc::new(AtomicUsize::new(0));
    let (c2, own, landed) = (c.clone(), dir.clone(), landed_between.clone());
    let key = Arc::new(Mutex::new(String::new()));
    let k2 = key.clone();
    hooks::set_hook(Point::AddBeforeCommit, move |d| {
        if d != own {
            return Ok(());
        }
        // Another thread sets the key now. Where set takes no lock it completes
        // before add commits; in the portable mode it waits for add's stripe lock.
        let (tx, rx) = mpsc::channel();
        let (c, k) = (c2.clone(), k2.lock().unwrap().clone());
        std::thread::spawn(move || {
            c.set(&k, "from set").unwrap();
            tx.send(()).ok();
        });
        // Lock-free, the set always completes (allow a loaded machine 5 s); under the
        // portable mode's lock it never can, so a short wait shows that.
        let wait = match c2.stats().rename_mode {
            RenameMode::Renameat2 => Duration::from_secs(5),
            _ => Duration::from_millis(100),
        };
        if rx.recv_timeout(wait).is_ok() {
            landed.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    });
    let rounds = 20;
    let mut added = 0;
    for i in 0..rounds {
        let k = format!("k{i}");
        *key.lock().unwrap() = k.clone();
        let before = landed_between.load(Ordering::SeqCst);
        let ok = c.add(&k, "from add", Ttl::Default)?;
        let set_landed_first = landed_between.load(Ordering::SeqCst) > before;
        if set_landed_first {
            assert!(
                !ok,
                "add returned true over a set that had already returned"
            );
        }
        // Let a waiting set (portable mode) finish: it is ordered after add.
        for _ in 0..100 {
            if c.get::<String>(&k)?.as_deref() == Some("from set") {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(c.get::<String>(&k)?.as_deref(), Some("from set"), "{k}");
        added += usize::from(ok);
    }
    let landed = landed_between.load(Ordering::SeqCst);
    match c.stats().rename_mode {
        RenameMode::Renameat2 => assert_eq!((landed, added), (rounds, 0)),
        _ => assert_eq!((landed, added), (0, rounds)),
    }
    eprintln!("add vs set: {landed} of {rounds} sets landed inside add; add won {added}");
    assert_eq!(c.approximate_len(), rounds);
    Ok(())
}

#[test]
fn add_replaces_expired_and_damaged_entries_but_never_a_live_one() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let clock = fscache::ManualClock::new();
    let c = FileSystemCache::builder(&dir)
        .threshold(0)
        .clock(clock.clone())
        .open()?;
    c.set_with_ttl("old", &1, Ttl::After(Duration::from_secs(1)))?;
    clock.advance(Duration::from_secs(2));
    assert!(c.add("old", &2, Ttl::Never)?);
    assert_eq!(c.get::<i32>("old")?, Some(2));
    std::fs::write(entry_path(&dir, "bad"), b"not an entry")?;
    assert!(c.add("bad", &3, Ttl::Never)?);
    assert_eq!(c.get::<i32>("bad")?, Some(3));
    assert!(!c.add("bad", &4, Ttl::Never)?);
    assert_eq!(c.get::<i32>("bad")?, Some(3));
    // The planted file was never counted, so only a scan can know there are two.
    assert_eq!(c.len()?, 2);
    assert_eq!(c.approximate_len(), 2);
    assert!(temp_files(&dir).is_empty());
    Ok(())
}

// ----- item 4: nothing after the commit fails the write -----

#[test]
fn a_failing_sweep_does_not_fail_the_write_that_triggered_it() -> TestResult {
    let _armed = Armed(hook_lock());
    let (_tmp, dir) = temp_cache_dir();
    let c = open(&dir, 2)?;
    let own = dir.clone();
    hooks::set_hook(Point::SweepAfterWrite, move |d| {
        if d == own {
            return Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        }
        Ok(())
    });
    for i in 0..5 {
        // Each inc past the threshold starts a sweep that fails; the inc stored its
        // value, so it must report it (a retry would count twice).
        assert_eq!(c.inc(&format!("n{i}"), 1)?, 1);
        c.set(&format!("s{i}"), &i)?;
        assert!(c.add(&format!("a{i}"), &i, Ttl::Default)?);
    }
    let failed = c.stats().sweep_errors;
    assert!(failed >= 10, "{failed} sweep failures counted");
    assert_eq!(c.get::<i64>("n4")?, Some(1));
    hooks::clear_hooks();
    c.set("after", &1)?;
    assert!(c.stats().steps > 0, "steps run again once they can");
    Ok(())
}

#[test]
fn a_replaced_entry_that_cannot_be_removed_does_not_fail_the_write() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let c = open(&dir, 0)?;
    // Damage: a directory (with content) where the entry file should be.
    let p = entry_path(&dir, "k");
    std::fs::create_dir_all(p.join("sub"))?;
    std::fs::write(p.join("sub/file"), b"x")?;
    let result = c.set("k", "new");
    match c.stats().rename_mode {
        RenameMode::Renameat2 => {
            // The exchange committed the write; the directory came out at the temp
            // name and could not be unlinked: litter, not an error.
            result?;
            assert_eq!(c.get::<String>("k")?.as_deref(), Some("new"));
            assert_eq!(c.stats().litter, 1);
            assert_eq!(temp_files(&dir).len(), 1, "the old directory, as litter");
            let report = c.prune()?;
            assert_eq!(report.stale_temp, 1, "litter is swept at once");
            assert!(temp_files(&dir).is_empty());
            assert_eq!(c.get::<String>("k")?.as_deref(), Some("new"));
        }
        _ => {
            // A plain rename cannot replace a directory: the write, holding the
            // stripe lock, removes the damage and commits.
            result?;
            assert_eq!(c.get::<String>("k")?.as_deref(), Some("new"));
            assert_eq!(c.stats().damaged, 1);
            assert!(temp_files(&dir).is_empty());
        }
    }
    Ok(())
}

// ----- item 5: no deadlock from an update closure -----

#[test]
fn cache_calls_inside_an_update_closure_never_deadlock() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let c = open(&dir, 3)?;
    let other_handle = open(&dir, 3)?;
    let outcome = within(
        20,
        "update with re-entrant calls",
        move || -> fscache::Result<()> {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let s2 = seen.clone();
            let c2 = c.clone();
            // Never-expiring, so the sweep that runs after the update keeps it.
            let stored = c.update("k", Ttl::Never, move |v: Option<i32>| {
                let mut seen = s2.lock().unwrap();
                // Lock-free operations work, on any key, through any handle.
                seen.push(format!("{:?}", c2.get::<i32>("k").map(|_| ())));
                for i in 0..10 {
                    // Past the threshold: a sweep would need the held stripe; none starts.
                    seen.push(format!("{:?}", c2.set(&format!("x{i}"), &i).map(|_| ())));
                }
                // Locking operations are refused with a typed error, whatever the handle.
                for r in [
                    c2.delete("k").map(|_| ()),
                    c2.inc("k", 1).map(|_| ()),
                    c2.update("other", Ttl::Default, |v: Option<i32>| v)
                        .map(|_| ()),
                    c2.add("k", &1, Ttl::Default).map(|_| ()),
                    c2.prune().map(|_| ()),
                    c2.clear().map(|_| ()),
                    other_handle.delete("k").map(|_| ()),
                    other_handle.inc("elsewhere", 1).map(|_| ()),
                ] {
                    seen.push(match r {
                        Err(Error::Reentrant { .. }) => "Reentrant".to_owned(),
                        other => format!("{other:?}"),
                    });
                }
                Some(v.unwrap_or(0) + 1)
            })?;
            assert_eq!(stored, Some(1));
            let seen = seen.lock().unwrap();
            assert!(seen[..11].iter().all(|s| s == "Ok(())"), "{seen:?}");
            assert!(seen[11..].iter().all(|s| s == "Reentrant"), "{seen:?}");
            // Outside the closure everything works again, cleanup steps included:
            // 12 names at threshold 3; each write past it evicts up to 4 (net 3 fewer).
            assert_eq!(c.inc("k", 1)?, 2);
            for i in 0..3 {
                c.set(&format!("after{i}"), &0)?;
            }
            assert!(c.stats().steps > 0);
            assert!(c.approximate_len() <= 3, "{}", c.approximate_len());
            Ok(())
        },
    );
    Ok(outcome?)
}

#[test]
fn the_reentrancy_error_says_what_to_do() {
    let (_tmp, dir) = temp_cache_dir();
    let c = open(&dir, 0).unwrap();
    let c2 = c.clone();
    let err = Arc::new(Mutex::new(None));
    let e2 = err.clone();
    c.update("k", Ttl::Default, move |_: Option<i32>| {
        *e2.lock().unwrap() = c2.delete("k").err();
        None
    })
    .unwrap();
    let err = err.lock().unwrap().take().expect("refused");
    let text = err.to_string();
    assert!(
        text.starts_with("delete was called while this thread holds"),
        "{text}"
    );
    assert!(text.contains("after update returns"), "{text}");
}

// ----- item 7: the rename modes -----

#[test]
fn eviction_restore_never_overwrites_a_newer_set() -> TestResult {
    let _armed = Armed(hook_lock());
    let (_tmp, dir) = temp_cache_dir();
    let c = open(&dir, 0)?;
    // clear() decides on the entry it read, then moves it aside; a rewrite in that
    // window is put back, and one that lands while it is aside must win.
    c.set("k", &1)?;
    let fired = Arc::new(AtomicBool::new(false));
    let (c2, own, f2) = (c.clone(), dir.clone(), fired.clone());
    hooks::set_hook(Point::EvictMovedAside, move |d| {
        if d == own && !f2.swap(true, Ordering::SeqCst) {
            let (tx, rx) = mpsc::channel();
            let c3 = c2.clone();
            std::thread::spawn(move || {
                c3.set("k", &3).unwrap();
                tx.send(()).ok();
            });
            // Lock-free set: lands now. Portable mode: waits for the stripe lock.
            let _ = rx.recv_timeout(Duration::from_millis(200));
        }
        Ok(())
    });
    c.clear()?;
    for _ in 0..100 {
        if c.get::<i32>("k")? == Some(3) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(c.get::<i32>("k")?, Some(3), "the newer set survives");
    assert_eq!(c.approximate_len(), 1);
    assert_eq!(entry_files(&dir).len(), 1);
    assert!(temp_files(&dir).is_empty());
    Ok(())
}

#[test]
fn the_count_stays_exact_under_concurrent_sets_and_deletes() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let handles: Vec<_> = (0..4)
        .map(|_| open(&dir, 0))
        .collect::<fscache::Result<_>>()?;
    std::thread::scope(|s| {
        for (t, c) in handles.iter().enumerate() {
            s.spawn(move || {
                let mut x = t as u64 + 1;
                for _ in 0..3_000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let key = format!("k{}", x % 40);
                    if x.is_multiple_of(3) {
                        c.delete(&key).unwrap();
                    } else {
                        c.set(&key, &x).unwrap();
                    }
                }
            });
        }
    });
    let files = entry_files(&dir).len();
    let mode = handles[0].stats().rename_mode;
    eprintln!(
        "{mode:?}: counted {} with {files} files",
        handles[0].approximate_len()
    );
    assert_eq!(
        handles[0].approximate_len(),
        files,
        "per-operation count is exact"
    );
    Ok(())
}

#[test]
fn fresh_directory_opened_by_many_at_once_gets_one_state_file() -> TestResult {
    for round in 0..10 {
        let (_tmp, dir) = temp_cache_dir();
        let barrier = std::sync::Barrier::new(6);
        let handles: Vec<FileSystemCache> = std::thread::scope(|s| {
            let ts: Vec<_> = (0..6)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        open(&dir, 0).unwrap()
                    })
                })
                .collect();
            ts.into_iter().map(|t| t.join().unwrap()).collect()
        });
        for (i, h) in handles.iter().enumerate() {
            h.set(&format!("k{i}"), &i)?;
        }
        for h in &handles {
            assert_eq!(h.approximate_len(), 6, "round {round}: one shared counter");
        }
    }
    Ok(())
}

#[test]
fn the_mode_is_shown_and_can_be_forced() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let forced = FileSystemCache::builder(&dir)
        .force_portable_renames(true)
        .open()?;
    assert_eq!(forced.stats().rename_mode, RenameMode::Portable);
    forced.set("a", &1)?;
    assert!(forced.add("b", &2, Ttl::Default)?);
    assert!(!forced.add("a", &3, Ttl::Default)?);
    assert_eq!(forced.approximate_len(), 2);
    let native = FileSystemCache::builder(dir.join("../native")).open()?;
    let expected =
        if cfg!(target_os = "linux") && std::env::var_os(fscache::FORCE_PORTABLE_ENV).is_none() {
            RenameMode::Renameat2 // tmpfs and the usual local filesystems
        } else {
            RenameMode::Portable
        };
    assert_eq!(native.stats().rename_mode, expected);
    Ok(())
}

// ----- item 9: errors print each cause once -----

#[test]
fn error_chains_print_each_cause_once() {
    let (_tmp, dir) = temp_cache_dir();
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    std::fs::write(&dir, b"a file, not a directory").unwrap();
    let err = FileSystemCache::open(dir.join("sub")).unwrap_err();
    let top = err.to_string();
    let source = std::error::Error::source(&err)
        .expect("the io error")
        .to_string();
    assert!(!top.contains(&source), "{top:?} repeats {source:?}");
    let mut chain = vec![top];
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(&err);
    while let Some(e) = cur {
        chain.push(e.to_string());
        cur = e.source();
    }
    let joined = chain.join(": ");
    assert_eq!(joined.matches(&source).count(), 1, "{joined}");

    let err = FileSystemCache::open(&dir).unwrap_err();
    assert!(
        matches!(err, Error::Io { .. } | Error::NotACache { .. }),
        "{err:?}"
    );
}

// ----- item 6: an eviction whose moved-aside file vanishes -----

#[test]
fn an_eviction_whose_moved_aside_file_vanished_reports_gone_not_an_error() -> TestResult {
    let _armed = Armed(hook_lock());
    let (_tmp, dir) = temp_cache_dir();
    let c = open(&dir, 0)?;
    c.set("k", &1)?;
    let own = dir.clone();
    hooks::set_hook(Point::EvictMovedAside, move |d| {
        if d != own {
            return Ok(());
        }
        // Another process's sweep judged the moved-aside file stale and removed it.
        for shard in std::fs::read_dir(d)? {
            let shard = shard?.path();
            if shard.is_dir() {
                for f in std::fs::read_dir(&shard)? {
                    let f = f?.path();
                    if f.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with(".fscache-evict-")
                    {
                        std::fs::remove_file(f)?;
                    }
                }
            }
        }
        Ok(())
    });
    // clear() decided on the entry; a rewrite makes it restore, and the file is gone.
    let removed = c.clear()?;
    assert!(removed <= 1, "{removed}");
    assert_eq!(c.get::<i32>("k")?, None);
    Ok(())
}

// ----- item 7: a filesystem with neither primitive is refused at open -----

#[test]
fn open_refuses_a_filesystem_without_renameat2_flags_or_hard_links() -> TestResult {
    let _armed = Armed(hook_lock());
    let (_tmp, dir) = temp_cache_dir();
    let own = dir.clone();
    hooks::set_hook(Point::ProbeLink, move |d| {
        if d == own {
            return Err(std::io::Error::from_raw_os_error(1)); // EPERM, as vfat or SMB say
        }
        Ok(())
    });
    let err = FileSystemCache::builder(&dir)
        .force_portable_renames(true)
        .open()
        .unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedFilesystem { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("hard links") && text.contains(&dir.display().to_string()),
        "{text}"
    );
    assert!(text.contains("local filesystem"), "says what to do: {text}");
    assert_eq!(err.io_kind(), Some(std::io::ErrorKind::PermissionDenied));
    let left: Vec<_> = std::fs::read_dir(&dir)?.collect();
    assert!(left.is_empty(), "the probe leaves nothing behind: {left:?}");
    hooks::clear_hooks();
    FileSystemCache::builder(&dir)
        .force_portable_renames(true)
        .open()?;
    Ok(())
}

// ----- item 5 across processes: a closure's write never waits for a sweep -----

/// The stripe of `key` (the documented layout: bits of the hash after the shard).
fn stripe_of(key: &str) -> usize {
    let hex = blake3::hash(key.as_bytes()).to_hex();
    usize::from_str_radix(&hex[2..4], 16).unwrap() % 64
}

fn wait_for(path: &std::path::Path) -> bool {
    for _ in 0..1_000 {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// The child side. Does nothing unless started by the test below.
#[test]
fn child_entry_point() -> TestResult {
    let Ok(job) = std::env::var("FSCACHE_CHILD") else {
        return Ok(());
    };
    assert_eq!(job, "hold-stripe-then-write");
    let dir = std::path::PathBuf::from(std::env::var("FSCACHE_CHILD_DIR")?);
    let signals = dir.parent().unwrap().to_path_buf();
    let c = open(&dir, 4)?;
    let c2 = c.clone();
    c.update("k", Ttl::Never, move |v: Option<i32>| {
        std::fs::write(signals.join("child-in"), b"").unwrap();
        assert!(wait_for(&signals.join("go")), "parent never said go");
        // Past the threshold while another process's sweep holds the sweep lock and
        // waits for this stripe: a write that waited for that sweep would deadlock.
        for i in 0..10 {
            c2.set(&format!("x{i}"), &i).unwrap();
        }
        Some(v.unwrap_or(0) + 1)
    })?;
    println!("DONE");
    Ok(())
}

#[test]
fn a_write_inside_an_update_never_waits_for_another_processs_sweep() -> TestResult {
    let (tmp, dir) = temp_cache_dir();
    let c = open(&dir, 4)?;
    let e = (0..10_000)
        .map(|i| format!("e{i}"))
        .find(|e| stripe_of(e) == stripe_of("k"))
        .expect("a key on k's stripe");
    c.set("k", &0)?;
    c.set_with_ttl(&e, &0, Ttl::After(Duration::from_millis(500)))?;
    std::thread::sleep(Duration::from_millis(600));
    let mut child = common::child_command("hold-stripe-then-write", &dir, 0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    assert!(
        wait_for(&tmp.path().join("child-in")),
        "child started its update"
    );
    // This process sweeps: it takes the sweep lock, then waits for k's stripe to
    // evict the expired entry on it, which the child holds.
    let sweeper = {
        let c = c.clone();
        std::thread::spawn(move || c.prune())
    };
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(tmp.path().join("go"), b"")?;
    let mut status = None;
    for _ in 0..1_500 {
        status = child.try_wait()?;
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let Some(status) = status else {
        child.kill()?;
        panic!("the child's update never finished: cross-process deadlock");
    };
    let out = child.wait_with_output()?;
    assert!(
        status.success() && String::from_utf8_lossy(&out.stdout).contains("DONE"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = sweeper.join().expect("sweeper")?;
    assert_eq!(report.expired, 1, "{report:?}");
    assert_eq!(c.get::<i32>("k")?, Some(1));
    Ok(())
}
