//! The example server on every store, picked by URL as `--store` / `FSCACHE_STORE`
//! would: login, a cart filled by concurrent requests, logout, driven over HTTP on
//! 127.0.0.1. Engine servers come from `FSCACHE_TEST_REDIS`, `FSCACHE_TEST_POSTGRES`
//! and `FSCACHE_TEST_MEMCACHED` (`.ci/engines.sh start`); under `CI=true` a missing
//! one is a failure, locally a printed skip.

#[allow(dead_code)]
#[path = "../examples/server.rs"]
mod server;

use std::sync::Arc;

use fscache::session::{SessionConfig, Sessions};
use fscache::store;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn urls(tmp: &std::path::Path) -> Vec<(&'static str, String)> {
    let mut all = vec![("file", format!("file://{}", tmp.join("sessions").display()))];
    if cfg!(feature = "sqlite") {
        all.push((
            "sqlite",
            format!("sqlite://{}", tmp.join("sessions.db").display()),
        ));
    }
    for (name, var, on) in [
        ("redis", "FSCACHE_TEST_REDIS", cfg!(feature = "redis")),
        (
            "postgres",
            "FSCACHE_TEST_POSTGRES",
            cfg!(feature = "postgres"),
        ),
        (
            "memcached",
            "FSCACHE_TEST_MEMCACHED",
            cfg!(feature = "memcached"),
        ),
    ] {
        match std::env::var(var) {
            Ok(url) if on && !url.is_empty() => all.push((name, url)),
            _ => {
                assert!(
                    !on || std::env::var("CI").as_deref() != Ok("true"),
                    "{var} is not set under CI=true (.ci/engines.sh)"
                );
                eprintln!("skip: {name} (feature off or {var} unset)");
            }
        }
    }
    all
}

struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    fn call(
        &self,
        method: &str,
        path: &str,
        cookie: &str,
        form: &[(&str, &str)],
    ) -> (u16, Option<String>, String) {
        let url = format!("{}{path}", self.base);
        let mut resp = if method == "GET" {
            self.agent.get(&url).header("Cookie", cookie).call()
        } else {
            self.agent
                .post(&url)
                .header("Cookie", cookie)
                .send_form(form.iter().copied())
        }
        .expect("request");
        let set_cookie = resp
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
        let status = resp.status().as_u16();
        (
            status,
            set_cookie,
            resp.body_mut().read_to_string().unwrap_or_default(),
        )
    }
}

