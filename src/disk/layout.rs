//! Where things live in a cache directory.
//!
//! ```text
//! <dir>/FSCACHE              marker: "this directory is an fscache", format version
//! <dir>/fscache.state        shared live-entry counter (memory-mapped)
//! <dir>/locks/00 … 3f        stripe lock files; locks/sweep serializes sweeps
//! <dir>/00 … ff/             256 shard directories
//! <dir>/ab/ab12…(64 hex)     an entry: blake3(key) in hex, sharded by its first byte
//! <dir>/ab/.fscache-tmp-…    a write in progress (renamed over the entry when complete)
//! <dir>/ab/.fscache-evict-…  an entry being evicted (checked, then unlinked or restored)
//! <dir>/ab/.fscache-old-…    a replaced entry a write could not unlink (swept at once)
//! ```
//!
//! Keys never become path components: a key only chooses a hash, so no key can name
//! a path outside the cache.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) const MARKER: &str = "FSCACHE";
pub(crate) const STATE: &str = "fscache.state";
pub(crate) const LOCK_DIR: &str = "locks";
pub(crate) const SWEEP_LOCK: &str = "locks/sweep";
pub(crate) const SHARDS: usize = 256;
pub(crate) const STRIPES: usize = 64;
pub(crate) const TEMP_PREFIX: &str = ".fscache-tmp-";
pub(crate) const EVICT_PREFIX: &str = ".fscache-evict-";
/// A replaced entry that could not be unlinked after its write committed: litter that
/// sweeps remove whatever its age (nobody writes to it).
pub(crate) const OLD_PREFIX: &str = ".fscache-old-";
/// The on-disk format version named in the marker file.
pub(crate) const FORMAT_VERSION: u32 = 1;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The location of one key's entry file: `"ab/ab…"` relative to the cache directory.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct EntryPath {
    /// "ab/" followed by the 64-hex-digit hash.
    rel: [u8; 67],
}

impl EntryPath {
    pub(crate) fn for_key(key: &str) -> EntryPath {
        let hash = blake3::hash(key.as_bytes());
        let mut rel = [0u8; 67];
        for (i, b) in hash.as_bytes().iter().enumerate() {
            rel[3 + 2 * i] = HEX[(b >> 4) as usize];
            rel[3 + 2 * i + 1] = HEX[(b & 15) as usize];
        }
        rel[0] = rel[3];
        rel[1] = rel[4];
        rel[2] = b'/';
        EntryPath { rel }
    }

    /// Rebuilds the path of an entry file found in shard `shard` under `name`.
    pub(crate) fn from_name(shard: u8, name: &[u8]) -> Option<EntryPath> {
        if !is_entry_name(name) || name[..2] != shard_name(shard)[..] {
            return None;
        }
        let mut rel = [0u8; 67];
        rel[..2].copy_from_slice(&name[..2]);
        rel[2] = b'/';
        rel[3..].copy_from_slice(name);
        Some(EntryPath { rel })
    }

    /// `"ab/ab12…"`.
    /// 64 bits of the key's hash (the hex digits after the shard's), as a number.
    pub(crate) fn tag(&self) -> u64 {
        self.rel[3..19]
            .iter()
            .fold(0u64, |t, &c| (t << 4) | u64::from(hex_val(c)))
    }

    pub(crate) fn rel(&self) -> &str {
        std::str::from_utf8(&self.rel).expect("ASCII hex")
    }

    /// `"ab"`.
    pub(crate) fn shard_rel(&self) -> &str {
        &self.rel()[..2]
    }

    #[cfg(test)]
    pub(crate) fn shard(&self) -> u8 {
        (hex_val(self.rel[0]) << 4) | hex_val(self.rel[1])
    }

    /// The stripe lock guarding read-modify-write of this key.
    pub(crate) fn stripe(&self) -> usize {
        // Bits of the hash other than the shard's, so one shard spreads over stripes.
        ((hex_val(self.rel[5]) as usize) << 4 | hex_val(self.rel[6]) as usize) % STRIPES
    }

