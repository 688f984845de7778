//! Session and cookie settings.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};

use super::id::SigningKey;
#[cfg(feature = "flask")]
use crate::flask::{FlaskFormat, signer};

/// The default of [`SessionConfig::refresh_granularity`]: 1% of the lifetime.
pub const DEFAULT_REFRESH_GRANULARITY: f64 = 0.01;

/// The cookie's `SameSite` attribute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SameSite {
    /// Sent only on same-site requests.
    Strict,
    /// Sent on same-site requests and top-level navigations (the default).
    #[default]
    Lax,
    /// Sent everywhere; browsers require `Secure` with it.
    None,
}

/// How sessions and their cookie behave. Defaults follow Flask / Flask-Session.
///
/// | setting | default |
/// |---|---|
/// | cookie name | `session` |
/// | store key prefix | `session:` (followed by a hash of the id) |
/// | permanent | `true` |
/// | lifetime | 31 days |
/// | refresh each request | `true` (expiry slides on every request) |
/// | refresh granularity | `0.01` (a read-only request rewrites the record only once 1% of the lifetime has passed since its last write) |
/// | idle timeout | none |
/// | absolute lifetime | none |
/// | signing keys | none (ids are 256-bit random; signing is defence in depth) |
/// | Path / Domain | `/` / none |
/// | HttpOnly / Secure / SameSite | on / **off** (turn on behind HTTPS) / `Lax` |
///
/// ```
/// use std::time::Duration;
/// use fscache::session::{SameSite, SessionConfig};
///
/// let config = SessionConfig::default()
///     .cookie_name("__Host-sid")
///     .secure(true)
///     .same_site(SameSite::Strict)
///     .idle_timeout(Duration::from_secs(30 * 60))
///     .absolute_lifetime(Duration::from_secs(12 * 3600))
///     .signing_keys(["new secret", "previous secret"]);
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct SessionConfig {
    pub(crate) cookie_name: String,
    pub(crate) key_prefix: String,
    pub(crate) permanent: bool,
    pub(crate) lifetime: Duration,
    pub(crate) refresh_each_request: bool,
    pub(crate) refresh_granularity: f64,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) absolute_lifetime: Option<Duration>,
    pub(crate) signing_keys: Vec<SigningKey>,
    pub(crate) path: String,
    pub(crate) domain: Option<String>,
    pub(crate) http_only: bool,
    pub(crate) secure: bool,
    pub(crate) same_site: SameSite,
    pub(crate) clock: Arc<dyn Clock>,
    /// Flask-Session's record format (and unhashed keys), when sharing sessions
    /// with a Flask app.
    #[cfg(feature = "flask")]
    pub(crate) flask: Option<FlaskFormat>,
    /// itsdangerous keys derived from the Flask app's secret keys (salt
    /// `flask-session`); empty: unsigned cookies (`SESSION_USE_SIGNER = False`).
    #[cfg(feature = "flask")]
    pub(crate) flask_keys: Vec<signer::Key>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            cookie_name: "session".into(),
            key_prefix: "session:".into(),
            permanent: true,
            lifetime: Duration::from_secs(31 * 24 * 3600),
            refresh_each_request: true,
            refresh_granularity: DEFAULT_REFRESH_GRANULARITY,
            idle_timeout: None,
            absolute_lifetime: None,
            signing_keys: Vec::new(),
            path: "/".into(),
            domain: None,
            http_only: true,
            secure: false,
            same_site: SameSite::Lax,
            clock: Arc::new(SystemClock),
            #[cfg(feature = "flask")]
            flask: None,
            #[cfg(feature = "flask")]
            flask_keys: Vec::new(),
        }
    }
}

