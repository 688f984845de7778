//! The store calls of the session logic, sync or async: one implementation of
//! [`Sessions::load`](crate::session::Sessions::load) and
//! [`Sessions::save`](crate::session::Sessions::save) serves both.
//!
//! The logic is written once as `async fn`s over [`Calls`]. The sync API runs it
//! over [`SyncCalls`], whose futures do the (blocking) store call and are ready at
//! their first poll, so [`ready`] drives the whole save in one poll with no
//! executor. The axum layer runs the same functions over an async engine client
//! (Redis's multiplexed connection), awaiting network round trips without a
//! thread.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::error::{Error, Result};
use super::{Merge, Store, Version, Versioned};

/// A merge the session logic hands to [`Calls::update`]; `Send` so the futures of
/// async stores are.
pub(crate) type SendMergeFn<'a> = dyn FnMut(Option<&[u8]>) -> Result<Merge> + Send + 'a;

/// The [`Store`] operations the session logic uses, as futures.
pub(crate) trait Calls: Sync {
    fn engine(&self) -> &'static str;
    fn load(&self, key: &str) -> impl Future<Output = Result<Option<Versioned>>> + Send;
    fn insert(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> impl Future<Output = Result<bool>> + Send;
    fn compare_and_set(
        &self,
        key: &str,
        expected: &Version,
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool>> + Send;
    fn remove(&self, key: &str) -> impl Future<Output = Result<bool>> + Send;
    /// Only Flask mode's saves touch (fscache's own records are rewritten).
    #[cfg_attr(not(feature = "flask"), allow(dead_code))]
    fn touch(&self, key: &str, ttl: Duration) -> impl Future<Output = Result<bool>> + Send;
    fn update(
        &self,
        key: &str,
        ttl: Duration,
        merge: &mut SendMergeFn<'_>,
    ) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;
}

/// A sync [`Store`]'s calls: each future makes the call when first polled and is
/// ready then.
pub(crate) struct SyncCalls<'a, S: ?Sized>(pub(crate) &'a S);

impl<S: Store + ?Sized> Calls for SyncCalls<'_, S> {
    fn engine(&self) -> &'static str {
        self.0.engine()
    }

    async fn load(&self, key: &str) -> Result<Option<Versioned>> {
        self.0.load(key)
    }

    async fn insert(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        self.0.insert(key, value, ttl)
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: &Version,
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<bool> {
        self.0.compare_and_set(key, expected, new, ttl)
    }

    async fn remove(&self, key: &str) -> Result<bool> {
        self.0.remove(key)
    }

    async fn touch(&self, key: &str, ttl: Duration) -> Result<bool> {
        self.0.touch(key, ttl)
    }

    async fn update(
        &self,
        key: &str,
        ttl: Duration,
        merge: &mut SendMergeFn<'_>,
    ) -> Result<Option<Vec<u8>>> {
        self.0.update(key, ttl, merge)
    }
}

/// The output of a future over [`SyncCalls`], which is ready at its first poll.
pub(crate) fn ready<T>(fut: impl Future<Output = Result<T>>) -> Result<T> {
    let fut = pin!(fut);
    match fut.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => r,
        // Only SyncCalls futures are driven here, and none of them waits.
        Poll::Pending => Err(Error::callback(std::io::Error::other(
            "fscache bug: a sync session call did not complete",
        ))),
    }
}

/// Waits before optimistic attempt `attempt` (1, 2, …) of an async store: the
/// first retries only yield to the runtime (each attempt costs a round trip,
/// which already spaces them, and tokio's timer cannot sleep less than a
/// millisecond), later ones sleep [`backoff_delay`](super::backoff_delay).
#[cfg(all(feature = "axum", feature = "redis"))]
pub(crate) async fn backoff(attempt: u32) {
    if attempt <= 4 {
        tokio::task::yield_now().await;
    } else {
        tokio::time::sleep(super::backoff_delay(attempt)).await;
    }
}
