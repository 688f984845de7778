//! The example server as a user runs it: the built binary (`cargo test` builds the
//! server package's example), its flags, its messages, its log, and how it answers
//! methods and cookies over real HTTP on 127.0.0.1.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A running server process; killed on drop.
struct Server {
    child: Child,
    base: String,
    _tmp: tempfile::TempDir,
}

impl Server {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let mut child = Command::new(common::server_bin())
            .args(["--bind", "127.0.0.1:0", "--threads", "2", "--dir"])
            .arg(tmp.path().join("sessions"))
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut first)
            .unwrap();
        let base = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .to_owned();
        Server {
            child,
            base,
            _tmp: tmp,
        }
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into()
    }

    /// Stops the server and returns what it printed after its first line.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        out
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn help_goes_to_stdout_and_exits_0() -> TestResult {
    let out = Command::new(common::server_bin()).arg("--help").output()?;
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout)?;
    assert!(stdout.starts_with("usage: server"), "{stdout}");
    for flag in [
        "--bind",
        "--dir",
        "--secret",
        "--secure",
        "--threads",
        "FSCACHE_SECURE",
    ] {
        assert!(stdout.contains(flag), "help names {flag}: {stdout}");
    }
    assert!(out.stderr.is_empty());
    let out = Command::new(common::server_bin())
        .arg("--frobnicate")
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr)?.contains("\"--frobnicate\" (try --help)"));
    Ok(())
}

#[test]
fn a_bad_address_is_echoed_and_a_busy_one_suggests_bind() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let out = Command::new(common::server_bin())
        .args(["--bind", "127.0.0.1:notaport", "--dir"])
        .arg(tmp.path().join("s"))
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr)?;
    assert!(
        err.contains("\"127.0.0.1:notaport\""),
        "echoes the value: {err}"
    );
    assert!(err.contains("HOST:PORT"), "{err}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?.to_string();
    let out = Command::new(common::server_bin())
        .args(["--bind", &addr, "--dir"])
        .arg(tmp.path().join("s"))
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr)?;
    assert!(err.contains(&addr) && err.contains("--bind"), "{err}");
    Ok(())
}

#[test]
fn one_log_line_per_request_with_method_path_status_and_time() -> TestResult {
    let server = Server::start(&[], &[]);
    let agent = Server::agent();
    agent.get(format!("{}/", server.base)).call()?;
    agent.get(format!("{}/nope", server.base)).call()?;
    agent.post(format!("{}/logout", server.base)).send_empty()?;
    let log = server.stop();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "{log}");
    for (line, (method, path, status)) in lines.iter().zip([
        ("GET", "/", "200"),
        ("GET", "/nope", "404"),
        ("POST", "/logout", "303"),
    ]) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&parts[..3], [method, path, status], "{line}");
        assert!(parts[3].ends_with("ms") && parts[3].trim_end_matches("ms").parse::<f64>().is_ok());
    }
    Ok(())
}

#[test]
fn secure_cookies_by_flag_or_environment() -> TestResult {
    for (args, env) in [
        (&["--secure"][..], &[][..]),
        (&[][..], &[("FSCACHE_SECURE", "1")][..]),
    ] {
        let server = Server::start(args, env);
        let agent = Server::agent();
        let resp = agent
            .post(format!("{}/login", server.base))
            .send_form([("user", "ada")])?;
        let cookie = resp.headers().get("set-cookie").unwrap().to_str()?;
        assert!(cookie.contains("; Secure"), "{cookie}");
    }
    let server = Server::start(&[], &[]);
    let resp = Server::agent()
        .post(format!("{}/login", server.base))
        .send_form([("user", "ada")])?;
    assert!(
        !resp
            .headers()
            .get("set-cookie")
            .unwrap()
            .to_str()?
            .contains("Secure")
    );
    Ok(())
}

