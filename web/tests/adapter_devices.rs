//! "Your devices" and "log out everywhere" through the framework adapters: an axum
//! app on tower-sessions over `fscache::tower_sessions::TowerStore`, and an
//! actix-web app on actix-session over `fscache::actix::ActixStore`, each a real
//! server on 127.0.0.1 driven over HTTP on every store: a user's sessions are
//! listed (the asking one current), the others ended, all ended; and a re-login
//! in flight while "log out everywhere" runs (held at a gate in the app until the
//! logout is done) does not bring the session back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use fscache::Store;
use serde_json::{Value, json};
use tokio::sync::Notify;
use ureq::Agent;

mod common;

/// Where the slow re-login stops: it says it got there, then waits to be released.
#[derive(Clone)]
struct Gate {
    entered: Arc<Mutex<mpsc::Sender<()>>>,
    release: Arc<Notify>,
}

impl Gate {
    fn new() -> (Gate, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel();
        let gate = Gate {
            entered: Arc::new(Mutex::new(tx)),
            release: Arc::new(Notify::new()),
        };
        (gate, rx)
    }

    async fn wait(&self) {
        self.entered.lock().unwrap().send(()).unwrap();
        self.release.notified().await;
    }
}

type Query = HashMap<String, String>;

mod tower_app {
    use super::*;
    use axum::extract::{Query as Q, State};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use fscache::tower_sessions::{self as fts, TowerStore};
    use tower_sessions::{Session, SessionManagerLayer};

    #[derive(Clone)]
    struct App {
        store: TowerStore<dyn Store>,
        gate: Gate,
    }

    async fn login(session: Session, Q(q): Q<Query>) -> &'static str {
        session.cycle_id().await.unwrap();
        session.insert("user", &q["user"]).await.unwrap();
        fts::set_user(&session, &q["user"], q.get("label").map(String::as_str))
            .await
            .unwrap();
        "ok"
    }

    async fn me(session: Session) -> (axum::http::StatusCode, String) {
        match fts::user(&session).await.unwrap() {
            Some(u) => (axum::http::StatusCode::OK, u),
            None => (axum::http::StatusCode::UNAUTHORIZED, "nobody".into()),
        }
    }

    async fn devices(State(app): State<App>, session: Session) -> Json<Value> {
        let list = app.store.user_sessions(&session).await.unwrap();
        Json(json!({ "sessions": list }))
    }

    async fn logout_others(State(app): State<App>, session: Session) -> Json<Value> {
        Json(json!({ "ended": app.store.end_other_sessions(&session).await.unwrap() }))
    }

    async fn logout_everywhere(State(app): State<App>, session: Session) -> Json<Value> {
        let user = fts::user(&session).await.unwrap().unwrap();
        let ended = app.store.end_user_sessions(&user).await.unwrap();
        session.flush().await.unwrap();
        Json(json!({ "ended": ended }))
    }

    /// A re-login that loads the session, waits at the gate, then logs in again.
    async fn slow_relogin(State(app): State<App>, session: Session) -> &'static str {
        let user = fts::user(&session).await.unwrap().unwrap();
        app.gate.wait().await;
        session.cycle_id().await.unwrap();
        fts::set_user(&session, &user, Some("again")).await.unwrap();
        "ok"
    }

    pub fn start(store: Arc<dyn Store>, gate: Gate) -> (String, tokio::runtime::Runtime) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let prefix = format!("devices-{}:", fscache::session::new_id().unwrap());
        let ts: TowerStore<dyn Store> = TowerStore::from_arc(store).with_prefix(&prefix);
        let app = Router::new()
            .route("/login", post(login))
            .route("/me", get(me))
            .route("/devices", get(devices))
            .route("/logout-others", post(logout_others))
            .route("/logout-everywhere", post(logout_everywhere))
            .route("/slow-relogin", post(slow_relogin))
            .layer(SessionManagerLayer::new(ts.clone()).with_secure(false))
            .with_state(App { store: ts, gate });
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(async move { axum::serve(listener, app).await });
        (base, runtime)
    }
}

mod actix_app {
    use super::*;
    use actix_session::config::PersistentSession;
    use actix_session::{Session, SessionMiddleware};
    use actix_web::cookie::{Key, time::Duration as CookieDuration};
    use actix_web::{App, HttpResponse, HttpServer, web};
    use fscache::actix::{self as fa, ActixStore};

    type StoreData = web::Data<ActixStore<dyn Store>>;

    async fn login(session: Session, q: web::Query<Query>) -> HttpResponse {
        session.renew();
        session.insert("user", &q["user"]).unwrap();
        fa::set_user(&session, &q["user"], q.get("label").map(String::as_str)).unwrap();
        HttpResponse::Ok().body("ok")
    }

    async fn me(session: Session) -> HttpResponse {
        match fa::user(&session) {
            Some(u) => HttpResponse::Ok().body(u),
            None => HttpResponse::Unauthorized().body("nobody"),
        }
    }

    async fn devices(store: StoreData, session: Session) -> HttpResponse {
        let list = store.user_sessions(&session).await.unwrap();
        HttpResponse::Ok().json(json!({ "sessions": list }))
    }

    async fn logout_others(store: StoreData, session: Session) -> HttpResponse {
        let ended = store.end_other_sessions(&session).await.unwrap();
        HttpResponse::Ok().json(json!({ "ended": ended }))
    }

    async fn logout_everywhere(store: StoreData, session: Session) -> HttpResponse {
        let user = fa::user(&session).unwrap();
        let ended = store.end_user_sessions(&user).await.unwrap();
        session.purge();
        HttpResponse::Ok().json(json!({ "ended": ended }))
    }

