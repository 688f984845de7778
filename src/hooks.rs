//! Test-only pause and fault points, so tests can force the rare interleavings they
//! are about (a `set` landing between `add`'s check and its commit, a `delete` while
//! an eviction has the entry moved aside, a cleanup step that fails) on every run instead of
//! hoping a stress loop hits them. Unarmed, a point costs one relaxed atomic load.
//!
//! Only with the `test-hooks` feature (the crate's own tests turn it on through a
//! dev-dependency on itself): in every other build a point is an empty inline
//! function and nothing of this module is public.

use std::io;
use std::path::Path;
#[cfg(feature = "test-hooks")]
use std::sync::atomic::{AtomicBool, Ordering};
#[cfg(feature = "test-hooks")]
use std::sync::{Arc, RwLock};

/// Where a hook runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
pub enum Point {
    /// In `add`, after it found the key absent and wrote its temp file, before the
    /// commit (the stripe lock is held).
    AddBeforeCommit,
    /// In an eviction (step, sweep, `clear`, stale removal), after the decision and before
    /// the entry is moved aside (the stripe lock is held).
    EvictBegin,
    /// In an eviction (step, sweep, `clear`, stale removal), after the entry was moved
    /// aside and before it is checked and unlinked or restored.
    EvictMovedAside,
    /// At the start of a bounded cleanup step run after a write (eviction past the
    /// threshold, or the periodic expiry step); an `Err` fails the step.
    SweepAfterWrite,
    /// When `open` probes whether hard links work (the portable mode's primitive); an
    /// `Err` stands for the filesystem refusing them.
    ProbeLink,
    /// In the Memcached store's `insert`, after it read a deletion's tombstone under
    /// the key and before it writes over it with `cas`. The path is the store key
    /// (as given to `insert`), not a directory.
    InsertOverTombstone,
    /// In the axum layer (`fscache::axum`), after a save queued behind a save of the
    /// same turn (another request's save of that session is being written). The
    /// path is the session's store key.
    SaveQueued,
    /// In the axum layer, when a turn's write is about to go to the store, after it
    /// took the saves queued on its turn (saves that come now queue behind it). The
    /// path is the store key of its first session. A hook that waits here runs on a
    /// runtime worker: it should wait inside `tokio::task::block_in_place`.
    SaveWriting,
}

#[cfg(feature = "test-hooks")]
type Hook = Arc<dyn Fn(&Path) -> io::Result<()> + Send + Sync>;

#[cfg(feature = "test-hooks")]
static ARMED: AtomicBool = AtomicBool::new(false);
#[cfg(feature = "test-hooks")]
static HOOKS: RwLock<Vec<(Point, Hook)>> = RwLock::new(Vec::new());

#[cfg(feature = "test-hooks")]
/// Runs `f(cache_dir)` at `point` in every cache of this process until
/// [`clear_hooks`]. Tests filter on the directory they own.
pub fn set_hook(point: Point, f: impl Fn(&Path) -> io::Result<()> + Send + Sync + 'static) {
    let mut hooks = HOOKS.write().unwrap_or_else(|p| p.into_inner());
    hooks.retain(|(p, _)| *p != point);
    hooks.push((point, Arc::new(f)));
    ARMED.store(true, Ordering::SeqCst);
}

#[cfg(feature = "test-hooks")]
/// Removes every hook.
pub fn clear_hooks() {
    let mut hooks = HOOKS.write().unwrap_or_else(|p| p.into_inner());
    hooks.clear();
    ARMED.store(false, Ordering::SeqCst);
}

/// Runs the hook at `point`, if any.
#[cfg(feature = "test-hooks")]
pub(crate) fn run(point: Point, dir: &Path) -> io::Result<()> {
    if !ARMED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let hook = {
        let hooks = HOOKS.read().unwrap_or_else(|p| p.into_inner());
        hooks
            .iter()
            .find(|(p, _)| *p == point)
            .map(|(_, h)| h.clone())
    };
    match hook {
        Some(h) => h(dir),
        None => Ok(()),
    }
}

/// Without the `test-hooks` feature a point does nothing.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub(crate) fn run(_point: Point, _dir: &Path) -> io::Result<()> {
    Ok(())
}
