//! The session demo of `examples/server.rs` on axum, with fscache's own session
//! layer (`fscache::axum`, feature `axum`) over any fscache store: visit counter,
//! login with a new session id, cart, logout that deletes the record and expires
//! the cookie, and the user's devices: `GET /devices` lists the logged-in user's
//! sessions, `POST /logout-others` and `POST /logout-everywhere` end them.
//!
//! ```text
//! cargo run --release -p fscache-web --bin axum-server -- --bind 127.0.0.1:8081
//! cargo run --release -p fscache-web --bin axum-server --features engines -- --store redis://127.0.0.1/
//! ```
//!
//! Each page is one session load and at most one save. The visit counter and the
//! cart change through `Session::update`, which the save replays on the stored
//! record: concurrent requests of one session never lose each other's changes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Json, Redirect, Response};
use axum::routing::{get, post};
use fscache::axum::{Session, SessionLayer, StoreCalls};
use fscache::session::{SessionConfig, Sessions};
use serde::Deserialize;

type Cart = BTreeMap<String, u64>;

/// Session lifetime: 7 days after the last request.
const LIFETIME_DAYS: u64 = 7;

/// Handlers answer a failed store call with 503 (`fscache::Error` is a response).
type Page<T> = Result<T, fscache::Error>;

#[derive(Clone)]
struct App {
    url: String,
}

/// Whether a state-changing request comes from this site's own pages: its `Origin`
/// (or, without one, its `Referer`) names the host the request was sent to. A
/// request with neither header is not from a browser (browsers send `Origin` on
/// every POST), so it carries no ambient cookie to abuse and is let through. This
/// stops cross-site form posts, login CSRF included.
fn same_origin(headers: &HeaderMap) -> bool {
    let value = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let Some(host) = value(header::HOST).filter(|h| !h.is_empty()) else {
        return value(header::ORIGIN).is_none() && value(header::REFERER).is_none();
    };
    // The authority of an absolute http(s) URL: what follows the scheme, up to the
    // path.
    let authority = |url: &str| {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))?;
        Some(rest.split('/').next().unwrap_or("").to_owned())
    };
    match (value(header::ORIGIN), value(header::REFERER)) {
        (Some(origin), _) => authority(origin).as_deref() == Some(host),
        (None, Some(referer)) => authority(referer).as_deref() == Some(host),
        (None, None) => true,
    }
}