    /// A unique sibling name in the same shard: `"ab/<prefix><id>"`.
    pub(crate) fn sibling(&self, prefix: &str, id: u64) -> String {
        format!("{}/{prefix}{id:016x}", self.shard_rel())
    }
}

impl std::fmt::Debug for EntryPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.rel())
    }
}

fn hex_val(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        _ => c - b'a' + 10,
    }
}

/// `"00"` … `"ff"`.
pub(crate) fn shard_name(shard: u8) -> [u8; 2] {
    [HEX[(shard >> 4) as usize], HEX[(shard & 15) as usize]]
}

pub(crate) fn shard_str(shard: u8) -> String {
    String::from_utf8(shard_name(shard).to_vec()).expect("ASCII hex")
}

/// Whether a file name is an entry name: 64 lowercase hex digits.
pub(crate) fn is_entry_name(name: &[u8]) -> bool {
    name.len() == 64 && name.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

pub(crate) fn lock_rel(stripe: usize) -> String {
    format!("{LOCK_DIR}/{stripe:02x}")
}

/// A process-unique, practically globally unique id for one write: it names the temp
/// file and is stored in the entry header (the version a compare-and-set checks), so
/// pruning can tell two writes of one key apart even when the filesystem reuses
/// inode numbers. The nonce is drawn again in a forked child, so pre-fork workers
/// never share a sequence.
pub(crate) fn next_write_id() -> u64 {
    // The fork generation the nonce was drawn in, plus 1 (0: not drawn yet).
    static SEEDED: AtomicU64 = AtomicU64::new(0);
    static NONCE: AtomicU64 = AtomicU64::new(0);
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let generation = super::fork::generation().wrapping_add(1);
    if SEEDED.load(Ordering::Acquire) != generation {
        // RandomState is seeded from the OS's randomness; mix in the pid and time too.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u64(generation);
        if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(t.as_nanos());
        }
        // Two threads reseeding at once each store a fresh random nonce: either is
        // as good (ids stay unique with overwhelming probability).
        NONCE.store(h.finish(), Ordering::Relaxed);
        SEEDED.store(generation, Ordering::Release);
    }
    // An odd multiplier makes the sequence a bijection: no repeats within a process.
    NONCE.load(Ordering::Relaxed).wrapping_add(
        COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins key → path: changing it orphans every existing entry.
    #[test]
    fn golden_key_to_path() {
        let p = EntryPath::for_key("user:42");
        let hash = blake3::hash(b"user:42").to_hex();
        assert_eq!(p.rel(), format!("{}/{}", &hash[..2], hash));
        assert_eq!(
            EntryPath::for_key("").rel(),
            "af/af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(EntryPath::for_key("").shard(), 0xaf);
    }

    #[test]
    fn hostile_keys_stay_inside() {
        for key in [
            "../x",
            "/etc/passwd",
            "a/b",
            "\0",
            "..",
            ".",
            &"k".repeat(10_000),
        ] {
            let p = EntryPath::for_key(key);
            let (shard, name) = p.rel().split_once('/').unwrap();
            assert_eq!(shard.len(), 2);
            assert!(is_entry_name(name.as_bytes()));
        }
    }

    #[test]
    fn from_name_round_trips_and_rejects_foreign_names() {
        let p = EntryPath::for_key("k");
        let name = &p.rel().as_bytes()[3..];
        assert_eq!(EntryPath::from_name(p.shard(), name), Some(p));
        assert_eq!(EntryPath::from_name(p.shard().wrapping_add(1), name), None);
        assert_eq!(EntryPath::from_name(p.shard(), b"notes.txt"), None);
        assert_eq!(
            EntryPath::from_name(p.shard(), &name.to_ascii_uppercase()),
            None
        );
    }

    #[test]
    fn write_ids_are_distinct() {
        let ids: std::collections::HashSet<u64> = (0..10_000).map(|_| next_write_id()).collect();
        assert_eq!(ids.len(), 10_000);
    }
}
