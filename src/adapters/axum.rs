//! fscache's own sessions as a tower layer and an axum extractor (feature `axum`):
//! the semantics of [`Sessions`] — key-level merges, replayed
//! [`update`](Session::update)s, logouts that stay logouts, a new id at login — for
//! async apps.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use fscache::axum::{Session, SessionLayer};
//! use fscache::session::{SessionConfig, Sessions};
//!
//! async fn page(session: Session) -> Result<String, fscache::Error> {
//!     // Replayed on the stored value at save: concurrent bumps all count.
//!     let visits = session.update("visits", |n: Option<u64>| Some(n.unwrap_or(0) + 1)).await?;
//!     Ok(format!("visit {}", visits.unwrap_or(0)))
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // The file cache, or any store URL (redis://, postgres://, sqlite://, memcache://).
//! let store = fscache::store::open("file://./sessions")?;
//! let sessions = Sessions::new(store, SessionConfig::default().cookie_name("id"))?;
//! let app: Router = Router::new()
//!     .route("/", get(page))
//!     .layer(SessionLayer::new(sessions));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! # What a request costs
//! The session is loaded on a handler's first use of [`Session`] (one store call)
//! and saved after the handler's response is made (one store call when it changed,
//! or when its expiry is due to slide; none otherwise): a request that never uses
//! it costs no store call, and one that only reads it costs one. The `Set-Cookie`
//! and `Vary: Cookie` headers of [`Sessions::save`] are added to the response.
//!
//! # Guarantees
//! Those of [`Sessions::save`], on every store: two concurrent requests changing
//! different keys both keep their change; [`Session::update`] closures are replayed
//! on the stored value, so concurrent counter bumps and cart additions all count;
//! a [`destroy`](Session::destroy) is never undone by a request that loaded the
//! session before it; [`regenerate`](Session::regenerate) deletes the old id. A
//! save that fails with a retryable error ([`Error::is_retryable`]) is retried
//! once (saves are retry-safe); if it still fails, the response becomes `503
//! Service Unavailable` (`500` for other errors) and the handler's response is
//! dropped, so a client never sees a success whose change was not stored.
//!
//! Concurrent saves of one session in this process take turns, and are written in
//! batches: a save that finds its session's turn free lets the requests that are
//! ready to run go first (one yield to the runtime), then writes its own save and
//! every save of the turn that queued meanwhile, in the order they came, with one
//! merge (one store call for the batch); the saves that queue while that write is
//! under way go in the next batch. Each request still gets its own outcome: if
//! the merged write fails, each of its saves is written alone, so an
//! [`update`](Session::update) closure that fails on the stored value fails only
//! its own request.
//!
//! # Where store calls run
//! [`StoreCalls`], picked by measurement (BENCHMARKS.md):
//! - Redis: awaited on the request's task through the redis crate's async
//!   `ConnectionManager`, one multiplexed connection whose commands from
//!   concurrent requests share round trips; no thread hop, no pool.
//! - The file store: inline on the async worker (a load or save is a handful of
//!   small syscalls, cheaper than the hop to another thread).
//! - PostgreSQL, SQLite, Memcached: the sync store on tokio's blocking pool.
//!
//! Every path runs the same load and save code as [`Sessions`], so the guarantees
//! below hold on each.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use ::axum_core::extract::FromRequestParts;
use ::axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderValue, Request, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::session::{self, SaveOutcome, Sessions, UserSession};
use crate::store::Store;

/// Where the layer runs its store calls (a session's load and save).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreCalls {
    /// Through the async client for Redis ([`Async`](Self::Async)), inline for the
    /// file store, on the blocking pool for every other engine.
    #[default]
    Auto,
    /// Through the engine's async client, awaited on the request's task: one
    /// multiplexed connection that pipelines the commands of concurrent requests.
    /// fscache has one for a `RedisStore` on a single-server URL (`redis://`;
    /// with the `redis` feature; the runtime needs its time driver, which
    /// `#[tokio::main]` enables); for other stores, and for `redis-sentinel://`,
    /// `redis-cluster://`, `rediss://` and URLs with `wait_replicas`, whose calls
    /// go through the sync client on the blocking pool, this is
    /// [`Auto`](Self::Auto).
    Async,
    /// On the async worker thread itself: no thread hop, but the worker waits
    /// for the call. Right for calls of a few microseconds (the file store).
    Inline,
    /// On tokio's blocking pool (`spawn_blocking`): the worker is free while a
    /// network round trip or a lock wait lasts.
    Blocking,
}

