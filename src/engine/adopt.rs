//! Opening a directory: refusing a foreign one, probing what the filesystem supports,
//! the marker file, the shard layout and the shared counter.
//!
//! The marker is written first (atomically, by rename), so two processes opening a
//! new directory at once both see an fscache; everything after it is idempotent.

use std::io::{self, Read, Write};
use std::path::Path;

use super::Config;
use super::scan::count_entry_names;
use crate::disk::counter::{self, SharedState};
use crate::disk::layout::{
    self, FORMAT_VERSION, LOCK_DIR, MARKER, SHARDS, STATE, STRIPES, SWEEP_LOCK, TEMP_PREFIX,
};
use crate::disk::lock::Locks;
use crate::disk::sys::{self, RenameMode, Root};
use crate::error::{Error, Result};

fn marker_text() -> String {
    format!(
        "fscache cache directory: every file below is created and deleted by fscache.\n\
         format={FORMAT_VERSION}\n"
    )
}

/// What `open` found in the directory, before it writes anything there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Found {
    /// An fscache of this format.
    Cache,
    /// An empty directory (temp names aside), to adopt with [`adopt`].
    Empty,
}

/// Checks the marker, refusing a non-empty directory without one, and writes
/// nothing: `open` must not touch a directory it was pointed at by mistake.
fn check_dir(root: &Root, dir: &Path) -> Result<Found> {
    if read_marker(root, dir)?.is_some() {
        return Ok(Found::Cache);
    }
    let names = sys::list_dir(root, ".").map_err(|e| Error::io("list cache directory", dir, e))?;
    if names.iter().any(|(name, _)| name == MARKER.as_bytes()) {
        // Another process adopted the directory after we looked for the marker.
        return read_marker(root, dir).map(|_| Found::Cache);
    }
    if names
        .iter()
        .any(|(name, _)| !name.starts_with(TEMP_PREFIX.as_bytes()))
    {
        return Err(Error::NotACache {
            path: dir.to_path_buf(),
            empty: false,
        });
    }
    Ok(Found::Empty)
}

/// Adopts an empty directory by writing the marker (a no-replace rename, so of two
/// processes adopting at once one writes it and the other checks it). `Ok(true)` if
/// this process wrote it.
fn adopt(root: &Root, dir: &Path, file_mode: u32) -> Result<bool> {
    let tmp = format!("{TEMP_PREFIX}marker-{:016x}", layout::next_write_id());
    let write = || -> io::Result<bool> {
        let mut f = root.create_new(&tmp, file_mode)?;
        sys::set_mode(&f, file_mode)?;
        f.write_all(marker_text().as_bytes())?;
        drop(f);
        root.rename_noreplace(&tmp, MARKER)
    };
    match write() {
        Ok(true) => Ok(true),
        Ok(false) => {
            // Another process adopted it first; check what it wrote.
            let _ = root.unlink(&tmp);
            read_marker(root, dir).map(|_| false)
        }
        Err(e) => {
            let _ = root.unlink(&tmp);
            Err(Error::io("write marker file", dir.join(MARKER), e))
        }
    }
}

/// `Ok(Some(()))` for a marker of this format, `Ok(None)` if there is none.
fn read_marker(root: &Root, dir: &Path) -> Result<Option<()>> {
    let path = dir.join(MARKER);
    let mut file = match root.open_read(MARKER) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open marker file", path, e)),
    };
    let mut text = String::new();
    (&mut file)
        .take(4096)
        .read_to_string(&mut text)
        .map_err(|e| Error::io("read marker file", &path, e))?;
    if !text.starts_with("fscache") {
        return Err(Error::IncompatibleFormat {
            path: dir.to_path_buf(),
            found: text.lines().next().unwrap_or("").chars().take(80).collect(),
            supported: FORMAT_VERSION,
        });
    }
    let found = text
        .lines()
        .find_map(|l| l.strip_prefix("format="))
        .unwrap_or("")
        .trim();
    if found != FORMAT_VERSION.to_string() {
        return Err(Error::IncompatibleFormat {
            path: dir.to_path_buf(),
            found: found.chars().take(80).collect(),
            supported: FORMAT_VERSION,
        });
    }
    Ok(Some(()))
}

/// A count above this is damage, not a cache (2^40 entries of at least 100 bytes
/// would be 100 TiB in 256 directories).
const ABSURD_COUNT: i64 = 1 << 40;

