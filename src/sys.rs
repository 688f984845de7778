//! The few filesystem calls the cache makes, all relative to the cache directory's
//! descriptor and none following symlinks.
//!
//! Opens use `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` where the kernel has it
//! (Linux ≥ 5.6), so neither a planted entry symlink nor a shard directory replaced
//! by a symlink is followed; elsewhere `openat(O_NOFOLLOW)` guards the last component.
//! New entries are committed with `renameat2(RENAME_NOREPLACE)`, which tells a new
//! key from an overwrite without a `stat`; where the filesystem refuses the flag the
//! cache falls back to `stat` + `rename`.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

/// The cache directory, opened once.
#[derive(Debug)]
pub(crate) struct Root {
    fd: OwnedFd,
    no_openat2: AtomicBool,
    no_noreplace: AtomicBool,
    /// Whether the last commit replaced an entry (which rename to try first).
    last_replaced: AtomicBool,
}

/// What committing a write did to the entry's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Commit {
    /// The name did not exist before.
    Created,
    /// An older entry was replaced.
    Replaced,
}

fn io_err(e: Errno) -> io::Error {
    io::Error::from(e)
}

impl Root {
    pub(crate) fn open(path: &std::path::Path) -> io::Result<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root {
            fd,
            no_openat2: AtomicBool::new(false),
            no_noreplace: AtomicBool::new(false),
            last_replaced: AtomicBool::new(false),
        })
    }

    fn open_at(&self, rel: &str, flags: OFlags, mode: u32) -> io::Result<File> {
        let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        let mode = Mode::from_raw_mode(mode);
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if !self.no_openat2.load(Ordering::Relaxed) {
            use rustix::fs::ResolveFlags;
            let resolve =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            match rustix::fs::openat2(&self.fd, rel, flags, mode, resolve) {
                Ok(fd) => return Ok(File::from(fd)),
                // Kernels before 5.6, and seccomp filters that do not know openat2.
                Err(Errno::NOSYS) | Err(Errno::PERM) if !self.openat2_works() => {
                    self.no_openat2.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(io_err(e)),
            }
        }
        rustix::fs::openat(&self.fd, rel, flags, mode)
            .map(File::from)
            .map_err(io_err)
    }

    /// Probes once whether openat2 itself is usable, to tell "not supported" from a
    /// real EPERM on a file.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn openat2_works(&self) -> bool {
        rustix::fs::openat2(
            &self.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            rustix::fs::ResolveFlags::empty(),
        )
        .is_ok()
    }

    /// Opens an existing file for reading.
    pub(crate) fn open_read(&self, rel: &str) -> io::Result<File> {
        self.open_at(rel, OFlags::RDONLY, 0)
    }

    /// Creates a new file (`O_EXCL`) for writing with `mode`.
    pub(crate) fn create_new(&self, rel: &str, mode: u32) -> io::Result<File> {
        self.open_at(rel, OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL, mode)
    }

    /// Opens or creates a file for reading and writing (lock and state files).
    pub(crate) fn open_rw_create(&self, rel: &str, mode: u32) -> io::Result<File> {
        self.open_at(rel, OFlags::RDWR | OFlags::CREATE, mode)
    }

    /// Opens an existing file for reading and writing.
    pub(crate) fn open_rw(&self, rel: &str) -> io::Result<File> {
        self.open_at(rel, OFlags::RDWR, 0)
    }

    /// Opens a directory below the root, refusing symlinks.
    pub(crate) fn open_dir(&self, rel: &str) -> io::Result<File> {
        self.open_at(rel, OFlags::RDONLY | OFlags::DIRECTORY, 0)
    }

    /// Moves `from` over `to` (the commit of a write), telling whether `to` is a new
    /// name, exactly even while other processes delete `to`.
    ///
    /// `renameat2(RENAME_EXCHANGE)` swaps the new file in if `to` exists (the old entry
    /// lands on `from` and is unlinked); if `to` is absent, `RENAME_NOREPLACE` creates
    /// it. A plain rename after a failed no-replace rename would miscount when `to` is
    /// deleted in between. Where the flags are unsupported: stat + rename (racy; only
    /// the count can drift, see the crate docs).
    pub(crate) fn rename_commit(&self, from: &str, to: &str) -> io::Result<Commit> {
        if self.no_noreplace.load(Ordering::Relaxed) {
            if self.rename_noreplace(from, to)? {
                return Ok(Commit::Created);
            }
            self.rename(from, to)?;
            return Ok(Commit::Replaced);
        }
        // Try first what the previous commit was: workloads tend to be all new keys
        // (a cache filling) or all overwrites (sessions saved on every request), so
        // the guess usually saves the other call.
        let mut exchange_first = self.last_replaced.load(Ordering::Relaxed);
        for _ in 0..16 {
            if exchange_first {
                match rustix::fs::renameat_with(
                    &self.fd,
                    from,
                    &self.fd,
                    to,
                    rustix::fs::RenameFlags::EXCHANGE,
                ) {
                    Ok(()) => {
                        // `from` now holds the replaced entry.
                        self.unlink(from)?;
                        self.last_replaced.store(true, Ordering::Relaxed);
                        return Ok(Commit::Replaced);
                    }
                    Err(Errno::NOENT) => {}
                    Err(Errno::INVAL) | Err(Errno::NOSYS) | Err(Errno::NOTSUP) => {
                        log::info!(
                            "fscache: renameat2(RENAME_EXCHANGE) unsupported here; using stat + rename"
                        );
                        self.no_noreplace.store(true, Ordering::Relaxed);
                        return self.rename_commit(from, to);
                    }
                    Err(e) => return Err(io_err(e)),
                }
            }
            if self.rename_noreplace(from, to)? {
                self.last_replaced.store(false, Ordering::Relaxed);
                return Ok(Commit::Created);
            }
            // The name exists (or was created meanwhile): exchange with it.
            exchange_first = true;
        }
        Err(io::Error::other(
            "the entry kept appearing and disappearing during the write",
        ))
    }

    /// Moves `from` to `to` only if `to` does not exist; `Ok(false)` if it does.
    /// Where the filesystem has no atomic no-replace rename, `to` is checked first
    /// (racy; only the entry count can drift, see the crate docs).
    pub(crate) fn rename_noreplace(&self, from: &str, to: &str) -> io::Result<bool> {
        if !self.no_noreplace.load(Ordering::Relaxed) {
            match rustix::fs::renameat_with(
                &self.fd,
                from,
                &self.fd,
                to,
                rustix::fs::RenameFlags::NOREPLACE,
            ) {
                Ok(()) => return Ok(true),
                Err(Errno::EXIST) => return Ok(false),
                Err(Errno::INVAL) | Err(Errno::NOSYS) | Err(Errno::NOTSUP) => {
                    log::info!(
                        "fscache: renameat2(RENAME_NOREPLACE) unsupported here; using stat + rename"
                    );
                    self.no_noreplace.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(io_err(e)),
            }
        }
        if self.exists(to)? {
            return Ok(false);
        }
        self.rename(from, to)?;
        Ok(true)
    }

    pub(crate) fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        rustix::fs::renameat(&self.fd, from, &self.fd, to).map_err(io_err)
    }

    /// Removes a name (never follows it). `Ok(false)` if it did not exist.
    pub(crate) fn unlink(&self, rel: &str) -> io::Result<bool> {
        match rustix::fs::unlinkat(&self.fd, rel, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(io_err(e)),
        }
    }

    /// Creates a directory; `Ok(false)` if something already has that name.
    pub(crate) fn mkdir(&self, rel: &str, mode: u32) -> io::Result<bool> {
        match rustix::fs::mkdirat(&self.fd, rel, Mode::from_raw_mode(mode)) {
            Ok(()) => {
                // The umask may have removed bits the caller asked for.
                rustix::fs::chmodat(&self.fd, rel, Mode::from_raw_mode(mode), AtFlags::empty())?;
                Ok(true)
            }
            Err(Errno::EXIST) => Ok(false),
            Err(e) => Err(io_err(e)),
        }
    }

    pub(crate) fn exists(&self, rel: &str) -> io::Result<bool> {
        match rustix::fs::statat(&self.fd, rel, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(io_err(e)),
        }
    }

    /// `lstat`: what is at `rel`, not following a symlink.
    pub(crate) fn lstat(&self, rel: &str) -> io::Result<rustix::fs::Stat> {
        rustix::fs::statat(&self.fd, rel, AtFlags::SYMLINK_NOFOLLOW).map_err(io_err)
    }

    /// `fsync` on a directory below the root, so renames and unlinks in it are durable.
    pub(crate) fn sync_dir(&self, rel: &str) -> io::Result<()> {
        let dir = self.open_dir(rel)?;
        rustix::fs::fsync(dir.as_fd()).map_err(io_err)
    }
}