/// Where [`Shared`] runs store calls ([`StoreCalls`] resolved for its store).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Inline,
    Blocking,
    /// The store is a `RedisStore`: its async client.
    #[cfg(feature = "redis")]
    AsyncRedis,
}

/// How many save turns [`Shared`] keeps (see `Shared::turn`).
const TURNS: usize = 256;

/// What a Redis turn knows: a store key and what the last save wrote there.
#[cfg(feature = "redis")]
type Known = crate::store::redis::Known;
#[cfg(not(feature = "redis"))]
type Known = ();

/// A save's view, given back with its outcome (a failed save is retried with it).
type Saved = (session::Session, Result<SaveOutcome>);

/// The saves of the sessions whose ids pick one turn (see `Shared::turn`).
#[derive(Default)]
struct Turn {
    /// A save of this turn is being written; saves that come meanwhile queue.
    busy: bool,
    /// The queued saves, in the order they came, and where each outcome goes.
    queue: Vec<(session::Session, tokio::sync::oneshot::Sender<Saved>)>,
    /// On Redis, what the last save of this turn wrote: the next merges onto it
    /// without a load.
    known: Option<Known>,
}

struct Shared<S: Store> {
    sessions: Sessions<S>,
    mode: Mode,
    /// Saves of one session in this process take turns (see `Shared::turn`).
    turns: Box<[std::sync::Mutex<Turn>]>,
    /// Requests in the layer that have not handed in their save (see [`Active`]):
    /// a save waits a moment for others only when there are some (see
    /// `Shared::yields`).
    active: AtomicUsize,
    /// How many saves yielded before their write (for the tests).
    #[cfg(test)]
    yielded: AtomicUsize,
}

/// A request in the layer, counted in `Shared::active` until it hands in its save
/// or ends.
struct Active<S: Store> {
    shared: Arc<Shared<S>>,
}

impl<S: Store> Active<S> {
    fn new(shared: &Arc<Shared<S>>) -> Self {
        shared.active.fetch_add(1, Ordering::Relaxed);
        Active {
            shared: Arc::clone(shared),
        }
    }
}

impl<S: Store> Drop for Active<S> {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Ends a write of a turn (when dropped, also if the write was cancelled or
/// panicked): the queue's saves go next, in one task, or the turn is free.
struct TurnGuard<S: Store + 'static> {
    shared: Arc<Shared<S>>,
    slot: usize,
    /// What the write leaves known (`None` unless it succeeded).
    known: Option<Known>,
}

impl<S: Store + 'static> Drop for TurnGuard<S> {
    fn drop(&mut self) {
        let mut turn = self.shared.lock_turn(self.slot);
        turn.known = self.known.take();
        if turn.queue.is_empty() {
            turn.busy = false;
            return;
        }
        drop(turn);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(Arc::clone(&self.shared).write_queue(self.slot));
            }
            // No runtime (it is shutting down): the queued saves' requests are
            // being dropped too, and their replies with them.
            Err(_) => self.shared.lock_turn(self.slot).busy = false,
        }
    }
}

