//! The per-user index: which sessions a user has, so a "your devices" page can list
//! them and "log out everywhere" can end them.
//!
//! One record per user, under `prefix + "user:" + blake3(user id)`, changed only
//! with [`Store::update`](crate::store::Store::update) (atomic on every store), so
//! every server sees one list. It holds the user's live sessions by handle (the
//! hash part of the session's store key — never a cookie), each with its creation
//! time, an optional label and the handle it replaced on a
//! [`regenerate`](super::Session::regenerate), and the handles ended in the last
//! [`ENDED_GRACE`] (so that a request of an ended session still in flight cannot
//! bring it back under a new id).
//!
//! # Order of the writes, and what a crash leaves
//!
//! - **Login** (a save of a session tied to a user under a new key): the index
//!   first (refused if the key, or the key it replaces, was ended), then the
//!   session record, then one read of the index: if the key was ended in between,
//!   the record is removed again. A crash between the index and the record leaves
//!   an entry with no session: listings skip it and drop it once it is a minute
//!   old.
//! - **Ending** (one, all, all but the current): the records of the listed
//!   sessions are removed first, then the index marks them ended, then the records
//!   of entries that appeared meanwhile are removed. A crash after the first step
//!   leaves the sessions ended and the index still listing them: listings drop
//!   them; running the end again finishes it. At no point does a crash leave an
//!   ended session usable.
//! - **Logout** ([`destroy`](super::Session::destroy)): the record, then the index.
//!
//! Together with the session save's own rule (a save never recreates a removed
//! record), a request of a session that is in flight while the session ends never
//! brings it back, whatever it does: plain changes find the record gone, and a
//! [`regenerate`](super::Session::regenerate) or
//! [`set_user`](super::Session::set_user) is refused by the index or undone by the
//! read after the write.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Session, Sessions};
use crate::error::{Error, Result};
use crate::store::calls::{self, Calls, SyncCalls};
use crate::store::{Merge, Store};

/// How long an ended session's handle is remembered (10 minutes, as the actix
/// adapter's tombstones): a request of that session still in flight (or retried)
/// within this time cannot bring it back under a new id. Plain saves never
/// recreate a removed record at any age. At most [`MAX_USER_SESSIONS`] handles
/// per user are remembered.
pub const ENDED_GRACE: Duration = Duration::from_secs(600);

/// At most this many live sessions per user are indexed. A login past it ends the
/// user's oldest session, so the index of a user who logs in daily for years
/// stays bounded even where sessions never expire.
pub const MAX_USER_SESSIONS: usize = 10_000;

/// Longest user id [`Session::set_user`] accepts, in bytes.
pub const MAX_USER_LEN: usize = 256;

/// Longest label [`Session::set_user`] accepts, in bytes.
pub const MAX_LABEL_LEN: usize = 256;

/// An entry younger than this whose session record is missing may be a login
/// whose record is being written: listings skip it but keep it.
const SETTLE_MS: u64 = 60_000;

/// How many other entries a login checks for sessions that expired, so the index
/// shrinks as sessions expire without a scan.
const CHECKS_PER_LOGIN: usize = 2;

/// A session of a user, as [`Sessions::user_sessions`] lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct UserSession {
    /// Names the session to [`Sessions::end_user_session`]: the hash part of its
    /// store key (64 hex characters). Not a cookie: it cannot be used to log in.
    pub handle: String,
    /// When the session was created (Unix ms).
    pub created_ms: u64,
    /// When the session was last written (Unix ms): a request that changes it, or
    /// the refresh that slides its expiry (so "last seen" is as fine as
    /// [`SessionConfig::refresh_granularity`](super::SessionConfig::refresh_granularity)).
    pub last_seen_ms: u64,
    /// The label passed to [`Session::set_user`] (say, the browser).
    pub label: Option<String>,
    /// Whether this is the session of the request that asked.
    pub current: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    #[serde(default)]
    live: Vec<Entry>,
    #[serde(default)]
    ended: Vec<Ended>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry {
    /// Handle.
    h: String,
    /// Created (Unix ms).
    c: u64,
    /// When this entry was written (Unix ms).
    a: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    l: Option<String>,
    /// The handle this one replaced (regenerate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Ended {
    h: String,
    /// When it ended (Unix ms).
    t: u64,
}

