//! Options: TTLs, durability, and the builder.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::codec::Format;
pub use crate::engine::Durability;
use crate::engine::{Config, EVICTION_SAMPLES, Eviction, STALE_TEMP_AGE};
use crate::error::{Error, Result};

/// How long an entry lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Ttl {
    /// The cache's default TTL (see [`FileSystemCacheBuilder::default_ttl`]).
    #[default]
    Default,
    /// Never expires (it can still be evicted by the threshold, last of all).
    Never,
    /// Expires after this long, counted in whole milliseconds (rounded up). Must not
    /// be zero: use [`Ttl::Never`] for "no expiry".
    After(Duration),
}

/// Builds a [`FileSystemCache`](crate::FileSystemCache) with options; see
/// [`FileSystemCache::builder`](crate::FileSystemCache::builder).
#[derive(Clone, Debug)]
#[must_use = "call .open() to open the cache"]
pub struct FileSystemCacheBuilder {
    /// What the engine gets, once checked (its codec is set from `format` then).
    config: Config,
    format: Format,
}

/// The environment variable that forces [`RenameMode::Portable`](crate::RenameMode)
/// (value `1`); for running test suites in the portable mode.
pub const FORCE_PORTABLE_ENV: &str = "FSCACHE_FORCE_PORTABLE_RENAME";

/// Largest value size `max_value_size` accepts: the entry format stores a `u32` length.
pub const MAX_VALUE_SIZE_LIMIT: usize = u32::MAX as usize - 1;

impl FileSystemCacheBuilder {
    pub(crate) fn new(dir: &Path) -> Self {
        FileSystemCacheBuilder {
            config: Config {
                dir: dir.to_path_buf(),
                threshold: 500,
                max_bytes: 0,
                low_water_percent: 50,
                default_ttl: Some(Duration::from_secs(300)),
                codec: Format::Json.codec(),
                file_mode: 0o600,
                dir_mode: 0o700,
                durability: Durability::Rename,
                max_value_size: 16 << 20,
                clock: Arc::new(SystemClock),
                force_portable_renames: std::env::var_os(FORCE_PORTABLE_ENV)
                    .is_some_and(|v| v == "1"),
                stale_temp_age: STALE_TEMP_AGE,
                expiry_budget: 8,
                existing_only: false,
                eviction_samples: EVICTION_SAMPLES,
                eviction: Eviction::NearestExpiry,
            },
            format: Format::Json,
        }
    }

    /// Which entries go first when the cache is past its threshold. Default:
    /// [`Eviction::NearestExpiry`], cachelib's order. See [`Eviction`] for what each
    /// policy costs and how exact its order is.
    ///
    /// ```
    /// # fn main() -> fscache::Result<()> {
    /// # let tmp = std::env::temp_dir().join(format!("fscache-doc-lru-{}", std::process::id()));
    /// use fscache::{Eviction, FileSystemCache};
    /// let thumbnails = FileSystemCache::builder(&tmp)
    ///     .threshold(10_000)
    ///     .no_default_ttl()
    ///     .eviction(Eviction::LeastRecentlyUsed)
    ///     .open()?;
    /// thumbnails.set_bytes("img/1.png", b"...")?;
    /// assert!(thumbnails.get_bytes("img/1.png")?.is_some());
    /// # drop(thumbnails);
    /// # std::fs::remove_dir_all(&tmp).ok();
    /// # Ok(())
    /// # }
    /// ```
    pub fn eviction(mut self, policy: Eviction) -> Self {
        self.config.eviction = policy;
        self
    }

    /// How many entry headers a write's eviction step reads to refresh its candidate
    /// pool (Redis's `maxmemory-samples`), 1 to 1,024. Default:
    /// [`EVICTION_SAMPLES`](crate::EVICTION_SAMPLES). More samples evict closer to the
    /// exact nearest-expiry order at a higher cost per insert past the threshold; see
    /// the crate docs for measured figures.
    pub fn eviction_samples(mut self, headers: usize) -> Self {
        self.config.eviction_samples = headers;
        self
    }