impl<S: Store + 'static> Shared<S> {
    /// The store as a `RedisStore`, in [`Mode::AsyncRedis`].
    #[cfg(feature = "redis")]
    fn redis(&self) -> Option<&crate::store::RedisStore> {
        if self.mode != Mode::AsyncRedis {
            return None;
        }
        let any = self.sessions.store().as_any()?;
        any.downcast_ref::<crate::store::RedisStore>()
    }

    /// Loads the request's session.
    async fn load(self: &Arc<Self>, cookie: Option<String>) -> Result<session::Session> {
        #[cfg(feature = "redis")]
        if let Some(redis) = self.redis() {
            let redis = crate::store::redis::AsyncRedis::new(redis, None);
            return self.sessions.load_with(&redis, cookie.as_deref()).await;
        }
        self.run(move |sessions| sessions.load(cookie.as_deref()))
            .await
    }

    /// The turn of the session with id `id`: one of [`TURNS`], picked by the id.
    ///
    /// Concurrent saves of one session in this process take turns instead of
    /// racing: on an optimistic store (Redis), a compare-and-set of racing saves
    /// mostly loses to the next request's, and under a burst of requests on one
    /// session (a page firing parallel calls) a save could lose many times in a
    /// row; on the file store they would wait for the session's lock, holding a
    /// worker. A save that finds its turn free writes, after one yield to the
    /// runtime, its own save and the saves that queued meanwhile, together, in the
    /// order they came, with one merge ([`Sessions::save_all_with`]); the saves
    /// that queue during that write go next, in a task of their own: under a burst
    /// on one session the store sees one call per batch, not one per request. On
    /// Redis a turn also keeps what its last save wrote, so the next save merges onto
    /// it without a load. Saves of other processes still race, and the store's
    /// atomic update settles those.
    fn turn(&self, id: &str) -> usize {
        let h = id
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        (h % TURNS as u64) as usize
    }

    fn lock_turn(&self, slot: usize) -> std::sync::MutexGuard<'_, Turn> {
        self.turns[slot]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One attempt to save `session`: the outer error is the task's that wrote it.
    async fn save_once(self: &Arc<Self>, session: session::Session) -> Result<Saved> {
        let slot = self.turn(session.id());
        let (reply, saved) = tokio::sync::oneshot::channel();
        let lead = {
            let mut turn = self.lock_turn(slot);
            #[cfg(feature = "test-hooks")]
            let key = self.sessions.store_key(session.id());
            turn.queue.push((session, reply));
            let lead = !std::mem::replace(&mut turn.busy, true);
            drop(turn);
            #[cfg(feature = "test-hooks")]
            if !lead {
                let _ = crate::hooks::run(crate::hooks::Point::SaveQueued, std::path::Path::new(&key));
            }
            lead
        };
        if lead {
            // This request writes the queue, its own save first; if it goes away
            // meanwhile, the turn's guard hands the queue to a task.
            Arc::clone(self).write_queue(slot).await;
        }
        saved.await.map_err(|_| {
            Error::callback(std::io::Error::other(
                "the task writing this session's saves failed",
            ))
        })
    }

    /// Whether a save yields to the runtime before its write, to let other saves
    /// of its session join it:
    /// - with store calls inline, always: a request runs from its load to its save
    ///   without waiting, so the requests it could be written with are still
    ///   outside the layer, ready to run; only a yield lets them in (measured on
    ///   the file store at 16 connections: 23k requests/s without the yield, 33-37k
    ///   with it);
    /// - otherwise, only while other requests are in the layer (each waits for
    ///   its load there): a request alone has no one to wait for, and its yield
    ///   would cost it a wake-up of another worker thread (on Redis at one
    ///   connection, 1.7 futex calls per request and about 7% of its requests/s).
    fn yields(&self) -> bool {
        self.mode == Mode::Inline || self.active.load(Ordering::Relaxed) > 0
    }

    /// Writes the saves queued on turn `slot`, which must be busy: run by the save
    /// that found the turn free, then by a task [`TurnGuard`] spawns for the saves
    /// that queued meanwhile. It may yield to the runtime first (see
    /// [`yields`](Self::yields)), so that requests of the session that are ready
    /// to save queue theirs and go in the same write.
    async fn write_queue(self: Arc<Self>, slot: usize) {
        let mut guard = TurnGuard {
            shared: Arc::clone(&self),
            slot,
            known: None,
        };
        if self.yields() {
            #[cfg(test)]
            self.yielded.fetch_add(1, Ordering::Relaxed);
            tokio::task::yield_now().await;
        }
        let (queue, known) = {
            let mut turn = self.lock_turn(slot);
            (std::mem::take(&mut turn.queue), turn.known.take())
        };
        let (sessions, replies): (Vec<_>, Vec<_>) = queue.into_iter().unzip();
        #[cfg(feature = "test-hooks")]
        if let Some(first) = sessions.first() {
            let key = self.sessions.store_key(first.id());
            let _ = crate::hooks::run(crate::hooks::Point::SaveWriting, std::path::Path::new(&key));
        }
        // None: the blocking task failed; the replies are dropped, which their
        // requests see as an error.
        let Some((sessions, results, known)) = self.write(sessions, known).await else {
            return;
        };
        guard.known = known;
        for ((session, reply), result) in sessions.into_iter().zip(replies).zip(results) {
            // A request that went away (its client disconnected) still had its
            // save written; only the reply has no one to go to.
            let _ = reply.send((session, result));
        }
    }

    /// Saves `sessions` in order (see [`Sessions::save_all_with`]) where
    /// [`StoreCalls`] says; also returns what is known afterwards (on Redis, if
    /// every save succeeded). `None` if the blocking task failed.
    async fn write(
        self: &Arc<Self>,
        mut sessions: Vec<session::Session>,
        known: Option<Known>,
    ) -> Option<(Vec<session::Session>, Vec<Result<SaveOutcome>>, Option<Known>)> {
        #[cfg(feature = "redis")]
        if let Some(redis) = self.redis() {
            let redis = crate::store::redis::AsyncRedis::new(redis, known);
            let results = self.sessions.save_all_with(&redis, &mut sessions).await;
            let known = results.iter().all(Result::is_ok).then(|| redis.into_known());
            return Some((sessions, results, known.flatten()));
        }
        let _ = known;
        let n = sessions.len();
        let saved = self
            .run(move |all| {
                let results = all.save_all(&mut sessions)?;
                Ok((sessions, results))
            })
            .await;
        match saved {
            Ok((sessions, results)) => Some((sessions, results, None)),
            // `save_all` cannot fail through the sync store (its calls are ready at
            // once); a failed blocking task lost the views.
            Err(e) => {
                log::error!("fscache: {n} session saves not written: {}", e.report());
                None
            }
        }
    }

    /// Runs a store call where [`StoreCalls`] says.
    async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Sessions<S>) -> Result<T> + Send + 'static,
    {
        if self.mode == Mode::Inline {
            return f(&self.sessions);
        }
        let shared = Arc::clone(self);
        match tokio::task::spawn_blocking(move || f(&shared.sessions)).await {
            Ok(r) => r,
            Err(e) => Err(Error::callback(std::io::Error::other(format!(
                "the blocking session task failed: {e}"
            )))),
        }
    }

    /// Saves `session`, retrying once after a retryable error.
    async fn save(self: &Arc<Self>, session: session::Session) -> Result<SaveOutcome> {
        let mut session = session;
        let mut retried = false;
        loop {
            let (back, result) = self.save_once(session).await?;
            session = back;
            match result {
                Err(e) if e.is_retryable() && !retried => {
                    log::warn!("fscache: a session save failed ({e}); retrying once");
                    retried = true;
                }
                other => return other,
            }
        }
    }
}

