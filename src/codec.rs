//! Value encodings: JSON and MessagePack through serde, and raw bytes.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::disk::entry::Codec;
use crate::error::{Error, Result};

/// How typed values (`set`, `get::<T>`) are encoded on disk.
///
/// Every entry records its codec, so a cache reopened with another format still
/// reads what the old one wrote; new writes use the new format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// `serde_json`: readable with any tool, the default. Feature `json`.
    #[default]
    Json,
    /// `rmp-serde` with named fields: smaller and faster. Feature `msgpack`.
    MessagePack,
}

impl Format {
    pub(crate) fn codec(self) -> Codec {
        match self {
            Format::Json => Codec::Json,
            Format::MessagePack => Codec::MessagePack,
        }
    }

    /// Whether this build can encode the format (its crate feature is enabled).
    pub(crate) fn is_available(self) -> bool {
        match self {
            Format::Json => cfg!(feature = "json"),
            Format::MessagePack => cfg!(feature = "msgpack"),
        }
    }
}

/// Appends `value` encoded with `codec` to `out`.
#[cfg_attr(
    not(all(feature = "json", feature = "msgpack")),
    allow(unused_variables, clippy::ptr_arg)
)]
pub(crate) fn encode<T: Serialize + ?Sized>(
    codec: Codec,
    key: &str,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<()> {
    let failed = |source| Error::Serialize {
        key: key.to_owned(),
        source,
    };
    match codec {
        #[cfg(feature = "json")]
        Codec::Json => {
            let start = out.len();
            serde_json::to_writer(&mut *out, value).map_err(|e| failed(e.into()))?;
            // NaN and infinities were written as null: refuse them rather than store
            // a value that reads back as something else.
            if out[start..].windows(4).any(|w| w == b"null") {
                crate::finite::check(value).map_err(|e| failed(e.into()))?;
            }
            Ok(())
        }
        #[cfg(feature = "msgpack")]
        Codec::MessagePack => {
            rmp_serde::encode::write_named(out, value).map_err(|e| failed(e.into()))
        }
        Codec::Raw => unreachable!("typed values are never encoded as raw bytes"),
        #[allow(unreachable_patterns)]
        other => Err(Error::UnsupportedCodec {
            key: key.to_owned(),
            codec: other.name(),
        }),
    }
}

/// Decodes a payload stored with `codec`.
#[cfg_attr(
    not(all(feature = "json", feature = "msgpack")),
    allow(unused_variables, clippy::ptr_arg)
)]
pub(crate) fn decode<T: DeserializeOwned>(codec: Codec, key: &str, payload: &[u8]) -> Result<T> {
    let failed = |source| Error::Deserialize {
        key: key.to_owned(),
        source,
    };
    match codec {
        #[cfg(feature = "json")]
        Codec::Json => serde_json::from_slice(payload).map_err(|e| failed(e.into())),
        #[cfg(feature = "msgpack")]
        Codec::MessagePack => rmp_serde::from_slice(payload).map_err(|e| failed(e.into())),
        Codec::Raw => Err(failed(
            "the entry holds raw bytes written by set_bytes; read it with get_bytes".into(),
        )),
        #[allow(unreachable_patterns)]
        other => Err(Error::UnsupportedCodec {
            key: key.to_owned(),
            codec: other.name(),
        }),
    }
}
