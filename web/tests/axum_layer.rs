//! fscache's session layer for axum (`fscache::axum`) in a real axum server on
//! 127.0.0.1, driven over HTTP: the interleavings its guarantees are about, forced
//! with a gate in the app (a request loads and changes the session, then waits
//! while another request runs to the end), on every store; the store calls a
//! request costs; a save that fails once (retried) or twice (503); the cookie
//! settings of `SessionConfig`.

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use fscache::Store;
use fscache::axum::{Session, SessionLayer, StoreCalls};
use fscache::hooks::Point;
use fscache::session::{SessionConfig, Sessions};
use tokio::sync::Notify;
use ureq::Agent;

mod common;
#[allow(dead_code)]
#[path = "../../tests/common/faulty.rs"]
mod faulty;
#[path = "../../tests/common/lossy_proxy.rs"]
mod lossy_proxy;

use faulty::{Faulty, When};

/// Where the slow request stops: it says it got there, then waits to be released.
#[derive(Clone)]
struct Gate {
    entered: Arc<Mutex<mpsc::Sender<()>>>,
    release: Arc<Notify>,
}

async fn login(session: Session) -> Result<&'static str, fscache::Error> {
    session.regenerate().await?;
    session.insert("user", "ann").await?;
    Ok("ok")
}

async fn me(session: Session) -> Result<String, fscache::Error> {
    Ok(session
        .get::<String>("user")
        .await?
        .unwrap_or_else(|| "nobody".into()))
}

/// The session as JSON (every key).
async fn dump(session: Session) -> Result<String, fscache::Error> {
    session
        .with(|s| {
            let map: serde_json::Map<String, serde_json::Value> = s
                .keys()
                .map(|k| (k.to_owned(), s.get(k).unwrap().unwrap()))
                .collect();
            serde_json::Value::Object(map).to_string()
        })
        .await
}

async fn set(
    session: Session,
    Path((key, value)): Path<(String, String)>,
) -> Result<&'static str, fscache::Error> {
    session.insert(&key, &value).await?;
    Ok("set")
}

async fn remove(session: Session, Path(key): Path<String>) -> Result<&'static str, fscache::Error> {
    session.remove(&key).await?;
    Ok("removed")
}

async fn bump(session: Session, Path(key): Path<String>) -> Result<String, fscache::Error> {
    let n = session
        .update(&key, |n: Option<u64>| Some(n.unwrap_or(0) + 1))
        .await?;
    Ok(n.unwrap_or(0).to_string())
}

/// A bump whose closure panics when it meets 5 (as it may when replayed on the
/// stored value).
async fn boom(session: Session, Path(key): Path<String>) -> Result<String, fscache::Error> {
    let n = session
        .update(&key, |n: Option<u64>| {
            assert_ne!(n, Some(5), "boom");
            Some(n.unwrap_or(0) + 1)
        })
        .await?;
    Ok(n.unwrap_or(0).to_string())
}

/// Changes the session as `/set` or `/bump` would, then waits at the gate; the
/// layer saves after.
async fn slow(
    State(gate): State<Gate>,
    session: Session,
    Path((op, key)): Path<(String, String)>,
) -> Result<&'static str, fscache::Error> {
    match op.as_str() {
        "set" => session.insert(&key, "slow").await?,
        _ => {
            session
                .update(&key, |n: Option<u64>| Some(n.unwrap_or(0) + 1))
                .await?;
        }
    }
    gate.entered.lock().unwrap().send(()).unwrap();
    gate.release.notified().await;
    Ok("slow done")
}

async fn logout(session: Session) -> Result<&'static str, fscache::Error> {
    session.destroy().await?;
    Ok("bye")
}

async fn plain() -> &'static str {
    "no session here"
}

