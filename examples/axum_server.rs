//! The session demo of `examples/server.rs` on axum, with tower-sessions over an
//! fscache store (feature `tower-sessions`): visit counter, login with a new session
//! id, cart, and logout that deletes the record and expires the cookie.
//!
//! ```text
//! cargo run --release -p fscache-web --bin axum-server -- --bind 127.0.0.1:8081
//! cargo run --release -p fscache-web --bin axum-server --features engines -- --store redis://127.0.0.1/
//! ```
//!
//! tower-sessions saves whole records, so two requests that change one session at
//! once keep only the last save (the visit counter shows it). The cart does not
//! lose items: it lives in a record of its own, changed with fscache's
//! `Store::update`, the merge `fscache::session::Sessions` uses for every save.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Form, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fscache::Store;
use fscache::store::Merge;
use fscache::tower_sessions::TowerStore;
use serde::Deserialize;
use tower_sessions::{Expiry, Session, SessionManagerLayer};

type Cart = BTreeMap<String, u64>;

/// Session lifetime: 7 days after the last request.
const LIFETIME_DAYS: i64 = 7;

#[derive(Clone)]
struct App {
    store: Arc<dyn Store>,
    url: String,
}

/// An error page: the store failed.
struct Failed(String);

impl IntoResponse for Failed {
    fn into_response(self) -> Response {
        eprintln!("axum-server: {}", self.0);
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "session store unavailable\n",
        )
            .into_response()
    }
}

impl From<tower_sessions::session::Error> for Failed {
    fn from(e: tower_sessions::session::Error) -> Self {
        Failed(e.to_string())
    }
}

impl From<fscache::Error> for Failed {
    fn from(e: fscache::Error) -> Self {
        Failed(e.report())
    }
}

/// The key of a session's cart record: a random token kept in the session, so the
/// cart survives the id change at login. (A session whose very first requests are
/// concurrent adds could make two tokens; pages and login make it first.)
async fn cart_key(session: &Session, create: bool) -> Result<Option<String>, Failed> {
    if let Some(token) = session.get::<String>("cart_token").await? {
        return Ok(Some(format!(
            "cart:{}",
            blake3::hash(token.as_bytes()).to_hex()
        )));
    }
    if !create {
        return Ok(None);
    }
    let token = fscache::session::new_id()?;
    session.insert("cart_token", &token).await?;
    Ok(Some(format!(
        "cart:{}",
        blake3::hash(token.as_bytes()).to_hex()
    )))
}

async fn load_cart(app: &App, session: &Session) -> Result<Cart, Failed> {
    let Some(key) = cart_key(session, false).await? else {
        return Ok(Cart::new());
    };
    let store = Arc::clone(&app.store);
    let found = tokio::task::spawn_blocking(move || store.load(&key))
        .await
        .map_err(|e| Failed(e.to_string()))??;
    Ok(found
        .and_then(|v| serde_json::from_slice(&v.value).ok())
        .unwrap_or_default())
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

fn lifetime() -> std::time::Duration {
    std::time::Duration::from_secs(LIFETIME_DAYS as u64 * 86_400)
}

async fn index(State(app): State<App>, session: Session) -> Result<Html<String>, Failed> {
    let visits = session.get::<u64>("visits").await?.unwrap_or(0) + 1;
    session.insert("visits", visits).await?;
    // The cart's token is made on a session's first page, not by its first add: two
    // first adds at once would each make one, and one cart would be lost.
    cart_key(&session, true).await?;
    let user = session.get::<String>("user").await?;
    let cart = load_cart(&app, &session).await?;
    Ok(Html(page(&app, visits, user.as_deref(), &cart)))
}

#[derive(Deserialize)]
struct Login {
    user: String,
}

async fn login(session: Session, Form(form): Form<Login>) -> Result<Response, Failed> {
    let user = form.user.trim();
    if user.is_empty() || user.len() > 64 {
        return Ok((StatusCode::BAD_REQUEST, "user must be 1 to 64 bytes\n").into_response());
    }
    // New id on login: a session id seen before login is worthless after it.
    session.cycle_id().await?;
    session.insert("user", user).await?;
    cart_key(&session, true).await?;
    Ok(Redirect::to("/").into_response())
}

async fn me(session: Session) -> Result<Response, Failed> {
    Ok(match session.get::<String>("user").await? {
        Some(user) => Json(serde_json::json!({ "user": user })).into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({ "user": null })),
        )
            .into_response(),
    })
}

