//! `Sessions::load` on arbitrary Cookie headers, unsigned and signed: never an error
//! or a panic, and never anything but a fresh session (no session exists but the one
//! seeded here, whose cookie the fuzzer may find in the seed corpus).
#![no_main]

use std::sync::OnceLock;

use fscache::FileSystemCache;
use fscache::session::{SessionConfig, Sessions};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    _dir: tempfile::TempDir,
    unsigned: Sessions,
    signed: Sessions,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileSystemCache::builder(dir.path())
            .threshold(0)
            .open()
            .unwrap();
        let unsigned = Sessions::new(cache.clone(), SessionConfig::default()).unwrap();
        let signed = Sessions::new(
            cache,
            SessionConfig::default()
                .cookie_name("sid")
                .signing_keys(["k1", "k0"]),
        )
        .unwrap();
        Fixture {
            _dir: dir,
            unsigned,
            signed,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    let f = fixture();
    for sessions in [&f.unsigned, &f.signed] {
        let session = sessions
            .load(Some(header))
            .expect("load never fails on input");
        assert!(
            session.is_new(),
            "no stored session can be named by fuzz input"
        );
        assert_eq!(session.id().len(), fscache::session::ID_LEN);
        assert!(
            !header.contains(session.id()),
            "a client-chosen id is never adopted"
        );
    }
});
