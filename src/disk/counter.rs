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
//! offset 40  8 bytes  earliest expiry, A: Unix ms, i64; no entry on disk expires
//!                     before it (i64::MAX: none expires; 0: unknown, as in a file
//!                     written before this field existed)
//! offset 48  8 bytes  earliest expiry, B: the same, the other of the pair
//! offset 56  8 bytes  which of A (even) and B (odd) is in force; the other is a full
//!                     sweep's scratch while it runs (see `SharedState::expiry_floor`)
//! offset 64  8 bytes  total length of the entry files, i64 (atomic); kept only
//!                     once offset 72 is set
//! offset 72  8 bytes  the byte budget of the handle that set it last, plus one (0:
//!                     no handle ever had one, and offset 64 is not kept)
//! offset 80  8 bytes  number of changes ever made to offset 64 (atomic), as offset 16
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
const FLOOR_OFFSETS: [usize; 2] = [40, 48];
const FLOOR_EPOCH_OFFSET: usize = 56;
const BYTES_OFFSET: usize = 64;
const BYTE_BUDGET_OFFSET: usize = 72;
const BYTES_CHANGES_OFFSET: usize = 80;

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

/// The bytes of a fresh state file holding `count`. `empty`: the directory is new,
/// so no entry expires before anything is written (else the earliest expiry is
/// unknown until a full sweep).
pub(crate) fn initial_bytes(count: i64, empty: bool) -> Vec<u8> {
    let mut page = vec![0u8; STATE_LEN];
    page[..8].copy_from_slice(&STATE_MAGIC);
    page[COUNT_OFFSET..COUNT_OFFSET + 8].copy_from_slice(&count.to_ne_bytes());
    if empty {
        for at in FLOOR_OFFSETS {
            page[at..at + 8].copy_from_slice(&i64::MAX.to_ne_bytes());
        }
    }
    page
}

