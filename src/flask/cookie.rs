//! Flask's default session: the whole session in a signed cookie
//! (`SecureCookieSessionInterface`), read and, if asked, issued from Rust.
//!
//! The cookie is itsdangerous's `URLSafeTimedSerializer` with salt `cookie-session`:
//! `payload.timestamp.signature`, where the payload is Flask's tagged JSON in
//! URL-safe base64 (zlib-compressed, and then prefixed with `.`, when that is
//! shorter), the timestamp the issuing time in seconds, and the signature
//! HMAC-SHA1 under a key derived from the app's `SECRET_KEY`.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::signer::{self, Key};
use super::value::{DateTime, MAX_DEPTH};
use crate::clock::{Clock, SystemClock};

/// Flask's salt for its session cookie.
const SALT: &[u8] = b"cookie-session";
/// The most bytes a cookie's payload may decompress to (browsers cap a cookie at
/// about 4 KiB, so a real session is far smaller).
const MAX_PAYLOAD: usize = 256 * 1024;

/// Why a Flask session cookie was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CookieError {
    /// Not of the form `payload.timestamp.signature`.
    Malformed,
    /// The signature does not match any of the keys: tampered with, or signed with
    /// another `SECRET_KEY`.
    BadSignature,
    /// Correctly signed, but issued more than `max_age` seconds ago (Flask's
    /// `PERMANENT_SESSION_LIFETIME`).
    Expired {
        /// Seconds since it was issued.
        age_secs: u64,
        /// The oldest age accepted.
        max_age_secs: u64,
    },
    /// Correctly signed, with an issuing time in the future (clocks disagree).
    IssuedInFuture {
        /// How far ahead, in seconds.
        by_secs: u64,
    },
    /// Correctly signed, but the payload is not a session (bad base64, zlib or
    /// JSON, or not an object); the text says which.
    BadPayload(String),
}

impl std::fmt::Display for CookieError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CookieError::Malformed => f.write_str("not a Flask session cookie (payload.timestamp.signature)"),
            CookieError::BadSignature => f.write_str(
                "the Flask session cookie's signature does not match: tampered with, or signed \
                 with another SECRET_KEY",
            ),
            CookieError::Expired { age_secs, max_age_secs } => write!(
                f,
                "the Flask session cookie was issued {age_secs} s ago, more than the \
                 {max_age_secs} s allowed (PERMANENT_SESSION_LIFETIME)"
            ),
            CookieError::IssuedInFuture { by_secs } => write!(
                f,
                "the Flask session cookie was issued {by_secs} s in the future: check the clocks"
            ),
            CookieError::BadPayload(why) => write!(f, "the Flask session cookie's payload {why}"),
        }
    }
}

impl std::error::Error for CookieError {}

/// A session read from a Flask session cookie.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FlaskCookieSession {
    /// The session's keys and values, in fscache's tagged-JSON form (see
    /// [`fscache::flask`](crate::flask)).
    pub data: super::SessionMap,
    /// When the cookie was signed, in Unix seconds.
    pub issued_at: u64,
}

impl FlaskCookieSession {
    /// The value under `key`, deserialized; `None` if absent or of another shape.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.data.get(key).and_then(|v| T::deserialize(v).ok())
    }

    /// Whether Flask marked the session permanent (`session.permanent`).
    pub fn is_permanent(&self) -> bool {
        self.data.get("_permanent").and_then(Value::as_bool) == Some(true)
    }
}

/// Reads (and issues) Flask's signed session cookies with the app's `SECRET_KEY`.
///
/// ```
/// use fscache::flask::{CookieError, FlaskCookie};
///
/// let flask = FlaskCookie::new("the Flask app's SECRET_KEY");
/// let mut data = serde_json::Map::new();
/// data.insert("user".into(), "ann".into());
/// let cookie = flask.encode(&data).unwrap(); // what Flask itself would set
/// let session = flask.decode(&cookie).unwrap();
/// assert_eq!(session.get::<String>("user").as_deref(), Some("ann"));
///
/// let forged = FlaskCookie::new("another key").encode(&data).unwrap();
/// assert_eq!(flask.decode(&forged), Err(CookieError::BadSignature));
/// ```
#[derive(Clone, Debug)]
pub struct FlaskCookie {
    /// The current key first (it signs), then the fallbacks.
    keys: Vec<Key>,
    max_age: Duration,
    clock: Arc<dyn Clock>,
}

impl FlaskCookie {
    /// Cookies of the app whose `SECRET_KEY` is `secret_key`, accepted for 31 days
    /// (Flask's default `PERMANENT_SESSION_LIFETIME`).
    pub fn new(secret_key: impl AsRef<[u8]>) -> FlaskCookie {
        FlaskCookie {
            keys: vec![Key::derive(secret_key.as_ref(), SALT)],
            max_age: Duration::from_secs(31 * 86_400),
            clock: Arc::new(SystemClock),
        }
    }

