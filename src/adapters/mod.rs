//! Shared pieces of the framework adapters ([`crate::tower_sessions`],
//! [`crate::actix`]): running blocking store calls off the async executor, and
//! the smallest TTL a store takes. (Store keys: [`crate::store::hashed_key`].)

#[cfg(feature = "actix")]
pub mod actix;
#[cfg(feature = "axum")]
pub mod axum;
#[cfg(feature = "tower-sessions")]
pub mod tower;
#[cfg(any(feature = "tower-sessions", feature = "actix"))]
pub(crate) mod users;

#[cfg(any(feature = "tower-sessions", feature = "actix"))]
pub(crate) use store_calls::{blocking, ttl_at_least_1ms};

/// The tower-sessions and actix-session adapters' store calls.
#[cfg(any(feature = "tower-sessions", feature = "actix"))]
mod store_calls {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::error::{Error, Result};
    use crate::store::Store;

    /// Runs `f` on tokio's blocking thread pool (the store's calls do file or network
    /// I/O and may wait on a lock), so no executor thread blocks.
    pub(crate) async fn blocking<S, T, F>(store: &Arc<S>, f: F) -> Result<T>
    where
        S: Store + ?Sized + 'static,
        T: Send + 'static,
        F: FnOnce(&S) -> Result<T> + Send + 'static,
    {
        let store = Arc::clone(store);
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(r) => r,
            Err(e) => Err(Error::callback(std::io::Error::other(format!(
                "the blocking store task failed: {e}"
            )))),
        }
    }

    /// A TTL for the store: at least 1 ms (a store refuses 0).
    pub(crate) fn ttl_at_least_1ms(ttl: Duration) -> Duration {
        ttl.max(Duration::from_millis(1))
    }
}
