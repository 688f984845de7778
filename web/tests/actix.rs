//! `fscache::actix::ActixStore` behind a real actix-web server on 127.0.0.1 with
//! actix-session's middleware, driven over HTTP: login, renew, update_ttl sliding
//! the expiry without rewriting the state, an update of an expired session (a new
//! key, never the old one back), an update racing a logout (never revived),
//! foreign bytes, and logout. On the file store the
//! records are checked on disk; on every engine the environment names, the flow.

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use actix_session::config::{PersistentSession, TtlExtensionPolicy};
use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::{Key, time::Duration};
use actix_web::{App, HttpResponse, HttpServer, web};
use fscache::actix::ActixStore;
use fscache::{FileSystemCache, Store};
use ureq::Agent;

mod common;

struct Server {
    base: String,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        actix_web::rt::System::new().block_on(handle.stop(true));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn login(
    session: Session,
    q: web::Query<std::collections::HashMap<String, String>>,
) -> HttpResponse {
    session.renew();
    session
        .insert("user", q.get("user").cloned().unwrap_or_default())
        .unwrap();
    HttpResponse::Ok().body("ok")
}

async fn me(session: Session) -> HttpResponse {
    match session.get::<String>("user") {
        Ok(Some(u)) => HttpResponse::Ok().body(u),
        _ => HttpResponse::Unauthorized().body("nobody"),
    }
}

async fn count(session: Session) -> HttpResponse {
    let n = session.get::<u64>("n").unwrap_or(None).unwrap_or(0) + 1;
    session.insert("n", n).unwrap();
    HttpResponse::Ok().body(n.to_string())
}

async fn peek() -> HttpResponse {
    HttpResponse::Ok().body("unchanged")
}

async fn logout(session: Session) -> HttpResponse {
    session.purge();
    HttpResponse::Ok().body("bye")
}

fn start(store: Arc<dyn Store>) -> Server {
    start_gated(store, None)
}

/// The app on 127.0.0.1; with a gate, `/slow` waits at it (see `slow`).
fn start_gated(store: Arc<dyn Store>, gate: Option<Gate>) -> Server {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let key = Key::generate();
            let server = HttpServer::new(move || {
                let middleware =
                    SessionMiddleware::builder(ActixStore::from_arc(store.clone()), key.clone())
                        .cookie_secure(false)
                        .session_lifecycle(
                            PersistentSession::default()
                                .session_ttl(Duration::hours(1))
                                .session_ttl_extension_policy(TtlExtensionPolicy::OnEveryRequest),
                        )
                        .build();
                let mut app = App::new();
                if let Some(gate) = &gate {
                    app = app.app_data(web::Data::new(gate.clone()));
                }
                app.wrap(middleware)
                    .route("/login", web::post().to(login))
                    .route("/me", web::get().to(me))
                    .route("/count", web::post().to(count))
                    .route("/peek", web::get().to(peek))
                    .route("/slow", web::post().to(slow))
                    .route("/logout", web::post().to(logout))
            })
            .workers(2)
            .bind(("127.0.0.1", 0))
            .unwrap();
            let addr = server.addrs()[0];
            let server = server.run();
            tx.send((addr, server.handle())).unwrap();
            let _ = server.await;
        });
    });
    let (addr, handle) = rx.recv().unwrap();
    Server {
        base: format!("http://{addr}"),
        handle,
        thread: Some(thread),
    }
}

fn agent() -> Agent {
    Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

/// (status, the `id=…` Set-Cookie header if any, body).
fn call(a: &Agent, method: &str, url: &str, cookie: &str) -> (u16, Option<String>, String) {
    let mut r = if method == "GET" {
        a.get(url).header("Cookie", cookie).call()
    } else {
        a.post(url).header("Cookie", cookie).send_empty()
    }
    .unwrap();
    let sc = r
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        r.status().as_u16(),
        sc,
        r.body_mut().read_to_string().unwrap(),
    )
}

fn pair(sc: &str) -> String {
    sc.split(';').next().unwrap().to_owned()
}