    /// How many entry headers the automatic expiry step reads; 0 turns it off.
    /// Default: 8.
    ///
    /// Now and then a write runs one bounded step (it never waits) that reads up to
    /// this many headers, 64 names or 9 shard directories and removes the expired and
    /// damaged entries it meets, and reads another such round while a quarter or more
    /// of what it read was expired (16 rounds or 2 ms at most), so expired entries go
    /// even when the cache is below its threshold or unbounded — sessions with
    /// `threshold(0)` clean up after themselves. Steps come every 32 writes of a handle
    /// at first, every 8 while they find mostly expired entries, up to every 1,024
    /// while they find none, and not at all while no entry on disk can have expired
    /// (see the crate docs, "Expiry without a threshold"). Under any write mix the
    /// files on disk stay within 2 × the live entries. The cost once an entry has
    /// expired is 0.05 syscalls per write, amortized, in a cache where nothing more
    /// expires, and grows with what there is to remove. A budget of 0 saves that and
    /// leaves expired entries to eviction steps,
    /// [`prune_step`](crate::FileSystemCache::prune_step) and
    /// [`prune`](crate::FileSystemCache::prune).
    pub fn expiry_budget(mut self, entries: usize) -> Self {
        self.config.expiry_budget = entries;
        self
    }

    /// Test switch: commit with the portable mode ([`RenameMode::Portable`]) even where
    /// `renameat2` flags work, so its code runs on every machine. Also set by the
    /// environment variable `FSCACHE_FORCE_PORTABLE_RENAME=1`. Every process sharing
    /// a directory must use one mode. Default: off.
    ///
    /// [`RenameMode::Portable`]: crate::RenameMode::Portable
    #[doc(hidden)]
    pub fn force_portable_renames(mut self, on: bool) -> Self {
        self.config.force_portable_renames = on;
        self
    }

    /// Test switch: how old (by ctime) a temp or moved-aside file must be before a
    /// sweep removes it. Default: [`STALE_TEMP_AGE`](crate::STALE_TEMP_AGE).
    #[doc(hidden)]
    pub fn stale_temp_age(mut self, age: Duration) -> Self {
        self.config.stale_temp_age = age;
        self
    }

    /// The number of entries above which the cache evicts; 0 = unbounded.
    /// Default: 500 (cachelib's default).
    ///
    /// A write that takes the count past the threshold runs one bounded eviction
    /// step: expired and damaged entries it meets go, then the nearest-expiry entries
    /// of its candidate pool (never-expiring ones last) until the count is back at the
    /// threshold. That step never evicts the entry its own write made, so a `set`
    /// followed by a `get` in one thread finds the value (another writer's step may
    /// evict it later). No write sweeps the directory. See the crate docs ("Threshold") for
    /// the bound on overshoot, the latency and how exact the order is.
    pub fn threshold(mut self, entries: usize) -> Self {
        self.config.threshold = entries;
        self
    }

