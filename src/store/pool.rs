//! A small connection pool shared by the engine stores.
//!
//! Written here rather than taken from r2d2: while an engine is down, r2d2 keeps
//! trying to connect until its checkout timeout (30 s by default) and pings every
//! connection it hands out unless told not to. A session store wants the opposite:
//! a refused connection is an immediate, retryable error, and a request costs no
//! extra round trip.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Result;

/// Idle connections, reused last-in first-out; a new one is made when none is idle.
pub(crate) struct Pool<C> {
    idle: Mutex<Vec<C>>,
    max_idle: usize,
    connect: Box<dyn Fn() -> Result<C> + Send + Sync>,
    /// Bumped by [`invalidate`](Pool::invalidate): a connection checked out
    /// before is dropped instead of returning to the pool.
    generation: AtomicU64,
}

impl<C> Pool<C> {
    /// A pool that keeps at most `max_idle` idle connections made by `connect`.
    pub(crate) fn new(max_idle: usize, connect: impl Fn() -> Result<C> + Send + Sync + 'static) -> Self {
        Pool {
            idle: Mutex::new(Vec::new()),
            max_idle,
            connect: Box::new(connect),
            generation: AtomicU64::new(0),
        }
    }

    /// Runs `f` on a connection. A connection whose call failed with a retryable
    /// error (I/O, a dropped connection) is dropped, and so is every idle one: after
    /// an engine restart they are all stale, and the next call connects afresh.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut C) -> Result<R>) -> Result<R> {
        let generation = self.generation.load(Ordering::Acquire);
        let pooled = self.lock().pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => (self.connect)()?,
        };
        let result = f(&mut conn);
        match &result {
            Err(e) if e.is_retryable() => self.lock().clear(),
            _ => {
                let mut idle = self.lock();
                if idle.len() < self.max_idle
                    && self.generation.load(Ordering::Acquire) == generation
                {
                    idle.push(conn);
                }
            }
        }
        result
    }

    /// Drops every idle connection, and every busy one when its call returns (the
    /// server they go to is no longer the one to use: a new master).
    #[allow(dead_code)] // used by the Redis store only
    pub(crate) fn invalidate(&self) {
        let mut idle = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        idle.clear();
    }

    /// Takes every idle connection out of the pool (for a store that must drop them
    /// somewhere else).
    #[allow(dead_code)] // used by the PostgreSQL store only
    pub(crate) fn take_idle(&self) -> Vec<C> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<C>> {
        // A panic elsewhere cannot leave the Vec inconsistent.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}
