//! A filesystem out of space: on a tmpfs mounted here with 400 inodes (root only:
//! CI runs as root; elsewhere a printed skip, under `CI=true` a failure), the cache
//! is filled with new keys until a write fails with ENOSPC; then deleting entries
//! frees inodes that the next writes get. Before the lock files were made up front,
//! the first `delete` on a stripe made its lock file and so failed with ENOSPC
//! itself, and the inodes a delete did free went to lock files.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use fscache::FileSystemCache;

type TestResult = Result<(), Box<dyn std::error::Error>>;

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn small_tmpfs(at: &Path, inodes: u32) -> Option<Mount> {
    let ok = rustix::process::geteuid().is_root()
        && Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size=16m,nr_inodes={inodes},mode=0700"))
            .arg("tmpfs")
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        common::cannot_run("mounting a small tmpfs needs root (CI runs as root)");
        return None;
    }
    Some(Mount(at.to_owned()))
}

/// Whether `e` comes from ENOSPC.
fn is_enospc(e: &fscache::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::StorageFull;
        }
        source = s.source();
    }
    false
}

#[test]
fn deleting_entries_on_a_full_filesystem_lets_writes_in_again() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let Some(_mount) = small_tmpfs(tmp.path(), 400) else {
        return Ok(());
    };
    let cache = FileSystemCache::builder(tmp.path().join("cache"))
        .threshold(0)
        .open()?;
    let mut stored = Vec::new();
    let full = loop {
        let key = format!("k{}", stored.len());
        match cache.set(&key, &stored.len()) {
            Ok(()) => stored.push(key),
            Err(e) => break e,
        }
        assert!(stored.len() < 400, "400 inodes never filled");
    };
    assert!(is_enospc(&full), "a full filesystem: {full:?}");
    assert!(stored.len() >= 40, "only {} entries fit", stored.len());
    // What was stored reads back; the failed write left nothing behind.
    assert_eq!(cache.get::<usize>(&stored[7])?, Some(7));
    assert_eq!(cache.len()?, stored.len());

    // Deletes work on the full filesystem, and each frees an inode for a new key.
    for key in &stored[..20] {
        assert!(cache.delete(key)?, "{key}");
    }
    for j in 0..19 {
        cache.set(&format!("new{j}"), &j)?;
    }
    // An overwrite needs one free inode (its temp file) while the old entry
    // exists, the twentieth freed one, and gives it back when the old entry goes.
    cache.set(&stored[30], &"overwritten")?;
    assert_eq!(
        cache.get::<String>(&stored[30])?.as_deref(),
        Some("overwritten")
    );
    cache.set("new19", &19)?;
    // Full again: the next new key fails, with ENOSPC, and nothing is lost.
    let e = cache.set("one-too-many", &0).expect_err("full again");
    assert!(is_enospc(&e), "{e:?}");
    assert_eq!(cache.get::<usize>("new19")?, Some(19));
    assert_eq!(cache.len()?, stored.len());
    Ok(())
}
