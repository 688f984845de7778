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

use tower_sessions_core::Session;

pub use super::users::USER_KEY;
use super::users::{self, Marker, Plan};
use super::{blocking, ttl_at_least_1ms};
use crate::session::UserSession;
use crate::session::users::{Reader, Seen};
use crate::store::Store;
use crate::store::calls::{SyncCalls, ready};
use crate::store::hashed_key;

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

/// The marker of a session tied to a user ([`set_user`]), if any.
fn marker_of(record: &Record) -> Option<Marker> {
    let value = record.data.get(USER_KEY)?;
    serde_json::from_value(value.clone()).ok()
}

/// Reads a stored tower-sessions record for the user index.
struct TowerReader;

impl Reader for TowerReader {
    fn seen(&self, bytes: &[u8]) -> Option<Seen> {
        let record = serde_json::from_slice::<Record>(bytes).ok()?;
        if record.expiry_date <= OffsetDateTime::now_utc() {
            return None;
        }
        let marker = marker_of(&record)?;
        Some(Seen {
            user: Some(marker.user),
            label: marker.label,
            created: marker.created,
            last_seen: marker.seen.max(marker.created),
        })
    }
}

fn fscache_error(e: tower_sessions_core::session::Error) -> crate::Error {
    crate::Error::callback(std::io::Error::other(e.to_string()))
}

/// Ties a tower-sessions session to `user` (your app's user id) with an optional
/// short `label` (say, the browser), for [`TowerStore::user_sessions`] and
/// "log out everywhere". Call it at login, after `session.cycle_id()`. The
/// marker lives in the session under [`USER_KEY`] (`"fscache.user"`); the store
/// adds the session to the user's index when it saves it.
///
/// ```no_run
/// use fscache::tower_sessions::{TowerStore, set_user};
/// use tower_sessions_core::Session;
///
/// // The login handler, once the password checked out.
/// async fn login(session: &Session, user: &str) -> fscache::Result<()> {
///     session
///         .cycle_id()
///         .await
///         .map_err(|e| fscache::Error::callback(std::io::Error::other(e)))?;
///     set_user(session, user, Some("Firefox on Linux")).await
/// }
///
/// // "Your devices" and "log out all other devices", with the store the
/// // SessionManagerLayer was made with (a TowerStore is cheap to clone).
/// async fn devices(store: &TowerStore<dyn fscache::Store>, session: &Session) -> fscache::Result<String> {
///     let list = store.user_sessions(session).await?;
///     Ok(serde_json::json!({ "sessions": list }).to_string())
/// }
/// async fn logout_others(store: &TowerStore<dyn fscache::Store>, session: &Session) -> fscache::Result<usize> {
///     store.end_other_sessions(session).await
/// }
/// ```
///
/// # Errors
/// [`crate::Error::Config`] for an empty or overlong user id or label; the
/// session's own errors (loading it).
pub async fn set_user(session: &Session, user: &str, label: Option<&str>) -> crate::Result<()> {
    let mut marker = Marker::new(user, label)?;
    // A login again on a session keeps its place in the index (and is refused
    // if that session was ended meanwhile).
    let old: Option<Marker> = session.get(USER_KEY).await.map_err(fscache_error)?;
    marker.indexed = old.and_then(|m| m.indexed);
    session
        .insert(USER_KEY, marker)
        .await
        .map_err(fscache_error)
}

/// The user a tower-sessions session is tied to ([`set_user`]), if any.
///
/// # Errors
/// The session's own errors (loading it).
pub async fn user(session: &Session) -> crate::Result<Option<String>> {
    let marker: Option<Marker> = session.get(USER_KEY).await.map_err(fscache_error)?;
    Ok(marker.map(|m| m.user))
}

