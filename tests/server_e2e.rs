//! End to end: the example server (examples/server.rs, compiled in here) on
//! 127.0.0.1 with an OS-chosen port, driven by a real HTTP client.

mod common;
#[allow(dead_code)]
#[path = "../examples/server.rs"]
mod server;

use std::path::{Path, PathBuf};

type TestResult = Result<(), Box<dyn std::error::Error>>;

struct App {
    base: String,
    dir: PathBuf,
    running: Option<server::Running>,
    _tmp: tempfile::TempDir,
    agent: ureq::Agent,
}

impl App {
    fn start(secrets: &[&str]) -> App {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sessions");
        let settings = server::Settings {
            bind: "127.0.0.1:0".into(),
            store: format!("file://{}", dir.display()),
            cleanup: false,
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
            secure: false,
            threads: 8,
            ..server::Settings::default()
        };
        let running = server::start(&settings).expect("server starts");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        App {
            base: format!("http://{}", running.addr),
            dir,
            running: Some(running),
            _tmp: tmp,
            agent,
        }
    }

    /// Sends a request with an optional Cookie header; returns status, the
    /// `name=value` part of Set-Cookie (and the whole header), Vary, body.
    fn call(
        &self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        form: Option<&[(&str, &str)]>,
    ) -> Reply {
        let url = format!("{}{path}", self.base);
        let mut resp = match method {
            "GET" => {
                let mut r = self.agent.get(&url);
                if let Some(c) = cookie {
                    r = r.header("Cookie", c);
                }
                r.call()
            }
            _ => {
                let mut r = self.agent.post(&url);
                if let Some(c) = cookie {
                    r = r.header("Cookie", c);
                }
                match form {
                    Some(f) => r.send_form(f.iter().copied()),
                    None => r.send_empty(),
                }
            }
        }
        .expect("request");
        let set_cookie = resp
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_owned());
        let vary = resp
            .headers()
            .get("vary")
            .map(|v| v.to_str().unwrap().to_owned());
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        Reply {
            status,
            set_cookie,
            vary,
            body,
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop();
        }
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    set_cookie: Option<String>,
    vary: Option<String>,
    body: String,
}

impl Reply {
    /// "session=<value>" from Set-Cookie.
    fn cookie(&self) -> String {
        self.set_cookie
            .as_deref()
            .expect("Set-Cookie")
            .split(';')
            .next()
            .unwrap()
            .to_owned()
    }
    fn visits(&self) -> u64 {
        let start = self.body.find("<b>").unwrap() + 3;
        let end = self.body[start..].find("</b>").unwrap() + start;
        self.body[start..end].parse().unwrap()
    }
}

/// How many session records the directory holds (entry files, less the per-user
/// index records under `session:user:`, which logins write and keep for 10
/// minutes after the last logout; checked against the files themselves).
fn entry_count(dir: &Path) -> usize {
    let files: usize = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().len() == 2 && e.path().is_dir())
        .map(|shard| std::fs::read_dir(shard.path()).unwrap().count())
        .sum();
    let cache = fscache::FileSystemCache::builder(dir)
        .open_existing()
        .unwrap();
    let keys: Vec<String> = cache.keys().map(|k| k.unwrap()).collect();
    assert_eq!(keys.len(), files, "every entry file is a readable entry");
    keys.iter()
        .filter(|k| !k.starts_with("session:user:"))
        .count()
}

#[test]
fn anonymous_page_views_store_no_session_and_count_in_a_cookie() -> TestResult {
    let app = App::start(&[]);
    // A crawler: a thousand cookie-less page views leave no session file.
    for _ in 0..1_000 {
        let r = app.call("GET", "/", None, None);
        assert_eq!((r.status, r.visits()), (200, 1));
    }
    assert_eq!(
        entry_count(&app.dir),
        0,
        "no session stored for bare page views"
    );
    // A visitor that keeps its cookies counts visits client-side.
    let first = app.call("GET", "/", None, None);
    let set = first.set_cookie.clone().unwrap();
    for attr in ["visits=1", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set.contains(attr), "{attr} missing in {set}");
    }
    assert_eq!(first.vary.as_deref(), Some("Cookie"));
    let mut cookie = first.cookie();
    for n in 2..=4 {
        let r = app.call("GET", "/", Some(&cookie), None);
        assert_eq!(r.visits(), n);
        cookie = r.cookie();
    }
    assert_eq!(entry_count(&app.dir), 0);
    Ok(())
}

