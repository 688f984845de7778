//! The user index ("your devices", "log out everywhere") for the tower-sessions
//! and actix-session adapters: the same index as fscache's own sessions
//! ([`Sessions::user_sessions`](crate::session::Sessions::user_sessions)), one
//! record per user changed with [`Store::update`], with the same order of writes
//! (index, record, a read of the index; ending: records, index, records).
//!
//! The framework's session holds a marker under [`USER_KEY`]: the user id, the
//! label, when the user logged in, and — written by the adapter into the stored
//! copy — the handle under which the index lists the session. A save whose handle
//! differs from the marker's (a new session, or a new id after `cycle_id` /
//! `renew`) joins the index, replacing the old handle, and is refused when that
//! handle or the old one was ended.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::session::users::{Added, ENDED_GRACE, Reader, UserIndex};
use crate::store::Store;
use crate::store::calls::{SyncCalls, ready};

/// The key under which the framework's session holds fscache's user marker.
pub const USER_KEY: &str = "fscache.user";

/// The index of an adapter lives at least this long after its last write (a
/// record with a longer time to live makes it live longer).
const MIN_INDEX_TTL: Duration = Duration::from_secs(31 * 86_400);

/// What a framework session tied to a user holds under [`USER_KEY`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Marker {
    pub(crate) user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) label: Option<String>,
    /// When the user logged in (Unix ms).
    #[serde(default)]
    pub(crate) created: u64,
    /// When the record was last written (Unix ms).
    #[serde(default)]
    pub(crate) seen: u64,
    /// The handle under which the index lists this session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) indexed: Option<String>,
    /// When this session last renewed the index's expiry (Unix ms).
    #[serde(default)]
    pub(crate) renewed: u64,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Marker {
    /// A marker for a login of `user` now.
    pub(crate) fn new(user: &str, label: Option<&str>) -> Result<Marker> {
        crate::session::users::check_user(user, label)?;
        Ok(Marker {
            user: user.to_owned(),
            label: label.map(str::to_owned),
            created: now_ms(),
            seen: 0,
            indexed: None,
            renewed: 0,
        })
    }
}

/// The index's time to live when a record with time to live `ttl` writes it.
pub(crate) fn index_ttl(record_ttl: Duration) -> Duration {
    record_ttl.max(MIN_INDEX_TTL) + record_ttl / 10 + ENDED_GRACE
}

/// The user index of the records under `prefix`.
pub(crate) fn index<'a>(prefix: &'a str, record_ttl: Duration, read: &'a dyn Reader) -> UserIndex<'a> {
    UserIndex {
        prefix,
        ttl: index_ttl(record_ttl),
        now: now_ms(),
        read,
    }
}

/// What the write of a marked record has to do after [`before_write`].
pub(crate) enum Plan {
    /// Write; then [`confirm`] if the index just took this handle.
    Write { confirm: bool },
    /// The session was ended: write nothing.
    Refused,
}

/// Before a record carrying `marker` is written under `handle` (its store key
/// without the prefix): joins the index (a new session or a new id), or renews
/// the index's expiry once per tenth of `record_ttl`. Updates the marker to
/// store.
pub(crate) fn before_write<S: Store + ?Sized>(
    store: &S,
    index: &UserIndex<'_>,
    marker: &mut Marker,
    handle: &str,
    record_ttl: Duration,
) -> Result<Plan> {
    let now = index.now;
    marker.seen = now;
    let calls = SyncCalls(store);
    if marker.indexed.as_deref() != Some(handle) {
        let entry = (
            handle,
            marker.indexed.as_deref(),
            marker.created,
            marker.label.as_deref(),
        );
        return Ok(match ready(index.index_add(&calls, &marker.user, entry))? {
            Added::Refused => Plan::Refused,
            Added::Indexed => {
                marker.indexed = Some(handle.to_owned());
                marker.renewed = now;
                Plan::Write { confirm: true }
            }
        });
    }
    let every = (record_ttl.as_millis() as u64 / 10).max(1);
    if now.saturating_sub(marker.renewed) >= every {
        let renewed = index.renew_index(
            &calls,
            &marker.user,
            handle,
            marker.created,
            marker.label.as_deref(),
        );
        if matches!(ready(renewed)?, Added::Refused) {
            return Ok(Plan::Refused);
        }
        marker.renewed = now;
    }
    Ok(Plan::Write { confirm: false })
}

/// After a login's record was written: `false` (and the record removed) if the
/// session was ended in between.
pub(crate) fn confirm<S: Store + ?Sized>(
    store: &S,
    index: &UserIndex<'_>,
    user: &str,
    handle: &str,
) -> Result<bool> {
    if ready(index.index_ended(&SyncCalls(store), user, handle))? {
        store.remove(&index.handle_key(handle))?;
        return Ok(false);
    }
    Ok(true)
}
