//! Python values and their tagged-JSON form (documented on [`PyValue`]).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Number, Value};

use super::DecodeError;

/// Containers nested deeper than this are refused (by every decoder and encoder).
pub const MAX_DEPTH: usize = 128;

/// The tags of Flask's tagged JSON.
const TAGS: [&str; 6] = [" t", " b", " d", " u", " m", " di"];

/// A Python value of the kinds a session dict holds, and its one representation in
/// Rust: a `serde_json::Value` in Flask's own tagged-JSON convention.
///
///
/// | Python | `serde_json::Value` |
/// |---|---|
/// | `None`, `bool`, `str` | `null`, boolean, string |
/// | `int` (within `i64`/`u64`) | number |
/// | `float` (finite) | number |
/// | `list` | array |
/// | `dict` with `str` keys | object (a dict whose single key is a tag is wrapped as `{" di": {"<key>__": …}}`, as Flask does) |
/// | `tuple` | `{" t": [...]}` |
/// | `bytes` | `{" b": "<standard base64>"}` |
/// | `datetime.datetime` | `{" d": "2026-12-04T06:41:47.123456"}` (naive) or `"…Z"` (UTC) |
/// | `uuid.UUID`, `markupsafe.Markup` (Flask cookies only) | `{" u": "<hex>"}`, `{" m": "<html>"}` |
///
/// The tags are Flask's (`flask.json.tag`), so a value reads the same whether it
/// came from a pickle, a msgpack record or a Flask cookie; only `" d"` holds RFC 3339
/// (with microseconds and naive-or-UTC kept) instead of Flask's HTTP date, so that a
/// datetime round-trips exactly.
#[derive(Clone, Debug, PartialEq)]
pub enum PyValue {
    /// `None`.
    None,
    /// `bool`.
    Bool(bool),
    /// `int` (Python's are unbounded; these are what fits 128 bits).
    Int(i128),
    /// `float`.
    Float(f64),
    /// `str`.
    Str(String),
    /// `bytes`.
    Bytes(Vec<u8>),
    /// `list`.
    List(Vec<PyValue>),
    /// `tuple`.
    Tuple(Vec<PyValue>),
    /// `dict`, in insertion order (a later duplicate key wins, as in Python).
    Dict(Vec<(PyValue, PyValue)>),
    /// `datetime.datetime`, naive or UTC.
    DateTime(DateTime),
}

/// A `datetime.datetime` without a time zone, or in UTC (`utc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct DateTime {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub microsecond: u32,
    pub utc: bool,
}

impl DateTime {
    /// Whether the fields form a real date and time (Python's own checks).
    pub fn is_valid(&self) -> bool {
        (1..=9999).contains(&self.year)
            && (1..=12).contains(&self.month)
            && self.day >= 1
            && self.day <= days_in_month(self.year, self.month)
            && self.hour < 24
            && self.minute < 60
            && self.second < 60
            && self.microsecond < 1_000_000
    }

