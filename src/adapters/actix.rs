//! An [`actix-session`](https://docs.rs/actix-session) session store over any
//! fscache [`Store`] (feature `actix`), for actix-web apps.
//!
//! ```ignore
//! // actix-web is the app's dependency, not fscache's; web/tests/actix.rs runs
//! // this setup against a real actix-web server.
//! use actix_session::SessionMiddleware;
//! use actix_web::cookie::Key;
//! use fscache::actix::ActixStore;
//!
//! # fn demo() -> fscache::Result<()> {
//! // The file cache, or any store URL (redis://, postgres://, sqlite://, memcache://).
//! let store = ActixStore::from_arc(std::sync::Arc::from(fscache::store::open("file://./sessions")?));
//! let key = Key::generate();
//! // App::new().wrap(SessionMiddleware::new(store.clone(), key.clone()))
//! # let _ = SessionMiddleware::new(store, key);
//! # Ok(()) }
//! ```
//!
//! Session keys are 43 characters of URL-safe base64 from the OS random source;
//! the state (actix-session's map of JSON strings) is stored as JSON under
//! `actix-session:` + blake3(key). `save` inserts only if the key is absent (a new
//! key on a collision). `delete` (a logout's `purge`, or `renew`) leaves a
//! tombstone under the key for [`DEFAULT_TOMBSTONE_TTL`] (see
//! [`ActixStore::with_tombstone_ttl`]). `update` writes only over a live state; over
//! a tombstone it writes nothing (the session was deleted: never revived); over
//! nothing at all (the state expired) it saves the state under a new key, as
//! actix-session's Redis store does. `update_ttl` slides the expiry with
//! [`Store::touch`] (in place on the engines; on the file cache an atomic rewrite
//! of the same bytes), never re-encoding the state. Every store call runs on the
//! runtime's blocking pool.
//!
//! **Guarantees.** A logout stays a logout: a request that loaded the session
//! before another request's `purge` and saves after it finds the tombstone and
//! writes nothing (its response may still carry the dead key's cookie, which loads
//! as no session). Each save is atomic.
//!
//! **Concurrent requests.** actix-session saves whole states: of two requests on
//! one session that change it at once, the last save wins. For changes that must
//! not be lost, keep that state in fscache's own
//! [`Sessions`](crate::session::Sessions), whose saves merge key by key.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};

use actix_session::Session;

pub use super::users::USER_KEY;
use super::users::{self, Marker, Plan};
use super::{blocking, ttl_at_least_1ms};
use crate::session::UserSession;
use crate::session::users::{Reader, Seen};
use crate::store::calls::{SyncCalls, ready};
use crate::store::hashed_key;
use crate::store::{Merge, Store};

type SessionState = HashMap<String, String>;

/// How many fresh keys `save` tries before it reports an error.
const SAVE_ATTEMPTS: usize = 8;

/// How long a deleted session's tombstone stays by default: longer than any
/// request that loaded the session before the delete can take to save it.
pub const DEFAULT_TOMBSTONE_TTL: Duration = Duration::from_secs(600);

/// What `delete` leaves under the key: not a JSON state (it starts with a NUL), so
/// it never reads as one.
const TOMBSTONE: &[u8] = b"\0fscache: deleted actix-session";

/// An actix-session store over an fscache [`Store`]; cheap to clone.
pub struct ActixStore<S: ?Sized> {
    store: Arc<S>,
    prefix: Arc<str>,
    tombstone_ttl: Duration,
}

impl<S: ?Sized> Clone for ActixStore<S> {
    fn clone(&self) -> Self {
        ActixStore {
            store: Arc::clone(&self.store),
            prefix: Arc::clone(&self.prefix),
            tombstone_ttl: self.tombstone_ttl,
        }
    }
}

impl<S: Store + ?Sized> fmt::Debug for ActixStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActixStore")
            .field("engine", &self.store.engine())
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl<S: Store + 'static> ActixStore<S> {
    /// Wraps `store`; keys start with `actix-session:`.
    pub fn new(store: S) -> Self {
        Self::from_arc(Arc::new(store))
    }
}

