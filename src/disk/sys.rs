//! The few filesystem calls the cache makes, all relative to the cache directory's
//! descriptor and none following symlinks.
//!
//! Opens use `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` where the kernel has it
//! (Linux ≥ 5.6), so neither a planted entry symlink nor a shard directory replaced
//! by a symlink is followed; elsewhere `openat(O_NOFOLLOW)` guards the last component.
//!
//! Commits come in two modes, chosen when the cache is opened ([`RenameMode`]):
//! `renameat2` with `RENAME_NOREPLACE` / `RENAME_EXCHANGE` (Linux on local
//! filesystems), or the portable mode for filesystems and systems without those flags
//! (NFS, SMB, most FUSE, 9p; macOS, FreeBSD): a no-replace rename is `linkat` +
//! `unlinkat` (atomic on every POSIX filesystem, NFS included), and what has no
//! portable atomic form (telling a new name from an overwrite) is done under the
//! key's stripe lock by the caller.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags, RawMode};
use rustix::io::Errno;

/// How a cache directory commits writes; see [`Stats::rename_mode`](crate::Stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RenameMode {
    /// `renameat2(RENAME_NOREPLACE)` for new keys and `RENAME_EXCHANGE` for
    /// overwrites: no lock on `set`, and an exact entry count.
    #[default]
    Renameat2,
    /// `linkat` + `unlinkat` for no-replace renames, and the key's stripe lock around
    /// every commit (one `flock` more per `set`). The same guarantees, for filesystems
    /// and systems without `renameat2` flags.
    Portable,
}

/// A directory's identity (device, inode): two handles of one directory share it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct DirId {
    dev: u64,
    ino: u64,
}

/// The cache directory, opened once.
#[derive(Debug)]
pub(crate) struct Root {
    fd: OwnedFd,
    id: DirId,
    mode: RenameMode,
    #[cfg(any(target_os = "linux", target_os = "android"))]
    no_openat2: AtomicBool,
    /// Whether the last commit replaced an entry (which rename to try first).
    last_replaced: AtomicBool,
}

/// What committing a write did to the entry's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Commit {
    /// The name did not exist before.
    Created,
    /// An older entry was replaced and is gone.
    Replaced,
    /// An older entry was replaced; it now sits at the temp name, for the caller to
    /// remove (the commit itself is complete).
    Exchanged,
}

fn io_err(e: Errno) -> io::Error {
    io::Error::from(e)
}

/// `mode` as the platform's `mode_t` (16 bits on macOS and FreeBSD).
#[allow(clippy::unnecessary_cast)]
fn raw_mode(mode: u32) -> Mode {
    Mode::from_raw_mode((mode & 0o7777) as RawMode)
}

/// The setgid bit of a directory's mode: files created below get its group.
pub(crate) const SETGID: u32 = 0o2000;

/// Sets exactly `mode` on a file this process just created (the umask may have
/// removed bits the caller asked for, such as group write for a shared cache).
pub(crate) fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    rustix::fs::fchmod(file, raw_mode(mode)).map_err(io_err)
}

/// Errors that mean "this filesystem or kernel does not do that".
#[cfg(any(target_os = "linux", target_os = "android"))]
fn is_unsupported(e: Errno) -> bool {
    e == Errno::INVAL || e == Errno::NOSYS || e == Errno::NOTSUP || e == Errno::OPNOTSUPP
}

