//! The `fscache` command (feature `cli`), run as a built binary on real directories:
//! output, JSON output and exit codes, on live, expired, damaged and foreign files.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{TestResult, temp_cache_dir};
use fscache::{FileSystemCache, Format, Ttl};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_fscache");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run fscache")
}

fn run_with_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fscache");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json_out(o: &Output) -> Value {
    assert!(o.status.success(), "{:?}: {}", o.status, text(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o.stdout)))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A cache with 3 live entries (JSON), 2 expired, 1 damaged, 1 fresh temp file and
/// 1 foreign file, opened with threshold 123.
fn populated() -> (tempfile::TempDir, PathBuf, FileSystemCache) {
    let (tmp, dir) = temp_cache_dir();
    let c = FileSystemCache::builder(&dir)
        .threshold(123)
        .open()
        .unwrap();
    c.set("alpha", &json!({"user": "ann", "n": 1})).unwrap();
    c.set("beta", &[1, 2, 3]).unwrap();
    c.set_with_ttl("gamma", "forever", Ttl::Never).unwrap();
    for k in ["old1", "old2"] {
        c.set_with_ttl(k, &0, Ttl::After(Duration::from_millis(1)))
            .unwrap();
    }
    c.set("broken", &"soon damaged").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let broken = c.entry_path("broken").unwrap();
    std::fs::write(&broken, b"FSCE garbage that is not an entry at all...").unwrap();
    let shard = broken.parent().unwrap();
    std::fs::write(shard.join(".fscache-tmp-0123456789abcdef"), b"partial").unwrap();
    std::fs::write(shard.join("notes.txt"), b"someone else's file").unwrap();
    (tmp, dir, c)
}

#[test]
fn stats_reports_every_kind_of_file_and_changes_nothing() -> TestResult {
    let (_tmp, dir, c) = populated();
    let before = common::entry_files(&dir).len();
    let v = json_out(&run(&["stats", s(&dir), "--json"]));
    assert_eq!(v["entries"], 3, "{v}");
    assert_eq!(v["expired"], 2, "{v}");
    assert_eq!(v["damaged"], 1, "{v}");
    assert_eq!(v["temp"], 1, "{v}");
    assert_eq!(v["foreign"], 1, "{v}");
    assert_eq!(v["counted"], 6, "{v}");
    assert_eq!(v["threshold"], 123, "{v}");
    assert_eq!(v["rename_mode"], c.stats().rename_mode_name());
    assert!(v["bytes"].as_u64().unwrap() > 3 * 36, "{v}");
    // Nothing removed, and the owner's threshold is still the recorded one.
    assert_eq!(common::entry_files(&dir).len(), before);
    assert_eq!(c.scan()?.threshold, Some(123));

    let o = run(&["stats", s(&dir)]);
    assert!(o.status.success());
    let out = text(&o.stdout);
    for line in [
        "entries      3 (",
        "expired      2",
        "damaged      1",
        "temp files   1",
    ] {
        assert!(out.contains(line), "{line:?} not in:\n{out}");
    }
    assert!(out.contains("threshold    123 entries"), "{out}");
    assert!(out.contains("byte budget  none recorded"), "{out}");
    assert_eq!(v["max_bytes"], serde_json::Value::Null, "{v}");
    Ok(())
}

#[test]
fn stats_reports_the_total_against_the_byte_budget() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("cache");
    let c = FileSystemCache::builder(&dir)
        .threshold(0)
        .max_bytes(1 << 20)
        .open()?;
    for i in 0..10 {
        c.set_bytes(&format!("k{i}"), &[0u8; 10_000])?;
    }
    let total = c.stats().bytes.unwrap();
    assert!(total > 100_000);
    let v = json_out(&run(&["stats", s(&dir), "--json"]));
    assert_eq!(v["max_bytes"], 1 << 20, "{v}");
    assert_eq!(v["counted_bytes"], total, "{v}");
    let out = text(&run(&["stats", s(&dir)]).stdout);
    assert!(
        out.contains("byte budget  ") && out.contains("of 1.0 MiB (10%)"),
        "{out}"
    );
    Ok(())
}

trait ModeName {
    fn rename_mode_name(&self) -> &'static str;
}
impl ModeName for fscache::Stats {
    fn rename_mode_name(&self) -> &'static str {
        match self.rename_mode {
            fscache::RenameMode::Portable => "portable",
            _ => "renameat2",
        }
    }
}

