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
    Io {
        /// What fscache was doing ("create temp file", "rename entry", …).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error; its [`io::ErrorKind`] is preserved.
        source: io::Error,
    },
    /// The directory is not empty and holds no fscache marker file.
    NotACache {
        /// The directory given to `open`.
        path: PathBuf,
    },
    /// The directory was created by an fscache with another on-disk format.
    IncompatibleFormat {
        /// The directory given to `open`.
        path: PathBuf,
        /// What the marker file says.
        found: String,
        /// The format version this build reads and writes.
        supported: u32,
    },
    /// An option passed to the builder is invalid.
    Config {
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A time-to-live that cannot be represented (zero, or past the year 584 million).
    InvalidTtl {
        /// Why it was refused.
        message: String,
    },
    /// A key longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) bytes.
    KeyTooLong {
        /// The key's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value whose encoded size exceeds the configured limit.
    ValueTooLarge {
        /// The key it was to be stored under.
        key: String,
        /// Its encoded size in bytes.
        size: usize,
        /// The configured limit (see `FileSystemCacheBuilder::max_value_size`).
        max: usize,
    },
    /// A value could not be serialized; nothing was written.
    Serialize {
        /// The key it was to be stored under.
        key: String,
        /// The serializer's error.
        source: BoxError,
    },
    /// A stored value could not be deserialized into the requested type. The entry is
    /// intact (its checksum matched); the type asked for does not fit it.
    Deserialize {
        /// The key read.
        key: String,
        /// The deserializer's error.
        source: BoxError,
    },
    /// `inc`/`dec` would overflow an `i64`; the stored value is unchanged.
    Overflow {
        /// The counter's key.
        key: String,
    },
    /// A stored entry uses a codec this build was compiled without.
    UnsupportedCodec {
        /// The key read or written.
        key: String,
        /// The codec's name.
        codec: &'static str,
    },
    /// A cross-process lock could not be taken.
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The underlying error (`Unsupported` on filesystems without `flock`).
        source: io::Error,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The [`io::ErrorKind`] behind an `Io` or `Lock` error, if any.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Error::Io { source, .. } | Error::Lock { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, path, source } => {
                write!(f, "{op} failed for {}: {source}", path.display())
            }
            Error::NotACache { path } => write!(
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
            Error::Serialize { key, source } => {
                write!(f, "could not serialize the value for key {key:?}: {source}")
            }
            Error::Deserialize { key, source } => write!(
                f,
                "the value stored under key {key:?} does not deserialize into the requested \
                 type: {source}"
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
            Error::Lock { path, source } => write!(
                f,
                "could not lock {}: {source} (fscache needs flock support for add, inc, dec \
                 and update; network filesystems may lack it)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } | Error::Lock { source, .. } => Some(source),
            Error::Serialize { source, .. } | Error::Deserialize { source, .. } => {
                Some(source.as_ref())
            }
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