impl Root {
    pub(crate) fn open(path: &std::path::Path) -> io::Result<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st = rustix::fs::fstat(&fd)?;
        #[allow(clippy::unnecessary_cast)]
        let id = DirId {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
        };
        Ok(Root {
            fd,
            id,
            mode: RenameMode::Renameat2,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            no_openat2: AtomicBool::new(false),
            last_replaced: AtomicBool::new(false),
        })
    }

    pub(crate) fn id(&self) -> DirId {
        self.id
    }

    pub(crate) fn mode(&self) -> RenameMode {
        self.mode
    }

    /// Learns which commit mode this directory supports, with two probe files
    /// (`probe_a` and `probe_b` must exist; both are consumed). `force_portable` skips
    /// `renameat2` (tests, and users who share the directory with portable-mode
    /// processes). `Err` names what the filesystem lacks.
    pub(crate) fn probe_mode(
        &mut self,
        dir: &std::path::Path,
        probe_a: &str,
        probe_b: &str,
        force_portable: bool,
    ) -> std::result::Result<RenameMode, (&'static str, io::Error)> {
        let moved = format!("{probe_a}-moved");
        let linked = format!("{probe_a}-linked");
        let cleanup = |names: &[&str]| {
            for n in names {
                let _ = self.unlink(n);
            }
        };
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if !force_portable && self.probe_renameat2(probe_a, probe_b, &moved)? {
            cleanup(&[probe_b, &moved]);
            self.mode = RenameMode::Renameat2;
            return Ok(self.mode);
        }
        let _ = force_portable;
        let linked_ok = rustix::fs::linkat(&self.fd, probe_a, &self.fd, &linked, AtFlags::empty())
            .map_err(io_err)
            .and_then(|()| crate::hooks::run(crate::hooks::Point::ProbeLink, dir));
        cleanup(&[probe_a, probe_b, &moved, &linked]);
        match linked_ok {
            Ok(()) => {
                self.mode = RenameMode::Portable;
                Ok(self.mode)
            }
            Err(e) => Err((
                "renameat2 no-replace renames or hard links (one of them is needed for \
                 atomic insert-if-absent)",
                e,
            )),
        }
    }

    fn open_at(&self, rel: &str, flags: OFlags, mode: u32) -> io::Result<File> {
        let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        let mode = raw_mode(mode);
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
    ///
    /// `O_NONBLOCK`, so a FIFO planted at an entry path cannot block the open or the
    /// reads (it has no effect on regular files); what is not a regular file then
    /// reads as damage.
    pub(crate) fn open_read(&self, rel: &str) -> io::Result<File> {
        self.open_at(rel, OFlags::RDONLY | OFlags::NONBLOCK, 0)
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
    /// `Renameat2` mode: `RENAME_EXCHANGE` swaps the new file in if `to` exists (the
    /// old entry lands on `from`: [`Commit::Exchanged`], the caller unlinks it); if
    /// `to` is absent, `RENAME_NOREPLACE` creates it. A plain rename after a failed
    /// no-replace rename would miscount when `to` is deleted in between.
    ///
    /// `Portable` mode: `linkat` (fails if `to` exists) + `unlinkat`, else a plain
    /// rename. The caller holds the key's stripe lock, which every delete and eviction
    /// of `to` also takes, so `to` cannot vanish between the two.
    pub(crate) fn rename_commit(&self, from: &str, to: &str) -> io::Result<Commit> {
        if self.mode == RenameMode::Portable {
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
                match self.exchange(from, to) {
                    Ok(()) => {
                        self.last_replaced.store(true, Ordering::Relaxed);
                        return Ok(Commit::Exchanged);
                    }
                    Err(Errno::NOENT) => {}
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

    /// Whether `RENAME_EXCHANGE` and `RENAME_NOREPLACE` both work here. On success the
    /// probe files are at `probe_b` and `moved`.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn probe_renameat2(
        &self,
        probe_a: &str,
        probe_b: &str,
        moved: &str,
    ) -> std::result::Result<bool, (&'static str, io::Error)> {
        use rustix::fs::{RenameFlags, renameat_with};
        let exchange = renameat_with(&self.fd, probe_a, &self.fd, probe_b, RenameFlags::EXCHANGE);
        let noreplace = exchange.and_then(|()| {
            renameat_with(&self.fd, probe_a, &self.fd, moved, RenameFlags::NOREPLACE)
        });
        match noreplace {
            Ok(()) => Ok(true),
            Err(e) if is_unsupported(e) => Ok(false),
            Err(e) => {
                for n in [probe_a, probe_b, moved] {
                    let _ = self.unlink(n);
                }
                Err(("renaming files", io_err(e)))
            }
        }
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn exchange(&self, from: &str, to: &str) -> Result<(), Errno> {
        rustix::fs::renameat_with(
            &self.fd,
            from,
            &self.fd,
            to,
            rustix::fs::RenameFlags::EXCHANGE,
        )
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn exchange(&self, _from: &str, _to: &str) -> Result<(), Errno> {
        unreachable!("exchange is used only in Renameat2 mode, which exists only on Linux")
    }

    /// Moves `from` to `to` only if `to` does not exist; `Ok(false)` if it does.
    /// Atomic in both modes: `RENAME_NOREPLACE`, or `linkat` (which never replaces)
    /// followed by `unlinkat(from)`. Should that unlink fail after the link, the
    /// move has happened and `from` is left as a second name of the same file, which
    /// sweeps remove once stale.
    pub(crate) fn rename_noreplace(&self, from: &str, to: &str) -> io::Result<bool> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if self.mode == RenameMode::Renameat2 {
            return match rustix::fs::renameat_with(
                &self.fd,
                from,
                &self.fd,
                to,
                rustix::fs::RenameFlags::NOREPLACE,
            ) {
                Ok(()) => Ok(true),
                Err(Errno::EXIST) => Ok(false),
                Err(e) => Err(io_err(e)),
            };
        }
        match rustix::fs::linkat(&self.fd, from, &self.fd, to, AtFlags::empty()) {
            Ok(()) => {}
            Err(Errno::EXIST) => return Ok(false),
            Err(e) => return Err(io_err(e)),
        }
        if let Err(e) = self.unlink(from) {
            log::warn!("fscache: could not remove the temp name {from} after linking it: {e}");
        }
        Ok(true)
    }

    /// Removes `rel`, a file or (left by damage) a directory tree, never following a
    /// symlink: names are opened below the root with the same no-symlink rules as
    /// entries. `Ok(false)` if nothing was there.
    pub(crate) fn remove_tree(&self, rel: &str) -> io::Result<bool> {
        self.remove_tree_at(rel, 16)
    }

    fn remove_tree_at(&self, rel: &str, depth: u32) -> io::Result<bool> {
        match rustix::fs::unlinkat(&self.fd, rel, AtFlags::empty()) {
            Ok(()) => return Ok(true),
            Err(Errno::NOENT) => return Ok(false),
            // Linux says EISDIR for a directory, macOS and FreeBSD EPERM.
            Err(Errno::ISDIR) | Err(Errno::PERM) if depth > 0 => {}
            Err(e) => return Err(io_err(e)),
        }
        for (name, _) in list_dir(self, rel)? {
            let name = String::from_utf8(name).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, "a name that is not UTF-8")
            })?;
            self.remove_tree_at(&format!("{rel}/{name}"), depth - 1)?;
        }
        match rustix::fs::unlinkat(&self.fd, rel, AtFlags::REMOVEDIR) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(io_err(e)),
        }
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

    /// Creates a directory with exactly `mode` (whatever the umask), keeping a setgid
    /// bit inherited from the parent (a group-shared cache relies on it for the group
    /// of every file below); `Ok(false)` if something already has that name.
    pub(crate) fn mkdir(&self, rel: &str, mode: u32) -> io::Result<bool> {
        match rustix::fs::mkdirat(&self.fd, rel, raw_mode(mode)) {
            Ok(()) => {
                let st = self.lstat(rel)?;
                #[allow(clippy::unnecessary_cast)]
                let setgid = (st.st_mode as u32) & SETGID;
                rustix::fs::chmodat(&self.fd, rel, raw_mode(mode | setgid), AtFlags::empty())?;
                Ok(true)
            }
            Err(Errno::EXIST) => Ok(false),
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

/// Whether an open or read error means "this name is not a regular file" (a
/// directory, a socket, a device without a driver, a FIFO with no data): damage,
/// never an I/O failure of the cache.
pub(crate) fn is_not_a_file_error(e: &io::Error) -> bool {
    [Errno::ISDIR, Errno::NXIO, Errno::AGAIN, Errno::NODEV, Errno::OPNOTSUPP]
        .iter()
        .any(|code| e.raw_os_error() == Some(code.raw_os_error()))
}

/// Whether an open failed because the name is, or passes through, a symlink (ELOOP
/// from `O_NOFOLLOW` / `RESOLVE_NO_SYMLINKS`, EXDEV from `RESOLVE_BENEATH`).
pub(crate) fn is_symlink_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == Errno::LOOP.raw_os_error() || code == Errno::XDEV.raw_os_error()
    )
}

/// What kind of file a directory entry is, without following symlinks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// An open directory below the root, read a batch of names at a time.
pub(crate) struct DirStream {
    dir: rustix::fs::Dir,
    rel: String,
}

impl std::fmt::Debug for DirStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirStream").field("rel", &self.rel).finish()
    }
}

