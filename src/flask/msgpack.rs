//! MessagePack as Flask-Session 0.8 writes it (through `msgspec`) for its Redis,
//! Memcached, SQL and MongoDB backends: a map of the session dict.
//!
//! Decoded: nil, booleans, integers of every width, floats, str, bin (as `bytes`),
//! arrays (as `list`; msgpack has no tuple), maps, and the timestamp extension
//! (type -1, as a UTC `datetime`). Any other extension is refused. Encoded the same
//! way; a naive `datetime` becomes an RFC 3339 string, as `msgspec` writes it. Every
//! length is checked against the input and nesting is capped at
//! [`MAX_DEPTH`].

use super::{DecodeError, Input};
use super::value::{DateTime, MAX_DEPTH, PyValue};

/// The most items an array or map header reserves room for before they are read.
const PREALLOC: usize = 16;

/// msgpack's integers and lengths are big-endian.
const BE: bool = false;

struct Reader<'a>(Input<'a>);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        self.0.take(n)
    }

    fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        self.0.uint(n, BE)
    }

    fn len(&mut self, n: usize) -> Result<usize, DecodeError> {
        self.0.len(n, BE)
    }

    fn value(&mut self, depth: usize) -> Result<PyValue, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::at(
                format!("nested more than {MAX_DEPTH} levels deep"),
                self.0.pos,
            ));
        }
        let m = self.take(1)?[0];
        Ok(match m {
            0x00..=0x7f => PyValue::Int(m.into()),
            0xe0..=0xff => PyValue::Int(i128::from(m as i8)),
            0x80..=0x8f => self.map(usize::from(m & 0x0f), depth)?,
            0x90..=0x9f => self.array(usize::from(m & 0x0f), depth)?,
            0xa0..=0xbf => self.str(usize::from(m & 0x1f))?,
            0xc0 => PyValue::None,
            0xc2 => PyValue::Bool(false),
            0xc3 => PyValue::Bool(true),
            0xc4 => {
                let n = self.len(1)?;
                PyValue::Bytes(self.take(n)?.to_vec())
            }
            0xc5 => {
                let n = self.len(2)?;
                PyValue::Bytes(self.take(n)?.to_vec())
            }
            0xc6 => {
                let n = self.len(4)?;
                PyValue::Bytes(self.take(n)?.to_vec())
            }
            0xc7 => {
                let n = self.len(1)?;
                self.ext(n)?
            }
            0xc8 => {
                let n = self.len(2)?;
                self.ext(n)?
            }
            0xc9 => {
                let n = self.len(4)?;
                self.ext(n)?
            }
            0xca => {
                let b = self.be(4)? as u32;
                PyValue::Float(f64::from(f32::from_bits(b)))
            }
            0xcb => PyValue::Float(f64::from_bits(self.be(8)?)),
            0xcc => PyValue::Int(self.be(1)?.into()),
            0xcd => PyValue::Int(self.be(2)?.into()),
            0xce => PyValue::Int(self.be(4)?.into()),
            0xcf => PyValue::Int(self.be(8)?.into()),
            0xd0 => PyValue::Int((self.be(1)? as u8 as i8).into()),
            0xd1 => PyValue::Int((self.be(2)? as u16 as i16).into()),
            0xd2 => PyValue::Int((self.be(4)? as u32 as i32).into()),
            0xd3 => PyValue::Int((self.be(8)? as i64).into()),
            0xd4 => self.ext(1)?,
            0xd5 => self.ext(2)?,
            0xd6 => self.ext(4)?,
            0xd7 => self.ext(8)?,
            0xd8 => self.ext(16)?,
            0xd9 => {
                let n = self.len(1)?;
                self.str(n)?
            }
            0xda => {
                let n = self.len(2)?;
                self.str(n)?
            }
            0xdb => {
                let n = self.len(4)?;
                self.str(n)?
            }
            0xdc => {
                let n = self.len(2)?;
                self.array(n, depth)?
            }
            0xdd => {
                let n = self.len(4)?;
                self.array(n, depth)?
            }
            0xde => {
                let n = self.len(2)?;
                self.map(n, depth)?
            }
            0xdf => {
                let n = self.len(4)?;
                self.map(n, depth)?
            }
            0xc1 => return Err(DecodeError::at("the reserved byte 0xc1", self.0.pos - 1)),
        })
    }

    fn str(&mut self, n: usize) -> Result<PyValue, DecodeError> {
        let at = self.0.pos;
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map(|s| PyValue::Str(s.to_owned()))
            .map_err(|_| DecodeError::at("a str is not valid UTF-8", at))
    }

    fn array(&mut self, n: usize, depth: usize) -> Result<PyValue, DecodeError> {
        // A header's count is untrusted: reserve only a little up front (nested
        // headers would each reserve the whole remaining input otherwise); every
        // element read takes at least one input byte, so growth stays bounded.
        let mut items = Vec::with_capacity(n.min(self.0.remaining()).min(PREALLOC));
        for _ in 0..n {
            items.push(self.value(depth + 1)?);
        }
        Ok(PyValue::List(items))
    }

    fn map(&mut self, n: usize, depth: usize) -> Result<PyValue, DecodeError> {
        let mut pairs = Vec::with_capacity(n.min(self.0.remaining() / 2).min(PREALLOC));
        for _ in 0..n {
            let k = self.value(depth + 1)?;
            let v = self.value(depth + 1)?;
            pairs.push((k, v));
        }
        Ok(PyValue::Dict(pairs))
    }

    fn ext(&mut self, n: usize) -> Result<PyValue, DecodeError> {
        let at = self.0.pos;
        let kind = self.take(1)?[0] as i8;
        let data = self.take(n)?;
        if kind != -1 {
            return Err(DecodeError::at(format!("msgpack extension type {kind} is not read"), at));
        }
        let (secs, nanos) = match data.len() {
            4 => (i64::from(u32::from_be_bytes(data.try_into().expect("4"))), 0),
            8 => {
                let v = u64::from_be_bytes(data.try_into().expect("8"));
                ((v & 0x3_ffff_ffff) as i64, (v >> 34) as u32)
            }
            12 => (
                i64::from_be_bytes(data[4..].try_into().expect("8")),
                u32::from_be_bytes(data[..4].try_into().expect("4")),
            ),
            _ => return Err(DecodeError::at("a timestamp of an unknown size", at)),
        };
        if nanos >= 1_000_000_000 {
            return Err(DecodeError::at("a timestamp with more than 1e9 nanoseconds", at));
        }
        DateTime::from_unix(secs, nanos / 1000)
            .map(PyValue::DateTime)
            .ok_or_else(|| DecodeError::at("a timestamp outside years 1-9999", at))
    }
}