/// The tower [`Layer`](tower_layer::Layer) that gives handlers a [`Session`].
pub struct SessionLayer<S: Store> {
    shared: Arc<Shared<S>>,
}

impl<S: Store> Clone for SessionLayer<S> {
    fn clone(&self) -> Self {
        SessionLayer {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: Store> std::fmt::Debug for SessionLayer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionLayer")
            .field("engine", &self.shared.sessions.store().engine())
            .field("mode", &self.shared.mode)
            .finish()
    }
}

impl<S: Store + 'static> SessionLayer<S> {
    /// The layer over `sessions` (any store, any [`SessionConfig`](crate::session::SessionConfig)),
    /// with [`StoreCalls::Auto`].
    pub fn new(sessions: Sessions<S>) -> Self {
        SessionLayer::with_store_calls(sessions, StoreCalls::Auto)
    }

    /// The layer, with store calls run where `calls` says.
    pub fn with_store_calls(sessions: Sessions<S>, calls: StoreCalls) -> Self {
        #[cfg(feature = "redis")]
        let is_redis = sessions
            .store()
            .as_any()
            .and_then(|any| any.downcast_ref::<crate::store::RedisStore>())
            .is_some_and(crate::store::RedisStore::has_async_client);
        #[cfg(not(feature = "redis"))]
        let is_redis = false;
        let mode = match calls {
            #[cfg(feature = "redis")]
            StoreCalls::Auto | StoreCalls::Async if is_redis => Mode::AsyncRedis,
            StoreCalls::Auto | StoreCalls::Async if sessions.store().engine() == "file" => {
                Mode::Inline
            }
            StoreCalls::Auto | StoreCalls::Async => Mode::Blocking,
            StoreCalls::Inline => Mode::Inline,
            StoreCalls::Blocking => Mode::Blocking,
        };
        let _ = is_redis;
        SessionLayer {
            shared: Arc::new(Shared {
                sessions,
                mode,
                turns: (0..TURNS).map(|_| std::sync::Mutex::default()).collect(),
                active: AtomicUsize::new(0),
                #[cfg(test)]
                yielded: AtomicUsize::new(0),
            }),
        }
    }

    /// The sessions this layer loads and saves.
    pub fn sessions(&self) -> &Sessions<S> {
        &self.shared.sessions
    }
}

impl<I, S: Store> tower_layer::Layer<I> for SessionLayer<S> {
    type Service = SessionService<I, S>;

