//! A short tour of fscache: run with `cargo run --release --example quickstart`.
//!
//! Uses `./fscache-quickstart` under the working directory and prints what it does.

use std::time::Duration;

use fscache::{FileSystemCache, Ttl};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Profile {
    name: String,
    visits: u32,
}

fn main() -> fscache::Result<()> {
    let dir = std::env::current_dir()
        .expect("working directory")
        .join("fscache-quickstart");
    let cache = FileSystemCache::builder(&dir)
        .threshold(1_000)
        .default_ttl(Duration::from_secs(3600))
        .open()?;
    println!(
        "opened {} ({} entries counted)",
        dir.display(),
        cache.approximate_len()
    );

    let profile = Profile {
        name: "Ada".into(),
        visits: 1,
    };
    cache.set("profile:ada", &profile)?;
    println!("set profile:ada = {profile:?}");
    println!(
        "get profile:ada -> {:?}",
        cache.get::<Profile>("profile:ada")?
    );

    let runs = cache.inc("quickstart:runs", 1)?;
    println!("inc quickstart:runs -> {runs} (run me again: the count persists)");

    let first = cache.add(
        "lock:nightly-report",
        &"worker-1",
        Ttl::After(Duration::from_secs(5)),
    )?;
    println!("add lock:nightly-report -> {first} (false if a run in the last 5 s took it)");

    let cart = cache.update("cart:ada", Ttl::Default, |cart: Option<Vec<String>>| {
        let mut cart = cart.unwrap_or_default();
        cart.push(format!("item-{runs}"));
        Some(cart)
    })?;
    println!("update cart:ada -> {cart:?}");

    cache.set_with_ttl("flash", "shown once", Ttl::After(Duration::from_millis(50)))?;
    std::thread::sleep(Duration::from_millis(60));
    println!(
        "get flash after its 50 ms TTL -> {:?}",
        cache.get::<String>("flash")?
    );

    println!("delete profile:ada -> {}", cache.delete("profile:ada")?);
    let mut keys = cache.keys().collect::<fscache::Result<Vec<_>>>()?;
    keys.sort();
    println!("live keys: {keys:?}");
    println!("exact len: {}", cache.len()?);
    let report = cache.prune()?;
    println!("prune: {report:?}");
    println!("stats: {:?}", cache.stats());
    Ok(())
}
