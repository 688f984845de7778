//! Redis: `SET ... PX` (with `NX` for new keys), a Lua compare-and-set, `PEXPIRE`.

use std::time::Duration;

use redis::{Commands, RetryMethod};

use super::pool::Pool;
use super::{foreign_version, Store, Version, Versioned};
use crate::error::{Error, Result};

/// Compares the stored bytes with the expected ones and, if equal, stores the new
/// value (ARGV[2] = "1") or deletes the key; atomic because Redis runs a script
/// without interleaving other commands. Returns `{1, nil}` when it wrote and
/// `{0, current}` when not (current is nil for an absent key): the async path's
/// merge retries from that value without a separate load; the sync path reads
/// only the flag.
const CAS: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] then return {0, cur} end
if ARGV[2] == '1' then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
else
  redis.call('DEL', KEYS[1])
end
return {1, false}
";

/// How long a connect, a read or a write may take before the call fails (with a
/// retryable error).
const TIMEOUT: Duration = Duration::from_secs(2);

/// A [`Store`] on Redis (feature `redis`), through the `redis` crate's sync client
/// and a pool of connections.
///
/// - Expiry: Redis's own (`PX` on every write, `PEXPIRE` for [`touch`](Store::touch)),
///   to the millisecond.
/// - [`insert`](Store::insert): `SET key value NX PX ttl`.
/// - Atomic merge: [`update`](Store::update) is optimistic. The version of a load is
///   the value itself, and [`compare_and_set`](Store::compare_and_set) is a Lua
///   script (`EVALSHA`) that writes only if the stored bytes are still those; a lost
///   race re-runs the merge. Tested against Redis 7.0 (what Debian ships); it uses
///   only `GET`, `SET ... NX PX`, `PEXPIRE`, `DEL` and `EVALSHA`/`EVAL`.
///   Comparing values means a key rewritten with identical bytes (A, then B, then A
///   again) counts as unchanged; a merge of the same bytes gives the same result, so
///   no update is lost (session records also carry the time of their last write).
/// - Values are stored as plain strings under the key as given (the session layer
///   adds `session:`), so `redis-cli GET` shows them.
pub struct RedisStore {
    pool: Pool<redis::Connection>,
    cas: redis::Script,
    /// For the axum layer's async calls: the client, and the multiplexed
    /// connection made from it on first use (inside the app's runtime).
    #[cfg(feature = "axum")]
    client: redis::Client,
    #[cfg(feature = "axum")]
    multiplexed: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

fn engine_error(op: &'static str, e: redis::RedisError) -> Error {
    let retryable = !matches!(e.retry_method(), RetryMethod::NoRetry);
    Error::engine("redis", op, retryable, e)
}

fn millis(ttl: Duration) -> u64 {
    (ttl.as_millis().min(u128::from(u64::MAX)) as u64).max(1)
}

impl RedisStore {
    /// The [`CAS`] script's call: replace `expected` under `key` with `new` (or
    /// delete the key when `new` is `None`), for `ttl`.
    fn cas_call(
        &self,
        key: &str,
        expected: &[u8],
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> redis::ScriptInvocation<'_> {
        let mut call = self.cas.key(key);
        call.arg(expected);
        match new {
            Some(v) => call.arg("1").arg(v).arg(millis(ttl)),
            None => call.arg("0").arg("").arg(0),
        };
        call
    }

    /// Connects to the Redis server a `redis://HOST:PORT/DB` URL names (with
    /// `redis://:PASSWORD@…` or `redis://USER:PASSWORD@…` for AUTH) and checks it
    /// answers.
    ///
    /// # Errors
    /// [`Error::Config`] for a malformed URL; a retryable [`Error::Engine`] when the
    /// server does not answer.
    pub fn open(url: &str) -> Result<RedisStore> {
        let client = redis::Client::open(url).map_err(|e| Error::Config {
            message: format!("invalid Redis URL {url:?}: {e}"),
        })?;
        #[cfg(feature = "axum")]
        let for_async = client.clone();
        let pool = Pool::new(64, move || {
            let conn = client
                .get_connection_with_timeout(TIMEOUT)
                .map_err(|e| engine_error("connect", e))?;
            conn.set_read_timeout(Some(TIMEOUT))
                .and_then(|()| conn.set_write_timeout(Some(TIMEOUT)))
                .map_err(|e| engine_error("connect", e))?;
            Ok(conn)
        });
        let store = RedisStore {
            pool,
            cas: redis::Script::new(CAS),
            #[cfg(feature = "axum")]
            client: for_async,
            #[cfg(feature = "axum")]
            multiplexed: tokio::sync::OnceCell::new(),
        };
        store.pool.with(|c| {
            redis::cmd("PING")
                .query::<()>(c)
                .map_err(|e| engine_error("ping", e))
        })?;
        Ok(store)
    }
}

impl Store for RedisStore {
    fn engine(&self) -> &'static str {
        "redis"
    }