    /// Older keys that still verify (Flask's `SECRET_KEY_FALLBACKS`); new cookies
    /// are signed with the current key.
    #[must_use]
    pub fn fallback_keys<I, K>(mut self, keys: I) -> FlaskCookie
    where
        I: IntoIterator<Item = K>,
        K: AsRef<[u8]>,
    {
        self.keys
            .extend(keys.into_iter().map(|k| Key::derive(k.as_ref(), SALT)));
        self
    }

    /// The oldest cookie accepted: the app's `PERMANENT_SESSION_LIFETIME`
    /// (Flask checks it for every session cookie). Default: 31 days.
    #[must_use]
    pub fn max_age(mut self, max_age: Duration) -> FlaskCookie {
        self.max_age = max_age;
        self
    }

    /// The clock for the age check. Default: the system clock.
    #[must_use]
    pub fn clock(mut self, clock: impl Clock + 'static) -> FlaskCookie {
        self.clock = Arc::new(clock);
        self
    }

    /// Verifies and decodes a cookie value (the part after `session=`).
    ///
    /// # Errors
    /// [`CookieError`] says why it is refused: malformed, bad signature (tampered
    /// or another key), expired, issued in the future, or a payload that is not a
    /// session.
    pub fn decode(&self, cookie: &str) -> Result<FlaskCookieSession, CookieError> {
        if cookie.len() > MAX_PAYLOAD {
            return Err(CookieError::Malformed);
        }
        let signed_part = signer::verify(cookie, &self.keys).ok_or_else(|| {
            if cookie.matches('.').count() < 2 {
                CookieError::Malformed
            } else {
                CookieError::BadSignature
            }
        })?;
        let (payload, ts) = signed_part.rsplit_once('.').ok_or(CookieError::Malformed)?;
        let ts = signer::b64_decode(ts)
            .filter(|b| !b.is_empty() && b.len() <= 8)
            .ok_or(CookieError::Malformed)?;
        let issued_at = ts.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b));
        let now = self.clock.now_ms() / 1000;
        let max_age_secs = self.max_age.as_secs();
        if issued_at > now {
            return Err(CookieError::IssuedInFuture { by_secs: issued_at - now });
        }
        let age_secs = now - issued_at;
        if age_secs > max_age_secs {
            return Err(CookieError::Expired { age_secs, max_age_secs });
        }
        let bad = |why: &str| CookieError::BadPayload(why.to_owned());
        let (compressed, b64) = match payload.strip_prefix('.') {
            Some(rest) => (true, rest),
            None => (false, payload),
        };
        let mut json = signer::b64_decode(b64).ok_or_else(|| bad("is not base64"))?;
        if compressed {
            json = miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(&json, MAX_PAYLOAD)
                .map_err(|_| bad("is not zlib data (or inflates beyond 256 KiB)"))?;
        }
        let value: Value = serde_json::from_slice(&json).map_err(|_| bad("is not JSON"))?;
        let Value::Object(mut data) = value else {
            return Err(bad("is not a JSON object"));
        };
        for v in data.values_mut() {
            convert_dates(v, 0, &|s| DateTime::parse_http_date(s).map(|d| d.to_rfc3339()))
                .map_err(CookieError::BadPayload)?;
        }
        Ok(FlaskCookieSession { data, issued_at })
    }

    /// A cookie value Flask accepts as its session, signed now with the current key.
    /// A datetime is sent as Flask sends it: an HTTP date, without microseconds.
    ///
    /// # Errors
    /// [`CookieError::BadPayload`] for a `" d"` value that is not a date, or nesting
    /// deeper than 128 levels.
    pub fn encode(&self, data: &super::SessionMap) -> Result<String, CookieError> {
        let mut tagged = Value::Object(data.clone());
        convert_dates(&mut tagged, 0, &|s| {
            DateTime::parse_rfc3339(s).map(|d| d.to_http_date())
        })
        .map_err(CookieError::BadPayload)?;
        let json = serde_json::to_vec(&tagged).map_err(|e| CookieError::BadPayload(e.to_string()))?;
        let compressed = miniz_oxide::deflate::compress_to_vec_zlib(&json, 6);
        let payload = if compressed.len() < json.len().saturating_sub(1) {
            format!(".{}", signer::b64_encode(&compressed))
        } else {
            signer::b64_encode(&json)
        };
        let now = self.clock.now_ms() / 1000;
        let bytes = now.to_be_bytes();
        let first = bytes.iter().position(|&b| b != 0).unwrap_or(7);
        let value = format!("{payload}.{}", signer::b64_encode(&bytes[first..]));
        Ok(self.keys[0].sign(&value))
    }
}

