//! The crate's one error type.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A boxed error from a serializer or deserializer.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in fscache.
///
/// Damaged or foreign entry files are *not* errors: they read as a miss, are removed
/// and are counted in [`Stats::damaged`](crate::Stats::damaged). Errors are real I/O
/// failures, bad input and bad configuration.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed. `path` is the file or directory involved.
    #[non_exhaustive]
    Io {
        /// What fscache was doing ("create temp file", "rename entry", …).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error; its [`io::ErrorKind`] is preserved.
        source: io::Error,
    },
    /// The directory is not empty and holds no fscache marker file.
    #[non_exhaustive]
    NotACache {
        /// The directory given to `open`.
        path: PathBuf,
        /// The directory is empty: only `open_existing` refuses that (it never
        /// adopts a directory).
        empty: bool,
    },
    /// The directory was created by an fscache with another on-disk format.
    #[non_exhaustive]
    IncompatibleFormat {
        /// The directory given to `open`.
        path: PathBuf,
        /// What the marker file says.
        found: String,
        /// The format version this build reads and writes.
        supported: u32,
    },
    /// An option passed to the builder is invalid.
    #[non_exhaustive]
    Config {
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A time-to-live that cannot be represented (zero, or past the year 584 million).
    #[non_exhaustive]
    InvalidTtl {
        /// Why it was refused.
        message: String,
    },
    /// A key longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) bytes.
    #[non_exhaustive]
    KeyTooLong {
        /// The key's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value whose encoded size exceeds the configured limit.
    #[non_exhaustive]
    ValueTooLarge {
        /// The key it was to be stored under.
        key: String,
        /// Its encoded size in bytes.
        size: usize,
        /// The configured limit (see `FileSystemCacheBuilder::max_value_size`).
        max: usize,
    },
    /// An entry larger than the cache's byte budget on its own (see
    /// `FileSystemCacheBuilder::max_bytes`); nothing was written.
    #[non_exhaustive]
    OverByteBudget {
        /// The key it was to be stored under.
        key: String,
        /// The entry file's length in bytes (value, key, header and checksum).
        size: u64,
        /// The byte budget.
        max_bytes: u64,
    },
    /// A value could not be serialized; nothing was written.
    #[non_exhaustive]
    Serialize {
        /// The key it was to be stored under.
        key: String,
        /// The serializer's error.
        source: BoxError,
    },
    /// A stored value could not be deserialized into the requested type. The entry is
    /// intact (its checksum matched); the type asked for does not fit it.
    #[non_exhaustive]
    Deserialize {
        /// The key read.
        key: String,
        /// The deserializer's error.
        source: BoxError,
    },
    /// `inc`/`dec` would overflow an `i64`; the stored value is unchanged.
    #[non_exhaustive]
    Overflow {
        /// The counter's key.
        key: String,
    },
    /// A stored entry uses a codec this build was compiled without.
    #[non_exhaustive]
    UnsupportedCodec {
        /// The key read or written.
        key: String,
        /// The codec's name.
        codec: &'static str,
    },
    /// A cross-process lock could not be taken.
    #[non_exhaustive]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The underlying error (`Unsupported` on filesystems without `flock`).
        source: io::Error,
    },
    /// An operation that takes a key's stripe lock (`add`, `inc`, `dec`, `update`,
    /// `delete`, `prune`, `clear`) was called by a thread that already holds a stripe
    /// lock of the same cache directory, i.e. from inside an
    /// [`update`](crate::FileSystemCache::update) closure. It would deadlock, so it is
    /// refused; nothing was changed.
    #[non_exhaustive]
    Reentrant {
        /// The operation refused ("delete", "update", …).
        op: &'static str,
    },
    /// The filesystem lacks something the cache needs to keep its guarantees (an
    /// atomic no-replace rename or hard links, or `flock`). Reported by `open`.
    #[non_exhaustive]
    UnsupportedFilesystem {
        /// The cache directory.
        path: PathBuf,
        /// What is missing.
        missing: &'static str,
        /// The error the probe got.
        source: io::Error,
    },
    /// An optimistic read-merge-write of a [`Store`](crate::Store) lost the race to
    /// concurrent writers `attempts` times in a row and gave up; nothing was written
    /// by this call. Retrying later can succeed.
    #[non_exhaustive]
    Conflict {
        /// The store key.
        key: String,
        /// How many compare-and-set attempts failed.
        attempts: u32,
    },
    /// A merge closure of [`Store::update`](crate::Store::update) (or
    /// [`FileSystemCache::update_bytes`](crate::FileSystemCache::update_bytes)) gave
    /// up with its own error, made with [`Error::callback`]; nothing was written.
    #[non_exhaustive]
    Callback {
        /// The closure's error.
        source: BoxError,
    },
    /// A store engine (Redis, PostgreSQL, SQLite, Memcached) failed. `kind` says
    /// how (match on it to react: back off on [`Unavailable`](EngineErrorKind::Unavailable),
    /// alert on [`Auth`](EngineErrorKind::Auth)); `retryable` says whether the same
    /// call can succeed later: `true` when the engine was unreachable, timed out,
    /// restarting or lost a race; `false` for refused input, bad credentials or
    /// data the engine holds in a shape fscache did not write.
    #[non_exhaustive]
    Engine {
        /// The engine ("redis", "postgres", "sqlite", "memcached").
        engine: &'static str,
        /// What fscache asked of it ("connect", "load", "compare-and-set", …).
        op: &'static str,
        /// What kind of failure it was.
        kind: EngineErrorKind,
        /// Whether retrying the call later can help.
        retryable: bool,
        /// The client crate's error.
        source: BoxError,
    },
}

