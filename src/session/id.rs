//! Session ids and their optional signature.
//!
//! An id is 32 bytes (256 bits) from the OS CSPRNG, URL-safe base64 without padding:
//! 43 characters of `[A-Za-z0-9_-]`. A signed cookie value is `id.signature`, the
//! signature being the hex of blake3's keyed hash of the id under a key derived from
//! the secret; verification compares `blake3::Hash` values, which is constant-time.

use crate::error::{Error, Result};

/// Bytes of randomness in an id.
pub const ID_BYTES: usize = 32;
/// Characters in an encoded id.
pub const ID_LEN: usize = 43;
const SIG_LEN: usize = 64;
const SIGNING_CONTEXT: &str = "fscache 2026-11 session cookie signature v1";

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A fresh session id from the OS CSPRNG.
pub(crate) fn generate() -> Result<String> {
    let mut bytes = [0u8; ID_BYTES];
    fill(&mut bytes, "read OS randomness for a session id")?;
    Ok(encode(&bytes))
}

/// `bytes` from the OS CSPRNG; `op` names the read in an error.
fn fill(bytes: &mut [u8], op: &'static str) -> Result<()> {
    getrandom::fill(bytes)
        .map_err(|e| Error::io(op, "getrandom", std::io::Error::other(e.to_string())))
}

/// A save id (see `Record::saves`): unique within the process (a forked child
/// draws a new sequence) and 64 bits from a randomly seeded one, so two saves of one
/// session never share one in practice. No syscall: it is drawn on every save that
/// replays an update, and an OS randomness read there cost a request one.
pub(crate) fn save_id() -> u64 {
    crate::disk::layout::next_write_id()
}

fn encode(bytes: &[u8; ID_BYTES]) -> String {
    let mut out = String::with_capacity(ID_LEN);
    let mut chunks = bytes.chunks_exact(3);
    for c in &mut chunks {
        let n = (c[0] as u32) << 16 | (c[1] as u32) << 8 | c[2] as u32;
        for shift in [18, 12, 6, 0] {
            out.push(B64[(n >> shift & 63) as usize] as char);
        }
    }
    // 32 = 10 × 3 + 2: two bytes left, three characters.
    let rest = chunks.remainder();
    let n = (rest[0] as u32) << 16 | (rest[1] as u32) << 8;
    for shift in [18, 12, 6] {
        out.push(B64[(n >> shift & 63) as usize] as char);
    }
    out
}

/// Whether `s` has the shape of an id (checked before any disk access).
pub(crate) fn is_well_formed(s: &str) -> bool {
    s.len() == ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `s` can be a Flask-Session id: `secrets.token_urlsafe(n)` for the
/// `SESSION_ID_LENGTH` a Flask app may set (12 to 192 bytes: 16 to 256 characters).
#[cfg(feature = "flask")]
pub(crate) fn is_flask_id(s: &str) -> bool {
    (16..=256).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A signing key derived from a secret.
#[derive(Clone)]
pub(crate) struct SigningKey([u8; 32]);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    pub(crate) fn derive(secret: &[u8]) -> SigningKey {
        SigningKey(blake3::derive_key(SIGNING_CONTEXT, secret))
    }

    fn mac(&self, id: &str) -> blake3::Hash {
        blake3::keyed_hash(&self.0, id.as_bytes())
    }

    /// `id.signature`.
    pub(crate) fn sign(&self, id: &str) -> String {
        format!("{id}.{}", self.mac(id).to_hex())
    }
}

/// The id in a cookie value, if it is well formed and (with keys) correctly signed by
/// one of `keys`.
pub(crate) fn verify<'a>(value: &'a str, keys: &[SigningKey]) -> Option<&'a str> {
    if keys.is_empty() {
        return is_well_formed(value).then_some(value);
    }
    let (id, sig) = value.split_once('.')?;
    // Only the spelling signing produces (lower-case hex): one cookie value per id.
    if !is_well_formed(id)
        || sig.len() != SIG_LEN
        || !sig.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let sig = blake3::Hash::from_hex(sig).ok()?;
    // blake3::Hash's PartialEq is constant-time. Every key is tried, so timing does
    // not reveal which one matched either.
    let mut ok = false;
    for key in keys {
        ok |= key.mac(id) == sig;
    }
    ok.then_some(id)
}

/// The store key of a session id: a hash, so the directory never shows a live id.
pub(crate) fn store_key(prefix: &str, id: &str) -> String {
    crate::store::hashed_key(prefix, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_has_one_spelling() {
        let keys = [SigningKey::derive(b"k")];
        let id = generate().unwrap();
        let signed = keys[0].sign(&id);
        assert_eq!(verify(&signed, &keys), Some(id.as_str()));
        let (head, sig) = signed.split_once('.').unwrap();
        let upper = format!("{head}.{}", sig.to_ascii_uppercase());
        assert_ne!(upper, signed, "the signature has hex letters to change");
        assert_eq!(verify(&upper, &keys), None, "upper-case hex is refused");
        let mixed: String = sig
            .chars()
            .enumerate()
            .map(|(i, c)| if i == 0 { c.to_ascii_uppercase() } else { c })
            .collect();
        if mixed != sig {
            assert_eq!(verify(&format!("{head}.{mixed}"), &keys), None);
        }
    }

    #[test]
    fn ids_are_43_url_safe_chars_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = generate().unwrap();
            assert!(is_well_formed(&id), "{id}");
            assert!(seen.insert(id));
        }
    }

    #[test]
    fn encoding_matches_rfc4648_url_alphabet() {
        let mut bytes = [0u8; 32];
        bytes[0] = 0xfb;
        bytes[1] = 0xff;
        bytes[31] = 0x01;
        let s = encode(&bytes);
        assert_eq!(s.len(), 43);
        assert!(s.starts_with("-_8"), "{s}");
        assert!(s.ends_with("AAE"), "{s}");
    }

    #[test]
    fn signatures_verify_with_any_key_and_reject_tampering() {
        let old = SigningKey::derive(b"old secret");
        let new = SigningKey::derive(b"new secret");
        let id = generate().unwrap();
        let by_old = old.sign(&id);
        assert_eq!(
            verify(&by_old, &[new.clone(), old.clone()]),
            Some(id.as_str())
        );
        assert_eq!(verify(&by_old, std::slice::from_ref(&new)), None);
        let mut tampered = by_old.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            verify(
                std::str::from_utf8(&tampered).unwrap(),
                std::slice::from_ref(&old)
            ),
            None
        );
        let other = generate().unwrap();
        let forged = format!("{other}.{}", &by_old[ID_LEN + 1..]);
        assert_eq!(verify(&forged, std::slice::from_ref(&old)), None);
        assert_eq!(verify(&id, &[old]), None, "unsigned value with keys set");
        assert_eq!(verify(&id, &[]), Some(id.as_str()));
        assert_eq!(verify("short", &[]), None);
        assert_eq!(verify(&format!("{}!", &id[..42]), &[]), None);
    }

    #[test]
    fn store_key_hides_the_id() {
        let id = generate().unwrap();
        let key = store_key("session:", &id);
        assert!(key.starts_with("session:"));
        assert!(!key.contains(&id));
    }
}
