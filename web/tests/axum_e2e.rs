//! The axum example server (fscache's session layer, `fscache::axum`), run as a
//! process on 127.0.0.1 and driven over HTTP with a real client, on the file store
//! and on every engine the environment names: login with a new id, /me, the cart
//! under two concurrent clients of one session (no lost items), concurrent page
//! views that all count (50 of 50), and logout that deletes the record and expires
//! the cookie.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};

use fscache::session::{SessionConfig, Sessions};
use fscache::{FileSystemCache, Store};
use ureq::Agent;

mod common;

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(store_url: &str) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_axum-server"))
        .args(["--bind", "127.0.0.1:0", "--store", store_url])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start axum-server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    Server { child, base }
}

fn agent() -> Agent {
    Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

/// The `id=…` pair of a response's Set-Cookie, if any.
fn set_cookie(resp: &ureq::http::Response<ureq::Body>) -> Option<String> {
    resp.headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned())
}

fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

fn get(a: &Agent, url: &str, cookie: &str) -> (u16, Option<String>, String) {
    let mut r = a.get(url).header("Cookie", cookie).call().unwrap();
    let sc = set_cookie(&r);
    (
        r.status().as_u16(),
        sc,
        r.body_mut().read_to_string().unwrap(),
    )
}

fn post(
    a: &Agent,
    url: &str,
    cookie: &str,
    form: &[(&str, &str)],
) -> (u16, Option<String>, String) {
    let mut r = if form.is_empty() {
        a.post(url).header("Cookie", cookie).send_empty().unwrap()
    } else {
        a.post(url)
            .header("Cookie", cookie)
            .send_form(form.iter().copied())
            .unwrap()
    };
    let sc = set_cookie(&r);
    (
        r.status().as_u16(),
        sc,
        r.body_mut().read_to_string().unwrap(),
    )
}

/// The store key of the session a cookie names, as the example's `Sessions` makes it.
fn session_key(cookie_pair: &str) -> String {
    let id = cookie_pair.strip_prefix("id=").expect("an id cookie");
    let dir = tempfile::tempdir().unwrap();
    let sessions = Sessions::new(
        FileSystemCache::open(dir.path()).unwrap(),
        SessionConfig::default().cookie_name("id"),
    )
    .unwrap();
    sessions.store_key(id)
}