#[test]
fn a_foreign_a_missing_and_an_empty_directory_are_refused_and_left_alone() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let foreign = tmp.path().join("photos");
    std::fs::create_dir(&foreign)?;
    std::fs::write(foreign.join("cat.jpg"), b"jpeg")?;
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty)?;
    let missing = tmp.path().join("missing");
    for cmd in ["stats", "gc", "keys", "clear"] {
        let mut args = vec![cmd, s(&foreign)];
        if cmd == "clear" {
            args.push("--yes");
        }
        let o = run(&args);
        assert_eq!(o.status.code(), Some(1), "{cmd}");
        let err = text(&o.stderr);
        // The library's own error, word for word.
        let lib = FileSystemCache::builder(&foreign)
            .open()
            .unwrap_err()
            .to_string();
        assert!(err.contains(&lib), "{cmd}: {err}");
        assert!(o.stdout.is_empty());
    }
    let names: Vec<_> = std::fs::read_dir(&foreign)?.collect();
    assert_eq!(names.len(), 1, "the foreign directory was changed");

    let o = run(&["stats", s(&empty)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("empty directory, not an fscache directory"));
    assert_eq!(
        std::fs::read_dir(&empty)?.count(),
        0,
        "the empty directory was adopted"
    );

    let o = run(&["keys", s(&missing)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("No such file or directory"),
        "{}",
        text(&o.stderr)
    );
    assert!(!missing.exists(), "a missing directory was created");
    Ok(())
}

#[test]
fn gc_removes_expired_and_damaged_entries_quietly_and_keeps_live_ones() -> TestResult {
    let (_tmp, dir, c) = populated();
    let o = run(&["gc", s(&dir)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        o.stdout.is_empty(),
        "gc is quiet by default: {}",
        text(&o.stdout)
    );
    // Not a terminal: no progress bar either.
    assert!(o.stderr.is_empty(), "{}", text(&o.stderr));
    let v = json_out(&run(&["stats", s(&dir), "--json"]));
    assert_eq!(
        (v["entries"].as_u64(), v["expired"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(v["damaged"], 0);
    // Files of other programs inside shard directories go too (the shards are
    // fscache's); a fresh temp file may be a write in progress: kept.
    assert_eq!(v["temp"], 1);
    assert_eq!(v["foreign"], 0);
    assert_eq!(
        c.get::<Value>("alpha")?,
        Some(json!({"user": "ann", "n": 1}))
    );

    // A second run has nothing to do; --json reports it.
    let v = json_out(&run(&["gc", s(&dir), "--json"]));
    assert_eq!(v["expired"], 0);
    assert_eq!(v["remaining"], 3);
    assert_eq!(v["errors"], 0);
    Ok(())
}

#[test]
fn gc_reports_its_counts_and_draws_a_progress_bar_only_on_a_terminal() -> TestResult {
    let (_tmp, dir, _c) = populated();
    let o = run(&["gc", s(&dir), "--verbose"]);
    assert!(o.status.success());
    assert_eq!(
        text(&o.stdout).trim(),
        "removed 2 expired, 2 damaged or foreign, 0 stale temp; 3 live entries remain"
    );
    // Under a pseudo-terminal (util-linux `script`), the bar is drawn.
    let o = Command::new("script")
        .args(["-qec", &format!("{BIN} gc {}", s(&dir)), "/dev/null"])
        .output()?;
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("256/256 shards"),
        "no progress bar on a terminal: {out:?}"
    );
    Ok(())
}

#[test]
fn keys_lists_only_live_keys() -> TestResult {
    let (_tmp, dir, _c) = populated();
    let o = run(&["keys", s(&dir)]);
    assert!(o.status.success());
    let mut keys: Vec<String> = text(&o.stdout).lines().map(str::to_owned).collect();
    keys.sort();
    assert_eq!(keys, ["alpha", "beta", "gamma"]);
    let v = json_out(&run(&["keys", s(&dir), "--json"]));
    assert_eq!(v.as_array().map(Vec::len), Some(3));
    Ok(())
}

#[test]
fn get_decodes_each_codec_and_exits_3_for_what_is_not_a_live_value() -> TestResult {
    let (_tmp, dir, _c) = populated();
    let v = json_out(&run(&["get", s(&dir), "alpha", "--json"]));
    assert_eq!(v["value"], json!({"user": "ann", "n": 1}));
    assert_eq!(v["codec"], "json");
    let o = run(&["get", s(&dir), "beta"]);
    assert!(o.status.success());
    assert_eq!(
        serde_json::from_slice::<Value>(&o.stdout)?,
        json!([1, 2, 3])
    );
    for missing in ["nope", "old1", "broken"] {
        let o = run(&["get", s(&dir), missing]);
        assert_eq!(o.status.code(), Some(3), "{missing}");
        assert!(
            o.stdout.is_empty(),
            "{missing}: damaged or expired bytes printed"
        );
        assert!(text(&o.stderr).contains("no live entry"), "{missing}");
    }

    // MessagePack and raw bytes.
    let (_tmp2, dir2) = temp_cache_dir();
    let mp = FileSystemCache::builder(&dir2)
        .format(Format::MessagePack)
        .open()?;
    mp.set("m", &json!({"cart": ["apple", "pear"]}))?;
    mp.set_bytes("r", b"plain text")?;
    mp.set_bytes("bin", &[0xff, 0x00, 0x10])?;
    let v = json_out(&run(&["get", s(&dir2), "m", "--json"]));
    assert_eq!(
        (v["codec"].clone(), v["value"].clone()),
        (json!("msgpack"), json!({"cart": ["apple", "pear"]}))
    );
    let o = run(&["get", s(&dir2), "r"]);
    assert_eq!(text(&o.stdout), "plain text\n");
    let v = json_out(&run(&["get", s(&dir2), "bin", "--json"]));
    assert_eq!(v["value"], json!({"hex": "ff0010"}));
    Ok(())
}

#[test]
fn inspect_shows_the_header_and_value_and_fails_on_a_damaged_file() -> TestResult {
    let (_tmp, dir, c) = populated();
    let file = c.entry_path("alpha")?;
    let v = json_out(&run(&["inspect", s(&file), "--json"]));
    assert_eq!(v["key"], "alpha");
    assert_eq!(v["header"]["codec"], "json");
    assert_eq!(v["header"]["expired"], false);
    assert!(v["header"]["expires_at_ms"].as_u64().is_some());
    assert_eq!(v["value"], json!({"user": "ann", "n": 1}));
    assert_eq!(v["damage"], Value::Null);
    let o = run(&["inspect", s(&c.entry_path("gamma")?)]);
    let out = text(&o.stdout);
    assert!(
        out.contains("expires      never") && out.contains("key          \"gamma\""),
        "{out}"
    );

    let o = run(&["inspect", s(&c.entry_path("broken")?)]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o.stdout);
    assert!(
        out.contains("damage       bad magic") || out.contains("damage       "),
        "{out}"
    );
    assert!(
        !out.contains("value"),
        "damaged bytes shown as a value: {out}"
    );
    assert!(text(&o.stderr).contains("is not a valid entry"));
    // A file that is not an entry at all.
    let foreign = dir.join("FSCACHE");
    let o = run(&["inspect", s(&foreign), "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(v["header"], Value::Null);
    assert!(v["damage"].is_string());
    Ok(())
}

#[test]
fn delete_and_clear() -> TestResult {
    let (_tmp, dir, c) = populated();
    let o = run(&["delete", s(&dir), "alpha"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(c.get::<Value>("alpha")?, None);
    assert_eq!(run(&["delete", s(&dir), "alpha"]).status.code(), Some(3));

    // clear asks; anything but yes keeps everything.
    let o = run_with_stdin(&["clear", s(&dir)], "n\n");
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("Delete every entry"));
    assert!(c.get::<Value>("beta")?.is_some());
    let o = run_with_stdin(&["clear", s(&dir)], "");
    assert_eq!(o.status.code(), Some(1), "end of input is a no");
    assert!(c.get::<Value>("beta")?.is_some());
    let o = run_with_stdin(&["clear", s(&dir)], "y\n");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(c.get::<Value>("beta")?.is_none() && c.get::<Value>("gamma")?.is_none());

    c.set("again", &1)?;
    let v = json_out(&run(&["clear", s(&dir), "--yes", "--json"]));
    assert_eq!(v["removed"], 1);
    assert_eq!(c.len()?, 0);
    Ok(())
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run(&[]).status.code(), Some(2));
    assert_eq!(run(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(run(&["get", "/tmp"]).status.code(), Some(2));
    let o = run(&["--help"]);
    assert!(o.status.success());
    let help = text(&o.stdout);
    for cmd in ["stats", "gc", "keys", "get", "inspect", "delete", "clear"] {
        assert!(help.contains(cmd), "{cmd} missing from --help");
    }
}

/// Runs the command with a deadline: a read that hangs (a FIFO) is a failure, not a
/// stuck test.
fn run_within(args: &[&str], secs: u64) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fscache");
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("fscache {args:?} hung for {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `get` and `inspect` read entries the way the library does: no symlink followed,
/// no FIFO or device read (no hang, no endless /dev/zero), no more than the header
/// declares.
#[test]
fn get_and_inspect_never_follow_symlinks_or_read_fifos_and_devices() -> TestResult {
    let (tmp, dir) = temp_cache_dir();
    let cache = FileSystemCache::open(&dir)?;
    cache.set("real", &"value")?;
    let secret = tmp.path().join("secret.txt");
    std::fs::write(&secret, "not for the cache's readers")?;
    // An entry name that is a symlink to a file outside the cache.
    let linked = cache.entry_path("linked")?;
    std::fs::create_dir_all(linked.parent().unwrap())?;
    std::os::unix::fs::symlink(&secret, &linked)?;
    let o = run_within(&["get", s(&dir), "linked"], 10);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert!(
        !text(&o.stdout).contains("not for"),
        "the symlink was followed"
    );
    let o = run_within(&["inspect", s(&linked)], 10);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("symlink"), "{}", text(&o.stderr));
    // A FIFO at an entry name, and given to inspect: nobody writes to it.
    let fifo = cache.entry_path("fifo")?;
    std::fs::create_dir_all(fifo.parent().unwrap())?;
    let made = Command::new("mkfifo").arg(&fifo).status()?;
    assert!(made.success());
    let o = run_within(&["get", s(&dir), "fifo"], 10);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    let o = run_within(&["inspect", s(&fifo)], 10);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("not a regular file"),
        "{}",
        text(&o.stderr)
    );
    // /dev/zero: refused at once, not read until memory runs out.
    let o = run_within(&["inspect", "/dev/zero"], 10);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("not a regular file"),
        "{}",
        text(&o.stderr)
    );
    // A large foreign file: only its first bytes are read (it is damage).
    let big = tmp.path().join("big");
    std::fs::write(&big, vec![b'x'; 8 << 20])?;
    let o = run_within(&["inspect", "--json", s(&big)], 10);
    let v: Value = serde_json::from_slice(&o.stdout)?;
    assert!(
        v["len"].as_u64().unwrap() <= 8192,
        "read {} bytes",
        v["len"]
    );
    assert!(v["damage"].is_string());
    // The real entry still reads.
    let o = run_within(&["get", s(&dir), "real"], 10);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("value"));
    Ok(())
}

/// Commands that write refuse to run as root on a directory another user owns (their
/// lock files would be root's, and the service would get EACCES); read-only ones
/// run and create nothing.
#[test]
fn root_does_not_leave_files_the_owner_cannot_use() -> TestResult {
    if rustix::process::geteuid().as_raw() != 0 {
        eprintln!("not root: the ownership check applies to root only (CI runs as root)");
        return Ok(());
    }
    let (_tmp, dir) = temp_cache_dir();
    let cache = FileSystemCache::open(&dir)?;
    cache.set("k", &1)?;
    drop(cache);
    // Hand the directory to another user, as a service's would be.
    let owned = Command::new("chown")
        .args(["-R", "65534:65534", s(&dir)])
        .status()?;
    assert!(owned.success());
    for args in [
        &["delete", s(&dir), "k"][..],
        &["gc", s(&dir)][..],
        &["clear", "--yes", s(&dir)][..],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(1), "{args:?} must refuse");
        assert!(text(&o.stderr).contains("uid 65534"), "{}", text(&o.stderr));
    }
    for args in [
        &["stats", s(&dir)][..],
        &["keys", s(&dir)][..],
        &["get", s(&dir), "k"][..],
    ] {
        let o = run(args);
        assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
    }
    let root_owned: Vec<_> = walk(&dir)
        .into_iter()
        .filter(|p| {
            use std::os::unix::fs::MetadataExt;
            std::fs::symlink_metadata(p).is_ok_and(|m| m.uid() == 0)
        })
        .collect();
    assert!(root_owned.is_empty(), "root left {root_owned:?}");
    Ok(())
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}