impl<S: Store + ?Sized + 'static> ActixStore<S> {
    /// Wraps a shared store (such as an `Arc<dyn Store>`).
    pub fn from_arc(store: Arc<S>) -> Self {
        ActixStore {
            store,
            prefix: Arc::from("actix-session:"),
            tombstone_ttl: DEFAULT_TOMBSTONE_TTL,
        }
    }

    /// How long `delete` keeps a tombstone under a deleted session's key (default
    /// [`DEFAULT_TOMBSTONE_TTL`], 10 minutes). A request that loaded the session
    /// before the delete and saves later than this would save its state under a new
    /// key, as for an expired session: keep it above your longest request.
    #[must_use]
    pub fn with_tombstone_ttl(mut self, ttl: Duration) -> Self {
        self.tombstone_ttl = ttl_at_least_1ms(ttl);
        self
    }

    /// Another key prefix (several apps on one store).
    #[must_use]
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = Arc::from(prefix);
        self
    }

    /// The store key of a session key.
    pub fn store_key(&self, key: &str) -> String {
        hashed_key(&self.prefix, key)
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }
}

fn other(e: crate::Error) -> anyhow::Error {
    anyhow::Error::msg(e.report())
}

fn std_ttl(ttl: &time::Duration) -> Duration {
    ttl_at_least_1ms(Duration::try_from(*ttl).unwrap_or(Duration::ZERO))
}

fn new_key() -> Result<SessionKey, crate::Error> {
    let id = crate::session::new_id()?;
    SessionKey::try_from(id).map_err(|e| crate::Error::callback(std::io::Error::other(e.to_string())))
}

/// The marker of a session tied to a user ([`set_user`]), if any.
fn marker_of(state: &SessionState) -> Option<Marker> {
    serde_json::from_str(state.get(USER_KEY)?).ok()
}

fn marker_json(marker: &Marker) -> crate::Result<String> {
    serde_json::to_string(marker).map_err(|e| crate::Error::Serialize {
        key: USER_KEY.to_owned(),
        source: e.into(),
    })
}

/// Reads a stored actix-session state for the user index.
struct ActixReader;

impl Reader for ActixReader {
    fn seen(&self, bytes: &[u8]) -> Option<Seen> {
        if bytes == TOMBSTONE {
            return None;
        }
        let state = serde_json::from_slice::<SessionState>(bytes).ok()?;
        let marker = marker_of(&state)?;
        Some(Seen {
            user: Some(marker.user),
            label: marker.label,
            created: marker.created,
            last_seen: marker.seen.max(marker.created),
        })
    }
}

fn session_error(e: impl std::fmt::Display) -> crate::Error {
    crate::Error::callback(std::io::Error::other(e.to_string()))
}

/// Ties an actix-session session to `user` (your app's user id) with an optional
/// short `label`, for [`ActixStore::user_sessions`] and "log out everywhere".
/// Call it at login, after `session.renew()`. The marker lives in the session
/// under [`USER_KEY`] (`"fscache.user"`); the store adds the session to the
/// user's index when it saves it.
///
/// # Errors
/// [`crate::Error::Config`] for an empty or overlong user id or label.
pub fn set_user(session: &Session, user: &str, label: Option<&str>) -> crate::Result<()> {
    let mut marker = Marker::new(user, label)?;
    // A login again on a session keeps its place in the index (and is refused
    // if that session was ended meanwhile).
    marker.indexed = marker_in(session).and_then(|m| m.indexed);
    session.insert(USER_KEY, &marker).map_err(session_error)
}

/// The user an actix-session session is tied to ([`set_user`]), if any.
pub fn user(session: &Session) -> Option<String> {
    marker_in(session).map(|m| m.user)
}

fn marker_in(session: &Session) -> Option<Marker> {
    session.get::<Marker>(USER_KEY).ok()?
}

