//! Server-side sessions on any [`Store`] — by default a [`FileSystemCache`].
//!
//! The cookie carries only a random id (optionally signed); the data lives in the
//! store under `prefix + blake3(id)`, so reading the cache directory reveals no live
//! cookie. A request's changes are recorded key by key and merged into the stored
//! record under the key's lock when saved, so two concurrent requests of one session
//! that change different keys both keep their changes; [`Session::update`] even
//! merges concurrent changes of the same key.
//!
//! # Choosing the store's threshold
//!
//! Open the store with `threshold(0)` (unbounded) for sessions. A threshold evicts
//! the entries nearest to expiry once it is passed, and for sessions that means
//! logging out users who are still active: with the cache default of 500, the 501st
//! visitor logs somebody out. Expired sessions do not need a threshold to go: every
//! 32nd write runs a bounded expiry step (see
//! [`expiry_budget`](crate::FileSystemCacheBuilder::expiry_budget)), so an abandoned
//! session's file is removed within about `4 × N` writes of the site (`N` stored
//! sessions), and [`FileSystemCache::prune_step`] does the same from a background
//! thread where writes are rare. A threshold makes sense only as a disk-space cap far
//! above the number of sessions you expect (say 10× your peak), accepting that past
//! it the sessions closest to expiring are dropped.
//!
//! ```
//! use fscache::FileSystemCache;
//! use fscache::session::{SessionConfig, Sessions};
//!
//! # fn main() -> fscache::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! let store = FileSystemCache::builder(dir.path()).threshold(0).open()?;
//! let sessions = Sessions::new(store, SessionConfig::default())?;
//!
//! // Request 1: no cookie yet.
//! let mut session = sessions.load(None)?;
//! session.insert("user", &"ada")?;
//! let outcome = sessions.save(&mut session)?;
//! let set_cookie = outcome.set_cookie.expect("a new session sends its cookie");
//!
//! // Request 2: the browser sends the cookie back.
//! let cookie = set_cookie.split(';').next().unwrap(); // "session=<id>"
//! let session = sessions.load(Some(cookie))?;
//! assert_eq!(session.get::<String>("user")?.as_deref(), Some("ada"));
//! # Ok(())
//! # }
//! ```

mod config;
mod id;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cache::FileSystemCache;
use crate::error::{Error, Result};
use crate::store::Store;

pub use config::{SameSite, SessionConfig};
pub use id::{ID_BYTES, ID_LEN};

/// Cookie values longer than this are ignored without touching the store.
pub const MAX_COOKIE_VALUE_LEN: usize = 4096;

/// What is stored for a session.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    data: BTreeMap<String, Value>,
    permanent: bool,
    /// Unix ms when the session was created (for the absolute lifetime).
    created: u64,
    /// Unix ms of the last write of the record (0 in records of older versions), so
    /// an idle timeout can slide on reads with a bounded number of rewrites.
    #[serde(default)]
    touched: u64,
}

type Modify = Box<dyn Fn(Option<Value>) -> Result<Option<Value>> + Send>;

/// One recorded change, replayed on the stored record when the session is saved.
enum Change {
    Insert(String, Value),
    Remove(String),
    Clear,
    Update(String, Modify),
}

/// One request's view of a session.
///
/// Reads come from the record loaded at the start of the request; changes are
/// applied to this view at once and recorded, then merged into the stored record by
/// [`Sessions::save`].
pub struct Session {
    id: String,
    /// The id whose record exists in the store (None for a new session).
    stored_id: Option<String>,
    /// An id to delete on save (after `regenerate`).
    retired_id: Option<String>,
    /// The client sent a cookie of this name (so an empty or destroyed session must
    /// expire it).
    had_cookie: bool,
    data: BTreeMap<String, Value>,
    changes: Vec<Change>,
    permanent: bool,
    permanent_changed: bool,
    created: u64,
    /// When the stored record was last written (see `Record::touched`).
    touched: u64,
    modified: bool,
    accessed: Cell<bool>,
    destroyed: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &"<redacted>")
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .field("permanent", &self.permanent)
            .field("modified", &self.modified)
            .field("new", &self.stored_id.is_none())
            .finish()
    }
}

