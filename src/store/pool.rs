//! A small, bounded connection pool shared by the engine stores.
//!
//! Written here rather than taken from r2d2: while an engine is down, r2d2 keeps
//! trying to connect until its checkout timeout (30 s by default) and pings every
//! connection it hands out unless told not to. A session store wants the opposite:
//! a refused connection is an immediate, retryable error, and a request costs no
//! extra round trip.
//!
//! - **Bounded**: at most `max_size` connections are open (idle or busy); a call
//!   that finds none free waits up to `wait` for one, then fails with a retryable
//!   [`EngineErrorKind::Timeout`].
//! - **One broken connection is dropped alone**: a call that fails with a
//!   retryable error drops its connection; the idle ones stay, except those idle
//!   since before a pooled connection was found dead (the server went away while
//!   they sat idle: they are dropped when next taken out, not used).
//! - **A stale connection is retried once** ([`Pool::with_retry`], for calls that are
//!   safe to repeat): a call on a pooled connection that fails because the
//!   connection is gone (the engine restarted, a failover, an idle timeout) runs
//!   again, once, on a new connection. A connect that fails is not retried.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{EngineErrorKind, Error, Result};

/// Connections a pool keeps open at most, unless the URL says (`pool_size`).
pub(crate) const DEFAULT_MAX_SIZE: usize = 32;

/// How long a call waits for a free connection, unless the URL says
/// (`pool_timeout_ms`).
pub(crate) const DEFAULT_WAIT: Duration = Duration::from_secs(2);

/// How big a pool is and how long a call waits for one of its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PoolLimits {
    pub(crate) max_size: usize,
    pub(crate) wait: Duration,
}

impl Default for PoolLimits {
    fn default() -> Self {
        PoolLimits {
            max_size: DEFAULT_MAX_SIZE,
            wait: DEFAULT_WAIT,
        }
    }
}

/// Reads the pool options every engine URL takes (`pool_size=N`,
/// `pool_timeout_ms=MS`) into `limits`: `Ok(false)` when `name` is not one of them,
/// an error message for a bad value.
#[allow(dead_code)] // unused when SQLite is the only engine built
pub(crate) fn pool_option(
    limits: &mut PoolLimits,
    name: &str,
    value: &str,
) -> std::result::Result<bool, String> {
    match name {
        "pool_size" => match value.parse::<usize>() {
            Ok(n) if (1..=10_000).contains(&n) => limits.max_size = n,
            _ => return Err(format!("pool_size takes a number from 1 to 10000, not {value:?}")),
        },
        "pool_timeout_ms" => match value.parse::<u64>() {
            Ok(ms) if ms <= 3_600_000 => limits.wait = Duration::from_millis(ms),
            _ => {
                return Err(format!(
                    "pool_timeout_ms takes a number of milliseconds up to 3600000, not {value:?}"
                ));
            }
        },
        _ => return Ok(false),
    }
    Ok(true)
}

struct State<C> {
    /// Idle connections and when each last finished a call without a
    /// connection error.
    idle: Vec<(C, Instant)>,
    /// A pooled connection idle since this instant was found dead: every idle
    /// connection that has not been used since is dropped when taken out (the
    /// server restarted or failed over while they sat idle).
    stale_before: Option<Instant>,
    /// Connections open: idle, busy, or being made.
    open: usize,
}

/// Idle connections, reused last-in first-out; a new one is made when none is idle
/// and fewer than `max_size` are open.
pub(crate) struct Pool<C> {
    engine: &'static str,
    state: Mutex<State<C>>,
    freed: Condvar,
    limits: PoolLimits,
    connect: Box<dyn Fn() -> Result<C> + Send + Sync>,
    /// Whether an idle connection is still usable, asked when it is taken out
    /// (a cheap local check, never a round trip).
    usable: fn(&mut C) -> bool,
    /// Bumped by [`invalidate`](Pool::invalidate): a connection checked out
    /// before is dropped instead of returning to the pool.
    generation: AtomicU64,
}

/// A connection checked out, and since when it was idle (`None`: made for this
/// call).
struct Lease<C> {
    conn: C,
    idle_since: Option<Instant>,
}

