//! Server-side sessions on any [`Store`] — by default a [`FileSystemCache`].
//!
//! The cookie carries only a random id (optionally signed); the data lives in the
//! store under `prefix + blake3(id)`, so reading the cache directory reveals no live
//! cookie. A request's changes are recorded key by key. On save, the view is written
//! with one compare-and-set against the version the request loaded; if another
//! request wrote meanwhile, the recorded changes are replayed on the new record with
//! the store's atomic merge ([`Store::update`]: under a lock for the file cache,
//! SQLite and PostgreSQL, re-run after a lost compare-and-set for Redis and
//! Memcached). So two concurrent requests of one session that change different keys
//! both keep their changes, [`Session::update`] even merges concurrent changes of the
//! same key, and a session destroyed by one request is never brought back by
//! another. The store is any [`Store`]: pick one at run time with
//! [`store::open`](crate::store::open) and use `Sessions<Box<dyn Store>>`.
//!
//! # Choosing the store's threshold
//!
//! Open the store with `threshold(0)` (unbounded) for sessions. A threshold evicts
//! the entries nearest to expiry once it is passed, and for sessions that means
//! logging out users who are still active: with the cache default of 500, the 501st
//! visitor logs somebody out. Expired sessions do not need a threshold to go: writes
//! run bounded, adaptive expiry steps (see
//! [`expiry_budget`](crate::FileSystemCacheBuilder::expiry_budget)), so abandoned
//! sessions' files stay a fraction of the live ones (50 sessions expired an hour ago
//! were all gone within 50 new logins), and [`FileSystemCache::prune_step`] does the
//! same from a background
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
pub(crate) mod users;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cache::FileSystemCache;
use crate::error::{Error, Result};
use crate::store::calls::{self, Calls, SyncCalls};
use crate::store::{Merge, Store, Version};

pub use config::{DEFAULT_REFRESH_GRANULARITY, SameSite, SessionConfig};
pub use id::{ID_BYTES, ID_LEN};
pub use users::{ENDED_GRACE, MAX_LABEL_LEN, MAX_USER_LEN, MAX_USER_SESSIONS, UserSession};

/// A fresh session id: [`ID_BYTES`] bytes from the OS random source, as
/// [`ID_LEN`] characters of URL-safe base64 (what `Sessions` and the actix adapter
/// issue).
///
/// # Errors
/// [`Error::Io`] if the OS random source fails.
pub fn new_id() -> Result<String> {
    id::generate()
}

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
    /// The ids of the last [`RECENT_SAVES`] saves that replayed
    /// [`Session::update`] closures into this record, so that a save retried after
    /// a lost reply finds its own id and does not replay them twice. Absent from
    /// records no such save wrote.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    saves: Vec<u64>,
    /// The user this session is tied to ([`Session::set_user`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    /// Its label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    /// Unix ms when this session last renewed its user index's expiry.
    #[serde(default, skip_serializing_if = "is_zero")]
    indexed: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What a merge sets besides the replayed changes.
struct Replay {
    /// The permanent flag, if this request changed it.
    permanent: Option<bool>,
    /// The write time (`Record::touched`).
    now: u64,
    /// This save's id, if it replays update closures (see `Record::saves`).
    save_id: Option<u64>,
    /// The user tie to write, if this request set it (`Session::set_user`).
    user: Option<(String, Option<String>)>,
    /// Whether this request's `clear` untied the user.
    untie: bool,
    /// The index renewal stamp to write (`Record::indexed`).
    indexed: u64,
}

impl Replay {
    /// What a save of `session` at `now` sets besides its changes (its save id as
    /// [`Session::save_id_for_updates`] drew it).
    fn of(session: &Session, now: u64) -> Replay {
        Replay {
            permanent: session.permanent_changed.then_some(session.permanent),
            now,
            save_id: session.save_id,
            user: session
                .user_changed
                .then(|| session.user.clone().map(|u| (u, session.label.clone())))
                .flatten(),
            untie: session.untied.is_some(),
            indexed: session.indexed,
        }
    }
}

/// How many save ids a record remembers (see `Record::saves`): a retried save is
/// recognized as long as fewer than this many other saves that replay updates
/// landed on the same session in between.
const RECENT_SAVES: usize = 8;

/// `saves` with `id` appended, the oldest dropped past [`RECENT_SAVES`].
fn remember_save(saves: &[u64], id: u64) -> Vec<u64> {
    let skip = (saves.len() + 1).saturating_sub(RECENT_SAVES);
    saves.iter().copied().skip(skip).chain([id]).collect()
}

type Modify = Box<dyn Fn(Option<Value>) -> Result<Option<Value>> + Send>;

