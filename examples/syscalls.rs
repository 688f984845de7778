//! Runs one operation N times, for counting syscalls per operation with strace:
//!
//! ```text
//! strace -f -c -o /tmp/s.txt target/release/examples/syscalls get 10000 /dev/shm
//! ```
//! The cache lives in a new directory it creates inside DIR (`fscache-syscalls-XXXXXX`),
//! removed at the end; nothing else in DIR is touched.
//! The operations are bracketed by two writes to stderr ("fscache-syscalls: begin" /
//! "end"): count the syscalls between them in `strace -o` output
//! (`.ci/syscall-budget.sh` does). `--setup-only` as a fourth argument runs only the
//! setup.
//! Operations: set-new, overwrite, get, miss, has, delete, inc, churn (threshold 1000;
//! the default TTL), churn-never (the same, entries without a TTL).
//! Set `FSCACHE_FSYNC=1` for `Durability::Fsync`, `FSCACHE_EXPIRY_BUDGET=0` to leave out
//! the automatic expiry step, `FSCACHE_EXPIRED_ONCE=1` to let one entry expire before
//! counting (so the expiry steps run: see `FileSystemCacheBuilder::expiry_budget`).

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
    let churn = op.starts_with("churn");
    let threshold = if churn { 1000 } else { n * 10 };
    let durability = if std::env::var_os("FSCACHE_FSYNC").is_some() {
        fscache::Durability::Fsync
    } else {
        fscache::Durability::Rename
    };
    // FSCACHE_EXPIRY_BUDGET=0 leaves out the automatic expiry step, to count an
    // operation's own syscalls.
    let expiry_budget = std::env::var("FSCACHE_EXPIRY_BUDGET")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let mut builder = FileSystemCache::builder(dir);
    if op == "churn-never" {
        // Entries without a TTL (the default is 300 s).
        builder = builder.no_default_ttl();
    }
    let cache = builder
        .expiry_budget(expiry_budget)
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
    // Markers for counting: `strace -o` shows these two writes around the operations
    // (see .ci/syscall-budget.sh), so setup and teardown need no subtracting.
    // Steady state: a process opens each of the 64 stripe lock files once; do that
    // before counting (deleting absent keys touches every stripe).
    for i in 0..2_000 {
        cache.delete(&format!("warm-up-{i}"))?;
    }
    if std::env::var_os("FSCACHE_EXPIRED_ONCE").is_some() {
        // An entry that expired: the shared expiry floor is passed, so the automatic
        // expiry steps run (and, finding nothing more, space themselves out).
        cache.set_bytes_with_ttl(
            "expired-once",
            &value,
            fscache::Ttl::After(std::time::Duration::from_millis(1)),
        )?;
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    eprintln!("fscache-syscalls: begin");
    for k in &keys {
        match op {
            "set-new" | "overwrite" | "churn" | "churn-never" => cache.set_bytes(k, &value)?,
            "get" => assert!(cache.get_bytes(k)?.is_some()),
            "miss" => assert!(cache.get_bytes(k)?.is_none()),
            "has" => assert!(cache.has(k)?),
            "delete" => assert!(cache.delete(k)?),
            "inc" => assert_eq!(cache.inc(k, 1)?, 1),
            other => panic!("unknown op {other}"),
        }
    }
    eprintln!("fscache-syscalls: end");
    Ok(())
}