    /// A byte budget: the cache keeps the total length of its entry files (the
    /// encoded values plus their keys and 52 bytes of header and checksum each) at or
    /// under `bytes`. 0 (the default) means none. Works alone or with
    /// [`threshold`](Self::threshold); each write that leaves the total past the budget
    /// runs the same bounded eviction step as one past the threshold (no write scans
    /// the directory), in the [`eviction`](Self::eviction) order.
    ///
    /// - **Overshoot.** The total exceeds the budget by at most what writes in flight
    ///   add (each write past it runs a step that evicts up to
    ///   [`EVICT_PER_STEP`](crate::EVICT_PER_STEP) entries until the total is back
    ///   under): 20 MiB of 4 KiB values written into a 1 MiB budget by one writer
    ///   never left more than the budget on disk; with four writer threads the total
    ///   was at most 11.6 KiB (under 3 entries) past it at any instant
    ///   (`tests/byte_budget.rs`).
    /// - **Per handle, like the threshold.** A handle enforces its own budget; a
    ///   handle without one evicts nothing for it (it keeps the total, below).
    /// - **Shared.** The total lives in the state file beside the count. The first
    ///   handle opened with a budget counts the files already there; from then on
    ///   every handle on the directory keeps the total, with a budget or not (an
    ///   overwrite or a delete then costs one `fstatat` more, for the replaced file's
    ///   length). It is exact per operation, except that a delete racing an
    ///   overwrite of the same key may miscount by the difference; a quiet
    ///   [`len`](crate::FileSystemCache::len) or
    ///   [`prune`](crate::FileSystemCache::prune) corrects it.
    /// - **Lengths, not blocks.** The filesystem rounds each file up to its block size
    ///   (4 KiB on most); budget for that with small values.
    /// - A value whose entry alone is larger than the budget is refused with
    ///   [`Error::OverByteBudget`](crate::Error::OverByteBudget).
    ///
    /// [`Stats::bytes`](crate::Stats::bytes) and `fscache stats` report the total
    /// against the budget; [`prune`](crate::FileSystemCache::prune) evicts down to
    /// [`low_water_percent`](Self::low_water_percent) of it.
    ///
    /// ```
    /// # fn main() -> fscache::Result<()> {
    /// # let tmp = std::env::temp_dir().join(format!("fscache-doc-bytes-{}", std::process::id()));
    /// use fscache::{Eviction, FileSystemCache};
    /// let artifacts = FileSystemCache::builder(&tmp)
    ///     .threshold(0)
    ///     .max_bytes(64 << 20)
    ///     .eviction(Eviction::LeastRecentlyUsed)
    ///     .open()?;
    /// artifacts.set_bytes("build/abc123", &[0u8; 4096])?;
    /// assert!(artifacts.stats().bytes.unwrap() >= 4096);
    /// # drop(artifacts);
    /// # std::fs::remove_dir_all(&tmp).ok();
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.config.max_bytes = bytes;
        self
    }

    /// How full a full sweep ([`prune`](crate::FileSystemCache::prune)) leaves the
    /// cache when it is past its threshold, in percent of the threshold (1–99).
    /// Default: 50. Writes' bounded steps evict only down to the threshold itself.
    pub fn low_water_percent(mut self, percent: u8) -> Self {
        self.config.low_water_percent = percent;
        self
    }

    /// The TTL used by `set` and [`Ttl::Default`]. Default: 300 seconds (cachelib's).
    /// Must not be zero; use [`no_default_ttl`](Self::no_default_ttl) for no expiry.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.config.default_ttl = Some(ttl);
        self
    }

    /// Entries written with [`Ttl::Default`] never expire.
    pub fn no_default_ttl(mut self) -> Self {
        self.config.default_ttl = None;
        self
    }

    /// How typed values are encoded. Default: [`Format::Json`].
    pub fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// Permission bits of entry files. Default: `0o600`. Must include owner read and
    /// write; the process umask is honoured only if it removes none of these bits
    /// (otherwise they are set explicitly).
    pub fn file_mode(mut self, mode: u32) -> Self {
        self.config.file_mode = mode;
        self
    }

    /// Permission bits of directories the cache creates. Default: `0o700`. Must
    /// include owner read, write and search.
    pub fn dir_mode(mut self, mode: u32) -> Self {
        self.config.dir_mode = mode;
        self
    }

    /// Crash guarantees of writes. Default: [`Durability::Rename`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.config.durability = durability;
        self
    }

    /// Largest encoded value accepted by `set`, in bytes; larger ones are refused
    /// with [`Error::ValueTooLarge`], and larger files on disk are treated as damaged.
    /// Default: 16 MiB. At most [`MAX_VALUE_SIZE_LIMIT`].
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.config.max_value_size = bytes;
        self
    }

    /// The clock used for expiry. Default: [`SystemClock`]. Tests use
    /// [`ManualClock`](crate::ManualClock).
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.config.clock = Arc::new(clock);
        self
    }

    /// The engine's configuration, once the options are checked.
    pub(crate) fn into_config(self) -> Result<Config> {
        self.validate()?;
        Ok(Config {
            codec: self.format.codec(),
            ..self.config
        })
    }

    fn validate(&self) -> Result<()> {
        let config = |message: String| Err(Error::Config { message });
        if self.config.file_mode & !0o777 != 0 || self.config.file_mode & 0o600 != 0o600 {
            return config(format!(
                "file_mode {:#o} must be permission bits (at most 0o777) including owner \
                 read and write (0o600)",
                self.config.file_mode
            ));
        }
        if self.config.dir_mode & !0o777 != 0 || self.config.dir_mode & 0o700 != 0o700 {
            return config(format!(
                "dir_mode {:#o} must be permission bits (at most 0o777) including owner \
                 read, write and search (0o700)",
                self.config.dir_mode
            ));
        }
        if !(1..=1024).contains(&self.config.eviction_samples) {
            return config(format!(
                "eviction_samples {} must be between 1 and 1024",
                self.config.eviction_samples
            ));
        }
        if !(1..=99).contains(&self.config.low_water_percent) {
            return config(format!(
                "low_water_percent {} must be between 1 and 99",
                self.config.low_water_percent
            ));
        }
        if self.config.default_ttl == Some(Duration::ZERO) {
            return config(
                "default_ttl must not be zero; use no_default_ttl() for entries that never \
                 expire"
                    .into(),
            );
        }
        if let Some(ttl) = self.config.default_ttl {
            ttl_millis(ttl)?;
        }
        if self.config.max_value_size == 0 || self.config.max_value_size > MAX_VALUE_SIZE_LIMIT {
            return config(format!(
                "max_value_size {} must be between 1 and {MAX_VALUE_SIZE_LIMIT}",
                self.config.max_value_size
            ));
        }
        if !self.format.is_available() {
            return config(format!(
                "format {:?} needs the crate feature that enables it",
                self.format
            ));
        }
        Ok(())
    }
}

