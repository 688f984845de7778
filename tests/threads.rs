//! Many threads on one directory: through one shared handle and through separate
//! handles (separate lock descriptors, as separate processes would have).

mod common;

use std::sync::Barrier;

use common::{TestResult, entry_files, temp_cache_dir};
use fscache::{FileSystemCache, Ttl};

const THREADS: usize = 8;

fn handles(dir: &std::path::Path, shared: bool, threshold: usize) -> Vec<FileSystemCache> {
    let first = FileSystemCache::builder(dir)
        .threshold(threshold)
        .open()
        .unwrap();
    (0..THREADS)
        .map(|_| {
            if shared {
                first.clone()
            } else {
                FileSystemCache::builder(dir)
                    .threshold(threshold)
                    .open()
                    .unwrap()
            }
        })
        .collect()
}

#[test]
fn inc_gives_the_exact_total() -> TestResult {
    for shared in [true, false] {
        let (_tmp, dir) = temp_cache_dir();
        let hs = handles(&dir, shared, 0);
        std::thread::scope(|s| {
            for h in &hs {
                s.spawn(move || {
                    for _ in 0..200 {
                        h.inc("n", 1).unwrap();
                    }
                });
            }
        });
        assert_eq!(
            hs[0].get::<i64>("n")?,
            Some(200 * THREADS as i64),
            "shared={shared}"
        );
    }
    Ok(())
}

#[test]
fn add_succeeds_exactly_once() -> TestResult {
    for round in 0..20 {
        let (_tmp, dir) = temp_cache_dir();
        let hs = handles(&dir, round % 2 == 0, 0);
        let barrier = Barrier::new(THREADS);
        let wins: usize = std::thread::scope(|s| {
            let joins: Vec<_> = hs
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        usize::from(h.add("once", &i, Ttl::Default).unwrap())
                    })
                })
                .collect();
            joins.into_iter().map(|j| j.join().unwrap()).sum()
        });
        assert_eq!(wins, 1);
    }
    Ok(())
}

#[test]
fn update_loses_no_append() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let hs = handles(&dir, false, 0);
    std::thread::scope(|s| {
        for (id, h) in hs.iter().enumerate() {
            s.spawn(move || {
                for n in 0..50 {
                    h.update("list", Ttl::Never, |cur: Option<Vec<(usize, usize)>>| {
                        let mut cur = cur.unwrap_or_default();
                        cur.push((id, n));
                        Some(cur)
                    })
                    .unwrap();
                }
            });
        }
    });
    assert_eq!(
        hs[0].get::<Vec<(usize, usize)>>("list")?.unwrap().len(),
        50 * THREADS
    );
    Ok(())
}

/// Mixed traffic under a small threshold: no errors, reads never see another key's
/// value or a partial one, the count stays within the documented bound.
#[test]
fn mixed_operations_with_sweeps_stay_correct_and_bounded() -> TestResult {
    let (_tmp, dir) = temp_cache_dir();
    let threshold = 200;
    let hs = handles(&dir, false, threshold);
    std::thread::scope(|s| {
        for (id, h) in hs.iter().enumerate() {
            s.spawn(move || {
                for n in 0..600usize {
                    let key = format!("k{}", (n * 7 + id) % 500);
                    match n % 5 {
                        0 | 1 => h.set(&key, &(key.clone(), n)).unwrap(),
                        2 => {
                            if let Some((k, _)) = h.get::<(String, usize)>(&key).unwrap() {
                                assert_eq!(k, key, "read another key's value");
                            }
                        }
                        3 => {
                            h.delete(&key).unwrap();
                        }
                        _ => {
                            h.update(&key, Ttl::Default, |cur: Option<(String, usize)>| {
                                if let Some((k, _)) = &cur {
                                    assert_eq!(k, &key);
                                }
                                Some((key.clone(), n))
                            })
                            .unwrap();
                        }
                    }
                }
            });
        }
    });
    let files = entry_files(&dir).len();
    assert!(files <= threshold + threshold / 4 + THREADS, "{files}");
    assert_eq!(hs[0].len()?, files);
    assert_eq!(hs[0].stats().damaged, 0);
    assert!(common::temp_files(&dir).is_empty());
    Ok(())
}