/// One recorded change, replayed on the stored record when the session is saved.
enum Change {
    Insert(String, Value),
    Remove(String),
    Clear,
    /// In a mutex only so that `Change` is `Sync` (the merge that replays it is
    /// `Send`, for async stores); it is never contended.
    Update(String, Mutex<Modify>),
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
    /// The version of the stored record this view was loaded from: a save that
    /// finds it unchanged writes the view with one compare-and-set.
    version: Option<Version>,
    /// An id to delete on save (after `regenerate`).
    retired_id: Option<String>,
    /// A remove of `retired_id` failed: it may have happened (see `save_with`).
    retire_unsure: bool,
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
    /// The loaded record's save ids (see `Record::saves`).
    saves: Vec<u64>,
    /// This view's save id, drawn at its first save attempt that replays
    /// [`Session::update`] closures and kept until a save succeeds, so that every
    /// retry of that save carries the same id.
    save_id: Option<u64>,
    modified: bool,
    accessed: Cell<bool>,
    destroyed: bool,
    /// The cookie names a live record this build cannot read (a Flask session
    /// holding a set, say): this view is empty and never saved, and the record and
    /// the cookie are left as they are.
    foreign: bool,
    /// The user this session is tied to, and its label (see `users`).
    user: Option<String>,
    label: Option<String>,
    /// `set_user` was called: the save adds the session to the user's index.
    user_changed: bool,
    /// The user a `clear` or `destroy` of this request untied: the save takes the
    /// session out of that user's index.
    untied: Option<String>,
    /// The handle this save put in the index, until the read after the record's
    /// write confirmed it was not ended meanwhile (kept across retries).
    pending_index: Option<String>,
    /// When the stored record last renewed the user index's expiry.
    indexed: u64,
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

    /// Whether the request's cookie names a live record that this process cannot
    /// read: in Flask mode, a Flask session holding a value fscache does not
    /// represent (a `set`, `Markup`, a `UUID`, a timezone-aware datetime). Such a
    /// session reads as empty for this request, and [`Sessions::save`] leaves both
    /// the Flask record and the browser's cookie untouched, whatever the request
    /// changed (it is logged), so the Flask app's login survives. An app can check
    /// this to tell the user to continue on the Flask side.
    pub fn is_foreign(&self) -> bool {
        self.foreign
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

    /// Removes every key (the session and its id stay) and unties the session from
    /// its user ([`set_user`](Self::set_user)).
    pub fn clear(&mut self) {
        self.touch();
        self.data.clear();
        self.changes.push(Change::Clear);
        self.untie();
    }

    /// Drops the user tie (clear, destroy): the save takes the session out of the
    /// user's index.
    fn untie(&mut self) {
        if let Some(user) = self.user.take() {
            self.untied = Some(user);
        }
        self.label = None;
        self.user_changed = false;
    }

    /// Read-modify-write of one key that survives concurrent requests: `f` is applied
    /// to this view now and, if another request wrote the session meanwhile, replayed
    /// on the stored value when the session is saved, atomically. Returns the new
    /// value in this view.
    ///
    /// Use it for counters and carts, where two concurrent requests changing the same
    /// key must both count. `f` may run several times (on an optimistic store, once
    /// per lost race), so it must be a pure function.
    ///
    /// # Errors
    /// [`Error::Deserialize`] / [`Error::Serialize`] when the value does not fit `T`
    /// (here, or at the save when the stored value does not); at the save,
    /// [`Error::Callback`] when `f` panics replayed on the stored value (nothing of
    /// this save is written).
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
        self.changes.push(Change::Update(key.to_owned(), Mutex::new(modify)));
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
        self.version = None;
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
        self.untie();
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

    /// The id of this view's save if it replays update closures: drawn once and
    /// kept until a save succeeds, so every retry carries the same one, which the
    /// record remembers (a retry after a lost reply finds it and does not replay
    /// the closures a second time).
    fn save_id_for_updates(&mut self) -> Option<u64> {
        if !self.changes.iter().any(|c| matches!(c, Change::Update(..))) {
            return None;
        }
        Some(*self.save_id.get_or_insert_with(id::save_id))
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

impl Record {
    fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| Error::Serialize {
            key: "<session record>".to_owned(),
            source: e.into(),
        })
    }

    /// `None` for bytes that are not a session record (foreign or damaged data under
    /// a session key is not a session).
    fn decode(bytes: &[u8]) -> Option<Record> {
        serde_json::from_slice(bytes).ok()
    }
}

/// What a session id's store key holds.
enum Lookup {
    Found(Box<Session>),
    Absent,
    /// A live record this process cannot read (see [`Session::is_foreign`]); only
    /// Flask mode has such records.
    #[cfg_attr(not(feature = "flask"), allow(dead_code))]
    Foreign,
}

/// How many fresh ids a new session tries before giving up when the store already
/// holds each one (with 256-bit random ids, a second try never happens in practice).
const INSERT_ATTEMPTS: u32 = 4;

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

    /// The store key of the session with id `id`: the key prefix (default
    /// `session:`) and the blake3 hash of the id in hex, so the store never shows a
    /// live cookie. For operators and tests that look a session up in the store.
    ///
    /// With [`SessionConfig::flask_session`] the key is the prefix and the id itself,
    /// as Flask-Session looks records up.
    pub fn store_key(&self, id: &str) -> String {
        #[cfg(feature = "flask")]
        if self.config.flask.is_some() {
            return format!("{}{id}", self.config.key_prefix);
        }
        id::store_key(&self.config.key_prefix, id)
    }

