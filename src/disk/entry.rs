//! The bytes of one entry file.
//!
//! ```text
//! offset  size  field
//!      0     4  magic b"FSCE"
//!      4     1  format version (1)
//!      5     1  codec tag: 0 raw bytes, 1 JSON, 2 MessagePack
//!      6     2  reserved, zero
//!      8     8  expiry, Unix milliseconds, little-endian; 0 = never
//!     16     8  write id: unique per write, tells two writes of one key apart
//!     24     4  key length K, little-endian
//!     28     4  payload length P, little-endian
//!     32     4  header check: first 4 bytes of blake3(bytes 0..32)
//!     36     K  the key, UTF-8
//!   36+K     P  the payload
//! 36+K+P    16  checksum: first 16 bytes of blake3(bytes 0..36+K+P)
//! ```
//!
//! The header check lets `has` and pruning trust the expiry after reading 36 bytes;
//! the trailing checksum covers everything and is verified on every full read.
//! Every length is bounds-checked before use; anything that does not parse is
//! [`Damage`], never data.

/// Magic bytes at the start of every entry file.
/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 64 * 1024;

pub(crate) const MAGIC: [u8; 4] = *b"FSCE";
/// On-disk entry format version.
pub(crate) const VERSION: u8 = 1;
/// Bytes before the key.
pub(crate) const HEADER_LEN: usize = 36;
/// Bytes of the trailing checksum.
pub(crate) const CHECKSUM_LEN: usize = 16;

/// How the payload is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Codec {
    Raw = 0,
    Json = 1,
    MessagePack = 2,
}

impl Codec {
    fn from_tag(tag: u8) -> Option<Codec> {
        match tag {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Json),
            2 => Some(Codec::MessagePack),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Codec::Raw => "raw bytes",
            Codec::Json => "JSON",
            Codec::MessagePack => "MessagePack",
        }
    }
}

/// The expiry field of entry bytes this process just encoded (0: never).
pub(crate) fn expiry_of(bytes: &[u8]) -> u64 {
    bytes
        .get(8..16)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// The file length a header declares (header, key, payload, checksum).
pub(crate) fn total_len_of(header: &[u8; HEADER_LEN]) -> u64 {
    let le = |at: usize| u64::from(u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes")));
    (HEADER_LEN + CHECKSUM_LEN) as u64 + le(24) + le(28)
}

/// The fixed-size header, parsed and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub codec: Codec,
    /// Unix milliseconds; 0 = never.
    pub expires_at: u64,
    pub write_id: u64,
    pub key_len: u32,
    pub payload_len: u32,
}

/// Why bytes on disk are not an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Damage {
    Truncated,
    BadMagic,
    WrongVersion(u8),
    UnknownCodec(u8),
    BadHeaderCheck,
    BadChecksum,
    TrailingBytes,
    TooLarge,
    KeyNotUtf8,
    ReservedBits,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Truncated => f.write_str("file is truncated"),
            Damage::BadMagic => f.write_str("not an fscache entry (bad magic)"),
            Damage::WrongVersion(v) => write!(f, "entry format version {v} is not supported"),
            Damage::UnknownCodec(c) => write!(f, "unknown codec tag {c}"),
            Damage::BadHeaderCheck => f.write_str("header check mismatch"),
            Damage::BadChecksum => f.write_str("checksum mismatch"),
            Damage::TrailingBytes => f.write_str("bytes after the checksum"),
            Damage::TooLarge => f.write_str("declared length over the configured limit"),
            Damage::KeyNotUtf8 => f.write_str("stored key is not UTF-8"),
            Damage::ReservedBits => f.write_str("reserved header bytes are not zero"),
        }
    }
}

impl Header {
    /// Total file length this header declares.
    pub(crate) fn total_len(&self) -> usize {
        HEADER_LEN + self.key_len as usize + self.payload_len as usize + CHECKSUM_LEN
    }