/// What kind of file a directory entry is, without following symlinks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// Reads the names in one directory below the root (never through a symlink).
pub(crate) fn list_dir(root: &Root, rel: &str) -> io::Result<Vec<(Vec<u8>, Kind)>> {
    let dir = root.open_dir(rel)?;
    let mut iter = rustix::fs::Dir::read_from(dir.as_fd()).map_err(io_err)?;
    let mut out = Vec::new();
    while let Some(ent) = iter.read() {
        let ent = ent.map_err(io_err)?;
        let name = ent.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let kind = match ent.file_type() {
            rustix::fs::FileType::RegularFile => Kind::File,
            rustix::fs::FileType::Directory => Kind::Dir,
            rustix::fs::FileType::Symlink => Kind::Symlink,
            rustix::fs::FileType::Unknown => {
                // Some filesystems do not fill d_type.
                let mut path = String::from(rel);
                path.push('/');
                path.push_str(&String::from_utf8_lossy(name));
                match root.lstat(&path) {
                    Ok(st) => kind_of(&st),
                    Err(_) => Kind::Other,
                }
            }
            _ => Kind::Other,
        };
        out.push((name.to_vec(), kind));
    }
    Ok(out)
}

pub(crate) fn kind_of(st: &rustix::fs::Stat) -> Kind {
    match rustix::fs::FileType::from_raw_mode(st.st_mode) {
        rustix::fs::FileType::RegularFile => Kind::File,
        rustix::fs::FileType::Directory => Kind::Dir,
        rustix::fs::FileType::Symlink => Kind::Symlink,
        _ => Kind::Other,
    }
}