fn agent() -> Agent {
    Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// An app with the layer over `sessions`, served on 127.0.0.1 by its own runtime.
struct App {
    base: String,
    gate: Gate,
    entered: mpsc::Receiver<()>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn serve<S: Store + 'static>(sessions: Sessions<S>, calls: StoreCalls) -> App {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (entered_tx, entered) = mpsc::channel();
    let gate = Gate {
        entered: Arc::new(Mutex::new(entered_tx)),
        release: Arc::new(Notify::new()),
    };
    let app = Router::new()
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/dump", get(dump))
        .route("/set/{key}/{value}", post(set))
        .route("/bump/{key}", post(bump))
        .route("/remove/{key}", post(remove))
        .route("/boom/{key}", post(boom))
        .route("/slow/{op}/{key}", post(slow))
        .route("/logout", post(logout))
        .route("/plain", get(plain))
        .layer(SessionLayer::with_store_calls(sessions, calls))
        .with_state(gate.clone());
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(async move { axum::serve(listener, app).await });
    App {
        base,
        gate,
        entered,
        runtime: Some(runtime),
    }
}

/// A config whose keys no other test (or earlier run on a shared engine) uses.
fn config() -> SessionConfig {
    SessionConfig::default()
        .cookie_name("id")
        .key_prefix(format!("layer-{}:", fscache::session::new_id().unwrap()))
}

struct Reply {
    status: u16,
    cookie: Option<String>,
    body: String,
}

fn call(a: &Agent, method: &str, url: &str, cookie: &str) -> Reply {
    let mut r = match method {
        "GET" => a.get(url).header("Cookie", cookie).call(),
        _ => a.post(url).header("Cookie", cookie).send_empty(),
    }
    .unwrap();
    let cookie = r
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned());
    Reply {
        status: r.status().as_u16(),
        cookie,
        body: r.body_mut().read_to_string().unwrap(),
    }
}

fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

/// Logs in; the session cookie.
fn log_in(app: &App) -> String {
    let r = call(&agent(), "POST", &format!("{}/login", app.base), "");
    assert_eq!(r.status, 200, "{}", r.body);
    pair(&r.cookie.expect("login sets the cookie"))
}

/// Starts `path` (a `/slow/…` request) and returns once it has loaded and changed
/// the session and waits at the gate.
fn start_slow(app: &App, path: &str, cookie: &str) -> std::thread::JoinHandle<Reply> {
    let (url, cookie) = (format!("{}{path}", app.base), cookie.to_owned());
    let t = std::thread::spawn(move || call(&agent(), "POST", &url, &cookie));
    app.entered
        .recv_timeout(Duration::from_secs(10))
        .expect("the slow request reached the gate");
    t
}

fn dump_of(app: &App, cookie: &str) -> serde_json::Value {
    let r = call(&agent(), "GET", &format!("{}/dump", app.base), cookie);
    serde_json::from_str(&r.body).unwrap()
}

/// Two requests change different keys, the second while the first holds its
/// loaded copy: both changes are kept. Then two counter bumps the same way: both
/// count.
fn concurrent_changes_are_merged(name: &str, store: Arc<dyn Store>, calls: StoreCalls) {
    let app = serve(Sessions::new(store, config()).unwrap(), calls);
    let cookie = log_in(&app);
    let slow = start_slow(&app, "/slow/set/a", &cookie);
    let r = call(
        &agent(),
        "POST",
        &format!("{}/set/b/fast", app.base),
        &cookie,
    );
    assert_eq!(r.status, 200, "{name}");
    app.gate.release.notify_one();
    assert_eq!(slow.join().unwrap().status, 200, "{name}");
    let all = dump_of(&app, &cookie);
    assert_eq!(all["a"], "slow", "{name}: {all}");
    assert_eq!(all["b"], "fast", "{name}: {all}");
    assert_eq!(all["user"], "ann", "{name}: {all}");

    let slow = start_slow(&app, "/slow/bump/n", &cookie);
    let r = call(&agent(), "POST", &format!("{}/bump/n", app.base), &cookie);
    assert_eq!(r.body, "1", "{name}");
    app.gate.release.notify_one();
    assert_eq!(slow.join().unwrap().status, 200, "{name}");
    assert_eq!(
        dump_of(&app, &cookie)["n"],
        2,
        "{name}: a concurrent bump was lost"
    );
}

/// A request that loaded the session before a logout, and saves after it, does
/// not bring the session back: not under its id, not under a new one.
fn a_logout_stays_a_logout(name: &str, store: Arc<dyn Store>, calls: StoreCalls) {
    let app = serve(Sessions::new(store, config()).unwrap(), calls);
    let cookie = log_in(&app);
    let slow = start_slow(&app, "/slow/set/cart", &cookie);
    let r = call(&agent(), "POST", &format!("{}/logout", app.base), &cookie);
    assert_eq!(r.status, 200, "{name}");
    assert!(r.cookie.unwrap().contains("Max-Age=0"), "{name}");
    app.gate.release.notify_one();
    let late = slow.join().unwrap();
    let me = |cookie: &str| call(&agent(), "GET", &format!("{}/me", app.base), cookie).body;
    assert_eq!(me(&cookie), "nobody", "{name}: the logout was undone");
    if let Some(c) = late.cookie {
        assert_eq!(
            me(&pair(&c)),
            "nobody",
            "{name}: revived under a new id: {c}"
        );
    }
}

