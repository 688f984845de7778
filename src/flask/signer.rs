//! itsdangerous's `Signer` as Flask and Flask-Session configure it: HMAC-SHA1, the
//! key derived as HMAC-SHA1(secret, salt) (`key_derivation="hmac"`), signatures in
//! URL-safe base64 without padding, `.` as the separator.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};

type HmacSha1 = hmac::Hmac<sha1::Sha1>;

/// A key derived from a secret and a salt.
#[derive(Clone)]
pub(crate) struct Key([u8; 20]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

fn mac(key: &[u8]) -> HmacSha1 {
    HmacSha1::new_from_slice(key).expect("HMAC takes a key of any length")
}

impl Key {
    /// itsdangerous's `derive_key` with `key_derivation="hmac"`.
    pub(crate) fn derive(secret: &[u8], salt: &[u8]) -> Key {
        let mut m = mac(secret);
        m.update(salt);
        Key(m.finalize().into_bytes().into())
    }

    fn signature(&self, value: &[u8]) -> String {
        let mut m = mac(&self.0);
        m.update(value);
        URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
    }

    /// `value.signature`.
    pub(crate) fn sign(&self, value: &str) -> String {
        format!("{value}.{}", self.signature(value.as_bytes()))
    }

    /// Whether `sig` (URL-safe base64) is this key's signature of `value`; the
    /// comparison is constant-time.
    fn verifies(&self, value: &[u8], sig: &[u8]) -> bool {
        let mut m = mac(&self.0);
        m.update(value);
        m.verify_slice(sig).is_ok()
    }
}

/// The value of `signed` (`value.signature`) if one of `keys` signed it. Every key
/// is tried, so timing does not tell which one matched.
pub(crate) fn verify<'a>(signed: &'a str, keys: &[Key]) -> Option<&'a str> {
    let (value, sig) = signed.rsplit_once('.')?;
    let sig = b64_decode(sig)?;
    let mut ok = false;
    for key in keys {
        ok |= key.verifies(value.as_bytes(), &sig);
    }
    ok.then_some(value)
}

/// itsdangerous's `base64_decode`: URL-safe, padding optional.
pub(crate) fn b64_decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

/// itsdangerous's `base64_encode`: URL-safe, no padding.
pub(crate) fn b64_encode(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_itsdangerous() {
        // Signer("secret", salt="flask-session", key_derivation="hmac").sign("abc")
        // in itsdangerous 2.2.0.
        let key = Key::derive(b"secret", b"flask-session");
        assert_eq!(key.sign("abc"), "abc.UOOlglGtLOKQM3OFkrI8bWIohNg");
        assert_eq!(verify("abc.UOOlglGtLOKQM3OFkrI8bWIohNg", std::slice::from_ref(&key)), Some("abc"));
        assert_eq!(verify("abd.UOOlglGtLOKQM3OFkrI8bWIohNg", std::slice::from_ref(&key)), None);
        let other = Key::derive(b"other", b"flask-session");
        assert_eq!(verify("abc.UOOlglGtLOKQM3OFkrI8bWIohNg", std::slice::from_ref(&other)), None);
        assert_eq!(verify("abc.UOOlglGtLOKQM3OFkrI8bWIohNg", &[other, key]), Some("abc"));
        assert_eq!(verify("abc", &[Key::derive(b"secret", b"flask-session")]), None);
    }
}