    /// The session id in a cookie value, if it is well formed and correctly signed.
    fn cookie_id<'a>(&self, value: &'a str) -> Option<&'a str> {
        #[cfg(feature = "flask")]
        if self.config.flask.is_some() {
            let id = if self.config.flask_keys.is_empty() {
                value
            } else {
                crate::flask::signer::verify(value, &self.config.flask_keys)?
            };
            return id::is_flask_id(id).then_some(id);
        }
        id::verify(value, &self.config.signing_keys)
    }

    /// Whether the record stored under the new session id `id` is the one an
    /// insert of `fields` wrote (all but its write time, which a retry sets anew).
    async fn holds_insert<C: Calls>(&self, calls: &C, id: &str, fields: &Record) -> Result<bool> {
        let Some(stored) = calls.load(&self.store_key(id)).await? else {
            return Ok(false);
        };
        let Some(r) = self.decode_record(&stored.value) else {
            return Ok(false);
        };
        // Flask's records hold only the data and the permanent flag.
        #[cfg(feature = "flask")]
        let flask = self.config.flask.is_some();
        #[cfg(not(feature = "flask"))]
        let flask = false;
        Ok(r.data == fields.data
            && r.permanent == fields.permanent
            && (flask
                || (r.created == fields.created
                    && r.saves.is_empty()
                    && r.user == fields.user
                    && r.label == fields.label
                    && r.indexed == fields.indexed)))
    }

    /// A stored record, or `None` for bytes that are not one.
    fn decode_record(&self, bytes: &[u8]) -> Option<Record> {
        #[cfg(feature = "flask")]
        if let Some(format) = self.config.flask {
            let mut data = match crate::flask::decode_session(format, bytes) {
                Ok(d) => d,
                Err(e) => {
                    log::warn!(
                        "fscache: a Flask session record does not decode ({e}); read as no \
                         session and left for Flask"
                    );
                    return None;
                }
            };
            let permanent = data.remove("_permanent").and_then(|v| v.as_bool()) == Some(true);
            return Some(Record {
                data: data.into_iter().collect(),
                permanent,
                created: 0,
                touched: 0,
                saves: Vec::new(),
                user: None,
                label: None,
                indexed: 0,
            });
        }
        Record::decode(bytes)
    }

    fn encode_record(&self, record: &Record) -> Result<Vec<u8>> {
        #[cfg(feature = "flask")]
        if let Some(format) = self.config.flask {
            // Flask keeps session.permanent in the dict.
            let permanent = ("_permanent".to_owned(), Value::Bool(true));
            let flag = record.permanent.then_some((&permanent.0, &permanent.1));
            let pairs = record.data.iter().chain(flag);
            return crate::flask::encode_session(format, pairs).map_err(|e| Error::Serialize {
                key: "<Flask session record>".to_owned(),
                source: e.into(),
            });
        }
        record.encode()
    }

    /// The session named by a request's `Cookie` header (all its cookies), or a new
    /// empty one with a fresh id when the cookie is missing, malformed, wrongly
    /// signed, over [`MAX_COOKIE_VALUE_LEN`], unknown or expired. A client-chosen id
    /// is never adopted. Only a well-formed, correctly signed id reaches the store.
    ///
    /// # Errors
    /// Store failures ([`Error::Io`]); the OS randomness source failing.
    pub fn load(&self, cookie_header: Option<&str>) -> Result<Session> {
        calls::ready(self.load_with(&SyncCalls(&self.store), cookie_header))
    }

    /// [`load`](Self::load) with the store calls made through `calls`.
    pub(crate) async fn load_with<C: Calls>(
        &self,
        calls: &C,
        cookie_header: Option<&str>,
    ) -> Result<Session> {
        let mut had_cookie = false;
        let mut foreign = false;
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
                let Some(id) = self.cookie_id(value) else {
                    continue;
                };
                match self.load_id(calls, id).await? {
                    Lookup::Found(session) => return Ok(*session),
                    Lookup::Absent => {}
                    Lookup::Foreign => foreign = true,
                }
            }
        }
        let mut session = self.new_session()?;
        session.had_cookie = had_cookie;
        session.foreign = foreign;
        Ok(session)
    }

    async fn load_id<C: Calls>(&self, calls: &C, id: &str) -> Result<Lookup> {
        let key = self.store_key(id);
        let Some(stored) = calls.load(&key).await? else {
            return Ok(Lookup::Absent);
        };
        let Some(record) = self.decode_record(&stored.value) else {
            // Flask's record with a value fscache cannot represent (a set, a class
            // instance): no session here, and Flask's record and cookie are Flask's.
            #[cfg(feature = "flask")]
            if self.config.flask.is_some() {
                return Ok(Lookup::Foreign);
            }
            // Not a record of ours: not a session (and not an error page).
            log::warn!(
                "fscache: {} store: the value under a session key is not a session \
                 record; treated as no session and removed",
                calls.engine()
            );
            calls.remove(&key).await?;
            return Ok(Lookup::Absent);
        };
        if self.past_absolute_lifetime(record.created) {
            calls.remove(&key).await?;
            return Ok(Lookup::Absent);
        }
        Ok(Lookup::Found(Box::new(Session {
            id: id.to_owned(),
            stored_id: Some(id.to_owned()),
            version: Some(stored.version),
            retired_id: None,
            retire_unsure: false,
            had_cookie: true,
            data: record.data,
            changes: Vec::new(),
            permanent: record.permanent,
            permanent_changed: false,
            created: record.created,
            touched: record.touched,
            saves: record.saves,
            save_id: None,
            modified: false,
            accessed: Cell::new(false),
            destroyed: false,
            foreign: false,
            user: record.user,
            label: record.label,
            user_changed: false,
            untied: None,
            pending_index: None,
            indexed: record.indexed,
        })))
    }

    fn new_session(&self) -> Result<Session> {
        Ok(Session {
            id: id::generate()?,
            stored_id: None,
            version: None,
            retired_id: None,
            retire_unsure: false,
            had_cookie: false,
            data: BTreeMap::new(),
            changes: Vec::new(),
            permanent: self.config.permanent,
            permanent_changed: false,
            created: self.now(),
            touched: 0,
            saves: Vec::new(),
            save_id: None,
            modified: false,
            accessed: Cell::new(false),
            destroyed: false,
            foreign: false,
            user: None,
            label: None,
            user_changed: false,
            untied: None,
            pending_index: None,
            indexed: 0,
        })
    }

    /// Whether a request that changes nothing slides the expiry: with
    /// refresh-each-request once `refresh_granularity` of the window (the lifetime,
    /// or the idle timeout if shorter) has passed since the record was last written;
    /// without it, under an idle timeout only, once a tenth of the idle window has.
    /// So reads cost no write most of the time.
    fn refresh_due(&self, session: &Session) -> bool {
        let c = &self.config;
        let every = if c.refresh_each_request {
            let window = c.idle_timeout.map_or(c.lifetime, |idle| idle.min(c.lifetime));
            (window.as_millis() as f64 * c.refresh_granularity) as u64
        } else if let Some(idle) = c.idle_timeout {
            idle.as_millis() as u64 / 10
        } else {
            return false;
        };
        self.now().saturating_sub(session.touched) >= every.max(1)
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
    ///   on (then the expiry slides with [`Store::touch`]: in place on the engines,
    ///   a rewrite of the same record on the file cache).
    /// - An empty session is not stored and gets no cookie; a stored one that became
    ///   empty is deleted and its cookie expired.
    /// - A new session is written with [`Store::insert`] (never over a stored one; a
    ///   taken id, which 256 random bits make a theoretical case, gets a new one).
    /// - Changes are written with one [`Store::compare_and_set`] against the loaded
    ///   version, or, if another request wrote meanwhile, merged into the stored
    ///   record with [`Store::update`]: concurrent requests that change different
    ///   keys both keep their changes; the same key: last writer wins, except through
    ///   [`Session::update`], which is replayed. A session destroyed by a concurrent
    ///   request stays destroyed.
    /// - A [`Session::regenerate`]d session is stored under its new id after the old
    ///   id's record is removed; if another request removed that record meanwhile (a
    ///   logout, or a login of the same session), nothing is stored and no cookie is
    ///   sent, so a logout is not undone by a request that regenerates after it, and
    ///   of two concurrent logins the first one's cookie stands.
    ///
    /// # Retrying
    /// `save` may be retried after an error: the `Session` keeps everything a save
    /// needs (its recorded changes, the loaded version, the id retired by
    /// [`Session::regenerate`], the id a [`Session::destroy`] ends) until the store
    /// call that acts on it has succeeded, so a retry stores the change, completes
    /// the logout and deletes the pre-login id — or fails again. A `Session` dropped
    /// after an error loses only its own request's changes; nothing stored by other
    /// requests is touched. If the failed call did reach the store and only its
    /// reply was lost (a connection dropped after the engine applied it), the retry
    /// finds the record changed and merges: inserts, removes and `clear` land once
    /// more with the same result, and [`Session::update`] closures are not run
    /// again: a save that replays them carries a random save id, the same on every
    /// retry of that save, which the record keeps (the last 8), so the retry finds
    /// its own write and leaves it (a counter is bumped once). Flask mode is the
    /// exception: its records are Flask-Session's format, which has no room for the
    /// ids, so there a retried save can run an update closure twice.
    ///
    /// # Errors
    /// Store failures ([`Error::Engine`] says whether a retry can help;
    /// [`Error::Conflict`] when an optimistic store lost every race); errors of
    /// [`Session::update`] closures replayed on the stored value (nothing is written
    /// then).
    pub fn save(&self, session: &mut Session) -> Result<SaveOutcome> {
        calls::ready(self.save_with(&SyncCalls(&self.store), session))
    }

    /// [`save`](Self::save) with the store calls made through `calls`.
    pub(crate) async fn save_with<C: Calls>(
        &self,
        calls: &C,
        session: &mut Session,
    ) -> Result<SaveOutcome> {
        let vary_cookie = session.was_accessed();
        let outcome = |set_cookie| {
            Ok(SaveOutcome {
                set_cookie,
                vary_cookie,
            })
        };
        if session.foreign {
            if session.modified {
                log::warn!(
                    "fscache: a request changed a session whose stored record this process \
                     cannot read (Session::is_foreign); nothing saved, the record and the \
                     cookie are left for the app that wrote them"
                );
            }
            reset(session);
            return outcome(None);
        }
        #[cfg(feature = "flask")]
        if self.config.flask.is_some() && (session.user.is_some() || session.untied.is_some()) {
            return Err(Error::Config {
                message: "Session::set_user: Flask mode keeps no user index (its records \
                          are Flask-Session's, written by Flask code that keeps none)"
                    .to_owned(),
            });
        }
        // Every piece of state below is cleared only after the store call that acts
        // on it returned Ok, so a save that failed can be retried with the same
        // Session and does what the first attempt did not finish.
        self.index_before_write(calls, session).await?;
        if let Some(old) = session.retired_id.clone() {
            let existed = match calls.remove(&self.store_key(&old)).await {
                Ok(existed) => existed,
                Err(e) => {
                    // The remove may have happened and only its reply been lost:
                    // a retry that finds the record gone cannot tell it from a
                    // concurrent logout, and takes it for this save's own remove.
                    session.retire_unsure = true;
                    return Err(e);
                }
            };
            session.retired_id = None;
            if !existed && !session.retire_unsure && !session.destroyed {
                // The session this request regenerated was destroyed (a logout),
                // regenerated (a login) or expired by another request meanwhile: its
                // data must not come back under a new id. No Set-Cookie either: this
                // answer may arrive after that request's, whose cookie must stand.
                log::info!(
                    "fscache: a regenerate of a session that another request ended \
                     meanwhile was not stored"
                );
                return self.gone(session, false, vary_cookie);
            }
        }
        let Some(ttl) = self.ttl(session).filter(|_| !session.destroyed) else {
            // Destroyed, or past its absolute lifetime.
            if let Some(old) = &session.stored_id {
                calls.remove(&self.store_key(old)).await?;
                // A logout leaves the user's index (record first: a crash between
                // leaves an entry with no session, which listings drop).
                if let Some(user) = &session.untied {
                    self.users().index_logout(calls, user, &self.handle(old)).await?;
                }
                session.stored_id = None;
                session.version = None;
            }
            session.untied = None;
            session.pending_index = None;
            let cookie = session.had_cookie.then(|| self.expired_cookie());
            session.had_cookie = false;
            reset(session);
            return outcome(cookie);
        };
        let Some(stored_id) = session.stored_id.clone() else {
            // A new (or regenerated) session: written whole, if it holds anything.
            if !session.modified || (session.data.is_empty() && session.user.is_none()) {
                let cookie =
                    (session.modified && session.had_cookie).then(|| self.expired_cookie());
                reset(session);
                return outcome(cookie);
            }
            let fields = Record {
                data: session.data.clone(),
                permanent: session.permanent,
                created: session.created,
                touched: self.now(),
                saves: Vec::new(),
                user: session.user.clone(),
                label: session.label.clone(),
                indexed: session.indexed,
            };
            let record = self.encode_record(&fields)?;
            // Insert only if absent: a new session never overwrites a stored one.
            let mut attempts = 0;
            while !calls
                .insert(&self.store_key(&session.id), &record, ttl)
                .await?
            {
                // The id is random and was never sent in a cookie: a record under it
                // that holds this session is this save's own, from an attempt whose
                // reply was lost (a retry; or an engine client that sent the insert
                // again). Taken as written, not stored again under a new id, which
                // would leave it behind until its TTL.
                if self.holds_insert(calls, &session.id, &fields).await? {
                    break;
                }
                attempts += 1;
                if attempts == INSERT_ATTEMPTS {
                    return Err(Error::Conflict {
                        key: "<new session>".to_owned(),
                        attempts,
                    });
                }
                session.id = id::generate()?;
            }
            session.stored_id = Some(session.id.clone());
            // The next save of this view merges (its version is unknown here).
            session.version = None;
            session.had_cookie = true;
            reset(session);
            if !self.confirm_index(calls, session).await? {
                return self.gone(session, false, vary_cookie);
            }
            return outcome(Some(self.cookie(session, ttl)));
        };
        let key = self.store_key(&stored_id);
        if !session.modified && !self.refresh_due(session) {
            if session.untied.is_some() && session.pending_index.is_none() {
                // A retry after the untie's index update failed.
                self.confirm_index(calls, session).await?;
                return outcome(None);
            }
            if session.pending_index.is_some() {
                // A retry after the read that follows a login's write failed.
                if !self.confirm_index(calls, session).await? {
                    return self.gone(session, false, vary_cookie);
                }
                return outcome(Some(self.cookie(session, ttl)));
            }
            return outcome(None);
        }
        // Flask-Session's records hold no write time: only the expiry slides, on
        // every request, as Flask-Session does. Otherwise an unchanged record due for
        // a refresh is rewritten with its new write time (below), so the next
        // requests know the expiry has slid.
        #[cfg(feature = "flask")]
        if !session.modified && self.config.flask.is_some() {
            if !calls.touch(&key, ttl).await? {
                return self.gone(session, false, vary_cookie);
            }
            let resend = session.permanent;
            return outcome(resend.then(|| self.cookie(session, ttl)));
        }
        let now = self.now();
        let save_id = session.save_id_for_updates();
        // Fast path: the stored record is still the one this view was loaded from,
        // so the view (loaded record + this request's changes) is the merge.
        let merged = match session.version.clone() {
            Some(version) => {
                let record = Record {
                    data: session.data.clone(),
                    permanent: session.permanent,
                    created: session.created,
                    touched: now,
                    saves: match save_id {
                        Some(id) => remember_save(&session.saves, id),
                        None => session.saves.clone(),
                    },
                    user: session.user.clone(),
                    label: session.label.clone(),
                    indexed: session.indexed,
                };
                let keep = !record.data.is_empty() || record.user.is_some();
                let new = keep.then(|| self.encode_record(&record)).transpose()?;
                if calls
                    .compare_and_set(&key, &version, new.as_deref(), ttl)
                    .await?
                {
                    Some(keep.then_some(record))
                } else {
                    // Someone else wrote: the version is stale for good (a retry of
                    // this save goes straight to the merge).
                    session.version = None;
                    None
                }
            }
            None => None,
        };
        let (merged, found) = match merged {
            Some(record) => (record, true),
            None => {
                let how = Replay::of(session, now);
                self.merge(calls, &key, ttl, &[(&session.changes, how)]).await?
            }
        };
        session.version = None;
        // A sliding server-side expiry needs the cookie's Max-Age to slide with it.
        let slides = self.config.refresh_each_request || self.config.idle_timeout.is_some();
        let resend = session.permanent_changed || (session.permanent && slides);
        match merged {
            Some(record) => {
                adopt(session, record);
                if !self.confirm_index(calls, session).await? {
                    return self.gone(session, false, vary_cookie);
                }
                outcome(resend.then(|| self.cookie(session, ttl)))
            }
            None => self.gone(session, found, vary_cookie),
        }
    }

    /// Saves views of one or more sessions, in order, as [`save`](Self::save) would
    /// one after the other, with one outcome per view. Consecutive views of one
    /// stored session that only change its data (no login, logout, regenerate or
    /// destroy among them) are merged with one atomic update of the store: one
    /// round trip for the lot where [`save`](Self::save) would take one each. This
    /// is how the axum layer writes the saves that concurrent requests of one
    /// session queue while a save of that session is under way.
    ///
    /// If that update fails, each of its views is saved alone, so a view whose
    /// [`Session::update`] closure fails gets the error and the others are kept. A
    /// save that failed can be retried with the same view, as with `save`.
    #[cfg(feature = "axum")]
    pub(crate) async fn save_all_with<C: Calls>(
        &self,
        calls: &C,
        sessions: &mut [Session],
    ) -> Vec<Result<SaveOutcome>> {
        let mut outcomes = Vec::with_capacity(sessions.len());
        let mut rest = sessions;
        while !rest.is_empty() {
            let id = rest[0].stored_id.as_deref();
            let run = match rest.len() {
                1 => 1,
                _ => rest
                    .iter()
                    .take_while(|s| id.is_some() && s.stored_id.as_deref() == id && self.batchable(s))
                    .count()
                    .max(1),
            };
            let (batch, tail) = rest.split_at_mut(run);
            rest = tail;
            if run > 1 {
                if let Ok(done) = self.merge_batch(calls, batch).await {
                    outcomes.extend(done.into_iter().map(Ok));
                    continue;
                }
                log::debug!("fscache: a merged save of {run} requests failed; saving each alone");
            }
            for session in batch {
                outcomes.push(self.save_with(calls, session).await);
            }
        }
        outcomes
    }

    /// [`save_all_with`](Self::save_all_with) through the sync store.
    #[cfg(feature = "axum")]
    pub(crate) fn save_all(&self, sessions: &mut [Session]) -> Result<Vec<Result<SaveOutcome>>> {
        calls::ready(async { Ok(self.save_all_with(&SyncCalls(&self.store), sessions).await) })
    }

    /// Whether `session`'s save is a plain merge into its stored record, with
    /// nothing to do before or after it (see [`save_all_with`](Self::save_all_with)).
    #[cfg(feature = "axum")]
    fn batchable(&self, session: &Session) -> bool {
        #[cfg(feature = "flask")]
        if self.config.flask.is_some() {
            return false;
        }
        session.stored_id.is_some()
            && !session.foreign
            && !session.destroyed
            && session.retired_id.is_none()
            && !session.user_changed
            && session.untied.is_none()
            && session.pending_index.is_none()
            && (session.modified || self.refresh_due(session))
            && (session.user.is_none() || !self.index_renewal_due(session.indexed))
            && self.ttl(session).is_some()
    }

    /// Merges the changes of `sessions` (all [`batchable`](Self::batchable), of one
    /// stored session, in order) with one atomic update; the stored expiry is the
    /// last view's, as if each had been saved in turn.
    #[cfg(feature = "axum")]
    async fn merge_batch<C: Calls>(
        &self,
        calls: &C,
        sessions: &mut [Session],
    ) -> Result<Vec<SaveOutcome>> {
        let (Some(first), Some(last)) = (sessions.first(), sessions.last()) else {
            return Ok(Vec::new());
        };
        let (Some(id), Some(ttl)) = (first.stored_id.as_deref(), self.ttl(last)) else {
            return Err(Error::callback(std::io::Error::other(
                "merge_batch: a view that is not batchable",
            )));
        };
        let key = self.store_key(id);
        let now = self.now();
        for session in sessions.iter_mut() {
            session.save_id_for_updates();
        }
        let plays: Vec<(&[Change], Replay)> = sessions
            .iter()
            .map(|s| (&s.changes[..], Replay::of(s, now)))
            .collect();
        let (merged, found) = self.merge(calls, &key, ttl, &plays).await?;
        drop(plays);
        let slides = self.config.refresh_each_request || self.config.idle_timeout.is_some();
        let mut outcomes = Vec::with_capacity(sessions.len());
        for session in sessions.iter_mut() {
            let vary_cookie = session.was_accessed();
            session.version = None;
            let resend = session.permanent_changed || (session.permanent && slides);
            let Some(record) = &merged else {
                outcomes.push(self.gone(session, found, vary_cookie)?);
                continue;
            };
            adopt(session, record.clone());
            let set_cookie = resend
                .then(|| self.ttl(session))
                .flatten()
                .map(|ttl| self.cookie(session, ttl));
            outcomes.push(SaveOutcome {
                set_cookie,
                vary_cookie,
            });
        }
        Ok(outcomes)
    }

    /// Replays this request's changes on the stored record with the store's atomic
    /// merge (run again by optimistic stores when another writer wins). Returns the
    /// record stored afterwards (`None`: removed or gone) and whether there was one
    /// to merge into.
    async fn merge<C: Calls>(
        &self,
        calls: &C,
        key: &str,
        ttl: Duration,
        plays: &[(&[Change], Replay)],
    ) -> Result<(Option<Record>, bool)> {
        let mut found = false;
        let mut result = None;
        let mut replay = |current: Option<&[u8]>| {
            // Gone (destroyed or expired meanwhile) or not a record: never resurrect.
            found = false;
            result = None;
            let Some(mut record) = current.and_then(|b| self.decode_record(b)) else {
                return Ok(Merge::Keep);
            };
            found = true;
            let mut replayed = false;
            for (changes, how) in plays {
                replayed |= replay_onto(&mut record, changes, how)?;
            }
            if !replayed {
                result = Some(record);
                return Ok(Merge::Keep);
            }
            if record.data.is_empty() && record.user.is_none() {
                return Ok(Merge::Delete);
            }
            let bytes = self.encode_record(&record)?;
            result = Some(record);
            Ok(Merge::Put(bytes))
        };
        calls.update(key, ttl, &mut replay).await?;
        Ok((result, found))
    }

    /// The stored record is gone after a save: emptied by this request (`found`: its
    /// cookie goes too), or destroyed, regenerated or expired by another request (no
    /// Set-Cookie, since this answer may arrive after a login's response set a new
    /// cookie, which an expiring one would delete in the browser).
    fn gone(&self, session: &mut Session, found: bool, vary_cookie: bool) -> Result<SaveOutcome> {
        session.stored_id = None;
        session.version = None;
        session.data.clear();
        session.user = None;
        session.label = None;
        session.untied = None;
        session.pending_index = None;
        reset(session);
        Ok(SaveOutcome {
            set_cookie: found.then(|| self.expired_cookie()),
            vary_cookie,
        })
    }

    fn cookie_value(&self, id: &str) -> String {
        #[cfg(feature = "flask")]
        if self.config.flask.is_some() {
            return match self.config.flask_keys.first() {
                Some(key) => key.sign(id),
                None => id.to_owned(),
            };
        }
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

/// Replays one save's changes (`how` says what else it sets) onto `record`.
/// Returns `false`, changing nothing, when that save already landed (an earlier
/// attempt whose reply was lost: replaying it would apply its updates twice).
fn replay_onto(record: &mut Record, changes: &[Change], how: &Replay) -> Result<bool> {
    if let Some(id) = how.save_id
        && record.saves.contains(&id)
    {
        return Ok(false);
    }
    for change in changes {
        match change {
            Change::Insert(k, v) => {
                record.data.insert(k.clone(), v.clone());
            }
            Change::Remove(k) => {
                record.data.remove(k);
            }
            Change::Clear => {
                record.data.clear();
                if how.untie {
                    record.user = None;
                    record.label = None;
                }
            }
            Change::Update(k, f) => {
                let f = f.lock().unwrap_or_else(PoisonError::into_inner);
                let current = record.data.remove(k);
                // A closure that panics fails its save (and, in a merged write of
                // several saves, only its own: see `save_all_with`), not the
                // thread or the task that writes the others.
                let replayed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(current)))
                    .map_err(|_| {
                        Error::callback(std::io::Error::other(format!(
                            "the Session::update closure of key {k:?} panicked when \
                             replayed on the stored value"
                        )))
                    })?;
                if let Some(v) = replayed? {
                    record.data.insert(k.clone(), v);
                }
            }
        }
    }
    if let Some(p) = how.permanent {
        record.permanent = p;
    }
    record.touched = how.now;
    if let Some(id) = how.save_id {
        record.saves = remember_save(&record.saves, id);
    }
    if let Some((u, l)) = &how.user {
        record.user = Some(u.clone());
        record.label = l.clone();
    }
    record.indexed = record.indexed.max(how.indexed);
    Ok(true)
}