/// Login gives a new id; the pre-login id no longer loads anything.
fn login_regenerates_the_id(name: &str, store: Arc<dyn Store>, calls: StoreCalls) {
    let app = serve(Sessions::new(store, config()).unwrap(), calls);
    let r = call(
        &agent(),
        "POST",
        &format!("{}/set/cart/apple", app.base),
        "",
    );
    let before = pair(&r.cookie.expect("a first change sets the cookie"));
    let r = call(&agent(), "POST", &format!("{}/login", app.base), &before);
    let after = pair(&r.cookie.expect("login sets a new cookie"));
    assert_ne!(before, after, "{name}");
    assert_eq!(
        dump_of(&app, &after)["cart"],
        "apple",
        "{name}: data lost at login"
    );
    assert_eq!(
        dump_of(&app, &before),
        serde_json::json!({}),
        "{name}: old id lives"
    );
}

#[test]
fn the_layer_keeps_its_guarantees_on_every_store() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("file://{}", tmp.path().join("sessions").display());
    for (name, url) in common::store_urls(&url) {
        let store: Arc<dyn Store> = Arc::from(fscache::store::open(&url).unwrap());
        let auto = StoreCalls::Auto;
        concurrent_changes_are_merged(&name, Arc::clone(&store), auto);
        a_logout_stays_a_logout(&name, Arc::clone(&store), auto);
        login_regenerates_the_id(&name, store, auto);
    }
}

/// On Redis, `Auto` awaits the redis crate's async client; the sync store on the
/// blocking pool is the other path. Both keep the guarantees (the same session
/// code runs over each).
#[test]
fn redis_keeps_the_guarantees_on_the_async_and_the_blocking_path() {
    let Some(url) = redis_url() else { return };
    for calls in [StoreCalls::Async, StoreCalls::Blocking] {
        let store: Arc<dyn Store> = Arc::from(fscache::store::open(&url).unwrap());
        let name = format!("redis {calls:?}");
        concurrent_changes_are_merged(&name, Arc::clone(&store), calls);
        a_logout_stays_a_logout(&name, Arc::clone(&store), calls);
        login_regenerates_the_id(&name, store, calls);
    }
}

/// The async path loses its connection while a request holds the session: Redis
/// drops every client connection (`CLIENT KILL TYPE normal`) between the
/// request's load and its save. The save fails on the dead connection with a
/// retryable error, the layer retries once on the reconnected client, and the
/// client gets its 200 with the change stored.
#[test]
fn redis_connection_killed_between_load_and_save_is_retried() {
    let Some(url) = redis_url() else { return };
    let store = fscache::store::open(&url).unwrap();
    let app = serve(Sessions::new(store, config()).unwrap(), StoreCalls::Async);
    let cookie = log_in(&app);
    let slow = start_slow(&app, "/slow/set/a", &cookie);
    let killed = redis_command(&url, &["CLIENT", "KILL", "TYPE", "normal"]);
    assert!(
        killed.starts_with(':') && killed != ":0",
        "no connection killed: {killed}"
    );
    app.gate.release.notify_one();
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let all = dump_of(&app, &cookie);
    assert_eq!(all["a"], "slow", "{all}");
    assert_eq!(all["user"], "ann", "{all}");
}

/// The async path's compare-and-set reaches Redis and runs, but its reply is
/// lost with the connection: the layer retries the save (a new save, on a new
/// connection), and the record's save ids keep the retried bump from counting
/// twice, as the compare-and-set's marker does for the sync client's resend.
#[test]
fn a_lost_reply_to_an_async_save_is_retried_and_counts_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let Some(url) = redis_url() else { return };
    let drop_reply = Arc::new(AtomicBool::new(false));
    let proxied = lossy_proxy::lossy_proxy(&url, Arc::clone(&drop_reply));
    let store = fscache::store::open(&proxied).unwrap();
    let app = serve(Sessions::new(store, config()).unwrap(), StoreCalls::Async);
    let cookie = log_in(&app);
    // A bump first, so the layer's connection has loaded the script (a NOSCRIPT
    // reply is not what this test drops).
    let bump = || call(&agent(), "POST", &format!("{}/bump/n", app.base), &cookie);
    assert_eq!(bump().body, "1");
    drop_reply.store(true, Ordering::SeqCst);
    let r = bump();
    assert!(!drop_reply.load(Ordering::SeqCst), "no reply was dropped");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        dump_of(&app, &cookie)["n"],
        2,
        "the lost-reply bump counted once"
    );
    assert_eq!(bump().body, "3");
}

