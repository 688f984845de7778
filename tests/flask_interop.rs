//! Sessions shared with a real Flask app, both ways, over HTTP on 127.0.0.1 with one
//! cookie jar (a browser keeps one `session` cookie per host, whatever the port):
//! Flask 3.1.3 + Flask-Session 0.8.0 + cachelib 0.17.0 from PyPI (the Python that
//! `FSCACHE_TEST_FLASK_PYTHON` names; `.ci/run` makes that venv) running
//! `tests/flask/app.py`, and the example server (`examples/server.rs`, built by
//! `cargo test`) joining it with `--store cachelib://…` or `redis://…`.
//!
//! Without that Python the tests print a skip, and fail under `CI=true`.

#![cfg(feature = "flask")]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fscache::flask::{CookieError, FlaskCookie, PyValue, pickle};
use fscache::store::HashMethod;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn python() -> Option<String> {
    match std::env::var("FSCACHE_TEST_FLASK_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            common::cannot_run(
                "FSCACHE_TEST_FLASK_PYTHON is not set (a Python with flask==3.1.3, \
                 flask-session==0.8.0, cachelib==0.17.0 and redis: .ci/run makes one)",
            );
            None
        }
    }
}

fn redis_url() -> Option<String> {
    match std::env::var("FSCACHE_TEST_REDIS") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            common::cannot_run(
                "FSCACHE_TEST_REDIS is not set (eval \"$(bash .ci/engines.sh start)\")",
            );
            None
        }
    }
}

/// A process that prints `… http://ADDR …` on its first line; killed on drop.
struct Proc {
    child: Child,
    base: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(mut cmd: Command) -> Proc {
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn");
    let mut first = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    let base = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .trim_end_matches(['(', ')', ','])
        .to_owned();
    // Keep draining stdout (request logs) so the process never blocks on a full pipe.
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || for _ in BufReader::new(out).lines() {});
    Proc { child, base }
}

fn flask(py: &str, env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(py);
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/flask/app.py"))
        .env("PYTHONUNBUFFERED", "1")
        .envs(env.iter().copied());
    spawn(cmd)
}

fn rust(store: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(common::server_bin());
    cmd.args(["--bind", "127.0.0.1:0", "--threads", "4", "--store", store])
        .args(args)
        .env_remove("FSCACHE_FLASK_SECRET_KEY")
        .env_remove("FSCACHE_KEY_PREFIX")
        .envs(env.iter().copied());
    spawn(cmd)
}

/// A Flask app on Flask-Session's cachelib backend and the Rust server on the same
/// directory (`?hash=md5` when `FLASK_HASH=md5`), each with its own settings.
struct Pair {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    f: Proc,
    r: Proc,
}

fn cachelib_pair(
    py: &str,
    flask_env: &[(&str, &str)],
    rust_args: &[&str],
    rust_env: &[(&str, &str)],
) -> Pair {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("flask_session");
    let store = format!("cachelib:{}", dir.display());
    let f = flask(
        py,
        &[&[("FLASK_SESSION_STORE", store.as_str())], flask_env].concat(),
    );
    let md5 = flask_env.contains(&("FLASK_HASH", "md5"));
    let url = format!(
        "cachelib://{}{}",
        dir.display(),
        if md5 { "?hash=md5" } else { "" }
    );
    let r = rust(&url, rust_args, rust_env);
    Pair {
        _tmp: tmp,
        dir,
        f,
        r,
    }
}

/// A browser's cookie jar for 127.0.0.1: cookies are per host, not per port, so
/// the Flask app and the Rust server see the same `session` cookie.
struct Browser {
    agent: ureq::Agent,
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn new() -> Browser {
        Browser {
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .build()
                .into(),
            cookies: BTreeMap::new(),
        }
    }

    fn header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn take(&mut self, resp: &ureq::http::Response<ureq::Body>) {
        for h in resp.headers().get_all("set-cookie") {
            let h = h.to_str().unwrap();
            let (pair, attrs) = h.split_once(';').unwrap_or((h, ""));
            let (name, value) = pair.split_once('=').unwrap();
            let attrs = attrs.to_ascii_lowercase();
            let gone = value.is_empty() || attrs.contains("max-age=0") || attrs.contains("1970");
            if gone {
                self.cookies.remove(name);
            } else {
                self.cookies
                    .insert(name.to_owned(), value.trim_matches('"').to_owned());
            }
        }
    }