/// Maps the shared state, creating the layout and the state file if missing.
///
/// A damaged state file (wrong size or magic) is repaired in place, never replaced:
/// handles that already map it keep sharing one counter with the new one. A negative
/// or absurd count is recounted. Both run under an exclusive `flock` on the state file
/// itself, so two processes opening at once repair it once.
fn open_state(
    root: &Root,
    dir: &Path,
    file_mode: u32,
    dir_mode: u32,
    fresh: bool,
) -> Result<SharedState> {
    let state_path = dir.join(STATE);
    let io_err = |op, e| Error::io(op, &state_path, e);
    let file = loop {
        match root.open_rw(STATE) {
            Ok(file) => break file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                create_layout(root, dir, file_mode, dir_mode)?;
                create_state(root, dir, (file_mode, dir_mode), fresh)?;
            }
            Err(e) => return Err(io_err("open state file", e)),
        }
    };
    if let Err(e) = SharedState::check(&file) {
        if e.kind() != io::ErrorKind::InvalidData {
            return Err(io_err("read state file", e));
        }
        file.lock().map_err(|e| io_err("lock state file", e))?;
        let repaired = match SharedState::check(&file) {
            Ok(()) => Ok(()), // another process repaired it meanwhile
            Err(e) => {
                log::warn!(
                    "fscache: {} is damaged ({e}); repairing it in place from a count of the \
                     entries",
                    state_path.display()
                );
                let count = count_entry_names(root, dir, dir_mode)? as i64;
                SharedState::repair_in_place(&file, count)
            }
        };
        let _ = file.unlock();
        repaired.map_err(|e| io_err("repair state file", e))?;
    }
    let lock = file.try_clone().map_err(|e| io_err("open state file", e))?;
    let state = SharedState::map(file).map_err(|e| io_err("map state file", e))?;
    if !(0..=ABSURD_COUNT).contains(&state.load()) {
        lock.lock().map_err(|e| io_err("lock state file", e))?;
        let found = state.load();
        if !(0..=ABSURD_COUNT).contains(&found) {
            let count = count_entry_names(root, dir, dir_mode);
            if let Ok(count) = count {
                log::warn!(
                    "fscache: {} held an impossible entry count ({found}); recounted {count}",
                    state_path.display()
                );
                state.reset(count as i64);
            }
            let _ = lock.unlock();
            count?;
        } else {
            let _ = lock.unlock();
        }
    }
    Ok(state)
}

fn create_layout(root: &Root, dir: &Path, file_mode: u32, dir_mode: u32) -> Result<()> {
    let mkdir = |rel: &str| {
        root.mkdir(rel, dir_mode)
            .map_err(|e| Error::io("create directory", dir.join(rel), e))
    };
    mkdir(LOCK_DIR)?;
    for shard in 0..SHARDS {
        mkdir(&layout::shard_str(shard as u8))?;
    }
    create_lock_files(root, dir, file_mode)
}

/// Creates the stripe and sweep lock files up front (an inode each), so that no
/// operation ever needs a new inode to take a lock: on a filesystem out of inodes
/// (ENOSPC), a `delete` still runs, and the inodes it frees go to the next writes
/// rather than to lock files made on first use. With the shard directories made
/// up front too, a cache's fixed cost is 256 + 66 inodes, and every write of a new
/// key needs exactly one more.
fn create_lock_files(root: &Root, dir: &Path, file_mode: u32) -> Result<()> {
    let rels = (0..STRIPES)
        .map(layout::lock_rel)
        .chain(std::iter::once(SWEEP_LOCK.to_owned()));
    for rel in rels {
        let file = root
            .open_rw_create(&rel, file_mode)
            .map_err(|e| Error::io("create lock file", dir.join(&rel), e))?;
        // Exactly file_mode, as the lock code sets it (the umask may remove bits
        // another user of the cache needs); not ours to change if another's.
        let _ = sys::set_mode(&file, file_mode);
    }
    Ok(())
}

/// Creates the state file if nobody has: a no-replace rename (atomic in both rename
/// modes), so two processes opening a fresh directory end up on one file.
fn create_state(
    root: &Root,
    dir: &Path,
    (file_mode, dir_mode): (u32, u32),
    fresh: bool,
) -> Result<()> {
    let count = if fresh {
        0
    } else {
        count_entry_names(root, dir, dir_mode)? as i64
    };
    let tmp = format!("{TEMP_PREFIX}state-{:016x}", layout::next_write_id());
    let write = || -> io::Result<()> {
        let mut f = root.create_new(&tmp, file_mode)?;
        // Every user of a shared cache maps this file read-write.
        sys::set_mode(&f, file_mode)?;
        counter::write_initial(&mut f, count, fresh)?;
        drop(f);
        if !root.rename_noreplace(&tmp, STATE)? {
            // Another process created it first.
            root.unlink(&tmp)?;
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = root.unlink(&tmp);
        Error::io("create state file", dir.join(STATE), e)
    })
}

