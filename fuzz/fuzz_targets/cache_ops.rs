//! Arbitrary operation sequences against a `HashMap` model, with a manual clock.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::Arbitrary;
use fscache::{FileSystemCache, ManualClock, Ttl};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Op {
    Set(u8, i32, Option<u16>),
    SetBytes(u8, Vec<u8>),
    Get(u8),
    GetBytes(u8),
    Has(u8),
    Delete(u8),
    Add(u8, i32),
    Inc(u8, i8),
    Advance(u16),
    Prune,
}

struct Fixture {
    _dir: tempfile::TempDir,
    cache: FileSystemCache,
    clock: ManualClock,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at(1_800_000_000_000);
        let cache = FileSystemCache::builder(dir.path())
            .threshold(0)
            .no_default_ttl()
            .clock(clock.clone())
            .open()
            .unwrap();
        Fixture {
            _dir: dir,
            cache,
            clock,
        }
    })
}

#[derive(Clone, Debug, PartialEq)]
enum Val {
    Int(i64),
    Bytes(Vec<u8>),
}

fuzz_target!(|ops: Vec<Op>| {
    let f = fixture();
    let (cache, clock) = (&f.cache, &f.clock);
    // Start from an empty cache: only these 16 keys are ever used.
    cache
        .delete_many((0..16).map(|k| format!("key{k}")))
        .unwrap();
    // key -> (value, expiry ms or none)
    let mut model: HashMap<u8, (Val, Option<u64>)> = HashMap::new();
    let now = || fscache::Clock::now_ms(clock);
    let live = |m: &HashMap<u8, (Val, Option<u64>)>, k: u8| {
        m.get(&k)
            .filter(|(_, e)| e.is_none_or(|e| now() < e))
            .map(|(v, _)| v.clone())
    };
    let name = |k: u8| format!("key{}", k % 16);
    for op in ops.into_iter().take(64) {
        match op {
            Op::Set(k, v, ttl) => {
                let k = k % 16;
                let t = match ttl {
                    Some(0) | None => Ttl::Never,
                    Some(ms) => Ttl::After(Duration::from_millis(ms as u64)),
                };
                cache.set_with_ttl(&name(k), &v, t).unwrap();
                let exp = ttl.filter(|&ms| ms > 0).map(|ms| now() + ms as u64);
                model.insert(k, (Val::Int(v as i64), exp));
            }
            Op::SetBytes(k, b) => {
                let k = k % 16;
                cache.set_bytes_with_ttl(&name(k), &b, Ttl::Never).unwrap();
                model.insert(k, (Val::Bytes(b), None));
            }
            Op::Get(k) => {
                let k = k % 16;
                match (live(&model, k), cache.get::<i64>(&name(k))) {
                    (Some(Val::Int(v)), Ok(Some(g))) => assert_eq!(v, g),
                    (None, Ok(None)) => {}
                    (Some(Val::Bytes(_)), Err(_)) => {}
                    (m, g) => panic!("get {k}: model {m:?}, cache {g:?}"),
                }
            }
            Op::GetBytes(k) => {
                let k = k % 16;
                let want = live(&model, k).map(|v| match v {
                    Val::Int(i) => i.to_string().into_bytes(),
                    Val::Bytes(b) => b,
                });
                assert_eq!(cache.get_bytes(&name(k)).unwrap(), want);
            }
            Op::Has(k) => {
                let k = k % 16;
                assert_eq!(cache.has(&name(k)).unwrap(), live(&model, k).is_some());
            }
            Op::Delete(k) => {
                let k = k % 16;
                cache.delete(&name(k)).unwrap();
                model.remove(&k);
            }
            Op::Add(k, v) => {
                let k = k % 16;
                let added = cache.add(&name(k), &v, Ttl::Never).unwrap();
                assert_eq!(added, live(&model, k).is_none());
                if added {
                    model.insert(k, (Val::Int(v as i64), None));
                }
            }
            Op::Inc(k, d) => {
                let k = k % 16;
                let r = cache.inc(&name(k), d as i64);
                match (live(&model, k), r) {
                    (Some(Val::Int(v)), Ok(n)) => {
                        assert_eq!(n, v + d as i64);
                        model.get_mut(&k).unwrap().0 = Val::Int(n);
                    }
                    (None, Ok(n)) => {
                        assert_eq!(n, d as i64);
                        model.insert(k, (Val::Int(n), None));
                    }
                    (Some(Val::Bytes(_)), Err(_)) => {}
                    (m, r) => panic!("inc {k}: model {m:?}, cache {r:?}"),
                }
            }
            Op::Advance(ms) => clock.advance(Duration::from_millis(ms as u64)),
            Op::Prune => {
                let report = cache.prune().unwrap();
                model.retain(|_, (_, e)| e.is_none_or(|e| now() < e));
                assert_eq!(report.remaining, model.len());
                assert_eq!(report.damaged, 0);
            }
        }
    }
});