impl Index {
    fn decode(bytes: Option<&[u8]>) -> Index {
        match bytes.map(serde_json::from_slice::<Index>) {
            None => Index::default(),
            Some(Ok(index)) => index,
            Some(Err(e)) => {
                log::warn!(
                    "fscache: the value under a user index key is not an index ({e}); \
                     treated as empty"
                );
                Index::default()
            }
        }
    }

    fn encode(&self) -> Result<Merge> {
        if self.live.is_empty() && self.ended.is_empty() {
            return Ok(Merge::Delete);
        }
        serde_json::to_vec(self)
            .map(Merge::Put)
            .map_err(|e| Error::Serialize {
                key: "<user index>".to_owned(),
                source: e.into(),
            })
    }

    fn forget_old(&mut self, now: u64) {
        let grace = ENDED_GRACE.as_millis() as u64;
        self.ended.retain(|e| now.saturating_sub(e.t) < grace);
        let over = self.ended.len().saturating_sub(MAX_USER_SESSIONS);
        self.ended.drain(..over);
    }

    fn is_ended(&self, handle: &str) -> bool {
        self.ended.iter().any(|e| e.h == handle)
    }

    /// Moves the live entries `pick` selects to the ended list; their handles.
    fn end(&mut self, now: u64, pick: impl Fn(&Entry) -> bool) -> Vec<String> {
        let mut moved = Vec::new();
        self.live.retain(|e| {
            if pick(e) {
                moved.push(e.h.clone());
                false
            } else {
                true
            }
        });
        for h in &moved {
            self.ended.push(Ended { h: h.clone(), t: now });
        }
        moved
    }
}

/// What [`Sessions::index_add`] did.
pub(crate) enum Added {
    Indexed,
    /// The key, or the key it replaces, was ended: the session must not be stored.
    Refused,
}

/// Which of a user's sessions to end.
enum Which<'a> {
    One(&'a str),
    All { except: Option<&'a str> },
}

/// [`Error::Config`] for a user id or label [`Session::set_user`] refuses.
pub(crate) fn check_user(user: &str, label: Option<&str>) -> Result<()> {
    let bad = |message: String| Err(Error::Config { message });
    if user.is_empty() || user.len() > MAX_USER_LEN {
        return bad(format!(
            "a session's user id must be 1 to {MAX_USER_LEN} bytes, not {}",
            user.len()
        ));
    }
    if let Some(label) = label
        && label.len() > MAX_LABEL_LEN
    {
        return bad(format!(
            "a session's label must be at most {MAX_LABEL_LEN} bytes, not {}",
            label.len()
        ));
    }
    Ok(())
}

impl Session {
    /// Ties this session to `user` (your app's user id: an account id, not a name
    /// that can change), with an optional short `label` for a "your devices" page
    /// (say, the browser and OS from the User-Agent). Call it at login, next to
    /// [`regenerate`](Self::regenerate). On save the session joins the user's
    /// index, where [`Sessions::user_sessions`] lists it and
    /// [`Sessions::end_user_sessions`] ends it. [`destroy`](Self::destroy) and
    /// [`clear`](Self::clear) untie it.
    ///
    /// Not in Flask mode: its records are Flask-Session's, which Flask code writes
    /// without an index (the save returns [`Error::Config`]).
    ///
    /// # Errors
    /// [`Error::Config`] for an empty user id, or a user id or label over
    /// [`MAX_USER_LEN`] / [`MAX_LABEL_LEN`] bytes.
    ///
    /// ```
    /// # use fscache::{FileSystemCache, session::{SessionConfig, Sessions}};
    /// # fn main() -> fscache::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let sessions = Sessions::new(FileSystemCache::builder(dir.path()).threshold(0).open()?, SessionConfig::default())?;
    /// // Login on a laptop, then on a phone.
    /// let mut laptop = sessions.load(None)?;
    /// laptop.regenerate()?;
    /// laptop.set_user("user-42", Some("Firefox on Linux"))?;
    /// sessions.save(&mut laptop)?;
    /// let mut phone = sessions.load(None)?;
    /// phone.set_user("user-42", Some("Safari on iOS"))?;
    /// sessions.save(&mut phone)?;
    ///
    /// // The laptop's "your devices" page.
    /// let devices = sessions.user_sessions("user-42", Some(&laptop))?;
    /// assert_eq!(devices.len(), 2);
    /// assert!(devices.iter().any(|d| d.current && d.label.as_deref() == Some("Firefox on Linux")));
    ///
    /// // "Log out all other devices": the phone's session is gone.
    /// assert_eq!(sessions.end_user_sessions("user-42", Some(&laptop))?, 1);
    /// assert_eq!(sessions.user_sessions("user-42", None)?.len(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_user(&mut self, user: &str, label: Option<&str>) -> Result<()> {
        check_user(user, label)?;
        if let Some(previous) = self.user.take().filter(|p| p != user) {
            // Another user logs in on this session: it leaves the first one's index.
            self.untied = Some(previous);
        } else if self.untied.as_deref() == Some(user) {
            self.untied = None;
        }
        self.user = Some(user.to_owned());
        self.label = label.map(str::to_owned);
        self.user_changed = true;
        self.touch();
        Ok(())
    }

    /// The user this session is tied to ([`set_user`](Self::set_user)), if any.
    pub fn user(&self) -> Option<&str> {
        self.accessed.set(true);
        self.user.as_deref()
    }

    /// The label given to [`set_user`](Self::set_user), if any.
    pub fn user_label(&self) -> Option<&str> {
        self.label.as_deref()
    }
}

