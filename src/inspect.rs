//! Reading one entry file on its own, for tools (`fscache inspect FILE`).

use std::io;
use std::path::Path;

use crate::disk::entry::{self, Codec, HEADER_LEN, Header};
use crate::disk::sys;

/// What one entry file holds, as far as it parses. See [`inspect_entry`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntryFile {
    /// The file's length in bytes.
    pub len: u64,
    /// The header's fields, if its 36 bytes parse and pass their check.
    pub header: Option<EntryHeader>,
    /// The stored key, if the whole file decodes.
    pub key: Option<String>,
    /// The payload, if the whole file decodes (its trailing checksum included).
    pub payload: Option<Vec<u8>>,
    /// Why the file is not a valid entry; `None` if it is one.
    pub damage: Option<String>,
}

/// The fixed header of an entry file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntryHeader {
    /// How the payload is encoded: `"raw"`, `"json"` or `"msgpack"`.
    pub codec: &'static str,
    /// Expiry in Unix milliseconds; `None` for an entry that never expires.
    pub expires_at_ms: Option<u64>,
    /// The unique id of the write that stored it.
    pub write_id: u64,
    /// Declared key length in bytes.
    pub key_len: u32,
    /// Declared payload length in bytes.
    pub payload_len: u32,
}

/// Decodes the bytes of one entry file without a cache handle, never failing:
/// whatever does not parse is described in [`EntryFile::damage`], and no field of a
/// damaged part is filled in (so a foreign file's bytes are never taken for data).
///
/// ```
/// # fn main() -> fscache::Result<()> {
/// let info = fscache::inspect_entry(b"not an entry");
/// assert!(info.header.is_none() && info.payload.is_none());
/// assert_eq!(info.damage.as_deref(), Some("file is truncated"));
/// # Ok(())
/// # }
/// ```
pub fn inspect_entry(bytes: &[u8]) -> EntryFile {
    let mut info = EntryFile {
        len: bytes.len() as u64,
        header: None,
        key: None,
        payload: None,
        damage: None,
    };
    match Header::parse(bytes) {
        Ok(h) => {
            info.header = Some(EntryHeader {
                codec: match h.codec {
                    Codec::Raw => "raw",
                    Codec::Json => "json",
                    Codec::MessagePack => "msgpack",
                },
                expires_at_ms: (h.expires_at != 0).then_some(h.expires_at),
                write_id: h.write_id,
                key_len: h.key_len,
                payload_len: h.payload_len,
            });
        }
        Err(d) => {
            info.damage = Some(d.to_string());
            return info;
        }
    }
    match entry::decode(bytes, crate::MAX_VALUE_SIZE_LIMIT) {
        Ok(e) => {
            info.key = Some(e.key.to_owned());
            info.payload = Some(e.payload.to_vec());
        }
        Err(d) => info.damage = Some(d.to_string()),
    }
    info
}

/// Reads the entry file at `path` the way the cache reads entries and describes it
/// with [`inspect_entry`]: a symlink is not followed, a FIFO or device is not opened
/// for reading (no hang, no endless `/dev/zero`), and no more is read than the
/// header declares (a file without a valid header: its first 4 KiB).
///
/// # Errors
/// [`io::Error`]s of opening and reading; `InvalidInput` for a symlink or a file
/// that is not a regular file (the message says which).
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// let link = dir.path().join("link");
/// std::os::unix::fs::symlink("/etc/passwd", &link)?;
/// assert!(fscache::inspect_file(&link).is_err()); // never followed
/// # Ok(())
/// # }
/// ```
pub fn inspect_file(path: impl AsRef<Path>) -> io::Result<EntryFile> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = path.as_ref();
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if sys::is_symlink_error(&e) {
                io::Error::new(io::ErrorKind::InvalidInput, "a symlink (not followed)")
            } else {
                e
            }
        })?;
    if !file.metadata()?.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (not read)",
        ));
    }
    let prefix = sys::read_prefix(&mut file, HEADER_LEN)?;
    let limit = Header::parse(&prefix).map_or(4096, |h| h.total_len());
    let mut rest = sys::read_entry_file(&mut file, limit.saturating_sub(prefix.len()))?;
    let mut bytes = prefix;
    bytes.append(&mut rest);
    Ok(inspect_entry(&bytes))
}

/// What a name that is not a regular file (a symlink, a FIFO) is described as.
pub(crate) fn not_an_entry(what: &str) -> EntryFile {
    EntryFile {
        len: 0,
        header: None,
        key: None,
        payload: None,
        damage: Some(what.to_owned()),
    }
}
