//! The live-entry counter shared by every process using a directory.
//!
//! `fscache.state` is one page, memory-mapped `MAP_SHARED` by every open cache; the
//! counter is an `AtomicI64` in that page, so counting a new entry or a delete is one
//! atomic add in memory: no syscall, no count file rewritten per write. All mappings
//! of the file share the same page-cache page, which is what makes the atomic
//! cross-process (same machine only; see the crate docs on network filesystems).
//!
//! ```text
//! offset 0   8 bytes  magic b"FSCSTAT1"
//! offset 8   8 bytes  entry-name count, i64 in native byte order (atomic)
//! offset 16  8 bytes  number of count changes ever made (atomic), so a scan can tell
//!                     whether anyone changed the count while it ran
//! offset 24  8 bytes  the expiry walk's shard counter: each walk takes the next
//!                     shard (the value modulo 256), so processes share the walk
//! offset 32  8 bytes  the threshold of the handle opened last, plus one (0: none
//!                     recorded, as in a file written before this field existed);
//!                     for tools such as `fscache stats`, never read by the engine
//! rest of the page    zero, reserved
//! ```
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI64, Ordering};

pub(crate) const STATE_LEN: usize = 4096;
const STATE_MAGIC: [u8; 8] = *b"FSCSTAT1";
const COUNT_OFFSET: usize = 8;
const CHANGES_OFFSET: usize = 16;
const CURSOR_OFFSET: usize = 24;
const THRESHOLD_OFFSET: usize = 32;

/// A shared mapping of `fscache.state`.
pub(crate) struct SharedState {
    ptr: NonNull<u8>,
    // Kept open for the mapping's lifetime (not required by mmap, but keeps the
    // inode identity obvious when debugging with /proc/PID/maps).
    _file: File,
}

// SAFETY: the mapping is only accessed through `AtomicI64` (see `count_cell`) and the
// read-only magic check at map time; atomics are safe to share between threads.
unsafe impl Send for SharedState {}
// SAFETY: as above; `&SharedState` hands out only `&AtomicI64`.
unsafe impl Sync for SharedState {}

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedState")
            .field("count", &self.load())
            .finish()
    }
}

/// The bytes of a fresh state file holding `count`.
pub(crate) fn initial_bytes(count: i64) -> Vec<u8> {
    let mut page = vec![0u8; STATE_LEN];
    page[..8].copy_from_slice(&STATE_MAGIC);
    page[COUNT_OFFSET..COUNT_OFFSET + 8].copy_from_slice(&count.to_ne_bytes());
    page
}

pub(crate) fn write_initial(file: &mut File, count: i64) -> io::Result<()> {
    file.write_all(&initial_bytes(count))
}

