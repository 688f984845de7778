//! A real browser on the axum example: headless Chromium (Debian's `chromium` and
//! `chromium-driver`), driven through ChromeDriver's WebDriver protocol, logs in,
//! fills the cart with clicks, and logs out, checking what a person sees at each
//! step. It saves a screenshot of the logged-in page under the build directory
//! (`target/tmp/browser/axum-logged-in.png`; not committed).
//!
//! Without chromium and chromedriver it prints a skip (and fails under `CI=true`,
//! where `.ci/run` installs them).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ureq::Agent;

mod common;

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A WebDriver session on ChromeDriver.
struct Driver {
    agent: Agent,
    base: String,
}

impl Driver {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// A WebDriver command; its error (e.g. a script run while a page unloads) as
    /// an `Err`.
    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let mut resp = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, b) => self.agent.post(&url).send_json(b.unwrap_or(json!({}))),
        }
        .map_err(|e| e.to_string())?;
        let v: Value = resp.body_mut().read_json().map_err(|e| e.to_string())?;
        if let Some(err) = v["value"].get("error") {
            return Err(format!("{err}: {}", v["value"]["message"]));
        }
        Ok(v["value"].clone())
    }

    fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}"))
            .to_owned()
    }

    fn click(&self, css: &str) {
        let id = self.find(css);
        self.call("POST", &format!("/element/{id}/click"), None);
    }

    /// Clicks a form's button and waits (up to 10 s) until the page it loads has
    /// replaced this one: a check of the text alone cannot tell the old page from
    /// the new when both show it.
    fn click_and_load(&self, css: &str) {
        let script = |s: &str| {
            self.try_call(
                "POST",
                "/execute/sync",
                Some(json!({"script": s, "args": []})),
            )
        };
        script("window.__fscacheOldPage = true; return true").unwrap();
        self.click(css);
        let start = Instant::now();
        // A script sent while the old page unloads may fail: that is not the new page
        // yet, so it is asked again.
        while script(
            "return window.__fscacheOldPage === undefined && document.readyState === 'complete'",
        ) != Ok(Value::Bool(true))
        {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "clicking {css} never loaded a new page"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn text(&self) -> String {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": "return document.body.innerText", "args": []})),
        )
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Waits (up to 10 s) until the page's visible text satisfies `want`.
    fn wait_text(&self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let t = self.text();
            if want(&t) {
                return t;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "page never showed {what}:\n{t}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The axum example and ChromeDriver, running; browsers are opened on demand.
struct Setup {
    site: String,
    root: String,
    chromium: String,
    agent: Agent,
    profiles: Vec<tempfile::TempDir>,
    _tmp: tempfile::TempDir,
    _driver: Kill,
    _server: Kill,
}

impl Setup {
    /// `None` (a skip; a failure under CI) without chromium and chromedriver.
    fn start() -> Option<Setup> {
        let (Ok(chromium), Ok(chromedriver)) = (which("chromium"), which("chromedriver")) else {
            common::cannot_run(
                "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)",
            );
            return None;
        };
        let tmp = tempfile::tempdir().unwrap();
        let store = format!("file://{}", tmp.path().join("sessions").display());
        let mut server = Command::new(env!("CARGO_BIN_EXE_axum-server"))
            .args(["--bind", "127.0.0.1:0", "--store", &store])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let server = Kill(server);
        let site = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap()
            .to_owned();

        let port = free_port();
        let driver_proc = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let driver = Kill(driver_proc);
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let root = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while agent.get(&format!("{root}/status")).call().is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(Setup {
            site,
            root,
            chromium,
            agent,
            profiles: Vec::new(),
            _tmp: tmp,
            _driver: driver,
            _server: server,
        })
    }

    /// A new browser with a profile of its own (its own cookies).
    fn browser(&mut self) -> Driver {
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.chromium,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--window-size=900,700",
                         format!("--user-data-dir={}", profile.path().display())],
            }
        }}});
        self.profiles.push(profile);
        let mut resp = self
            .agent
            .post(&format!("{}/session", self.root))
            .send_json(caps)
            .unwrap();
        let v: Value = resp.body_mut().read_json().unwrap();
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_owned();
        Driver {
            agent: self.agent.clone(),
            base: format!("{}/session/{session}", self.root),
        }
    }
}