/// What kind of failure an [`Error::Engine`] is, for a caller that handles each
/// differently (see [`Error::engine_kind`]).
///
/// | kind | retryable | what happened |
/// |---|---|---|
/// | `Timeout` | yes | a connect, a call, a lock wait or a wait for a pooled connection took longer than its limit; a write may or may not have been applied |
/// | `Unavailable` | yes | the engine could not be reached, dropped the connection, is starting, shutting down or failing over, is a replica, or has no room for another client |
/// | `Conflict` | yes | the engine aborted the call for a concurrent one (a serialization failure, a deadlock) |
/// | `Auth` | no | the engine did not accept the credentials (wrong password, unknown user) |
/// | `Refused` | no | the engine took the request and refused it (no permission on the table, no such database, a command it does not allow) |
/// | `Other` | as reported | anything else: data in a shape fscache did not write, a client-side error |
///
/// ```
/// use fscache::{EngineErrorKind, Error};
///
/// let e = Error::engine_with_kind("mystore", "load", EngineErrorKind::Timeout, "no reply in 2 s");
/// assert_eq!(e.engine_kind(), Some(EngineErrorKind::Timeout));
/// assert!(e.is_retryable());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EngineErrorKind {
    /// A limit was reached before the engine answered (retryable).
    Timeout,
    /// The engine is unreachable or not taking calls right now (retryable).
    Unavailable,
    /// The engine aborted the call for a concurrent one (retryable).
    Conflict,
    /// The credentials were not accepted (not retryable).
    Auth,
    /// The engine refused the request itself (not retryable).
    Refused,
    /// Anything else.
    Other,
}