    fn layer(&self, inner: I) -> Self::Service {
        SessionService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service [`SessionLayer`] wraps around an app.
pub struct SessionService<I, S: Store> {
    inner: I,
    shared: Arc<Shared<S>>,
}

impl<I: Clone, S: Store> Clone for SessionService<I, S> {
    fn clone(&self) -> Self {
        SessionService {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<I, S, B> tower_service::Service<Request<B>> for SessionService<I, S>
where
    I: tower_service::Service<Request<B>, Response = Response> + Clone + Send + 'static,
    I::Future: Send + 'static,
    S: Store + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = I::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, I::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let cookie = cookie_header(req.headers());
        let handle = Session {
            inner: Arc::new(Handle {
                shared: Arc::clone(&self.shared) as Arc<dyn Backend>,
                cookie,
                slot: tokio::sync::Mutex::new(None),
            }),
        };
        req.extensions_mut().insert(handle.clone());
        // The clone that was made ready by poll_ready is the one that serves.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        let active = Active::new(&shared);
        Box::pin(async move {
            let mut resp = inner.call(req).await?;
            let loaded = handle.inner.slot.lock().await.take();
            // Handed in (or nothing to save): no save need wait for this request.
            drop(active);
            let Some(session) = loaded else {
                return Ok(resp);
            };
            match shared.save(session).await {
                Ok(outcome) => apply(&mut resp, outcome),
                Err(e) => {
                    log::error!("fscache: session not saved: {}", e.report());
                    resp = e.into_response();
                }
            }
            Ok(resp)
        })
    }
}

/// All the request's `Cookie` headers as one (HTTP/2 may send several).
fn cookie_header(headers: &http::HeaderMap) -> Option<String> {
    let mut joined: Option<String> = None;
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        match &mut joined {
            Some(j) => {
                j.push_str("; ");
                j.push_str(value);
            }
            None => joined = Some(value.to_owned()),
        }
    }
    joined
}

fn apply(resp: &mut Response, outcome: SaveOutcome) {
    if let Some(cookie) = outcome.set_cookie {
        match HeaderValue::from_str(&cookie) {
            Ok(v) => {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
            // The cookie crate never writes bytes a header cannot hold.
            Err(e) => log::error!("fscache: a Set-Cookie value is not a header value: {e}"),
        }
    }
    if outcome.vary_cookie {
        resp.headers_mut()
            .append(header::VARY, HeaderValue::from_static("cookie"));
    }
}

/// A call on a user's index (see [`Session::user_sessions`]).
enum UserCall {
    List { current: Option<String> },
    EndOne { handle: String },
    EndAll { except: Option<String> },
}

/// What a [`UserCall`] returns.
enum UserReply {
    List(Vec<UserSession>),
    Ended(usize),
}

/// The layer's shared state with its store type erased, so [`Session`] has none.
trait Backend: Send + Sync {
    fn load(
        self: Arc<Self>,
        cookie: Option<String>,
    ) -> Pin<Box<dyn Future<Output = Result<session::Session>> + Send>>;

    fn handle(&self, session: &session::Session) -> Option<String>;

    fn user_call(
        self: Arc<Self>,
        user: String,
        call: UserCall,
    ) -> Pin<Box<dyn Future<Output = Result<UserReply>> + Send>>;
}

impl<S: Store + 'static> Backend for Shared<S> {
    fn load(
        self: Arc<Self>,
        cookie: Option<String>,
    ) -> Pin<Box<dyn Future<Output = Result<session::Session>> + Send>> {
        Box::pin(async move { Shared::load(&self, cookie).await })
    }

    fn handle(&self, session: &session::Session) -> Option<String> {
        self.sessions.current_handle(Some(session))
    }

    fn user_call(
        self: Arc<Self>,
        user: String,
        call: UserCall,
    ) -> Pin<Box<dyn Future<Output = Result<UserReply>> + Send>> {
        Box::pin(async move {
            #[cfg(feature = "redis")]
            if let Some(redis) = self.redis() {
                let redis = crate::store::redis::AsyncRedis::new(redis, None);
                return user_call(&self.sessions, &redis, &user, call).await;
            }
            self.run(move |sessions| {
                let calls = crate::store::calls::SyncCalls(sessions.store());
                crate::store::calls::ready(user_call(sessions, &calls, &user, call))
            })
            .await
        })
    }
}

async fn user_call<S: Store, C: crate::store::calls::Calls>(
    sessions: &Sessions<S>,
    calls: &C,
    user: &str,
    call: UserCall,
) -> Result<UserReply> {
    Ok(match call {
        UserCall::List { current } => {
            UserReply::List(sessions.user_sessions_with(calls, user, current).await?)
        }
        UserCall::EndOne { handle } => UserReply::Ended(usize::from(
            sessions.end_user_session_with(calls, user, &handle).await?,
        )),
        UserCall::EndAll { except } => {
            UserReply::Ended(sessions.end_user_sessions_with(calls, user, except).await?)
        }
    })
}

struct Handle {
    shared: Arc<dyn Backend>,
    cookie: Option<String>,
    /// The request's session, loaded on first use; taken by the save.
    slot: tokio::sync::Mutex<Option<session::Session>>,
}

/// A request's session: the axum extractor of [`SessionLayer`]. Cheap to clone
/// (clones share one session).
///
/// Every method loads the session on first use (one store call) and then works on
/// the request's own copy; the changes are merged into the stored record after the
/// handler returns (see [`Sessions::save`]). Methods wait only for that first
/// load. For anything not listed here, [`with`](Session::with) hands out the
/// [`fscache::session::Session`](crate::session::Session) itself.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Handle>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

impl Session {
    /// Runs `f` on the request's session, loading it first if this is its first
    /// use.
    ///
    /// # Errors
    /// The load's store errors (the next call tries the load again).
    pub async fn with<R>(&self, f: impl FnOnce(&mut session::Session) -> R) -> Result<R> {
        let mut slot = self.inner.slot.lock().await;
        let session = match &mut *slot {
            Some(session) => session,
            None => {
                let backend = Arc::clone(&self.inner.shared);
                slot.insert(backend.load(self.inner.cookie.clone()).await?)
            }
        };
        Ok(f(session))
    }

    /// The value under `key`, if any (see [`session::Session::get`]).
    ///
    /// # Errors
    /// The load's store errors; [`Error::Deserialize`] when the value is not a `T`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.with(|s| s.get(key)).await?
    }

    /// Sets `key` to `value`.
    ///
    /// # Errors
    /// The load's store errors; [`Error::Serialize`].
    pub async fn insert<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        self.with(|s| s.insert(key, value)).await?
    }