/// Reads a whole file with no `fstat`: the entry header declares the length, so one
/// `read` of the first chunk sizes the buffer, and a read returning 0 ends it.
/// Reads at most `limit + 1` bytes, so an oversized file is detected, not loaded.
pub(crate) fn read_entry_file(file: &mut File, limit: usize) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        if buf.len() == buf.capacity() {
            let want = if buf.len() >= crate::entry::HEADER_LEN {
                match crate::entry::Header::parse(&buf) {
                    // +1 so the read that returns 0 has room and EOF is seen.
                    Ok(h) => h.total_len().saturating_add(1),
                    Err(_) => buf.len() * 2,
                }
            } else {
                buf.len() * 2
            };
            let want = want.min(limit.saturating_add(1)).max(buf.len() + 1);
            buf.reserve_exact(want - buf.len());
        }
        let spare = buf.capacity() - buf.len();
        let start = buf.len();
        buf.resize(start + spare, 0);
        let n = loop {
            match file.read(&mut buf[start..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    buf.truncate(start);
                    return Err(e);
                }
            }
        };
        buf.truncate(start + n);
        if n == 0 || buf.len() > limit {
            return Ok(buf);
        }
    }
}

/// Reads up to `len` bytes from the start of a file (header reads).
pub(crate) fn read_prefix(file: &mut File, len: usize) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}