impl EngineErrorKind {
    /// Whether an error of this kind is retryable when nothing more is known
    /// (`Other` is not).
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Timeout | Self::Unavailable | Self::Conflict)
    }

    /// Its name in lower case ("timeout", "unavailable", …), as error messages show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Unavailable => "unavailable",
            Self::Conflict => "conflict",
            Self::Auth => "auth",
            Self::Refused => "refused",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for EngineErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn reentrant(op: &'static str) -> Self {
        Error::Reentrant { op }
    }

    /// Wraps an error of a merge closure so it can abort the merge (see
    /// [`Error::Callback`]).
    pub fn callback(source: impl Into<BoxError>) -> Error {
        Error::Callback {
            source: source.into(),
        }
    }

    /// An engine failure (see [`Error::Engine`]): what a [`Store`](crate::store::Store)
    /// implemented outside this crate returns for its client's errors, with
    /// `retryable` set when the same call may succeed later.
    ///
    /// ```
    /// let e = fscache::Error::engine("mystore", "load", true, std::io::Error::other("reset"));
    /// assert!(e.is_retryable());
    /// ```
    ///
    /// Its [`kind`](Error::engine_kind) is [`Unavailable`](EngineErrorKind::Unavailable)
    /// when retryable and [`Other`](EngineErrorKind::Other) when not; say which with
    /// [`engine_with_kind`](Error::engine_with_kind).
    pub fn engine(
        engine: &'static str,
        op: &'static str,
        retryable: bool,
        source: impl Into<BoxError>,
    ) -> Self {
        let kind = if retryable {
            EngineErrorKind::Unavailable
        } else {
            EngineErrorKind::Other
        };
        Error::Engine {
            engine,
            op,
            kind,
            retryable,
            source: source.into(),
        }
    }

    /// An engine failure of a known [kind](EngineErrorKind), retryable as the kind
    /// is ([`EngineErrorKind::is_retryable`]).
    pub fn engine_with_kind(
        engine: &'static str,
        op: &'static str,
        kind: EngineErrorKind,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Engine {
            engine,
            op,
            kind,
            retryable: kind.is_retryable(),
            source: source.into(),
        }
    }

    /// The kind of an [`Error::Engine`]; `None` for every other error.
    pub fn engine_kind(&self) -> Option<EngineErrorKind> {
        match self {
            Error::Engine { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// Whether the same call can succeed if retried later: an engine that was
    /// unreachable, a lost compare-and-set race, a lock or I/O error that is
    /// transient (interrupted, timed out, would block). `false` for bad input,
    /// bad data and configuration errors.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Engine { retryable, .. } => *retryable,
            Error::Conflict { .. } => true,
            Error::Io { source, .. } | Error::Lock { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// This error and each of its causes once, `: `-separated: for a log line or for
    /// a framework that takes an error as a message (`Display` alone leaves the
    /// causes to [`source`](std::error::Error::source)).
    ///
    /// ```
    /// let e = fscache::Error::callback(std::io::Error::other("disk on fire"));
    /// assert!(e.report().ends_with(": disk on fire"), "{}", e.report());
    /// ```
    pub fn report(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !out.contains(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            source = cause.source();
        }
        out
    }

    /// The [`io::ErrorKind`] behind an `Io` or `Lock` error, if any.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Error::Io { source, .. }
            | Error::Lock { source, .. }
            | Error::UnsupportedFilesystem { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, path, .. } => write!(f, "{op} failed for {}", path.display()),
            Error::NotACache { path, empty: true } => write!(
                f,
                "{} is an empty directory, not an fscache directory (no FSCACHE marker \
                 file); open_existing never adopts one",
                path.display()
            ),
            Error::NotACache { path, .. } => write!(
                f,
                "{} is not empty and is not an fscache directory (no FSCACHE marker file); \
                 the cache deletes files, so point it at an empty or new directory",
                path.display()
            ),
            Error::IncompatibleFormat {
                path,
                found,
                supported,
            } => write!(
                f,
                "{} holds an fscache of on-disk format {found:?}, this build reads format \
                 {supported}; use a new directory or the matching fscache version",
                path.display()
            ),
            Error::Config { message } => write!(f, "invalid cache configuration: {message}"),
            Error::InvalidTtl { message } => write!(f, "invalid TTL: {message}"),
            Error::KeyTooLong { len, max } => {
                write!(
                    f,
                    "key is {len} bytes long; keys are limited to {max} bytes"
                )
            }
            Error::ValueTooLarge { key, size, max } => write!(
                f,
                "value for key {key:?} encodes to {size} bytes, over the limit of {max} \
                 (raise it with FileSystemCacheBuilder::max_value_size)"
            ),
            Error::OverByteBudget {
                key,
                size,
                max_bytes,
            } => write!(
                f,
                "the entry for key {key:?} is {size} bytes, larger than the cache's whole \
                 byte budget of {max_bytes} (FileSystemCacheBuilder::max_bytes)"
            ),
            Error::Serialize { key, .. } => {
                write!(f, "could not serialize the value for key {key:?}")
            }
            Error::Deserialize { key, .. } => write!(
                f,
                "the value stored under key {key:?} does not deserialize into the requested \
                 type"
            ),
            Error::Overflow { key } => {
                write!(
                    f,
                    "counter {key:?} would overflow i64; it was left unchanged"
                )
            }
            Error::UnsupportedCodec { key, codec } => write!(
                f,
                "key {key:?} uses the {codec} codec, which this build of fscache was compiled \
                 without (enable the crate feature)"
            ),
            Error::Lock { path, .. } => write!(
                f,
                "could not lock {} (fscache needs flock support for add, inc, dec, update \
                 and delete; some network filesystems lack it)",
                path.display()
            ),
            Error::Reentrant { op } => write!(
                f,
                "{op} was called while this thread holds a stripe lock of the same cache \
                 (from inside an update closure); it would deadlock, so nothing was done. \
                 Inside update closures call only get, get_bytes, has, set and set_bytes, \
                 or do the work after update returns"
            ),
            Error::UnsupportedFilesystem { path, missing, .. } => write!(
                f,
                "the filesystem of {} does not support {missing}, which fscache needs to keep \
                 concurrent writers correct; put the cache on a local filesystem (ext4, xfs, \
                 btrfs, tmpfs) or one that supports it",
                path.display()
            ),
            Error::Conflict { key, attempts } => write!(
                f,
                "gave up on updating {key:?} after {attempts} compare-and-set attempts lost \
                 to concurrent writers; nothing was written, retry later"
            ),
            Error::Callback { .. } => write!(f, "a merge closure failed; nothing was written"),
            Error::Engine {
                engine,
                op,
                kind,
                retryable,
                ..
            } => {
                let what = match kind {
                    EngineErrorKind::Timeout => Some("timeout"),
                    EngineErrorKind::Unavailable => Some("unavailable"),
                    EngineErrorKind::Conflict => Some("conflict with a concurrent call"),
                    EngineErrorKind::Auth => Some("authentication failed"),
                    EngineErrorKind::Refused => Some("refused by the engine"),
                    EngineErrorKind::Other => None,
                };
                let retry = retryable.then_some("retrying can help");
                write!(f, "{engine} {op} failed")?;
                match (what, retry) {
                    (Some(a), Some(b)) => write!(f, " ({a}; {b})"),
                    (Some(a), None) | (None, Some(a)) => write!(f, " ({a})"),
                    (None, None) => Ok(()),
                }
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. }
            | Error::Lock { source, .. }
            | Error::UnsupportedFilesystem { source, .. } => Some(source),
            Error::Serialize { source, .. }
            | Error::Deserialize { source, .. }
            | Error::Engine { source, .. }
            | Error::Callback { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

impl From<Error> for io::Error {
    /// Keeps the original `ErrorKind` for I/O errors; everything else is `Other`.
    fn from(err: Error) -> Self {
        match err.io_kind() {
            Some(kind) => io::Error::new(kind, err),
            None => io::Error::other(err),
        }
    }
}
