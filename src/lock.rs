//! Stripe locks: an in-process mutex paired with `flock` on a stripe lock file.
//!
//! `flock` belongs to an open file description, so two threads sharing one descriptor
//! would not exclude each other; the mutex orders the threads of this cache handle,
//! and the `flock` orders processes (and other handles, which open their own
//! descriptors). Both are released when the guard drops, also on panic.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, TryLockError};

use crate::error::{Error, Result};
use crate::layout::{self, STRIPES, SWEEP_LOCK};
use crate::sys::Root;

#[derive(Debug)]
pub(crate) struct Locks {
    dir: PathBuf,
    file_mode: u32,
    stripes: Box<[Mutex<Option<File>>]>,
    sweep: Mutex<Option<File>>,
}

/// Holds one lock; unlocks on drop.
pub(crate) struct LockGuard<'a> {
    guard: MutexGuard<'a, Option<File>>,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        if let Some(file) = self.guard.as_ref() {
            // Closing would release it too; unlocking keeps the descriptor for reuse.
            let _ = file.unlock();
        }
    }
}

impl Locks {
    pub(crate) fn new(dir: &Path, file_mode: u32) -> Locks {
        Locks {
            dir: dir.to_path_buf(),
            file_mode,
            stripes: (0..STRIPES).map(|_| Mutex::new(None)).collect(),
            sweep: Mutex::new(None),
        }
    }

    /// Blocks until this process holds the stripe exclusively.
    pub(crate) fn stripe(&self, root: &Root, stripe: usize) -> Result<LockGuard<'_>> {
        let rel = layout::lock_rel(stripe);
        let guard = self.stripes[stripe]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.acquire(root, guard, &rel, true)
            .map(|g| g.expect("blocking acquire"))
    }

    /// Takes the sweep lock if no other thread or process holds it.
    pub(crate) fn try_sweep(&self, root: &Root) -> Result<Option<LockGuard<'_>>> {
        let guard = match self.sweep.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Ok(None),
        };
        self.acquire(root, guard, SWEEP_LOCK, false)
    }

    /// Waits for the sweep lock.
    pub(crate) fn sweep(&self, root: &Root) -> Result<LockGuard<'_>> {
        let guard = self
            .sweep
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.acquire(root, guard, SWEEP_LOCK, true)
            .map(|g| g.expect("blocking acquire"))
    }

    fn acquire<'a>(
        &self,
        root: &Root,
        mut guard: MutexGuard<'a, Option<File>>,
        rel: &str,
        block: bool,
    ) -> Result<Option<LockGuard<'a>>> {
        let lock_err = |source: io::Error| Error::Lock {
            path: self.dir.join(rel),
            source,
        };
        if guard.is_none() {
            let file = match root.open_rw_create(rel, self.file_mode) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // The locks directory was removed: recreate it.
                    root.mkdir(layout::LOCK_DIR, 0o700).map_err(|e| {
                        Error::io("create lock directory", self.dir.join(layout::LOCK_DIR), e)
                    })?;
                    root.open_rw_create(rel, self.file_mode)
                }
                other => other,
            }
            .map_err(|e| Error::io("open lock file", self.dir.join(rel), e))?;
            *guard = Some(file);
        }
        let file = guard.as_ref().expect("opened above");
        if block {
            file.lock().map_err(lock_err)?;
        } else {
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                Err(std::fs::TryLockError::Error(e)) => return Err(lock_err(e)),
            }
        }
        Ok(Some(LockGuard { guard }))
    }
}