    /// Removes `key`; whether it was there.
    ///
    /// # Errors
    /// The load's store errors.
    pub async fn remove(&self, key: &str) -> Result<bool> {
        self.with(|s| s.remove(key)).await
    }

    /// Sets `key` to `f(current)` now and again on the stored value at save, so
    /// concurrent requests' updates all count (see [`session::Session::update`]).
    ///
    /// # Errors
    /// The load's store errors; [`Error::Deserialize`] / [`Error::Serialize`].
    pub async fn update<T, F>(&self, key: &str, f: F) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned,
        F: Fn(Option<T>) -> Option<T> + Send + 'static,
    {
        self.with(|s| s.update(key, f)).await?
    }

    /// Removes every key.
    ///
    /// # Errors
    /// The load's store errors.
    pub async fn clear(&self) -> Result<()> {
        self.with(|s| s.clear()).await
    }

    /// A new id for this session (call it at login): the save stores the session
    /// under the new id, deletes the old one and sends the new cookie.
    ///
    /// # Errors
    /// The load's store errors; the OS randomness source failing.
    pub async fn regenerate(&self) -> Result<()> {
        self.with(|s| s.regenerate()).await?
    }

    /// Ends the session (logout): the save deletes the record and expires the
    /// cookie, and no request that loaded it earlier can bring it back.
    ///
    /// # Errors
    /// The load's store errors.
    pub async fn destroy(&self) -> Result<()> {
        self.with(|s| s.destroy()).await
    }

    /// Ties the session to `user` with an optional `label` (see
    /// [`session::Session::set_user`]); call it at login, after
    /// [`regenerate`](Self::regenerate).
    ///
    /// # Errors
    /// The load's store errors; [`Error::Config`] for an empty or overlong user id
    /// or label.
    pub async fn set_user(&self, user: &str, label: Option<&str>) -> Result<()> {
        self.with(|s| s.set_user(user, label)).await?
    }

    /// The user this session is tied to, if any.
    ///
    /// # Errors
    /// The load's store errors.
    pub async fn user(&self) -> Result<Option<String>> {
        self.with(|s| s.user().map(str::to_owned)).await
    }

