//! A handle opened before `fork()` keeps its cross-process guarantees in the child,
//! as pre-fork servers (a master that opens the cache, then forks workers) need.
//!
//! Each test forks the test process itself. The child only runs cache operations and
//! leaves with `_exit`, never returning into the test harness.
#![allow(unsafe_code)]

mod common;

use common::{TestResult, temp_cache_dir};
use fscache::{FileSystemCache, Ttl};

/// Forks; the child runs `child` and exits with its code, the parent gets the pid.
fn fork_run(child: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: fork is called from a test thread; the child touches only the cache
    // handle (files, an mmap, std mutexes no other thread holds at this point — the
    // handle is used by this thread alone) and the allocator (glibc's is fork-safe),
    // then leaves with _exit, running no destructors or atexit handlers of the
    // parent's state.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(101);
        // SAFETY: ends the child without unwinding into the harness's state.
        unsafe { libc::_exit(code) };
    }
    pid
}

fn wait(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: waits for our own child; status is a valid out pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid, "waitpid: {}", std::io::Error::last_os_error());
    assert!(libc::WIFEXITED(status), "child died: status {status}");
    libc::WEXITSTATUS(status)
}

const N: i64 = 3_000;

#[test]
fn inc_after_fork_counts_every_increment() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let cache = FileSystemCache::builder(&dir).threshold(0).open()?;
    // The parent has used the stripe lock before forking: its lock file is open and
    // would be shared with the child.
    assert_eq!(cache.inc("n", 0)?, 0);
    let child = {
        let cache = cache.clone();
        fork_run(move || {
            for _ in 0..N {
                if cache.inc("n", 1).is_err() {
                    return 2;
                }
            }
            0
        })
    };
    for _ in 0..N {
        cache.inc("n", 1)?;
    }
    assert_eq!(wait(child), 0, "the child's increments all succeeded");
    let total = cache.get::<i64>("n")?;
    eprintln!("fork: 2 processes x {N} inc -> {total:?}");
    assert_eq!(total, Some(2 * N), "no increment lost");
    Ok(())
}

#[test]
fn updates_after_fork_exclude_each_other() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let cache = FileSystemCache::builder(&dir).threshold(0).open()?;
    cache.set("list", &Vec::<i64>::new())?;
    let _ = cache.update("list", Ttl::Default, |v: Option<Vec<i64>>| v)?;
    let child = {
        let cache = cache.clone();
        fork_run(move || {
            for i in 0..500 {
                let r = cache.update("list", Ttl::Never, |v: Option<Vec<i64>>| {
                    let mut v = v.unwrap_or_default();
                    v.push(i);
                    Some(v)
                });
                if r.is_err() {
                    return 2;
                }
            }
            0
        })
    };
    for i in 0..500 {
        cache.update("list", Ttl::Never, |v: Option<Vec<i64>>| {
            let mut v = v.unwrap_or_default();
            v.push(1_000 + i);
            Some(v)
        })?;
    }
    assert_eq!(wait(child), 0);
    let list = cache.get::<Vec<i64>>("list")?.unwrap_or_default();
    assert_eq!(list.len(), 1_000, "every append kept");
    Ok(())
}

/// Pre-fork workers draw different write ids (the versions a compare-and-set
/// checks): a worker's stale compare-and-set never wins over another worker's write
/// because both drew the same id from inherited state.
#[test]
fn workers_forked_from_one_parent_never_share_write_ids() -> TestResult {
    use fscache::store::Store;
    use std::time::Duration;
    let (tmp, dir) = temp_cache_dir();
    let cache = FileSystemCache::builder(&dir).threshold(0).open()?;
    // The parent has written before forking: its id state is seeded.
    Store::save(&cache, "warm", b"1", Duration::from_secs(60))?;
    let go = tmp.path().join("go");
    let child = {
        let (cache, go) = (cache.clone(), go.clone());
        fork_run(move || {
            while !go.exists() {
                std::thread::sleep(Duration::from_millis(1));
            }
            // The child's first write after the fork, like the parent's below.
            match Store::save(&cache, "k", b"child", Duration::from_secs(60)) {
                Ok(()) => 0,
                Err(_) => 2,
            }
        })
    };
    // A request in the parent writes and loads the key...
    Store::save(&cache, "k", b"parent", Duration::from_secs(60))?;
    let seen = Store::load(&cache, "k")?.expect("just written");
    // ...then the child worker writes it...
    std::fs::write(&go, b"")?;
    assert_eq!(wait(child), 0, "the child's write succeeded");
    let now = Store::load(&cache, "k")?.expect("the child's value");
    assert_eq!(now.value, b"child");
    assert_ne!(
        now.version, seen.version,
        "the two workers' writes have distinct ids"
    );
    // ...so the parent's compare-and-set against what it loaded must lose.
    let won = cache.compare_and_set(
        "k",
        &seen.version,
        Some(b"parent again"),
        Duration::from_secs(60),
    )?;
    assert!(
        !won,
        "a stale compare-and-set overwrote the other worker's write"
    );
    assert_eq!(Store::load(&cache, "k")?.unwrap().value, b"child");
    Ok(())
}