#[test]
fn head_is_get_without_a_body_and_other_methods_get_405_or_501() -> TestResult {
    let server = Server::start(&[], &[]);
    let agent = Server::agent();
    let mut first = agent.get(format!("{}/", server.base)).call()?;
    let cookie = common::set_cookie_pair(&first);
    let _ = first.body_mut().read_to_string();

    let mut head = agent
        .head(format!("{}/", server.base))
        .header("Cookie", &cookie)
        .call()?;
    assert_eq!(head.status().as_u16(), 200);
    assert_eq!(
        head.headers().get("content-type").unwrap(),
        "text/html; charset=utf-8"
    );
    assert_eq!(head.headers().get("vary").unwrap(), "Cookie");
    assert!(
        head.headers().get("set-cookie").is_none(),
        "HEAD changes nothing"
    );
    assert_eq!(head.body_mut().read_to_string()?, "");
    // HEAD was not a visit: the next page view is the second.
    let mut page = agent
        .get(format!("{}/", server.base))
        .header("Cookie", &cookie)
        .call()?;
    assert!(page.body_mut().read_to_string()?.contains("<b>2</b>"));

    let put = agent.put(format!("{}/", server.base)).send_empty()?;
    assert_eq!(put.status().as_u16(), 405);
    assert_eq!(put.headers().get("allow").unwrap(), "GET, HEAD");
    let get_login = agent.get(format!("{}/login", server.base)).call()?;
    assert_eq!(get_login.status().as_u16(), 405);
    assert_eq!(get_login.headers().get("allow").unwrap(), "POST");
    // An unknown method, over a raw socket (clients refuse to send one).
    use std::io::Write;
    let mut sock = std::net::TcpStream::connect(server.base.trim_start_matches("http://"))?;
    sock.write_all(b"BREW / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut answer = String::new();
    sock.read_to_string(&mut answer)?;
    assert!(answer.starts_with("HTTP/1.1 501"), "{answer}");
    Ok(())
}

#[test]
fn every_answer_made_from_the_cookie_varies_on_it_errors_included() -> TestResult {
    let server = Server::start(&[], &[]);
    let agent = Server::agent();
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/me"), // 401
        ("GET", "/cart"),
        ("POST", "/cart/add/x!y"), // 400
        ("POST", "/login"),        // 400: no user
        ("POST", "/logout"),
    ] {
        let url = format!("{}{path}", server.base);
        let resp = match method {
            "GET" => agent.get(&url).call()?,
            _ => agent.post(&url).send_empty()?,
        };
        assert_eq!(
            resp.headers()
                .get("vary")
                .map(|v| v.to_str().unwrap().to_owned())
                .as_deref(),
            Some("Cookie"),
            "{method} {path} ({})",
            resp.status()
        );
    }
    Ok(())
}

#[test]
fn the_page_says_where_the_session_lives_and_when_it_expires() -> TestResult {
    let server = Server::start(&[], &[]);
    let mut resp = Server::agent().get(format!("{}/", server.base)).call()?;
    let page = resp.body_mut().read_to_string()?;
    assert!(
        page.contains("sessions</code>"),
        "names the directory: {page}"
    );
    assert!(page.contains("31 days after your last request"), "{page}");
    assert!(page.contains("<style>"));
    Ok(())
}