/// What the index knows of a stored session record.
pub(crate) struct Seen {
    pub(crate) user: Option<String>,
    pub(crate) label: Option<String>,
    pub(crate) created: u64,
    pub(crate) last_seen: u64,
}

/// Reads a stored session record for the index.
pub(crate) trait Reader: Sync {
    /// The record's [`Seen`], if it is a live session.
    fn seen(&self, bytes: &[u8]) -> Option<Seen>;
}

/// The user index of one session layer (fscache's own sessions, or an adapter's
/// records): its key prefix, the index's time to live, the time now and how to
/// read its records.
pub(crate) struct UserIndex<'a> {
    pub(crate) prefix: &'a str,
    pub(crate) ttl: Duration,
    pub(crate) now: u64,
    pub(crate) read: &'a dyn Reader,
}

impl UserIndex<'_> {
    fn user_key(&self, user: &str) -> String {
        crate::store::hashed_key(&format!("{}user:", self.prefix), user)
    }

    /// The live sessions of `user`, most recently seen first, `current` marked;
    /// entries whose session is gone are dropped from the index on the way.
    pub(crate) async fn list<C: Calls>(
        &self,
        calls: &C,
        user: &str,
        current: Option<String>,
    ) -> Result<Vec<UserSession>> {
        let Some(stored) = calls.load(&self.user_key(user)).await? else {
            return Ok(Vec::new());
        };
        let index = Index::decode(Some(&stored.value));
        let mut list = Vec::new();
        let mut dead = Vec::new();
        for e in index.live {
            match self.load_handle(calls, &e.h).await? {
                Some(seen) if seen.user.as_deref() == Some(user) => list.push(UserSession {
                    current: current.as_deref() == Some(e.h.as_str()),
                    handle: e.h,
                    created_ms: seen.created,
                    last_seen_ms: seen.last_seen,
                    label: seen.label,
                }),
                _ => dead.push(e.h),
            }
        }
        if !dead.is_empty() {
            self.index_drop(calls, user, &dead).await?;
        }
        list.sort_by_key(|d| std::cmp::Reverse(d.last_seen_ms));
        Ok(list)
    }

    /// Ends the session `handle` names, if the index lists it for `user`.
    pub(crate) async fn end_one<C: Calls>(
        &self,
        calls: &C,
        user: &str,
        handle: &str,
    ) -> Result<bool> {
        let valid = handle.len() == 64 && handle.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Ok(false);
        }
        Ok(!self.index_end(calls, user, Which::One(handle)).await?.is_empty())
    }

    /// Ends all of `user`'s sessions but `except`; how many.
    pub(crate) async fn end_all<C: Calls>(
        &self,
        calls: &C,
        user: &str,
        except: Option<String>,
    ) -> Result<usize> {
        let which = Which::All {
            except: except.as_deref(),
        };
        Ok(self.index_end(calls, user, which).await?.len())
    }

    pub(crate) fn handle_key(&self, handle: &str) -> String {
        format!("{}{handle}", self.prefix)
    }

    fn index_ttl(&self) -> Duration {
        self.ttl
    }

    fn now(&self) -> u64 {
        self.now
    }

    /// Adds (or re-adds) `handle` to `user`'s index, replacing `prev`.
    pub(crate) async fn index_add<C: Calls>(
        &self,
        calls: &C,
        user: &str,
        entry: (&str, Option<&str>, u64, Option<&str>),
    ) -> Result<Added> {
        let (handle, prev, created, label) = entry;
        let now = self.now();
        let mut refused = false;
        let mut evicted = Vec::new();
        let mut others = Vec::new();
        let mut merge = |current: Option<&[u8]>| {
            let mut index = Index::decode(current);
            index.forget_old(now);
            refused = index.is_ended(handle) || prev.is_some_and(|p| index.is_ended(p));
            evicted.clear();
            others.clear();
            if refused {
                return Ok(Merge::Keep);
            }
            index
                .live
                .retain(|e| e.h != handle && Some(e.h.as_str()) != prev);
            while index.live.len() >= MAX_USER_SESSIONS {
                let oldest = (0..index.live.len())
                    .min_by_key(|&i| index.live[i].c)
                    .unwrap_or(0);
                let e = index.live.remove(oldest);
                index.ended.push(Ended {
                    h: e.h.clone(),
                    t: now,
                });
                evicted.push(e.h);
            }
            others = index
                .live
                .iter()
                .filter(|e| now.saturating_sub(e.a) >= SETTLE_MS)
                .map(|e| e.h.clone())
                .collect();
            index.live.push(Entry {
                h: handle.to_owned(),
                c: created,
                a: now,
                l: label.map(str::to_owned),
                p: prev.map(str::to_owned),
            });
            index.encode()
        };
        calls
            .update(&self.user_key(user), self.index_ttl(), &mut merge)
            .await?;
        if refused {
            return Ok(Added::Refused);
        }
        for h in evicted {
            calls.remove(&self.handle_key(&h)).await?;
        }
        // Look at a few other entries picked at random: the sessions among them
        // that expired leave the index, so it follows the live sessions.
        let mut dead = Vec::new();
        for _ in 0..CHECKS_PER_LOGIN.min(others.len()) {
            let i = (super::id::save_id() % others.len() as u64) as usize;
            let h = others.swap_remove(i);
            if !self.is_live(calls, &h).await? {
                dead.push(h);
            }
        }
        if !dead.is_empty() {
            self.index_drop(calls, user, &dead).await?;
        }
        Ok(Added::Indexed)
    }

    /// Whether the record of `handle` is a live session.
    pub(crate) async fn is_live<C: Calls>(&self, calls: &C, handle: &str) -> Result<bool> {
        Ok(self.load_handle(calls, handle).await?.is_some())
    }

    pub(crate) async fn load_handle<C: Calls>(&self, calls: &C, handle: &str) -> Result<Option<Seen>> {
        let Some(stored) = calls.load(&self.handle_key(handle)).await? else {
            return Ok(None);
        };
        Ok(self.read.seen(&stored.value))
    }

    /// Changes an existing index with `f` (which says whether it changed
    /// anything); nothing is written when it did not, or when there is no index.
    async fn edit<C: Calls>(
        &self,
        calls: &C,
        user: &str,
        mut f: impl FnMut(&mut Index) -> bool + Send,
    ) -> Result<()> {
        let now = self.now();
        let mut merge = |current: Option<&[u8]>| {
            let Some(bytes) = current else {
                return Ok(Merge::Keep);
            };
            let mut index = Index::decode(Some(bytes));
            if !f(&mut index) {
                return Ok(Merge::Keep);
            }
            index.forget_old(now);
            index.encode()
        };
        calls
            .update(&self.user_key(user), self.index_ttl(), &mut merge)
            .await?;
        Ok(())
    }

    /// Drops the entries of `dead` handles (sessions found gone) from the index,
    /// unless they were written within [`SETTLE_MS`] (a login still writing).
    pub(crate) async fn index_drop<C: Calls>(&self, calls: &C, user: &str, dead: &[String]) -> Result<()> {
        let now = self.now();
        self.edit(calls, user, |index| {
            let before = index.live.len();
            index
                .live
                .retain(|e| !dead.contains(&e.h) || now.saturating_sub(e.a) < SETTLE_MS);
            index.live.len() != before
        })
        .await
    }

    /// Whether `handle` was ended (read after a login wrote its record).
    pub(crate) async fn index_ended<C: Calls>(
        &self,
        calls: &C,
        user: &str,
        handle: &str,
    ) -> Result<bool> {
        let Some(stored) = calls.load(&self.user_key(user)).await? else {
            return Ok(false);
        };
        Ok(Index::decode(Some(&stored.value)).is_ended(handle))
    }

    /// Renews the expiry of `user`'s index; re-adds `handle` if the index is gone.
    pub(crate) async fn renew_index<C: Calls>(
        &self,
        calls: &C,
        user: &str,
        handle: &str,
        created: u64,
        label: Option<&str>,
    ) -> Result<Added> {
        if calls.touch(&self.user_key(user), self.index_ttl()).await? {
            return Ok(Added::Indexed);
        }
        let entry = (handle, None, created, label);
        self.index_add(calls, user, entry).await
    }

    /// Ends `user`'s sessions that `which` names; the handles ended.
    async fn index_end<C: Calls>(
        &self,
        calls: &C,
        user: &str,
        which: Which<'_>,
    ) -> Result<Vec<String>> {
        let key = self.user_key(user);
        let picks = |e: &Entry| match which {
            Which::One(h) => e.h == h || e.p.as_deref() == Some(h),
            Which::All { except } => except != Some(e.h.as_str()),
        };
        // 1. The records of the sessions listed now: from here on they are ended,
        //    whatever happens to this process.
        let mut removed = BTreeSet::new();
        if let Some(stored) = calls.load(&key).await? {
            for e in Index::decode(Some(&stored.value)).live.iter().filter(|e| picks(e)) {
                if removed.insert(e.h.clone()) {
                    calls.remove(&self.handle_key(&e.h)).await?;
                }
            }
        }
        // 2. The index: they are ended (a login of theirs still in flight is
        //    refused or undone from here on).
        let now = self.now();
        let mut ended = Vec::new();
        let mut merge = |current: Option<&[u8]>| {
            let mut index = Index::decode(current);
            index.forget_old(now);
            ended = index.end(now, picks);
            if let Which::One(h) = which
                && !ended.is_empty()
                && !index.is_ended(h)
            {
                index.ended.push(Ended {
                    h: h.to_owned(),
                    t: now,
                });
            }
            index.encode()
        };
        calls.update(&key, self.index_ttl(), &mut merge).await?;
        // 3. Sessions that joined between 1 and 2.
        for h in &ended {
            if !removed.contains(h) {
                calls.remove(&self.handle_key(h)).await?;
            }
        }
        Ok(ended)
    }

    /// Takes `handle` out of `user`'s index, the session going on untied (a
    /// `clear`, or `set_user` with another user): ending the user's sessions
    /// leaves it alone.
    pub(crate) async fn index_untie<C: Calls>(&self, calls: &C, user: &str, handle: &str) -> Result<()> {
        self.edit(calls, user, |index| {
            let before = index.live.len();
            index.live.retain(|e| e.h != handle);
            index.live.len() != before
        })
        .await
    }

    /// Marks `handle` ended in `user`'s index after a logout: the session's own
    /// record is gone already, and a logged-out session has no successor, so one
    /// index update does it.
    pub(crate) async fn index_logout<C: Calls>(
        &self,
        calls: &C,
        user: &str,
        handle: &str,
    ) -> Result<()> {
        let now = self.now();
        self.edit(calls, user, |index| !index.end(now, |e| e.h == handle).is_empty())
            .await
    }
}