/// Rewrites the payload of every `{" d": …}` with `f` (HTTP date ↔ RFC 3339).
fn convert_dates(v: &mut Value, depth: usize, f: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("is nested more than {MAX_DEPTH} levels deep"));
    }
    match v {
        Value::Array(items) => {
            for i in items {
                convert_dates(i, depth + 1, f)?;
            }
        }
        Value::Object(m) => {
            if m.len() == 1
                && let Some(Value::String(s)) = m.get_mut(" d")
            {
                *s = f(s).ok_or_else(|| format!("holds the date {s:?}, which does not parse"))?;
                return Ok(());
            }
            for i in m.values_mut() {
                convert_dates(i, depth + 1, f)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    /// Made by Flask 3.1.3: `app.secret_key = 's3cret'`,
    /// `get_signing_serializer(app).dumps({'user': 'ann', '_permanent': True})` at
    /// Unix time 1796367712.
    const FLASK: &str = "eyJ1c2VyIjoiYW5uIiwiX3Blcm1hbmVudCI6dHJ1ZX0.axJlYA.KB7bRBPTVpw2N8iTcDZg_mAA_oU";
    /// The same with `{'user': 'ann', 't': (1, 2), 'b': b'x', 'big': 'y' * 200}`
    /// (compressed).
    const FLASK_ZLIB: &str = ".eJyrViotTi1SslJKzMtT0lEqUbKqVlIAktGGOkaxtTpKSWABIKmU6mhrqwQSyUwH8iqHCVCqBQCA7W42.axJlYA.bmvjyAgLbFgfZDxymLIhZgiJa9o";
    const ISSUED: u64 = 1_796_367_712;

    fn at(secs: u64) -> FlaskCookie {
        FlaskCookie::new("s3cret").clock(ManualClock::at(secs * 1000))
    }

    #[test]
    fn reads_flask_cookies() {
        let s = at(ISSUED + 10).decode(FLASK).unwrap();
        assert_eq!(s.get::<String>("user").as_deref(), Some("ann"));
        assert!(s.is_permanent());
        assert_eq!(s.issued_at, ISSUED);
        let z = at(ISSUED).decode(FLASK_ZLIB).unwrap();
        assert_eq!(z.data["t"], serde_json::json!({" t": [1, 2]}));
        assert_eq!(z.data["b"], serde_json::json!({" b": "eA=="}));
        assert_eq!(z.get::<String>("big").unwrap().len(), 200);
    }

    #[test]
    fn refuses_with_a_reason() {
        let c = at(ISSUED + 10);
        assert_eq!(FlaskCookie::new("other").clock(ManualClock::at(ISSUED * 1000)).decode(FLASK), Err(CookieError::BadSignature));
        let mut tampered = FLASK.to_owned();
        tampered.replace_range(2..3, "Z");
        assert_eq!(c.decode(&tampered), Err(CookieError::BadSignature));
        assert_eq!(c.decode("garbage"), Err(CookieError::Malformed));
        assert_eq!(
            at(ISSUED + 31 * 86_400 + 1).decode(FLASK),
            Err(CookieError::Expired { age_secs: 31 * 86_400 + 1, max_age_secs: 31 * 86_400 })
        );
        assert_eq!(at(ISSUED - 5).decode(FLASK), Err(CookieError::IssuedInFuture { by_secs: 5 }));
        // Rotation: the old key still verifies as a fallback.
        let rotated = FlaskCookie::new("new").fallback_keys(["s3cret"]).clock(ManualClock::at(ISSUED * 1000));
        assert!(rotated.decode(FLASK).is_ok());
    }

    #[test]
    fn a_correctly_signed_zlib_bomb_is_refused() {
        // 300 KiB of one byte compresses to about 300 bytes: a cookie a browser would
        // carry, whose payload inflates past the 256 KiB limit.
        let c = at(ISSUED);
        let mut data = crate::flask::SessionMap::new();
        data.insert("z".into(), "z".repeat(300 * 1024).into());
        let cookie = c.encode(&data).unwrap();
        assert!(cookie.len() < 4096, "{}", cookie.len());
        match c.decode(&cookie) {
            Err(CookieError::BadPayload(why)) => assert!(why.contains("256 KiB"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn issues_cookies_it_reads_back() {
        let c = at(ISSUED);
        let mut data = crate::flask::SessionMap::new();
        data.insert("user".into(), "ann".into());
        data.insert("when".into(), serde_json::json!({" d": "2026-12-04T06:41:47.5Z"}));
        data.insert("long".into(), "z".repeat(500).into());
        let cookie = c.encode(&data).unwrap();
        assert!(cookie.starts_with('.'), "compressible payloads are compressed: {cookie}");
        let back = c.decode(&cookie).unwrap();
        // Flask sends datetimes as HTTP dates: whole seconds.
        assert_eq!(back.data["when"], serde_json::json!({" d": "2026-12-04T06:41:47Z"}));
        assert_eq!(back.data["user"], "ann");
    }
}
