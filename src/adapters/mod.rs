//! Shared pieces of the framework adapters ([`crate::tower_sessions`],
//! [`crate::actix`]): running blocking store calls off the async executor, and
//! store keys.

#[cfg(feature = "actix")]
pub mod actix;
#[cfg(feature = "tower-sessions")]
pub mod tower;

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

/// The store key of a session id under `prefix`: a hash, as `Sessions` keys are, so
/// that a listing of the store never shows a live session id.
pub(crate) fn store_key(prefix: &str, id: &str) -> String {
    format!("{prefix}{}", blake3::hash(id.as_bytes()).to_hex())
}

/// `message: cause: cause`, each cause once.
pub(crate) fn message(e: &Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// A TTL for the store: at least 1 ms (a store refuses 0).
pub(crate) fn ttl_at_least_1ms(ttl: Duration) -> Duration {
    ttl.max(Duration::from_millis(1))
}