    /// The sessions of this session's user ("your devices"), this one marked
    /// [`current`](UserSession::current); empty when the session is tied to no
    /// user. See [`Sessions::user_sessions`].
    ///
    /// # Errors
    /// Store errors.
    pub async fn user_sessions(&self) -> Result<Vec<UserSession>> {
        let Some((user, current)) = self.user_and_handle().await? else {
            return Ok(Vec::new());
        };
        match self.user_call(user, UserCall::List { current }).await? {
            UserReply::List(list) => Ok(list),
            UserReply::Ended(_) => unreachable!("a list call lists"),
        }
    }

    /// Ends one session of this session's user, by the
    /// [`handle`](UserSession::handle) a listing gave. Whether it was one of the
    /// user's sessions. See [`Sessions::end_user_session`].
    ///
    /// # Errors
    /// Store errors.
    pub async fn end_user_session(&self, handle: &str) -> Result<bool> {
        let Some((user, _)) = self.user_and_handle().await? else {
            return Ok(false);
        };
        let call = UserCall::EndOne {
            handle: handle.to_owned(),
        };
        Ok(self.ended(self.user_call(user, call).await?) == 1)
    }

    /// "Log out all other devices": ends every session of this session's user but
    /// this one; how many. See [`Sessions::end_user_sessions`].
    ///
    /// # Errors
    /// Store errors.
    pub async fn end_other_sessions(&self) -> Result<usize> {
        let Some((user, current)) = self.user_and_handle().await? else {
            return Ok(0);
        };
        let call = UserCall::EndAll { except: current };
        Ok(self.ended(self.user_call(user, call).await?))
    }

    /// "Log out everywhere": ends every session of this session's user, this one
    /// too (its cookie is expired by the response); how many.
    ///
    /// # Errors
    /// Store errors.
    pub async fn end_all_sessions(&self) -> Result<usize> {
        let Some((user, _)) = self.user_and_handle().await? else {
            return Ok(0);
        };
        let ended = self.ended(self.user_call(user, UserCall::EndAll { except: None }).await?);
        self.destroy().await?;
        Ok(ended)
    }

    async fn user_and_handle(&self) -> Result<Option<(String, Option<String>)>> {
        let backend = Arc::clone(&self.inner.shared);
        self.with(|s| s.user().map(|u| (u.to_owned(), backend.handle(s))))
            .await
    }

    async fn user_call(&self, user: String, call: UserCall) -> Result<UserReply> {
        Arc::clone(&self.inner.shared).user_call(user, call).await
    }

    fn ended(&self, reply: UserReply) -> usize {
        match reply {
            UserReply::Ended(n) => n,
            UserReply::List(_) => unreachable!("an end call ends"),
        }
    }

    /// Makes the session permanent (a cookie with `Max-Age`) or not (a browser
    /// session cookie).
    ///
    /// # Errors
    /// The load's store errors.
    pub async fn set_permanent(&self, permanent: bool) -> Result<()> {
        self.with(|s| s.set_permanent(permanent)).await
    }
}

/// Why the [`Session`] extractor failed: no [`SessionLayer`] wraps the route.
#[derive(Debug)]
pub struct MissingLayer;

impl std::fmt::Display for MissingLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fscache::axum::Session used on a route without fscache::axum::SessionLayer")
    }
}

impl std::error::Error for MissingLayer {}

impl IntoResponse for MissingLayer {
    fn into_response(self) -> Response {
        log::error!("{self}");
        (StatusCode::INTERNAL_SERVER_ERROR, "session layer missing\n").into_response()
    }
}

impl<St: Send + Sync> FromRequestParts<St> for Session {
    type Rejection = MissingLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &St) -> Result<Self, MissingLayer> {
        parts.extensions.get::<Session>().cloned().ok_or(MissingLayer)
    }
}