impl SessionConfig {
    /// The cookie's name. Default: `session`. A `__Host-` name requires
    /// [`secure`](Self::secure), Path `/` and no Domain; `__Secure-` requires `secure`.
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = name.into();
        self
    }

    /// Prefix of store keys. Default: `session:`.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Whether new sessions are permanent (a cookie with Max-Age/Expires) or last the
    /// browser session. Default: `true`. Per session: [`Session::set_permanent`].
    ///
    /// [`Session::set_permanent`]: super::Session::set_permanent
    pub fn permanent(mut self, permanent: bool) -> Self {
        self.permanent = permanent;
        self
    }

    /// How long a session lives without activity (and the permanent cookie's
    /// Max-Age). Default: 31 days (Flask's `PERMANENT_SESSION_LIFETIME`).
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Whether every request slides the expiry (and re-sends a permanent cookie).
    /// Default: `true`. Reads count as activity. How often a request that changes
    /// nothing actually writes is set by
    /// [`refresh_granularity`](Self::refresh_granularity).
    pub fn refresh_each_request(mut self, refresh: bool) -> Self {
        self.refresh_each_request = refresh;
        self
    }

    /// With [`refresh_each_request`](Self::refresh_each_request), a request that
    /// changes nothing slides the expiry only when it would move by at least this
    /// fraction of the lifetime (of the idle timeout, if shorter): the record is
    /// rewritten and the permanent cookie re-sent with it, so the cookie's
    /// Max-Age/Expires and the stored expiry always name the same moment; between
    /// such writes, page views write nothing and send no cookie. A session then ends
    /// between `(1 - fraction) × lifetime` and `lifetime` after its last request.
    /// `0.0` rewrites on every request. Values outside `0.0..1.0` are a config
    /// error. Default: `0.01` (31 days → at most one write per 7.4 hours of a
    /// session's page views; 30 minutes → one per 18 s). Flask-Session's records
    /// hold no write time: in Flask mode every request slides the expiry, as
    /// Flask-Session does.
    pub fn refresh_granularity(mut self, fraction: f64) -> Self {
        self.refresh_granularity = fraction;
        self
    }

    /// Ends a session after this long without a request, if shorter than the
    /// lifetime. Default: none. OWASP suggests 15–30 minutes for sensitive apps.
    ///
    /// Every request counts, reads included, also with
    /// [`refresh_each_request(false)`](Self::refresh_each_request): a request that
    /// changes nothing rewrites the record (sliding its expiry) only when a tenth of
    /// the idle window has passed since the last write, so a session ends between 90%
    /// and 100% of `timeout` after its last request.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Ends a session this long after it was created, however active. Default: none.
    pub fn absolute_lifetime(mut self, lifetime: Duration) -> Self {
        self.absolute_lifetime = Some(lifetime);
        self
    }

    /// Secrets that sign the cookie value: the first signs new cookies, all verify
    /// (list the previous secret second while rotating). Default: none.
    pub fn signing_keys<I, K>(mut self, secrets: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: AsRef<[u8]>,
    {
        self.signing_keys = secrets
            .into_iter()
            .map(|s| SigningKey::derive(s.as_ref()))
            .collect();
        self
    }

    /// The cookie's Path. Default: `/`.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// The cookie's Domain. Default: none (host-only).
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// The HttpOnly attribute (no access from JavaScript). Default: on.
    pub fn http_only(mut self, on: bool) -> Self {
        self.http_only = on;
        self
    }

    /// The Secure attribute (HTTPS only). Default: off, so plain-HTTP development
    /// works; turn it on in production behind HTTPS.
    pub fn secure(mut self, on: bool) -> Self {
        self.secure = on;
        self
    }

    /// The SameSite attribute. Default: [`SameSite::Lax`].
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = same_site;
        self
    }

    /// The clock for expiry and the absolute lifetime. Default: the system clock.
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Flask-Session's sessions (feature `flask`), to share them with a live Flask
    /// app: cookie `session` holding the bare session id (43 characters of
    /// `secrets.token_urlsafe(32)`), records under `session:` + the id (not
    /// hashed: Flask looks them up by it), as a pickle of the session dict
    /// ([`FlaskFormat::Pickle`], for a cachelib directory through
    /// [`CachelibStore`](crate::store::CachelibStore)) or msgpack
    /// ([`FlaskFormat::Msgpack`], for Redis and the other engines), with
    /// `session.permanent` as the dict's `_permanent` key. Permanent, 31 days
    /// (Flask's `PERMANENT_SESSION_LIFETIME`), refreshed on every request, unsigned
    /// (`SESSION_USE_SIGNER = False`); sign with [`flask_signer`](Self::flask_signer).
    ///
    /// Match the Flask app: [`key_prefix`](Self::key_prefix) for
    /// `SESSION_KEY_PREFIX`, [`lifetime`](Self::lifetime) for
    /// `PERMANENT_SESSION_LIFETIME`, [`cookie_name`](Self::cookie_name) for
    /// `SESSION_COOKIE_NAME`. Flask-Session has no idle timeout or absolute lifetime,
    /// and its records have no room for them: setting either is a configuration
    /// error, as are fscache's own signing keys.
    ///
    /// ```
    /// use fscache::flask::FlaskFormat;
    /// use fscache::session::{SessionConfig, Sessions};
    /// use fscache::store::CachelibStore;
    ///
    /// # fn main() -> fscache::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let flask_session_dir = dir.path();
    /// let store = CachelibStore::open(flask_session_dir)?; // the Flask app's SESSION_FILE_DIR
    /// let config = SessionConfig::flask_session(FlaskFormat::Pickle)
    ///     .flask_signer(["the Flask app's SECRET_KEY"]); // if SESSION_USE_SIGNER = True
    /// let sessions = Sessions::new(store, config)?;
    /// let mut session = sessions.load(None)?;
    /// session.insert("user", "ann")?;
    /// let cookie = sessions.save(&mut session)?.set_cookie.unwrap();
    /// assert!(cookie.starts_with("session="));
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "flask")]
    pub fn flask_session(format: FlaskFormat) -> SessionConfig {
        SessionConfig {
            flask: Some(format),
            ..SessionConfig::default()
        }
    }

    /// Signs session ids as Flask-Session does with `SESSION_USE_SIGNER = True`:
    /// itsdangerous, HMAC-SHA1, salt `flask-session`, with the app's `SECRET_KEY`.
    /// The first secret signs, all verify. Only with
    /// [`flask_session`](Self::flask_session) (a configuration error otherwise).
    #[cfg(feature = "flask")]
    pub fn flask_signer<I, K>(mut self, secret_keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: AsRef<[u8]>,
    {
        self.flask_keys = secret_keys
            .into_iter()
            .map(|k| signer::Key::derive(k.as_ref(), b"flask-session"))
            .collect();
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let config = |message: String| Err(Error::Config { message });
        #[cfg(feature = "flask")]
        if self.flask.is_none() && !self.flask_keys.is_empty() {
            return config(
                "flask_signer applies to Flask-Session's sessions: start from \
                 SessionConfig::flask_session(format)"
                    .into(),
            );
        }
        #[cfg(feature = "flask")]
        if self.flask.is_some() {
            if self.idle_timeout.is_some() || self.absolute_lifetime.is_some() {
                return config(
                    "Flask-Session's sessions have no idle timeout or absolute lifetime (its \
                     records cannot hold the times they need); use lifetime, as Flask's \
                     PERMANENT_SESSION_LIFETIME"
                        .into(),
                );
            }
            if !self.signing_keys.is_empty() {
                return config(
                    "Flask-Session's cookies are signed by itsdangerous: use flask_signer \
                     with the Flask app's SECRET_KEY, not signing_keys"
                        .into(),
                );
            }
        }
        if !(0.0..1.0).contains(&self.refresh_granularity) {
            return config(format!(
                "refresh_granularity {} is not a fraction in 0.0..1.0 of the lifetime",
                self.refresh_granularity
            ));
        }
        let name = &self.cookie_name;
        let token = |c: char| c.is_ascii_graphic() && !"()<>@,;:\\\"/[]?={}".contains(c);
        if name.is_empty() || !name.chars().all(token) {
            return config(format!("cookie name {name:?} is not a valid cookie token"));
        }
        if name.starts_with("__Host-")
            && (!self.secure || self.path != "/" || self.domain.is_some())
        {
            return config(format!(
                "cookie name {name:?} has the __Host- prefix, which browsers accept only with \
                 Secure, Path=/ and no Domain"
            ));
        }
        if name.starts_with("__Secure-") && !self.secure {
            return config(format!(
                "cookie name {name:?} has the __Secure- prefix, which requires Secure"
            ));
        }
        if self.same_site == SameSite::None && !self.secure {
            return config("SameSite=None requires Secure (browsers reject it otherwise)".into());
        }
        if self.lifetime.is_zero() || self.idle_timeout.is_some_and(|d| d.is_zero()) {
            return config("session lifetimes must not be zero".into());
        }
        if self.absolute_lifetime.is_some_and(|d| d.is_zero()) {
            return config("the absolute lifetime must not be zero".into());
        }
        if self.lifetime.as_secs() > i64::MAX as u64 / 1000 {
            return config("the session lifetime is too long to represent".into());
        }
        // RFC 6265 §4.1.1: path-value is any CHAR except CTLs and ";" (so no CR, LF
        // or other control character can reach a Set-Cookie header).
        let path_ok = self.path.starts_with('/')
            && self.path.chars().all(|c| (' '..='~').contains(&c) && c != ';');
        if !path_ok {
            return config(format!(
                "cookie path {:?} must start with / and hold only printable ASCII without ; \
                 (RFC 6265)",
                self.path
            ));
        }
        // A domain is a host name: letters, digits, hyphens and dots (a leading dot is
        // tolerated by RFC 6265 and ignored by browsers).
        if let Some(d) = self.domain.as_deref() {
            let host = d.strip_prefix('.').unwrap_or(d);
            let ok = !host.is_empty()
                && host.len() <= 253
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                });
            if !ok {
                return config(format!(
                    "cookie domain {d:?} is not a host name (letters, digits, hyphens, dots)"
                ));
            }
        }
        Ok(())
    }
}