fn run_flow(name: &str, url: &str) {
    let server = start(url);
    let store = fscache::store::open(url).unwrap();
    let a = agent();
    let base = &server.base;

    // A first visit starts a session (the visit counter is stored).
    let (status, sc, body) = get(&a, &format!("{base}/"), "");
    assert_eq!(status, 200, "{name}");
    assert!(
        body.contains("visited this page <b>1</b>"),
        "{name}: {body}"
    );
    let before_login = pair(&sc.expect("a session cookie"));
    assert!(
        store.load(&session_key(&before_login)).unwrap().is_some(),
        "{name}"
    );

    // Login: a new id, the old one is gone from the store.
    let (status, sc, _) = post(
        &a,
        &format!("{base}/login"),
        &before_login,
        &[("user", "ann")],
    );
    assert_eq!(status, 303, "{name}");
    let cookie = pair(&sc.expect("login sets a new cookie"));
    assert_ne!(
        cookie, before_login,
        "{name}: the id was not regenerated at login"
    );
    assert!(
        store.load(&session_key(&before_login)).unwrap().is_none(),
        "{name}"
    );
    let (status, _, body) = get(&a, &format!("{base}/me"), &before_login);
    assert_eq!(status, 401, "{name}: the pre-login id still works: {body}");
    let (status, _, body) = get(&a, &format!("{base}/me"), &cookie);
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"user":"ann"}"#),
        "{name}"
    );
    let (_, _, page) = get(&a, &format!("{base}/"), &cookie);
    assert!(page.contains("Logged in as <b>ann</b>"), "{name}: {page}");
    assert!(
        page.contains("visited this page <b>2</b>"),
        "{name}: the count did not survive login"
    );

    // Two clients of one session add to the cart at once: nothing is lost.
    const ADDS: usize = 20;
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = ["apple", "pear"]
        .into_iter()
        .map(|item| {
            let (barrier, cookie, base) = (barrier.clone(), cookie.clone(), base.clone());
            std::thread::spawn(move || {
                let a = agent();
                barrier.wait();
                for _ in 0..ADDS {
                    let (status, _, body) =
                        post(&a, &format!("{base}/cart/add/{item}"), &cookie, &[]);
                    assert_eq!(status, 200, "{body}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (_, _, cart) = get(&a, &format!("{base}/cart"), &cookie);
    let cart: serde_json::Value = serde_json::from_str(&cart).unwrap();
    assert_eq!(
        cart,
        serde_json::json!({"apple": ADDS, "pear": ADDS}),
        "{name}: lost cart items"
    );

    // Page views at once all count: the layer's save replays the counter's
    // update on the stored record.
    let (_, _, page) = get(&a, &format!("{base}/"), &cookie);
    let visits_before = visits(&page);
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (cookie, base) = (cookie.clone(), base.clone());
            std::thread::spawn(move || {
                let a = agent();
                for _ in 0..ADDS {
                    get(&a, &format!("{base}/"), &cookie);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (_, _, page) = get(&a, &format!("{base}/"), &cookie);
    assert_eq!(
        visits(&page) - visits_before,
        2 * ADDS as u64 + 1,
        "{name}: lost page views"
    );

    // Logout deletes the record and the cart, and expires the cookie.
    assert!(
        store.load(&session_key(&cookie)).unwrap().is_some(),
        "{name}"
    );
    let (status, sc, _) = post(&a, &format!("{base}/logout"), &cookie, &[]);
    assert_eq!(status, 303, "{name}");
    let sc = sc.expect("logout expires the cookie");
    assert!(sc.contains("Max-Age=0"), "{name}: {sc}");
    assert!(
        store.load(&session_key(&cookie)).unwrap().is_none(),
        "{name}: record kept"
    );
    let (status, _, _) = get(&a, &format!("{base}/me"), &cookie);
    assert_eq!(status, 401, "{name}: logged in after logout");
    let (_, _, cart) = get(&a, &format!("{base}/cart"), &cookie);
    assert_eq!(cart, "{}", "{name}: cart survived logout");
}

/// Ten keep-alive clients of one session, released together by a barrier, each
/// load the page five times: every one of the 50 visits is counted, on every
/// store (tower-sessions and actix-session kept 15 to 33 of 50 in the bench/http/run.sh runs).
fn fifty_concurrent_increments(name: &str, url: &str) {
    const CLIENTS: usize = 10;
    const EACH: usize = 5;
    let server = start(url);
    let base = server.base.clone();
    let a = agent();
    let (_, sc, page) = get(&a, &format!("{base}/"), "");
    assert_eq!(visits(&page), 1, "{name}");
    let cookie = pair(&sc.expect("a session cookie"));
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (barrier, cookie, base) = (barrier.clone(), cookie.clone(), base.clone());
            std::thread::spawn(move || {
                let a = agent();
                // The connection is open before the barrier: the requests of all
                // ten clients start together.
                get(&a, &format!("{base}/me"), &cookie);
                barrier.wait();
                for _ in 0..EACH {
                    let (status, _, body) = get(&a, &format!("{base}/"), &cookie);
                    assert_eq!(status, 200, "{body}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (_, _, page) = get(&a, &format!("{base}/"), &cookie);
    assert_eq!(
        visits(&page),
        (1 + CLIENTS * EACH + 1) as u64,
        "{name}: of {} concurrent visits, {} counted",
        CLIENTS * EACH,
        visits(&page) - 2
    );
}

#[test]
fn fifty_concurrent_page_views_all_count_on_every_store() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("file://{}", tmp.path().join("sessions").display());
    for (name, url) in common::store_urls(&url) {
        let t = std::time::Instant::now();
        fifty_concurrent_increments(&name, &url);
        eprintln!("{name}: {:?}", t.elapsed());
    }
}

fn visits(page: &str) -> u64 {
    let at = page.find("visited this page <b>").expect("a counter") + "visited this page <b>".len();
    page[at..].split('<').next().unwrap().parse().unwrap()
}

#[test]
fn the_axum_example_on_every_store() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("file://{}", tmp.path().join("sessions").display());
    for (name, url) in common::store_urls(&url) {
        run_flow(&name, &url);
    }
}

#[test]
fn a_bad_store_url_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_axum-server"))
        .args(["--bind", "127.0.0.1:0", "--store", "nosuch://x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot open store nosuch://x"), "{err}");
}

/// The store URL's password never shows: not on the page (which names the store),
/// not in the message of a server that cannot open its store.
#[test]
fn the_store_password_never_shows() {
    const PW: &str = "hunter2-s3cret";
    let out = Command::new(env!("CARGO_BIN_EXE_axum-server"))
        .args(["--bind", "127.0.0.1:0", "--store"])
        .arg(format!("redis://:{PW}@127.0.0.1:1/0?pool_size=x"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot open store redis://:***@127.0.0.1:1/0"),
        "{err}"
    );
    assert!(!err.contains(PW), "{err}");
    // A PostgreSQL URL with a password (the test server trusts 127.0.0.1, so any
    // password opens it): the page shows the store with `***`.
    let Some(url) = common::store_urls("file:///unused")
        .into_iter()
        .find(|(name, _)| name == "postgres")
        .map(|(_, url)| url)
    else {
        return;
    };
    let (head, tail) = url
        .split_once('@')
        .unwrap_or_else(|| panic!("FSCACHE_TEST_POSTGRES has no user@: {url}"));
    let server = start(&format!("{head}:{PW}@{tail}"));
    let (status, _, page) = get(&agent(), &format!("{}/", server.base), "");
    assert_eq!(status, 200);
    assert!(page.contains(":***@"), "the page names the store");
    assert!(!page.contains(PW), "{page}");
}

/// Cross-site form posts are refused (login CSRF: another site logging the visitor
/// into an attacker's account), same-site ones pass, and every answer carries
/// nosniff, a frame-ancestors policy and `Cache-Control: private`.
#[test]
fn cross_site_posts_are_refused_and_pages_carry_the_safety_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(&format!("file://{}", tmp.path().join("s").display()));
    let base = &server.base;
    let host = base.strip_prefix("http://").unwrap();
    let a = agent();
    let login = |origin: Option<&str>, referer: Option<&str>| {
        let mut req = a.post(format!("{base}/login"));
        if let Some(o) = origin {
            req = req.header("Origin", o);
        }
        if let Some(r) = referer {
            req = req.header("Referer", r);
        }
        let r = req.send_form([("user", "mallory")]).unwrap();
        (r.status().as_u16(), set_cookie(&r))
    };
    for (origin, referer) in [
        (Some("https://evil.example"), None),
        (Some("null"), None),
        (None, Some("https://evil.example/page")),
        (Some(&*format!("http://{host}.evil.example")), None),
    ] {
        let (status, cookie) = login(origin, referer);
        assert_eq!(status, 403, "Origin {origin:?} Referer {referer:?}");
        assert_eq!(cookie, None, "a refused login sets no cookie");
    }
    let own = format!("http://{host}");
    let (status, cookie) = login(Some(&own), None);
    assert_eq!(status, 303, "a same-origin login");
    assert!(cookie.is_some());
    let (status, _) = login(None, Some(&format!("{own}/")));
    assert_eq!(status, 303, "a same-origin Referer");
    for path in ["/", "/me", "/cart"] {
        let r = a.get(format!("{base}{path}")).call().unwrap();
        let h = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            h("x-content-type-options").as_deref(),
            Some("nosniff"),
            "{path}"
        );
        assert!(
            h("content-security-policy").is_some_and(|v| v.contains("frame-ancestors 'none'")),
            "{path}"
        );
        assert!(
            h("cache-control").is_some_and(|v| v.contains("private")),
            "{path}"
        );
    }
}

/// Logs `user` in from a client that says it is `agent`; the `id=…` pair.
fn login_as(a: &Agent, base: &str, user: &str, agent: &str) -> String {
    let r = a
        .post(&format!("{base}/login"))
        .header("User-Agent", agent)
        .send_form([("user", user)])
        .unwrap();
    assert_eq!(r.status().as_u16(), 303, "login redirects");
    pair(&set_cookie(&r).expect("a login sets the cookie"))
}

fn logged_in(a: &Agent, base: &str, cookie: &str) -> bool {
    get(a, &format!("{base}/me"), cookie).0 == 200
}

fn devices_flow(name: &str, url: &str) {
    let server = start(url);
    let a = agent();
    let base = &server.base;
    let laptop = login_as(&a, base, "ann", "Laptop browser");
    let phone = login_as(&a, base, "ann", "Phone browser");
    let bob = login_as(&a, base, "bob", "Bob's browser");

    // GET /devices: Ann's two sessions, the asking one marked current.
    let (status, _, body) = get(&a, &format!("{base}/devices"), &laptop);
    assert_eq!(status, 200, "{name}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let list = v["sessions"].as_array().expect("a sessions array");
    assert_eq!(list.len(), 2, "{name}: {body}");
    let current: Vec<_> = list.iter().filter(|d| d["current"] == true).collect();
    assert_eq!(current.len(), 1, "{name}: {body}");
    assert_eq!(current[0]["label"], "Laptop browser", "{name}");
    for d in list {
        assert!(d["created"].as_u64().unwrap() > 0 && d["last_seen"].as_u64().is_some());
        for c in [&laptop, &phone] {
            let id = c.strip_prefix("id=").unwrap();
            assert!(!body.contains(id), "{name}: a cookie shows in /devices");
        }
    }
    // Not logged in: 401.
    assert_eq!(get(&a, &format!("{base}/devices"), "").0, 401, "{name}");
    // The page links to it and has both buttons.
    let (_, _, page) = get(&a, &format!("{base}/"), &laptop);
    assert!(page.contains("href=/devices") && page.contains("action=/logout-others"));

    // A cross-site post is refused and ends nothing.
    let r = a
        .post(&format!("{base}/logout-others"))
        .header("Cookie", &laptop)
        .header("Origin", "http://evil.example")
        .send_empty()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "{name}");
    assert!(logged_in(&a, base, &phone), "{name}");

    // Log out the other devices: the phone is out, the laptop and Bob are not.
    let (status, _, body) = post(&a, &format!("{base}/logout-others"), &laptop, &[]);
    assert_eq!((status, body.as_str()), (200, r#"{"ended":1}"#), "{name}");
    assert!(!logged_in(&a, base, &phone), "{name}");
    assert!(
        logged_in(&a, base, &laptop) && logged_in(&a, base, &bob),
        "{name}"
    );
    let (_, _, body) = get(&a, &format!("{base}/devices"), &laptop);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["sessions"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "{name}: {body}"
    );

    // Log out everywhere from a new phone login: both of Ann's sessions end, this
    // one's cookie is expired, Bob stays.
    let phone = login_as(&a, base, "ann", "Phone browser");
    let (status, sc, body) = post(&a, &format!("{base}/logout-everywhere"), &phone, &[]);
    assert_eq!((status, body.as_str()), (200, r#"{"ended":2}"#), "{name}");
    assert!(sc.is_some_and(|c| c.contains("Max-Age=0")), "{name}");
    assert!(
        !logged_in(&a, base, &phone) && !logged_in(&a, base, &laptop),
        "{name}"
    );
    assert!(logged_in(&a, base, &bob), "{name}");
}

#[test]
fn your_devices_and_log_out_everywhere_on_every_store() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("file://{}", tmp.path().join("sessions").display());
    for (name, url) in common::store_urls(&url) {
        devices_flow(&name, &url);
    }
}
