//! `Sessions` with Flask-Session's settings on a cachelib directory, without a
//! Flask app (tests/flask_interop.rs runs the real one): file names and content,
//! the signed cookie, concurrent requests, records fscache cannot represent, and
//! configurations that cannot work.

#![cfg(feature = "flask")]

use std::sync::{Arc, Barrier};
use std::time::Duration;

use fscache::Error;
use fscache::flask::{FlaskFormat, pickle};
use fscache::session::{SessionConfig, Sessions};
use fscache::store::{CachelibStore, Store};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("session=")
        .unwrap()
        .to_owned()
}

#[test]
fn records_are_cachelib_files_flask_can_read() -> TestResult {
    let dir = tempfile::tempdir()?;
    let sessions = Sessions::new(
        CachelibStore::open(dir.path())?,
        SessionConfig::flask_session(FlaskFormat::Pickle).flask_signer(["app secret"]),
    )?;
    let mut s = sessions.load(None)?;
    s.insert("user", "ann")?;
    s.insert("seen", &serde_json::json!({" t": [1, 2]}))?;
    let set_cookie = sessions.save(&mut s)?.set_cookie.expect("a cookie");
    let value = cookie_value(&set_cookie);
    // itsdangerous's form: the bare id, a dot, 27 characters of HMAC-SHA1.
    let (id, sig) = value.split_once('.').expect("signed");
    assert_eq!(id, s.id());
    assert_eq!(sig.len(), 27);
    // The file: sha256 of "session:<id>", a 4-byte expiry ~31 days out, a pickle
    // of the dict with Flask's _permanent key.
    let store = CachelibStore::open(dir.path())?;
    let path = store.entry_path(&format!("session:{id}"));
    assert_eq!(path.file_name().unwrap().len(), 64);
    let bytes = std::fs::read(&path)?;
    let expiry = u64::from(u32::from_ne_bytes(bytes[..4].try_into()?));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    assert!(
        (now + 31 * 86_400..=now + 31 * 86_400 + 2).contains(&expiry),
        "{expiry} vs {now}"
    );
    let dict = pickle::decode(&bytes[4..])?;
    assert_eq!(
        dict.to_json()?,
        serde_json::json!({"_permanent": true, "user": "ann", "seen": {" t": [1, 2]}})
    );
    // Read back through the cookie; a tampered or unsigned one is a new session.
    let again = sessions.load(Some(&format!("session={value}")))?;
    assert_eq!(again.get::<String>("user")?.as_deref(), Some("ann"));
    assert!(sessions.load(Some(&format!("session={id}")))?.is_new());
    assert!(
        sessions
            .load(Some(&format!("session={id}.{}", "A".repeat(27))))?
            .is_new()
    );
    Ok(())
}

#[test]
fn concurrent_requests_of_one_session_keep_both_changes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let sessions = Arc::new(Sessions::new(
        CachelibStore::open(dir.path())?,
        SessionConfig::flask_session(FlaskFormat::Pickle),
    )?);
    let mut s = sessions.load(None)?;
    s.insert("user", "ann")?;
    let cookie = sessions.save(&mut s)?.set_cookie.unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    const N: u64 = 50;
    let barrier = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (sessions, cookie, barrier) = (sessions.clone(), cookie.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..N {
                    let mut s = sessions.load(Some(&cookie)).unwrap();
                    s.update("count", |n: Option<u64>| Some(n.unwrap_or(0) + 1))
                        .unwrap();
                    s.insert(&format!("t{t}"), &true).unwrap();
                    sessions.save(&mut s).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = sessions.load(Some(&cookie))?;
    assert_eq!(
        s.get::<u64>("count")?,
        Some(4 * N),
        "a merge under the stripe lock lost an update"
    );
    for t in 0..4 {
        assert_eq!(s.get::<bool>(&format!("t{t}"))?, Some(true));
    }
    Ok(())
}

#[test]
fn a_record_fscache_cannot_represent_is_left_for_flask() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = CachelibStore::open(dir.path())?;
    let sessions = Sessions::new(
        CachelibStore::open(dir.path())?,
        SessionConfig::flask_session(FlaskFormat::Pickle),
    )?;
    let id = "A".repeat(43);
    // pickle.dumps({'tags': {1, 2}}, 5): a set, which JSON cannot hold.
    let set = b"\x80\x05\x95\x13\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x04tags\x94\x8f\x94(K\x01K\x02\x90s.";
    store.save(&format!("session:{id}"), set, Duration::from_secs(60))?;
    let s = sessions.load(Some(&format!("session={id}")))?;
    assert!(s.is_new(), "an unreadable record must not be a session");
    assert_ne!(s.id(), id, "a new id, never the client's");
    assert!(
        store.load(&format!("session:{id}"))?.is_some(),
        "Flask's record was removed"
    );
    // A request that changes it (a login, a page view) saves nothing and sends no
    // cookie: the browser keeps Flask's cookie and Flask's login.
    let mut s = sessions.load(Some(&format!("session={id}")))?;
    assert!(s.is_foreign());
    s.insert("visits", &1)?;
    s.regenerate()?;
    let outcome = sessions.save(&mut s)?;
    assert_eq!(
        outcome.set_cookie, None,
        "the Flask cookie must not be replaced"
    );
    let mut s = sessions.load(Some(&format!("session={id}")))?;
    s.destroy();
    assert_eq!(sessions.save(&mut s)?.set_cookie, None, "nor expired");
    assert_eq!(
        store.load(&format!("session:{id}"))?.map(|v| v.value),
        Some(set.to_vec()),
        "Flask's record is unchanged"
    );
    // A cookie naming no record at all is still a plain new session.
    let fresh = sessions.load(Some(&format!("session={}", "B".repeat(43))))?;
    assert!(!fresh.is_foreign());
    Ok(())
}