pub(crate) fn write_initial(file: &mut File, count: i64, empty: bool) -> io::Result<()> {
    file.write_all(&initial_bytes(count, empty))
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
        file.write_all_at(&initial_bytes(count, false), 0)
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

    /// The expiry floor: no entry on disk expires before this time (Unix ms), so an
    /// expiry step before it would find nothing. 0 when unknown.
    ///
    /// Every write of an entry that expires lowers both cells of the pair to its
    /// expiry ([`note_expiry`](Self::note_expiry)) *after* its rename committed. Only
    /// a full sweep raises the floor, under the sweep lock: it resets the cell not in
    /// force to "none" ([`floor_scan_begin`](Self::floor_scan_begin)), reads every
    /// header, lowers that cell to the earliest live expiry it saw and puts it in
    /// force ([`floor_scan_end`](Self::floor_scan_end)). A write that committed before
    /// the reset is on disk when the sweep lists its shard (the sweep sees it); one
    /// that noted its expiry after the reset lowered the scratch cell too. Either
    /// way the new floor is no later than any entry on disk.
    pub(crate) fn expiry_floor(&self) -> u64 {
        let epoch = self.cell(FLOOR_EPOCH_OFFSET).load(Ordering::Acquire);
        let v = self.cell(FLOOR_OFFSETS[(epoch & 1) as usize]).load(Ordering::Acquire);
        v.max(0) as u64
    }

    /// Whether no entry on disk expires (the floor is "none").
    pub(crate) fn nothing_expires(&self) -> bool {
        self.expiry_floor() == i64::MAX as u64
    }

    /// Lowers the floor to `expires_ms` (an entry that expires was just committed).
    pub(crate) fn note_expiry(&self, expires_ms: u64) {
        let v = i64::try_from(expires_ms).unwrap_or(i64::MAX);
        for at in FLOOR_OFFSETS {
            let cell = self.cell(at);
            // Most writes set an expiry later than the floor: a load, no store.
            if cell.load(Ordering::Relaxed) > v {
                cell.fetch_min(v, Ordering::AcqRel);
            }
        }
    }

    /// A full sweep starts (the caller holds the sweep lock): resets the scratch cell.
    pub(crate) fn floor_scan_begin(&self) {
        let epoch = self.cell(FLOOR_EPOCH_OFFSET).load(Ordering::Acquire);
        let scratch = FLOOR_OFFSETS[((epoch & 1) ^ 1) as usize];
        self.cell(scratch).store(i64::MAX, Ordering::SeqCst);
    }

    /// A full sweep that began with [`floor_scan_begin`](Self::floor_scan_begin)
    /// saw every header; `earliest` is the earliest expiry of the live entries it
    /// left (`u64::MAX`: none expires). Puts the scratch cell in force.
    pub(crate) fn floor_scan_end(&self, earliest: u64) {
        let epoch_cell = self.cell(FLOOR_EPOCH_OFFSET);
        let epoch = epoch_cell.load(Ordering::Acquire);
        let scratch = FLOOR_OFFSETS[((epoch & 1) ^ 1) as usize];
        let v = i64::try_from(earliest).unwrap_or(i64::MAX);
        self.cell(scratch).fetch_min(v, Ordering::SeqCst);
        epoch_cell.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether the total length of the entry files is kept (some handle on this
    /// directory ever had a byte budget). Once set, every handle keeps it.
    pub(crate) fn bytes_kept(&self) -> bool {
        self.cell(BYTE_BUDGET_OFFSET).load(Ordering::Acquire) != 0
    }

    /// The total length of the entry files, as kept per operation.
    pub(crate) fn bytes(&self) -> i64 {
        self.cell(BYTES_OFFSET).load(Ordering::Relaxed)
    }

    /// Adds `delta` to the total length.
    pub(crate) fn add_bytes(&self, delta: i64) {
        if delta != 0 {
            self.cell(BYTES_CHANGES_OFFSET).fetch_add(1, Ordering::SeqCst);
            self.cell(BYTES_OFFSET).fetch_add(delta, Ordering::SeqCst);
        }
    }

    /// Starts keeping the total length at `total` (a count of the files just made),
    /// recording `budget`; if another handle started first, only records `budget`.
    pub(crate) fn keep_bytes(&self, total: i64, budget: u64) {
        let recorded = i64::try_from(budget).unwrap_or(i64::MAX - 1) + 1;
        let flag = self.cell(BYTE_BUDGET_OFFSET);
        if flag.load(Ordering::Acquire) == 0 {
            self.cell(BYTES_CHANGES_OFFSET).fetch_add(1, Ordering::SeqCst);
            self.cell(BYTES_OFFSET).store(total, Ordering::SeqCst);
        }
        flag.store(recorded, Ordering::Release);
    }

    /// The byte budget the last handle that had one opened with.
    pub(crate) fn recorded_byte_budget(&self) -> Option<u64> {
        match self.cell(BYTE_BUDGET_OFFSET).load(Ordering::Relaxed) {
            v if v > 0 => u64::try_from(v - 1).ok(),
            _ => None,
        }
    }

    /// The number of changes made to the total length, for [`correct_bytes`](Self::correct_bytes).
    pub(crate) fn bytes_changes(&self) -> i64 {
        self.cell(BYTES_CHANGES_OFFSET).load(Ordering::SeqCst)
    }

    /// Sets the total length to `value` if no change was made to it since
    /// `expected_changes` was read (beyond the caller's own, which it counted in).
    pub(crate) fn correct_bytes(&self, expected_changes: i64, value: i64) -> bool {
        self.correct_cell(BYTES_OFFSET, BYTES_CHANGES_OFFSET, expected_changes, value)
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
        self.correct_cell(COUNT_OFFSET, CHANGES_OFFSET, expected_changes, value)
    }

    /// Sets the cell at `value_at` to `value` if the change number at `changes_at`
    /// is still `expected_changes`.
    fn correct_cell(&self, value_at: usize, changes_at: usize, expected_changes: i64, value: i64) -> bool {
        // Changes bump the change number before the value, so if the number is still
        // the expected one after this read, the read saw every completed change.
        let current = self.cell(value_at).load(Ordering::SeqCst);
        if self
            .cell(changes_at)
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
        // Relative, so a change that starts after the exchange is kept.
        self.cell(value_at)
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
        write_initial(&mut f, 5, true).unwrap();
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
    fn the_expiry_floor_is_lowered_by_writes_and_raised_only_by_a_full_scan() {
        let dir = tempfile::tempdir().unwrap();
        let a = mapped(dir.path(), "s");
        assert_eq!(a.expiry_floor(), i64::MAX as u64, "a new directory: none expires");
        a.note_expiry(5_000);
        a.note_expiry(9_000);
        assert_eq!(a.expiry_floor(), 5_000);
        // A scan that saw 7,000 as the earliest, while a write of 6,000 landed after
        // it began: the floor is 6,000, not 7,000.
        a.floor_scan_begin();
        assert_eq!(a.expiry_floor(), 5_000, "in force until the scan ends");
        a.note_expiry(6_000);
        a.floor_scan_end(7_000);
        assert_eq!(a.expiry_floor(), 6_000);
        // The next scan uses the other cell; a scan that saw nothing expiring and no
        // write meanwhile: none expires.
        a.floor_scan_begin();
        a.floor_scan_end(u64::MAX);
        assert_eq!(a.expiry_floor(), i64::MAX as u64);
        // A state file from before the field: unknown, so steps run.
        let path = dir.path().join("old");
        let mut f = File::options().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        write_initial(&mut f, 0, false).unwrap();
        let old = SharedState::map(f).unwrap();
        assert_eq!(old.expiry_floor(), 0);
        old.note_expiry(5_000);
        assert_eq!(old.expiry_floor(), 0, "unknown stays unknown until a scan");
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