/// Refuses cross-site state changes and adds the headers every answer of a session
/// site needs: no MIME sniffing, no framing by other sites (clickjacking), and no
/// shared caching of pages made from a session.
async fn guard(req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let mut resp = if safe || same_origin(req.headers()) {
        next.run(req).await
    } else {
        (StatusCode::FORBIDDEN, "cross-origin request refused\n").into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    resp
}

async fn index(State(app): State<App>, session: Session) -> Page<Html<String>> {
    let visits = session
        .update("visits", |n: Option<u64>| Some(n.unwrap_or(0) + 1))
        .await?
        .unwrap_or(0);
    let user = session.get::<String>("user").await?;
    let cart = session.get::<Cart>("cart").await?.unwrap_or_default();
    Ok(Html(page(&app, visits, user.as_deref(), &cart)))
}

#[derive(Deserialize)]
struct Login {
    user: String,
}

async fn login(session: Session, headers: HeaderMap, Form(form): Form<Login>) -> Page<Response> {
    let user = form.user.trim();
    if user.is_empty() || user.len() > 64 {
        return Ok((StatusCode::BAD_REQUEST, "user must be 1 to 64 bytes\n").into_response());
    }
    // New id on login: a session id seen before login is worthless after it.
    session.regenerate().await?;
    session.insert("user", user).await?;
    // Into the user's index, for "your devices" and "log out everywhere".
    session
        .set_user(user, Some(&device_label(&headers)))
        .await?;
    Ok(Redirect::to("/").into_response())
}

/// A short label for a "your devices" list: "Firefox on Linux" from a
/// User-Agent that names them, else the User-Agent's first 80 characters.
fn device_label(headers: &HeaderMap) -> String {
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown browser");
    const BROWSERS: [(&str, &str); 6] = [
        ("Edg/", "Edge"),
        ("Firefox/", "Firefox"),
        ("HeadlessChrome/", "Headless Chrome"),
        ("Chrome/", "Chrome"),
        ("Safari/", "Safari"),
        ("curl/", "curl"),
    ];
    const SYSTEMS: [(&str, &str); 6] = [
        ("Android", "Android"),
        ("iPhone", "iOS"),
        ("iPad", "iPadOS"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("Linux", "Linux"),
    ];
    let find = |table: &[(&str, &'static str)]| {
        table
            .iter()
            .find(|(needle, _)| agent.contains(needle))
            .map(|&(_, name)| name)
    };
    match (find(&BROWSERS), find(&SYSTEMS)) {
        (Some(browser), Some(system)) => format!("{browser} on {system}"),
        (Some(browser), None) => browser.to_owned(),
        _ => agent.chars().take(80).collect(),
    }
}

/// `GET /devices`: the logged-in user's sessions, `{"sessions": [...]}`, the
/// requesting one with `"current": true`.
async fn devices(session: Session) -> Page<Response> {
    if session.user().await?.is_none() {
        return Ok(not_logged_in());
    }
    let list: Vec<_> = session
        .user_sessions()
        .await?
        .into_iter()
        .map(|d| {
            serde_json::json!({
                "id": d.handle,
                "created": d.created_ms,
                "last_seen": d.last_seen_ms,
                "label": d.label,
                "current": d.current,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "sessions": list })).into_response())
}

fn not_logged_in() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(serde_json::json!({ "error": "not logged in" })),
    )
        .into_response()
}

/// A browser's form post goes back to the page; an API client gets JSON.
fn ended(headers: &HeaderMap, n: usize) -> Response {
    let html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if html {
        Redirect::to("/").into_response()
    } else {
        Json(serde_json::json!({ "ended": n })).into_response()
    }
}

/// `POST /logout-others`: ends the user's other sessions; this one stays.
async fn logout_others(session: Session, headers: HeaderMap) -> Page<Response> {
    if session.user().await?.is_none() {
        return Ok(not_logged_in());
    }
    let n = session.end_other_sessions().await?;
    Ok(ended(&headers, n))
}

/// `POST /logout-everywhere`: ends all the user's sessions, this one too.
async fn logout_everywhere(session: Session, headers: HeaderMap) -> Page<Response> {
    if session.user().await?.is_none() {
        return Ok(not_logged_in());
    }
    let n = session.end_all_sessions().await?;
    Ok(ended(&headers, n))
}

async fn me(session: Session) -> Page<Response> {
    Ok(match session.get::<String>("user").await? {
        Some(user) => Json(serde_json::json!({ "user": user })).into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({ "user": null })),
        )
            .into_response(),
    })
}

async fn logout(session: Session) -> Page<Redirect> {
    // Deletes the record (the cart with it) and expires the cookie; a request that
    // loaded the session before cannot bring it back.
    session.destroy().await?;
    Ok(Redirect::to("/"))
}

async fn cart(session: Session) -> Page<Json<Cart>> {
    Ok(Json(session.get::<Cart>("cart").await?.unwrap_or_default()))
}

async fn cart_clear(session: Session) -> Page<Json<Cart>> {
    session.remove("cart").await?;
    Ok(Json(Cart::new()))
}

async fn cart_add(session: Session, Path(item): Path<String>) -> Page<Response> {
    if item.is_empty()
        || item.len() > 64
        || !item
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Ok((
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": "bad item id" })),
        )
            .into_response());
    }
    // Replayed on the stored cart at save: concurrent adds to one cart all count.
    let cart = session
        .update("cart", move |cart: Option<Cart>| {
            let mut cart = cart.unwrap_or_default();
            *cart.entry(item.clone()).or_default() += 1;
            Some(cart)
        })
        .await?
        .unwrap_or_default();
    Ok(Json(cart).into_response())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;\
