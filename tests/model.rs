//! Model-based property test: random operation sequences against the cache and a
//! `HashMap` model with a fake clock. proptest shrinks a failure to a minimal
//! sequence.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use fscache::{Error, FileSystemCache, ManualClock, Ttl};
use proptest::prelude::*;

const DEFAULT_TTL_MS: u64 = 300_000;

#[derive(Clone, Debug)]
enum TtlChoice {
    Default,
    Never,
    Ms(u64),
}

impl TtlChoice {
    fn ttl(&self) -> Ttl {
        match self {
            TtlChoice::Default => Ttl::Default,
            TtlChoice::Never => Ttl::Never,
            TtlChoice::Ms(ms) => Ttl::After(Duration::from_millis(*ms)),
        }
    }
    fn expires(&self, now: u64) -> Option<u64> {
        match self {
            TtlChoice::Default => Some(now + DEFAULT_TTL_MS),
            TtlChoice::Never => None,
            TtlChoice::Ms(ms) => Some(now + ms),
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Set(u8, i64, TtlChoice),
    SetBytes(u8, Vec<u8>),
    Get(u8),
    GetBytes(u8),
    Has(u8),
    Delete(u8),
    Add(u8, i64, TtlChoice),
    Inc(u8, i64),
    Update(u8, TtlChoice, bool),
    Advance(u64),
    Clear,
    Prune,
    Len,
    Reopen,
}

#[derive(Clone, Debug, PartialEq)]
enum Val {
    Int(i64),
    Bytes(Vec<u8>),
}

fn ttl_strategy() -> impl Strategy<Value = TtlChoice> {
    prop_oneof![
        Just(TtlChoice::Default),
        Just(TtlChoice::Never),
        (1u64..5_000).prop_map(TtlChoice::Ms),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let key = 0u8..8;
    prop_oneof![
        4 => (key.clone(), -1000i64..1000, ttl_strategy()).prop_map(|(k, v, t)| Op::Set(k, v, t)),
        1 => (key.clone(), proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(k, b)| Op::SetBytes(k, b)),
        3 => key.clone().prop_map(Op::Get),
        1 => key.clone().prop_map(Op::GetBytes),
        2 => key.clone().prop_map(Op::Has),
        2 => key.clone().prop_map(Op::Delete),
        2 => (key.clone(), -1000i64..1000, ttl_strategy()).prop_map(|(k, v, t)| Op::Add(k, v, t)),
        2 => (key.clone(), -5i64..5).prop_map(|(k, d)| Op::Inc(k, d)),
        2 => (key.clone(), ttl_strategy(), any::<bool>()).prop_map(|(k, t, d)| Op::Update(k, t, d)),
        3 => (0u64..3_000).prop_map(Op::Advance),
        1 => Just(Op::Clear),
        1 => Just(Op::Prune),
        1 => Just(Op::Len),
        1 => Just(Op::Reopen),
    ]
}

struct Model {
    map: HashMap<String, (Val, Option<u64>)>,
}

impl Model {
    fn live(&self, k: &str, now: u64) -> Option<&Val> {
        match self.map.get(k) {
            Some((v, exp)) if exp.is_none_or(|e| now < e) => Some(v),
            _ => None,
        }
    }
    fn purge_expired(&mut self, now: u64) {
        self.map.retain(|_, (_, exp)| exp.is_none_or(|e| now < e));
    }
}

fn open(dir: &std::path::Path, threshold: usize, clock: &ManualClock) -> FileSystemCache {
    FileSystemCache::builder(dir)
        .threshold(threshold)
        .default_ttl(Duration::from_millis(DEFAULT_TTL_MS))
        .clock(clock.clone())
        .open()
        .expect("open")
}

fn run(ops: Vec<Op>, threshold: usize) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let clock = ManualClock::at(1_800_000_000_000);
    let mut cache = open(&dir, threshold, &clock);
    let mut model = Model {
        map: HashMap::new(),
    };
    // With a threshold, entries may be evicted: a miss is then allowed (and the model
    // forgets the key), but a hit must still be the model's value.
    let bounded = threshold > 0;
    let key = |k: u8| format!("key-{k}");
    for op in ops {
        let now = clock.now_ms_for_test();
        match op {
            Op::Set(k, v, t) => {
                cache.set_with_ttl(&key(k), &v, t.ttl()).unwrap();
                model.map.insert(key(k), (Val::Int(v), t.expires(now)));
            }
            Op::SetBytes(k, b) => {
                cache.set_bytes(&key(k), &b).unwrap();
                model
                    .map
                    .insert(key(k), (Val::Bytes(b), Some(now + DEFAULT_TTL_MS)));
            }
            Op::Get(k) => {
                let got = cache.get::<i64>(&key(k));
                match (model.live(&key(k), now).cloned(), got) {
                    (Some(Val::Int(v)), Ok(Some(g))) => prop_assert_eq!(v, g),
                    (Some(Val::Int(_)), Ok(None)) if bounded => {
                        model.map.remove(&key(k));
                    }
                    (Some(Val::Bytes(_)), Err(Error::Deserialize { .. })) => {}
                    (Some(Val::Bytes(_)), Ok(None)) if bounded => {
                        model.map.remove(&key(k));
                    }
                    (None, Ok(None)) => {}
                    (m, g) => prop_assert!(false, "get {}: model {:?}, cache {:?}", k, m, g),
                }
            }
            Op::GetBytes(k) => {
                let got = cache.get_bytes(&key(k)).unwrap();
                let want = model.live(&key(k), now).map(|v| match v {
                    Val::Int(i) => i.to_string().into_bytes(),
                    Val::Bytes(b) => b.clone(),
                });
                if bounded && got.is_none() {
                    model.map.remove(&key(k));
                } else {
                    prop_assert_eq!(got, want, "get_bytes {}", k);
                }
            }
            Op::Has(k) => {
                let got = cache.has(&key(k)).unwrap();
                let want = model.live(&key(k), now).is_some();
                if bounded && !got {
                    model.map.remove(&key(k));
                } else {
                    prop_assert_eq!(got, want, "has {}", k);
                }
            }
            Op::Delete(k) => {
                let existed_file = cache.delete(&key(k)).unwrap();
                let in_model = model.map.remove(&key(k)).is_some();
                if !bounded {
                    // delete reports a file that existed, expired or not, unless a
                    // read already removed the expired one.
                    prop_assert!(existed_file <= in_model, "delete {}", k);
                }
            }
            Op::Add(k, v, t) => {
                let added = cache.add(&key(k), &v, t.ttl()).unwrap();
                let live = model.live(&key(k), now).is_some();
                if bounded && added && live {
                    // It had been evicted.
                } else {
                    prop_assert_eq!(added, !live, "add {}", k);
                }
                if added {
                    model.map.insert(key(k), (Val::Int(v), t.expires(now)));
                }
            }
            Op::Inc(k, d) => {
                let got = cache.inc(&key(k), d);
                let entry = model.live(&key(k), now).cloned();
                match (entry, got) {
                    (Some(Val::Int(v)), Ok(g)) if g == v + d => {
                        let exp = model.map[&key(k)].1;
                        model.map.insert(key(k), (Val::Int(g), exp));
                    }
                    (Some(_), Ok(g)) if bounded && g == d => {
                        model
                            .map
                            .insert(key(k), (Val::Int(g), Some(now + DEFAULT_TTL_MS)));
                    }
                    (None, Ok(g)) => {
                        prop_assert_eq!(g, d);
                        model
                            .map
                            .insert(key(k), (Val::Int(g), Some(now + DEFAULT_TTL_MS)));
                    }
                    (Some(Val::Bytes(_)), Err(Error::Deserialize { .. })) => {}
                    (m, g) => {
                        prop_assert!(false, "inc {} by {}: model {:?}, cache {:?}", k, d, m, g)
                    }
                }
            }
            Op::Update(k, t, delete) => {
                let got = cache.update(&key(k), t.ttl(), |cur: Option<i64>| {
                    if delete {
                        None
                    } else {
                        Some(cur.unwrap_or(0) * 2 + 1)
                    }
                });
                let entry = model.live(&key(k), now).cloned();
                let cur = match (&entry, &got) {
                    (Some(Val::Bytes(_)), Err(Error::Deserialize { .. })) => continue,
                    (_, Err(e)) => return Err(TestCaseError::fail(format!("update: {e}"))),
                    (Some(Val::Int(v)), Ok(_)) => Some(*v),
                    (None, Ok(_)) => None,
                    (Some(Val::Bytes(_)), Ok(_)) if bounded => None,
                    (m, g) => return Err(TestCaseError::fail(format!("update {k}: {m:?} {g:?}"))),
                };
                let got = got.unwrap();
                if delete {
                    prop_assert_eq!(got, None);
                    model.map.remove(&key(k));
                } else {
                    let want = cur.unwrap_or(0) * 2 + 1;
                    if !(bounded && got == Some(1)) {
                        prop_assert_eq!(got, Some(want), "update {}", k);
                    }
                    model
                        .map
                        .insert(key(k), (Val::Int(got.unwrap()), t.expires(now)));
                }
            }
            Op::Advance(ms) => clock.advance(Duration::from_millis(ms)),
            Op::Clear => {
                cache.clear().unwrap();
                model.map.clear();
            }
            Op::Prune => {
                let r = cache.prune().unwrap();
                model.purge_expired(now);
                if !bounded {
                    prop_assert_eq!(r.remaining, model.map.len());
                    prop_assert_eq!(r.evicted + r.damaged, 0);
                }
            }
            Op::Len => {
                let n = cache.len().unwrap();
                // len() counts live entries and removes nothing.
                let live = model
                    .map
                    .keys()
                    .filter(|k| model.live(k, now).is_some())
                    .count();
                if bounded {
                    prop_assert!(n <= live);
                } else {
                    prop_assert_eq!(n, live);
                }
            }
            Op::Reopen => {
                drop(cache);
                cache = open(&dir, threshold, &clock);
            }
        }
        if bounded {
            let files = common::entry_files(&dir).len();
            prop_assert!(
                files <= threshold + (threshold / 4).max(1),
                "{} files",
                files
            );
        }
        prop_assert!(common::temp_files(&dir).is_empty(), "temp files left");
    }
    // A final exact check of everything the cache still holds.
    let now = clock.now_ms_for_test();
    for k in 0..8u8 {
        let got = cache.get_bytes(&key(k)).unwrap();
        let want = model.live(&key(k), now).map(|v| match v {
            Val::Int(i) => i.to_string().into_bytes(),
            Val::Bytes(b) => b.clone(),
        });
        if !(bounded && got.is_none()) {
            prop_assert_eq!(got, want, "final {}", k);
        }
    }
    prop_assert_eq!(cache.stats().damaged, 0);
    Ok(())
}

trait NowForTest {
    fn now_ms_for_test(&self) -> u64;
}
impl NowForTest for ManualClock {
    fn now_ms_for_test(&self) -> u64 {
        fscache::Clock::now_ms(self)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn unbounded_cache_matches_the_model(ops in proptest::collection::vec(op_strategy(), 1..60)) {
        run(ops, 0)?;
    }

    #[test]
    fn bounded_cache_never_returns_wrong_data(
        ops in proptest::collection::vec(op_strategy(), 1..60),
        threshold in 1usize..6,
    ) {
        run(ops, threshold)?;
    }
}
