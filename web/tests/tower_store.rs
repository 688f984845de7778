//! `fscache::tower_sessions::TowerStore` against tower-sessions' store contract, on
//! the file store and on every engine the environment names (CI starts them all):
//! create inserts only if absent and draws a new id on a collision; load returns
//! only live records of that id; save of an expired record deletes it; delete.

use std::sync::Arc;

use fscache::Store;
use fscache::tower_sessions::TowerStore;
use serde_json::json;
use time::{Duration, OffsetDateTime};
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{ExpiredDeletion, SessionStore};

mod common;

fn record(id: Id, secs: i64, user: &str) -> Record {
    let mut data = std::collections::HashMap::new();
    data.insert("user".to_owned(), json!(user));
    Record {
        id,
        data,
        expiry_date: OffsetDateTime::now_utc() + Duration::seconds(secs),
    }
}

/// A direct store call from async code, as an app would make it: off the executor
/// (the sync engine clients must not run on it; the PostgreSQL one panics there).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

async fn contract(name: &str, store: Arc<dyn Store>) {
    let ts = TowerStore::from_arc(store.clone()).with_prefix(&format!(
        "tower-test-{}:",
        fscache::session::new_id().unwrap()
    ));
    // create, then load.
    let mut r = record(Id::default(), 60, "ann");
    ts.create(&mut r).await.unwrap();
    assert_eq!(ts.load(&r.id).await.unwrap(), Some(r.clone()), "{name}");

    // A collision: create with an id that is taken gets a new id, and the first
    // record is untouched.
    let mut clash = record(r.id, 60, "mallory");
    ts.create(&mut clash).await.unwrap();
    assert_ne!(clash.id, r.id, "{name}: create overwrote a taken id");
    assert_eq!(ts.load(&r.id).await.unwrap().unwrap().data["user"], "ann");
    assert_eq!(
        ts.load(&clash.id).await.unwrap().unwrap().data["user"],
        "mallory"
    );

    // save replaces; the store TTL follows expiry_date.
    let mut changed = r.clone();
    changed.data.insert("cart".into(), json!({"apple": 2}));
    ts.save(&changed).await.unwrap();
    assert_eq!(
        ts.load(&r.id).await.unwrap(),
        Some(changed.clone()),
        "{name}"
    );

    // A record whose expiry passed is not returned, and saving one deletes it.
    let mut short = record(Id::default(), 1, "brief");
    ts.create(&mut short).await.unwrap();
    let mut past = short.clone();
    past.expiry_date = OffsetDateTime::now_utc() - Duration::seconds(1);
    ts.save(&past).await.unwrap();
    assert_eq!(ts.load(&short.id).await.unwrap(), None, "{name}");
    assert!(
        blocking(|| store.load(&ts.store_key(&short.id)))
            .unwrap()
            .is_none(),
        "{name}: not deleted"
    );

    // Foreign bytes under a session's key are no session.
    let foreign = Id::default();
    blocking(|| {
        store.save(
            &ts.store_key(&foreign),
            b"\x80\x04pickle?",
            std::time::Duration::from_secs(60),
        )
    })
    .unwrap();
    assert_eq!(ts.load(&foreign).await.unwrap(), None, "{name}");
    // Nor is a record of another id copied under this one.
    let bytes = blocking(|| store.load(&ts.store_key(&r.id)))
        .unwrap()
        .unwrap()
        .value;
    blocking(|| {
        store.save(
            &ts.store_key(&foreign),
            &bytes,
            std::time::Duration::from_secs(60),
        )
    })
    .unwrap();
    assert_eq!(ts.load(&foreign).await.unwrap(), None, "{name}");

    // delete; deleting again is fine.
    ts.delete(&r.id).await.unwrap();
    assert_eq!(ts.load(&r.id).await.unwrap(), None, "{name}");
    ts.delete(&r.id).await.unwrap();
    ts.delete_expired().await.unwrap();
    assert!(
        ts.load(&clash.id).await.unwrap().is_some(),
        "{name}: cleanup took a live one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_contract_holds_on_every_store() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("file://{}", tmp.path().display());
    for (name, url) in common::store_urls(&url) {
        // Opened and dropped inside the runtime, as in an app's `async fn main`.
        let store: Arc<dyn Store> = Arc::from(fscache::store::open(&url).unwrap());
        contract(&name, store).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_expired_removes_expired_rows_on_the_sql_stores() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("file://{}", tmp.path().join("s").display());
    let sql = common::store_urls(&url)
        .into_iter()
        .filter(|(name, _)| name == "sqlite" || name == "postgres");
    for (name, url) in sql {
        let store: Arc<dyn Store> = Arc::from(fscache::store::open(&url).unwrap());
        let ts = TowerStore::from_arc(store.clone());
        let mut live = record(Id::default(), 60, "live");
        ts.create(&mut live).await.unwrap();
        blocking(|| -> fscache::Result<()> {
            for _ in 0..5 {
                let key = format!("tower-session:expired{}", fscache::session::new_id()?);
                store.save(&key, b"{}", std::time::Duration::from_millis(1))?;
            }
            Ok(())
        })
        .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        ts.delete_expired().await.unwrap();
        assert_eq!(
            blocking(|| store.cleanup(100)).unwrap(),
            0,
            "{name}: delete_expired left expired rows"
        );
        assert!(ts.load(&live.id).await.unwrap().is_some(), "{name}");
        ts.delete(&live.id).await.unwrap();
    }
}