/// A new session's insert (`SET … NX`) reaches Redis and runs, but its reply is
/// lost with the connection: the layer's retry finds the record its first attempt
/// wrote and keeps it, instead of taking "the id is taken" and storing the session
/// again under a new id (which left the first record behind, unreachable, until
/// its TTL).
#[test]
fn a_lost_reply_to_a_new_sessions_insert_leaves_one_record() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let Some(url) = redis_url() else { return };
    let drop_reply = Arc::new(AtomicBool::new(false));
    let proxied = lossy_proxy::lossy_proxy_on(&url, Arc::clone(&drop_reply), b"\r\nNX\r\n");
    let prefix = format!("insert-{}:", fscache::session::new_id().unwrap());
    let store = fscache::store::open(&proxied).unwrap();
    let config = SessionConfig::default()
        .cookie_name("id")
        .key_prefix(prefix.clone());
    let app = serve(Sessions::new(store, config).unwrap(), StoreCalls::Async);
    drop_reply.store(true, Ordering::SeqCst);
    let r = call(&agent(), "POST", &format!("{}/login", app.base), "");
    assert!(!drop_reply.load(Ordering::SeqCst), "no reply was dropped");
    assert_eq!(r.status, 200, "{}", r.body);
    let cookie = pair(&r.cookie.expect("login sets the cookie"));
    assert_eq!(
        call(&agent(), "GET", &format!("{}/me", app.base), &cookie).body,
        "ann"
    );
    let keys = redis_command(&url, &["KEYS", &format!("{prefix}*")]);
    assert_eq!(keys, "*1", "one session record under {prefix}");
}

/// A session whose last value a request removes is deleted from Redis by its
/// save's compare-and-set (the script's delete branch), on the async path and on
/// the blocking one.
#[test]
fn redis_a_session_left_empty_is_deleted_on_both_paths() {
    let Some(url) = redis_url() else { return };
    for calls in [StoreCalls::Async, StoreCalls::Blocking] {
        let prefix = format!("emptied-{}:", fscache::session::new_id().unwrap());
        let config = SessionConfig::default()
            .cookie_name("id")
            .key_prefix(prefix.clone());
        let store = fscache::store::open(&url).unwrap();
        let app = serve(Sessions::new(store, config).unwrap(), calls);
        let r = call(&agent(), "POST", &format!("{}/set/x/1", app.base), "");
        let cookie = pair(&r.cookie.expect("a new session sets the cookie"));
        let keys = || redis_command(&url, &["KEYS", &format!("{prefix}*")]);
        assert_eq!(keys(), "*1", "{calls:?}: the new session's record");
        let r = call(&agent(), "POST", &format!("{}/remove/x", app.base), &cookie);
        assert_eq!((r.status, r.body.as_str()), (200, "removed"), "{calls:?}");
        assert_eq!(
            keys(),
            "*0",
            "{calls:?}: the emptied session's record is gone"
        );
    }
}

fn redis_url() -> Option<String> {
    match std::env::var("FSCACHE_TEST_REDIS") {
        Ok(url) if !url.is_empty() && cfg!(feature = "redis") => Some(url),
        _ => {
            common::cannot_run("FSCACHE_TEST_REDIS is not set or built without `redis`");
            None
        }
    }
}

/// One command to the Redis server of `url` (`redis://HOST:PORT[/DB]`, no AUTH)
/// over a raw socket; the first line of its reply.
fn redis_command(url: &str, args: &[&str]) -> String {
    use std::io::{BufRead, BufReader, Write};
    let host = url.trim_start_matches("redis://");
    let host = host.split('/').next().unwrap();
    let mut conn = std::net::TcpStream::connect(host).unwrap();
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    conn.write_all(req.as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line).unwrap();
    line.trim_end().to_owned()
}