    /// RFC 3339: `2026-12-04T06:41:47.123456`, with `Z` when in UTC; the fraction
    /// is left out when zero.
    pub fn to_rfc3339(&self) -> String {
        let mut s = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        );
        if self.microsecond != 0 {
            s.push_str(&format!(".{:06}", self.microsecond));
        }
        if self.utc {
            s.push('Z');
        }
        s
    }

    /// Parses what [`to_rfc3339`](Self::to_rfc3339) writes (and `+00:00` for `Z`).
    pub fn parse_rfc3339(s: &str) -> Option<DateTime> {
        let (body, utc) = if let Some(b) = s.strip_suffix('Z') {
            (b, true)
        } else if let Some(b) = s.strip_suffix("+00:00") {
            (b, true)
        } else {
            (s, false)
        };
        let (main, micro) = match body.split_once('.') {
            Some((m, f)) => {
                if f.is_empty() || f.len() > 6 || !f.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let scaled = format!("{f:0<6}");
                (m, scaled.parse::<u32>().ok()?)
            }
            None => (body, 0),
        };
        let b = main.as_bytes();
        if b.len() != 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<u32> {
            let part = &main[r];
            part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
        };
        let dt = DateTime {
            year: num(0..4)? as u16,
            month: num(5..7)? as u8,
            day: num(8..10)? as u8,
            hour: num(11..13)? as u8,
            minute: num(14..16)? as u8,
            second: num(17..19)? as u8,
            microsecond: micro,
            utc,
        };
        dt.is_valid().then_some(dt)
    }

    /// Seconds since the Unix epoch (a naive time is taken as UTC) and microseconds.
    pub fn unix(&self) -> (i64, u32) {
        let days = days_from_civil(i64::from(self.year), self.month, self.day);
        let secs = days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second);
        (secs, self.microsecond)
    }

    /// The UTC time `secs` + `micros` after the Unix epoch, if within years 1–9999.
    pub fn from_unix(secs: i64, micros: u32) -> Option<DateTime> {
        let days = secs.div_euclid(86_400);
        let rest = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let dt = DateTime {
            year: u16::try_from(y).ok()?,
            month: m,
            day: d,
            hour: (rest / 3600) as u8,
            minute: (rest / 60 % 60) as u8,
            second: (rest % 60) as u8,
            microsecond: micros,
            utc: true,
        };
        dt.is_valid().then_some(dt)
    }

    /// An HTTP date (`Fri, 04 Dec 2026 06:41:47 GMT`), what Flask's cookies hold;
    /// microseconds are dropped, as Flask drops them.
    pub fn to_http_date(&self) -> String {
        const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let days = days_from_civil(i64::from(self.year), self.month, self.day);
        format!(
            "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
            DAYS[days.rem_euclid(7) as usize],
            self.day,
            MONTHS[usize::from(self.month - 1)],
            self.year,
            self.hour,
            self.minute,
            self.second
        )
    }

    /// Parses an HTTP date (RFC 7231's preferred form) into a UTC time.
    pub fn parse_http_date(s: &str) -> Option<DateTime> {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let mut it = s.split_ascii_whitespace();
        let _weekday = it.next()?;
        let day: u8 = it.next()?.parse().ok()?;
        let month_name = it.next()?;
        let month = MONTHS.iter().position(|m| *m == month_name)? as u8 + 1;
        let year: u16 = it.next()?.parse().ok()?;
        let time = it.next()?;
        if it.next()? != "GMT" || it.next().is_some() {
            return None;
        }
        let mut hms = time.split(':').map(|p| p.parse::<u8>().ok());
        let (hour, minute, second) = (hms.next()??, hms.next()??, hms.next()??);
        let dt = DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            microsecond: 0,
            utc: true,
        };
        dt.is_valid().then_some(dt)
    }
}

fn is_leap(y: u16) -> bool {
    (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
}

fn days_in_month(y: u16, m: u8) -> u8 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u8, d: u8) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn err(what: impl Into<String>) -> DecodeError {
    DecodeError::new(what)
}

impl PyValue {
    /// The tagged-JSON value of this Python value (see [`PyValue`]).
    ///
    /// # Errors
    /// A dict key that is not a `str`, an `int` beyond 64 bits, a `float` that is
    /// NaN or infinite, or nesting deeper than [`MAX_DEPTH`]: JSON cannot hold them.
    pub fn to_json(&self) -> Result<Value, DecodeError> {
        self.to_json_at(0)
    }