    pub(crate) fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at != 0 && self.expires_at <= now_ms
    }

    /// Parses and checks the first [`HEADER_LEN`] bytes.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Header, Damage> {
        let Some(h) = bytes.get(..HEADER_LEN) else {
            return Err(Damage::Truncated);
        };
        if h[0..4] != MAGIC {
            return Err(Damage::BadMagic);
        }
        if h[4] != VERSION {
            return Err(Damage::WrongVersion(h[4]));
        }
        if header_check(&h[..32]) != h[32..36] {
            return Err(Damage::BadHeaderCheck);
        }
        let codec = Codec::from_tag(h[5]).ok_or(Damage::UnknownCodec(h[5]))?;
        if h[6..8] != [0, 0] {
            return Err(Damage::ReservedBits);
        }
        Ok(Header {
            codec,
            expires_at: u64::from_le_bytes(h[8..16].try_into().expect("8 bytes")),
            write_id: u64::from_le_bytes(h[16..24].try_into().expect("8 bytes")),
            key_len: u32::from_le_bytes(h[24..28].try_into().expect("4 bytes")),
            payload_len: u32::from_le_bytes(h[28..32].try_into().expect("4 bytes")),
        })
    }
}

fn header_check(first32: &[u8]) -> [u8; 4] {
    let hash = blake3::hash(first32);
    hash.as_bytes()[..4].try_into().expect("4 bytes")
}

fn checksum(bytes: &[u8]) -> [u8; CHECKSUM_LEN] {
    let hash = blake3::hash(bytes);
    hash.as_bytes()[..CHECKSUM_LEN]
        .try_into()
        .expect("16 bytes")
}

/// Builds an entry in one buffer: the caller appends the payload between
/// [`EntryWriter::start`] and [`EntryWriter::finish`], so serializers write in place.
pub(crate) struct EntryWriter {
    buf: Vec<u8>,
    payload_start: usize,
}

impl EntryWriter {
    pub(crate) fn start(
        codec: Codec,
        expires_at: u64,
        write_id: u64,
        key: &str,
        payload_hint: usize,
    ) -> EntryWriter {
        let mut buf = Vec::with_capacity(HEADER_LEN + key.len() + payload_hint + CHECKSUM_LEN);
        buf.extend_from_slice(&MAGIC);
        buf.push(VERSION);
        buf.push(codec as u8);
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&expires_at.to_le_bytes());
        buf.extend_from_slice(&write_id.to_le_bytes());
        // Key length is bounded by MAX_KEY_LEN, checked by the caller.
        buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
        buf.extend_from_slice(&[0; 4]); // payload length, patched in finish
        buf.extend_from_slice(&[0; 4]); // header check, patched in finish
        buf.extend_from_slice(key.as_bytes());
        let payload_start = buf.len();
        EntryWriter { buf, payload_start }
    }

    /// Where the payload goes.
    pub(crate) fn payload(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    pub(crate) fn payload_len(&self) -> usize {
        self.buf.len() - self.payload_start
    }

    /// Patches the lengths and checks in; the payload must fit in a `u32` (the caller
    /// enforces the value size limit first).
    pub(crate) fn finish(mut self) -> Vec<u8> {
        let payload_len = u32::try_from(self.payload_len()).expect("payload under limit");
        self.buf[28..32].copy_from_slice(&payload_len.to_le_bytes());
        let check = header_check(&self.buf[..32]);
        self.buf[32..36].copy_from_slice(&check);
        let sum = checksum(&self.buf);
        self.buf.extend_from_slice(&sum);
        self.buf
    }
}

/// A fully checked entry, borrowing the file's bytes.
#[derive(Debug)]
pub(crate) struct Entry<'a> {
    pub header: Header,
    pub key: &'a str,
    pub payload: &'a [u8],
}