/// On Redis's async path, as on the file store: saves of one session that come
/// while another save of it is being written queue behind it and go to Redis in
/// one compare-and-set. Forced: the first save is held just before its write (a
/// test hook, waiting in `block_in_place` so the runtime keeps serving the other
/// requests) until eight more requests of the session have queued theirs; a proxy
/// counts the `EVALSHA`s that reach Redis.
#[test]
fn redis_saves_queued_behind_a_save_in_flight_go_in_one_compare_and_set() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let _hooks = HOOKS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(url) = redis_url() else { return };
    let scripts = Arc::new(AtomicUsize::new(0));
    let proxied = lossy_proxy::counting_proxy(&url, b"EVALSHA", Arc::clone(&scripts));
    let store = fscache::store::open(&proxied).unwrap();
    let prefix = format!("redis-batch-{}:", fscache::session::new_id().unwrap());
    let config = SessionConfig::default()
        .cookie_name("id")
        .key_prefix(prefix.clone());
    let app = serve(Sessions::new(store, config).unwrap(), StoreCalls::Async);
    let cookie = log_in(&app);
    // A bump first, so the connection has loaded the script (NOSCRIPT, SCRIPT
    // LOAD and the call again would count twice).
    let r = call(&agent(), "POST", &format!("{}/bump/n", app.base), &cookie);
    assert_eq!(r.body, "1");

    let (queued_tx, queued) = mpsc::channel::<()>();
    let queued_tx = Mutex::new(queued_tx);
    let mine = prefix.clone();
    fscache::hooks::set_hook(Point::SaveQueued, move |key| {
        if key.to_str().is_some_and(|k| k.starts_with(&mine)) {
            queued_tx.lock().unwrap().send(()).unwrap();
        }
        Ok(())
    });
    let (held_tx, held) = mpsc::channel::<()>();
    let (release_tx, release) = mpsc::channel::<()>();
    let hold = Mutex::new(Some((held_tx, release)));
    let mine = prefix.clone();
    fscache::hooks::set_hook(Point::SaveWriting, move |key| {
        if !key.to_str().is_some_and(|k| k.starts_with(&mine)) {
            return Ok(());
        }
        let taken = hold.lock().unwrap().take();
        if let Some((held, release)) = taken {
            held.send(()).unwrap();
            tokio::task::block_in_place(|| release.recv_timeout(Duration::from_secs(30))).unwrap();
        }
        Ok(())
    });
    let post = |path: &str| {
        let (url, cookie) = (format!("{}{path}", app.base), cookie.clone());
        std::thread::spawn(move || call(&agent(), "POST", &url, &cookie))
    };
    let first = post("/set/s/first");
    held.recv_timeout(Duration::from_secs(10))
        .expect("the first save reached its write");
    let rest: Vec<_> = (0..8).map(|_| post("/bump/n")).collect();
    for _ in 0..8 {
        queued
            .recv_timeout(Duration::from_secs(10))
            .expect("a save queued behind the held one");
    }
    scripts.store(0, Ordering::SeqCst);
    release_tx.send(()).unwrap();
    let first = first.join().unwrap();
    assert_eq!(first.status, 200, "{}", first.body);
    for r in rest {
        let r = r.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    fscache::hooks::clear_hooks();
    assert_eq!(
        scripts.load(Ordering::SeqCst),
        2,
        "the held save's compare-and-set, then one for the eight queued saves"
    );
    let all = dump_of(&app, &cookie);
    assert_eq!(
        (all["n"].clone(), all["s"].clone()),
        (9.into(), "first".into()),
        "{all}"
    );
}

/// Both ways of running store calls keep the merge (the file store picks inline
/// by default; here each is forced).
#[test]
fn inline_and_blocking_store_calls_both_merge() {
    for calls in [StoreCalls::Inline, StoreCalls::Blocking] {
        let tmp = tempfile::tempdir().unwrap();
        let store = fscache::FileSystemCache::open(tmp.path()).unwrap();
        let app = serve(Sessions::new(store, config()).unwrap(), calls);
        let cookie = log_in(&app);
        let slow = start_slow(&app, "/slow/bump/n", &cookie);
        call(&agent(), "POST", &format!("{}/bump/n", app.base), &cookie);
        app.gate.release.notify_one();
        slow.join().unwrap();
        assert_eq!(dump_of(&app, &cookie)["n"], 2, "{calls:?}");
    }
}

/// Saves of one session that come while another save of it is being written queue
/// behind it and are then written together, with one merge. Forced: the first
/// save is held in the store until eight more requests of the session have queued
/// theirs. All nine changes are kept and the eight cost the store one write. Then
/// the same with a queued save whose `update` fails on the merged value (the held
/// save turned its number into text): that request gets its error, the six others
/// are kept (the merged write failed, so each was written alone).
/// The test hooks are process-wide: the tests that set them take turns.
static HOOKS: Mutex<()> = Mutex::new(());