#[test]
fn slow_clients_do_not_stop_the_server() -> TestResult {
    use std::io::Write;
    use std::time::{Duration, Instant};
    // Two workers, eight slow clients: each announces a 5,000-byte body (login and
    // cart routes) and sends a few bytes, then nothing.
    let server = Server::start(&["--threads", "2"], &[]);
    let host = server.base.trim_start_matches("http://").to_owned();
    let mut slow = Vec::new();
    for i in 0..8 {
        let mut sock = std::net::TcpStream::connect(&host)?;
        let path = if i % 2 == 0 {
            "/login"
        } else {
            "/cart/add/apple"
        };
        write!(
            sock,
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: 5000\r\n\r\nuser=a"
        )?;
        slow.push(sock);
    }
    std::thread::sleep(Duration::from_millis(300));
    // A ninth client is answered at once.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let started = Instant::now();
    for path in ["/", "/me", "/cart"] {
        let resp = agent.get(format!("{}{path}", server.base)).call()?;
        assert!(resp.status().as_u16() < 500, "{path}: {}", resp.status());
    }
    eprintln!(
        "slow clients: 3 requests answered in {:?} beside 8 stalled bodies",
        started.elapsed()
    );
    // A body that does arrive, slowly, is still served.
    let mut sock = std::net::TcpStream::connect(&host)?;
    let body = format!("user={}", "b".repeat(20)) + &"&pad=x".repeat(300);
    write!(
        sock,
        "POST /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: \
         application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    for chunk in body.as_bytes().chunks(500) {
        sock.write_all(chunk)?;
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut answer = String::new();
    sock.read_to_string(&mut answer)?;
    assert!(answer.starts_with("HTTP/1.1 303"), "{answer}");
    drop(slow);
    Ok(())
}

#[test]
fn cross_origin_state_changes_are_refused_login_csrf_included() -> TestResult {
    let server = Server::start(&[], &[]);
    let agent = Server::agent();
    let own = server.base.clone();
    let post = |path: &str, origin: Option<&str>, referer: Option<&str>, cookie: Option<&str>| {
        let mut r = agent.post(format!("{own}{path}"));
        if let Some(o) = origin {
            r = r.header("Origin", o);
        }
        if let Some(rf) = referer {
            r = r.header("Referer", rf);
        }
        if let Some(c) = cookie {
            r = r.header("Cookie", c);
        }
        r.send_form([("user", "mallory")]).unwrap()
    };
    // Login CSRF: a foreign page posts a login with no cookie at all.
    let r = post("/login", Some("http://evil.example"), None, None);
    assert_eq!(r.status().as_u16(), 403);
    assert!(
        r.headers().get("set-cookie").is_none(),
        "no session planted"
    );
    let r = post("/login", None, Some("http://evil.example/page"), None);
    assert_eq!(
        r.status().as_u16(),
        403,
        "Referer checked when Origin is missing"
    );
    let r = post("/login", Some("null"), None, None);
    assert_eq!(r.status().as_u16(), 403, "an opaque origin is not ours");

    // The site's own pages, and clients that are not browsers, may post.
    let r = post("/login", Some(&own), None, None);
    assert_eq!(r.status().as_u16(), 303);
    let cookie = common::set_cookie_pair(&r);
    assert_eq!(
        post(
            "/cart/add/apple",
            None,
            Some(&format!("{own}/")),
            Some(&cookie)
        )
        .status()
        .as_u16(),
        200
    );
    assert_eq!(
        post("/cart/add/apple", None, None, Some(&cookie))
            .status()
            .as_u16(),
        200
    );
    // A cross-site post with the victim's cookie changes nothing.
    assert_eq!(
        post(
            "/cart/clear",
            Some("https://evil.example"),
            None,
            Some(&cookie)
        )
        .status()
        .as_u16(),
        403
    );
    assert_eq!(
        post("/logout", Some("https://evil.example"), None, Some(&cookie))
            .status()
            .as_u16(),
        403
    );
    let mut cart = agent
        .get(format!("{own}/cart"))
        .header("Cookie", &cookie)
        .call()?;
    assert_eq!(cart.body_mut().read_to_string()?.trim(), r#"{"apple":2}"#);
    Ok(())
}

/// Under `--secure` every cookie the server sets is `Secure`, the anonymous
/// visitor's `visits` counter included; every answer carries nosniff, a
/// frame-ancestors policy and `Cache-Control: private`.
#[test]
fn visits_cookie_is_secure_and_every_answer_carries_the_safety_headers() -> TestResult {
    let server = Server::start(&["--secure"], &[]);
    let agent = Server::agent();
    let resp = agent.get(format!("{}/", server.base)).call()?;
    let cookies: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        cookies.iter().any(|c| c.starts_with("visits=")),
        "{cookies:?}"
    );
    for c in &cookies {
        assert!(c.contains("; Secure"), "not Secure under --secure: {c}");
    }
    let plain = Server::start(&[], &[]);
    let resp = agent.get(format!("{}/", plain.base)).call()?;
    let visits = resp
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()?
        .to_owned();
    assert!(!visits.contains("Secure"), "{visits}");
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/me"),
        ("GET", "/cart"),
        ("GET", "/nope"),
        ("POST", "/login"),
    ] {
        let resp = match method {
            "GET" => agent.get(format!("{}{path}", plain.base)).call()?,
            _ => agent
                .post(format!("{}{path}", plain.base))
                .send_form([("user", "ada")])?,
        };
        let h = |n: &str| {
            resp.headers()
                .get(n)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        assert_eq!(h("x-content-type-options"), "nosniff", "{method} {path}");
        assert!(
            h("content-security-policy").contains("frame-ancestors 'none'"),
            "{method} {path}"
        );
        assert!(h("cache-control").contains("private"), "{method} {path}");
    }
    Ok(())
}

/// Requests whose bodies never arrive hold at most `--max-uploads` body-reader
/// threads; past that they are answered 503 at once, and the workers keep answering
/// pages. (tiny_http hands the server only as many requests as it has connection
/// threads, at least 4, so the limit is set below that here.)
#[test]
fn stalled_uploads_hold_a_bounded_number_of_threads() -> TestResult {
    use std::io::Write;
    use std::time::{Duration, Instant};
    let server = Server::start(&["--threads", "2", "--max-uploads", "2"], &[]);
    let host = server.base.trim_start_matches("http://").to_owned();
    let pid = server.child.id();
    let body_readers = || -> usize {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|tasks| {
                tasks
                    .flatten()
                    .filter(|t| {
                        std::fs::read_to_string(t.path().join("comm"))
                            .is_ok_and(|c| c.trim() == "body-reader")
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    let mut stalled = Vec::new();
    for _ in 0..6 {
        let mut sock = std::net::TcpStream::connect(&host)?;
        write!(
            sock,
            "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: 100000\r\n\r\nuser=a"
        )?;
        stalled.push(sock);
    }
    // Connections past the limit are answered 503 without their body.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut refused = 0;
    while refused < 2 && Instant::now() < deadline {
        for sock in &mut stalled {
            sock.set_read_timeout(Some(Duration::from_millis(50)))?;
            let mut head = [0u8; 12];
            if std::io::Read::read_exact(sock, &mut head).is_ok() {
                assert_eq!(&head, b"HTTP/1.1 503", "{}", String::from_utf8_lossy(&head));
                refused += 1;
            }
        }
    }
    let readers = body_readers();
    eprintln!("stalled uploads: 6 connections, {readers} body-reader threads, {refused} refused");
    assert_eq!(
        readers, 2,
        "body-reader threads for 6 stalled uploads, limit 2"
    );
    assert!(
        refused >= 2,
        "uploads past the limit were refused ({refused})"
    );
    // Pages are still answered.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let resp = agent.get(format!("{}/", server.base)).call()?;
    assert_eq!(resp.status().as_u16(), 200);
    drop(stalled);
    Ok(())
}