/// What opening a directory produced.
pub(super) struct Opened {
pub(super) root: Root,
pub(super) state: SharedState,
pub(super) locks: Locks,
pub(super) needs_fchmod: bool,
}

/// Opens `opts.dir`: creates it if missing, refuses a foreign directory, probes the
/// filesystem, adopts an empty directory, and maps the shared counter.
pub(super) fn open(opts: &Config) -> Result<Opened> {
    let dir = opts.dir.clone();
    let io_err = |op, e| Error::io(op, &dir, e);
    match std::fs::symlink_metadata(&dir) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound && !opts.existing_only => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(opts.dir_mode)
                .create(&dir)
                .map_err(|e| io_err("create cache directory", e))?;
            // Exactly dir_mode whatever the umask, keeping a setgid bit inherited
            // from the parent (a group-shared cache).
            use std::os::unix::fs::PermissionsExt;
            let inherited = std::fs::metadata(&dir)
                .map(|m| m.permissions().mode() & sys::SETGID)
                .unwrap_or(0);
            std::fs::set_permissions(
                &dir,
                std::fs::Permissions::from_mode(opts.dir_mode | inherited),
            )
            .map_err(|e| io_err("set cache directory permissions", e))?;
        }
        Err(e) => return Err(io_err("inspect cache directory", e)),
    }
    let mut root = Root::open(&dir).map_err(|e| io_err("open cache directory", e))?;
    // Refuse a foreign directory before writing anything into it (the probe below
    // creates files); the marker itself is written after the probe, which decides
    // how a no-replace rename is done here.
    let found = check_dir(&root, &dir)?;
    if opts.existing_only && found == Found::Empty {
        return Err(Error::NotACache { path: dir, empty: true });
    }
    let needs_fchmod = probe(&mut root, &dir, opts.file_mode, opts.force_portable_renames)?;
    if root.mode() == RenameMode::Portable {
        log::warn!(
            "fscache: {} has no renameat2 flags (or the portable mode was forced): using \
             link + unlink and a lock per write (RenameMode::Portable)",
            dir.display()
        );
    }
    let fresh = found == Found::Empty
        && adopt(&root, &dir, opts.file_mode)?;

    let locks = Locks::new(&dir, root.id(), opts.file_mode, opts.dir_mode);
    let state = open_state(&root, &dir, opts.file_mode, opts.dir_mode, fresh)?;
    // A directory made before lock files were made up front (or whose locks were
    // removed): make them now, best effort (one lstat when they are there; a full
    // disk leaves them to be made on first use, as before).
    if root.lstat(&layout::lock_rel(STRIPES - 1)).is_err() {
        let _ = create_lock_files(&root, &dir, opts.file_mode);
    }

    Ok(Opened {
        root,
        state,
        locks,
        needs_fchmod,
    })
}

/// Learns, with two probe files, whether the umask strips bits of `file_mode` (the
/// result), whether `flock` works, and which [`RenameMode`] the filesystem supports
/// (set on `root`). Refuses a filesystem that lacks what the guarantees need.
fn probe(root: &mut Root, dir: &Path, file_mode: u32, force_portable: bool) -> Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let id = layout::next_write_id();
    let a = format!("{TEMP_PREFIX}probe-{id:016x}");
    let b = format!("{TEMP_PREFIX}probe-{id:016x}-b");
    let io_err = |e| Error::io("create a file in the cache directory", dir, e);
    let file = root.create_new(&a, file_mode).map_err(io_err)?;
    let cleanup = |root: &Root| {
        let _ = root.unlink(&a);
        let _ = root.unlink(&b);
    };
    let mode = file.metadata().map(|m| m.permissions().mode() & 0o777);
    let locked = file.try_lock();
    drop(file);
    let unsupported = |missing, source| Error::UnsupportedFilesystem {
        path: dir.to_path_buf(),
        missing,
        source,
    };
    match locked {
        Ok(()) | Err(std::fs::TryLockError::WouldBlock) => {}
        Err(std::fs::TryLockError::Error(e)) => {
            cleanup(root);
            return Err(unsupported("flock", e));
        }
    }
    let mode = match mode {
        Ok(m) => m,
        Err(e) => {
            cleanup(root);
            return Err(io_err(e));
        }
    };
    if let Err(e) = root.create_new(&b, file_mode) {
        cleanup(root);
        return Err(io_err(e));
    }
    // probe_mode consumes (removes) both probe files, also on error.
    root.probe_mode(dir, &a, &b, force_portable)
        .map_err(|(missing, e)| unsupported(missing, e))?;
    Ok(mode != file_mode)
}
