//! Stripe locks: an in-process mutex paired with `flock` on a stripe lock file.
//!
//! `flock` belongs to an open file description, so two threads sharing one descriptor
//! would not exclude each other; the mutex orders the threads of this cache handle,
//! and the `flock` orders processes (and other handles, which open their own
//! descriptors). Both are released when the guard drops, also on panic.
//!
//! **Fork.** A child created by `fork()` inherits the parent's descriptors, which
//! share the parent's open file descriptions and so its `flock`s: parent and child
//! would not exclude each other. Each lock file therefore remembers the process that
//! opened it; a process that finds a descriptor opened by another one (its parent)
//! opens its own before locking, and never unlocks the inherited one. Forking while
//! another thread of the parent is inside a locked operation is not supported: the
//! child inherits that thread's held mutex (as with any `Mutex` across `fork`).
//!
//! **Re-entry.** A thread that holds a stripe lock (inside an `update` closure) and
//! asks for another stripe lock of the same directory, through any handle, would
//! deadlock against itself or, with another thread doing the reverse, against that
//! thread. Such a request is refused with [`Error::Reentrant`]. The held stripes are
//! kept per thread, keyed by the directory's device and inode, so two handles of one
//! directory count as one.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::error::{Error, Result};
use super::layout::{self, STRIPES, SWEEP_LOCK};
use super::sys::{DirId, Root};

/// A lock file and the fork generation (plus one) of the process that opened it.
#[derive(Debug)]
struct Opened {
    file: File,
    pid: u64,
}

#[derive(Debug)]
pub(crate) struct Locks {
    dir: PathBuf,
    dir_id: DirId,
    file_mode: u32,
    dir_mode: u32,
    stripes: Box<[Mutex<Option<Opened>>]>,
    sweep: Mutex<Option<Opened>>,
}

thread_local! {
    /// The directories of which this thread holds a stripe lock, once per lock held.
    static HELD: RefCell<Vec<DirId>> = const { RefCell::new(Vec::new()) };
}

/// Whether this thread holds a stripe lock of the directory `id`.
pub(crate) fn holds_stripe(id: DirId) -> bool {
    HELD.with(|held| held.borrow().contains(&id))
}

/// Holds one lock; unlocks on drop.
pub(crate) struct LockGuard<'a> {
    guard: MutexGuard<'a, Option<Opened>>,
    /// Set for stripe locks: the entry in `HELD` to remove on drop.
    held: Option<DirId>,
}

impl std::fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard").finish_non_exhaustive()
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        if let Some(opened) = self.guard.as_ref() {
            // Closing would release it too; unlocking keeps the descriptor for reuse.
            // `acquire` replaced any inherited descriptor, so this one is our own.
            let _ = opened.file.unlock();
        }
        if let Some(id) = self.held {
            HELD.with(|held| {
                let mut held = held.borrow_mut();
                if let Some(i) = held.iter().rposition(|h| *h == id) {
                    held.swap_remove(i);
                }
            });
        }
    }
}

impl Locks {
    pub(crate) fn new(dir: &Path, dir_id: DirId, file_mode: u32, dir_mode: u32) -> Locks {
        Locks {
            dir: dir.to_path_buf(),
            dir_id,
            file_mode,
            dir_mode,
            stripes: (0..STRIPES).map(|_| Mutex::new(None)).collect(),
            sweep: Mutex::new(None),
        }
    }

    /// Whether the calling thread holds a stripe lock of this directory.
    pub(crate) fn held_by_this_thread(&self) -> bool {
        holds_stripe(self.dir_id)
    }

    /// Refuses `op` if this thread holds a stripe lock of this directory.
    pub(crate) fn ensure_not_held(&self, op: &'static str) -> Result<()> {
        if self.held_by_this_thread() {
            return Err(Error::reentrant(op));
        }
        Ok(())
    }

    /// Blocks until this process holds the stripe exclusively. Refused with
    /// [`Error::Reentrant`] if this thread already holds a stripe of this directory.
    pub(crate) fn stripe(
        &self,
        root: &Root,
        stripe: usize,
        op: &'static str,
    ) -> Result<LockGuard<'_>> {
        self.ensure_not_held(op)?;
        let rel = layout::lock_rel(stripe);
        let guard = self.stripes[stripe]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut guard = self
            .acquire(root, guard, &rel, true)?
            .expect("a blocking acquire returns a guard");
        HELD.with(|held| held.borrow_mut().push(self.dir_id));
        guard.held = Some(self.dir_id);
        Ok(guard)
    }

    /// Takes the stripe only if no other thread or process holds it (`None` if one
    /// does): for cleanup steps, which skip a busy stripe rather than wait. Refused
    /// like [`Locks::stripe`] if this thread already holds a stripe.
    pub(crate) fn try_stripe(
        &self,
        root: &Root,
        stripe: usize,
        op: &'static str,
    ) -> Result<Option<LockGuard<'_>>> {
        self.ensure_not_held(op)?;
        let rel = layout::lock_rel(stripe);
        let guard = match self.stripes[stripe].try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
        };
        let Some(mut guard) = self.acquire(root, guard, &rel, false)? else {
            return Ok(None);
        };
        HELD.with(|held| held.borrow_mut().push(self.dir_id));
        guard.held = Some(self.dir_id);
        Ok(Some(guard))
    }

    /// Waits for the sweep lock. Refused while this thread holds a stripe lock: a
    /// sweep elsewhere may be waiting for that stripe.
    pub(crate) fn sweep(&self, root: &Root, op: &'static str) -> Result<LockGuard<'_>> {
        self.ensure_not_held(op)?;
        let guard = self
            .sweep
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(self
            .acquire(root, guard, SWEEP_LOCK, true)?
            .expect("a blocking acquire returns a guard"))
    }

    fn acquire<'a>(
        &self,
        root: &Root,
        mut guard: MutexGuard<'a, Option<Opened>>,
        rel: &str,
        block: bool,
    ) -> Result<Option<LockGuard<'a>>> {
        let lock_err = |source: io::Error| Error::Lock {
            path: self.dir.join(rel),
            source,
        };
        // The fork generation, not the pid: no syscall per lock (see `fork.rs`).
        let pid = super::fork::generation().wrapping_add(1);
        if guard.as_ref().is_none_or(|o| o.pid != pid) {
            // None yet, or inherited across fork: open our own description. Dropping
            // an inherited descriptor only closes our copy; the parent's lock stays.
            let file = match root.open_rw_create(rel, self.file_mode) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // The locks directory was removed: recreate it.
                    root.mkdir(layout::LOCK_DIR, self.dir_mode).map_err(|e| {
                        Error::io("create lock directory", self.dir.join(layout::LOCK_DIR), e)
                    })?;
                    root.open_rw_create(rel, self.file_mode)
                }
                other => other,
            }
            .map_err(|e| Error::io("open lock file", self.dir.join(rel), e))?;
            // A lock file gets exactly file_mode (the umask may have removed group
            // bits another user of the cache needs). One made by another user cannot
            // be changed by this one (EPERM): theirs to set, and left alone.
            if file.metadata().is_ok_and(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.permissions().mode() & 0o7777 != self.file_mode
            }) {
                let _ = super::sys::set_mode(&file, self.file_mode);
            }
            *guard = Some(Opened { file, pid });
        }
        let file = &guard.as_ref().expect("opened above").file;
        if block {
            file.lock().map_err(lock_err)?;
        } else {
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                Err(std::fs::TryLockError::Error(e)) => return Err(lock_err(e)),
            }
        }
        Ok(Some(LockGuard { guard, held: None }))
    }
}
