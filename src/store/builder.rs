//! Builders beside each engine store's `open(url)`: typed setters for the URL
//! options (the README's table), and secrets that need not be written into a URL.
//!
//! A builder composes the URL its store parses, so a builder and a URL with the
//! same settings behave the same by construction: one parser, one set of tests. A
//! builder's setting wins over the same option in the URL it started from (it is
//! appended, and the last occurrence of an option counts).
#![cfg_attr(
    not(all(feature = "redis", feature = "postgres", feature = "memcached")),
    allow(dead_code)
)]

use std::fmt;
use std::path::Path;
use std::time::Duration;

/// A URL, credentials to put in it and options to append.
#[derive(Clone, Default)]
pub(crate) struct Parts {
    url: String,
    username: Option<String>,
    password: Option<String>,
    options: Vec<(&'static str, String)>,
}

impl fmt::Debug for Parts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("url", &super::redact(&self.url))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field(
                "options",
                &self
                    .options
                    .iter()
                    .map(|(n, v)| (*n, if n.contains("password") { "***" } else { v.as_str() }))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Parts {
    pub(crate) fn new(url: &str) -> Parts {
        Parts {
            url: url.to_owned(),
            ..Parts::default()
        }
    }

    pub(crate) fn username(&mut self, user: &str) {
        self.username = Some(user.to_owned());
    }

    pub(crate) fn password(&mut self, password: &str) {
        self.password = Some(password.to_owned());
    }

    /// Sets option `name` (replacing an earlier setting of this builder).
    pub(crate) fn set(&mut self, name: &'static str, value: impl fmt::Display) {
        self.options.retain(|(n, _)| *n != name);
        self.options.push((name, value.to_string()));
    }

    pub(crate) fn set_millis(&mut self, name: &'static str, d: Duration) {
        self.set(name, d.as_millis().min(u128::from(u64::MAX)));
    }

    pub(crate) fn set_path(&mut self, name: &'static str, path: &Path) {
        self.set(name, path.display());
    }

    /// The URL with the credentials in its userinfo (percent-encoded) and the
    /// options appended to its query.
    pub(crate) fn url(&self) -> String {
        let Some((scheme, rest)) = self.url.split_once("://") else {
            return self.key_values();
        };
        let query_at = rest.find('?').unwrap_or(rest.len());
        let (before, query) = rest.split_at(query_at);
        let (user, password, hosts) = match before.rfind('@') {
            Some(at) => {
                let (user, password) = match before[..at].split_once(':') {
                    Some((u, p)) => (u.to_owned(), Some(p.to_owned())),
                    None => (before[..at].to_owned(), None),
                };
                (user, password, &before[at + 1..])
            }
            None => (String::new(), None, before),
        };
        let user = self.username.as_deref().map(|u| encode(u, true)).unwrap_or(user);
        let password = self.password.as_deref().map(|p| encode(p, true)).or(password);
        let mut out = format!("{scheme}://");
        match (&password, user.is_empty()) {
            (Some(p), _) => out.push_str(&format!("{user}:{p}@")),
            (None, false) => out.push_str(&format!("{user}@")),
            (None, true) => {}
        }
        out.push_str(hosts);
        out.push_str(query);
        for (i, (name, value)) in self.options.iter().enumerate() {
            let sep = if i == 0 && query.is_empty() { '?' } else { '&' };
            out.push_str(&format!("{sep}{name}={}", encode(value, false)));
        }
        out
    }

    /// PostgreSQL's key-value form with `user`, `password` and the options
    /// appended as quoted words.
    fn key_values(&self) -> String {
        let mut out = self.url.clone();
        let words = self
            .username
            .iter()
            .map(|u| ("user", u.as_str()))
            .chain(self.password.iter().map(|p| ("password", p.as_str())))
            .chain(self.options.iter().map(|(n, v)| (*n, v.as_str())));
        for (name, value) in words {
            if name != "password" && !value.is_empty() && !value.contains(char::is_whitespace) && !value.contains(['\'', '\\']) {
                out.push_str(&format!(" {name}={value}"));
            } else {
                let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
                out.push_str(&format!(" {name}='{quoted}'"));
            }
        }
        out
    }
}

/// Percent-encodes all but RFC 3986's unreserved characters (and `/`, outside
/// the userinfo: a file path in the query stays readable).
fn encode(s: &str, userinfo: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || (b == b'/' && !userinfo) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `%XX` escapes decoded; anything else as is (also a `%` not followed by two hex
/// digits).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_options_go_into_the_url() {
        let mut p = Parts::new("redis://old:pw@h:1/0?pool_size=3");
        p.password("p@ss:w/rd ü");
        p.set("pool_size", 8);
        assert_eq!(p.url(), "redis://old:p%40ss%3Aw%2Frd%20%C3%BC@h:1/0?pool_size=3&pool_size=8");
        assert_eq!(percent_decode("p%40ss%3Aw%2Frd%20%C3%BC"), "p@ss:w/rd ü");
        let mut p = Parts::new("redis-sentinel://a:1,b:2/svc");
        p.username("app");
        p.set("sentinel_password", "s&=");
        assert_eq!(p.url(), "redis-sentinel://app@a:1,b:2/svc?sentinel_password=s%26%3D");
        let mut p = Parts::new("host=db user=x");
        p.password("it's \\ here");
        p.set("pool_size", 2);
        assert_eq!(p.url(), "host=db user=x password='it\\'s \\\\ here' pool_size=2");
        let shown = format!("{p:?}");
        assert!(!shown.contains("here"), "{shown}");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