impl DirStream {
    /// Opens `rel` (never through a symlink) for reading its names.
    pub(crate) fn open(root: &Root, rel: &str) -> io::Result<DirStream> {
        // Dir::new takes the descriptor we opened (read_from would open it again).
        let dir = root.open_dir(rel)?;
        let dir = rustix::fs::Dir::new(OwnedFd::from(dir)).map_err(io_err)?;
        Ok(DirStream {
            dir,
            rel: rel.to_owned(),
        })
    }

    /// The next name and its kind (`.` and `..` skipped); `None` at the end.
    pub(crate) fn next_entry(&mut self, root: &Root) -> Option<io::Result<(Vec<u8>, Kind)>> {
        loop {
            let ent = match self.dir.read()? {
                Ok(ent) => ent,
                Err(e) => return Some(Err(io_err(e))),
            };
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
                    let mut path = self.rel.clone();
                    path.push('/');
                    path.push_str(&String::from_utf8_lossy(name));
                    match root.lstat(&path) {
                        Ok(st) => kind_of(&st),
                        Err(_) => Kind::Other,
                    }
                }
                _ => Kind::Other,
            };
            return Some(Ok((name.to_vec(), kind)));
        }
    }
}

/// Reads the names in one directory below the root (never through a symlink).
pub(crate) fn list_dir(root: &Root, rel: &str) -> io::Result<Vec<(Vec<u8>, Kind)>> {
    let mut stream = DirStream::open(root, rel)?;
    let mut out = Vec::new();
    while let Some(entry) = stream.next_entry(root) {
        out.push(entry?);
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
/// Reads at most `limit + 1` bytes, so an oversized file is detected, not loaded, and
/// stops one byte past the length the header declares: a longer file is damage, found
/// without reading its tail.
pub(crate) fn read_entry_file(file: &mut impl io::Read, limit: usize) -> io::Result<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        // Only a full buffer needs the header: an entry that fits ends with a read of
        // 0 (no parse here, the decoder parses once), and a file longer than its
        // header declares always fills the buffer past that length.
        if buf.len() == buf.capacity() {
            let declared = (buf.len() >= super::entry::HEADER_LEN)
                .then(|| super::entry::Header::parse(&buf).ok().map(|h| h.total_len()))
                .flatten();
            if declared.is_some_and(|total| buf.len() > total) {
                return Ok(buf); // trailing bytes: the decoder reports the length mismatch
            }
            // +1 so the read that returns 0 has room and EOF is seen.
            let want = declared.map_or(buf.len() * 2, |total| total.saturating_add(1));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that counts its `read` calls.
    struct Counting<'a>(&'a [u8], usize);
    impl io::Read for Counting<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.1 += 1;
            let n = out.len().min(self.0.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn trailing_bytes_stop_the_read_at_once() {
        let mut w = crate::disk::entry::EntryWriter::start(crate::disk::entry::Codec::Raw, 0, 1, "k", 10);
        w.payload().extend_from_slice(b"0123456789");
        let mut bytes = w.finish();
        let total = bytes.len();
        let exact = read_entry_file(&mut Counting(&bytes, 0), 16 << 20).unwrap();
        assert_eq!(exact.len(), total);
        bytes.extend(std::iter::repeat_n(0xAB, 4 << 20)); // a 4 MiB tail
        let mut reader = Counting(&bytes, 0);
        let read = read_entry_file(&mut reader, 16 << 20).unwrap();
        assert!(read.len() > total && read.len() <= 4096, "{}", read.len());
        assert!(reader.1 <= 2, "{} reads for a file with a 4 MiB tail", reader.1);
        assert!(crate::disk::entry::decode(&read, 16 << 20).is_err(), "damage");
    }
}