impl<S: Store> Sessions<S> {
    /// The user index of these sessions.
    pub(super) fn users(&self) -> UserIndex<'_> {
        UserIndex {
            prefix: &self.config.key_prefix,
            ttl: self.index_ttl(),
            now: self.now(),
            read: self,
        }
    }

    /// How long a user's index lives after its last write: longer than any of the
    /// user's sessions can (each session that writes its record renews it once per
    /// tenth of the lifetime, see `Sessions::renew_index`).
    pub(super) fn index_ttl(&self) -> Duration {
        self.config.lifetime + self.config.lifetime / 10 + ENDED_GRACE
    }

}

impl<S: Store> Reader for Sessions<S> {
    fn seen(&self, bytes: &[u8]) -> Option<Seen> {
        self.decode_record(bytes)
            .filter(|r| !self.past_absolute_lifetime(r.created))
            .map(|r| Seen {
                last_seen: r.touched.max(r.created),
                created: r.created,
                user: r.user,
                label: r.label,
            })
    }
}

impl<S: Store> Sessions<S> {

    /// The handle of the session with id `id`.
    pub(super) fn handle(&self, id: &str) -> String {
        let key = self.store_key(id);
        key[self.config.key_prefix.len()..].to_owned()
    }

    /// Whether a session tied to a user should renew its index's expiry now.
    pub(super) fn index_renewal_due(&self, stamp: u64) -> bool {
        let every = (self.config.lifetime.as_millis() as u64 / 10).max(1);
        self.now().saturating_sub(stamp) >= every
    }

