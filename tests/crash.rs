//! Crash-kill: a child process writes (set, overwrite, update, delete, set_bytes,
//! prune with sweeps, clear) in a loop on one directory and is killed with SIGKILL at
//! random moments. After every kill a checker verifies that every readable entry is
//! a complete, valid old-or-new value and that nothing errors on what was left;
//! at the end, stale temp files are swept by `prune` and `len()` is exact.
//!
//! `FSCACHE_CRASH_KILLS` sets the number of kills (default 200).

mod common;

use std::time::Duration;

use common::{TestResult, child_command, entry_files, temp_cache_dir, temp_files};
use fscache::{FileSystemCache, Ttl};
use serde::{Deserialize, Serialize};

const KEYS: u64 = 12;

/// A self-checking value: `sum` covers the other fields, and the filler's length
/// and content follow from `seq`, so a mix of two writes cannot pass.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Value {
    key: String,
    seq: u64,
    filler: String,
    sum: u64,
}

fn checksum(key: &str, seq: u64, filler: &str) -> u64 {
    let h = blake3::hash(format!("{key}|{seq}|{filler}").as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap())
}

fn make(key: &str, seq: u64) -> Value {
    let filler = char::from(b'a' + (seq % 26) as u8)
        .to_string()
        .repeat((seq % 4000) as usize);
    let sum = checksum(key, seq, &filler);
    Value {
        key: key.into(),
        seq,
        filler,
        sum,
    }
}

/// Complete and unmixed: exactly what `make` writes for its `seq`.
fn valid(key: &str, v: &Value) -> bool {
    *v == make(key, v.seq)
}

fn big_bytes(seq: u64) -> Vec<u8> {
    let mut b = vec![(seq % 251) as u8; 64 * 1024 + (seq % 1000) as usize];
    b[..8].copy_from_slice(&seq.to_le_bytes());
    b
}

fn big_valid(b: &[u8]) -> bool {
    b.len() >= 8 && b == big_bytes(u64::from_le_bytes(b[..8].try_into().unwrap()))
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn open(dir: &std::path::Path) -> FileSystemCache {
    FileSystemCache::builder(dir)
        .threshold(8)
        .open()
        .expect("open after a crash")
}

/// The writer. Does nothing unless started by the test below.
#[test]
fn child_entry_point() -> TestResult {
    let Ok(job) = std::env::var("FSCACHE_CHILD") else {
        return Ok(());
    };
    assert_eq!(job, "writer");
    let dir = std::env::var("FSCACHE_CHILD_DIR")?;
    let id: u64 = std::env::var("FSCACHE_CHILD_ID")?.parse()?;
    let cache = open(dir.as_ref());
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (id + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut seq = id * 1_000_000;
    loop {
        seq += 1;
        let key = format!("k{}", rng.next() % KEYS);
        match rng.next() % 100 {
            0..=39 => cache.set_with_ttl(&key, &make(&key, seq), Ttl::Never)?,
            40..=59 => {
                cache.update(&key, Ttl::Never, |cur: Option<Value>| {
                    let next = cur.map_or(seq, |v| v.seq + 1);
                    Some(make(&key, next))
                })?;
            }
            60..=74 => {
                cache.delete(&key)?;
            }
            75..=89 => cache.set_bytes_with_ttl(
                &format!("big{}", rng.next() % 4),
                &big_bytes(seq),
                Ttl::Never,
            )?,
            90..=97 => {
                cache.prune()?;
            }
            _ => {
                if rng.next().is_multiple_of(10) {
                    cache.clear()?;
                }
            }
        }
    }
}

#[test]
fn sigkilled_writers_never_leave_partial_or_mixed_entries() -> TestResult {
    let kills: usize = std::env::var("FSCACHE_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let (_tmp, dir) = temp_cache_dir();
    open(&dir);
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let (mut anomalies, mut readable, mut killed_while_running) = (0usize, 0usize, 0usize);
    for i in 0..kills {
        let mut child = child_command("writer", &dir, i)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(5 + rng.next() % 40));
        if child.try_wait()?.is_none() {
            killed_while_running += 1;
        }
        child.kill()?; // SIGKILL
        child.wait()?;

        // The checker: a fresh handle, every key.
        let cache = open(&dir);
        for k in 0..KEYS {
            let key = format!("k{k}");
            match cache.get::<Value>(&key) {
                Ok(Some(v)) => {
                    readable += 1;
                    if !valid(&key, &v) {
                        anomalies += 1;
                        eprintln!("kill {i}: invalid value under {key}: seq {}", v.seq);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    anomalies += 1;
                    eprintln!("kill {i}: get {key}: {e}");
                }
            }
        }
        for b in 0..4 {
            match cache.get_bytes(&format!("big{b}")) {
                Ok(Some(bytes)) if !big_valid(&bytes) => {
                    anomalies += 1;
                    eprintln!("kill {i}: big{b} is mixed");
                }
                Ok(_) => {}
                Err(e) => {
                    anomalies += 1;
                    eprintln!("kill {i}: get big{b}: {e}");
                }
            }
        }
        if cache.stats().damaged != 0 {
            anomalies += 1;
            eprintln!("kill {i}: a damaged (partial) file was found");
        }
    }
    eprintln!(
        "crash test: {kills} SIGKILLs ({killed_while_running} mid-run), {readable} entries checked, {anomalies} anomalies"
    );
    assert_eq!(anomalies, 0);
    assert!(
        killed_while_running >= kills * 9 / 10,
        "most kills hit a running writer"
    );

    // Temp files the killed writers left are swept once stale; len() is then exact.
    // Staleness is judged by ctime, which no test can set back: the hidden option makes
    // every leftover stale at once.
    let cache = FileSystemCache::builder(&dir)
        .threshold(8)
        .stale_temp_age(Duration::ZERO)
        .open()?;
    let temps = temp_files(&dir);
    let report = cache.prune()?;
    assert_eq!(report.stale_temp, temps.len());
    assert_eq!(report.damaged, 0);
    assert!(temp_files(&dir).is_empty());
    let files = entry_files(&dir).len();
    assert_eq!(cache.len()?, files);
    assert_eq!(cache.approximate_len(), files);
    eprintln!(
        "crash test: {} stale temp files swept, {files} entries left",
        temps.len()
    );
    Ok(())
}