impl<S: Store + ?Sized + 'static> ActixStore<S> {
    /// Saves a new state tied to a user: the index first, then the state, then a
    /// read of the index (see [`crate::session::Sessions::user_sessions`]). A
    /// session that was ended gets a key that names nothing.
    async fn save_marked(
        &self,
        mut state: SessionState,
        marker: Marker,
        ttl: Duration,
    ) -> crate::Result<SessionKey> {
        let prefix = Arc::clone(&self.prefix);
        let key = blocking(&self.store, move |s| {
            let mut marker = marker;
            for _ in 0..SAVE_ATTEMPTS {
                let session_key = new_key()?;
                let key = hashed_key(&prefix, session_key.as_ref());
                let handle = key[prefix.len()..].to_owned();
                let index = users::index(&prefix, ttl, &ActixReader);
                let confirm = match users::before_write(s, &index, &mut marker, &handle, ttl)? {
                    Plan::Refused => {
                        log::info!("fscache: a login of an ended session was refused");
                        return Ok(session_key);
                    }
                    Plan::Write { confirm } => confirm,
                };
                state.insert(USER_KEY.to_owned(), marker_json(&marker)?);
                let bytes = serde_json::to_vec(&state).map_err(|e| crate::Error::Serialize {
                    key: "<actix-session state>".to_owned(),
                    source: e.into(),
                })?;
                if s.insert(&key, &bytes, ttl)? {
                    if confirm {
                        users::confirm(s, &index, &marker.user, &handle)?;
                    }
                    return Ok(session_key);
                }
            }
            Err(crate::Error::Conflict {
                key: "<new actix-session state>".to_owned(),
                attempts: SAVE_ATTEMPTS as u32,
            })
        })
        .await?;
        Ok(key)
    }

    /// The sessions of the user `session` is tied to ([`set_user`]), `session`
    /// itself marked [`current`](UserSession::current); empty when it is tied to
    /// no user. See [`crate::session::Sessions::user_sessions`].
    ///
    /// # Errors
    /// Store errors.
    pub async fn user_sessions(&self, session: &Session) -> crate::Result<Vec<UserSession>> {
        let Some(marker) = marker_in(session) else {
            return Ok(Vec::new());
        };
        let prefix = Arc::clone(&self.prefix);
        blocking(&self.store, move |s| {
            let index = users::index(&prefix, Duration::ZERO, &ActixReader);
            ready(index.list(&SyncCalls(s), &marker.user, marker.indexed))
        })
        .await
    }

    /// "Log out all other devices": ends every session of `session`'s user but
    /// `session`; how many.
    ///
    /// # Errors
    /// Store errors.
    pub async fn end_other_sessions(&self, session: &Session) -> crate::Result<usize> {
        let Some(marker) = marker_in(session) else {
            return Ok(0);
        };
        let prefix = Arc::clone(&self.prefix);
        blocking(&self.store, move |s| {
            let index = users::index(&prefix, Duration::ZERO, &ActixReader);
            ready(index.end_all(&SyncCalls(s), &marker.user, marker.indexed))
        })
        .await
    }

    /// "Log out everywhere": ends every session of `user`; how many (call
    /// `session.purge()` to expire the requesting one's cookie too).
    ///
    /// # Errors
    /// Store errors.
    pub async fn end_user_sessions(&self, user: &str) -> crate::Result<usize> {
        let (prefix, user) = (Arc::clone(&self.prefix), user.to_owned());
        blocking(&self.store, move |s| {
            let index = users::index(&prefix, Duration::ZERO, &ActixReader);
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
            let index = users::index(&prefix, Duration::ZERO, &ActixReader);
            ready(index.end_one(&SyncCalls(s), &user, &handle))
        })
        .await
    }
}

