//! Sharing sessions with a live Flask app (feature `flask`).
//!
//! A team moving from Flask to Rust one service at a time needs both to read and
//! write the same sessions, so that a user logged in on a Flask page stays logged in
//! on a Rust page and back. This module holds the formats that takes:
//!
//! - [`pickle`]: the safe subset of Python's pickle that Flask-Session's
//!   filesystem/cachelib backend stores (a session dict of plain data), decoded
//!   without importing or calling anything, and encoded so `pickle.loads` reads it
//!   back equal.
//! - [`msgpack`]: what Flask-Session 0.8 stores on Redis, Memcached, SQL and MongoDB.
//! - [`FlaskCookie`]: Flask's default client-side session, a signed cookie, verified
//!   (and, if asked, issued) with the app's `SECRET_KEY`.
//! - [`CachelibStore`](crate::store::CachelibStore): a [`Store`](crate::Store) on a
//!   Flask-Session cachelib directory, in place.
//! - [`SessionConfig::flask_session`](crate::session::SessionConfig::flask_session):
//!   [`Sessions`](crate::session::Sessions) with Flask-Session's cookie, signer, key
//!   prefix and record format, on the cachelib directory or on Redis.
//!
//! Values are `serde_json::Value`s, Python types beyond JSON in Flask's own tagged
//! form ([`PyValue`] says how): a `str` is a string, a `tuple` is `{" t": [...]}`,
//! `bytes` are `{" b": "<base64>"}`, a `datetime` is `{" d": "<RFC 3339>"}`.
//!
//! ```
//! use fscache::flask::{pickle, PyValue};
//!
//! // What cachelib stores after its 4-byte expiry: pickle.dumps({'user': 'ann'}, 5).
//! let stored = b"\x80\x05\x95\x11\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x04user\x94\x8c\x03ann\x94s.";
//! let session = pickle::decode(stored).unwrap();
//! assert_eq!(session.to_json().unwrap(), serde_json::json!({"user": "ann"}));
//!
//! // Anything that would import or call code is refused, never run.
//! let evil = b"\x80\x04\x8c\x05posix\x94\x8c\x06system\x94\x93\x8c\x02id\x85R.";
//! assert!(pickle::decode(evil).is_err());
//! ```

mod cookie;
pub mod msgpack;
pub mod pickle;
pub(crate) mod signer;
mod value;

use serde_json::{Map, Value};

pub use cookie::{CookieError, FlaskCookie, FlaskCookieSession};

/// A session's keys and values, as [`FlaskCookie`] reads and issues them (values in
/// the tagged form [`PyValue`] describes).
pub type SessionMap = Map<String, Value>;
pub use value::{DateTime, MAX_DEPTH, PyValue};

/// A byte string that is not a value these formats read: what and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    what: String,
    offset: Option<usize>,
}

impl DecodeError {
    pub(crate) fn new(what: impl Into<String>) -> DecodeError {
        DecodeError {
            what: what.into(),
            offset: None,
        }
    }

    pub(crate) fn at(what: impl Into<String>, offset: usize) -> DecodeError {
        DecodeError {
            what: what.into(),
            offset: Some(offset),
        }
    }