impl Session {
    /// The session id (what the cookie carries, before signing). Treat it as a secret.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether this session was created by this request (nothing was stored yet).
    pub fn is_new(&self) -> bool {
        self.stored_id.is_none()
    }

    /// The value under `key`, deserialized.
    ///
    /// # Errors
    /// [`Error::Deserialize`] if the value does not fit `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.accessed.set(true);
        match self.data.get(key) {
            None => Ok(None),
            Some(v) => T::deserialize(v).map(Some).map_err(|e| Error::Deserialize {
                key: key.to_owned(),
                source: e.into(),
            }),
        }
    }

    /// Stores `value` under `key`.
    ///
    /// # Errors
    /// [`Error::Serialize`] if the value cannot be represented as JSON; the session is
    /// then unchanged.
    pub fn insert<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<()> {
        let value = to_value(key, value)?;
        self.touch();
        self.data.insert(key.to_owned(), value.clone());
        self.changes.push(Change::Insert(key.to_owned(), value));
        Ok(())
    }

    /// Removes `key`; `true` if it was present in this view.
    pub fn remove(&mut self, key: &str) -> bool {
        self.touch();
        self.changes.push(Change::Remove(key.to_owned()));
        self.data.remove(key).is_some()
    }

    /// Removes every key (the session and its id stay).
    pub fn clear(&mut self) {
        self.touch();
        self.data.clear();
        self.changes.push(Change::Clear);
    }

    /// Read-modify-write of one key that survives concurrent requests: `f` is applied
    /// to this view now and replayed on the stored value when the session is saved,
    /// under the store's lock. Returns the new value in this view.
    ///
    /// Use it for counters and carts, where two concurrent requests changing the same
    /// key must both count. `f` runs twice, so it must be a pure function.
    ///
    /// # Errors
    /// [`Error::Deserialize`] / [`Error::Serialize`] when the value does not fit `T`.
    ///
    /// ```
    /// # use fscache::{FileSystemCache, session::{SessionConfig, Sessions}};
    /// # fn main() -> fscache::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let sessions = Sessions::new(FileSystemCache::open(dir.path())?, SessionConfig::default())?;
    /// let mut session = sessions.load(None)?;
    /// let visits = session.update("visits", |n: Option<u64>| Some(n.unwrap_or(0) + 1))?;
    /// assert_eq!(visits, Some(1));
    /// # Ok(())
    /// # }
    /// ```
    pub fn update<T, F>(&mut self, key: &str, f: F) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned,
        F: Fn(Option<T>) -> Option<T> + Send + 'static,
    {
        let key_owned = key.to_owned();
        let modify: Modify = Box::new(move |current: Option<Value>| {
            let current = match current {
                None => None,
                Some(v) => Some(T::deserialize(v).map_err(|e| Error::Deserialize {
                    key: key_owned.clone(),
                    source: e.into(),
                })?),
            };
            f(current).map(|v| to_value(&key_owned, &v)).transpose()
        });
        let new = modify(self.data.get(key).cloned())?;
        self.touch();
        match &new {
            Some(v) => self.data.insert(key.to_owned(), v.clone()),
            None => self.data.remove(key),
        };
        self.changes.push(Change::Update(key.to_owned(), modify));
        new.map(|v| {
            T::deserialize(v).map_err(|e| Error::Deserialize {
                key: key.to_owned(),
                source: e.into(),
            })
        })
        .transpose()
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.accessed.set(true);
        self.data.contains_key(key)
    }

    /// Whether the session holds no keys.
    pub fn is_empty(&self) -> bool {
        self.accessed.set(true);
        self.data.is_empty()
    }

    /// The keys in this view, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.accessed.set(true);
        self.data.keys().map(String::as_str)
    }

    /// Whether the cookie persists (Max-Age/Expires) or ends with the browser session.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// Makes the session permanent or browser-session only.
    pub fn set_permanent(&mut self, permanent: bool) {
        if permanent != self.permanent {
            self.permanent = permanent;
            self.permanent_changed = true;
            self.touch();
        }
    }

    /// Gives the session a new id, keeping its data; the old id's record is deleted
    /// on save. Call it on login (and privilege changes) against session fixation.
    ///
    /// # Errors
    /// [`Error::Io`] if the OS randomness source fails.
    pub fn regenerate(&mut self) -> Result<()> {
        let new_id = id::generate()?;
        if let Some(old) = self.stored_id.take() {
            self.retired_id = Some(old);
        }
        self.id = new_id;
        // The new record is written whole from this view.
        self.changes.clear();
        self.touch();
        Ok(())
    }

    /// Ends the session: the record is deleted and the cookie expired on save. For
    /// logout.
    pub fn destroy(&mut self) {
        self.destroyed = true;
        self.data.clear();
        self.changes.clear();
        self.touch();
    }

    /// Whether this request changed the session.
    pub fn is_modified(&self) -> bool {
        self.modified
    }

    /// Whether this request read or changed the session (then responses vary by cookie).
    pub fn was_accessed(&self) -> bool {
        self.accessed.get() || self.modified
    }

    fn touch(&mut self) {
        self.modified = true;
        self.accessed.set(true);
    }
}

