//! `fscache`: inspect and clean fscache directories (feature `cli`).
//!
//! ```text
//! cargo run --features cli --bin fscache -- stats ./sessions
//! ```
//!
//! Exit status: 0 done; 1 failed (an error, a `gc` that could not remove
//! everything it should, a `clear` that was declined); 2 usage error; 3 the key asked
//! for (`get`, `delete`) holds no live entry.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use fscache::{DirReport, EntryFile, FileSystemCache, RenameMode};
use serde_json::{Value, json};

/// Inspect and clean fscache cache directories.
#[derive(Parser, Debug)]
#[command(name = "fscache", version, about, long_about = None)]
struct Cli {
    /// Print JSON (one document on stdout) for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Entries, bytes, expired, damaged and temp files, threshold, rename mode.
    Stats {
        /// The cache directory.
        dir: PathBuf,
    },
    /// Remove expired entries, damaged files and stale temp files (for cron: quiet
    /// unless --verbose; a progress bar on a terminal).
    Gc {
        /// The cache directory.
        dir: PathBuf,
        /// Print what was removed.
        #[arg(short, long)]
        verbose: bool,
        /// No progress bar, even on a terminal.
        #[arg(long)]
        no_progress: bool,
    },
    /// List the live keys.
    Keys {
        /// The cache directory.
        dir: PathBuf,
    },
    /// Print the value stored under KEY.
    Get {
        /// The cache directory.
        dir: PathBuf,
        /// The key.
        key: String,
    },
    /// Show one entry file: header fields, codec, expiry, decoded value.
    Inspect {
        /// An entry file (in a shard directory such as DIR/3f/).
        file: PathBuf,
    },
    /// Delete the entry stored under KEY.
    Delete {
        /// The cache directory.
        dir: PathBuf,
        /// The key.
        key: String,
    },
    /// Delete every entry (asks first, unless --yes).
    Clear {
        /// The cache directory.
        dir: PathBuf,
        /// Do not ask.
        #[arg(short, long)]
        yes: bool,
    },
}

/// How a command ended, beyond success.
enum Failure {
    /// An error; exit 1.
    Error(String),
    /// The key holds no live entry; exit 3.
    NotFound(String),
}

impl From<fscache::Error> for Failure {
    fn from(e: fscache::Error) -> Self {
        Failure::Error(e.report())
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Error(e.to_string())
    }
}

type Outcome = Result<(), Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Error(message)) => {
            eprintln!("fscache: {message}");
            ExitCode::from(1)
        }
        Err(Failure::NotFound(message)) => {
            eprintln!("fscache: {message}");
            ExitCode::from(3)
        }
    }
}

/// Refuses, for a command that writes (lock files, removals), to run as root on a
/// directory another user owns: files it creates there (a stripe's lock file, the
/// locks directory) would belong to root, and the service that owns the cache
/// would get EACCES on them (a logout that fails). Other users (a shared group)
/// create files with the cache's modes, as the service does.
fn refuse_foreign_root(dir: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::MetadataExt;
    let euid = rustix::process::geteuid().as_raw();
    let Ok(meta) = std::fs::metadata(dir) else {
        return Ok(()); // opening reports it
    };
    if euid == 0 && meta.uid() != 0 {
        return Err(Failure::Error(format!(
            "{} belongs to uid {} and this command runs as root: files it created there \
             would be root's, and the service could no longer lock or remove them. Run it \
             as the owner (e.g. sudo -u \"#{}\" fscache ...)",
            dir.display(),
            meta.uid(),
            meta.uid()
        )));
    }
    Ok(())
}

/// [`open`] for a command that writes: see [`refuse_foreign_root`].
fn open_to_write(dir: &Path) -> Result<FileSystemCache, Failure> {
    refuse_foreign_root(dir)?;
    open(dir)
}

/// Opens an existing fscache directory without changing its settings: no eviction
/// (threshold 0) and the owner's recorded threshold left alone.
fn open(dir: &Path) -> Result<FileSystemCache, Failure> {
    FileSystemCache::builder(dir)
        .threshold(0)
        .no_default_ttl()
        .open_existing()
        .map_err(Failure::from)
}

fn run(cli: &Cli) -> Outcome {
    match &cli.command {
        Command::Stats { dir } => stats(cli.json, dir),
        Command::Gc {
            dir,
            verbose,
            no_progress,
        } => gc(cli.json, dir, *verbose, *no_progress),
        Command::Keys { dir } => keys(cli.json, dir),
        Command::Get { dir, key } => get(cli.json, dir, key),
        Command::Inspect { file } => inspect(cli.json, file),
        Command::Delete { dir, key } => delete(cli.json, dir, key),
        Command::Clear { dir, yes } => clear(cli.json, dir, *yes),
    }
}

fn print_json(v: &Value) -> Outcome {
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v).map_err(|e| Failure::Error(e.to_string()))?;
    writeln!(out)?;
    Ok(())
}