    /// The index step of a save, before the record is written: a login (a new or
    /// regenerated session tied to a user, or `set_user` on a stored one) joins
    /// the index, or is refused when its key or the key it replaces was ended (the
    /// session is then destroyed: a logout stays a logout); a session that writes
    /// its record renews the index's expiry once per tenth of the lifetime.
    pub(super) async fn index_before_write<C: Calls>(
        &self,
        calls: &C,
        session: &mut Session,
    ) -> Result<()> {
        // Most saves: no user, or nothing for the index to do.
        if session.user.is_none()
            || session.destroyed
            || session.pending_index.is_some()
            || self.ttl(session).is_none()
        {
            return Ok(());
        }
        let Some(user) = session.user.clone() else {
            return Ok(());
        };
        let now = self.now();
        let label = session.label.clone();
        let added = match session.stored_id.clone() {
            None if session.modified => {
                let handle = self.handle(&session.id);
                let prev = session.retired_id.as_deref().map(|id| self.handle(id));
                let entry = (handle.as_str(), prev.as_deref(), session.created, label.as_deref());
                let added = self.users().index_add(calls, &user, entry).await?;
                if matches!(added, Added::Indexed) {
                    session.pending_index = Some(handle);
                }
                added
            }
            Some(id) if session.user_changed => {
                let handle = self.handle(&id);
                let entry = (handle.as_str(), None, session.created, label.as_deref());
                let added = self.users().index_add(calls, &user, entry).await?;
                if matches!(added, Added::Indexed) {
                    session.pending_index = Some(handle);
                }
                added
            }
            Some(id)
                if (session.modified || self.refresh_due(session))
                    && self.index_renewal_due(session.indexed) =>
            {
                let handle = self.handle(&id);
                self.users().renew_index(calls, &user, &handle, session.created, label.as_deref())
                    .await?
            }
            _ => return Ok(()),
        };
        match added {
            Added::Indexed => session.indexed = now,
            Added::Refused => {
                log::info!(
                    "fscache: a request of an ended session tried to log in again or \
                     regenerate its id; refused, the session stays ended"
                );
                session.destroy();
                // No Set-Cookie: this answer may arrive after a new login's.
                session.had_cookie = false;
            }
        }
        Ok(())
    }