async fn logout(State(app): State<App>, session: Session) -> Result<Redirect, Failed> {
    if let Some(key) = cart_key(&session, false).await? {
        let store = Arc::clone(&app.store);
        tokio::task::spawn_blocking(move || store.remove(&key))
            .await
            .map_err(|e| Failed(e.to_string()))??;
    }
    // Deletes the record; tower-sessions then expires the cookie.
    session.flush().await?;
    Ok(Redirect::to("/"))
}

async fn cart(State(app): State<App>, session: Session) -> Result<Json<Cart>, Failed> {
    Ok(Json(load_cart(&app, &session).await?))
}

async fn cart_clear(State(app): State<App>, session: Session) -> Result<Json<Cart>, Failed> {
    if let Some(key) = cart_key(&session, false).await? {
        let store = Arc::clone(&app.store);
        tokio::task::spawn_blocking(move || store.remove(&key))
            .await
            .map_err(|e| Failed(e.to_string()))??;
    }
    Ok(Json(Cart::new()))
}

async fn cart_add(
    State(app): State<App>,
    session: Session,
    Path(item): Path<String>,
) -> Result<Response, Failed> {
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
    let key = cart_key(&session, true).await?.expect("created");
    let store = Arc::clone(&app.store);
    // One merge under the store's lock (or a compare-and-set loop on the engines
    // without one): concurrent adds to one cart all count.
    let stored = tokio::task::spawn_blocking(move || {
        store.update(&key, lifetime(), &mut |current| {
            let mut cart: Cart = current
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or_default();
            *cart.entry(item.clone()).or_default() += 1;
            Ok(Merge::Put(
                serde_json::to_vec(&cart).map_err(fscache::Error::callback)?,
            ))
        })
    })
    .await
    .map_err(|e| Failed(e.to_string()))??;
    let cart: Cart = stored
        .and_then(|b| serde_json::from_slice(&b).ok())
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
            "<p>Logged in as <b>{}</b>.</p><form method=post action=/logout><button>Log out</button></form>",
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
         (tower-sessions over fscache); your browser holds only a random id in the \
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
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        bind: "127.0.0.1:8081".parse().expect("literal"),
        store: std::env::var("FSCACHE_STORE").unwrap_or_else(|_| "file://./axum-sessions".into()),
        secure: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bind" => args.bind = value()?.parse().map_err(|e| format!("--bind: {e}"))?,
            "--store" => args.store = value()?,
            "--secure" => args.secure = true,
            "-h" | "--help" => {
                println!(
                    "axum-server [--bind ADDR] [--store URL] [--secure]\n\
                     The fscache session demo on axum + tower-sessions. --store (or \
                     FSCACHE_STORE) is any fscache store URL; default file://./axum-sessions."
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
    let store: Arc<dyn Store> = match fscache::store::open(&args.store) {
        Ok(s) => Arc::from(s),
        Err(e) => {
            eprintln!("axum-server: cannot open store {}: {e}", args.store);
            std::process::exit(1);
        }
    };
    let layer = SessionManagerLayer::new(TowerStore::from_arc(Arc::clone(&store)))
        .with_secure(args.secure)
        .with_expiry(Expiry::OnInactivity(time::Duration::days(LIFETIME_DAYS)));
    let app = App {
        store,
        url: args.store.clone(),
    };
    let router = Router::new()
        .route("/", get(index))
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/logout", post(logout))
        .route("/cart", get(cart))
        .route("/cart/clear", post(cart_clear))
        .route("/cart/add/{item}", post(cart_add))
        .layer(layer)
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
