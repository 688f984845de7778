//! Runs one operation N times, for counting syscalls per operation with strace:
//!
//! ```text
//! strace -f -c -o /tmp/s.txt target/release/examples/syscalls get 10000 /dev/shm
//! ```
//! The cache lives in a new directory it creates inside DIR (`fscache-syscalls-XXXXXX`),
//! removed at the end; nothing else in DIR is touched.
//! Pass `--setup-only` as a fourth argument to run only the setup, and subtract.
//! Operations: set-new, overwrite, get, miss, has, delete, inc, churn (threshold 1000).
//! Set `FSCACHE_FSYNC=1` for `Durability::Fsync`.

use fscache::FileSystemCache;

fn main() -> fscache::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (op, n, dir) = match &args[1..] {
        [op, n, dir, ..] => (op.as_str(), n.parse::<usize>().expect("N"), dir),
        _ => {
            eprintln!("usage: syscalls OP N DIR [--setup-only]");
            std::process::exit(2);
        }
    };
    let setup_only = args.get(4).is_some_and(|a| a == "--setup-only");
    let _ = std::fs::create_dir_all(dir);
    let work = tempfile::Builder::new()
        .prefix("fscache-syscalls-")
        .tempdir_in(dir)
        .unwrap_or_else(|e| {
            eprintln!("syscalls: cannot create a work directory in {dir}: {e}");
            std::process::exit(2);
        });
    let dir = work.path();
    let threshold = if op == "churn" { 1000 } else { n * 10 };
    let durability = if std::env::var_os("FSCACHE_FSYNC").is_some() {
        fscache::Durability::Fsync
    } else {
        fscache::Durability::Rename
    };
    let cache = FileSystemCache::builder(dir)
        .threshold(threshold)
        .durability(durability)
        .open()?;
    let keys: Vec<String> = (0..n).map(|i| format!("key-{i}")).collect();
    let value = [b'x'; 200];
    if matches!(op, "overwrite" | "get" | "has" | "delete") {
        for k in &keys {
            cache.set_bytes(k, &value)?;
        }
    }
    if op == "inc" {
        for k in &keys {
            cache.set(k, &0)?;
        }
    }
    if setup_only {
        return Ok(());
    }
    for k in &keys {
        match op {
            "set-new" | "overwrite" | "churn" => cache.set_bytes(k, &value)?,
            "get" => assert!(cache.get_bytes(k)?.is_some()),
            "miss" => assert!(cache.get_bytes(k)?.is_none()),
            "has" => assert!(cache.has(k)?),
            "delete" => assert!(cache.delete(k)?),
            "inc" => assert_eq!(cache.inc(k, 1)?, 1),
            other => panic!("unknown op {other}"),
        }
    }
    Ok(())
}
