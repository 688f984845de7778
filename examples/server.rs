//! A real multi-threaded sync web server (tiny_http) with server-side sessions.
//!
//! ```text
//! cargo run --release --example server                 # http://127.0.0.1:8000, ./sessions
//! cargo run --release --example server -- --bind 0.0.0.0:8080 --dir /var/lib/app/sessions \
//!     --secret "$(head -c 32 /dev/urandom | base64)"
//! cargo run --release --example server --features redis,postgres,sqlite,memcached -- \
//!     --store redis://127.0.0.1:6379/0
//! ```
//! Flags (or environment): `--bind` (`FSCACHE_BIND`, default `127.0.0.1:8000`),
//! `--store` (`FSCACHE_STORE`, a store URL: `file://DIR`, `redis://`, `postgres://`,
//! `sqlite://PATH`, `memcache://`; default `file://./sessions`), `--dir`
//! (`FSCACHE_SESSION_DIR`, short for `--store file://DIR`), `--cleanup` (remove the
//! store's expired sessions in batches and exit: for cron), `--secret` (`FSCACHE_SECRET`,
//! signs cookies; several comma-separated secrets rotate: the first signs),
//! `--secure` (`FSCACHE_SECURE=1`: Secure cookies, for a server behind HTTPS),
//! `--threads` (default 8), `--lifetime SECS` (`FSCACHE_SESSION_LIFETIME`, default 31
//! days), `--key-prefix` (`FSCACHE_KEY_PREFIX`), `--help`. One log line per request
//! goes to stdout.
//!
//! **Joining a Flask app** (feature `flask`, on by default in this package):
//! `--store cachelib:///path/to/flask_session` (the Flask-Session cachelib
//! directory; `?hash=md5` for cachelib before 0.16) shares sessions with the Flask
//! app, with its secret in `FSCACHE_FLASK_SECRET_KEY` (`--flask-secret-key`) when it
//! signs its session cookie (`SESSION_USE_SIGNER = True`; set
//! `FSCACHE_FLASK_USE_SIGNER=0` if it does not), and its `SESSION_KEY_PREFIX` in
//! `FSCACHE_KEY_PREFIX` if not `session:`. The same for a Flask app on Redis:
//! `--store redis://…` with `FSCACHE_FLASK_SECRET_KEY` (or `FSCACHE_FLASK=1` /
//! `--flask` when unsigned). In that mode the server uses Flask-Session's cookie
//! (`session`), signer, key prefix and record format, and keeps the logged-in user
//! under the session key `user`, as Flask apps commonly do.
//!
//! Routes, after the Flask-Session tutorials: `GET /` visit counter (page views only:
//! the redirect after a form post does not count; an anonymous visitor's count is a
//! `visits` cookie, so a page view stores no session until there is something to
//! keep), `POST /login` (form field `user`;
//! regenerates the id), `GET /me`, `POST /logout`, `POST /cart/add/<id>`, `GET /cart`
//! (JSON), `POST /cart/clear`. A POST whose `Origin` (or `Referer`) is another site's
//! is refused with 403 (CSRF, login CSRF included). `HEAD` answers like `GET` without a
//! body and changes nothing; a known path with another method is 405 with `Allow`; an unknown method
//! is 501.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use fscache::session::{Session, SessionConfig, Sessions};
use fscache::store::{self, Store};
use tiny_http::{Header, Method, Request, Response, Server};

/// Server settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub bind: String,
    /// The store URL (`--store`, or `--dir` as `file://DIR`).
    pub store: String,
    /// Remove expired sessions and exit.
    pub cleanup: bool,
    pub secrets: Vec<String>,
    pub secure: bool,
    pub threads: usize,
    /// Session lifetime in seconds (Flask's `PERMANENT_SESSION_LIFETIME`).
    pub lifetime_secs: u64,
    /// The store key prefix (Flask-Session's `SESSION_KEY_PREFIX`).
    pub key_prefix: Option<String>,
    /// Share sessions with a Flask app (Flask-Session's formats).
    pub flask: bool,
    /// The Flask app's `SECRET_KEY`, for Flask-Session's cookie signer.
    pub flask_secret: Option<String>,
    /// Sign cookies as Flask-Session does with `SESSION_USE_SIGNER = True` (the
    /// default when a Flask secret is given).
    pub flask_use_signer: bool,
    /// The most request bodies read at once on threads of their own (slow uploads);
    /// past it a request with a pending body is answered 503.
    pub max_uploads: usize,
}