    fn get(&mut self, url: &str) -> (u16, String) {
        let mut r = self
            .agent
            .get(url)
            .header("Cookie", self.header())
            .call()
            .unwrap();
        self.take(&r);
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    }

    fn post(&mut self, url: &str, form: &[(&str, &str)]) -> u16 {
        let req = self.agent.post(url).header("Cookie", self.header());
        let mut r = if form.is_empty() {
            req.send_empty().unwrap()
        } else {
            req.send_form(form.iter().copied()).unwrap()
        };
        self.take(&r);
        let _ = r.body_mut().read_to_string();
        r.status().as_u16()
    }

    fn user(&mut self, base: &str) -> Option<String> {
        let (status, body) = self.get(&format!("{base}/me"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        match status {
            200 => Some(v["user"].as_str().unwrap().to_owned()),
            401 => None,
            s => panic!("{base}/me answered {s}: {body}"),
        }
    }

    fn cart(&mut self, base: &str) -> serde_json::Value {
        let (status, body) = self.get(&format!("{base}/cart"));
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The session id the cookie carries (before the signature, if signed).
    fn sid(&self) -> String {
        let v = &self.cookies["session"];
        v.split('.').next().unwrap().to_owned()
    }
}

/// Entry files of a cachelib directory (hex names of `len` characters), not counting
/// cachelib's count file.
fn entries(dir: &Path, len: usize, count_name: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.len() == len && n.bytes().all(|b| b.is_ascii_hexdigit()) && n != count_name)
        .collect();
    names.sort();
    names
}

fn hex_digest(md5: bool, key: &str) -> String {
    let hash = if md5 {
        HashMethod::Md5
    } else {
        HashMethod::Sha256
    };
    hash.file_name(key)
}

/// The whole two-way flow on one shared cachelib directory.
fn both_ways(f: &str, r: &str, dir: Option<(&Path, bool)>) {
    let mut b = Browser::new();
    // Login on Flask: the Rust server sees the user.
    assert_eq!(b.post(&format!("{f}/login"), &[("user", "ann")]), 302);
    assert_eq!(b.user(f).as_deref(), Some("ann"));
    assert_eq!(
        b.user(r).as_deref(),
        Some("ann"),
        "Rust does not see Flask's login"
    );
    if let Some((dir, md5)) = dir {
        let name = hex_digest(md5, &format!("session:{}", b.sid()));
        assert!(
            dir.join(&name).exists(),
            "no file {name}: cachelib names by {}",
            if md5 { "md5" } else { "sha256" }
        );
    }
    // A cart changed on Rust: the Flask page shows it; and back.
    for _ in 0..2 {
        assert_eq!(b.post(&format!("{r}/cart/add/apple"), &[]), 200);
    }
    assert_eq!(b.cart(f), serde_json::json!({"apple": 2}));
    assert_eq!(b.post(&format!("{f}/cart/add/pear"), &[]), 200);
    assert_eq!(b.cart(r), serde_json::json!({"apple": 2, "pear": 1}));
    let (_, page) = b.get(&format!("{f}/"));
    assert!(
        page.contains("Logged in as <b>ann</b>") && page.contains("apple × 2"),
        "{page}"
    );
    let (_, page) = b.get(&format!("{r}/"));
    assert!(
        page.contains("Logged in as <b>ann</b>") && page.contains("pear × 1"),
        "{page}"
    );
    // Logout on Flask: gone on both.
    assert_eq!(b.post(&format!("{f}/logout"), &[]), 302);
    assert_eq!(b.user(f), None);
    assert_eq!(
        b.user(r),
        None,
        "Rust still sees a session Flask logged out"
    );
    // Login on Rust: Flask sees it, with the cart.
    assert_eq!(b.post(&format!("{r}/login"), &[("user", "bob")]), 303);
    assert_eq!(b.user(r).as_deref(), Some("bob"));
    assert_eq!(
        b.user(f).as_deref(),
        Some("bob"),
        "Flask does not see Rust's login"
    );
    assert_eq!(b.post(&format!("{r}/cart/add/plum"), &[]), 200);
    assert_eq!(b.cart(f), serde_json::json!({"plum": 1}));
    let sid = b.sid();
    // Logout on Rust: gone on both, and the record is deleted.
    assert_eq!(b.post(&format!("{r}/logout"), &[]), 303);
    assert!(
        !b.cookies.contains_key("session"),
        "logout expires the cookie"
    );
    if let Some((dir, md5)) = dir {
        assert!(
            !dir.join(hex_digest(md5, &format!("session:{sid}")))
                .exists()
        );
    }
    b.cookies.insert("session".into(), sid.clone());
    assert_eq!(
        b.user(f),
        None,
        "Flask still sees a session Rust logged out"
    );
}

#[test]
fn a_cachelib_directory_is_shared_both_ways_signed() -> TestResult {
    let Some(py) = python() else { return Ok(()) };
    let Pair { _tmp, dir, f, r } = cachelib_pair(
        &py,
        &[
            ("FLASK_SECRET_KEY", "shared secret"),
            ("FLASK_USE_SIGNER", "1"),
            ("FLASK_THRESHOLD", "0"),
        ],
        &[],
        &[("FSCACHE_FLASK_SECRET_KEY", "shared secret")],
    );
    both_ways(&f.base, &r.base, Some((&dir, false)));

    // A cookie signed with another key is refused by both.
    let mut b = Browser::new();
    assert_eq!(b.post(&format!("{}/login", r.base), &[("user", "cy")]), 303);
    let sid = b.sid();
    b.cookies.insert(
        "session".into(),
        format!("{sid}.AAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    );
    assert_eq!(
        b.user(&r.base),
        None,
        "a wrongly signed cookie was accepted by Rust"
    );
    assert_eq!(b.user(&f.base), None);
    b.cookies.insert("session".into(), sid);
    assert_eq!(
        b.user(&r.base),
        None,
        "an unsigned id was accepted by Rust while signing is on"
    );
    Ok(())
}

/// A Flask session holding a value fscache cannot represent (a set) is left alone
/// by the Rust side: its pages answer as having no session, and no request there,
/// not even one that changes the session, replaces or expires the Flask cookie, so
/// the Flask login survives.
#[test]
fn a_flask_session_fscache_cannot_read_keeps_its_cookie_and_login() -> TestResult {
    let Some(py) = python() else { return Ok(()) };
    let Pair { _tmp, dir: _, f, r } = cachelib_pair(
        &py,
        &[
            ("FLASK_SECRET_KEY", "shared secret"),
            ("FLASK_USE_SIGNER", "1"),
            ("FLASK_THRESHOLD", "0"),
        ],
        &[],
        &[("FSCACHE_FLASK_SECRET_KEY", "shared secret")],
    );
    let mut b = Browser::new();
    assert_eq!(
        b.post(&format!("{}/login", f.base), &[("user", "ann")]),
        302
    );
    assert_eq!(b.post(&format!("{}/tags/add/blue", f.base), &[]), 200);
    let flask_cookie = b.cookies["session"].clone();
    // Rust pages: no session there, and nothing they do touches Flask's.
    assert_eq!(
        b.user(&r.base),
        None,
        "Rust cannot read a session holding a set"
    );
    let (status, _) = b.get(&format!("{}/", r.base));
    assert_eq!(status, 200);
    assert_eq!(b.post(&format!("{}/cart/add/apple", r.base), &[]), 200);
    assert_eq!(b.post(&format!("{}/logout", r.base), &[]), 303);
    assert_eq!(
        b.cookies.get("session"),
        Some(&flask_cookie),
        "the Rust side replaced or expired the Flask cookie"
    );
    assert_eq!(
        b.user(&f.base).as_deref(),
        Some("ann"),
        "the Flask login survives"
    );
    let (_, dump) = b.get(&format!("{}/dump", f.base));
    assert!(dump.contains("'blue'") && !dump.contains("apple"), "{dump}");
    Ok(())
}

#[test]
fn md5_names_unsigned_cookies_and_flasks_count_file() -> TestResult {
    let Some(py) = python() else { return Ok(()) };
    let Pair { _tmp, dir, f, r } = cachelib_pair(
        &py,
        &[("FLASK_HASH", "md5"), ("FLASK_THRESHOLD", "100")],
        &[],
        &[],
    );
    both_ways(&f.base, &r.base, Some((&dir, true)));

    // cachelib's count file (a threshold is set) counts Rust's sessions too.
    let count_name = hex_digest(true, "__wz_cache_count");
    let count = || -> i128 {
        let bytes = std::fs::read(dir.join(&count_name)).unwrap();
        match pickle::decode(&bytes[4..]).unwrap() {
            PyValue::Int(n) => n,
            other => panic!("count file holds {other:?}"),
        }
    };
    let mut browsers: Vec<Browser> = (0..6).map(|_| Browser::new()).collect();
    for (i, b) in browsers.iter_mut().enumerate() {
        let base = if i % 2 == 0 { &f.base } else { &r.base };
        let code = b.post(&format!("{base}/login"), &[("user", &format!("u{i}"))]);
        assert!(code == 302 || code == 303);
    }
    assert_eq!(entries(&dir, 32, &count_name).len(), 6);
    assert_eq!(count(), 6, "the count file does not count every session");
    for (i, b) in browsers.iter_mut().enumerate().take(3) {
        let base = if i % 2 == 0 { &r.base } else { &f.base };
        b.post(&format!("{base}/logout"), &[]);
    }
    assert_eq!(entries(&dir, 32, &count_name).len(), 3);
    assert_eq!(count(), 3);
    Ok(())
}

#[test]
fn an_expired_session_is_expired_on_both() -> TestResult {
    let Some(py) = python() else { return Ok(()) };
    let Pair { _tmp, f, r, .. } = cachelib_pair(
        &py,
        &[
            ("FLASK_LIFETIME", "2"),
            ("FLASK_SECRET_KEY", "k"),
            ("FLASK_USE_SIGNER", "1"),
        ],
        &["--lifetime", "2"],
        &[("FSCACHE_FLASK_SECRET_KEY", "k")],
    );
    let mut by_flask = Browser::new();
    let mut by_rust = Browser::new();
    by_flask.post(&format!("{}/login", f.base), &[("user", "ann")]);
    by_rust.post(&format!("{}/login", r.base), &[("user", "bob")]);
    assert_eq!(by_flask.user(&r.base).as_deref(), Some("ann"));
    assert_eq!(by_rust.user(&f.base).as_deref(), Some("bob"));
    // cachelib expires whole seconds: past 2 s, with a second of margin.
    std::thread::sleep(Duration::from_millis(3200));
    for b in [&mut by_flask, &mut by_rust] {
        let saved = b.cookies.clone();
        assert_eq!(b.user(&f.base), None, "Flask still sees an expired session");
        b.cookies = saved;
        assert_eq!(b.user(&r.base), None, "Rust still sees an expired session");
    }
    Ok(())
}

#[test]
fn redis_is_shared_both_ways_with_a_key_prefix() -> TestResult {
    let (Some(py), Some(redis)) = (python(), redis_url()) else {
        return Ok(());
    };
    let prefix = format!("interop{}:", std::process::id());
    let f = flask(
        &py,
        &[
            ("FLASK_SESSION_STORE", &redis),
            ("FLASK_SECRET_KEY", "redis secret"),
            ("FLASK_USE_SIGNER", "1"),
            ("FLASK_KEY_PREFIX", &prefix),
        ],
    );
    let r = rust(
        &redis,
        &[],
        &[
            ("FSCACHE_FLASK_SECRET_KEY", "redis secret"),
            ("FSCACHE_KEY_PREFIX", &prefix),
        ],
    );
    both_ways(&f.base, &r.base, None);
    // The record is Flask-Session's: msgpack under prefix + sid, with a TTL.
    let mut b = Browser::new();
    b.post(&format!("{}/login", r.base), &[("user", "dee")]);
    let store = fscache::store::open(&redis)?;
    let stored = store
        .load(&format!("{prefix}{}", b.sid()))?
        .expect("a record under the prefix");
    assert_eq!(stored.value[0] & 0xf0, 0x80, "a msgpack map");
    assert_eq!(b.user(&f.base).as_deref(), Some("dee"));
    Ok(())
}

#[test]
fn concurrent_writers_on_both_sides_never_read_a_torn_file() -> TestResult {
    let Some(py) = python() else { return Ok(()) };
    let Pair { _tmp, f, r, .. } = cachelib_pair(&py, &[], &[], &[]);
    let mut b = Browser::new();
    b.post(&format!("{}/login", f.base), &[("user", "ann")]);
    let cookie = b.header();
    const ADDS: usize = 40;
    let threads: Vec<_> = [(&f.base, "apple"), (&r.base, "pear")]
        .into_iter()
        .map(|(base, item)| {
            let (base, cookie) = (base.clone(), cookie.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                for _ in 0..ADDS {
                    let mut resp = agent
                        .post(format!("{base}/cart/add/{item}"))
                        .header("Cookie", &cookie)
                        .send_empty()
                        .unwrap();
                    assert_eq!(
                        resp.status().as_u16(),
                        200,
                        "{base}: {}",
                        resp.body_mut().read_to_string().unwrap()
                    );
                    let mut resp = agent
                        .get(format!("{base}/me"))
                        .header("Cookie", &cookie)
                        .call()
                        .unwrap();
                    assert_eq!(
                        resp.status().as_u16(),
                        200,
                        "{base}: a read failed: {}",
                        resp.body_mut().read_to_string().unwrap()
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Flask-Session writes whole records without locks: changes may be lost between
    // the two apps (last writer wins, as between two Flask workers), never torn.
    let cart = b.cart(&r.base);
    let total: u64 = cart
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(total >= 1 && total <= 2 * ADDS as u64, "{cart}");
    assert_eq!(b.cart(&f.base), cart);
    println!(
        "{total} of {} concurrent cart adds kept across Flask and Rust (last writer wins)",
        2 * ADDS
    );
    Ok(())
}

#[test]
fn flasks_own_signed_cookie_session_is_read_and_issued() -> TestResult {
    let Some(py) = python() else { return Ok(()) };
    let f = flask(
        &py,
        &[
            ("FLASK_SESSION_STORE", "cookie"),
            ("FLASK_SECRET_KEY", "cookie secret"),
            ("FLASK_LIFETIME", "3600"),
        ],
    );
    let mut b = Browser::new();
    b.post(&format!("{}/login", f.base), &[("user", "ann")]);
    b.post(&format!("{}/cart/add/apple", f.base), &[]);
    let value = b.cookies["session"].clone();
    let reader = FlaskCookie::new("cookie secret").max_age(Duration::from_secs(3600));
    let session = reader.decode(&value)?;
    assert_eq!(session.get::<String>("user").as_deref(), Some("ann"));
    assert_eq!(session.data["cart"], serde_json::json!({"apple": 1}));
    assert!(session.is_permanent());

    // Refused, each with its reason.
    assert_eq!(
        FlaskCookie::new("another key").decode(&value),
        Err(CookieError::BadSignature)
    );
    let mut tampered = value.clone().into_bytes();
    let i = tampered.iter().position(|&c| c == b'.').unwrap() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    assert_eq!(
        reader.decode(std::str::from_utf8(&tampered)?),
        Err(CookieError::BadSignature)
    );
    let later = fscache::ManualClock::at((session.issued_at + 3601) * 1000);
    assert!(matches!(
        reader.clone().clock(later).decode(&value),
        Err(CookieError::Expired { .. })
    ));

    // A cookie issued by Rust is Flask's session.
    let mut data = session.data.clone();
    data.insert("user".into(), "rust-issued".into());
    let mut rb = Browser::new();
    rb.cookies.insert("session".into(), reader.encode(&data)?);
    assert_eq!(rb.user(&f.base).as_deref(), Some("rust-issued"));
    assert_eq!(rb.cart(&f.base), serde_json::json!({"apple": 1}));
    Ok(())
}

/// Values of every supported type, pickled by CPython and by fscache, read by the
/// other side equal (`tests/flask/values.py`).
#[test]
fn pickles_and_msgpack_round_trip_with_python() -> TestResult {
    let Some(py) = python() else { return Ok(()) };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/flask/values.py");
    // Python → Rust: random session dicts, pickled and msgpacked by Python, with the
    // tagged JSON fscache must read from them.
    let out = Command::new(&py)
        .arg(&script)
        .arg("generate")
        .arg("300")
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = Vec::new();
    for line in String::from_utf8(out.stdout)?.lines() {
        let case: serde_json::Value = serde_json::from_str(line)?;
        let pickled = hex(case["pickle"].as_str().unwrap());
        let value = pickle::decode(&pickled)?;
        assert_eq!(
            value.to_json()?,
            case["tagged"],
            "pickle {}",
            case["pickle"]
        );
        let packed = hex(case["msgpack"].as_str().unwrap());
        let value = fscache::flask::msgpack::decode(&packed)?;
        assert_eq!(
            value.to_json()?,
            case["tagged_msgpack"],
            "msgpack {}",
            case["msgpack"]
        );
        // Rust → Python: fscache's encodings of the same value.
        let value = PyValue::from_json(&case["tagged"])?;
        lines.push(
            serde_json::json!({
                "pickle": unhex(&pickle::encode(&value)?),
                "msgpack": unhex(&fscache::flask::msgpack::encode(&value)?),
                "tagged": case["tagged"],
            })
            .to_string(),
        );
    }
    assert_eq!(lines.len(), 300);
    let mut child = Command::new(&py)
        .arg(&script)
        .arg("check")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.join("\n").as_bytes())?;
    let out = child.wait_with_output()?;
    assert!(
        out.status.success(),
        "Python refused fscache's encodings:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout)?.trim(), "300 values equal");
    Ok(())
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn unhex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