/// Decodes one msgpack value (the whole input).
///
/// # Errors
/// [`DecodeError`] for damage, trailing bytes, or an extension other than
/// timestamps.
pub fn decode(data: &[u8]) -> Result<PyValue, DecodeError> {
    let mut r = Reader(Input::new(data));
    let v = r.value(0)?;
    if r.0.pos != data.len() {
        return Err(DecodeError::at("data after the value", r.0.pos));
    }
    Ok(v)
}

/// Encodes `value` as msgpack the way `msgspec.msgpack.encode` does.
///
/// # Errors
/// Nesting deeper than [`MAX_DEPTH`]; an `int` beyond 64 bits
/// (msgpack has none); a container of more than 2³² − 1 items.
pub fn encode(value: &PyValue) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    write(value, &mut out, 0)?;
    Ok(out)
}

fn head(out: &mut Vec<u8>, n: usize, fix: Option<(u8, usize)>, m8: Option<u8>, m16: u8, m32: u8) -> Result<(), DecodeError> {
    match (fix, m8) {
        (Some((base, max)), _) if n <= max => out.push(base | n as u8),
        (_, Some(m)) if n <= 0xff => out.extend_from_slice(&[m, n as u8]),
        _ if n <= 0xffff => {
            out.push(m16);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            let n = u32::try_from(n).map_err(|_| DecodeError::new("more than 2^32 - 1 items"))?;
            out.push(m32);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
    Ok(())
}

fn write(value: &PyValue, out: &mut Vec<u8>, depth: usize) -> Result<(), DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::new(format!("nested more than {MAX_DEPTH} levels deep")));
    }
    match value {
        PyValue::None => out.push(0xc0),
        PyValue::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        PyValue::Int(i) => {
            let i = *i;
            if (0..=0x7f).contains(&i) || (-32..0).contains(&i) {
                out.push(i as i8 as u8);
            } else if i >= 0 {
                if let Ok(v) = u8::try_from(i) {
                    out.extend_from_slice(&[0xcc, v]);
                } else if let Ok(v) = u16::try_from(i) {
                    out.push(0xcd);
                    out.extend_from_slice(&v.to_be_bytes());
                } else if let Ok(v) = u32::try_from(i) {
                    out.push(0xce);
                    out.extend_from_slice(&v.to_be_bytes());
                } else if let Ok(v) = u64::try_from(i) {
                    out.push(0xcf);
                    out.extend_from_slice(&v.to_be_bytes());
                } else {
                    return Err(DecodeError::new(format!("the integer {i} does not fit msgpack")));
                }
            } else if let Ok(v) = i8::try_from(i) {
                out.extend_from_slice(&[0xd0, v as u8]);
            } else if let Ok(v) = i16::try_from(i) {
                out.push(0xd1);
                out.extend_from_slice(&v.to_be_bytes());
            } else if let Ok(v) = i32::try_from(i) {
                out.push(0xd2);
                out.extend_from_slice(&v.to_be_bytes());
            } else if let Ok(v) = i64::try_from(i) {
                out.push(0xd3);
                out.extend_from_slice(&v.to_be_bytes());
            } else {
                return Err(DecodeError::new(format!("the integer {i} does not fit msgpack")));
            }
        }
        PyValue::Float(f) => {
            out.push(0xcb);
            out.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        PyValue::Str(s) => {
            head(out, s.len(), Some((0xa0, 31)), Some(0xd9), 0xda, 0xdb)?;
            out.extend_from_slice(s.as_bytes());
        }
        PyValue::Bytes(b) => {
            head(out, b.len(), None, Some(0xc4), 0xc5, 0xc6)?;
            out.extend_from_slice(b);
        }
        PyValue::List(items) | PyValue::Tuple(items) => {
            head(out, items.len(), Some((0x90, 15)), None, 0xdc, 0xdd)?;
            for v in items {
                write(v, out, depth + 1)?;
            }
        }
        PyValue::Dict(pairs) => {
            head(out, pairs.len(), Some((0x80, 15)), None, 0xde, 0xdf)?;
            for (k, v) in pairs {
                write(k, out, depth + 1)?;
                write(v, out, depth + 1)?;
            }
        }
        PyValue::DateTime(dt) if dt.utc => {
            let (secs, micros) = dt.unix();
            let nanos = u64::from(micros) * 1000;
            if (0..1 << 34).contains(&secs) {
                let v = nanos << 34 | secs as u64;
                if nanos == 0 && secs <= i64::from(u32::MAX) {
                    out.extend_from_slice(&[0xd6, 0xff]);
                    out.extend_from_slice(&(secs as u32).to_be_bytes());
                } else {
                    out.extend_from_slice(&[0xd7, 0xff]);
                    out.extend_from_slice(&v.to_be_bytes());
                }
            } else {
                out.extend_from_slice(&[0xc7, 12, 0xff]);
                out.extend_from_slice(&(nanos as u32).to_be_bytes());
                out.extend_from_slice(&secs.to_be_bytes());
            }
        }
        PyValue::DateTime(dt) => write(&PyValue::Str(dt.to_rfc3339()), out, depth)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> PyValue {
        PyValue::Str(v.into())
    }

    #[test]
    fn reads_what_msgspec_writes() {
        // msgspec.msgpack.encode({'d': datetime(2026, 12, 4, 6, 41, 47, 123456,
        // tzinfo=timezone.utc)}) and the naive one (a string).
        let utc = decode(b"\x81\xa1d\xd7\xff\x1do(\x00k\x12`\xab").unwrap();
        let PyValue::Dict(p) = &utc else { panic!() };
        let PyValue::DateTime(dt) = p[0].1 else { panic!("{utc:?}") };
        assert_eq!(dt.to_rfc3339(), "2026-12-04T06:41:47.123456Z");
        assert_eq!(encode(&utc).unwrap(), b"\x81\xa1d\xd7\xff\x1do(\x00k\x12`\xab");
        let naive = decode(b"\x81\xa1d\xba2026-12-04T06:41:47.123456").unwrap();
        assert_eq!(naive, PyValue::Dict(vec![(s("d"), s("2026-12-04T06:41:47.123456"))]));
    }

    #[test]
    fn values_round_trip_and_damage_is_refused() {
        let v = PyValue::Dict(vec![
            (s("_permanent"), PyValue::Bool(true)),
            (s("user"), s(&"x".repeat(300))),
            (s("ints"), PyValue::List([0i128, -1, -33, 127, 128, 70000, -70000, i64::MIN.into(), u64::MAX.into()].map(PyValue::Int).to_vec())),
            (s("f"), PyValue::Float(0.1)),
            (s("b"), PyValue::Bytes(vec![1; 300])),
            (s("none"), PyValue::None),
        ]);
        let b = encode(&v).unwrap();
        assert_eq!(decode(&b).unwrap(), v);
        assert!(decode(&b[..b.len() - 1]).is_err());
        assert!(decode(b"\xdd\xff\xff\xff\xff").is_err());
        assert!(decode(b"\xc1").is_err());
        assert!(decode(b"\xd4\x05\x00").is_err());
        assert!(decode(b"\xc0\xc0").is_err());
        let deep = [vec![0x91u8; 200], vec![0xc0]].concat();
        assert!(decode(&deep).is_err());
        assert!(encode(&PyValue::Int(1 << 70)).is_err());
    }
}