#[test]
fn settings_flask_session_cannot_honour_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = || CachelibStore::open(dir.path()).unwrap();
    for (what, config) in [
        (
            "idle timeout",
            SessionConfig::flask_session(FlaskFormat::Pickle).idle_timeout(Duration::from_secs(60)),
        ),
        (
            "absolute lifetime",
            SessionConfig::flask_session(FlaskFormat::Pickle)
                .absolute_lifetime(Duration::from_secs(60)),
        ),
        (
            "fscache signing keys",
            SessionConfig::flask_session(FlaskFormat::Pickle).signing_keys(["k"]),
        ),
        (
            "flask_signer alone",
            SessionConfig::default().flask_signer(["k"]),
        ),
    ] {
        match Sessions::new(store(), config) {
            Err(e @ Error::Config { .. }) => assert!(e.to_string().len() > 40, "{what}: {e}"),
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn cachelib_urls_and_md5_names() -> TestResult {
    let dir = tempfile::tempdir()?;
    let md5 = fscache::store::open(&format!("cachelib://{}?hash=md5", dir.path().display()))?;
    md5.save("session:x", b"\x80\x05N.", Duration::from_secs(60))?;
    // hashlib.md5(b"session:x").hexdigest()
    assert!(dir.path().join("c41c552ddaee65287ce726a075f46f85").exists());
    for bad in ["cachelib://", "cachelib://./x?hash=sha1"] {
        assert!(
            matches!(fscache::store::open(bad), Err(Error::Config { .. })),
            "{bad}"
        );
    }
    // A file where the directory should be is refused with a clear error.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x")?;
    let err = CachelibStore::open(&file).unwrap_err().to_string();
    assert!(err.contains("not a directory"), "{err}");
    // Foreign files in the directory are never touched by cleanup.
    std::fs::write(dir.path().join("notes.txt"), b"\0\0\0\0precious")?;
    std::fs::write(dir.path().join("0".repeat(32)), b"\x01\0\0\0not a pickle")?;
    md5.cleanup(100)?;
    assert!(dir.path().join("notes.txt").exists());
    assert!(dir.path().join("0".repeat(32)).exists());
    Ok(())
}

#[test]
fn symlinks_directories_and_fifos_are_not_entries() -> TestResult {
    let dir = tempfile::tempdir()?;
    let outside = tempfile::tempdir()?;
    let store = CachelibStore::open(dir.path())?;
    // A valid-looking entry outside the directory, and a symlink to it at a key's name.
    let secret = outside.path().join("secret");
    std::fs::write(&secret, [&[0u8; 4][..], b"\x80\x05N."].concat())?;
    std::os::unix::fs::symlink(&secret, store.entry_path("session:link"))?;
    assert_eq!(store.load("session:link")?, None, "a symlink was followed");
    std::fs::create_dir(store.entry_path("session:dir"))?;
    assert_eq!(store.load("session:dir")?, None);
    let fifo = store.entry_path("session:fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()?
            .success()
    );
    // Opened non-blocking: no writer, no hang.
    assert_eq!(store.load("session:fifo")?, None);
    // Writing a key whose name is a symlink replaces the link, never the target.
    store.save("session:link", b"\x80\x05K\x01.", Duration::from_secs(60))?;
    assert_eq!(
        std::fs::read(&secret)?,
        [&[0u8; 4][..], b"\x80\x05N."].concat()
    );
    assert_eq!(
        store.load("session:link")?.unwrap().value,
        b"\x80\x05K\x01."
    );
    Ok(())
}

#[test]
fn the_count_file_follows_new_and_removed_entries_and_stale_temps_go() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = CachelibStore::open(dir.path())?;
    let count_path = dir
        .path()
        .join(fscache::store::HashMethod::Sha256.file_name("__wz_cache_count"));
    // What cachelib writes when a threshold is set: never expires, pickle of 0.
    std::fs::write(
        &count_path,
        [
            &[0u8; 4][..],
            &pickle::encode(&fscache::flask::PyValue::Int(0))?,
        ]
        .concat(),
    )?;
    let count = || -> i128 {
        let b = std::fs::read(&count_path).unwrap();
        match pickle::decode(&b[4..]).unwrap() {
            fscache::flask::PyValue::Int(n) => n,
            other => panic!("{other:?}"),
        }
    };
    let ttl = Duration::from_secs(60);
    store.save("a", b"\x80\x05N.", ttl)?;
    assert!(store.insert("b", b"\x80\x05N.", ttl)?);
    store.save("a", b"\x80\x05K\x01.", ttl)?; // an overwrite: not a new entry
    assert_eq!(count(), 2);
    assert!(store.remove("a")?);
    assert!(!store.remove("a")?);
    assert_eq!(count(), 1);
    // Temp files: a crashed writer's (two hours old) goes, a fresh one stays.
    let stale = dir.path().join("tmpab12cd.__wz_cache");
    let fresh = dir.path().join("tmpef34gh.__wz_cache");
    std::fs::write(&stale, b"x")?;
    std::fs::write(&fresh, b"x")?;
    std::fs::File::options()
        .write(true)
        .open(&stale)?
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(7200))?;
    assert_eq!(store.cleanup(100)?, 1);
    assert!(!stale.exists() && fresh.exists());
    assert!(count_path.exists(), "cleanup removed cachelib's count file");
    Ok(())
}