/// `session` after a save wrote `record`: its view is the record, with no
/// changes pending.
fn adopt(session: &mut Session, record: Record) {
    session.data = record.data;
    session.permanent = record.permanent;
    session.touched = record.touched;
    session.saves = record.saves;
    session.user = record.user;
    session.label = record.label;
    session.indexed = record.indexed;
    reset(session);
}

fn reset(session: &mut Session) {
    session.save_id = None;
    session.changes.clear();
    session.modified = false;
    session.permanent_changed = false;
    session.destroyed = false;
    session.user_changed = false;
}

#[cfg(all(test, feature = "axum"))]
mod tests {
    use super::*;
    use crate::FileSystemCache;

    /// A stored session: its `Cookie` header.
    fn stored(sessions: &Sessions<FileSystemCache>) -> String {
        let mut view = sessions.load(None).unwrap();
        view.insert("seed", &0).unwrap();
        let cookie = sessions.save(&mut view).unwrap().set_cookie.unwrap();
        cookie.split(';').next().unwrap().to_owned()
    }

    fn bump(view: &mut Session) {
        view.update("n", |n: Option<u64>| Some(n.unwrap_or(0) + 1))
            .unwrap();
    }

    /// `save_all` does what saving each view in turn would: views of two sessions
    /// interleaved (the runs of one session merged), then a destroy between
    /// saves of one session, which the save after it does not undo.
    #[test]
    fn save_all_is_saving_each_in_turn() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileSystemCache::open(dir.path()).unwrap();
        let sessions = Sessions::new(cache, SessionConfig::default()).unwrap();
        let (a, b) = (stored(&sessions), stored(&sessions));
        let load = |cookie: &str| sessions.load(Some(cookie)).unwrap();

