//! A real multi-threaded sync web server (tiny_http) with server-side sessions.
//!
//! ```text
//! cargo run --release --example server                 # http://127.0.0.1:8000, ./sessions
//! cargo run --release --example server -- --bind 0.0.0.0:8080 --dir /var/lib/app/sessions \
//!     --secret "$(head -c 32 /dev/urandom | base64)"
//! ```
//! Flags (or environment): `--bind` (`FSCACHE_BIND`, default `127.0.0.1:8000`),
//! `--dir` (`FSCACHE_SESSION_DIR`, default `./sessions`), `--secret` (`FSCACHE_SECRET`,
//! signs cookies; several comma-separated secrets rotate: the first signs),
//! `--threads` (default 8).
//!
//! Routes, after the Flask-Session tutorials: `GET /` visit counter, `POST /login`
//! (form field `user`; regenerates the id), `GET /me`, `POST /logout`,
//! `POST /cart/add/<id>`, `GET /cart` (JSON), `POST /cart/clear`.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use fscache::FileSystemCache;
use fscache::session::{Session, SessionConfig, Sessions};
use tiny_http::{Header, Method, Request, Response, Server};

/// Server settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub bind: String,
    pub dir: PathBuf,
    pub secrets: Vec<String>,
    pub threads: usize,
}

impl Settings {
    fn from_args() -> Result<Settings, String> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut s = Settings {
            bind: env("FSCACHE_BIND").unwrap_or_else(|| "127.0.0.1:8000".into()),
            dir: env("FSCACHE_SESSION_DIR")
                .map_or_else(|| PathBuf::from("sessions"), PathBuf::from),
            secrets: env("FSCACHE_SECRET")
                .map(|v| v.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
            threads: 8,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or(format!("{flag} needs a value"));
            match flag.as_str() {
                "--bind" => s.bind = value()?,
                "--dir" => s.dir = PathBuf::from(value()?),
                "--secret" => s.secrets = value()?.split(',').map(str::to_owned).collect(),
                "--threads" => {
                    s.threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?
                }
                "-h" | "--help" => {
                    return Err(
                        "usage: server [--bind ADDR] [--dir DIR] [--secret S[,OLD]] [--threads N]"
                            .into(),
                    );
                }
                other => return Err(format!("unknown flag {other} (try --help)")),
            }
        }
        Ok(s)
    }
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    server: Arc<Server>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting and waits for the workers.
    pub fn stop(self) {
        self.server.unblock();
        for _ in 1..self.workers.len() {
            self.server.unblock();
        }
        for w in self.workers {
            let _ = w.join();
        }
    }
}

/// Opens the session store and starts the workers.
pub fn start(settings: &Settings) -> Result<Running, Box<dyn std::error::Error + Send + Sync>> {
    let cache = FileSystemCache::builder(&settings.dir)
        // Sessions are bounded by their lifetime, not by evicting active users.
        .threshold(0)
        .open()?;
    let mut config = SessionConfig::default();
    if !settings.secrets.is_empty() {
        config = config.signing_keys(&settings.secrets);
    }
    let sessions = Arc::new(Sessions::new(cache, config)?);
    let server = Arc::new(Server::http(&settings.bind)?);
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or("the server is not listening on an IP address")?;
    let workers = (0..settings.threads.max(1))
        .map(|_| {
            let server = Arc::clone(&server);
            let sessions = Arc::clone(&sessions);
            std::thread::spawn(move || {
                for request in server.incoming_requests() {
                    serve(&sessions, request);
                }
            })
        })
        .collect();
    Ok(Running {
        addr,
        server,
        workers,
    })
}

fn serve(sessions: &Sessions, mut request: Request) {
    let response = match handle(sessions, &mut request) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {} {}: {e}", request.method(), request.url());
            text(500, "text/plain; charset=utf-8", "internal error\n".into())
        }
    };
    let _ = request.respond(response);
}

type Reply = Response<std::io::Cursor<Vec<u8>>>;

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

fn text(status: u16, content_type: &str, body: String) -> Reply {
    Response::from_string(body)
        .with_status_code(status)
        .with_header(header("Content-Type", content_type))
}

fn json(status: u16, value: &serde_json::Value) -> Reply {
    text(status, "application/json", format!("{value}\n"))
}

fn redirect(to: &str) -> Reply {
    text(303, "text/plain; charset=utf-8", format!("see {to}\n"))
        .with_header(header("Location", to))
}