impl SharedState {
    /// Checks a state file's size and magic with a read, before anything maps it: a
    /// mapping of a too-short file would fault (SIGBUS) on first use. `Err` with
    /// `InvalidData` says what is wrong.
    pub(crate) fn check(file: &File) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let len = file.metadata()?.len();
        if len != STATE_LEN as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("state file is {len} bytes, expected {STATE_LEN}"),
            ));
        }
        let mut magic = [0u8; 8];
        file.read_exact_at(&mut magic, 0)?;
        if magic != STATE_MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "state file has the wrong magic",
            ));
        }
        Ok(())
    }

    /// Rewrites a damaged state file in place (same inode, so every handle that
    /// already maps it keeps counting on it) with `count`.
    pub(crate) fn repair_in_place(file: &File, count: i64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        file.set_len(STATE_LEN as u64)?;
        file.write_all_at(&initial_bytes(count), 0)
    }

    /// Maps an existing state file. Fails with `InvalidData` if it is not one (wrong
    /// size or magic), so the caller can repair it.
    pub(crate) fn map(file: File) -> io::Result<SharedState> {
        Self::check(&file)?;
        // SAFETY: a fresh shared read-write mapping of a file we checked is STATE_LEN
        // bytes long; the kernel chooses the address (null hint), so it aliases no Rust
        // object. fscache never shrinks the file (a damaged one is repaired in place at
        // full length), so the mapping stays backed while this struct lives; another
        // program truncating it is the one case that faults (see SECURITY.md).
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                STATE_LEN,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                file.as_fd(),
                0,
            )
        }
        .map_err(io::Error::from)?;
        let ptr = NonNull::new(ptr.cast::<u8>()).expect("mmap never returns null on success");
        let state = SharedState { ptr, _file: file };
        let magic_ok = (0..8).all(|i| {
            // SAFETY: i < 8 < STATE_LEN, within the mapping; a volatile byte read of
            // shared memory that other processes only write atomically at offset 8+.
            unsafe { state.ptr.as_ptr().add(i).read_volatile() == STATE_MAGIC[i] }
        });
        if !magic_ok {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "state file has the wrong magic",
            ));
        }
        Ok(state)
    }

    fn cell(&self, offset: usize) -> &AtomicI64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= STATE_LEN);
        // SAFETY: the mapping is page-aligned and `offset` a multiple of 8, so the cell
        // is 8-byte aligned as AtomicI64 requires; it lies within the STATE_LEN-byte
        // mapping (checked above), which lives as long as `self`; every process
        // accesses these bytes only atomically.
        unsafe { AtomicI64::from_ptr(self.ptr.as_ptr().add(offset).cast::<i64>()) }
    }

    fn count_cell(&self) -> &AtomicI64 {
        self.cell(COUNT_OFFSET)
    }

    /// The shard the next expiry walk reads (a counter shared by all processes).
    pub(crate) fn next_shard(&self) -> u64 {
        self.cell(CURSOR_OFFSET).fetch_add(1, Ordering::Relaxed) as u64
    }

    /// Records the threshold of a handle being opened (see the layout above).
    pub(crate) fn record_threshold(&self, threshold: usize) {
        let v = i64::try_from(threshold).unwrap_or(i64::MAX - 1) + 1;
        self.cell(THRESHOLD_OFFSET).store(v, Ordering::Relaxed);
    }

    /// The threshold the last handle opened with, if one was recorded.
    pub(crate) fn recorded_threshold(&self) -> Option<usize> {
        match self.cell(THRESHOLD_OFFSET).load(Ordering::Relaxed) {
            v if v > 0 => usize::try_from(v - 1).ok(),
            _ => None,
        }
    }

    /// How many times the count has been changed (by `add`), ever, by anyone.
    pub(crate) fn changes(&self) -> i64 {
        self.cell(CHANGES_OFFSET).load(Ordering::SeqCst)
    }

    pub(crate) fn load(&self) -> i64 {
        self.count_cell().load(Ordering::Relaxed)
    }

    /// Adds `delta`, returning the new value.
    pub(crate) fn add(&self, delta: i64) -> i64 {
        self.cell(CHANGES_OFFSET).fetch_add(1, Ordering::SeqCst);
        // Wrapping like the atomic itself: a damaged figure near i64::MAX must not
        // panic (it is recounted once seen).
        self.count_cell()
            .fetch_add(delta, Ordering::SeqCst)
            .wrapping_add(delta)
    }

    /// Sets the count to `value` unconditionally (a recount of a damaged figure).
    pub(crate) fn reset(&self, value: i64) {
        self.cell(CHANGES_OFFSET).fetch_add(1, Ordering::SeqCst);
        let current = self.count_cell().load(Ordering::SeqCst);
        // Relative and wrapping (fetch_add wraps): the result is `value` whatever
        // the damaged figure was, i64::MIN included.
        self.count_cell()
            .fetch_add(value.wrapping_sub(current), Ordering::SeqCst);
    }

    /// Sets the count to `value` if the change number is still `expected_changes`,
    /// that is, if no `add` ran (in any process) beyond those the caller accounted for.
    pub(crate) fn correct(&self, expected_changes: i64, value: i64) -> bool {
        // `add` bumps the change number before the count, so if the number is still
        // the expected one after this read, the read saw every completed change.
        let current = self.count_cell().load(Ordering::SeqCst);
        if self
            .cell(CHANGES_OFFSET)
            .compare_exchange(
                expected_changes,
                expected_changes.wrapping_add(1),
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_err()
        {
            return false;
        }
        // Relative, so an `add` that starts after the exchange is kept.
        self.count_cell()
            .fetch_add(value.wrapping_sub(current), Ordering::SeqCst);
        true
    }
}

impl Drop for SharedState {
    fn drop(&mut self) {
        // SAFETY: ptr/STATE_LEN are exactly the mapping created in `map`, unmapped once
        // here; no reference from `count_cell` outlives `&self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), STATE_LEN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(dir: &std::path::Path, name: &str) -> SharedState {
        let path = dir.join(name);
        let mut f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        write_initial(&mut f, 5).unwrap();
        SharedState::map(File::options().read(true).write(true).open(&path).unwrap()).unwrap()
    }

    #[test]
    fn two_mappings_share_one_counter() {
        let dir = tempfile::tempdir().unwrap();
        let a = mapped(dir.path(), "s");
        let b = SharedState::map(
            File::options()
                .read(true)
                .write(true)
                .open(dir.path().join("s"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(a.load(), 5);
        assert_eq!(a.add(3), 8);
        assert_eq!(b.load(), 8);
        std::thread::scope(|s| {
            for st in [&a, &b] {
                s.spawn(move || {
                    for _ in 0..10_000 {
                        st.add(1);
                    }
                });
            }
        });
        assert_eq!(a.load(), 20_008);
        drop(a);
        assert_eq!(b.add(-8), 20_000);
        // The count reached the file itself, not only the mappings.
        let bytes = std::fs::read(dir.path().join("s")).unwrap();
        assert_eq!(i64::from_ne_bytes(bytes[8..16].try_into().unwrap()), 20_000);
    }

    #[test]
    fn wrong_size_or_magic_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad");
        std::fs::write(&path, b"short").unwrap();
        let f = File::options().read(true).write(true).open(&path).unwrap();
        assert_eq!(
            SharedState::map(f).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        std::fs::write(&path, vec![7u8; STATE_LEN]).unwrap();
        let f = File::options().read(true).write(true).open(&path).unwrap();
        assert_eq!(
            SharedState::map(f).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
