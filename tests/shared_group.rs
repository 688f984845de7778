//! A cache shared by two real users of one group: `file_mode(0o660)` and
//! `dir_mode(0o770)` apply to everything the cache creates (marker, state file, lock
//! files, shards), and the setgid bit of a group directory is kept, so each user can
//! open and write what the other created.
//!
//! Needs root to create the users (CI runs as root and must run this; elsewhere it
//! prints SKIPPED).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::TestResult;
use fscache::{FileSystemCache, Ttl};

const GROUP: &str = "fscache-test";
const USERS: [&str; 2] = ["fscache-a", "fscache-b"];

fn id(flag: &str, name: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, name]).output().ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

fn gid_of(group: &str) -> Option<u32> {
    let out = Command::new("getent")
        .args(["group", group])
        .output()
        .ok()?;
    String::from_utf8(out.stdout)
        .ok()?
        .split(':')
        .nth(2)?
        .trim()
        .parse()
        .ok()
}

/// The group and the two users, created if missing; `None` if that is impossible here.
fn users() -> Option<(u32, [u32; 2])> {
    let run = |args: &[&str]| {
        Command::new(args[0])
            .args(&args[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if gid_of(GROUP).is_none() {
        run(&["groupadd", GROUP]);
    }
    for user in USERS {
        if id("-u", user).is_none() {
            run(&[
                "useradd",
                "-M",
                "-N",
                "-g",
                GROUP,
                "-s",
                "/usr/sbin/nologin",
                user,
            ]);
        }
    }
    Some((gid_of(GROUP)?, [id("-u", USERS[0])?, id("-u", USERS[1])?]))
}

/// The child side: runs as one of the users. Does nothing unless spawned below.
#[test]
fn child_entry_point() -> TestResult {
    let Ok(job) = std::env::var("FSCACHE_CHILD") else {
        return Ok(());
    };
    let dir = std::env::var("FSCACHE_CHILD_DIR")?;
    let c = FileSystemCache::builder(&dir)
        .threshold(0)
        .file_mode(0o660)
        .dir_mode(0o770)
        .open()?;
    match job.as_str() {
        "first" => {
            c.set("from-a", &"hello")?;
            assert_eq!(c.inc("n", 1)?, 1);
            assert!(c.add("once", &"a", Ttl::Never)?);
        }
        "second" => {
            assert_eq!(c.get::<String>("from-a")?.as_deref(), Some("hello"));
            c.set("from-a", &"overwritten by b")?;
            assert_eq!(c.inc("n", 1)?, 2);
            assert!(!c.add("once", &"b", Ttl::Never)?);
            c.set("from-b", &"hi")?;
            assert_eq!(c.prune()?.remaining, 4);
            assert!(c.delete("once")?);
        }
        other => panic!("unknown job {other}"),
    }
    println!("CHILD OK");
    Ok(())
}

fn run_as(bin: &Path, uid: u32, gid: u32, job: &str, dir: &Path) -> TestResult {
    let out = common::child_command_of(bin, job, dir, 0)
        .current_dir(dir.parent().unwrap())
        .uid(uid)
        .gid(gid)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD OK"),
        "{job} as uid {uid}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn two_users_of_one_group_share_a_cache() -> TestResult {
    let root = Command::new("id").arg("-u").output()?.stdout == b"0\n";
    let Some((gid, [a, b])) = root.then(users).flatten() else {
        common::cannot_run("creating two users needs root (groupadd, useradd)");
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))?;
    // The test binary, where both users can run it.
    let bin = tmp.path().join("shared_group-test");
    std::fs::copy(std::env::current_exe()?, &bin)?;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
    // A group directory: owned by the group, setgid, so files below get the group.
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared)?;
    std::os::unix::fs::chown(&shared, None, Some(gid))?;
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o2770))?;
    let dir = shared.join("cache");

    run_as(&bin, a, gid, "first", &dir)?;
    run_as(&bin, b, gid, "second", &dir)?;

    // Everything below carries the group, the modes asked for, and directories the
    // setgid bit, whichever user created it.
    let mut checked = 0;
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        let md = std::fs::metadata(&d)?;
        assert_eq!(md.gid(), gid, "{}", d.display());
        assert_eq!(md.permissions().mode() & 0o7777, 0o2770, "{}", d.display());
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            let md = std::fs::symlink_metadata(&p)?;
            if md.is_dir() {
                stack.push(p);
            } else {
                assert_eq!(md.gid(), gid, "{}", p.display());
                assert_eq!(md.permissions().mode() & 0o777, 0o660, "{}", p.display());
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 5,
        "marker, state, lock files and entries: {checked} files"
    );
    let c = FileSystemCache::builder(&dir).threshold(0).open()?;
    assert_eq!(
        c.get::<String>("from-a")?.as_deref(),
        Some("overwritten by b")
    );
    assert_eq!(c.get::<i64>("n")?, Some(2));
    Ok(())
}