/// The actix-session keys in a file store's directory.
fn session_keys(dir: &Path) -> Vec<String> {
    let c = FileSystemCache::builder(dir)
        .threshold(0)
        .open_existing()
        .unwrap();
    // A deleted session's tombstone (a value starting with NUL) is no session.
    let mut keys: Vec<String> = c
        .keys()
        .map(Result::unwrap)
        .filter(|k| k.starts_with("actix-session:"))
        .filter(|k| {
            c.get_bytes(k)
                .unwrap()
                .is_some_and(|v| v.first() != Some(&0))
        })
        .collect();
    keys.sort();
    keys
}

fn entry(dir: &Path, key: &str) -> fscache::EntryFile {
    let c = FileSystemCache::builder(dir)
        .threshold(0)
        .open_existing()
        .unwrap();
    fscache::inspect_entry(&std::fs::read(c.entry_path(key).unwrap()).unwrap())
}

fn flow(name: &str, url: &str, dir: Option<&PathBuf>) {
    let store: Arc<dyn Store> = Arc::from(fscache::store::open(url).unwrap());
    let server = start(store.clone());
    let base = &server.base;
    let a = agent();

    let (status, sc, _) = call(&a, "POST", &format!("{base}/login?user=ann"), "");
    assert_eq!(status, 200, "{name}");
    let cookie = pair(&sc.expect("a session cookie"));
    assert_eq!(
        call(&a, "GET", &format!("{base}/me"), &cookie).2,
        "ann",
        "{name}"
    );
    let key = dir.map(|d| {
        let keys = session_keys(d);
        assert_eq!(keys.len(), 1, "{name}: {keys:?}");
        keys[0].clone()
    });

    // update_ttl on an unchanged request: the expiry slides, the state is the same.
    if let (Some(d), Some(k)) = (dir, &key) {
        let before = entry(d, k);
        std::thread::sleep(std::time::Duration::from_millis(30));
        let (status, _, _) = call(&a, "GET", &format!("{base}/peek"), &cookie);
        assert_eq!(status, 200);
        let after = entry(d, k);
        let (b, af) = (before.header.unwrap(), after.header.unwrap());
        assert!(
            af.expires_at_ms.unwrap() >= b.expires_at_ms.unwrap() + 30,
            "{name}: the expiry did not slide: {b:?} -> {af:?}"
        );
        assert_eq!(
            after.payload, before.payload,
            "{name}: the state was rewritten"
        );
    }

    // Changes are saved (update) under the same key.
    for n in 1..=3 {
        let (_, _, body) = call(&a, "POST", &format!("{base}/count"), &cookie);
        assert_eq!(body, n.to_string(), "{name}");
    }
    if let Some(d) = dir {
        assert_eq!(
            session_keys(d),
            vec![key.clone().unwrap()],
            "{name}: update made a new key"
        );
    }

    // renew: a new key, the old cookie is worthless.
    let (_, sc, _) = call(&a, "POST", &format!("{base}/login?user=bob"), &cookie);
    let renewed = pair(&sc.expect("renew sets a new cookie"));
    assert_ne!(renewed, cookie);
    assert_eq!(
        call(&a, "GET", &format!("{base}/me"), &renewed).2,
        "bob",
        "{name}"
    );
    assert_eq!(
        call(&a, "GET", &format!("{base}/me"), &cookie).0,
        401,
        "{name}"
    );
    let renewed_key = dir.map(|d| {
        let keys = session_keys(d);
        assert_eq!(keys.len(), 1, "{name}: the old key was kept: {keys:?}");
        assert_ne!(Some(&keys[0]), key.as_ref());
        keys[0].clone()
    });

    // A save after the record was deleted elsewhere (a logout in another request):
    // the state goes under a new key, and the deleted one stays deleted.
    if let (Some(d), Some(k)) = (dir, &renewed_key) {
        assert!(store.remove(k).unwrap());
        let (status, sc, _) = call(&a, "POST", &format!("{base}/count"), &renewed);
        assert_eq!(status, 200);
        let keys = session_keys(d);
        assert_eq!(keys.len(), 1, "{name}: {keys:?}");
        assert_ne!(
            &keys[0], k,
            "{name}: a deleted session came back under its key"
        );
        let fresh = pair(&sc.expect("a new cookie for the new key"));
        // Foreign bytes under the key: a fresh session, not an error page.
        store
            .save(
                &keys[0],
                b"\x80\x04not json",
                std::time::Duration::from_secs(60),
            )
            .unwrap();
        assert_eq!(
            call(&a, "GET", &format!("{base}/me"), &fresh).0,
            401,
            "{name}"
        );
        store.remove(&keys[0]).unwrap();
    }

    // Logout: the record goes and the cookie is expired.
    let (_, sc, _) = call(&a, "POST", &format!("{base}/login?user=cy"), "");
    let cookie = pair(&sc.unwrap());
    let (status, sc, _) = call(&a, "POST", &format!("{base}/logout"), &cookie);
    assert_eq!(status, 200);
    let sc = sc.expect("logout expires the cookie");
    assert!(
        sc.contains("Max-Age=0") || sc.contains("max-age=0"),
        "{name}: {sc}"
    );
    assert_eq!(
        call(&a, "GET", &format!("{base}/me"), &cookie).0,
        401,
        "{name}"
    );
    if let Some(d) = dir {
        assert!(session_keys(d).is_empty(), "{name}: logout kept the record");
    }
}

