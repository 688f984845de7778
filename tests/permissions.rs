//! Files 0600 and directories 0700 by default, even under a permissive umask.
//! (One test in this binary: the umask is process-wide.)

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{TestResult, temp_cache_dir};
use fscache::{FileSystemCache, Ttl};

fn modes(dir: &Path) -> Vec<(String, u32, bool)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            out.push((
                e.path().display().to_string(),
                md.permissions().mode() & 0o7777,
                md.is_dir(),
            ));
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

#[test]
fn default_and_custom_modes_hold_under_any_umask() -> TestResult {
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0));
    let result = (|| -> TestResult {
        let (_tmp, dir) = temp_cache_dir();
        let c = FileSystemCache::open(&dir)?;
        c.set("a", &1)?;
        c.add("b", &2, Ttl::Default)?;
        c.inc("c", 1)?;
        assert_eq!(std::fs::metadata(&dir)?.permissions().mode() & 0o777, 0o700);
        let all = modes(&dir);
        assert!(all.len() > 256);
        for (path, mode, is_dir) in &all {
            let want = if *is_dir { 0o700 } else { 0o600 };
            assert_eq!(*mode, want, "{path}");
        }

        // Custom modes are applied exactly, also when the umask would strip them.
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
        let (_tmp2, dir2) = temp_cache_dir();
        let c = FileSystemCache::builder(&dir2)
            .file_mode(0o640)
            .dir_mode(0o750)
            .open()?;
        c.set("a", &1)?;
        c.inc("n", 1)?; // creates a lock file
        let p = common::entry_path(&dir2, "a");
        assert_eq!(std::fs::metadata(&p)?.permissions().mode() & 0o777, 0o640);
        assert_eq!(
            std::fs::metadata(p.parent().unwrap())?.permissions().mode() & 0o777,
            0o750
        );
        // Everything the cache created: the marker, the state file, the lock
        // directory and lock files, every shard, the directory itself.
        assert_eq!(
            std::fs::metadata(&dir2)?.permissions().mode() & 0o777,
            0o750
        );
        for (path, mode, is_dir) in modes(&dir2) {
            let want = if is_dir { 0o750 } else { 0o640 };
            assert_eq!(mode, want, "{path}");
        }
        Ok(())
    })();
    rustix::process::umask(old);
    result
}