#[test]
fn a_session_is_stored_once_it_holds_something_with_its_attributes() -> TestResult {
    let app = App::start(&[]);
    let visitor = app.call("GET", "/", None, None).cookie(); // visits=1
    let add = app.call("POST", "/cart/add/apple", Some(&visitor), None);
    assert_eq!(add.status, 200);
    let set = add.set_cookie.clone().unwrap();
    for attr in [
        "HttpOnly",
        "SameSite=Lax",
        "Path=/",
        "Max-Age=2678400",
        "Expires=",
    ] {
        assert!(set.contains(attr), "{attr} missing in {set}");
    }
    assert!(!set.contains("Secure"), "Secure is off by default: {set}");
    assert_eq!(add.vary.as_deref(), Some("Cookie"));
    let session = add.cookie();
    let value = session.strip_prefix("session=").unwrap();
    assert_eq!(value.len(), 43);
    assert_eq!(entry_count(&app.dir), 1);
    // The count goes on from the client-side one, now in the session.
    let both = format!("{session}; {visitor}");
    for n in 2..=4 {
        let r = app.call("GET", "/", Some(&both), None);
        assert_eq!(r.visits(), n);
        assert_eq!(r.cookie(), session, "same session, sliding expiry re-sent");
    }
    Ok(())
}