    /// The index step after the record was written: a session untied from a user
    /// leaves that user's index; a login reads the index once more and is undone
    /// (`false`, the record removed) if the session was ended in between.
    pub(super) async fn confirm_index<C: Calls>(
        &self,
        calls: &C,
        session: &mut Session,
    ) -> Result<bool> {
        if let Some(old) = session.untied.clone() {
            if let Some(id) = session.stored_id.clone() {
                self.users().index_untie(calls, &old, &self.handle(&id)).await?;
            }
            session.untied = None;
        }
        let Some(handle) = session.pending_index.clone() else {
            return Ok(true);
        };
        let Some(user) = session.user.clone() else {
            session.pending_index = None;
            return Ok(true);
        };
        let id = session.stored_id.clone().unwrap_or_else(|| session.id.clone());
        let now_handle = self.handle(&id);
        if now_handle != handle {
            // The insert drew another id (the first was taken): index that one.
            let entry = (
                now_handle.as_str(),
                Some(handle.as_str()),
                session.created,
                session.label.as_deref(),
            );
            if matches!(self.users().index_add(calls, &user, entry).await?, Added::Refused) {
                calls.remove(&self.users().handle_key(&now_handle)).await?;
                session.pending_index = None;
                return Ok(false);
            }
            session.pending_index = Some(now_handle.clone());
        }
        if self.users().index_ended(calls, &user, &now_handle).await? {
            calls.remove(&self.users().handle_key(&now_handle)).await?;
            session.pending_index = None;
            return Ok(false);
        }
        session.pending_index = None;
        Ok(true)
    }