#[test]
fn a_person_logs_in_fills_the_cart_and_logs_out_in_chromium() {
    let Some(mut setup) = Setup::start() else {
        return;
    };
    let d = setup.browser();
    let site = setup.site.clone();
    d.call("POST", "/url", Some(json!({"url": format!("{site}/")})));
    let t = d.wait_text("the login form", |t| t.contains("visited this page 1 time"));
    assert!(!t.contains("Logged in as"), "{t}");

    // Log in by typing a name and pressing the button.
    let input = d.find("input[name=user]");
    d.call(
        "POST",
        &format!("/element/{input}/value"),
        Some(json!({"text": "Ann"})),
    );
    d.click("form[action='/login'] button");
    d.wait_text("the user's name", |t| t.contains("Logged in as Ann"));

    // Fill the cart with clicks.
    for (button, n) in [("add('apple')", 1), ("add('apple')", 2), ("add('pear')", 1)] {
        let item = if button.contains("apple") {
            "apple"
        } else {
            "pear"
        };
        d.click(&format!("button[onclick=\"{button}\"]"));
        d.wait_text(&format!("{item} × {n}"), |t| {
            t.contains(&format!("{item} × {n}"))
        });
    }
    let t = d.text();
    assert!(t.contains("apple × 2") && t.contains("pear × 1"), "{t}");

    // What the person sees, saved for a look (target/tmp/browser/).
    let png = d.call("GET", "/screenshot", None);
    let png = decode_base64(png.as_str().unwrap());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("axum-logged-in.png"), &png).unwrap();
    println!(
        "screenshot: {} ({} bytes)",
        dir.join("axum-logged-in.png").display(),
        png.len()
    );

    // The cookie holds only an id.
    let cookies = d.call("GET", "/cookie", None);
    let cookies = cookies.as_array().unwrap();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert_eq!(cookies[0]["name"], "id");
    assert_eq!(cookies[0]["httpOnly"], true);

    // Log out: the name and the cart are gone, and so is the cookie.
    d.click("form[action='/logout'] button");
    let t = d.wait_text("the login form again", |t| !t.contains("Logged in as"));
    assert!(!t.contains("apple ×"), "the cart survived logout:\n{t}");
    d.call("DELETE", "", None);
}

fn which(name: &str) -> Result<String, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.is_file())
        })
        .map(|p| p.display().to_string())
        .ok_or(())
}

fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|&c| c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | u32::from(val(c)) << (18 - 6 * i));
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

impl Driver {
    fn open(&self, url: &str) {
        self.call("POST", "/url", Some(json!({"url": url})));
    }

    fn log_in(&self, site: &str, name: &str) {
        self.open(&format!("{site}/"));
        let input = self.find("input[name=user]");
        self.call(
            "POST",
            &format!("/element/{input}/value"),
            Some(json!({"text": name})),
        );
        self.click("form[action='/login'] button");
        self.wait_text("the user's name", |t| {
            t.contains(&format!("Logged in as {name}"))
        });
    }
}

#[test]
fn log_out_other_devices_and_everywhere_with_two_browsers() {
    let Some(mut setup) = Setup::start() else {
        return;
    };
    let site = setup.site.clone();
    let (laptop, phone) = (setup.browser(), setup.browser());
    laptop.log_in(&site, "Ann");
    phone.log_in(&site, "Ann");

    // The laptop follows the page's link to its devices: two, itself the current one.
    laptop.open(&format!("{site}/"));
    laptop.click("a[href='/devices']");
    let t = laptop.wait_text("the devices", |t| t.contains("sessions"));
    let v: Value = serde_json::from_str(&t).unwrap_or_else(|e| panic!("{e}: {t}"));
    let list = v["sessions"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{t}");
    assert_eq!(
        list.iter().filter(|d| d["current"] == true).count(),
        1,
        "{t}"
    );
    assert!(
        list.iter()
            .all(|d| d["label"] == "Headless Chrome on Linux"),
        "{t}"
    );

    // "Log out other devices" on the laptop: the phone's next page is logged out.
    laptop.open(&format!("{site}/"));
    // (The page before the click shows "Logged in as Ann" too: wait for the new one,
    // or the phone may load its page before the laptop's request has run.)
    laptop.click_and_load("form[action='/logout-others'] button");
    laptop.wait_text("the page again", |t| t.contains("Logged in as Ann"));
    phone.open(&format!("{site}/"));
    let t = phone.wait_text("the login form", |t| !t.contains("Logged in as"));
    assert!(t.contains("visited this page"), "{t}");
    laptop.open(&format!("{site}/"));
    laptop.wait_text("still logged in", |t| t.contains("Logged in as Ann"));

    // The phone logs in again and logs out everywhere: both are logged out.
    phone.log_in(&site, "Ann");
    phone.click("form[action='/logout-everywhere'] button");
    phone.wait_text("the login form", |t| !t.contains("Logged in as"));
    laptop.open(&format!("{site}/"));
    laptop.wait_text("the laptop logged out", |t| !t.contains("Logged in as"));
    laptop.call("DELETE", "", None);
    phone.call("DELETE", "", None);
}
