//! Paths resolved by the kernel beneath the root's directory handle, never by string.
//!
//! Every operation opens the root once and reaches a name from that handle with `openat2(RESOLVE_BENEATH)`: a
//! symlink that leads outside the root (absolute, or up through `..`) fails the resolution with `EXDEV`, even
//! when it is swapped in between two steps of a save. Files are then created, linked, renamed and removed
//! relative to the handle of their directory, so nothing the save does can land outside the root either.
//! Where `openat2` is missing (kernels before 5.6, or filtered by a seccomp profile), each directory is opened
//! from its parent's handle with `O_NOFOLLOW`: stricter, as no symlink is followed at all.

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether `openat2` failed as unavailable once: the walk with `O_NOFOLLOW` is used from then on.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Opens the root directory; `None` when it does not exist and `create` is false.
pub(crate) fn open_root(root: &Path, create: bool) -> std::io::Result<Option<OwnedFd>> {
    if create {
        std::fs::create_dir_all(root)?;
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    match rustix::fs::open(root, flags, Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) if !create => Ok(None),
        Err(errno) => Err(errno.into()),
    }
}

/// Opens `path` (relative, `/`-separated, already checked to hold no `..` or empty segment) beneath `root`.
/// `EXDEV`: it leads outside the root; `ELOOP`: a symlink loop (or, without `openat2`, any symlink).
pub(crate) fn open(root: BorrowedFd<'_>, path: &str, flags: OFlags) -> Result<OwnedFd, Errno> {
    let flags = flags | OFlags::CLOEXEC;
    if path.is_empty() {
        return rustix::fs::openat(root, ".", flags, Mode::empty());
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        use rustix::fs::ResolveFlags;
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(root, path, flags, Mode::empty(), resolve) {
            // EAGAIN: a rename elsewhere raced the lookup (the kernel asks to retry).
            Err(Errno::AGAIN) => return rustix::fs::openat2(root, path, flags, Mode::empty(), resolve),
            Err(Errno::NOSYS | Errno::PERM) => NO_OPENAT2.store(true, Ordering::Relaxed),
            other => return other,
        }
    }
    let mut dir: Option<OwnedFd> = None;
    let mut segments = path.split('/').peekable();
    while let Some(segment) = segments.next() {
        let at = dir.as_ref().map_or(root, |fd| fd.as_fd());
        if segments.peek().is_none() {
            return rustix::fs::openat(at, segment, flags | OFlags::NOFOLLOW, Mode::empty());
        }
        let next = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        dir = Some(rustix::fs::openat(at, segment, next, Mode::empty())?);
    }
    rustix::fs::openat(root, ".", flags, Mode::empty())
}

/// Opens the directory `path` beneath `root` for working in it (listing, creating, linking, removing).
pub(crate) fn open_dir(root: BorrowedFd<'_>, path: &str) -> Result<OwnedFd, Errno> {
    open(root, path, OFlags::RDONLY | OFlags::DIRECTORY)
}

/// Why the directory of a save could not be had: the segment of the path where it went wrong, and how.
#[derive(Debug)]
pub(crate) struct DirFailure {
    /// The path up to and including the segment that failed.
    pub(crate) at: String,
    pub(crate) errno: Errno,
    /// The segment exists but is no directory and resolves to nothing: a dangling symlink.
    pub(crate) dangling: bool,
}

/// Opens the directory `path` beneath `root`, creating what is missing of it (with `mode`, if given).
pub(crate) fn create_dir(root: BorrowedFd<'_>, path: &str, mode: Option<u32>) -> Result<OwnedFd, DirFailure> {
    if path.is_empty() {
        return open_dir(root, "").map_err(|errno| DirFailure { at: String::new(), errno, dangling: false });
    }
    let mut parent: Option<OwnedFd> = None;
    let mut end = 0;
    for segment in path.split('/') {
        end += segment.len() + usize::from(end > 0);
        let prefix = &path[..end];
        let fail = |errno, dangling| DirFailure { at: prefix.to_owned(), errno, dangling };
        let opened = match open_dir(root, prefix) {
            Err(Errno::NOENT) => {
                let at = parent.as_ref().map_or(root, |fd| fd.as_fd());
                let created = match rustix::fs::mkdirat(at, segment, Mode::from_raw_mode(0o777)) {
                    Ok(()) => true,
                    // Made meanwhile by a concurrent save, or a name that resolves to nothing.
                    Err(Errno::EXIST) => false,
                    Err(errno) => return Err(fail(errno, false)),
                };
                let fd = open_dir(root, prefix).map_err(|errno| fail(errno, errno == Errno::NOENT && !created))?;
                if let (true, Some(mode)) = (created, mode) {
                    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|errno| fail(errno, false))?;
                }
                fd
            }
            Err(errno) => return Err(fail(errno, false)),
            Ok(fd) => fd,
        };
        parent = Some(opened);
    }
    parent.ok_or(DirFailure { at: String::new(), errno: Errno::NOENT, dangling: false })
}

/// What is at `leaf` in `dir`, without following a symlink there.
pub(crate) fn kind_at(dir: BorrowedFd<'_>, leaf: &str) -> Result<FileType, Errno> {
    rustix::fs::statat(dir, leaf, AtFlags::SYMLINK_NOFOLLOW).map(|stat| FileType::from_raw_mode(stat.st_mode))
}

/// Splits a checked name into its directory (`""` at the root) and its last segment.
pub(crate) fn split(name: &str) -> (&str, &str) {
    name.rsplit_once('/').unwrap_or(("", name))
}

/// Removes the directories of `dir_path` that are empty, deepest first, up to (not including) the root.
pub(crate) fn prune_empty(root: BorrowedFd<'_>, dir_path: &str) {
    let mut path = dir_path;
    while !path.is_empty() {
        let (parent, leaf) = split(path);
        let Ok(parent_fd) = open_dir(root, parent) else { return };
        if rustix::fs::unlinkat(&parent_fd, leaf, AtFlags::REMOVEDIR).is_err() {
            return;
        }
        path = parent;
    }
}

/// The flags to open a name only to look at it (`O_PATH`: no read permission needed, a FIFO or device is not
/// opened).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) const LOOK: OFlags = OFlags::PATH;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) const LOOK: OFlags = OFlags::RDONLY.union(OFlags::NONBLOCK).union(OFlags::NOCTTY);