    /// The byte offset in the input where decoding stopped, if known.
    pub fn offset(&self) -> Option<usize> {
        self.offset
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.offset {
            Some(at) => write!(f, "{} (at byte {at})", self.what),
            None => f.write_str(&self.what),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A position in an input, with bounds-checked reads (the decoders' one way in).
pub(crate) struct Input<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Input<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Input<'a> {
        Input { data, pos: 0 }
    }

    /// The next `n` bytes, or an error if the input has fewer.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| DecodeError::at(format!("{n} bytes announced, fewer left"), self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// An unsigned integer of `n` bytes, little-endian (pickle) or big-endian (msgpack).
    pub(crate) fn uint(&mut self, n: usize, little_endian: bool) -> Result<u64, DecodeError> {
        let b = self.take(n)?;
        let fold = |acc: u64, &x: &u8| acc << 8 | u64::from(x);
        Ok(if little_endian {
            b.iter().rev().fold(0, fold)
        } else {
            b.iter().fold(0, fold)
        })
    }

    /// A length of `n` bytes: it must fit in memory (the bytes it announces are
    /// checked when they are taken).
    pub(crate) fn len(&mut self, n: usize, little_endian: bool) -> Result<usize, DecodeError> {
        let v = self.uint(n, little_endian)?;
        usize::try_from(v).map_err(|_| DecodeError::at("a length beyond memory", self.pos))
    }

    /// Bytes left.
    pub(crate) fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
}

/// How Flask-Session serializes a session dict in its store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FlaskFormat {
    /// A pickle: the filesystem and cachelib backends (cachelib pickles the dict).
    Pickle,
    /// MessagePack: Flask-Session 0.8's Redis, Memcached, SQL and MongoDB backends
    /// (`SESSION_SERIALIZATION_FORMAT = "msgpack"`, the default). Reading also
    /// accepts JSON and pickle, as Flask-Session does.
    Msgpack,
}

/// A stored session dict as its map of tagged-JSON values.
pub(crate) fn decode_session(format: FlaskFormat, bytes: &[u8]) -> Result<Map<String, Value>, DecodeError> {
    match format {
        FlaskFormat::Pickle => value::dict_to_map(&pickle::decode(bytes)?),
        // Flask-Session's decoder: msgpack, then JSON, then pickle.
        FlaskFormat::Msgpack => match msgpack::decode(bytes) {
            Ok(v) => value::dict_to_map(&v),
            Err(first) => {
                if let Ok(json) = serde_json::from_slice::<Value>(bytes) {
                    return value::dict_to_map(&plain_json(&json, 0)?);
                }
                match pickle::decode(bytes) {
                    Ok(v) => value::dict_to_map(&v),
                    Err(_) => Err(first),
                }
            }
        },
    }
}

/// A session's keys and tagged-JSON values in Flask-Session's format.
pub(crate) fn encode_session<'a>(
    format: FlaskFormat,
    pairs: impl IntoIterator<Item = (&'a String, &'a Value)>,
) -> Result<Vec<u8>, DecodeError> {
    let dict = value::map_to_dict(pairs)?;
    match format {
        FlaskFormat::Pickle => pickle::encode(&dict),
        FlaskFormat::Msgpack => msgpack::encode(&dict),
    }
}

/// JSON as `msgspec.json.decode` reads it: plain dicts and lists, no tags.
fn plain_json(v: &Value, depth: usize) -> Result<PyValue, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::new(format!("nested more than {MAX_DEPTH} levels deep")));
    }
    Ok(match v {
        Value::Array(items) => PyValue::List(
            items
                .iter()
                .map(|v| plain_json(v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => PyValue::Dict(
            m.iter()
                .map(|(k, v)| Ok((PyValue::Str(k.clone()), plain_json(v, depth + 1)?)))
                .collect::<Result<_, DecodeError>>()?,
        ),
        other => PyValue::from_json(other)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn session_maps_round_trip_in_both_formats() {
        let map = json!({
            "_permanent": true,
            "user": "ann",
            "cart": {"apple": 2},
            "seen": {" t": [1, "a"]},
            "raw": {" b": "AAE="},
            "at": {" d": "2026-12-04T06:41:47.123456Z"},
            "odd": {" di": {" t__": 5}},
        });
        let Value::Object(map) = map else { unreachable!() };
        for format in [FlaskFormat::Pickle, FlaskFormat::Msgpack] {
            let bytes = encode_session(format, &map).unwrap();
            let mut back = decode_session(format, &bytes).unwrap();
            if format == FlaskFormat::Msgpack {
                // msgpack has no tuple: a tuple comes back a list, as in Flask-Session.
                assert_eq!(back["seen"], json!([1, "a"]));
                back.insert("seen".into(), json!({" t": [1, "a"]}));
            }
            assert_eq!(back, map, "{format:?}");
        }
        // Flask-Session's JSON fallback.
        let plain = decode_session(FlaskFormat::Msgpack, br#"{"user":"ann","odd":{" t":1}}"#).unwrap();
        assert_eq!(Value::Object(plain), json!({"user": "ann", "odd": {" di": {" t__": 1}}}));
        assert!(decode_session(FlaskFormat::Pickle, b"\x80\x05N.").is_err(), "not a dict");
    }
}