    fn to_json_at(&self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(err(format!("nested more than {MAX_DEPTH} levels deep")));
        }
        let tagged = |tag: &str, v: Value| {
            let mut m = Map::new();
            m.insert(tag.to_owned(), v);
            Value::Object(m)
        };
        Ok(match self {
            PyValue::None => Value::Null,
            PyValue::Bool(b) => Value::Bool(*b),
            PyValue::Int(i) => {
                if let Ok(v) = i64::try_from(*i) {
                    Value::from(v)
                } else if let Ok(v) = u64::try_from(*i) {
                    Value::from(v)
                } else {
                    return Err(err(format!("the integer {i} does not fit 64 bits")));
                }
            }
            PyValue::Float(f) => Value::Number(
                Number::from_f64(*f).ok_or_else(|| err(format!("the float {f} has no JSON form")))?,
            ),
            PyValue::Str(s) => Value::String(s.clone()),
            PyValue::Bytes(b) => tagged(" b", Value::String(STANDARD.encode(b))),
            PyValue::List(items) => Value::Array(
                items
                    .iter()
                    .map(|v| v.to_json_at(depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            PyValue::Tuple(items) => tagged(
                " t",
                Value::Array(
                    items
                        .iter()
                        .map(|v| v.to_json_at(depth + 1))
                        .collect::<Result<_, _>>()?,
                ),
            ),
            PyValue::Dict(pairs) => {
                let mut m = pairs_to_map(pairs, depth + 1)?;
                if m.len() == 1 {
                    let key = m.keys().next().expect("one key").clone();
                    if TAGS.contains(&key.as_str()) {
                        let v = m.remove(&key).expect("present");
                        return Ok(tagged(" di", tagged(&format!("{key}__"), v)));
                    }
                }
                Value::Object(m)
            }
            PyValue::DateTime(dt) => tagged(" d", Value::String(dt.to_rfc3339())),
        })
    }

    /// The Python value of a tagged-JSON value (the inverse of
    /// [`to_json`](Self::to_json)).
    ///
    /// # Errors
    /// A malformed tag (`{" b": 5}`), or a `" u"` / `" m"` value (UUID, Markup),
    /// which only Flask's cookies can carry.
    pub fn from_json(value: &Value) -> Result<PyValue, DecodeError> {
        Self::from_json_at(value, 0)
    }

    fn from_json_at(value: &Value, depth: usize) -> Result<PyValue, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(err(format!("nested more than {MAX_DEPTH} levels deep")));
        }
        Ok(match value {
            Value::Null => PyValue::None,
            Value::Bool(b) => PyValue::Bool(*b),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    PyValue::Int(i.into())
                } else if let Some(u) = n.as_u64() {
                    PyValue::Int(u.into())
                } else {
                    PyValue::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => PyValue::Str(s.clone()),
            Value::Array(items) => PyValue::List(
                items
                    .iter()
                    .map(|v| Self::from_json_at(v, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(m) => {
                if m.len() == 1 {
                    let (k, v) = m.iter().next().expect("one entry");
                    if TAGS.contains(&k.as_str()) {
                        return Self::untag(k, v, depth);
                    }
                }
                PyValue::Dict(
                    m.iter()
                        .map(|(k, v)| Ok((PyValue::Str(k.clone()), Self::from_json_at(v, depth + 1)?)))
                        .collect::<Result<_, DecodeError>>()?,
                )
            }
        })
    }

    fn untag(tag: &str, v: &Value, depth: usize) -> Result<PyValue, DecodeError> {
        let bad = || err(format!("the tagged value {{{tag:?}: …}} is malformed"));
        Ok(match (tag, v) {
            (" t", Value::Array(items)) => PyValue::Tuple(
                items
                    .iter()
                    .map(|v| Self::from_json_at(v, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            (" b", Value::String(s)) => PyValue::Bytes(STANDARD.decode(s).map_err(|_| bad())?),
            (" d", Value::String(s)) => {
                PyValue::DateTime(DateTime::parse_rfc3339(s).ok_or_else(bad)?)
            }
            (" di", Value::Object(inner)) if inner.len() == 1 => {
                let (k, v) = inner.iter().next().expect("one entry");
                let k = k.strip_suffix("__").ok_or_else(bad)?;
                PyValue::Dict(vec![(PyValue::Str(k.to_owned()), Self::from_json_at(v, depth + 1)?)])
            }
            (" u" | " m", _) => {
                return Err(err(format!(
                    "a {} value (tag {tag:?}) can only travel in a Flask cookie",
                    if tag == " u" { "UUID" } else { "Markup" }
                )));
            }
            _ => return Err(bad()),
        })
    }

    /// Python's name of this value's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            PyValue::None => "NoneType",
            PyValue::Bool(_) => "bool",
            PyValue::Int(_) => "int",
            PyValue::Float(_) => "float",
            PyValue::Str(_) => "str",
            PyValue::Bytes(_) => "bytes",
            PyValue::List(_) => "list",
            PyValue::Tuple(_) => "tuple",
            PyValue::Dict(_) => "dict",
            PyValue::DateTime(_) => "datetime",
        }
    }
}

/// A session dict (str keys) as a map of tagged-JSON values (the top level is the
/// session's key map, so it is never wrapped in a tag).
pub(crate) fn dict_to_map(value: &PyValue) -> Result<Map<String, Value>, DecodeError> {
    let PyValue::Dict(pairs) = value else {
        return Err(err(format!("the session is a {}, not a dict", value.type_name())));
    };
    pairs_to_map(pairs, 1)
}

/// A dict's pairs as a JSON object (a later duplicate key wins, as in Python).
fn pairs_to_map(pairs: &[(PyValue, PyValue)], depth: usize) -> Result<Map<String, Value>, DecodeError> {
    let mut m = Map::new();
    for (k, v) in pairs {
        let PyValue::Str(k) = k else {
            return Err(err(format!(
                "a dict key is a {}, not a str (JSON keys are strings)",
                k.type_name()
            )));
        };
        m.insert(k.clone(), v.to_json_at(depth)?);
    }
    Ok(m)
}

/// A map of tagged-JSON values as a Python dict.
pub(crate) fn map_to_dict<'a>(
    map: impl IntoIterator<Item = (&'a String, &'a Value)>,
) -> Result<PyValue, DecodeError> {
    Ok(PyValue::Dict(
        map.into_iter()
            .map(|(k, v)| Ok((PyValue::Str(k.clone()), PyValue::from_json_at(v, 1)?)))
            .collect::<Result<_, DecodeError>>()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dates_round_trip_and_match_known_values() {
        let dt = DateTime::parse_rfc3339("2026-12-04T06:41:47.123456").unwrap();
        assert!(!dt.utc);
        assert_eq!(dt.to_rfc3339(), "2026-12-04T06:41:47.123456");
        let utc = DateTime::parse_rfc3339("2026-12-04T06:41:47Z").unwrap();
        assert_eq!(utc.unix(), (1_796_366_507, 0));
        assert_eq!(utc.to_http_date(), "Fri, 04 Dec 2026 06:41:47 GMT");
        assert_eq!(DateTime::parse_http_date("Fri, 04 Dec 2026 06:41:47 GMT"), Some(utc));
        assert_eq!(DateTime::from_unix(1_796_366_507, 0), Some(utc));
        assert_eq!(DateTime::from_unix(0, 0).unwrap().to_rfc3339(), "1970-01-01T00:00:00Z");
        for bad in ["2026-02-30T00:00:00", "2026-12-04 06:41:47", "2026-12-04T06:41:47.", "x"] {
            assert_eq!(DateTime::parse_rfc3339(bad), None, "{bad}");
        }
        for days in [-719_162i64, -1, 0, 59, 365 * 400, 2_932_896] {
            let dt = DateTime::from_unix(days * 86_400, 0).unwrap();
            assert_eq!(dt.unix().0, days * 86_400);
        }
    }

    #[test]
    fn json_mapping_follows_flask_tags_and_round_trips() {
        let v = PyValue::Dict(vec![
            (PyValue::Str("t".into()), PyValue::Tuple(vec![PyValue::Int(1), PyValue::Str("a".into())])),
            (PyValue::Str("b".into()), PyValue::Bytes(vec![0, 1, 255])),
            (PyValue::Str("tagged".into()), PyValue::Dict(vec![(PyValue::Str(" t".into()), PyValue::Int(5))])),
            (PyValue::Str("big".into()), PyValue::Int(u64::MAX.into())),
        ]);
        let j = v.to_json().unwrap();
        assert_eq!(
            j,
            json!({"t": {" t": [1, "a"]}, "b": {" b": "AAH/"}, "tagged": {" di": {" t__": 5}}, "big": u64::MAX})
        );
        // Dicts compare as in Python: order aside.
        assert_eq!(PyValue::from_json(&j).unwrap().to_json().unwrap(), j);
        assert!(PyValue::Int(1 << 70).to_json().is_err());
        assert!(PyValue::Float(f64::NAN).to_json().is_err());
        assert!(PyValue::Dict(vec![(PyValue::Int(1), PyValue::None)]).to_json().is_err());
        assert!(PyValue::from_json(&json!({" b": 5})).is_err());
        assert!(PyValue::from_json(&json!({" u": "00"})).is_err());
    }
}