pub const USAGE: &str = "\
usage: server [--bind ADDR] [--store URL | --dir DIR] [--secret S[,OLD...]] [--secure]
              [--threads N] [--max-uploads N] [--cleanup]

A session web server on fscache: a visit counter, login, a cart and logout.

  --bind ADDR     address to listen on (FSCACHE_BIND; default 127.0.0.1:8000)
  --store URL     where sessions live (FSCACHE_STORE; default file://./sessions):
                  file://DIR, redis://HOST:PORT/DB, postgres://USER@HOST/DB,
                  sqlite://PATH, memcache://HOST:PORT (engines need the build
                  features redis, postgres, sqlite, memcached)
  --dir DIR       session directory: short for --store file://DIR
                  (FSCACHE_SESSION_DIR)
  --cleanup       remove the store's expired sessions (SQL stores) and exit
  --secret S      sign cookies; comma-separated secrets rotate, the first signs
                  (FSCACHE_SECRET)
  --secure        mark cookies Secure: set this behind HTTPS (FSCACHE_SECURE=1)
  --threads N     worker threads (default 8)
  --max-uploads N request bodies read at once while they arrive (default 32);
                  past it a request whose body is still on its way gets 503
  --lifetime SECS session lifetime (FSCACHE_SESSION_LIFETIME; default 2678400,
                  31 days: Flask's PERMANENT_SESSION_LIFETIME)
  --key-prefix P  store key prefix (FSCACHE_KEY_PREFIX; default session:)
  -h, --help      print this help

Sharing sessions with a Flask app (Flask-Session):
  --store cachelib:///path/to/flask_session[?hash=md5]
                  the Flask app's cachelib session directory
  --flask-secret-key K
                  the Flask app's SECRET_KEY (FSCACHE_FLASK_SECRET_KEY): sign
                  the session cookie as SESSION_USE_SIGNER = True does
                  (FSCACHE_FLASK_USE_SIGNER=0 if the Flask app does not sign)
  --flask         Flask-Session's formats on any store, e.g. redis://
                  (FSCACHE_FLASK=1; implied by cachelib:// and a Flask secret)
";

impl Default for Settings {
    /// The defaults without the environment: 127.0.0.1:8000, `file://./sessions`,
    /// 8 threads, 31 days.
    fn default() -> Settings {
        Settings {
            bind: "127.0.0.1:8000".into(),
            store: store::DEFAULT_URL.into(),
            cleanup: false,
            secrets: Vec::new(),
            secure: false,
            threads: 8,
            lifetime_secs: 31 * 86_400,
            key_prefix: None,
            flask: false,
            flask_secret: None,
            flask_use_signer: true,
            max_uploads: 32,
        }
    }
}

/// What the command line asks for.
pub enum Command {
    Run(Settings),
    Help,
}

impl Settings {
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let defaults = Settings::default();
        let mut s = Settings {
            bind: env("FSCACHE_BIND").unwrap_or(defaults.bind),
            store: env("FSCACHE_STORE")
                .or_else(|| env("FSCACHE_SESSION_DIR").map(|d| format!("file://{d}")))
                .unwrap_or(defaults.store),
            secrets: env("FSCACHE_SECRET")
                .map(|v| v.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
            secure: env("FSCACHE_SECURE").is_some_and(|v| v == "1" || v == "true"),
            key_prefix: env("FSCACHE_KEY_PREFIX"),
            flask: env("FSCACHE_FLASK").is_some_and(|v| v == "1" || v == "true"),
            flask_secret: env("FSCACHE_FLASK_SECRET_KEY"),
            flask_use_signer: env("FSCACHE_FLASK_USE_SIGNER")
                .is_none_or(|v| v != "0" && v != "false"),
            ..defaults
        };
        if let Some(v) = env("FSCACHE_SESSION_LIFETIME") {
            s.lifetime_secs = v
                .parse()
                .map_err(|e| format!("FSCACHE_SESSION_LIFETIME {v:?}: {e}"))?;
        }
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let mut value = || {
                args.next()
                    .ok_or(format!("{flag} needs a value (try --help)"))
            };
            match flag.as_str() {
                "--bind" => s.bind = value()?,
                "--store" => s.store = value()?,
                "--dir" => s.store = format!("file://{}", PathBuf::from(value()?).display()),
                "--cleanup" => s.cleanup = true,
                "--secret" => s.secrets = value()?.split(',').map(str::to_owned).collect(),
                "--secure" => s.secure = true,
                "--lifetime" => {
                    let v = value()?;
                    s.lifetime_secs = v
                        .parse()
                        .map_err(|e| format!("--lifetime {v:?}: {e} (seconds; try --help)"))?
                }
                "--key-prefix" => s.key_prefix = Some(value()?),
                "--flask" => s.flask = true,
                "--flask-secret-key" => s.flask_secret = Some(value()?),
                "--threads" => {
                    let v = value()?;
                    s.threads = v
                        .parse()
                        .map_err(|e| format!("--threads {v:?}: {e} (try --help)"))?
                }
                "--max-uploads" => {
                    let v = value()?;
                    s.max_uploads = v
                        .parse()
                        .map_err(|e| format!("--max-uploads {v:?}: {e} (try --help)"))?
                }
                "-h" | "--help" => return Ok(Command::Help),
                other => return Err(format!("unknown flag {other:?} (try --help)")),
            }
        }
        if s.lifetime_secs == 0 {
            return Err("the session lifetime must be at least 1 second".into());
        }
        Ok(Command::Run(s))
    }

    /// Whether sessions are shared with a Flask app (Flask-Session's formats).
    pub fn flask_mode(&self) -> bool {
        self.flask || self.flask_secret.is_some() || self.store.starts_with("cachelib://")
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

/// What the pages say about where sessions live.
struct Site {
    sessions: Sessions<Box<dyn Store>>,
    /// The store URL without its password, for the page.
    store: String,
    lifetime_secs: u64,
    /// Sessions shared with a Flask app.
    flask: bool,
    /// Served over HTTPS (behind a proxy): the origin's scheme.
    https: bool,
    /// Request bodies being read on threads of their own, and the most at once.
    uploads: std::sync::atomic::AtomicUsize,
    max_uploads: usize,
}

/// Opens the session store and starts the workers.
pub fn start(settings: &Settings) -> Result<Running, Box<dyn std::error::Error + Send + Sync>> {
    use std::net::ToSocketAddrs;
    // Check the address first, so a typo is named as such, not as a bind failure.
    settings.bind.to_socket_addrs().map_err(|e| {
        format!(
            "invalid address {:?} for --bind: {e} (expected HOST:PORT, e.g. 127.0.0.1:8000)",
            settings.bind
        )
    })?;
    // A file:// store is unbounded: sessions are bounded by their lifetime, not by
    // evicting active users; the cache removes expired ones as it is written.
    let store = open_store(&settings.store)?;
    let mut config = session_config(settings)?
        .lifetime(std::time::Duration::from_secs(settings.lifetime_secs))
        .secure(settings.secure);
    if let Some(prefix) = &settings.key_prefix {
        config = config.key_prefix(prefix.clone());
    }
    if !settings.secrets.is_empty() {
        config = config.signing_keys(&settings.secrets);
    }
    let site = Arc::new(Site {
        sessions: Sessions::new(store, config)?,
        store: redact(&settings.store),
        lifetime_secs: settings.lifetime_secs,
        flask: settings.flask_mode(),
        https: settings.secure,
        uploads: std::sync::atomic::AtomicUsize::new(0),
        max_uploads: settings.max_uploads,
    });
    let listener = std::net::TcpListener::bind(&settings.bind).map_err(|e| {
        format!(
            "cannot listen on {}: {e}; choose another address with --bind (e.g. --bind 127.0.0.1:8080)",
            settings.bind
        )
    })?;
    // tiny_http sends a response of over 1 KiB (the page) in two writes; without
    // TCP_NODELAY, Nagle's algorithm holds the second until the client's delayed ACK,
    // 40 ms per page view on a kept-alive connection. Accepted sockets inherit it.
    rustix::net::sockopt::set_tcp_nodelay(&listener, true)?;
    // tiny_http sets no socket timeouts: a client that stops sending would hold its
    // connection's thread (and a body reader) forever. Accepted sockets inherit
    // these on Linux; a stalled read or write fails after CLIENT_TIMEOUT.
    for which in [
        rustix::net::sockopt::Timeout::Recv,
        rustix::net::sockopt::Timeout::Send,
    ] {
        rustix::net::sockopt::set_socket_timeout(&listener, which, Some(CLIENT_TIMEOUT))?;
    }
    let server = Arc::new(Server::from_listener(listener, None)?);
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or("the server is not listening on an IP address")?;
    let workers = (0..settings.threads.max(1))
        .map(|_| {
            let server = Arc::clone(&server);
            let site = Arc::clone(&site);
            std::thread::spawn(move || {
                for request in server.incoming_requests() {
                    dispatch(&site, request);
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

/// The session settings: fscache's own, or Flask-Session's to share sessions with a
/// Flask app.
fn session_config(
    settings: &Settings,
) -> Result<SessionConfig, Box<dyn std::error::Error + Send + Sync>> {
    if !settings.flask_mode() {
        return Ok(SessionConfig::default());
    }
    #[cfg(feature = "flask")]
    {
        use fscache::flask::FlaskFormat;
        // cachelib pickles the session dict; Flask-Session's other backends store msgpack.
        let format = if settings.store.starts_with("cachelib://") {
            FlaskFormat::Pickle
        } else {
            FlaskFormat::Msgpack
        };
        let mut config = SessionConfig::flask_session(format);
        if let Some(secret) = settings
            .flask_secret
            .as_ref()
            .filter(|_| settings.flask_use_signer)
        {
            config = config.flask_signer([secret]);
        }
        Ok(config)
    }
    #[cfg(not(feature = "flask"))]
    Err(
        "sharing sessions with a Flask app needs the build feature flask \
         (cargo run --example server --features flask)"
            .into(),
    )
}

/// Opens the store a URL names, with the URL (password hidden) in the error.
pub fn open_store(url: &str) -> Result<Box<dyn Store>, Box<dyn std::error::Error + Send + Sync>> {
    store::open(url)
        .map_err(|e| format!("cannot open the session store {}: {e}", redact(url)).into())
}

/// Removes the store's expired sessions in batches until none is left; how many.
pub fn cleanup(url: &str) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    const BATCH: usize = 1000;
    let store = open_store(url)?;
    let mut total = 0;
    loop {
        let n = store.cleanup(BATCH)?;
        total += n;
        if n < BATCH {
            return Ok(total);
        }
    }
}

/// A store URL with its secrets replaced by `***` (for the log and the page).
pub use fscache::store::redact;

/// Largest request body read (a login form); a larger one is refused with 413.
const MAX_BODY: usize = 16 * 1024;

/// How long a client may stall a read or write (socket timeouts on every
/// connection), so no thread waits on one forever.
const CLIENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Threads that answer 503 to requests past `--max-uploads`.
const REFUSERS: usize = 4;

/// Answers 503 (Retry-After) to a request whose body is pending, on a small fixed
/// pool: dropping a request whose body has not arrived reads the rest (each stalled
/// read up to CLIENT_TIMEOUT), which no worker must wait for.
fn refuse_later(request: Request) {
    use std::sync::mpsc::{Receiver, Sender, channel};
    use std::sync::{Mutex, OnceLock};
    static QUEUE: OnceLock<Mutex<Sender<Request>>> = OnceLock::new();
    let tx = QUEUE.get_or_init(|| {
        let (tx, rx) = channel::<Request>();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..REFUSERS {
            let rx: Arc<Mutex<Receiver<Request>>> = Arc::clone(&rx);
            let _ = std::thread::Builder::new()
                .name("refuser".into())
                .spawn(move || {
                    loop {
                        let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok(request) = next else { return };
                        println!("{} {} 503 0.0ms", request.method(), request.url());
                        let busy = text(
                            503,
                            "text/plain; charset=utf-8",
                            "too many uploads at once\n".into(),
                        )
                        .with_header(header("Retry-After", "1"))
                        .with_header(header("Connection", "close"));
                        // Answered at once; the body's rest is read (and dropped) here.
                        let _ = request.respond(busy);
                    }
                });
        }
        Mutex::new(tx)
    });
    let _ = tx.lock().unwrap_or_else(|e| e.into_inner()).send(request);
}

/// Workers never wait for a request body. tiny_http reads nothing with a timeout of
/// its own, and a request whose body has not fully arrived blocks whoever reads it
/// — or drops it, since dropping reads the rest. So a request with a body is read
/// and answered on a thread of its own: a client that sends its body slowly (or
/// never) holds only that thread, for at most CLIENT_TIMEOUT per stalled read, and
/// every worker stays free for the next request. At most `--max-uploads` such
/// threads run; past that the request is answered 503 (Retry-After) by one of
/// REFUSERS threads. (tiny_http itself keeps a thread per open connection; a
/// production server belongs behind a reverse proxy that buffers request bodies.)
fn dispatch(site: &Arc<Site>, request: Request) {
    // tiny_http reads a body of up to 1 KiB itself, before queueing the request; only
    // a larger, chunked or 100-continue body can still be on its way.
    let pending = request.body_length().is_some_and(|n| n > 1024)
        || request
            .headers()
            .iter()
            .any(|h| h.field.equiv("Transfer-Encoding") || h.field.equiv("Expect"));
    if !pending {
        let mut request = request;
        let mut body = Vec::new();
        // In memory already (or empty): this read cannot block.
        let _ = request
            .as_reader()
            .take(MAX_BODY as u64 + 1)
            .read_to_end(&mut body);
        serve(site, request, body);
        return;
    }
    use std::sync::atomic::Ordering;
    if site.uploads.fetch_add(1, Ordering::AcqRel) >= site.max_uploads {
        site.uploads.fetch_sub(1, Ordering::AcqRel);
        refuse_later(request);
        return;
    }
    let site_for_error = Arc::clone(site);
    let site = Arc::clone(site);
    let spawned = std::thread::Builder::new()
        .name("body-reader".into())
        .spawn(move || {
            struct Release<'a>(&'a Site);
            impl Drop for Release<'_> {
                fn drop(&mut self) {
                    self.0
                        .uploads
                        .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                }
            }
            let _release = Release(&site);
            let mut request = request;
            let mut body = Vec::new();
            let read = request
                .as_reader()
                .take(MAX_BODY as u64 + 1)
                .read_to_end(&mut body);
            if read.is_err() {
                return; // the client went away or stalled past CLIENT_TIMEOUT
            }
            serve(&site, request, body);
        });
    if spawned.is_err() {
        site_for_error.uploads.fetch_sub(1, Ordering::AcqRel);
    }
}

fn serve(site: &Site, request: Request, body: Vec<u8>) {
    let started = std::time::Instant::now();
    let (method, path) = (request.method().clone(), request.url().to_owned());
    let result = if body.len() > MAX_BODY {
        Ok(text(
            413,
            "text/plain; charset=utf-8",
            "request body too large\n".into(),
        ))
    } else {
        handle(site, &request, &body)
    };
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {method} {path}: {e}");
            // The answer depended on the cookie (its session could not be loaded or
            // saved), so caches must not share it either.
            text(500, "text/plain; charset=utf-8", "internal error\n".into())
                .with_header(header("Vary", "Cookie"))
        }
    };
    // Every answer: no MIME sniffing, no framing by other sites (clickjacking), and
    // never stored by a shared cache (pages are made from the session).
    let response = response
        .with_header(header("X-Content-Type-Options", "nosniff"))
        .with_header(header("Content-Security-Policy", "frame-ancestors 'none'"))
        .with_header(header("X-Frame-Options", "DENY"))
        .with_header(header("Cache-Control", "private, no-store"));
    // Logged before the answer goes out, so a client that has its answer can count
    // on the line (the time is the handling time, not the transmission).
    println!(
        "{method} {path} {} {:.1}ms",
        response.status_code().0,
        started.elapsed().as_secs_f64() * 1e3
    );
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

/// Whether a state-changing request comes from this site's own pages: its `Origin`
/// (or, without one, its `Referer`) is this server's origin. A request with neither
/// header is not from a browser (browsers send `Origin` on every POST), so it carries
/// no ambient cookie to abuse and is let through.
fn same_origin(origin: Option<&str>, referer: Option<&str>, host: &str, https: bool) -> bool {
    let own = format!("{}://{host}", if https { "https" } else { "http" });
    match (origin, referer) {
        (Some(origin), _) => !host.is_empty() && origin == own,
        (None, Some(referer)) => {
            !host.is_empty() && (referer == own || referer.starts_with(&format!("{own}/")))
        }
        (None, None) => true,
    }
}

/// The methods each path answers, for 405's `Allow`; `None`: no such path.
fn allowed(path: &str) -> Option<&'static str> {
    match path {
        "/" | "/me" | "/cart" | "/devices" => Some("GET, HEAD"),
        "/login" | "/logout" | "/cart/clear" | "/logout-others" | "/logout-everywhere" => {
            Some("POST")
        }
        p if p.starts_with("/cart/add/") => Some("POST"),
        _ => None,
    }
}

fn handle(site: &Site, request: &Request, body: &[u8]) -> fscache::Result<Reply> {
    let method = request.method().clone();
    let (url, query) = request.url().split_once('?').unwrap_or((request.url(), ""));
    let (url, after_post) = (url.to_owned(), query.split('&').any(|p| p == "after=post"));
    // Method and path first: these answers do not depend on the cookie.
    let Some(allow) = allowed(&url) else {
        return Ok(text(404, "text/plain; charset=utf-8", "not found\n".into()));
    };
    let name = method.as_str();
    if !matches!(
        name,
        "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS"
    ) {
        return Ok(text(
            501,
            "text/plain; charset=utf-8",
            format!("{name} is not implemented\n"),
        ));
    }
    let as_get = method == Method::Head;
    if !allow.split(", ").any(|m| m == name) {
        return Ok(
            text(405, "text/plain; charset=utf-8", format!("use {allow}\n"))
                .with_header(header("Allow", allow)),
        );
    }
    // CSRF: a state change must come from this site's own pages. SameSite=Lax keeps
    // the cookie off cross-site POSTs, but not a login POST that needs no cookie
    // (login CSRF); the Origin check stops both.
    if method == Method::Post {
        let value = |name: &'static str| {
            request
                .headers()
                .iter()
                .find(|h| h.field.equiv(name))
                .map(|h| h.value.as_str())
        };
        let host = value("Host").unwrap_or("");
        if !same_origin(value("Origin"), value("Referer"), host, site.https) {
            return Ok(text(
                403,
                "text/plain; charset=utf-8",
                "cross-origin request refused\n".into(),
            ));
        }
    }
    let cookies: Vec<&str> = request
        .headers()
        .iter()
        .filter(|h| h.field.equiv("Cookie"))
        .map(|h| h.value.as_str())
        .collect();
    let cookie_header = (!cookies.is_empty()).then(|| cookies.join("; "));
    let sessions = &site.sessions;
    let mut session = sessions.load(cookie_header.as_deref())?;
    // A browser's form post gets sent back to the page; API clients get JSON.
    let browser = request
        .headers()
        .iter()
        .any(|h| h.field.equiv("Accept") && h.value.as_str().contains("text/html"));
    // HEAD is GET without a body (tiny_http drops it) and changes nothing: it is not a
    // page view, and nothing it does to the session is saved.
    let page_view = method == Method::Get && !after_post;
    let route_method = if as_get { Method::Get } else { method.clone() };
    let client_visits = cookie_header.as_deref().and_then(visits_cookie);
    let user_agent = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("User-Agent"))
        .map(|h| h.value.as_str());
    let request_info = RequestInfo {
        page_view,
        client_visits,
        body,
        label: device_label(user_agent.unwrap_or("unknown browser")),
    };
    let response = route(site, &route_method, &url, &request_info, &mut session)?;
    let response = if browser && method == Method::Post && response.status_code().0 == 200 {
        redirect("/?after=post")
    } else {
        response
    };
    let mut response = response;
    if !as_get {
        let outcome = sessions.save(&mut session)?;
        if let Some(set_cookie) = outcome.set_cookie {
            response = response.with_header(header("Set-Cookie", &set_cookie));
        }
    }
    // Every answer past this point was made from the session the cookie names.
    Ok(response.with_header(header("Vary", "Cookie")))
}

type Cart = BTreeMap<String, u32>;

/// What a route needs from the request besides the session.
struct RequestInfo<'a> {
    /// A GET of the page itself (not HEAD, not the redirect after a form post).
    page_view: bool,
    /// The `visits` cookie of an anonymous visitor.
    client_visits: Option<u64>,
    body: &'a [u8],
    /// What "your devices" calls this browser (from its User-Agent).
    label: String,
}

/// A short label for a "your devices" list: "Firefox on Linux" from a
/// User-Agent that names them, else the User-Agent's first 80 characters.
fn device_label(agent: &str) -> String {
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

/// The answer of the devices routes in Flask mode: Flask-Session's records are
/// written by Flask code, which keeps no per-user index.
fn no_index_in_flask_mode() -> Reply {
    json(
        501,
        &serde_json::json!({
            "error": "not in Flask mode: Flask-Session keeps no per-user index of sessions"
        }),
    )
}

fn not_logged_in() -> Reply {
    json(401, &serde_json::json!({ "error": "not logged in" }))
}

/// The visit count an anonymous visitor carries in a `visits` cookie of its own.
fn visits_cookie(cookie_header: &str) -> Option<u64> {
    cookie_header
        .split(';')
        .find_map(|c| c.trim().strip_prefix("visits="))
        .and_then(|v| v.parse::<u64>().ok())
        .map(|n| n.min(1_000_000_000))
}

/// A session about to be stored starts from the visits counted client-side.
fn seed_visits(session: &mut Session, client_visits: Option<u64>) -> fscache::Result<()> {
    if let Some(n) = client_visits
        && session.get::<u64>("visits")?.is_none()
    {
        session.insert("visits", &n)?;
    }
    Ok(())
}

fn route(
    site: &Site,
    method: &Method,
    url: &str,
    req: &RequestInfo<'_>,
    session: &mut Session,
) -> fscache::Result<Reply> {
    Ok(match (method, url) {
        (Method::Get, "/") => {
            let user = session.get::<String>("user")?;
            let cart = session.get::<Cart>("cart")?.unwrap_or_default();
            if session.is_new() {
                // An anonymous visitor with nothing stored: count in a cookie of its
                // own and store nothing, so crawlers and one-off visits leave no
                // session files. A session is stored once it holds something (a
                // login, a cart), starting from this count.
                let visits = req.client_visits.unwrap_or(0) + u64::from(req.page_view);
                let reply = text(
                    200,
                    "text/html; charset=utf-8",
                    page(site, visits, None, &cart),
                );
                return Ok(if req.page_view {
                    reply.with_header(header(
                        "Set-Cookie",
                        &format!(
                            "visits={visits}; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax{}",
                            if site.https { "; Secure" } else { "" }
                        ),
                    ))
                } else {
                    reply
                });
            }
            let visits = if req.page_view {
                session.update("visits", |n: Option<u64>| Some(n.unwrap_or(0) + 1))?
            } else {
                session.get::<u64>("visits")?
            }
            .unwrap_or(0);
            text(
                200,
                "text/html; charset=utf-8",
                page(site, visits, user.as_deref(), &cart),
            )
        }
        (Method::Post, "/login") => {
            let form = read_form(req.body);
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
            // Into the user's index, for "your devices" and "log out everywhere"
            // (not in Flask mode, whose records Flask code writes without one).
            if !site.flask {
                session.set_user(user, Some(&req.label))?;
            }
            seed_visits(session, req.client_visits)?;
            redirect("/?after=post")
        }
        (Method::Get, "/devices") => {
            if site.flask {
                return Ok(no_index_in_flask_mode());
            }
            let Some(user) = session.user().map(str::to_owned) else {
                return Ok(not_logged_in());
            };
            let list: Vec<_> = site
                .sessions
                .user_sessions(&user, Some(session))?
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
            json(200, &serde_json::json!({ "sessions": list }))
        }
        (Method::Post, "/logout-others" | "/logout-everywhere") => {
            if site.flask {
                return Ok(no_index_in_flask_mode());
            }
            let Some(user) = session.user().map(str::to_owned) else {
                return Ok(not_logged_in());
            };
            let everywhere = url == "/logout-everywhere";
            let except = (!everywhere).then_some(&*session);
            let ended = site.sessions.end_user_sessions(&user, except)?;
            if everywhere {
                // Its record is gone already; this expires the cookie.
                session.destroy();
            }
            json(200, &serde_json::json!({ "ended": ended }))
        }
        (Method::Get, "/me") => match session.get::<String>("user")? {
            Some(user) => json(200, &serde_json::json!({ "user": user })),
            None => json(401, &serde_json::json!({ "user": null })),
        },
        (Method::Post, "/logout") => {
            session.destroy();
            redirect("/?after=post")
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
            seed_visits(session, req.client_visits)?;
            // Replayed under the store's lock on save: concurrent adds all count.
            let cart = session.update("cart", move |cart: Option<Cart>| {
                let mut cart = cart.unwrap_or_default();
                *cart.entry(item.clone()).or_default() += 1;
                Some(cart)
            })?;
            json(200, &serde_json::json!(cart))
        }
        _ => unreachable!("allowed() admitted only routed paths and methods"),
    })
}

fn read_form(body: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
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

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;\
padding:0 1rem;color:#222}h1{font-size:1.5rem}.note{color:#555;font-size:.9rem;border-left:3px \
solid #9ab;padding-left:.75rem}form{display:inline-block;margin:.25rem .25rem .25rem 0}\
button{font:inherit;padding:.3rem .8rem;border:1px solid #789;border-radius:4px;\
background:#f4f7f9;cursor:pointer}input{font:inherit;padding:.25rem .5rem}";

fn page(site: &Site, visits: u64, user: Option<&str>, cart: &Cart) -> String {
    let who = match user {
        Some(u) => format!(
            "<p>Logged in as <b>{}</b>.</p><form method=post action=/logout><button>Log out</button></form>{devices}",
            escape(u),
            devices = if site.flask {
                ""
            } else {
                "<form method=post action=/logout-others><button>Log out other devices</button></form>\
                 <form method=post action=/logout-everywhere><button>Log out everywhere</button></form>\
                 <p><a href=/devices>Your devices</a></p>"
            },
        ),
        None => "<form method=post action=/login><input name=user placeholder=name aria-label=name> <button>Log in</button></form>".into(),
    };
    let items: String = cart
        .iter()
        .map(|(k, n)| format!("<li>{} × {n}</li>", escape(k)))
        .collect();
    format!(
        "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width\">\
         <title>fscache sessions</title><style>{STYLE}</style>\
         <h1>fscache session demo</h1>\
         <p class=note>Once you log in or fill the cart, your session lives on this server, \
         in <code>{dir}</code>{shared}; your browser holds only a random id in the \
         <code>session</code> cookie.<br>\
         It expires {days} after your last request; logging out deletes it at once.</p>\
         <p>You have visited this page <b>{visits}</b> time(s).</p>{who}\
         <h2>Cart</h2><ul>{items}</ul>\
         <form method=post action=/cart/add/apple><button>Add an apple</button></form>\
         <form method=post action=/cart/add/pear><button>Add a pear</button></form>\
         <form method=post action=/cart/clear><button>Empty the cart</button></form>\
         <p><a href=/me>/me</a> · <a href=/cart>/cart</a></p>",
        dir = escape(&site.store),
        shared = if site.flask {
            ", shared with the Flask app"
        } else {
            ""
        },
        days = lifetime_text(site.lifetime_secs),
    )
}

/// "31 days", "1 hour", "90 seconds".
fn lifetime_text(secs: u64) -> String {
    let (n, unit) = match secs {
        s if s % 86_400 == 0 => (s / 86_400, "day"),
        s if s % 3600 == 0 => (s / 3600, "hour"),
        s if s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[allow(dead_code)]
fn main() {
    let settings = match Settings::from_args(std::env::args().skip(1)) {
        Ok(Command::Run(s)) => s,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("server: {e}");
            std::process::exit(2);
        }
    };
    if settings.cleanup {
        match cleanup(&settings.store) {
            Ok(n) => {
                println!(
                    "removed {n} expired sessions from {}",
                    redact(&settings.store)
                );
                return;
            }
            Err(e) => {
                eprintln!("server: cleanup failed: {e}");
                std::process::exit(1);
            }
        }
    }
    let running = match start(&settings) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("server: cannot start: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "fscache session demo: open http://{} (sessions in {}{}{}{})",
        running.addr,
        redact(&settings.store),
        if settings.flask_mode() {
            ", shared with a Flask app"
        } else {
            ""
        },
        if settings.secrets.is_empty() {
            ""
        } else {
            ", cookies signed"
        },
        if settings.secure {
            ", Secure cookies"
        } else {
            ""
        }
    );
    for w in running.workers {
        let _ = w.join();
    }
}