        let mut views = vec![load(&a), load(&a), load(&b), load(&a)];
        views[0].insert("x", &1).unwrap();
        bump(&mut views[1]);
        views[2].insert("y", &2).unwrap();
        bump(&mut views[3]);
        for outcome in sessions.save_all(&mut views).unwrap() {
            // A permanent session's cookie slides with its expiry.
            let cookie = outcome.unwrap().set_cookie.unwrap();
            assert!(!cookie.contains("Max-Age=0"), "{cookie}");
        }
        let now = load(&a);
        assert_eq!(now.get::<u64>("x").unwrap(), Some(1));
        assert_eq!(now.get::<u64>("n").unwrap(), Some(2), "both bumps count");
        assert_eq!(load(&b).get::<u64>("y").unwrap(), Some(2));
        assert_eq!(load(&b).get::<u64>("n").unwrap(), None);

        let mut views = vec![load(&a), load(&a), load(&a)];
        bump(&mut views[0]);
        views[1].destroy();
        views[2].insert("z", &3).unwrap();
        let outcomes: Vec<_> = sessions
            .save_all(&mut views)
            .unwrap()
            .into_iter()
            .map(|o| o.unwrap().set_cookie)
            .collect();
        assert!(!outcomes[0].as_deref().unwrap().contains("Max-Age=0"));
        assert!(outcomes[1].as_deref().unwrap().contains("Max-Age=0"));
        assert_eq!(outcomes[2], None, "a save after the logout sends no cookie");
        assert!(load(&a).is_new(), "the logout stays a logout");
        assert_eq!(load(&b).get::<u64>("y").unwrap(), Some(2));
    }
}
