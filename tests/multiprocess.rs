//! Several real processes on one directory. The test binary re-runs itself as the
//! child (`FSCACHE_CHILD` names the job), so no helper binary is needed.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{TestResult, entry_files, temp_cache_dir};
use fscache::{EVICT_PER_STEP, FileSystemCache, Ttl};

const PROCS: usize = 6;

/// Runs `job` in `n` child processes at once; returns their stdouts.
fn spawn_children(dir: &Path, job: &str, n: usize) -> Vec<String> {
    let children: Vec<_> = (0..n)
        .map(|i| {
            common::child_command(job, dir, i)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn child")
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("child output");
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "child failed: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            stdout
        })
        .collect()
}

/// The child side. Does nothing unless started by `spawn_children`.
#[test]
fn child_entry_point() -> TestResult {
    let Ok(job) = std::env::var("FSCACHE_CHILD") else {
        return Ok(());
    };
    let dir = std::env::var("FSCACHE_CHILD_DIR")?;
    let id: usize = std::env::var("FSCACHE_CHILD_ID")?.parse()?;
    match job.as_str() {
        "inc" => {
            let c = FileSystemCache::builder(&dir).threshold(0).open()?;
            for _ in 0..200 {
                c.inc("counter", 1)?;
            }
        }
        "add" => {
            let c = FileSystemCache::builder(&dir).threshold(0).open()?;
            let won = c.add("once", &id, Ttl::Never)?;
            println!("RESULT {}", if won { "won" } else { "lost" });
        }
        "update" => {
            let c = FileSystemCache::builder(&dir).threshold(0).open()?;
            for n in 0..50 {
                c.update("list", Ttl::Never, |cur: Option<Vec<(usize, usize)>>| {
                    let mut cur = cur.unwrap_or_default();
                    cur.push((id, n));
                    Some(cur)
                })?;
            }
        }
        "churn" => {
            let c = FileSystemCache::builder(&dir).threshold(100).open()?;
            for n in 0..400 {
                c.set(&format!("p{id}-k{n}"), &n)?;
                // Read back recent writes of this process: never wrong data.
                if let Some(v) = c.get::<usize>(&format!("p{id}-k{n}"))? {
                    assert_eq!(v, n);
                }
            }
            let s = c.stats();
            println!("RESULT {}/{}/{}", s.steps, s.evicted, s.sweeps);
        }
        other => panic!("unknown job {other}"),
    }
    Ok(())
}

fn results(outputs: &[String]) -> Vec<String> {
    outputs
        .iter()
        .flat_map(|o| o.lines())
        // The harness prints "test name ... " before the test's own output.
        .filter_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
        .map(|r| r.split_whitespace().next().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn inc_from_many_processes_gives_the_exact_total() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    FileSystemCache::open(&dir)?;
    spawn_children(&dir, "inc", PROCS);
    let c = FileSystemCache::open(&dir)?;
    assert_eq!(c.get::<i64>("counter")?, Some(200 * PROCS as i64));
    Ok(())
}

#[test]
fn add_from_many_processes_succeeds_exactly_once() -> TestResult {
    for _ in 0..3 {
        let (_tmp, dir) = temp_cache_dir();
        FileSystemCache::open(&dir)?;
        let out = spawn_children(&dir, "add", PROCS);
        let r = results(&out);
        assert_eq!(r.len(), PROCS);
        assert_eq!(r.iter().filter(|s| *s == "won").count(), 1, "{r:?}");
    }
    Ok(())
}

#[test]
fn update_from_many_processes_loses_nothing() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    FileSystemCache::open(&dir)?;
    spawn_children(&dir, "update", PROCS);
    let c = FileSystemCache::open(&dir)?;
    let mut list = c.get::<Vec<(usize, usize)>>("list")?.expect("list");
    assert_eq!(list.len(), 50 * PROCS);
    list.sort();
    list.dedup();
    assert_eq!(list.len(), 50 * PROCS);
    Ok(())
}

#[test]
fn threshold_count_stays_bounded_across_processes() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    FileSystemCache::builder(&dir).threshold(100).open()?;
    let out = spawn_children(&dir, "churn", PROCS);
    let (mut steps, mut evicted) = (0u64, 0u64);
    for r in results(&out) {
        let n: Vec<u64> = r.split('/').map(|x| x.parse().unwrap()).collect();
        steps += n[0];
        evicted += n[1];
        assert_eq!(n[2], 0, "no write ran a full sweep");
    }
    let files = entry_files(&dir).len();
    // The documented bound: the threshold plus the writers in flight.
    assert!(files <= 100 + PROCS, "{files} entries on disk");
    // 2,400 inserts at threshold 100: every insert past it evicts about one entry.
    assert!(evicted as usize >= 2400 - 100 - PROCS, "{evicted} evicted");
    assert!(steps >= evicted / EVICT_PER_STEP as u64, "{steps} steps");
    let c = FileSystemCache::builder(&dir).threshold(100).open()?;
    let approx = c.approximate_len();
    assert!(
        approx.abs_diff(files) <= PROCS,
        "shared count {approx} vs {files} files"
    );
    assert_eq!(c.len()?, files, "all entries live (default TTL)");
    assert_eq!(
        c.approximate_len(),
        files,
        "len corrected the count exactly"
    );
    std::thread::sleep(Duration::from_millis(1));
    assert!(common::temp_files(&dir).is_empty());
    Ok(())
}