/// Decodes a whole entry file. `max_payload` bounds the declared payload length.
pub(crate) fn decode(bytes: &[u8], max_payload: usize) -> Result<Entry<'_>, Damage> {
    let header = Header::parse(bytes)?;
    if header.payload_len as usize > max_payload || header.key_len as usize > MAX_KEY_LEN {
        return Err(Damage::TooLarge);
    }
    let total = header.total_len();
    if bytes.len() < total {
        return Err(Damage::Truncated);
    }
    if bytes.len() > total {
        return Err(Damage::TrailingBytes);
    }
    let body_end = total - CHECKSUM_LEN;
    if checksum(&bytes[..body_end]) != bytes[body_end..] {
        return Err(Damage::BadChecksum);
    }
    let key_end = HEADER_LEN + header.key_len as usize;
    let key = std::str::from_utf8(&bytes[HEADER_LEN..key_end]).map_err(|_| Damage::KeyNotUtf8)?;
    Ok(Entry {
        header,
        key,
        payload: &bytes[key_end..body_end],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = EntryWriter::start(
            Codec::Json,
            1_700_000_000_123,
            0x0102_0304_0506_0708,
            "k",
            2,
        );
        w.payload().extend_from_slice(b"42");
        w.finish()
    }

    const GOLDEN_HEX: &str = "46534345010100007b68e5cf8b010000080706050403020101000000020000007d0dd1ba6b343294dae4bd6c44277a82918c22d0aa1c73";

    /// Pins the on-disk format: changing any byte here is a format break and needs
    /// a new VERSION.
    #[test]
    fn golden_bytes() {
        let bytes = sample();
        let expected_prefix: &[u8] = &[
            b'F', b'S', b'C', b'E', 1, 1, 0, 0, // magic, version, codec, reserved
            0x7b, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0, 0, // expiry 1_700_000_000_123 LE
            8, 7, 6, 5, 4, 3, 2, 1, // write id LE
            1, 0, 0, 0, // key length
            2, 0, 0, 0, // payload length
        ];
        assert_eq!(&bytes[..32], expected_prefix);
        assert_eq!(&bytes[32..36], &blake3::hash(&bytes[..32]).as_bytes()[..4]);
        assert_eq!(&bytes[36..39], b"k42");
        assert_eq!(&bytes[39..], &blake3::hash(&bytes[..39]).as_bytes()[..16]);
        assert_eq!(bytes.len(), 55);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, GOLDEN_HEX);
    }

    #[test]
    fn round_trip() {
        let bytes = sample();
        let e = decode(&bytes, 1 << 20).unwrap();
        assert_eq!(e.key, "k");
        assert_eq!(e.payload, b"42");
        assert_eq!(e.header.codec, Codec::Json);
        assert_eq!(e.header.expires_at, 1_700_000_000_123);
        assert_eq!(e.header.write_id, 0x0102_0304_0506_0708);
    }

    #[test]
    fn every_truncation_is_damage() {
        let bytes = sample();
        for len in 0..bytes.len() {
            assert!(
                decode(&bytes[..len], 1 << 20).is_err(),
                "prefix of {len} bytes"
            );
        }
    }

    #[test]
    fn every_bit_flip_is_damage() {
        let bytes = sample();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(decode(&b, 1 << 20).is_err(), "flip byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn trailing_bytes_and_limits() {
        let mut bytes = sample();
        assert_eq!(decode(&bytes, 1).unwrap_err(), Damage::TooLarge);
        bytes.push(0);
        assert_eq!(decode(&bytes, 1 << 20).unwrap_err(), Damage::TrailingBytes);
    }

    #[test]
    fn huge_declared_lengths_do_not_allocate_or_panic() {
        let mut w = EntryWriter::start(Codec::Raw, 0, 0, "", 0);
        w.payload().extend_from_slice(b"x");
        let mut bytes = w.finish();
        bytes[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
        let check = header_check(&bytes[..32]);
        bytes[32..36].copy_from_slice(&check);
        assert_eq!(decode(&bytes, usize::MAX).unwrap_err(), Damage::Truncated);
    }
}