#[test]
fn saves_queued_behind_a_save_of_their_session_are_written_together() {
    let _hooks = HOOKS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(Faulty::new(
        fscache::FileSystemCache::open(tmp.path()).unwrap(),
    ));
    let prefix = format!("batch-{}:", fscache::session::new_id().unwrap());
    let config = SessionConfig::default()
        .cookie_name("id")
        .key_prefix(prefix.clone());
    let app = serve(
        Sessions::new(Arc::clone(&store), config).unwrap(),
        StoreCalls::Blocking,
    );
    let cookie = log_in(&app);
    let (queued_tx, queued) = mpsc::channel::<()>();
    let queued_tx = Mutex::new(queued_tx);
    fscache::hooks::set_hook(Point::SaveQueued, move |key| {
        if key.to_str().is_some_and(|k| k.starts_with(&prefix)) {
            queued_tx.lock().unwrap().send(()).unwrap();
        }
        Ok(())
    });
    let post = |path: &str| {
        let (url, cookie) = (format!("{}{path}", app.base), cookie.clone());
        std::thread::spawn(move || call(&agent(), "POST", &url, &cookie))
    };
    // Runs `first`, holds its write in the store until `then` have all queued
    // their saves, and returns the replies.
    let held = |first: &str, then: &[&str]| {
        let (held_tx, held) = mpsc::channel::<()>();
        let (release_tx, release) = mpsc::channel::<()>();
        let hold = Mutex::new(Some((held_tx, release)));
        store.before(Some(Box::new(move |op, _key| {
            if op != "compare_and_set" && op != "update" {
                return;
            }
            let taken = hold.lock().unwrap().take();
            if let Some((held, release)) = taken {
                held.send(()).unwrap();
                release.recv_timeout(Duration::from_secs(30)).unwrap();
            }
        })));
        let first = post(first);
        held.recv_timeout(Duration::from_secs(10))
            .expect("the first save reached the store");
        let rest: Vec<_> = then.iter().map(|p| post(p)).collect();
        for _ in then {
            queued
                .recv_timeout(Duration::from_secs(10))
                .expect("a save queued behind the held one");
        }
        store.take_calls();
        release_tx.send(()).unwrap();
        let first = first.join().unwrap();
        let rest: Vec<Reply> = rest.into_iter().map(|t| t.join().unwrap()).collect();
        store.before(None);
        (first, rest)
    };

    let (first, rest) = held("/set/s/first", &["/bump/n"; 8]);
    assert_eq!(first.status, 200, "{}", first.body);
    for r in &rest {
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(
        store.take_calls(),
        ["compare_and_set", "update"],
        "the held save, then the eight queued ones in one write"
    );
    let all = dump_of(&app, &cookie);
    assert_eq!(
        (all["n"].clone(), all["s"].clone()),
        (8.into(), "first".into()),
        "{all}"
    );

    call(&agent(), "POST", &format!("{}/bump/t", app.base), &cookie);
    let then = [
        "/bump/n", "/bump/n", "/bump/n", "/bump/t", "/bump/n", "/bump/n", "/bump/n",
    ];
    let (first, rest) = held("/set/t/text", &then);
    assert_eq!(first.status, 200, "{}", first.body);
    for (path, r) in then.iter().zip(&rest) {
        let expected = if *path == "/bump/t" { 500 } else { 200 };
        assert_eq!(r.status, expected, "{path}: {}", r.body);
    }
    let all = dump_of(&app, &cookie);
    assert_eq!(
        (all["n"].clone(), all["t"].clone()),
        (14.into(), "text".into()),
        "{all}"
    );

    // An update closure that panics replayed on the stored value fails its own
    // request; the others are kept and the turn is free for the next save.
    for _ in 0..4 {
        call(&agent(), "POST", &format!("{}/bump/p", app.base), &cookie);
    }
    let then = ["/bump/n", "/boom/p", "/bump/n"];
    let (first, rest) = held("/bump/p", &then);
    assert_eq!(first.body, "5");
    for (path, r) in then.iter().zip(&rest) {
        let expected = if *path == "/boom/p" { 500 } else { 200 };
        assert_eq!(r.status, expected, "{path}: {}", r.body);
    }
    let r = call(&agent(), "POST", &format!("{}/bump/n", app.base), &cookie);
    assert_eq!((r.status, r.body.as_str()), (200, "17"));
    assert_eq!(dump_of(&app, &cookie)["p"], 5);
    fscache::hooks::clear_hooks();
}

/// What a request costs in store calls: nothing when the handler does not use the
/// session, one load when it only reads, a load and one write when it changes it.
#[test]
fn a_request_pays_only_for_the_session_calls_it_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(Faulty::new(
        fscache::FileSystemCache::open(tmp.path()).unwrap(),
    ));
    let app = serve(
        Sessions::new(Arc::clone(&store), config()).unwrap(),
        StoreCalls::Auto,
    );
    let cookie = log_in(&app);
    store.take_calls();
    let a = agent();
    call(&a, "GET", &format!("{}/plain", app.base), &cookie);
    assert_eq!(
        store.take_calls(),
        Vec::<&str>::new(),
        "no session, no call"
    );
    let r = call(&a, "GET", &format!("{}/me", app.base), &cookie);
    assert_eq!(r.body, "ann");
    assert_eq!(r.cookie, None, "a read sends no cookie");
    assert_eq!(store.take_calls(), ["load"], "a read is one load");
    call(&a, "POST", &format!("{}/set/k/v", app.base), &cookie);
    assert_eq!(store.take_calls(), ["load", "compare_and_set"]);
    // Without a cookie, a handler that only reads stores nothing.
    let r = call(&a, "GET", &format!("{}/me", app.base), "");
    assert_eq!((r.body.as_str(), r.cookie), ("nobody", None));
    assert_eq!(store.take_calls(), Vec::<&str>::new());
}