#[test]
fn actix_session_on_every_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sessions");
    let url = format!("file://{}", dir.display());
    for (name, url) in common::store_urls(&url) {
        let d = (name == "file").then_some(&dir);
        flow(&name, &url, d);
    }
}

/// Where the slow request stops: it says it got there, then waits to be released.
#[derive(Clone)]
struct Gate {
    entered: Arc<std::sync::Mutex<mpsc::Sender<()>>>,
    release: Arc<tokio::sync::Notify>,
}

/// Changes the session (loaded by the middleware before the handler), then waits at
/// the gate; the middleware saves (`update`) after it returns.
async fn slow(gate: web::Data<Gate>, session: Session) -> HttpResponse {
    session.insert("cart", "apple").unwrap();
    gate.entered.lock().unwrap().send(()).unwrap();
    gate.release.notified().await;
    HttpResponse::Ok().body("slow done")
}

/// A request that loaded the session before another request's logout, and saves
/// after it, does not bring the session back: not under its key, not under a new
/// one (the logout left a tombstone the adapter's `update` respects).
#[test]
fn actix_session_a_save_after_a_logout_does_not_bring_the_session_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sessions");
    let url = format!("file://{}", dir.display());
    for (name, url) in common::store_urls(&url) {
        let store: Arc<dyn Store> = Arc::from(fscache::store::open(&url).unwrap());
        let (entered_tx, entered) = mpsc::channel();
        let gate = Gate {
            entered: Arc::new(std::sync::Mutex::new(entered_tx)),
            release: Arc::new(tokio::sync::Notify::new()),
        };
        let server = start_gated(store, Some(gate.clone()));
        let base = server.base.clone();
        let a = agent();
        let (_, sc, _) = call(&a, "POST", &format!("{base}/login?user=ann"), "");
        let cookie = pair(&sc.expect("a session cookie"));
        assert_eq!(
            call(&a, "GET", &format!("{base}/me"), &cookie).2,
            "ann",
            "{name}"
        );
        let slow_req = {
            let (base, cookie) = (base.clone(), cookie.clone());
            std::thread::spawn(move || call(&agent(), "POST", &format!("{base}/slow"), &cookie))
        };
        entered
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the slow request reached the gate");
        let (status, _, _) = call(&a, "POST", &format!("{base}/logout"), &cookie);
        assert_eq!(status, 200, "{name}");
        gate.release.notify_one();
        let (status, slow_cookie, _) = slow_req.join().unwrap();
        assert_eq!(status, 200, "{name}");
        assert_eq!(
            call(&a, "GET", &format!("{base}/me"), &cookie).0,
            401,
            "{name}: the old cookie loads the session again"
        );
        if let Some(sc) = slow_cookie {
            // Whatever cookie the slow answer carries names no session either.
            assert_eq!(
                call(&a, "GET", &format!("{base}/me"), &pair(&sc)).0,
                401,
                "{name}: the session came back under a new key"
            );
        }
        if name == "file" {
            assert!(
                session_keys(&dir).is_empty(),
                "{name}: a state was saved after the logout: {:?}",
                session_keys(&dir)
            );
        }
    }
}