impl<S: Store + ?Sized + 'static> TowerStore<S> {
    /// Creates a record tied to a user: the index first, then the record, then a
    /// read of the index (see [`crate::session::Sessions::user_sessions`]).
    async fn create_marked(&self, record: &mut Record, marker: Marker) -> session_store::Result<()> {
        let prefix = Arc::clone(&self.prefix);
        let mut record_copy = record.clone();
        let id = blocking(&self.store, move |s| {
            let mut marker = marker;
            for _ in 0..CREATE_ATTEMPTS {
                let key = hashed_key(&prefix, &record_copy.id.to_string());
                let handle = key[prefix.len()..].to_owned();
                let Some(ttl) = record_ttl(&record_copy) else {
                    return Ok(record_copy.id);
                };
                let index = users::index(&prefix, ttl, &TowerReader);
                let confirm = match users::before_write(s, &index, &mut marker, &handle, ttl)? {
                    Plan::Refused => {
                        log::info!("fscache: a login of an ended session was refused");
                        return Ok(record_copy.id);
                    }
                    Plan::Write { confirm } => confirm,
                };
                let bytes = encode_with(&record_copy, &marker)?;
                if s.insert(&key, &bytes, ttl)? {
                    if confirm {
                        users::confirm(s, &index, &marker.user, &handle)?;
                    }
                    return Ok(record_copy.id);
                }
                record_copy.id = Id::default();
            }
            Err(crate::Error::Conflict {
                key: "<new tower-sessions record>".to_owned(),
                attempts: CREATE_ATTEMPTS as u32,
            })
        })
        .await
        .map_err(backend)?;
        record.id = id;
        Ok(())
    }

    /// Saves a record tied to a user: over a live record only, as `save`; joins
    /// the index first when its id is new to it.
    async fn save_marked(&self, record: Record, marker: Marker) -> session_store::Result<()> {
        let prefix = Arc::clone(&self.prefix);
        blocking(&self.store, move |s| {
            let key = hashed_key(&prefix, &record.id.to_string());
            let Some(ttl) = record_ttl(&record) else {
                return s.remove(&key).map(drop);
            };
            let handle = key[prefix.len()..].to_owned();
            let index = users::index(&prefix, ttl, &TowerReader);
            let mut marker = marker;
            let confirm = match users::before_write(s, &index, &mut marker, &handle, ttl)? {
                Plan::Refused => return Ok(()),
                Plan::Write { confirm } => confirm,
            };
            let bytes = encode_with(&record, &marker)?;
            if s.replace(&key, &bytes, ttl)? && confirm {
                users::confirm(s, &index, &marker.user, &handle)?;
            }
            Ok(())
        })
        .await
        .map_err(backend)
    }

    /// The sessions of the user `session` is tied to ([`set_user`]), `session`
    /// itself marked [`current`](UserSession::current); empty when it is tied to
    /// no user. See [`crate::session::Sessions::user_sessions`].
    ///
    /// # Errors
    /// Store errors; the session's own errors (loading it).
    pub async fn user_sessions(&self, session: &Session) -> crate::Result<Vec<UserSession>> {
        let marker: Option<Marker> = session.get(USER_KEY).await.map_err(fscache_error)?;
        let Some(marker) = marker else {
            return Ok(Vec::new());
        };
        let prefix = Arc::clone(&self.prefix);
        blocking(&self.store, move |s| {
            let index = users::index(&prefix, Duration::ZERO, &TowerReader);
            ready(index.list(&SyncCalls(s), &marker.user, marker.indexed))
        })
        .await
    }

    /// "Log out all other devices": ends every session of `session`'s user but
    /// `session`; how many.
    ///
    /// # Errors
    /// Store errors; the session's own errors (loading it).
    pub async fn end_other_sessions(&self, session: &Session) -> crate::Result<usize> {
        let marker: Option<Marker> = session.get(USER_KEY).await.map_err(fscache_error)?;
        let Some(marker) = marker else {
            return Ok(0);
        };
        let prefix = Arc::clone(&self.prefix);
        blocking(&self.store, move |s| {
            let index = users::index(&prefix, Duration::ZERO, &TowerReader);
            ready(index.end_all(&SyncCalls(s), &marker.user, marker.indexed))
        })
        .await
    }

    /// "Log out everywhere" (say, after a password change): ends every session of
    /// `user`; how many. The requesting session's own cookie then names no
    /// session (call `session.flush()` to expire it too).
    ///
    /// # Errors
    /// Store errors.
    pub async fn end_user_sessions(&self, user: &str) -> crate::Result<usize> {
        let (prefix, user) = (Arc::clone(&self.prefix), user.to_owned());
        blocking(&self.store, move |s| {
            let index = users::index(&prefix, Duration::ZERO, &TowerReader);
            ready(index.end_all(&SyncCalls(s), &user, None))
        })
        .await
    }

    /// Ends one of `user`'s sessions by the [`handle`](UserSession::handle) a
    /// listing gave; whether it was one of theirs.
    ///
    /// # Errors
    /// Store errors.
    pub async fn end_user_session(&self, user: &str, handle: &str) -> crate::Result<bool> {
        let (prefix, user, handle) = (Arc::clone(&self.prefix), user.to_owned(), handle.to_owned());
        blocking(&self.store, move |s| {
            let index = users::index(&prefix, Duration::ZERO, &TowerReader);
            ready(index.end_one(&SyncCalls(s), &user, &handle))
        })
        .await
    }
}

/// The record's time to live; `None` if it has expired.
fn record_ttl(record: &Record) -> Option<Duration> {
    let left = record.expiry_date - OffsetDateTime::now_utc();
    left.is_positive()
        .then(|| ttl_at_least_1ms(Duration::try_from(left).unwrap_or(Duration::MAX)))
}

/// The record's bytes with `marker` as its user marker.
fn encode_with(record: &Record, marker: &Marker) -> crate::Result<Vec<u8>> {
    let mut record = record.clone();
    let value = serde_json::to_value(marker).map_err(|e| crate::Error::Serialize {
        key: USER_KEY.to_owned(),
        source: e.into(),
    })?;
    record.data.insert(USER_KEY.to_owned(), value);
    serde_json::to_vec(&record).map_err(|e| crate::Error::Serialize {
        key: "<tower-sessions record>".to_owned(),
        source: e.into(),
    })
}

#[async_trait]
impl<S: Store + ?Sized + 'static> SessionStore for TowerStore<S> {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        if let Some(marker) = marker_of(record) {
            return self.create_marked(record, marker).await;
        }
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
        if let Some(marker) = marker_of(record) {
            return self.save_marked(record.clone(), marker).await;
        }
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
