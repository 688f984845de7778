//! No password from a store URL ever shows: not in an error's `Display` or `Debug`,
//! not in a store's `Debug`, not in the example server's log lines, page or exit
//! message. Against a real password-protected redis-server started here on
//! 127.0.0.1 (a skip locally without redis-server, a failure under `CI=true`), and
//! for malformed URLs of every engine with the password in each place a URL can
//! hold one (userinfo, a query option, PostgreSQL's key-value form).
#![cfg(all(feature = "redis", feature = "postgres", feature = "memcached"))]

mod common;

use std::io::Read;
use std::process::{Command, Stdio};

use fscache::Error;
use fscache::store;

#[path = "common/servers.rs"]
mod servers;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The password of the protected server, and a wrong one; neither may show.
const PASSWORD: &str = "hunter2-s3cret";
const WRONG: &str = "wrong-s3cret";

/// A redis-server that wants `PASSWORD`, and its port.
fn protected_redis() -> Option<(servers::Proc, u16)> {
    let port = servers::free_port();
    let args = ["--port", &port.to_string(), "--requirepass", PASSWORD].map(str::to_owned);
    servers::redis_server(port, &args).map(|p| (p, port))
}

fn assert_hidden(what: &str, shown: &str) {
    assert!(
        !shown.contains(PASSWORD) && !shown.contains(WRONG),
        "{what}: a password shows: {shown}"
    );
}

#[test]
fn a_wrong_password_is_an_auth_error_that_does_not_show_it() -> TestResult {
    let Some((_redis, port)) = protected_redis() else {
        return Ok(());
    };
    let good = store::RedisStore::open(&format!("redis://:{PASSWORD}@127.0.0.1:{port}/0"))?;
    store::Store::save(&good, "k", b"v", std::time::Duration::from_secs(60))?;
    assert_hidden("a store's Debug", &format!("{good:?}"));
    for url in [
        format!("redis://:{WRONG}@127.0.0.1:{port}/0"),
        format!("redis://default:{WRONG}@127.0.0.1:{port}/0?pool_size=2"),
        format!("redis://127.0.0.1:{port}/0"),
    ] {
        let e = store::open(&url).err().expect("refused");
        let shown = format!("{e} {e:?}");
        assert_hidden(&url, &shown);
        assert!(
            e.engine_kind() == Some(fscache::EngineErrorKind::Auth),
            "{url}: {shown}"
        );
        assert!(!e.is_retryable(), "{url}: {shown}");
    }
    Ok(())
}

#[test]
fn malformed_urls_of_every_engine_never_echo_the_password() {
    let cases: Vec<String> = vec![
        format!("redis://:{PASSWORD}@127.0.0.1:1/0?wait_replicas=many"),
        format!("redis://u:{PASSWORD}@127.0.0.1:1/0?pool_size=-1"),
        format!("redis-sentinel://:{PASSWORD}@127.0.0.1:1/"),
        format!("redis-sentinel://127.0.0.1:1/svc?sentinel_password={PASSWORD}&pool_timeout_ms=x"),
        format!("redis-cluster://:{PASSWORD}@127.0.0.1:1/3"),
        // An option nobody reads (a misspelling) is refused, not ignored; `pass`
        // (redis+unix://'s password option) is hidden too.
        format!("redis://:{PASSWORD}@127.0.0.1:1/0?wait_replica=1"),
        format!("redis+unix:///nonexistent.sock?pass={PASSWORD}&wait_replica=1"),
        format!("postgres://app:{PASSWORD}@127.0.0.1:1/db?wait_replica=1"),
        // Refused before a connection: without the feature `tls` for want of TLS,
        // with it for the missing CA file.
        format!("rediss://:{PASSWORD}@127.0.0.1:1/0?ssl_ca_certs=/nonexistent/ca.pem"),
        format!("postgres://app:{PASSWORD}@127.0.0.1:1/db?pool_size=x"),
        format!("postgres://app@127.0.0.1:1/db?password={PASSWORD}&prepared_statements=maybe"),
        format!("postgres://app:{PASSWORD}@127.0.0.1:notaport/db"),
        format!("host=127.0.0.1 password={PASSWORD} pool_size=x"),
        format!("host=127.0.0.1 password='{PASSWORD} x' pool_timeout_ms=y"),
        format!("host=127.0.0.1 password={PASSWORD} port=notaport"),
        format!("memcache://u:{PASSWORD}@127.0.0.1:1"),
        format!("memcache://127.0.0.1:1?pool_size=x&password={PASSWORD}"),
        format!("nosuch://u:{PASSWORD}@h/"),
        format!("u:{PASSWORD}@127.0.0.1:1/0"),
    ];
    for url in cases {
        // PostgreSQL's key-value form has no scheme: it goes to the store itself.
        let result = if url.starts_with("host=") {
            store::PostgresStore::open(&url).map(|s| Box::new(s) as Box<dyn store::Store>)
        } else {
            store::open(&url)
        };
        let e = result.err().expect("refused");
        let shown = format!("{e} {e:?}");
        assert_hidden(&url, &shown);
        assert!(
            matches!(e, Error::Config { .. }),
            "{}: {shown}",
            store::redact(&url)
        );
    }
}

/// The example server with a password-protected Redis: its start line, its page
/// and its log show `***`; with a wrong password it exits with a message that
/// names the store without the password.
#[test]
fn the_example_server_never_shows_the_store_password() -> TestResult {
    let Some((_redis, port)) = protected_redis() else {
        return Ok(());
    };
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{port}/0");
    let mut child = servers::Proc(
        Command::new(common::server_bin())
            .args(["--bind", "127.0.0.1:0", "--threads", "1", "--store", &url])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?,
    );
    let mut stdout = child.0.stdout.take().unwrap();
    let mut first = Vec::new();
    let mut byte = [0u8];
    while stdout.read(&mut byte)? == 1 && byte[0] != b'\n' {
        first.push(byte[0]);
    }
    let first = String::from_utf8(first)?;
    assert!(first.contains(":***@127.0.0.1"), "{first}");
    let base = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {first:?}"));
    let page = ureq::get(base).call()?.into_body().read_to_string()?;
    assert!(page.contains(":***@127.0.0.1"), "the page names the store");
    assert_hidden("the page", &page);
    let _ = child.0.kill();
    let _ = child.0.wait();
    let mut log = first;
    stdout.read_to_string(&mut log)?;
    child.0.stderr.take().unwrap().read_to_string(&mut log)?;
    assert_hidden("the log", &log);

    let wrong = format!("redis://:{WRONG}@127.0.0.1:{port}/0");
    let out = Command::new(common::server_bin())
        .args(["--bind", "127.0.0.1:0", "--store", &wrong])
        .output()?;
    assert!(!out.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("cannot open the session store redis://:***@"),
        "{said}"
    );
    assert_hidden("the exit message", &said);
    Ok(())
}