impl<C> Pool<C> {
    /// A pool of at most `limits.max_size` connections made by `connect`.
    pub(crate) fn new(
        engine: &'static str,
        limits: PoolLimits,
        connect: impl Fn() -> Result<C> + Send + Sync + 'static,
    ) -> Self {
        Pool {
            engine,
            state: Mutex::new(State {
                idle: Vec::new(),
                stale_before: None,
                open: 0,
            }),
            freed: Condvar::new(),
            limits: PoolLimits {
                max_size: limits.max_size.max(1),
                wait: limits.wait,
            },
            connect: Box::new(connect),
            usable: |_| true,
            generation: AtomicU64::new(0),
        }
    }

    /// Checks idle connections with `usable` before handing them out (for a client
    /// that knows locally when its connection has closed).
    #[allow(dead_code)] // used by the PostgreSQL store only
    pub(crate) fn with_check(mut self, usable: fn(&mut C) -> bool) -> Self {
        self.usable = usable;
        self
    }

    /// Runs `f` on a connection. A connection whose call failed with a retryable
    /// error (I/O, a dropped connection) is dropped; the others return to the pool.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut C) -> Result<R>) -> Result<R> {
        let generation = self.generation.load(Ordering::Acquire);
        let mut lease = self.checkout(false)?;
        let result = f(&mut lease.conn);
        self.checkin(lease, &result, generation);
        result
    }

    /// [`with`](Pool::with) for a call that is safe to run twice: when it fails on
    /// a pooled connection because that connection is gone
    /// ([`EngineErrorKind::Unavailable`]), it runs once more on a new connection.
    #[allow(dead_code)] // unused when SQLite is the only engine built
    pub(crate) fn with_retry<R>(&self, f: impl FnMut(&mut C) -> Result<R>) -> Result<R> {
        self.with_retry_unless(f, |_| false)
    }

    /// [`with_retry`](Pool::with_retry) for a call that is safe to run twice unless
    /// it failed where `maybe_applied` says (a transaction's `COMMIT`).
    #[allow(dead_code)] // unused when SQLite is the only engine built
    pub(crate) fn with_retry_unless<R>(
        &self,
        mut f: impl FnMut(&mut C) -> Result<R>,
        maybe_applied: impl Fn(&Error) -> bool,
    ) -> Result<R> {
        let generation = self.generation.load(Ordering::Acquire);
        let mut lease = self.checkout(false)?;
        let result = f(&mut lease.conn);
        let stale = lease.idle_since.is_some()
            && matches!(
                &result,
                Err(e @ Error::Engine {
                    kind: EngineErrorKind::Unavailable,
                    ..
                }) if !maybe_applied(e)
            );
        self.checkin(lease, &result, generation);
        if !stale {
            return result;
        }
        let generation = self.generation.load(Ordering::Acquire);
        let mut lease = self.checkout(true)?;
        let result = f(&mut lease.conn);
        self.checkin(lease, &result, generation);
        result
    }

    /// A connection: an idle one (unless `fresh`), or a new one if fewer than
    /// `max_size` are open, or the first one freed within `wait`.
    fn checkout(&self, fresh: bool) -> Result<Lease<C>> {
        // Dead idle connections are dropped after the lock is released (closing
        // a client can block: PostgreSQL's sends a Terminate message).
        let mut dead = Vec::new();
        let mut deadline = None;
        let mut state = self.lock();
        loop {
            if !fresh {
                while let Some((mut conn, since)) = state.idle.pop() {
                    let stale = state.stale_before.is_some_and(|t| since <= t);
                    if !stale && (self.usable)(&mut conn) {
                        drop(state);
                        drop(dead);
                        return Ok(Lease {
                            conn,
                            idle_since: Some(since),
                        });
                    }
                    state.open -= 1;
                    dead.push(conn);
                }
            }
            if fresh && state.open >= self.limits.max_size {
                // Make room by closing an idle connection rather than wait.
                if let Some((conn, _)) = state.idle.pop() {
                    state.open -= 1;
                    dead.push(conn);
                }
            }
            if state.open < self.limits.max_size {
                state.open += 1;
                drop(state);
                drop(dead);
                return match (self.connect)() {
                    Ok(conn) => Ok(Lease {
                        conn,
                        idle_since: None,
                    }),
                    Err(e) => {
                        self.lock().open -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            let now = Instant::now();
            let deadline = *deadline.get_or_insert(now + self.limits.wait);
            if now >= deadline {
                drop(state);
                drop(dead);
                return Err(Error::engine_with_kind(
                    self.engine,
                    "wait for a pooled connection",
                    EngineErrorKind::Timeout,
                    format!(
                        "all {} connections of the pool were busy for {} ms (raise pool_size \
                         or pool_timeout_ms in the URL)",
                        self.limits.max_size,
                        self.limits.wait.as_millis()
                    ),
                ));
            }
            state = self
                .freed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn checkin<R>(&self, lease: Lease<C>, result: &Result<R>, generation: u64) {
        let keep = !matches!(result, Err(e) if e.is_retryable())
            && self.generation.load(Ordering::Acquire) == generation;
        let dead = matches!(
            result,
            Err(Error::Engine {
                kind: EngineErrorKind::Unavailable,
                ..
            })
        );
        let mut state = self.lock();
        if let (true, Some(since)) = (dead, lease.idle_since) {
            state.stale_before = Some(state.stale_before.map_or(since, |t| t.max(since)));
        }
        if keep {
            state.idle.push((lease.conn, Instant::now()));
        } else {
            state.open -= 1;
            drop(state);
            drop(lease.conn);
        }
        self.freed.notify_one();
    }

    /// Drops every idle connection, and every busy one when its call returns (the
    /// server they go to is no longer the one to use: a new master).
    #[allow(dead_code)] // used by the Redis store only
    pub(crate) fn invalidate(&self) {
        let mut state = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        let idle = std::mem::take(&mut state.idle);
        state.open -= idle.len();
        drop(state);
        drop(idle);
        self.freed.notify_all();
    }

    /// Takes every idle connection out of the pool (for a store that must drop them
    /// somewhere else).
    #[allow(dead_code)] // used by the PostgreSQL store only
    pub(crate) fn take_idle(&self) -> Vec<C> {
        let mut state = self.lock();
        let idle = std::mem::take(&mut state.idle);
        state.open -= idle.len();
        idle.into_iter().map(|(c, _)| c).collect()
    }

    /// Open connections (idle and busy), for tests.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.lock().open
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<C>> {
        // A panic elsewhere cannot leave the state inconsistent: every update of
        // `open` is a single statement.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    fn unavailable() -> Error {
        Error::engine_with_kind("test", "call", EngineErrorKind::Unavailable, "gone")
    }

    fn counting_pool(max_size: usize, wait: Duration) -> (Pool<usize>, Arc<AtomicUsize>) {
        let made = Arc::new(AtomicUsize::new(0));
        let counter = made.clone();
        let pool = Pool::new("test", PoolLimits { max_size, wait }, move || {
            Ok(counter.fetch_add(1, Ordering::SeqCst))
        });
        (pool, made)
    }

    /// Three connections made by three calls at once, all returned idle.
    fn three_idle(pool: &Pool<usize>) {
        let barrier = std::sync::Barrier::new(3);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    pool.with(|_| {
                        barrier.wait();
                        Ok(())
                    })
                });
            }
        });
        assert_eq!(pool.open(), 3);
    }

    #[test]
    fn a_full_pool_makes_a_caller_wait_then_time_out() {
        let (pool, made) = counting_pool(1, Duration::from_millis(100));
        let held = std::sync::Barrier::new(2);
        let release = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            let holder = s.spawn(|| {
                pool.with(|_| {
                    held.wait();
                    release.wait();
                    Ok(())
                })
            });
            held.wait();
            // The one connection is busy: this call waits 100 ms and gives up.
            let e = pool.with(|_| Ok(())).unwrap_err();
            assert_eq!(e.engine_kind(), Some(EngineErrorKind::Timeout), "{e}");
            assert!(e.is_retryable());
            release.wait();
            holder.join().unwrap().unwrap();
        });
        // Freed: the next call gets the same connection.
        pool.with(|c| {
            assert_eq!(*c, 0);
            Ok(())
        })
        .unwrap();
        assert_eq!(made.load(Ordering::SeqCst), 1);
        assert_eq!(pool.open(), 1);
    }

    #[test]
    fn a_waiting_caller_gets_the_connection_freed() {
        let (pool, made) = counting_pool(1, Duration::from_secs(30));
        let held = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            let holder = s.spawn(|| {
                pool.with(|_| {
                    held.wait();
                    std::thread::sleep(Duration::from_millis(50));
                    Ok(())
                })
            });
            held.wait();
            pool.with(|c| {
                assert_eq!(*c, 0, "the freed connection, not a new one");
                Ok(())
            })
            .unwrap();
            holder.join().unwrap().unwrap();
        });
        assert_eq!(made.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn one_broken_connection_leaves_the_others_idle() {
        let (pool, _) = counting_pool(4, DEFAULT_WAIT);
        three_idle(&pool);
        // A call that timed out: its connection may hold a late reply, so it goes;
        // nothing says the others are dead.
        let r: Result<()> = pool.with(|_| {
            Err(Error::engine_with_kind("test", "call", EngineErrorKind::Timeout, "slow"))
        });
        assert!(r.is_err());
        assert_eq!(pool.open(), 2, "only the broken one was dropped");
        let mut seen = Vec::new();
        for _ in 0..2 {
            pool.with(|c| {
                seen.push(*c);
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn a_stale_pooled_connection_is_retried_once_on_a_new_one() {
        let (pool, made) = counting_pool(2, DEFAULT_WAIT);
        pool.with(|_| Ok(())).unwrap();
        // Connection 0 is idle; the call on it fails as a stale one would, and
        // runs again on connection 1.
        let mut seen = Vec::new();
        let r = pool.with_retry(|c| {
            seen.push(*c);
            if *c == 0 { Err(unavailable()) } else { Ok(*c) }
        });
        assert_eq!(r.unwrap(), 1);
        assert_eq!(seen, [0, 1]);
        assert_eq!(made.load(Ordering::SeqCst), 2);
        // A failure on a new connection is not retried.
        let mut calls = 0;
        let fresh: Pool<usize> = Pool::new("test", PoolLimits::default(), || Ok(7));
        let r: Result<()> = fresh.with_retry(|_| {
            calls += 1;
            Err(unavailable())
        });
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }

    #[test]
    fn connections_idle_since_before_a_dead_one_are_not_handed_out() {
        let (pool, made) = counting_pool(4, DEFAULT_WAIT);
        three_idle(&pool);
        // Connections 0, 1 and 2 idle; the one on top turns out dead.
        let r: Result<()> = pool.with(|_| Err(unavailable()));
        assert!(r.is_err());
        // The two left idle sat idle as long: not used, a new one is made.
        pool.with(|c| {
            assert_eq!(*c, 3);
            Ok(())
        })
        .unwrap();
        assert_eq!(made.load(Ordering::SeqCst), 4);
        assert_eq!(pool.open(), 1);
    }

    #[test]
    fn a_failed_connect_frees_its_place() {
        let fail = AtomicUsize::new(1);
        let pool: Pool<()> = Pool::new(
            "test",
            PoolLimits {
                max_size: 1,
                wait: Duration::from_millis(10),
            },
            move || {
                if fail.fetch_sub(1, Ordering::SeqCst) == 1 {
                    Err(unavailable())
                } else {
                    Ok(())
                }
            },
        );
        assert!(pool.with(|_| Ok(())).is_err());
        pool.with(|_| Ok(())).unwrap();
    }

    #[test]
    fn invalidate_drops_idle_and_busy_connections() {
        let (pool, made) = counting_pool(4, DEFAULT_WAIT);
        pool.with(|_| Ok(())).unwrap();
        pool.with(|_| {
            pool.invalidate();
            Ok(())
        })
        .unwrap();
        assert_eq!(pool.open(), 0);
        pool.with(|c| {
            assert_eq!(*c, 1);
            Ok(())
        })
        .unwrap();
        assert_eq!(made.load(Ordering::SeqCst), 2);
    }
}