fn to_value<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Value> {
    // Session values are JSON: a NaN or infinity would silently become null.
    crate::finite::check(value).map_err(|e| Error::Serialize {
        key: key.to_owned(),
        source: e.into(),
    })?;
    serde_json::to_value(value).map_err(|e| Error::Serialize {
        key: key.to_owned(),
        source: e.into(),
    })
}

/// What [`Sessions::save`] tells the response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SaveOutcome {
    /// A `Set-Cookie` header value to send, if any.
    pub set_cookie: Option<String>,
    /// Whether the response depends on the cookie (send `Vary: Cookie`).
    pub vary_cookie: bool,
}

/// Loads and saves sessions in a [`Store`].
#[derive(Debug)]
pub struct Sessions<S: Store = FileSystemCache> {
    store: S,
    config: SessionConfig,
}

impl<S: Store> Sessions<S> {
    /// Sessions in `store` with `config`.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration (e.g. a `__Host-` cookie name
    /// without `Secure`).
    pub fn new(store: S, config: SessionConfig) -> Result<Self> {
        config.validate()?;
        Ok(Sessions { store, config })
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    fn now(&self) -> u64 {
        self.config.clock.now_ms()
    }

    fn store_key(&self, id: &str) -> String {
        id::store_key(&self.config.key_prefix, id)
    }

    /// The session named by a request's `Cookie` header (all its cookies), or a new
    /// empty one with a fresh id when the cookie is missing, malformed, wrongly
    /// signed, over [`MAX_COOKIE_VALUE_LEN`], unknown or expired. A client-chosen id
    /// is never adopted. Only a well-formed, correctly signed id reaches the store.
    ///
    /// # Errors
    /// Store failures ([`Error::Io`]); the OS randomness source failing.
    pub fn load(&self, cookie_header: Option<&str>) -> Result<Session> {
        let mut had_cookie = false;
        if let Some(header) = cookie_header {
            for cookie in cookie::Cookie::split_parse(header).flatten() {
                if cookie.name() != self.config.cookie_name {
                    continue;
                }
                had_cookie = true;
                let value = cookie.value();
                if value.len() > MAX_COOKIE_VALUE_LEN {
                    continue;
                }
                let Some(id) = id::verify(value, &self.config.signing_keys) else {
                    continue;
                };
                if let Some(session) = self.load_id(id)? {
                    return Ok(session);
                }
            }
        }
        let mut session = self.new_session()?;
        session.had_cookie = had_cookie;
        Ok(session)
    }

    fn load_id(&self, id: &str) -> Result<Option<Session>> {
        let key = self.store_key(id);
        let record: Record = match self.store.load(&key) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(None),
            // A record that is not ours is not a session (and not an error page).
            Err(Error::Deserialize { .. }) => {
                self.store.remove(&key)?;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if self.past_absolute_lifetime(record.created) {
            self.store.remove(&key)?;
            return Ok(None);
        }
        Ok(Some(Session {
            id: id.to_owned(),
            stored_id: Some(id.to_owned()),
            retired_id: None,
            had_cookie: true,
            data: record.data,
            changes: Vec::new(),
            permanent: record.permanent,
            permanent_changed: false,
            created: record.created,
            touched: record.touched,
            modified: false,
            accessed: Cell::new(false),
            destroyed: false,
        }))
    }

    fn new_session(&self) -> Result<Session> {
        Ok(Session {
            id: id::generate()?,
            stored_id: None,
            retired_id: None,
            had_cookie: false,
            data: BTreeMap::new(),
            changes: Vec::new(),
            permanent: self.config.permanent,
            permanent_changed: false,
            created: self.now(),
            touched: 0,
            modified: false,
            accessed: Cell::new(false),
            destroyed: false,
        })
    }

    /// With an idle timeout, a request that changes nothing still counts as activity:
    /// its expiry slides, by a rewrite of the record at most once per tenth of the
    /// idle window (so reads cost no write most of the time).
    fn idle_refresh_due(&self, session: &Session) -> bool {
        self.config.idle_timeout.is_some_and(|idle| {
            let tenth = (idle.as_millis() as u64 / 10).max(1);
            self.now().saturating_sub(session.touched) >= tenth
        })
    }

    fn past_absolute_lifetime(&self, created: u64) -> bool {
        self.config
            .absolute_lifetime
            .is_some_and(|cap| created.saturating_add(cap.as_millis() as u64) <= self.now())
    }

    /// How long the stored record lives from now; `None` past the absolute lifetime.
    fn ttl(&self, session: &Session) -> Option<Duration> {
        let mut ttl = self.config.lifetime;
        if let Some(idle) = self.config.idle_timeout {
            ttl = ttl.min(idle);
        }
        if let Some(cap) = self.config.absolute_lifetime {
            let end = session.created.saturating_add(cap.as_millis() as u64);
            let left = end.checked_sub(self.now()).filter(|&ms| ms > 0)?;
            ttl = ttl.min(Duration::from_millis(left));
        }
        Some(ttl)
    }

    /// Writes what changed and tells the response what to send.
    ///
    /// - Nothing is written for an unchanged session unless refresh-each-request is
    ///   on (then the expiry slides).
    /// - An empty session is not stored and gets no cookie; a stored one that became
    ///   empty is deleted and its cookie expired.
    /// - Changes are merged into the stored record under the key's lock: concurrent
    ///   requests that change different keys both keep their changes; the same key:
    ///   last writer wins, except through [`Session::update`], which is replayed. A
    ///   session destroyed by a concurrent request stays destroyed.
    ///
    /// # Errors
    /// Store failures; errors of [`Session::update`] closures replayed on the stored
    /// value.
    pub fn save(&self, session: &mut Session) -> Result<SaveOutcome> {
        let vary_cookie = session.was_accessed();
        let outcome = |set_cookie| {
            Ok(SaveOutcome {
                set_cookie,
                vary_cookie,
            })
        };
        if let Some(old) = session.retired_id.take() {
            self.store.remove(&self.store_key(&old))?;
        }
        let Some(ttl) = self.ttl(session).filter(|_| !session.destroyed) else {
            // Destroyed, or past its absolute lifetime.
            if let Some(old) = session.stored_id.take() {
                self.store.remove(&self.store_key(&old))?;
            }
            let cookie = session.had_cookie.then(|| self.expired_cookie());
            session.had_cookie = false;
            reset(session);
            return outcome(cookie);
        };
        let Some(stored_id) = session.stored_id.clone() else {
            // A new (or regenerated) session: written whole, if it holds anything.
            if !session.modified || session.data.is_empty() {
                let cookie =
                    (session.modified && session.had_cookie).then(|| self.expired_cookie());
                reset(session);
                return outcome(cookie);
            }
            let record = Record {
                data: session.data.clone(),
                permanent: session.permanent,
                created: session.created,
                touched: self.now(),
            };
            self.store
                .save(&self.store_key(&session.id), &record, ttl)?;
            session.stored_id = Some(session.id.clone());
            session.had_cookie = true;
            reset(session);
            return outcome(Some(self.cookie(session, ttl)));
        };
        if !session.modified && !self.config.refresh_each_request && !self.idle_refresh_due(session)
        {
            return outcome(None);
        }
        let now = self.now();
        let changes = std::mem::take(&mut session.changes);
        let permanent = session.permanent_changed.then_some(session.permanent);
        let mut failure = None;
        // Whether the record was there to merge into (else it was gone already).
        let mut found = false;
        let merged = self.store.update(
            &self.store_key(&stored_id),
            ttl,
            |current: Option<Record>| {
                // Gone: destroyed (or expired) meanwhile. Never resurrect it.
                let mut record = current?;
                found = true;
                let original = record.clone();
                for change in changes {
                    match change {
                        Change::Insert(k, v) => {
                            record.data.insert(k, v);
                        }
                        Change::Remove(k) => {
                            record.data.remove(&k);
                        }
                        Change::Clear => record.data.clear(),
                        Change::Update(k, f) => match f(record.data.remove(&k)) {
                            Ok(Some(v)) => {
                                record.data.insert(k, v);
                            }
                            Ok(None) => {}
                            Err(e) => {
                                // Leave the stored record as it was.
                                failure = Some(e);
                                return Some(original);
                            }
                        },
                    }
                }
                if let Some(p) = permanent {
                    record.permanent = p;
                }
                record.touched = now;
                (!record.data.is_empty()).then_some(record)
            },
        )?;
        if let Some(e) = failure {
            return Err(e);
        }
        // A sliding server-side expiry needs the cookie's Max-Age to slide with it.
        let slides = self.config.refresh_each_request || self.config.idle_timeout.is_some();
        let resend = session.permanent_changed || (session.permanent && slides);
        match merged {
            Some(record) => {
                session.data = record.data;
                session.permanent = record.permanent;
                reset(session);
                outcome(resend.then(|| self.cookie(session, ttl)))
            }
            None => {
                session.stored_id = None;
                session.data.clear();
                reset(session);
                // Emptied by this request: its cookie goes too. Gone already (destroyed,
                // regenerated or expired by another request): no Set-Cookie, since this
                // answer may arrive after a login's response set a new cookie, which an
                // expiring one would delete in the browser.
                outcome(found.then(|| self.expired_cookie()))
            }
        }
    }

    fn cookie_value(&self, id: &str) -> String {
        match self.config.signing_keys.first() {
            Some(key) => key.sign(id),
            None => id.to_owned(),
        }
    }

    fn base_cookie(&self, value: String) -> cookie::CookieBuilder<'static> {
        let c = &self.config;
        let mut b = cookie::Cookie::build((c.cookie_name.clone(), value))
            .path(c.path.clone())
            .http_only(c.http_only)
            .secure(c.secure)
            .same_site(match c.same_site {
                SameSite::Strict => cookie::SameSite::Strict,
                SameSite::Lax => cookie::SameSite::Lax,
                SameSite::None => cookie::SameSite::None,
            });
        if let Some(d) = &c.domain {
            b = b.domain(d.clone());
        }
        b
    }

    fn cookie(&self, session: &Session, ttl: Duration) -> String {
        let mut b = self.base_cookie(self.cookie_value(&session.id));
        if session.permanent {
            let secs = ttl.as_secs().min(i64::MAX as u64) as i64;
            let expires = cookie::time::OffsetDateTime::from_unix_timestamp(
                (self.now() / 1000) as i64 + secs,
            )
            .unwrap_or(cookie::time::OffsetDateTime::UNIX_EPOCH);
            b = b
                .max_age(cookie::time::Duration::seconds(secs))
                .expires(expires);
        }
        b.build().to_string()
    }

    fn expired_cookie(&self) -> String {
        self.base_cookie(String::new())
            .max_age(cookie::time::Duration::ZERO)
            .expires(cookie::time::OffsetDateTime::UNIX_EPOCH)
            .build()
            .to_string()
    }
}

fn reset(session: &mut Session) {
    session.changes.clear();
    session.modified = false;
    session.permanent_changed = false;
    session.destroyed = false;
}
