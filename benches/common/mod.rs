//! Shared by the benches.

use std::path::PathBuf;

/// Where benches put their directories: `FSCACHE_BENCH_DIR`, else /dev/shm (tmpfs) if
/// present, else the system temp dir.
pub fn bench_base() -> PathBuf {
    std::env::var_os("FSCACHE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let shm = PathBuf::from("/dev/shm");
            if shm.is_dir() {
                shm
            } else {
                std::env::temp_dir()
            }
        })
}

/// A fresh directory under [`bench_base`], removed on drop.
#[allow(dead_code)]
pub fn bench_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(bench_base()).expect("bench dir")
}
