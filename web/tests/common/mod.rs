//! Helpers shared by the framework tests.
#![allow(dead_code)]

/// A test that cannot run here: under `CI=true` that is a failure (CI must run every
/// test), elsewhere a visible skip. Never a silent pass.
pub fn cannot_run(why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI must run this test, but: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

/// `(name, url)` of every store to test: `file_url`, SQLite in a temp file (kept
/// alive by the caller's temp dir: `file_url`'s parent), and each engine named by
/// `FSCACHE_TEST_REDIS`, `FSCACHE_TEST_POSTGRES`, `FSCACHE_TEST_MEMCACHED` (a skip
/// locally when unset; a failure under `CI=true`).
pub fn store_urls(file_url: &str) -> Vec<(String, String)> {
    let mut all = vec![("file".to_owned(), file_url.to_owned())];
    let dir = file_url.trim_start_matches("file://");
    if cfg!(feature = "sqlite") {
        all.push(("sqlite".into(), format!("sqlite://{dir}.sqlite3")));
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
        if !on {
            cannot_run(&format!(
                "{name}: built without its feature (--features engines)"
            ));
            continue;
        }
        match std::env::var(var) {
            Ok(url) if !url.is_empty() => all.push((name.to_owned(), url)),
            _ => cannot_run(&format!(
                "{var} is not set (eval \"$(bash .ci/engines.sh start)\")"
            )),
        }
    }
    all
}