    async fn slow_relogin(gate: web::Data<Gate>, session: Session) -> HttpResponse {
        let user = fa::user(&session).unwrap();
        gate.wait().await;
        session.renew();
        fa::set_user(&session, &user, Some("again")).unwrap();
        HttpResponse::Ok().body("ok")
    }

    pub struct Server {
        pub base: String,
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

    pub fn start(store: Arc<dyn Store>, gate: Gate) -> Server {
        let (tx, rx) = mpsc::channel();
        let prefix = format!("devices-{}:", fscache::session::new_id().unwrap());
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let key = Key::generate();
                let store: ActixStore<dyn Store> = ActixStore::from_arc(store).with_prefix(&prefix);
                let server = HttpServer::new(move || {
                    let middleware = SessionMiddleware::builder(store.clone(), key.clone())
                        .cookie_secure(false)
                        .session_lifecycle(
                            PersistentSession::default().session_ttl(CookieDuration::hours(1)),
                        )
                        .build();
                    App::new()
                        .app_data(web::Data::new(store.clone()))
                        .app_data(web::Data::new(gate.clone()))
                        .wrap(middleware)
                        .route("/login", web::post().to(login))
                        .route("/me", web::get().to(me))
                        .route("/devices", web::get().to(devices))
                        .route("/logout-others", web::post().to(logout_others))
                        .route("/logout-everywhere", web::post().to(logout_everywhere))
                        .route("/slow-relogin", web::post().to(slow_relogin))
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
}

fn agent() -> Agent {
    Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

/// (status, the cookie pair a Set-Cookie sets if any, body).
fn call(method: &str, url: &str, cookie: &str) -> (u16, Option<String>, String) {
    let a = agent();
    let mut r = if method == "GET" {
        a.get(url).header("Cookie", cookie).call()
    } else {
        a.post(url).header("Cookie", cookie).send_empty()
    }
    .unwrap();
    let sc = r
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
    (
        r.status().as_u16(),
        sc,
        r.body_mut().read_to_string().unwrap(),
    )
}

fn login(base: &str, user: &str, label: &str) -> String {
    let (status, sc, _) = call(
        "POST",
        &format!("{base}/login?user={user}&label={label}"),
        "",
    );
    assert_eq!(status, 200);
    sc.expect("a login sets the cookie")
}

fn me(base: &str, cookie: &str) -> u16 {
    call("GET", &format!("{base}/me"), cookie).0
}

fn flow(name: &str, base: &str, entered: &mpsc::Receiver<()>, gate: &Gate) {
    let laptop = login(base, "ann", "laptop");
    let phone = login(base, "ann", "phone");
    let bob = login(base, "bob", "bob");

    let (status, _, body) = call("GET", &format!("{base}/devices"), &laptop);
    assert_eq!(status, 200, "{name}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let list = v["sessions"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{name}: {body}");
    let current: Vec<_> = list.iter().filter(|d| d["current"] == true).collect();
    assert_eq!(current.len(), 1, "{name}: {body}");
    assert_eq!(current[0]["label"], "laptop", "{name}: {body}");

    let (_, _, body) = call("POST", &format!("{base}/logout-others"), &laptop);
    assert_eq!(body, r#"{"ended":1}"#, "{name}");
    assert_eq!(
        (me(base, &laptop), me(base, &phone), me(base, &bob)),
        (200, 401, 200),
        "{name}"
    );

    // A re-login of the phone is in flight while the laptop logs out everywhere.
    let phone = login(base, "ann", "phone");
    let slow = {
        let (base, phone) = (base.to_owned(), phone.clone());
        std::thread::spawn(move || call("POST", &format!("{base}/slow-relogin"), &phone))
    };
    entered
        .recv_timeout(Duration::from_secs(10))
        .expect("the re-login reached the gate");
    let (_, _, body) = call("POST", &format!("{base}/logout-everywhere"), &laptop);
    assert_eq!(body, r#"{"ended":2}"#, "{name}");
    gate.release.notify_one();
    let (status, slow_cookie, _) = slow.join().unwrap();
    assert_eq!(status, 200, "{name}");
    assert_eq!(me(base, &phone), 401, "{name}: the old id came back");
    if let Some(c) = slow_cookie {
        assert_eq!(me(base, &c), 401, "{name}: the re-login's new id is live");
    }
    assert_eq!(me(base, &laptop), 401, "{name}");
    assert_eq!(me(base, &bob), 200, "{name}");
    let fresh = login(base, "ann", "fresh");
    let (_, _, body) = call("GET", &format!("{base}/devices"), &fresh);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["sessions"].as_array().unwrap().len(), 1, "{name}: {body}");
}

#[test]
fn tower_sessions_your_devices_and_log_out_everywhere_on_every_store() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("file://{}", tmp.path().join("sessions").display());
    for (name, url) in common::store_urls(&url) {
        let store: Arc<dyn Store> = Arc::from(fscache::store::open(&url).unwrap());
        let (gate, entered) = Gate::new();
        let (base, runtime) = tower_app::start(store, gate.clone());
        flow(&format!("tower-sessions on {name}"), &base, &entered, &gate);
        runtime.shutdown_background();
    }
}

#[test]
fn actix_session_your_devices_and_log_out_everywhere_on_every_store() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("file://{}", tmp.path().join("sessions").display());
    for (name, url) in common::store_urls(&url) {
        let store: Arc<dyn Store> = Arc::from(fscache::store::open(&url).unwrap());
        let (gate, entered) = Gate::new();
        let server = actix_app::start(store, gate.clone());
        flow(
            &format!("actix-session on {name}"),
            &server.base,
            &entered,
            &gate,
        );
    }
}