padding:0 1rem;color:#222}h1{font-size:1.5rem}.note{color:#555;font-size:.9rem;border-left:3px \
solid #9ab;padding-left:.75rem}form{display:inline-block;margin:.25rem .25rem .25rem 0}\
button{font:inherit;padding:.3rem .8rem;border:1px solid #789;border-radius:4px;\
background:#f4f7f9;cursor:pointer}input{font:inherit;padding:.25rem .5rem}";

fn page(app: &App, visits: u64, user: Option<&str>, cart: &Cart) -> String {
    let who = match user {
        Some(u) => format!(
            "<p>Logged in as <b>{}</b>.</p><form method=post action=/logout><button>Log out</button></form>\
             <form method=post action=/logout-others><button>Log out other devices</button></form>\
             <form method=post action=/logout-everywhere><button>Log out everywhere</button></form>\
             <p><a href=/devices>Your devices</a></p>",
            escape(u)
        ),
        None => "<form method=post action=/login><input name=user placeholder=name aria-label=name> <button>Log in</button></form>".into(),
    };
    let items: String = cart
        .iter()
        .map(|(k, n)| format!("<li>{} × {n}</li>", escape(k)))
        .collect();
    // The cart buttons post with fetch and reload, so the page stays on /.
    format!(
        "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width\">\
         <title>fscache sessions (axum)</title><style>{STYLE}</style>\
         <h1>fscache session demo (axum)</h1>\
         <p class=note>Your session lives on this server, in <code>{url}</code> \
         (fscache's session layer); your browser holds only a random id in the \
         <code>id</code> cookie.<br>It expires {LIFETIME_DAYS} days after your last \
         request; logging out deletes it at once.</p>\
         <p>You have visited this page <b>{visits}</b> time(s).</p>{who}\
         <h2>Cart</h2><ul>{items}</ul>\
         <button onclick=\"add('apple')\">Add an apple</button> \
         <button onclick=\"add('pear')\">Add a pear</button> \
         <button onclick=\"clearCart()\">Empty the cart</button>\
         <p><a href=/me>/me</a> · <a href=/cart>/cart</a></p>\
         <script>\
         async function add(i){{await fetch('/cart/add/'+i,{{method:'POST'}});location.reload()}}\
         async function clearCart(){{await fetch('/cart/clear',{{method:'POST'}});location.reload()}}\
         </script>",
        url = escape(&app.url),
    )
}

struct Args {
    bind: SocketAddr,
    store: String,
    secure: bool,
    store_calls: StoreCalls,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        bind: "127.0.0.1:8081".parse().expect("literal"),
        store: std::env::var("FSCACHE_STORE").unwrap_or_else(|_| "file://./axum-sessions".into()),
        secure: false,
        store_calls: StoreCalls::Auto,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bind" => args.bind = value()?.parse().map_err(|e| format!("--bind: {e}"))?,
            "--store" => args.store = value()?,
            "--secure" => args.secure = true,
            "--store-calls" => {
                args.store_calls = match value()?.as_str() {
                    "auto" => StoreCalls::Auto,
                    "inline" => StoreCalls::Inline,
                    "blocking" => StoreCalls::Blocking,
                    "async" => StoreCalls::Async,
                    other => {
                        return Err(format!(
                            "--store-calls: {other:?} is not auto, async, inline or blocking"
                        ));
                    }
                }
            }
            "-h" | "--help" => {
                println!(
                    "axum-server [--bind ADDR] [--store URL] [--secure] [--store-calls auto|async|inline|blocking]\n\
                     The fscache session demo on axum with fscache's session layer. --store (or \
                     FSCACHE_STORE) is any fscache store URL; default file://./axum-sessions. \
                     --store-calls: where store calls run (default auto: the async client for \
                     redis://, inline for file://, the blocking pool for the other engines)."
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other:?} (try --help)")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("axum-server: {e}");
            std::process::exit(2);
        }
    };
    let store = match fscache::store::open(&args.store) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "axum-server: cannot open store {}: {e}",
                fscache::store::redact(&args.store)
            );
            std::process::exit(1);
        }
    };
    let config = SessionConfig::default()
        .cookie_name("id")
        .lifetime(Duration::from_secs(LIFETIME_DAYS * 86_400))
        .secure(args.secure);
    let sessions = match Sessions::new(store, config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("axum-server: {e}");
            std::process::exit(2);
        }
    };
    let app = App {
        // Shown on the page: never with the URL's password.
        url: fscache::store::redact(&args.store),
    };
    let router = Router::new()
        .route("/", get(index))
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/logout", post(logout))
        .route("/devices", get(devices))
        .route("/logout-others", post(logout_others))
        .route("/logout-everywhere", post(logout_everywhere))
        .route("/cart", get(cart))
        .route("/cart/clear", post(cart_clear))
        .route("/cart/add/{item}", post(cart_add))
        .layer(SessionLayer::with_store_calls(sessions, args.store_calls))
        .layer(middleware::from_fn(guard))
        .with_state(app);
    let listener = match tokio::net::TcpListener::bind(args.bind).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("axum-server: cannot listen on {}: {e}", args.bind);
            std::process::exit(1);
        }
    };
    let addr = listener.local_addr().expect("bound");
    // The first line on stdout, for scripts and tests that bind port 0.
    println!("listening on http://{addr}");
    if let Err(e) = axum::serve(listener, router).await {
        eprintln!("axum-server: {e}");
        std::process::exit(1);
    }
}
