//! Fault injection with real filesystems: a full filesystem, a read-only one, an
//! immutable entry (EPERM even for root), the cache directory deleted under an open
//! cache, a shard replaced by a file. Each must give a clear typed error or a
//! documented recovery: never a panic, never data from outside the cache.
//!
//! The mount-based cases need root (CI runs as root, and fails them if they cannot
//! run); elsewhere they print SKIPPED.

mod common;

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{TestResult, entry_path, temp_cache_dir, temp_files};
use fscache::{Error, FileSystemCache};

/// A small tmpfs mounted for one test, unmounted on drop.
struct Mount {
    path: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Mount {
    fn tmpfs(size: &str) -> Option<Mount> {
        let tmp = tempfile::tempdir().ok()?;
        let path = tmp.path().join("mnt");
        std::fs::create_dir(&path).ok()?;
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            common::cannot_run("cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(Mount { path, _tmp: tmp })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn io_kind(e: &Error) -> Option<ErrorKind> {
    e.io_kind()
}

#[test]
fn full_filesystem_fails_the_write_and_keeps_the_old_value() -> TestResult {
    let Some(mnt) = Mount::tmpfs("512k") else {
        return Ok(());
    };
    let dir = mnt.path.join("cache");
    let c = FileSystemCache::builder(&dir).threshold(0).open()?;
    c.set("victim", "the old value")?;
    let big = vec![7u8; 32 * 1024];
    let mut stored = 0;
    let err = loop {
        match c.set_bytes(&format!("fill{stored}"), &big) {
            Ok(()) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 1000, "the filesystem never filled");
    };
    assert_eq!(io_kind(&err), Some(ErrorKind::StorageFull), "{err}");
    assert!(err.to_string().contains("write entry"), "{err}");
    // Overwriting fails too, and the previous value stays intact.
    let err = c.set_bytes("victim", &big).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert_eq!(c.get::<String>("victim")?.as_deref(), Some("the old value"));
    assert!(
        temp_files(&dir).is_empty(),
        "no temp file left by a failed write"
    );
    assert_eq!(c.len()?, stored + 1);
    // Freeing space makes writes work again.
    c.delete_many((0..stored).map(|i| format!("fill{i}")))?;
    c.set_bytes("victim", &big)?;
    assert_eq!(c.get_bytes("victim")?.map(|v| v.len()), Some(big.len()));
    eprintln!("full filesystem: {stored} writes fit, the next failed with ENOSPC");
    Ok(())
}

#[test]
fn read_only_mount_is_refused_at_open_with_a_clear_error() -> TestResult {
    let Some(mnt) = Mount::tmpfs("4m") else {
        return Ok(());
    };
    let dir = mnt.path.join("cache");
    let c = FileSystemCache::builder(&dir).threshold(0).open()?;
    c.set("k", &1)?;
    // A read-only bind mount of the same directory.
    let ro = mnt.path.join("ro");
    std::fs::create_dir(&ro)?;
    let run = |args: &[&str]| {
        Command::new("mount")
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    };
    let (ro_s, dir_s) = (ro.to_str().unwrap(), dir.to_str().unwrap());
    assert!(run(&["--bind", dir_s, ro_s]) && run(&["-o", "remount,bind,ro", ro_s]));
    let result = FileSystemCache::open(&ro);
    let _ = Command::new("umount").arg(&ro).status();
    let err = result.unwrap_err();
    assert_eq!(io_kind(&err), Some(ErrorKind::ReadOnlyFilesystem), "{err}");
    assert!(
        err.to_string()
            .contains("create a file in the cache directory"),
        "{err}"
    );
    assert_eq!(
        c.get::<i32>("k")?,
        Some(1),
        "the writable handle is unaffected"
    );
    Ok(())
}

fn chattr(flag: &str, path: &Path) -> bool {
    Command::new("chattr")
        .arg(flag)
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn an_immutable_entry_gives_permission_errors_not_panics() -> TestResult {
    // chattr +i needs a filesystem with attributes (ext4: the build directory's).
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let dir = base.path().join("cache");
    let c = FileSystemCache::builder(&dir).threshold(0).open()?;
    c.set("locked", "original")?;
    let p = entry_path(&dir, "locked");
    if !chattr("+i", &p) {
        common::cannot_run("chattr +i is not available here (needs root and ext4/xfs)");
        return Ok(());
    }
    let result = (|| -> TestResult {
        let err = c.delete("locked").unwrap_err();
        assert_eq!(io_kind(&err), Some(ErrorKind::PermissionDenied), "{err}");
        let err = c.set("locked", "new").unwrap_err();
        assert_eq!(io_kind(&err), Some(ErrorKind::PermissionDenied), "{err}");
        assert_eq!(c.get::<String>("locked")?.as_deref(), Some("original"));
        assert!(temp_files(&dir).is_empty());
        // Other keys are unaffected.
        c.set("free", &1)?;
        assert!(c.delete("free")?);
        Ok(())
    })();
    chattr("-i", &p);
    result
}

#[test]
fn a_write_protected_shard_fails_writes_and_serves_reads() -> TestResult {
    let base = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let dir = base.path().join("cache");
    let c = FileSystemCache::builder(&dir).threshold(0).open()?;
    c.set("k", &1)?;
    let shard = entry_path(&dir, "k").parent().unwrap().to_path_buf();
    if !chattr("+i", &shard) {
        common::cannot_run("chattr +i is not available here (needs root and ext4/xfs)");
        return Ok(());
    }
    let result = (|| -> TestResult {
        assert_eq!(c.get::<i32>("k")?, Some(1));
        for err in [
            c.set("k", &2).unwrap_err(),
            c.delete("k").unwrap_err(),
            c.inc("k", 1).unwrap_err(),
        ] {
            assert_eq!(io_kind(&err), Some(ErrorKind::PermissionDenied), "{err}");
        }
        assert_eq!(c.get::<i32>("k")?, Some(1));
        Ok(())
    })();
    chattr("-i", &shard);
    result?;
    c.set("k", &2)?;
    assert!(temp_files(&dir).is_empty());
    Ok(())
}

#[test]
fn cache_directory_deleted_while_open() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let c = FileSystemCache::open(&dir)?;
    c.set("k", &1)?;
    std::fs::remove_dir_all(&dir)?;
    assert_eq!(c.get::<i32>("k")?, None, "reads miss");
    let err = c.set("k", &2).unwrap_err();
    assert_eq!(io_kind(&err), Some(ErrorKind::NotFound), "{err}");
    assert!(
        err.to_string().contains(&dir.display().to_string()),
        "{err}"
    );
    // Replaced by a new directory: the open handle keeps failing clearly (it holds
    // the old, deleted directory); a new open uses the new one.
    std::fs::create_dir(&dir)?;
    assert!(c.set("k", &2).is_err());
    let fresh = FileSystemCache::open(&dir)?;
    fresh.set("k", &3)?;
    assert_eq!(fresh.get::<i32>("k")?, Some(3));
    Ok(())
}

#[test]
fn shard_replaced_by_a_file_is_an_error_until_prune_repairs_it() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let c = FileSystemCache::open(&dir)?;
    c.set("k", &1)?;
    let p = entry_path(&dir, "k");
    let shard = p.parent().unwrap();
    std::fs::remove_dir_all(shard)?;
    std::fs::write(shard, "not a directory")?;
    let err = c.get::<i32>("k").unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(c.set("k", &2).is_err());
    let report = c.prune()?;
    assert_eq!(report.damaged, 1);
    assert!(shard.is_dir());
    c.set("k", &2)?;
    assert_eq!(c.get::<i32>("k")?, Some(2));
    Ok(())
}
