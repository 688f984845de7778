//! A request's session round trip: load from the Cookie header, modify, save.
//!
//! `FSCACHE_BENCH_DIR` chooses the filesystem (default: a temp dir under /dev/shm if
//! present, else the system temp dir). `cargo bench --bench sessions`.

mod common;
use common::bench_dir;

use criterion::{Criterion, criterion_group, criterion_main};
use fscache::session::{SessionConfig, Sessions};
use fscache::{FileSystemCache, Store};

/// A typical ~200 B session (user id, csrf token, a small cart) saved in `sessions`,
/// and the Cookie header a browser then sends.
fn seeded<S: Store>(sessions: &Sessions<S>) -> String {
    let mut s = sessions.load(None).unwrap();
    s.insert("user_id", &4242u64).unwrap();
    s.insert("csrf", &"3q2-7wFh0v9sT4kYbL1xZ8mN5pR6cJ0eD2gA")
        .unwrap();
    s.insert("cart", &[("apple", 3u32), ("pear", 1), ("plum", 12)])
        .unwrap();
    let set_cookie = sessions.save(&mut s).unwrap().set_cookie.unwrap();
    format!(
        "theme=dark; {}; lang=en",
        set_cookie.split(';').next().unwrap()
    )
}

/// The round trips of an existing session, in the criterion group `name`.
fn existing<S: Store>(c: &mut Criterion, name: &str, sessions: &Sessions<S>) {
    let cookie = seeded(sessions);
    let mut group = c.benchmark_group(name);
    group.bench_function("load+read+save (refresh)", |b| {
        b.iter(|| {
            let mut s = sessions.load(Some(&cookie)).unwrap();
            assert!(s.get::<u64>("user_id").unwrap().is_some());
            sessions.save(&mut s).unwrap()
        })
    });
    group.bench_function("load+update+save", |b| {
        b.iter(|| {
            let mut s = sessions.load(Some(&cookie)).unwrap();
            s.update("hits", |n: Option<u64>| Some(n.unwrap_or(0) + 1))
                .unwrap();
            sessions.save(&mut s).unwrap()
        })
    });
    group.finish();
}

fn round_trip(c: &mut Criterion) {
    let dir = bench_dir();
    let store = FileSystemCache::builder(dir.path())
        .threshold(0)
        .open()
        .unwrap();
    let sessions = Sessions::new(
        store,
        SessionConfig::default().signing_keys(["bench secret"]),
    )
    .unwrap();
    existing(c, "session", &sessions);
    // The same read-only request when every request slides the expiry (a rewrite
    // of the record each time): what the default refresh granularity (1% of the
    // lifetime) saves.
    let every = Sessions::new(
        FileSystemCache::builder(dir.path())
            .threshold(0)
            .open()
            .unwrap(),
        SessionConfig::default()
            .signing_keys(["bench secret"])
            .refresh_granularity(0.0),
    )
    .unwrap();
    let cookie = seeded(&every);
    c.bench_function("session/load+read+save (refresh_granularity 0)", |b| {
        b.iter(|| {
            let mut s = every.load(Some(&cookie)).unwrap();
            assert!(s.get::<u64>("user_id").unwrap().is_some());
            every.save(&mut s).unwrap()
        })
    });
    c.bench_function(
        "session/load (no cookie) + insert + save (new session)",
        |b| {
            b.iter(|| {
                let mut s = sessions.load(None).unwrap();
                s.insert("user_id", &1u64).unwrap();
                let out = sessions.save(&mut s).unwrap();
                s.destroy();
                sessions.save(&mut s).unwrap();
                out
            })
        },
    );
}

/// What the per-user index costs ("your devices", "log out everywhere"): a login
/// and logout without and with it, a listing of 3 sessions, and ending 1,000
/// sessions of one user.
fn user_index(c: &mut Criterion) {
    let dir = bench_dir();
    let store = FileSystemCache::builder(dir.path())
        .threshold(0)
        .open()
        .unwrap();
    let sessions = Sessions::new(
        store,
        SessionConfig::default().signing_keys(["bench secret"]),
    )
    .unwrap();
    let login = |user: Option<&str>| {
        let mut s = sessions.load(None).unwrap();
        s.regenerate().unwrap();
        s.insert("user_id", &4242u64).unwrap();
        if let Some(user) = user {
            s.set_user(user, Some("Firefox on Linux")).unwrap();
        }
        sessions.save(&mut s).unwrap();
        s
    };
    let mut group = c.benchmark_group("user_index");
    group.bench_function("login+logout (no index)", |b| {
        b.iter(|| {
            let mut s = login(None);
            s.destroy();
            sessions.save(&mut s).unwrap()
        })
    });
    // 1,000 users with two other live sessions each (a login checks them for
    // expiry); each iteration logs one of them in and out.
    let users: Vec<String> = (0..1000).map(|i| format!("u-{i}")).collect();
    let _others: Vec<_> = users
        .iter()
        .flat_map(|u| [login(Some(u)), login(Some(u))])
        .collect();
    let mut next = 0;
    group.bench_function("login+logout (indexed, 2 other devices)", |b| {
        b.iter(|| {
            next = (next + 1) % users.len();
            let mut s = login(Some(&users[next]));
            s.destroy();
            sessions.save(&mut s).unwrap()
        })
    });
    let current = login(Some("u-0"));
    group.bench_function("list 3 sessions", |b| {
        b.iter(|| {
            let list = sessions.user_sessions("u-0", Some(&current)).unwrap();
            assert_eq!(list.len(), 3);
            list
        })
    });
    group.sample_size(10);
    group.bench_function("end 1,000 sessions of a user", |b| {
        b.iter_batched(
            || {
                for _ in 0..1000 {
                    login(Some("u-many"));
                }
            },
            |()| assert_eq!(sessions.end_user_sessions("u-many", None).unwrap(), 1000),
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// The same round trips on a Flask-Session cachelib directory (pickled records,
/// itsdangerous-signed ids), beside `bench/compare/flask_sessions.sh`'s Flask-Session.
#[cfg(feature = "flask")]
fn flask_round_trip(c: &mut Criterion) {
    use fscache::flask::FlaskFormat;
    use fscache::store::CachelibStore;
    let dir = bench_dir();
    let sessions = Sessions::new(
        CachelibStore::open(dir.path()).unwrap(),
        SessionConfig::flask_session(FlaskFormat::Pickle).flask_signer(["bench secret"]),
    )
    .unwrap();
    existing(c, "flask session (cachelib dir)", &sessions);
}

#[cfg(not(feature = "flask"))]
fn flask_round_trip(_: &mut Criterion) {}

criterion_group!(benches, round_trip, user_index, flask_round_trip);
criterion_main!(benches);
