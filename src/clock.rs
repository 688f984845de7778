//! Time, injectable so TTL tests need not sleep.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in Unix milliseconds.
///
/// Expiry times are stored as absolute Unix milliseconds so every process sharing a
/// directory agrees on them; the cache asks the clock whenever it compares.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock (the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to: for tests of expiry.
///
/// Clones share the same time.
///
/// ```
/// use std::time::Duration;
/// use fscache::{FileSystemCache, ManualClock, Ttl};
///
/// # fn main() -> fscache::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let clock = ManualClock::new();
/// let cache = FileSystemCache::builder(dir.path()).clock(clock.clone()).open()?;
/// cache.set_with_ttl("k", &1, Ttl::After(Duration::from_secs(10)))?;
/// clock.advance(Duration::from_secs(10));
/// assert_eq!(cache.get::<i32>("k")?, None);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock starting at the current system time.
    pub fn new() -> ManualClock {
        ManualClock::at(SystemClock.now_ms())
    }

    /// A clock starting at `unix_ms`.
    pub fn at(unix_ms: u64) -> ManualClock {
        ManualClock {
            now: Arc::new(AtomicU64::new(unix_ms)),
        }
    }

    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        self.now.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    /// Sets the time.
    pub fn set(&self, unix_ms: u64) {
        self.now.store(unix_ms, Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}
