//! The Flask decoders on arbitrary bytes: the pickle subset, msgpack and Flask's
//! signed cookie. Never a panic, never unbounded work; what decodes re-encodes to
//! bytes that decode to the same value (compared by their encoding, so NaN is fine).
#![no_main]

use fscache::flask::{FlaskCookie, msgpack, pickle};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = pickle::decode(data) {
        let once = pickle::encode(&v).expect("a decoded value encodes");
        let again = pickle::decode(&once).expect("an encoded value decodes");
        assert_eq!(pickle::encode(&again).unwrap(), once);
        let _ = v.to_json();
    }
    if let Ok(v) = msgpack::decode(data) {
        if let Ok(once) = msgpack::encode(&v) {
            let again = msgpack::decode(&once).expect("an encoded value decodes");
            assert_eq!(msgpack::encode(&again).unwrap(), once);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        // Never accepted (the key is not the fuzzer's), never a panic.
        assert!(FlaskCookie::new("fuzz key").decode(text).is_err());
    }
});