fn handle(sessions: &Sessions, request: &mut Request) -> fscache::Result<Reply> {
    let cookies: Vec<&str> = request
        .headers()
        .iter()
        .filter(|h| h.field.equiv("Cookie"))
        .map(|h| h.value.as_str())
        .collect();
    let cookie_header = (!cookies.is_empty()).then(|| cookies.join("; "));
    let mut session = sessions.load(cookie_header.as_deref())?;
    let method = request.method().clone();
    let url = request.url().split('?').next().unwrap_or("").to_owned();
    // A browser's form post gets sent back to the page; API clients get JSON.
    let browser = request
        .headers()
        .iter()
        .any(|h| h.field.equiv("Accept") && h.value.as_str().contains("text/html"));
    let response = route(&method, &url, request, &mut session)?;
    let response = if browser && method == Method::Post && response.status_code().0 == 200 {
        redirect("/")
    } else {
        response
    };
    let outcome = sessions.save(&mut session)?;
    let mut response = response;
    if let Some(set_cookie) = outcome.set_cookie {
        response = response.with_header(header("Set-Cookie", &set_cookie));
    }
    if outcome.vary_cookie {
        response = response.with_header(header("Vary", "Cookie"));
    }
    Ok(response)
}

type Cart = BTreeMap<String, u32>;

fn route(
    method: &Method,
    url: &str,
    request: &mut Request,
    session: &mut Session,
) -> fscache::Result<Reply> {
    Ok(match (method, url) {
        (Method::Get, "/") => {
            let visits = session
                .update("visits", |n: Option<u64>| Some(n.unwrap_or(0) + 1))?
                .unwrap_or(0);
            let user = session.get::<String>("user")?;
            let cart = session.get::<Cart>("cart")?.unwrap_or_default();
            text(
                200,
                "text/html; charset=utf-8",
                page(visits, user.as_deref(), &cart),
            )
        }
        (Method::Post, "/login") => {
            let form = read_form(request);
            let user = form.get("user").map(|u| u.trim()).unwrap_or("");
            if user.is_empty() || user.len() > 64 {
                return Ok(text(
                    400,
                    "text/plain; charset=utf-8",
                    "user must be 1 to 64 bytes\n".into(),
                ));
            }
            // New id on login: a session id seen before login is worthless after it.
            session.regenerate()?;
            session.insert("user", user)?;
            redirect("/")
        }
        (Method::Get, "/me") => match session.get::<String>("user")? {
            Some(user) => json(200, &serde_json::json!({ "user": user })),
            None => json(401, &serde_json::json!({ "user": null })),
        },
        (Method::Post, "/logout") => {
            session.destroy();
            redirect("/")
        }
        (Method::Get, "/cart") => {
            let cart = session.get::<Cart>("cart")?.unwrap_or_default();
            json(200, &serde_json::json!(cart))
        }
        (Method::Post, "/cart/clear") => {
            session.remove("cart");
            json(200, &serde_json::json!({}))
        }
        (Method::Post, path) if path.starts_with("/cart/add/") => {
            let item = &path["/cart/add/".len()..];
            if item.is_empty()
                || item.len() > 64
                || !item
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Ok(json(400, &serde_json::json!({ "error": "bad item id" })));
            }
            let item = item.to_owned();
            // Replayed under the store's lock on save: concurrent adds all count.
            let cart = session.update("cart", move |cart: Option<Cart>| {
                let mut cart = cart.unwrap_or_default();
                *cart.entry(item.clone()).or_default() += 1;
                Some(cart)
            })?;
            json(200, &serde_json::json!(cart))
        }
        _ => text(404, "text/plain; charset=utf-8", "not found\n".into()),
    })
}

fn read_form(request: &mut Request) -> BTreeMap<String, String> {
    let mut body = String::new();
    let _ = request
        .as_reader()
        .take(16 * 1024)
        .read_to_string(&mut body);
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (url_decode(k), url_decode(v)))
        .collect()
}

fn url_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'+', _, _) => out.push(b' '),
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 2;
            }
            (b, _, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn page(visits: u64, user: Option<&str>, cart: &Cart) -> String {
    let who = match user {
        Some(u) => format!(
            "<p>Logged in as <b>{}</b>.</p><form method=post action=/logout><button>Log out</button></form>",
            escape(u)
        ),
        None => "<form method=post action=/login><input name=user placeholder=name> <button>Log in</button></form>".into(),
    };
    let items: String = cart
        .iter()
        .map(|(k, n)| format!("<li>{} × {n}</li>", escape(k)))
        .collect();
    format!(
        "<!doctype html><meta charset=utf-8><title>fscache sessions</title>\
         <h1>fscache session demo</h1><p>You have visited this page <b>{visits}</b> time(s).</p>{who}\
         <h2>Cart</h2><ul>{items}</ul>\
         <form method=post action=/cart/add/apple><button>Add an apple</button></form>\
         <form method=post action=/cart/add/pear><button>Add a pear</button></form>\
         <form method=post action=/cart/clear><button>Empty the cart</button></form>\
         <p><a href=/me>/me</a> · <a href=/cart>/cart</a></p>"
    )
}

#[allow(dead_code)]
fn main() {
    let settings = match Settings::from_args() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let running = match start(&settings) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "fscache session demo: open http://{} (sessions in {}{})",
        running.addr,
        settings.dir.display(),
        if settings.secrets.is_empty() {
            ""
        } else {
            ", cookies signed"
        }
    );
    for w in running.workers {
        let _ = w.join();
    }
}
