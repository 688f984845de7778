//! A real filesystem without `renameat2` flags: a FUSE mount (bindfs, a passthrough
//! filesystem) refuses `RENAME_NOREPLACE` and `RENAME_EXCHANGE` with `EINVAL`, as
//! sshfs, Docker Desktop shares, NFS, SMB and 9p do. The cache must notice on its own
//! (no forcing switch), commit in the portable mode and keep every guarantee, across
//! threads and real processes.
//!
//! Needs root, `/dev/fuse` and `bindfs` (CI installs it). Under `CI=true` a missing
//! piece fails the test; elsewhere it prints a skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{TestResult, entry_files};
use fscache::{FileSystemCache, RenameMode, Ttl};

/// A bindfs mount of a temp directory; unmounted on drop.
struct Mount {
    _tmp: tempfile::TempDir,
    point: PathBuf,
}

impl Drop for Mount {
    fn drop(&mut self) {
        let quiet = |cmd: &mut Command| {
            cmd.stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !quiet(Command::new("fusermount").arg("-u").arg(&self.point)) {
            quiet(Command::new("umount").arg(&self.point));
        }
    }
}

fn mount() -> Option<Mount> {
    let why = if !Path::new("/dev/fuse").exists() {
        Some("/dev/fuse is missing")
    } else if Command::new("bindfs").arg("--version").output().is_err() {
        Some("bindfs is not installed (apt-get install bindfs)")
    } else {
        None
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (src, point) = (tmp.path().join("src"), tmp.path().join("mnt"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&point).unwrap();
    let why = why.or_else(|| {
        let ok = Command::new("bindfs")
            .arg(&src)
            .arg(&point)
            .status()
            .is_ok_and(|s| s.success());
        (!ok).then_some("bindfs could not mount (needs root or fuse permissions)")
    });
    match why {
        None => Some(Mount { _tmp: tmp, point }),
        Some(why) => {
            common::cannot_run(&format!("FUSE test: {why}"));
            None
        }
    }
}

/// The child side of the multi-process check. Does nothing unless spawned below.
#[test]
fn child_entry_point() -> TestResult {
    let Ok(job) = std::env::var("FSCACHE_CHILD") else {
        return Ok(());
    };
    let dir = std::env::var("FSCACHE_CHILD_DIR")?;
    let id: usize = std::env::var("FSCACHE_CHILD_ID")?.parse()?;
    let c = FileSystemCache::builder(&dir).threshold(0).open()?;
    assert_eq!(c.stats().rename_mode, RenameMode::Portable);
    if job == "mixed" {
        for i in 0..300 {
            c.inc("counter", 1)?;
            c.set(&format!("p{id}-{}", i % 20), &i)?;
            if i % 3 == 0 {
                c.delete(&format!("p{id}-{}", (i + 7) % 20))?;
            }
        }
        let won = c.add("once", &id, Ttl::Never)?;
        println!("RESULT {}", if won { "won" } else { "lost" });
    }
    Ok(())
}

#[test]
fn a_fuse_filesystem_without_renameat2_flags_gets_the_portable_mode_and_its_guarantees()
-> TestResult {
    let Some(m) = mount() else {
        return Ok(());
    };
    let dir = m.point.join("cache");
    let c = FileSystemCache::builder(&dir).threshold(0).open()?;
    assert_eq!(
        c.stats().rename_mode,
        RenameMode::Portable,
        "probed, not forced"
    );

    // Threads, each with its own handle (own lock descriptions).
    let handles: Vec<_> = (0..4)
        .map(|_| FileSystemCache::builder(&dir).threshold(0).open())
        .collect::<fscache::Result<_>>()?;
    let adds: usize = std::thread::scope(|s| {
        let ts: Vec<_> = handles
            .iter()
            .enumerate()
            .map(|(t, h)| {
                s.spawn(move || {
                    for i in 0..200 {
                        h.inc("threads", 1).unwrap();
                        h.set(&format!("t{t}-{}", i % 10), &i).unwrap();
                        if i % 4 == 0 {
                            h.delete(&format!("t{t}-{}", (i + 3) % 10)).unwrap();
                        }
                    }
                    usize::from(h.add("thread-once", &t, Ttl::Never).unwrap())
                })
            })
            .collect();
        ts.into_iter().map(|t| t.join().unwrap()).sum()
    });
    assert_eq!(c.get::<i64>("threads")?, Some(800));
    assert_eq!(adds, 1, "add succeeds exactly once");

    // Real processes.
    let children: Vec<_> = (0..3)
        .map(|i| {
            common::child_command("mixed", &dir, i)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let mut won = 0;
    for child in children {
        let out = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        won += stdout.matches("RESULT won").count();
    }
    assert_eq!(won, 1, "add succeeds exactly once across processes");
    assert_eq!(c.get::<i64>("counter")?, Some(900));

    // The per-operation count is exact in this mode too.
    let files = entry_files(&dir).len();
    assert_eq!(c.approximate_len(), files);
    assert_eq!(c.len()?, files);
    eprintln!("FUSE (bindfs): Portable mode, {files} entries, count exact");
    Ok(())
}