    fn load(&self, key: &str) -> Result<Option<Versioned>> {
        let value: Option<Vec<u8>> = self
            .pool
            .with(|c| c.get(key).map_err(|e| engine_error("load", e)))?;
        Ok(value.map(|value| Versioned {
            version: Version::from_bytes(&value),
            value,
        }))
    }

    fn save(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        self.pool.with(|c| {
            c.pset_ex(key, value, millis(ttl))
                .map_err(|e| engine_error("save", e))
        })
    }

    fn insert(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        self.pool.with(|c| {
            let set: Option<String> = redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("NX")
                .arg("PX")
                .arg(millis(ttl))
                .query(c)
                .map_err(|e| engine_error("insert", e))?;
            Ok(set.is_some())
        })
    }

    /// One `SET key value XX PX ttl`: stored only over a live value.
    fn replace(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        self.pool.with(|c| {
            let set: Option<String> = redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("XX")
                .arg("PX")
                .arg(millis(ttl))
                .query(c)
                .map_err(|e| engine_error("replace", e))?;
            Ok(set.is_some())
        })
    }

    fn compare_and_set(
        &self,
        key: &str,
        expected: &Version,
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<bool> {
        let Some(expected) = expected.as_bytes() else {
            return Err(foreign_version(key));
        };
        self.pool.with(|c| {
            let (won, _): (i64, Option<Vec<u8>>) = self
                .cas_call(key, expected, new, ttl)
                .invoke(c)
                .map_err(|e| engine_error("compare-and-set", e))?;
            Ok(won == 1)
        })
    }

    fn remove(&self, key: &str) -> Result<bool> {
        self.pool.with(|c| {
            let n: i64 = c.del(key).map_err(|e| engine_error("remove", e))?;
            Ok(n > 0)
        })
    }

    fn touch(&self, key: &str, ttl: Duration) -> Result<bool> {
        self.pool.with(|c| {
            let n: bool = c
                .pexpire(key, millis(ttl) as i64)
                .map_err(|e| engine_error("touch", e))?;
            Ok(n)
        })
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

/// The axum layer's path to Redis: the redis crate's [`ConnectionManager`], one
/// multiplexed connection shared by all requests (commands of concurrent requests
/// are pipelined on it, and it reconnects after the connection drops), awaited on
/// the request's own task. The commands and the compare-and-set script are the
/// sync store's, so the two paths work on the same records.
///
/// Made per save, with what the caller knows a key holds (the layer passes what
/// the previous save of the session in this process wrote, under the session's
/// turn). Knowledge only saves round trips, never decides an outcome: every
/// write is a compare-and-set against the value it replaces.
/// - A compare-and-set whose expected value is not what is known to be stored
///   reports a loss without asking Redis (the session logic then merges).
/// - The merge starts from the known value instead of loading it.
/// - A compare-and-set that loses learns the current value (the script returns
///   it) for the next attempt.
///
/// So a save that raced another save of this process costs one round trip, and
/// one that raced another process two or three.
///
/// [`ConnectionManager`]: redis::aio::ConnectionManager
#[cfg(feature = "axum")]
pub(crate) struct AsyncRedis<'a> {
    store: &'a RedisStore,
    /// A key and what it is known to hold (`None`: absent).
    known: std::sync::Mutex<Option<Known>>,
}

/// A key and what it was last seen or written to hold (`None`: absent).
#[cfg(feature = "axum")]
pub(crate) type Known = (String, Option<Vec<u8>>);

#[cfg(feature = "axum")]
impl<'a> AsyncRedis<'a> {
    pub(crate) fn new(store: &'a RedisStore, known: Option<Known>) -> Self {
        AsyncRedis {
            store,
            known: std::sync::Mutex::new(known),
        }
    }

    /// What is known after the calls made through this value.
    pub(crate) fn into_known(self) -> Option<Known> {
        self.known
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Option<Known>> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What `key` is known to hold, if anything is known.
    fn known_value(&self, key: &str) -> Option<Option<Vec<u8>>> {
        self.known()
            .as_ref()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    fn learn(&self, key: &str, value: Option<Vec<u8>>) {
        *self.known() = Some((key.to_owned(), value));
    }

    /// The compare-and-set script that returns the current value when it loses:
    /// `Ok(None)` when it wrote, `Ok(Some(current))` when not.
    async fn cas_or_get(
        &self,
        key: &str,
        expected: &[u8],
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<Option<Option<Vec<u8>>>> {
        let (won, found): (i64, Option<Vec<u8>>) = self
            .store
            .cas_call(key, expected, new, ttl)
            .invoke_async(&mut self.conn().await?)
            .await
            .map_err(|e| engine_error("compare-and-set", e))?;
        Ok((won != 1).then_some(found))
    }

    async fn conn(&self) -> Result<redis::aio::ConnectionManager> {
        let manager = self
            .store
            .multiplexed
            .get_or_try_init(|| async {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(TIMEOUT))
                    .set_response_timeout(Some(TIMEOUT))
                    .set_number_of_retries(2);
                redis::aio::ConnectionManager::new_with_config(self.store.client.clone(), config)
                    .await
                    .map_err(|e| engine_error("connect", e))
            })
            .await?;
        Ok(manager.clone())
    }

    async fn set(&self, op: &'static str, cmd: &redis::Cmd) -> Result<bool> {
        let set: Option<String> = cmd
            .query_async(&mut self.conn().await?)
            .await
            .map_err(|e| engine_error(op, e))?;
        Ok(set.is_some())
    }
}

#[cfg(feature = "axum")]
impl crate::store::calls::Calls for AsyncRedis<'_> {
    fn engine(&self) -> &'static str {
        "redis"
    }

    async fn load(&self, key: &str) -> Result<Option<Versioned>> {
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.conn().await?)
            .await
            .map_err(|e| engine_error("load", e))?;
        Ok(value.map(|value| Versioned {
            version: Version::from_bytes(&value),
            value,
        }))
    }

    async fn insert(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("NX").arg("PX").arg(millis(ttl));
        self.set("insert", &cmd).await
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: &Version,
        new: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<bool> {
        let Some(expected) = expected.as_bytes() else {
            return Err(foreign_version(key));
        };
        if let Some(known) = self.known_value(key)
            && known.as_deref() != Some(expected)
        {
            // Written since `expected` was read (by this process): this would lose.
            return Ok(false);
        }
        match self.cas_or_get(key, expected, new, ttl).await? {
            None => {
                self.learn(key, new.map(<[u8]>::to_vec));
                Ok(true)
            }
            Some(found) => {
                self.learn(key, found);
                Ok(false)
            }
        }
    }

    async fn remove(&self, key: &str) -> Result<bool> {
        let n: i64 = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut self.conn().await?)
            .await
            .map_err(|e| engine_error("remove", e))?;
        self.learn(key, None);
        Ok(n > 0)
    }

    async fn touch(&self, key: &str, ttl: Duration) -> Result<bool> {
        let n: bool = redis::cmd("PEXPIRE")
            .arg(key)
            .arg(millis(ttl))
            .query_async(&mut self.conn().await?)
            .await
            .map_err(|e| engine_error("touch", e))?;
        Ok(n)
    }

    async fn update(
        &self,
        key: &str,
        ttl: Duration,
        merge: &mut crate::store::calls::SendMergeFn<'_>,
    ) -> Result<Option<Vec<u8>>> {
        use crate::store::{MAX_ATTEMPTS, Merge};
        let mut current = match self.known_value(key) {
            Some(known) => known,
            None => self.load(key).await?.map(|v| v.value),
        };
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                crate::store::calls::backoff(attempt).await;
            }
            let decision = merge(current.as_deref())?;
            let (expected, new) = match (decision, current) {
                (Merge::Keep, current) => return Ok(current),
                (Merge::Delete, None) => return Ok(None),
                (Merge::Delete, Some(cur)) => (cur, None),
                (Merge::Put(new), None) => {
                    if self.insert(key, &new, ttl).await? {
                        self.learn(key, Some(new.clone()));
                        return Ok(Some(new));
                    }
                    current = self.load(key).await?.map(|v| v.value);
                    continue;
                }
                (Merge::Put(new), Some(cur)) => (cur, Some(new)),
            };
            match self.cas_or_get(key, &expected, new.as_deref(), ttl).await? {
                None => {
                    self.learn(key, new.clone());
                    return Ok(new);
                }
                Some(found) => current = found,
            }
        }
        Err(Error::Conflict {
            key: key.to_owned(),
            attempts: MAX_ATTEMPTS,
        })
    }
}