/// A TTL in whole milliseconds, rounded up, refusing zero and overflow.
pub(crate) fn ttl_millis(ttl: Duration) -> Result<u64> {
    if ttl.is_zero() {
        return Err(Error::InvalidTtl {
            message: "a TTL of zero; use Ttl::Never for entries that never expire".into(),
        });
    }
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).map_err(|_| Error::InvalidTtl {
        message: format!("{ttl:?} does not fit in 64-bit milliseconds"),
    })
}

/// The absolute expiry (Unix ms, 0 = never) of an entry written `now_ms` with `ttl`.
pub(crate) fn expires_at(ttl: Ttl, default: Option<Duration>, now_ms: u64) -> Result<u64> {
    let ttl = match ttl {
        Ttl::Never => return Ok(0),
        Ttl::After(d) => d,
        Ttl::Default => match default {
            None => return Ok(0),
            Some(d) => d,
        },
    };
    let ms = ttl_millis(ttl)?;
    now_ms.checked_add(ms).ok_or_else(|| Error::InvalidTtl {
        message: format!("{ttl:?} from now is past the end of 64-bit Unix milliseconds"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_resolution() {
        let d = Some(Duration::from_secs(300));
        assert_eq!(expires_at(Ttl::Never, d, 1000).unwrap(), 0);
        assert_eq!(expires_at(Ttl::Default, d, 1000).unwrap(), 301_000);
        assert_eq!(expires_at(Ttl::Default, None, 1000).unwrap(), 0);
        assert_eq!(
            expires_at(Ttl::After(Duration::from_micros(1)), d, 1000).unwrap(),
            1001,
            "sub-millisecond TTLs round up"
        );
        assert!(matches!(
            expires_at(Ttl::After(Duration::ZERO), d, 1000),
            Err(Error::InvalidTtl { .. })
        ));
        assert!(matches!(
            expires_at(Ttl::After(Duration::MAX), d, 1000),
            Err(Error::InvalidTtl { .. })
        ));
        assert!(matches!(
            expires_at(Ttl::After(Duration::from_millis(u64::MAX - 10)), d, 1000),
            Err(Error::InvalidTtl { .. })
        ));
    }
}