/// An error as a response: `503 Service Unavailable` when the store failed
/// (I/O, an engine, a lost race: a later request may succeed), `500 Internal
/// Server Error` otherwise. The body is a short fixed text; the error itself is
/// logged, never sent (it may name paths or hosts).
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match &self {
            Error::Io { .. } | Error::Lock { .. } | Error::Engine { .. } | Error::Conflict { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        log::error!("fscache: {}", self.report());
        let body = if status == StatusCode::SERVICE_UNAVAILABLE {
            "session store unavailable\n"
        } else {
            "internal error\n"
        };
        (status, body).into_response()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::AtomicU64;

    use tower_layer::Layer;
    use tower_service::Service;

    use super::*;
    use crate::FileSystemCache;
    use crate::session::SessionConfig;

    /// The app: bumps `n` in the request's session.
    #[derive(Clone)]
    struct Bump;

    impl Service<Request<()>> for Bump {
        type Response = Response;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: Request<()>) -> Self::Future {
            let session = req.extensions().get::<Session>().cloned().unwrap();
            Box::pin(async move {
                let n = session
                    .update("n", |n: Option<u64>| Some(n.unwrap_or(0) + 1))
                    .await
                    .unwrap();
                Ok(n.unwrap_or(0).to_string().into_response())
            })
        }
    }

    /// A layer over a file store in a temp dir, with one stored session holding
    /// `n = 0`: the layer, the session's `Cookie` header and the dir.
    fn layer(calls: StoreCalls) -> (SessionLayer<FileSystemCache>, String, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileSystemCache::open(dir.path()).unwrap();
        let sessions = Sessions::new(cache, SessionConfig::default()).unwrap();
        let mut view = sessions.load(None).unwrap();
        view.insert("n", &0_u64).unwrap();
        let cookie = sessions.save(&mut view).unwrap().set_cookie.unwrap();
        let cookie = cookie.split(';').next().unwrap().to_owned();
        (SessionLayer::with_store_calls(sessions, calls), cookie, dir)
    }

    fn request(
        layer: &SessionLayer<FileSystemCache>,
        cookie: &str,
    ) -> impl Future<Output = Result<Response, Infallible>> + use<> {
        let req = Request::builder()
            .header(header::COOKIE, cookie)
            .body(())
            .unwrap();
        layer.layer(Bump).call(req)
    }

    fn stored(layer: &SessionLayer<FileSystemCache>, cookie: &str) -> u64 {
        let view = layer.sessions().load(Some(cookie)).unwrap();
        view.get("n").unwrap().unwrap()
    }

    fn one_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().unwrap()
    }

    /// Inline, a save yields before it writes, and the saves of its session's
    /// requests that were ready to run join it, even those not yet in the layer.
    /// Forced on a one-thread runtime (no store call waits): the second request
    /// enters the layer only when polled, after the first ran to its save (as one
    /// whose bytes the server has yet to read), and a `probe` polled after both
    /// sees nothing written: the first save yielded, the second queued behind it,
    /// and both went in one write.
    #[test]
    fn inline_saves_of_one_session_ready_together_are_written_together() {
        let (layer, cookie, _dir) = layer(StoreCalls::Inline);
        let seen = AtomicU64::new(u64::MAX);
        let probe = || async { seen.store(stored(&layer, &cookie), Ordering::SeqCst) };
        let (a, b, ()) = one_thread()
            .block_on(async {
                let later = async { request(&layer, &cookie).await };
                tokio::join!(request(&layer, &cookie), later, probe())
            });
        assert_eq!(seen.load(Ordering::SeqCst), 0, "a save was written before the batch");
        assert_eq!(a.unwrap().status(), StatusCode::OK);
        assert_eq!(b.unwrap().status(), StatusCode::OK);
        assert_eq!(stored(&layer, &cookie), 2, "both bumps count");
        assert_eq!(layer.shared.active.load(Ordering::SeqCst), 0);
    }

    /// With store calls on the blocking pool (as on Redis's async path, where
    /// each request waits for its load in the layer), a save yields only while
    /// another request is in the layer: a request alone does not, two of one
    /// session do.
    #[test]
    fn a_save_that_waits_for_its_calls_yields_only_beside_other_requests() {
        let (layer, cookie, _dir) = layer(StoreCalls::Blocking);
        let rt = one_thread();
        let yielded = || layer.shared.yielded.load(Ordering::SeqCst);
        for _ in 0..3 {
            rt.block_on(request(&layer, &cookie)).unwrap();
        }
        assert_eq!(yielded(), 0, "a lone request's save yielded");
        let (a, b) = rt.block_on(async { tokio::join!(request(&layer, &cookie), request(&layer, &cookie)) });
        assert_eq!(a.unwrap().status(), StatusCode::OK);
        assert_eq!(b.unwrap().status(), StatusCode::OK);
        assert!(yielded() >= 1, "no save yielded beside another request");
        assert_eq!(stored(&layer, &cookie), 5);
        assert_eq!(layer.shared.active.load(Ordering::SeqCst), 0);
    }
}