#[test]
fn login_regenerates_and_the_old_cookie_no_longer_reaches_the_data() -> TestResult {
    let app = App::start(&["test secret"]);
    let anon = app.call("GET", "/", None, None).cookie();
    let login = app.call(
        "POST",
        "/login",
        Some(&anon),
        Some(&[("user", "ada lovelace")]),
    );
    assert_eq!(login.status, 303);
    let authed = login.cookie();
    assert_ne!(authed, anon);
    let me = app.call("GET", "/me", Some(&authed), None);
    assert_eq!(
        (me.status, me.body.trim()),
        (200, r#"{"user":"ada lovelace"}"#)
    );
    // Visits carried over to the new id.
    assert_eq!(app.call("GET", "/", Some(&authed), None).visits(), 2);
    // The pre-login id is dead: a fresh anonymous session, never the user's data.
    let stale = app.call("GET", "/me", Some(&anon), None);
    assert_eq!(stale.status, 401);
    assert_ne!(
        stale.set_cookie.as_deref().map(|_| stale.cookie()),
        Some(anon.clone())
    );
    Ok(())
}

#[test]
fn logout_expires_the_cookie_and_deletes_the_entry() -> TestResult {
    let app = App::start(&[]);
    let c = app
        .call("POST", "/login", None, Some(&[("user", "bob")]))
        .cookie();
    app.call("POST", "/cart/add/pear", Some(&c), None);
    assert_eq!(entry_count(&app.dir), 1);
    let out = app.call("POST", "/logout", Some(&c), None);
    assert_eq!(out.status, 303);
    let set = out.set_cookie.unwrap();
    assert!(
        set.starts_with("session=;") && set.contains("Max-Age=0"),
        "{set}"
    );
    assert_eq!(entry_count(&app.dir), 0, "the session file is gone");
    assert_eq!(app.call("GET", "/me", Some(&c), None).status, 401);
    Ok(())
}

#[test]
fn tampered_forged_oversized_and_garbage_cookies_get_a_fresh_empty_session() -> TestResult {
    let app = App::start(&["new secret", "old secret"]);
    let good = app
        .call("POST", "/login", None, Some(&[("user", "carol")]))
        .cookie();
    let value = good.strip_prefix("session=").unwrap();
    let (id, sig) = value.split_once('.').unwrap();
    let flipped = format!(
        "{id}.{}{}",
        &sig[..63],
        if sig.ends_with('0') { '1' } else { '0' }
    );
    let other_id = "A".repeat(43);
    let big = "x".repeat(5000);
    let cases = [
        format!("session={flipped}"),
        format!("session={id}"),
        format!("session={other_id}.{sig}"),
        format!("session={}", "Z".repeat(43)),
        format!("session={big}"),
        "session=../../etc/passwd".to_string(),
        "session=%00%ff; other=1".to_string(),
        "session=\"quoted\"; session=a=b=c".to_string(),
        ";;;===;session".to_string(),
        format!("session={value}x"),
    ];
    for bad in &cases {
        let r = app.call("GET", "/me", Some(bad), None);
        assert_eq!(r.status, 401, "{bad:.60}: no error page, no user");
        let r = app.call("GET", "/", Some(bad), None);
        assert_eq!(r.status, 200);
        assert_eq!(r.visits(), 1, "{bad:.60}: a new empty session");
        let fresh = r.cookie();
        assert_ne!(fresh, *bad);
        assert!(
            !fresh.contains(&other_id),
            "a client-chosen id is never adopted"
        );
        assert!(
            !fresh.starts_with("session="),
            "nothing stored for a page view"
        );
    }
    assert_eq!(entry_count(&app.dir), 1, "only carol's session");
    // The real cookie still works, also among other cookies.
    let me = app.call(
        "GET",
        "/me",
        Some(&format!("theme=dark; {good}; x=y")),
        None,
    );
    assert_eq!(me.status, 200);
    Ok(())
}

#[test]
fn twenty_concurrent_cart_adds_on_one_session_all_land() -> TestResult {
    let app = App::start(&[]);
    let c = app.call("POST", "/cart/add/apple", None, None).cookie();
    std::thread::scope(|s| {
        for i in 0..20 {
            let (app, c) = (&app, &c);
            s.spawn(move || {
                let item = if i % 2 == 0 { "apple" } else { "pear" };
                let r = app.call("POST", &format!("/cart/add/{item}"), Some(c), None);
                assert_eq!(r.status, 200);
            });
        }
    });
    let cart = app.call("GET", "/cart", Some(&c), None);
    assert_eq!(cart.body.trim(), r#"{"apple":11,"pear":10}"#);
    assert_eq!(app.call("POST", "/cart/clear", Some(&c), None).status, 200);
    assert_eq!(app.call("GET", "/cart", Some(&c), None).body.trim(), "{}");
    Ok(())
}

#[test]
fn no_live_session_id_appears_in_any_file_name_or_body() -> TestResult {
    let app = App::start(&[]);
    let mut ids = Vec::new();
    for user in ["dave", "erin", "frank"] {
        let c = app
            .call("POST", "/login", None, Some(&[("user", user)]))
            .cookie();
        app.call("POST", "/cart/add/apple", Some(&c), None);
        ids.push(c.strip_prefix("session=").unwrap().to_owned());
    }
    let mut files = 0;
    let mut stack = vec![app.dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type()?.is_dir() {
                stack.push(e.path());
                continue;
            }
            files += 1;
            let body = std::fs::read(e.path())?;
            for id in &ids {
                assert!(!name.contains(id.as_str()), "{name}");
                assert!(
                    !body.windows(id.len()).any(|w| w == id.as_bytes()),
                    "id in {name}"
                );
            }
        }
    }
    assert!(files > 3);
    assert_eq!(entry_count(&app.dir), 3);
    Ok(())
}

#[test]
fn unknown_routes_and_bad_input_are_client_errors() -> TestResult {
    let app = App::start(&[]);
    assert_eq!(app.call("GET", "/nope", None, None).status, 404);
    assert_eq!(
        app.call("POST", "/login", None, Some(&[("user", "")]))
            .status,
        400
    );
    assert_eq!(app.call("POST", "/cart/add/..%2f", None, None).status, 400);
    // An empty session is not stored and sets no cookie.
    let r = app.call("GET", "/me", None, None);
    assert_eq!(r.status, 401);
    assert!(r.set_cookie.is_none());
    assert_eq!(entry_count(&app.dir), 0);
    Ok(())
}

#[test]
fn browser_form_posts_return_to_the_page() -> TestResult {
    let app = App::start(&[]);
    let mut resp = app
        .agent
        .post(format!("{}/cart/add/apple", app.base))
        .header("Accept", "text/html,application/xhtml+xml")
        .send_empty()?;
    assert_eq!(resp.status().as_u16(), 303);
    assert_eq!(resp.headers().get("location").unwrap(), "/?after=post");
    let cookie = common::set_cookie_pair(&resp);
    let _ = resp.body_mut().read_to_string();
    // Following the redirect shows the page without counting a visit: only page views
    // count, not form posts.
    let page = app.call("GET", "/?after=post", Some(&cookie), None);
    assert!(page.body.contains("apple × 1"), "{}", page.body);
    assert_eq!(page.visits(), 0);
    assert_eq!(app.call("GET", "/", Some(&cookie), None).visits(), 1);
    Ok(())
}
