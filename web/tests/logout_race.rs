//! A logout stays a logout through the framework adapters: a request that loaded
//! the session before another request's logout, and saves after it, must not bring
//! the session back. Two real requests over HTTP, ordered by a gate in the app: the
//! slow one loads and changes the session, then waits; the logout runs to the end;
//! then the slow one is released and its response (and the adapter's save) goes
//! out. On every store; tower-sessions (axum) here, actix-session in actix.rs.

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use fscache::Store;
use fscache::tower_sessions::TowerStore;
use tokio::sync::Notify;
use tower_sessions::{Session, SessionManagerLayer};
use ureq::Agent;

mod common;

/// Where the slow request stops: it says it got there, then waits to be released.
#[derive(Clone)]
struct Gate {
    entered: Arc<Mutex<mpsc::Sender<()>>>,
    release: Arc<Notify>,
}

async fn login(session: Session) -> &'static str {
    session.cycle_id().await.unwrap();
    session.insert("user", "ann").await.unwrap();
    "ok"
}

async fn me(session: Session) -> String {
    session
        .get::<String>("user")
        .await
        .unwrap()
        .unwrap_or_else(|| "nobody".into())
}

/// Loads and changes the session, then waits at the gate; the layer saves after.
async fn slow(State(gate): State<Gate>, session: Session) -> &'static str {
    session.insert("cart", "apple").await.unwrap();
    gate.entered.lock().unwrap().send(()).unwrap();
    gate.release.notified().await;
    "slow done"
}

async fn logout(session: Session) -> &'static str {
    session.delete().await.unwrap();
    "bye"
}

fn agent() -> Agent {
    Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn race(name: &str, store: Arc<dyn Store>) {
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
    let ts = TowerStore::from_arc(store)
        .with_prefix(&format!("race-{}:", fscache::session::new_id().unwrap()));
    let app = Router::new()
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/slow", post(slow))
        .route("/logout", post(logout))
        .layer(SessionManagerLayer::new(ts).with_secure(false))
        .with_state(gate.clone());
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(async move { axum::serve(listener, app).await });

    let a = agent();
    let r = a.post(format!("{base}/login")).send_empty().unwrap();
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let me = |cookie: &str| {
        a.get(format!("{base}/me"))
            .header("Cookie", cookie)
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    };
    assert_eq!(me(&cookie), "ann", "{name}");

    // The slow request loads the session and changes it...
    let slow_req = {
        let (base, cookie) = (base.clone(), cookie.clone());
        std::thread::spawn(move || {
            agent()
                .post(format!("{base}/slow"))
                .header("Cookie", &cookie)
                .send_empty()
                .unwrap()
                .status()
                .as_u16()
        })
    };
    entered
        .recv_timeout(Duration::from_secs(10))
        .expect("the slow request reached the gate");
    // ...a logout runs to the end meanwhile...
    let status = a
        .post(format!("{base}/logout"))
        .header("Cookie", &cookie)
        .send_empty()
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 200, "{name}");
    assert_eq!(me(&cookie), "nobody", "{name}: logged out");
    // ...then the slow request saves.
    gate.release.notify_one();
    assert_eq!(slow_req.join().unwrap(), 200, "{name}");
    assert_eq!(
        me(&cookie),
        "nobody",
        "{name}: a request that loaded the session before the logout brought it back"
    );
    runtime.shutdown_background();
}

#[test]
fn tower_sessions_a_save_after_a_logout_does_not_bring_the_session_back() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("file://{}", tmp.path().join("sessions").display());
    for (name, url) in common::store_urls(&url) {
        // Opened and dropped off the runtime (the sync PostgreSQL client).
        let store: Arc<dyn Store> = Arc::from(fscache::store::open(&url).unwrap());
        race(&name, store);
    }
}