impl<S: Store + ?Sized + 'static> SessionStore for ActixStore<S> {
    async fn load(&self, session_key: &SessionKey) -> Result<Option<SessionState>, LoadError> {
        let key = self.store_key(session_key.as_ref());
        let found = blocking(&self.store, move |s| s.load(&key))
            .await
            .map_err(|e| LoadError::Other(other(e)))?;
        let Some(found) = found.filter(|f| f.value != TOMBSTONE) else {
            return Ok(None);
        };
        // Bytes that are not a state (another program's) are no session: never
        // returned as data; the middleware then starts a fresh one.
        match serde_json::from_slice::<SessionState>(&found.value) {
            Ok(state) => Ok(Some(state)),
            Err(e) => {
                log::warn!("fscache: an actix-session state does not decode ({e}); read as absent");
                Ok(None)
            }
        }
    }

    async fn save(&self, state: SessionState, ttl: &time::Duration) -> Result<SessionKey, SaveError> {
        if let Some(marker) = marker_of(&state) {
            return self
                .save_marked(state, marker, std_ttl(ttl))
                .await
                .map_err(|e| SaveError::Other(other(e)));
        }
        let bytes = serde_json::to_vec(&state).map_err(|e| SaveError::Serialization(e.into()))?;
        let ttl = std_ttl(ttl);
        for _ in 0..SAVE_ATTEMPTS {
            let session_key = new_key().map_err(|e| SaveError::Other(other(e)))?;
            let key = self.store_key(session_key.as_ref());
            let bytes = bytes.clone();
            let inserted = blocking(&self.store, move |s| s.insert(&key, &bytes, ttl))
                .await
                .map_err(|e| SaveError::Other(other(e)))?;
            if inserted {
                return Ok(session_key);
            }
        }
        Err(SaveError::Other(anyhow::anyhow!(
            "{SAVE_ATTEMPTS} fresh session keys were all taken: is the random source broken?"
        )))
    }

    async fn update(
        &self,
        session_key: SessionKey,
        state: SessionState,
        ttl: &time::Duration,
    ) -> Result<SessionKey, UpdateError> {
        let key = self.store_key(session_key.as_ref());
        let std = std_ttl(ttl);
        let prefix = Arc::clone(&self.prefix);
        let marked = marker_of(&state);
        let state_in = state.clone();
        let stored = blocking(&self.store, move |s| {
            let mut state = state_in;
            // A session tied to a user: the index first (see `save_marked`).
            let mut confirm = None;
            if let Some(mut marker) = marked {
                let handle = key[prefix.len()..].to_owned();
                let index = users::index(&prefix, std, &ActixReader);
                match users::before_write(s, &index, &mut marker, &handle, std)? {
                    Plan::Refused => return Ok(Some(TOMBSTONE.to_vec())),
                    Plan::Write { confirm: true } => confirm = Some((marker.user.clone(), handle)),
                    Plan::Write { confirm: false } => {}
                }
                state.insert(USER_KEY.to_owned(), marker_json(&marker)?);
            }
            let bytes = serde_json::to_vec(&state).map_err(|e| crate::Error::Serialize {
                key: "<actix-session state>".to_owned(),
                source: e.into(),
            })?;
            // Only over a live state: a deleted session (a tombstone) is not brought
            // back, under its old key or a new one.
            let stored = s.update(&key, std, &mut |current| {
                Ok(match current {
                    Some(t) if t == TOMBSTONE => Merge::Keep,
                    Some(_) => Merge::Put(bytes.clone()),
                    None => Merge::Keep,
                })
            })?;
            if let (Some((user, handle)), Some(v)) = (confirm, &stored)
                && v != TOMBSTONE
            {
                let index = users::index(&prefix, std, &ActixReader);
                if !users::confirm(s, &index, &user, &handle)? {
                    return Ok(Some(TOMBSTONE.to_vec()));
                }
            }
            Ok(stored)
        })
        .await
        .map_err(|e| UpdateError::Other(other(e)))?;
        match stored {
            Some(t) if t == TOMBSTONE => {
                log::debug!("fscache: an actix-session update after its delete was dropped");
                Ok(session_key)
            }
            Some(_) => Ok(session_key),
            // Expired (no tombstone): saved under a new key, as actix-session's own
            // stores do.
            None => self.save(state, ttl).await.map_err(|e| match e {
                SaveError::Serialization(e) => UpdateError::Serialization(e),
                SaveError::Other(e) => UpdateError::Other(e),
            }),
        }
    }

    async fn update_ttl(&self, session_key: &SessionKey, ttl: &time::Duration) -> anyhow::Result<()> {
        let key = self.store_key(session_key.as_ref());
        let ttl = std_ttl(ttl);
        blocking(&self.store, move |s| s.touch(&key, ttl).map(drop))
            .await
            .map_err(other)
    }

    /// Replaces the state with a tombstone (see the module docs), so a concurrent
    /// request's `update` cannot revive the session.
    async fn delete(&self, session_key: &SessionKey) -> anyhow::Result<()> {
        let key = self.store_key(session_key.as_ref());
        let ttl = self.tombstone_ttl;
        blocking(&self.store, move |s| s.save(&key, TOMBSTONE, ttl))
            .await
            .map_err(other)
    }
}