#[test]
fn the_example_server_runs_on_every_store() -> TestResult {
    let tmp = tempfile::tempdir()?;
    for (name, url) in urls(tmp.path()) {
        let settings = server::Settings {
            bind: "127.0.0.1:0".into(),
            store: url.clone(),
            cleanup: false,
            secrets: vec![],
            secure: false,
            threads: 8,
            ..server::Settings::default()
        };
        let running = server::start(&settings).map_err(|e| format!("{name}: {e}"))?;
        let client = Arc::new(Client {
            base: format!("http://{}", running.addr),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .build()
                .into(),
        });
        let (status, set, _) = client.call("POST", "/login", "", &[("user", "ada")]);
        assert_eq!(status, 303, "{name}: login redirects");
        let cookie = set.unwrap_or_else(|| panic!("{name}: login sets the cookie"));
        let (status, _, body) = client.call("GET", "/me", &cookie, &[]);
        assert_eq!(
            (status, body.contains("\"ada\"")),
            (200, true),
            "{name}: {body}"
        );

        // Two clients fill one cart at once: every add counts.
        let threads: Vec<_> = ["apple", "pear"]
            .into_iter()
            .map(|item| {
                let (client, cookie) = (client.clone(), cookie.clone());
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        let (status, _, _) =
                            client.call("POST", &format!("/cart/add/{item}"), &cookie, &[]);
                        assert_eq!(status, 200);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let (_, _, cart) = client.call("GET", "/cart", &cookie, &[]);
        let cart: serde_json::Value = serde_json::from_str(&cart)?;
        assert_eq!(cart, serde_json::json!({"apple": 20, "pear": 20}), "{name}");

        // The record is under `session:` + a hash of the id, in the chosen engine.
        let check = Sessions::new(store::open(&url)?, SessionConfig::default())?;
        let key = check.store_key(cookie.split_once('=').unwrap().1);
        assert!(key.starts_with("session:"), "{key}");
        assert!(
            check.store().load(&key)?.is_some(),
            "{name}: stored under {key}"
        );

        let (status, set, _) = client.call("POST", "/logout", &cookie, &[]);
        assert_eq!(status, 303, "{name}");
        assert_eq!(
            set.as_deref(),
            Some("session="),
            "{name}: the cookie is expired"
        );
        let (status, _, _) = client.call("GET", "/me", &cookie, &[]);
        assert_eq!(status, 401, "{name}: logged out");
        assert!(
            check.store().load(&key)?.is_none(),
            "{name}: the record is gone"
        );
        running.stop();
    }
    Ok(())
}

#[test]
fn a_store_url_without_its_engine_or_with_a_bad_scheme_is_a_clear_error() {
    for bad in ["nosuch://x", "sessions-without-scheme"] {
        let settings = server::Settings {
            bind: "127.0.0.1:0".into(),
            store: bad.into(),
            cleanup: false,
            secrets: vec![],
            secure: false,
            threads: 1,
            ..server::Settings::default()
        };
        let err = server::start(&settings).err().expect("refused").to_string();
        assert!(err.contains("cannot open the session store"), "{err}");
    }
    assert_eq!(
        server::redact("postgres://app:s3cret@db:5432/app"),
        "postgres://app:***@db:5432/app"
    );
    assert_eq!(
        server::redact("redis://127.0.0.1:6379/0"),
        "redis://127.0.0.1:6379/0"
    );
}

/// `server --cleanup` (here its function) empties the SQL stores of expired rows in
/// batches and leaves live ones; on stores that expire by themselves it removes
/// nothing and succeeds.
#[test]
fn cleanup_removes_expired_rows_and_keeps_live_ones() -> TestResult {
    let tmp = tempfile::tempdir()?;
    for (name, url) in urls(tmp.path()) {
        let store = store::open(&url)?;
        let tag = format!("cleanup:{}:", std::process::id());
        for i in 0..2500 {
            store.save(
                &format!("{tag}old{i}"),
                b"x",
                std::time::Duration::from_millis(1),
            )?;
        }
        store.save(
            &format!("{tag}live"),
            b"y",
            std::time::Duration::from_secs(60),
        )?;
        std::thread::sleep(std::time::Duration::from_millis(50));
        let removed = server::cleanup(&url).map_err(|e| format!("{name}: {e}"))?;
        if matches!(name, "sqlite" | "postgres") {
            // 2,500 expired rows take three batches of 1,000.
            assert!(removed >= 2500, "{name}: removed {removed}");
            assert_eq!(store.cleanup(1000)?, 0, "{name}: nothing left");
        }
        if name != "memcached" {
            // (Memcached counts whole seconds: its 1 ms is 1 s, checked in stores.rs.)
            assert!(store.load(&format!("{tag}old7"))?.is_none(), "{name}");
        }
        assert!(
            store.load(&format!("{tag}live"))?.is_some(),
            "{name}: live row kept"
        );
        store.remove(&format!("{tag}live"))?;
    }
    Ok(())
}

fn start_on(url: &str, flask: bool) -> Result<(server::Running, Client), String> {
    let settings = server::Settings {
        bind: "127.0.0.1:0".into(),
        store: url.to_owned(),
        threads: 4,
        flask,
        ..server::Settings::default()
    };
    let running = server::start(&settings).map_err(|e| e.to_string())?;
    let client = Client {
        base: format!("http://{}", running.addr),
        agent: ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into(),
    };
    Ok((running, client))
}

fn login(client: &Client, user: &str) -> String {
    let (status, set, _) = client.call("POST", "/login", "", &[("user", user)]);
    assert_eq!(status, 303);
    set.expect("login sets the cookie")
}

fn device_count(client: &Client, cookie: &str) -> usize {
    let (status, _, body) = client.call("GET", "/devices", cookie, &[]);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["sessions"].as_array().unwrap().len()
}

#[test]
fn your_devices_and_log_out_everywhere_on_every_store() -> TestResult {
    let tmp = tempfile::tempdir()?;
    for (name, url) in urls(tmp.path()) {
        let (running, client) = start_on(&url, false).map_err(|e| format!("{name}: {e}"))?;
        let me = |cookie: &str| client.call("GET", "/me", cookie, &[]).0;
        let laptop = login(&client, "ada");
        let phone = login(&client, "ada");
        let grace = login(&client, "grace");

        let (status, _, body) = client.call("GET", "/devices", &laptop, &[]);
        assert_eq!(status, 200, "{name}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body)?;
        let list = v["sessions"].as_array().unwrap();
        assert_eq!(list.len(), 2, "{name}: {body}");
        assert_eq!(
            list.iter().filter(|d| d["current"] == true).count(),
            1,
            "{name}: {body}"
        );
        assert!(
            list.iter()
                .all(|d| d["label"].as_str().unwrap().starts_with("ureq"))
        );
        for c in [&laptop, &phone] {
            assert!(
                !body.contains(c.split_once('=').unwrap().1),
                "{name}: a cookie in {body}"
            );
        }
        assert_eq!(client.call("GET", "/devices", "", &[]).0, 401, "{name}");
        assert_eq!(
            client.call("POST", "/logout-others", "", &[]).0,
            401,
            "{name}"
        );

        // A cross-site post is refused (CSRF) and ends nothing.
        let resp = client
            .agent
            .post(&format!("{}/logout-everywhere", client.base))
            .header("Cookie", &laptop)
            .header("Origin", "http://evil.example")
            .send_empty()?;
        assert_eq!(resp.status().as_u16(), 403, "{name}");
        assert_eq!(me(&phone), 200, "{name}");

        let (status, _, body) = client.call("POST", "/logout-others", &laptop, &[]);
        assert_eq!((status, body.trim()), (200, r#"{"ended":1}"#), "{name}");
        assert_eq!(
            (me(&laptop), me(&phone), me(&grace)),
            (200, 401, 200),
            "{name}"
        );
        assert_eq!(device_count(&client, &laptop), 1, "{name}");

        let phone = login(&client, "ada");
        let (status, set, body) = client.call("POST", "/logout-everywhere", &phone, &[]);
        assert_eq!((status, body.trim()), (200, r#"{"ended":2}"#), "{name}");
        assert_eq!(
            set.as_deref(),
            Some("session="),
            "{name}: the cookie is expired"
        );
        assert_eq!(
            (me(&laptop), me(&phone), me(&grace)),
            (401, 401, 200),
            "{name}"
        );
        running.stop();
    }
    Ok(())
}

#[test]
fn flask_mode_has_no_devices_routes() -> TestResult {
    // Flask-Session keeps no per-user index, and its records are written by Flask
    // code too: the routes say 501, and a login there works without one.
    let tmp = tempfile::tempdir()?;
    let url = format!("file://{}", tmp.path().join("flask").display());
    let (running, client) = start_on(&url, true)?;
    let cookie = login(&client, "ada");
    assert_eq!(client.call("GET", "/me", &cookie, &[]).0, 200);
    for (method, path) in [
        ("GET", "/devices"),
        ("POST", "/logout-others"),
        ("POST", "/logout-everywhere"),
    ] {
        let (status, _, body) = client.call(method, path, &cookie, &[]);
        assert_eq!(status, 501, "{path}: {body}");
        assert!(body.contains("Flask"), "{body}");
    }
    let (_, _, page) = client.call("GET", "/", &cookie, &[]);
    assert!(
        !page.contains("/logout-everywhere"),
        "no button that cannot work"
    );
    assert_eq!(
        client.call("GET", "/me", &cookie, &[]).0,
        200,
        "still logged in"
    );
    running.stop();
    Ok(())
}