fn mode_name(mode: RenameMode) -> &'static str {
    match mode {
        RenameMode::Renameat2 => "renameat2",
        RenameMode::Portable => "portable",
        _ => "unknown",
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn stats(as_json: bool, dir: &Path) -> Outcome {
    let cache = open(dir)?;
    let r: DirReport = cache.scan()?;
    if as_json {
        return print_json(&json!({
            "dir": dir,
            "entries": r.entries,
            "bytes": r.bytes,
            "expired": r.expired,
            "damaged": r.damaged,
            "temp": r.litter,
            "foreign": r.foreign,
            "counted": r.counted,
            "threshold": r.threshold,
            "counted_bytes": r.counted_bytes,
            "max_bytes": r.max_bytes,
            "rename_mode": mode_name(r.rename_mode),
        }));
    }
    let threshold = match r.threshold {
        Some(0) => "none (unbounded), as last opened".to_owned(),
        Some(t) => format!("{t} entries, as last opened"),
        None => "not recorded".to_owned(),
    };
    println!("directory    {}", dir.display());
    println!("entries      {} ({})", r.entries, human_bytes(r.bytes));
    println!("expired      {}", r.expired);
    println!("damaged      {}", r.damaged);
    println!("temp files   {}", r.litter);
    println!("foreign      {}", r.foreign);
    println!(
        "counted      {} (the shared count: entry names, live or not)",
        r.counted
    );
    println!("threshold    {threshold}");
    match (r.counted_bytes, r.max_bytes) {
        (Some(total), Some(max)) => println!(
            "byte budget  {} of {} ({:.0}%), as last opened",
            human_bytes(total),
            human_bytes(max),
            total as f64 * 100.0 / max.max(1) as f64
        ),
        _ => println!("byte budget  none recorded"),
    }
    println!("rename mode  {}", mode_name(r.rename_mode));
    Ok(())
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
struct Progress {
    on: bool,
    drawn: usize,
}

impl Progress {
    fn new(wanted: bool) -> Progress {
        Progress {
            on: wanted && io::stderr().is_terminal(),
            drawn: usize::MAX,
        }
    }

    fn update(&mut self, done: usize, total: usize) {
        const WIDTH: usize = 40;
        let filled = done * WIDTH / total.max(1);
        if !self.on || filled == self.drawn {
            return;
        }
        self.drawn = filled;
        let bar: String = "#".repeat(filled) + &" ".repeat(WIDTH - filled);
        let _ = write!(io::stderr(), "\rgc [{bar}] {done}/{total} shards");
        if done == total {
            let _ = writeln!(io::stderr());
        }
    }
}

fn gc(as_json: bool, dir: &Path, verbose: bool, no_progress: bool) -> Outcome {
    let cache = open_to_write(dir)?;
    let mut bar = Progress::new(!no_progress && !as_json);
    let r = cache.prune_with_progress(|done, total| bar.update(done, total))?;
    let errors = cache.stats().sweep_errors;
    if as_json {
        print_json(&json!({
            "dir": dir,
            "expired": r.expired,
            "damaged": r.damaged,
            "temp": r.stale_temp,
            "remaining": r.remaining,
            "errors": errors,
        }))?;
    } else if verbose {
        println!(
            "removed {} expired, {} damaged or foreign, {} stale temp; {} live entries remain",
            r.expired, r.damaged, r.stale_temp, r.remaining
        );
    }
    if errors > 0 {
        return Err(Failure::Error(format!(
            "{errors} file(s) in {} could not be removed",
            dir.display()
        )));
    }
    Ok(())
}

fn keys(as_json: bool, dir: &Path) -> Outcome {
    let cache = open(dir)?;
    let mut all = Vec::new();
    let mut out = io::stdout().lock();
    for key in cache.keys() {
        let key = key?;
        if as_json {
            all.push(key);
        } else {
            writeln!(out, "{key}")?;
        }
    }
    drop(out);
    if as_json {
        print_json(&json!(all))?;
    }
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The payload as a JSON value: decoded for the JSON and MessagePack codecs; for
/// raw bytes, a string if they are UTF-8, else their hex in an object.
fn decode_value(codec: &str, payload: &[u8]) -> Result<Value, String> {
    match codec {
        "json" => serde_json::from_slice(payload).map_err(|e| format!("JSON payload: {e}")),
        "msgpack" => {
            rmp_serde::from_slice(payload).map_err(|e| format!("MessagePack payload: {e}"))
        }
        _ => Ok(match std::str::from_utf8(payload) {
            Ok(s) => Value::String(s.to_owned()),
            Err(_) => {
                json!({ "hex": payload.iter().map(|b| format!("{b:02x}")).collect::<String>() })
            }
        }),
    }
}

/// Reads an entry file as the library reads entries (no symlink followed, no FIFO
/// or device read, no more than the header declares); `None` if it does not exist.
fn read_entry(path: &Path) -> Result<Option<EntryFile>, Failure> {
    match fscache::inspect_file(path) {
        Ok(entry) => Ok(Some(entry)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Failure::Error(format!("{}: {e}", path.display()))),
    }
}

fn get(as_json: bool, dir: &Path, key: &str) -> Outcome {
    let cache = open(dir)?;
    let missing = || Failure::NotFound(format!("no live entry for key {key:?}"));
    // Beneath the cache directory, as the library reads (a symlink, FIFO or device
    // at the entry's name is damage, never read).
    let Some(entry) = cache.inspect_key(key)? else {
        return Err(missing());
    };
    let (Some(header), Some(payload), None) = (entry.header, &entry.payload, &entry.damage) else {
        // Damaged: never returned as data (a read through the library removes it).
        return Err(missing());
    };
    if entry.key.as_deref() != Some(key) || header.expires_at_ms.is_some_and(|t| t <= now_ms()) {
        return Err(missing());
    }
    let value = decode_value(header.codec, payload).map_err(Failure::Error)?;
    if as_json {
        return print_json(&json!({
            "key": key,
            "codec": header.codec,
            "expires_at_ms": header.expires_at_ms,
            "value": value,
        }));
    }
    match value {
        Value::String(s) if header.codec == "raw" => println!("{s}"),
        v => println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| Failure::Error(e.to_string()))?
        ),
    }
    Ok(())
}

fn inspect(as_json: bool, file: &Path) -> Outcome {
    let Some(entry) = read_entry(file)? else {
        return Err(Failure::Error(format!("{}: no such file", file.display())));
    };
    let value = match (&entry.header, &entry.payload) {
        (Some(h), Some(p)) => Some(decode_value(h.codec, p)),
        _ => None,
    };
    let now = now_ms();
    if as_json {
        let h = entry.header.map(|h| {
            json!({
                "codec": h.codec,
                "expires_at_ms": h.expires_at_ms,
                "expired": h.expires_at_ms.is_some_and(|t| t <= now),
                "write_id": format!("{:016x}", h.write_id),
                "key_len": h.key_len,
                "payload_len": h.payload_len,
            })
        });
        let (value, value_error) = match value {
            Some(Ok(v)) => (Some(v), None),
            Some(Err(e)) => (None, Some(e)),
            None => (None, None),
        };
        return print_json(&json!({
            "file": file,
            "len": entry.len,
            "header": h,
            "key": entry.key,
            "value": value,
            "value_error": value_error,
            "damage": entry.damage,
        }));
    }
    println!("file         {} ({} bytes)", file.display(), entry.len);
    if let Some(h) = entry.header {
        println!("codec        {}", h.codec);
        match h.expires_at_ms {
            None => println!("expires      never"),
            Some(t) if t <= now => {
                println!(
                    "expires      {t} (Unix ms; expired {} s ago)",
                    (now - t) / 1000
                )
            }
            Some(t) => println!(
                "expires      {t} (Unix ms; in {} s)",
                (t - now).div_ceil(1000)
            ),
        }
        println!("write id     {:016x}", h.write_id);
        println!(
            "lengths      key {} B, payload {} B",
            h.key_len, h.payload_len
        );
    }
    if let Some(k) = &entry.key {
        println!("key          {k:?}");
    }
    let raw = entry.header.is_some_and(|h| h.codec == "raw");
    match value {
        // Raw bytes that are text are shown as they are (store records are raw).
        Some(Ok(Value::String(text))) if raw => println!("value        {text}"),
        Some(Ok(v)) => println!(
            "value        {}",
            serde_json::to_string(&v).map_err(|e| Failure::Error(e.to_string()))?
        ),
        Some(Err(e)) => println!("value        undecodable: {e}"),
        None => {}
    }
    match &entry.damage {
        None => println!("damage       none"),
        Some(d) => {
            println!("damage       {d}");
            return Err(Failure::Error(format!(
                "{} is not a valid entry: {d}",
                file.display()
            )));
        }
    }
    Ok(())
}

fn delete(as_json: bool, dir: &Path, key: &str) -> Outcome {
    let cache = open_to_write(dir)?;
    let deleted = cache.delete(key)?;
    if as_json {
        print_json(&json!({ "key": key, "deleted": deleted }))?;
    }
    if deleted {
        Ok(())
    } else {
        Err(Failure::NotFound(format!("no entry for key {key:?}")))
    }
}

fn clear(as_json: bool, dir: &Path, yes: bool) -> Outcome {
    let cache = open_to_write(dir)?;
    if !yes {
        eprint!("Delete every entry in {}? [y/N] ", dir.display());
        io::stderr().flush()?;
        let mut answer = String::new();
        io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
            return Err(Failure::Error("not cleared".to_owned()));
        }
    }
    let removed = cache.clear()?;
    if as_json {
        print_json(&json!({ "dir": dir, "removed": removed }))?;
    } else {
        println!("removed {removed} entries");
    }
    Ok(())
}