/// A save that fails once with a retryable error is retried (saves are
/// retry-safe): the client gets its 200 and the change is stored. One that fails
/// twice answers 503, never a 200 for a change that was not stored, and the next
/// request works.
#[test]
fn a_failed_save_is_retried_once_then_answers_503() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(Faulty::new(
        fscache::FileSystemCache::open(tmp.path()).unwrap(),
    ));
    let app = serve(
        Sessions::new(Arc::clone(&store), config()).unwrap(),
        StoreCalls::Auto,
    );
    let cookie = log_in(&app);
    let a = agent();
    let writes = ["compare_and_set", "update", "insert", "remove"];

    store.fail_next(1, &writes, When::Before);
    let r = call(&a, "POST", &format!("{}/set/k/once", app.base), &cookie);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(store.failed().len(), 1);
    assert_eq!(dump_of(&app, &cookie)["k"], "once");

    store.fail_next(2, &writes, When::Before);
    let r = call(&a, "POST", &format!("{}/set/k/twice", app.base), &cookie);
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body, "session store unavailable\n");
    assert_eq!(dump_of(&app, &cookie)["k"], "once", "nothing half-stored");

    // A logout whose delete fails once still logs out.
    store.fail_next(1, &["remove"], When::Before);
    let r = call(&a, "POST", &format!("{}/logout", app.base), &cookie);
    assert_eq!(r.status, 200);
    assert_eq!(store.failed(), ["remove"]);
    let r = call(&a, "GET", &format!("{}/me", app.base), &cookie);
    assert_eq!(r.body, "nobody");
}

/// Signed cookies and a `__Host-` name, as `SessionConfig` sets them: the cookie
/// carries the attributes, and a tampered value loads no session.
#[test]
fn cookies_follow_the_session_config() {
    let tmp = tempfile::tempdir().unwrap();
    let store = fscache::FileSystemCache::open(tmp.path()).unwrap();
    let config = SessionConfig::default()
        .cookie_name("__Host-id")
        .secure(true)
        .signing_keys(["a long enough secret for the test"]);
    let app = serve(Sessions::new(store, config).unwrap(), StoreCalls::Auto);
    let r = call(&agent(), "POST", &format!("{}/login", app.base), "");
    let set_cookie = r.cookie.unwrap();
    assert!(set_cookie.starts_with("__Host-id="), "{set_cookie}");
    for attr in ["Secure", "HttpOnly", "Path=/", "SameSite=Lax", "Max-Age="] {
        assert!(set_cookie.contains(attr), "{attr} missing: {set_cookie}");
    }
    let cookie = pair(&set_cookie);
    let me = |cookie: &str| call(&agent(), "GET", &format!("{}/me", app.base), cookie).body;
    assert_eq!(me(&cookie), "ann");
    let mut tampered = cookie.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(me(&tampered), "nobody");
}

