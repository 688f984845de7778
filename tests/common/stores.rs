//! Every store the build has, for tests that run on each: the file cache, SQLite
//! (feature `sqlite`) and a cachelib directory (feature `flask`) always; Redis,
//! PostgreSQL and Memcached against the servers named by `FSCACHE_TEST_REDIS`,
//! `FSCACHE_TEST_POSTGRES` and `FSCACHE_TEST_MEMCACHED`. Under `CI=true` a missing
//! server is a failure; locally a printed skip.

use fscache::store::{self, Store};

pub struct Subject {
    pub name: &'static str,
    /// The URL the store was opened with (for child processes).
    #[allow(dead_code)]
    pub url: String,
    pub store: Box<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

/// An engine's URL from the environment, or `None` (a skip; a panic under CI).
pub fn engine_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{var} is not set under CI=true: the engine server must run (.ci/engines.sh)"
            );
            eprintln!("skip: {var} is not set (eval \"$(bash .ci/engines.sh start)\")");
            None
        }
    }
}

pub fn subjects() -> Vec<Subject> {
    let mut all = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("sessions").display());
    all.push(Subject {
        name: "file",
        store: store::open(&url).unwrap(),
        url,
        _dir: Some(dir),
    });
    #[cfg(feature = "sqlite")]
    {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
        all.push(Subject {
            name: "sqlite",
            store: store::open(&url).unwrap(),
            url,
            _dir: Some(dir),
        });
    }
    // A Flask-Session cachelib directory (pickles under a 4-byte expiry).
    #[cfg(feature = "flask")]
    {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("cachelib://{}", dir.path().join("flask_session").display());
        all.push(Subject {
            name: "cachelib",
            store: store::open(&url).unwrap(),
            url,
            _dir: Some(dir),
        });
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
            eprintln!("skip: {name} (built without its feature; --features engines)");
            continue;
        }
        if let Some(url) = engine_url(var) {
            let store = store::open(&url).unwrap_or_else(|e| panic!("{name}: open {url}: {e}"));
            all.push(Subject {
                name,
                store,
                url,
                _dir: None,
            });
        }
    }
    all
}

/// A fresh key prefix per test run and test.
pub fn prefix(test: &str) -> String {
    let mut r = [0u8; 8];
    getrandom(&mut r);
    format!(
        "t:{test}:{}:",
        r.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

pub fn getrandom(buf: &mut [u8]) {
    use std::hash::{BuildHasher, Hasher};
    for chunk in buf.chunks_mut(8) {
        let n = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
            .to_le_bytes();
        chunk.copy_from_slice(&n[..chunk.len()]);
    }
}
