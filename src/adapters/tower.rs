//! A [`tower_sessions`](https://docs.rs/tower-sessions) session store over any
//! fscache [`Store`] (feature `tower-sessions`), for axum and other tower apps.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use fscache::tower_sessions::TowerStore;
//! use tower_sessions_core::SessionStore as _;
//!
//! // The file cache, or any store URL (redis://, postgres://, sqlite://, memcache://).
//! let store = TowerStore::new(fscache::store::open("file://./sessions")?);
//! // let layer = tower_sessions::SessionManagerLayer::new(store);
//! # let _ = store; Ok(()) }
//! ```
//!
//! Records are tower-sessions' own [`Record`] as JSON, under `tower-session:` +
//! blake3(id), with the record's expiry as the store TTL (and checked again on
//! load). `create` inserts only if the key is absent and draws a new id on a
//! collision, as tower-sessions asks. Every store call runs on tokio's blocking pool.
//!
//! **Guarantees.** A logout stays a logout: `save` writes only over a live record
//! ([`Store::replace`]), so a request that loaded the session before another
//! request's `delete` (or `cycle_id`) cannot write it back. Each save is atomic: no
//! torn or mixed record is ever read.
//!
//! **Concurrent requests.** tower-sessions saves whole records: of two requests on
//! one session that change it at once, the last save wins (measured with the axum
//! example: 17–27 of 41 concurrent page views kept). For changes that must not be
//! lost, use fscache's own [`Sessions`](crate::session::Sessions) for that state (its
//! saves merge key by key); the axum example shows both.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store::{self, ExpiredDeletion, SessionStore};

use super::{blocking, ttl_at_least_1ms};
use crate::store::hashed_key;
use crate::store::Store;

/// How many fresh ids `create` tries before it reports an error (a collision of
/// 128-bit random ids means a broken random source, not bad luck).
const CREATE_ATTEMPTS: usize = 8;
/// Rows per `cleanup` call in `delete_expired`.
const CLEANUP_BATCH: usize = 1000;

/// A tower-sessions store over an fscache [`Store`]; cheap to clone.
pub struct TowerStore<S: ?Sized> {
    store: Arc<S>,
    prefix: Arc<str>,
}

impl<S: ?Sized> Clone for TowerStore<S> {
    fn clone(&self) -> Self {
        TowerStore {
            store: Arc::clone(&self.store),
            prefix: Arc::clone(&self.prefix),
        }
    }
}

impl<S: Store + ?Sized> fmt::Debug for TowerStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TowerStore")
            .field("engine", &self.store.engine())
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl<S: Store + 'static> TowerStore<S> {
    /// Wraps `store`; keys start with `tower-session:`.
    pub fn new(store: S) -> Self {
        Self::from_arc(Arc::new(store))
    }
}

impl<S: Store + ?Sized + 'static> TowerStore<S> {
    /// Wraps a shared store (such as an `Arc<dyn Store>` from [`crate::store::open`]).
    pub fn from_arc(store: Arc<S>) -> Self {
        TowerStore {
            store,
            prefix: Arc::from("tower-session:"),
        }
    }

    /// Another key prefix (several apps on one store).
    #[must_use]
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = Arc::from(prefix);
        self
    }

    /// The store key of a session id.
    pub fn store_key(&self, id: &Id) -> String {
        hashed_key(&self.prefix, &id.to_string())
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }
}

fn backend(e: crate::Error) -> session_store::Error {
    session_store::Error::Backend(e.report())
}

/// The record's bytes and its time to live; `None` if it has already expired.
fn encode(record: &Record) -> session_store::Result<Option<(Vec<u8>, Duration)>> {
    let left = record.expiry_date - OffsetDateTime::now_utc();
    if !left.is_positive() {
        return Ok(None);
    }
    let ttl = Duration::try_from(left).unwrap_or(Duration::MAX);
    let bytes =
        serde_json::to_vec(record).map_err(|e| session_store::Error::Encode(e.to_string()))?;
    Ok(Some((bytes, ttl_at_least_1ms(ttl))))
}

#[async_trait]
impl<S: Store + ?Sized + 'static> SessionStore for TowerStore<S> {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        for _ in 0..CREATE_ATTEMPTS {
            let Some((bytes, ttl)) = encode(record)? else {
                // Born expired: nothing to store, as tower-sessions' own stores do.
                return Ok(());
            };
            let key = self.store_key(&record.id);
            let inserted = blocking(&self.store, move |s| s.insert(&key, &bytes, ttl))
                .await
                .map_err(backend)?;
            if inserted {
                return Ok(());
            }
            record.id = Id::default();
        }
        Err(session_store::Error::Backend(format!(
            "{CREATE_ATTEMPTS} fresh session ids were all taken: is the random source broken?"
        )))
    }

    /// Writes the record only over a live one ([`Store::replace`], Redis's
    /// `SET … XX`): tower-sessions calls `save` for a session it loaded, so an absent
    /// record was deleted (a logout in a concurrent request) or expired meanwhile,
    /// and stays absent.
    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let key = self.store_key(&record.id);
        match encode(record)? {
            Some((bytes, ttl)) => {
                blocking(&self.store, move |s| s.replace(&key, &bytes, ttl).map(drop)).await
            }
            None => blocking(&self.store, move |s| s.remove(&key).map(drop)).await,
        }
        .map_err(backend)
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let key = self.store_key(id);
        let Some(found) = blocking(&self.store, move |s| s.load(&key))
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        // Bytes that are not a record of this id (another program's, or damaged
        // beyond the store's own checks) are no session: never returned as data.
        match serde_json::from_slice::<Record>(&found.value) {
            Ok(r) if r.id == *id && r.expiry_date > OffsetDateTime::now_utc() => Ok(Some(r)),
            Ok(_) => Ok(None),
            Err(e) => {
                log::warn!("fscache: a tower-sessions record does not decode ({e}); read as absent");
                Ok(None)
            }
        }
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        let key = self.store_key(id);
        blocking(&self.store, move |s| s.remove(&key).map(drop))
            .await
            .map_err(backend)
    }
}

#[async_trait]
impl<S: Store + ?Sized + 'static> ExpiredDeletion for TowerStore<S> {
    /// Removes expired records on the engines that keep them (the SQL stores); the
    /// file cache removes expired files in its own bounded steps (and `fscache gc`),
    /// and Redis and Memcached expire records themselves.
    async fn delete_expired(&self) -> session_store::Result<()> {
        blocking(&self.store, |s| {
            while s.cleanup(CLEANUP_BATCH)? == CLEANUP_BATCH {}
            Ok(())
        })
        .await
        .map_err(backend)
    }
}