/// A route that takes the extractor without the layer answers 500 and says why
/// in the log, never panics.
#[test]
fn the_extractor_without_the_layer_is_a_500() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let app: Router = Router::new().route("/me", get(me));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let t = std::thread::spawn(move || call(&agent(), "GET", &format!("{base}/me"), ""));
    let server = runtime.spawn(async move { axum::serve(listener, app).await });
    let r = runtime.block_on(async {
        loop {
            if t.is_finished() {
                break t.join().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    server.abort();
    assert_eq!(r.status, 500);
    assert_eq!(r.body, "session layer missing\n");
}

/// On Redis each save remembers what it wrote (the next save of the session in
/// this process merges onto it without a load). Another process's writes in
/// between make that stale: the next save must still merge onto what is really
/// stored, and a logout by another process must stay a logout. The other process
/// is a second store with the sync `Sessions`, on the same Redis.
#[test]
fn redis_saves_merge_over_other_processes_writes() {
    let Some(url) = redis_url() else { return };
    let config = config();
    let app = serve(
        Sessions::new(fscache::store::open(&url).unwrap(), config.clone()).unwrap(),
        StoreCalls::Async,
    );
    let other = Sessions::new(fscache::store::open(&url).unwrap(), config).unwrap();
    let cookie = log_in(&app);
    let bump = || call(&agent(), "POST", &format!("{}/bump/n", app.base), &cookie);
    assert_eq!(bump().body, "1");
    // The other process bumps and sets a key after this process's last write.
    let mut s = other.load(Some(&cookie)).unwrap();
    s.update("n", |n: Option<u64>| Some(n.unwrap_or(0) + 1))
        .unwrap();
    s.insert("other", "yes").unwrap();
    other.save(&mut s).unwrap();
    // This process's next save: loaded after the other write, merged onto it.
    assert_eq!(bump().body, "3");
    // A slow request that loaded before the other process's write: its save
    // merges onto the real record, not the one this process wrote last.
    let slow = start_slow(&app, "/slow/bump/n", &cookie);
    let mut s = other.load(Some(&cookie)).unwrap();
    s.update("n", |n: Option<u64>| Some(n.unwrap_or(0) + 1))
        .unwrap();
    other.save(&mut s).unwrap();
    app.gate.release.notify_one();
    assert_eq!(slow.join().unwrap().status, 200);
    let all = dump_of(&app, &cookie);
    assert_eq!(all["n"], 5, "{all}");
    assert_eq!(all["other"], "yes", "{all}");
    // The other process logs out while a request of this one holds the session.
    let slow = start_slow(&app, "/slow/set/cart", &cookie);
    let mut s = other.load(Some(&cookie)).unwrap();
    s.destroy();
    other.save(&mut s).unwrap();
    app.gate.release.notify_one();
    slow.join().unwrap();
    let r = call(&agent(), "GET", &format!("{}/me", app.base), &cookie);
    assert_eq!(r.body, "nobody", "the other process's logout was undone");
}

/// `StoreCalls::Auto` takes the async client for a `RedisStore`, also behind
/// `Box<dyn Store>` and `Arc` (what `store::open` gives), and the sync store on
/// the blocking pool for a store that wraps one (its calls stay the wrapper's).
#[test]
fn auto_takes_the_async_client_for_redis_but_not_through_a_wrapper() {
    let Some(url) = redis_url() else { return };
    let mode = |layer: &dyn std::fmt::Debug| format!("{layer:?}");
    let opened: Arc<dyn Store> = Arc::from(fscache::store::open(&url).unwrap());
    let layer = SessionLayer::new(Sessions::new(opened, config()).unwrap());
    assert!(mode(&layer).contains("AsyncRedis"), "{layer:?}");
    let wrapped = Faulty::new(fscache::store::open(&url).unwrap());
    let layer = SessionLayer::new(Sessions::new(wrapped, config()).unwrap());
    assert!(mode(&layer).contains("Blocking"), "{layer:?}");
    let forced = fscache::store::open(&url).unwrap();
    let layer = SessionLayer::with_store_calls(
        Sessions::new(forced, config()).unwrap(),
        StoreCalls::Blocking,
    );
    assert!(mode(&layer).contains("Blocking"), "{layer:?}");
}

/// A Redis URL with `wait_replicas` keeps its `WAIT` behind the layer: `Auto`
/// (and `Async`) take the sync client for it, so on a server with no replica
/// every save fails (503 after its retry) instead of being acknowledged
/// unreplicated by the async path, which has no `WAIT`.
#[test]
fn wait_replicas_holds_behind_the_layer() {
    let Some(url) = redis_url() else { return };
    let sep = if url.contains('?') { '&' } else { '?' };
    let waiting = format!("{url}{sep}wait_replicas=1&wait_timeout_ms=20");
    assert_eq!(
        redis_command(&url, &["WAIT", "1", "20"]),
        ":0",
        "the test server has no replica"
    );
    for calls in [StoreCalls::Auto, StoreCalls::Async] {
        let sessions = Sessions::new(fscache::store::open(&waiting).unwrap(), config()).unwrap();
        let layer = SessionLayer::with_store_calls(sessions, calls);
        assert!(format!("{layer:?}").contains("Blocking"), "{layer:?}");
        let sessions = Sessions::new(fscache::store::open(&waiting).unwrap(), config()).unwrap();
        let app = serve(sessions, calls);
        let r = call(&agent(), "POST", &format!("{}/login", app.base), "");
        assert_eq!(r.status, 503, "a save no replica acknowledged: {}", r.body);
    }
}