    /// The live sessions of `user`, most recently seen first; `current` (the
    /// requesting session, if any) is marked. Costs one store read for the index
    /// and one per listed session; entries whose session expired are dropped from
    /// the index on the way.
    ///
    /// # Errors
    /// Store failures.
    pub fn user_sessions(&self, user: &str, current: Option<&Session>) -> Result<Vec<UserSession>> {
        let current = self.current_handle(current);
        calls::ready(self.user_sessions_with(&SyncCalls(&self.store), user, current))
    }

    /// The handle of a session, if it is stored.
    pub(crate) fn current_handle(&self, session: Option<&Session>) -> Option<String> {
        session
            .and_then(|s| s.stored_id.as_deref())
            .map(|id| self.handle(id))
    }

    pub(crate) async fn user_sessions_with<C: Calls>(
        &self,
        calls: &C,
        user: &str,
        current: Option<String>,
    ) -> Result<Vec<UserSession>> {
        self.users().list(calls, user, current).await
    }

    /// Ends one of `user`'s sessions, by the handle [`user_sessions`](Self::user_sessions)
    /// gave (also after that session regenerated its id). Whether the index had it.
    /// Final like [`Session::destroy`]: a request of that session in flight cannot
    /// bring it back.
    ///
    /// # Errors
    /// Store failures (the call can be retried: ending is idempotent).
    pub fn end_user_session(&self, user: &str, handle: &str) -> Result<bool> {
        calls::ready(self.end_user_session_with(&SyncCalls(&self.store), user, handle))
    }

    pub(crate) async fn end_user_session_with<C: Calls>(
        &self,
        calls: &C,
        user: &str,
        handle: &str,
    ) -> Result<bool> {
        self.users().end_one(calls, user, handle).await
    }

    /// Ends all of `user`'s sessions, except `except` (the requesting session, for
    /// "log out all other devices"; `None` for "log out everywhere", say after a
    /// password change). How many it ended. Final like [`Session::destroy`].
    ///
    /// Costs a read of the index, one remove per session and one index update: a
    /// user with 1,000 sessions is ended in about 1,000 store calls, and memory
    /// holds the index only.
    ///
    /// # Errors
    /// Store failures (the call can be retried: ending is idempotent).
    pub fn end_user_sessions(&self, user: &str, except: Option<&Session>) -> Result<usize> {
        let except = self.current_handle(except);
        calls::ready(self.end_user_sessions_with(&SyncCalls(&self.store), user, except))
    }

    pub(crate) async fn end_user_sessions_with<C: Calls>(
        &self,
        calls: &C,
        user: &str,
        except: Option<String>,
    ) -> Result<usize> {
        self.users().end_all(calls, user, except).await
    }
}
