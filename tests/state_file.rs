//! The shared count file (`fscache.state`) under damage by other programs: repaired in
//! place so every handle keeps one counter, never a crash of the handles using it.

mod common;

use std::os::unix::fs::{FileExt, MetadataExt};

use common::{TestResult, entry_files, temp_cache_dir};
use fscache::FileSystemCache;

fn open(dir: &std::path::Path) -> fscache::Result<FileSystemCache> {
    FileSystemCache::builder(dir).threshold(0).open()
}

fn state(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("fscache.state")
}

#[test]
fn a_damaged_state_file_is_repaired_in_place_and_handles_share_one_count() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let first = open(&dir)?;
    first.set("a", &1)?;
    let inode = std::fs::metadata(state(&dir))?.ino();
    // Another program scribbles over the magic (size unchanged).
    std::fs::OpenOptions::new()
        .write(true)
        .open(state(&dir))?
        .write_all_at(b"garbage!", 0)?;
    let second = open(&dir)?;
    assert_eq!(
        std::fs::metadata(state(&dir))?.ino(),
        inode,
        "repaired in place"
    );
    first.set("b", &2)?;
    second.set("c", &3)?;
    assert_eq!(
        first.approximate_len(),
        3,
        "the first handle sees the second's write"
    );
    assert_eq!(second.approximate_len(), 3, "and the reverse: one counter");
    assert_eq!(entry_files(&dir).len(), 3);
    Ok(())
}

#[test]
fn a_truncated_state_file_is_restored_to_full_length_for_the_handles_mapping_it() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let first = open(&dir)?;
    first.set("a", &1)?;
    // Truncated by another program while `first` maps it. (Touching the mapping now
    // would fault: see SECURITY.md. The next open repairs the length first.)
    std::fs::OpenOptions::new()
        .write(true)
        .open(state(&dir))?
        .set_len(0)?;
    let second = open(&dir)?;
    assert_eq!(std::fs::metadata(state(&dir))?.len(), 4096);
    // `first`'s mapping is backed again: it counts on the same file, no SIGBUS.
    first.set("b", &2)?;
    assert_eq!(second.approximate_len(), 2);
    assert_eq!(first.approximate_len(), 2);
    Ok(())
}

#[test]
fn an_absurd_or_negative_count_is_recounted() -> TestResult {
    for bad in [-5i64, 1 << 50, i64::MIN] {
        let (_tmp, dir) = temp_cache_dir();
        let c = open(&dir)?;
        for i in 0..7 {
            c.set(&format!("k{i}"), &i)?;
        }
        drop(c);
        std::fs::OpenOptions::new()
            .write(true)
            .open(state(&dir))?
            .write_all_at(&bad.to_ne_bytes(), 8)?;
        let c = open(&dir)?;
        assert_eq!(c.approximate_len(), 7, "count {bad} replaced by a recount");
    }
    Ok(())
}

#[test]
fn a_state_file_of_the_wrong_size_is_never_mapped() -> TestResult {
    for len in [0u64, 7, 4095, 4097, 1 << 20] {
        let (_tmp, dir) = temp_cache_dir();
        let c = open(&dir)?;
        c.set("x", &1)?;
        drop(c);
        let f = std::fs::OpenOptions::new().write(true).open(state(&dir))?;
        f.set_len(len)?;
        drop(f);
        let c = open(&dir)?;
        assert_eq!(
            c.approximate_len(),
            1,
            "length {len}: repaired and recounted"
        );
        assert_eq!(std::fs::metadata(state(&dir))?.len(), 4096);
    }
    Ok(())
}
