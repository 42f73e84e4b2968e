//! Small filesystem helpers: xattrs, whiteouts, tree copies with reflink, ids.

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Lowercase hex SHA-256 of a string.
pub(crate) fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A short random id (16 hex digits) from the kernel's random pool.
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = ((nanos as u64) ^ (u64::from(std::process::id()) << 40)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// Whether the entry is an overlay whiteout: a character device numbered 0:0.
pub(crate) fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Whether an xattr belongs to overlayfs itself and never to the image.
pub(crate) fn is_overlay_xattr(name: &OsStr) -> bool {
    let name = name.as_bytes();
    name.starts_with(b"user.overlay.") || name.starts_with(b"trusted.overlay.")
}

/// Whether the directory is marked opaque (`user.overlay.opaque` or `trusted.overlay.opaque` = `y`).
pub(crate) fn is_opaque_dir(path: &Path) -> bool {
    ["user.overlay.opaque", "trusted.overlay.opaque"]
        .iter()
        .any(|name| matches!(get_xattr(path, name), Ok(Some(v)) if v == b"y"))
}

/// One xattr of a path (not following symlinks), `None` if absent.
pub(crate) fn get_xattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let cpath = c_path(path)?;
    let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: buffer pointer and length describe a live Vec; strings are NUL-terminated.
        let n = unsafe {
            libc::lgetxattr(
                cpath.as_ptr(),
                cname.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(Some(buf));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
            Some(libc::ERANGE) => buf.resize(buf.len() * 4, 0),
            _ => return Err(err),
        }
    }
}

/// All xattrs of a path (not following symlinks), sorted by name, overlay's own left out.
pub(crate) fn xattrs(path: &Path) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let cpath = c_path(path)?;
    let mut names = vec![0u8; 1024];
    loop {
        // SAFETY: buffer pointer and length describe a live Vec.
        let n = unsafe { libc::llistxattr(cpath.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            names.truncate(n as usize);
            break;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            _ => return Err(err),
        }
    }
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = OsString::from_vec(name.to_vec());
        if is_overlay_xattr(&name) {
            continue;
        }
        if let Some(text) = name.to_str()
            && let Some(value) = get_xattr(path, text)?
        {
            out.push((name, value));
        }
    }
    out.sort();
    Ok(out)
}

fn set_xattr(path: &Path, name: &OsStr, value: &[u8]) -> io::Result<()> {
    let cpath = c_path(path)?;
    let cname =
        CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: pointers and lengths describe live buffers; strings are NUL-terminated.
    let rc = unsafe {
        libc::lsetxattr(
            cpath.as_ptr(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets access and modification times of a path without following symlinks.
pub(crate) fn set_times(path: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    let cpath = c_path(path)?;
    let times = [
        libc::timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        libc::timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    ];
    // SAFETY: the path is NUL-terminated and `times` holds two timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            cpath.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An I/O error with the operation and path it came from.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub struct PathError {
    /// What was being done.
    pub op: &'static str,
    /// The path it was done to.
    pub path: PathBuf,
    /// What went wrong.
    #[source]
    pub source: io::Error,
}

pub(crate) fn at(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PathError + use<> {
    let path = path.to_path_buf();
    move |source| PathError { op, path, source }
}

/// Copies a tree with owners, modes, times, xattrs and hard links; file data by reflink where possible.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> Result<(), PathError> {
    let mut links = HashMap::new();
    let meta = std::fs::symlink_metadata(src).map_err(at("stat", src))?;
    copy_entry(src, dst, &meta, &mut links)
}

fn copy_entry(
    src: &Path,
    dst: &Path,
    meta: &std::fs::Metadata,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), PathError> {
    let kind = meta.file_type();
    if kind.is_dir() {
        match std::fs::create_dir(dst) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dst.is_dir() => {}
            Err(e) => return Err(at("mkdir", dst)(e)),
        }
        for entry in std::fs::read_dir(src).map_err(at("read dir", src))? {
            let entry = entry.map_err(at("read dir", src))?;
            let child_meta = entry.metadata().map_err(at("stat", &entry.path()))?;
            copy_entry(
                &entry.path(),
                &dst.join(entry.file_name()),
                &child_meta,
                links,
            )?;
        }
    } else if kind.is_file() && meta.nlink() > 1 {
        if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
            return std::fs::hard_link(first, dst).map_err(at("link", dst));
        }
        links.insert((meta.dev(), meta.ino()), dst.to_path_buf());
        return copy_entry_alone(src, dst, meta);
    } else {
        return copy_entry_alone(src, dst, meta);
    }
    copy_metadata(dst, meta, src)
}

/// Copies one entry that is not a directory, with its metadata, as a new inode at `dst`
/// (absent yet); `meta` is `src`'s.
pub(crate) fn copy_entry_alone(
    src: &Path,
    dst: &Path,
    meta: &std::fs::Metadata,
) -> Result<(), PathError> {
    let kind = meta.file_type();
    if kind.is_file() {
        copy_file_data(src, dst)?;
    } else if kind.is_symlink() {
        let target = std::fs::read_link(src).map_err(at("read link", src))?;
        std::os::unix::fs::symlink(&target, dst).map_err(at("symlink", dst))?;
    } else {
        let cpath = c_path(dst).map_err(at("mknod", dst))?;
        // SAFETY: NUL-terminated path; mode and device number come from the source's stat.
        let rc = unsafe { libc::mknod(cpath.as_ptr(), meta.mode(), meta.rdev()) };
        if rc < 0 {
            return Err(at("mknod", dst)(io::Error::last_os_error()));
        }
    }
    copy_metadata(dst, meta, src)
}

/// Gives `dst` the owner, mode, xattrs and times `src` has (`meta` is `src`'s).
pub(crate) fn copy_metadata(
    dst: &Path,
    meta: &std::fs::Metadata,
    src: &Path,
) -> Result<(), PathError> {
    std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid())).map_err(at("chown", dst))?;
    // The xattrs before the mode: a user xattr needs the file writable by its owner, which
    // the source's mode (0444, 0555) may not be.
    for (name, value) in xattrs(src).map_err(at("read xattrs", src))? {
        set_xattr(dst, &name, &value).map_err(at("set xattr", dst))?;
    }
    if !meta.file_type().is_symlink() {
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(at("chmod", dst))?;
    }
    set_times(dst, meta).map_err(at("set times", dst))
}

/// `FICLONE`: share the source's extents (btrfs, xfs); fails elsewhere.
const FICLONE: libc::c_ulong = 0x4004_9409;

fn copy_file_data(src: &Path, dst: &Path) -> Result<(), PathError> {
    use std::os::unix::fs::OpenOptionsExt;
    // Never following: the caller copies what it saw as a regular file.
    let open = || {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(src)
    };
    let mut from =
        umstage_oci::owner::lending_read(rustix::fs::CWD, src, open).map_err(at("open", src))?;
    let mut to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(at("create", dst))?;
    use std::os::fd::AsRawFd;
    // SAFETY: both fds are open files owned by this function.
    let cloned = unsafe { libc::ioctl(to.as_raw_fd(), FICLONE as _, from.as_raw_fd()) } == 0;
    if !cloned {
        // std's copy uses copy_file_range, which shares extents where the filesystem can.
        io::copy(&mut from, &mut to).map_err(at("copy", dst))?;
    }
    Ok(())
}

/// Whether the filesystem under `dir` can share file extents (reflink).
pub(crate) fn supports_reflink(dir: &Path) -> bool {
    let probe = dir.join(format!(".reflink-probe-{}", random_id()));
    let result = (|| -> io::Result<bool> {
        std::fs::write(&probe, b"x")?;
        let from = File::open(&probe)?;
        let clone = probe.with_extension("clone");
        let to = File::create(&clone)?;
        use std::os::fd::AsRawFd;
        // SAFETY: both fds are open files owned here.
        let ok = unsafe { libc::ioctl(to.as_raw_fd(), FICLONE as _, from.as_raw_fd()) } == 0;
        let _ = std::fs::remove_file(&clone);
        Ok(ok)
    })();
    let _ = std::fs::remove_file(&probe);
    result.unwrap_or(false)
}

/// Removes a tree if it exists.
pub(crate) fn remove_tree(path: &Path) -> Result<(), PathError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(at("remove", path)(e)),
    }
}

/// Marks `dir` as the top of separate directory trees (ext4's `FS_TOPDIR_FL`, `chattr +T`), so
/// the filesystem spreads its subdirectories over block groups instead of packing them next to
/// their parent. Best effort: other filesystems refuse the flag, which only hints.
///
/// Why: on ext4 without a journal, creating a file skips every inode of its group deleted in
/// the last minutes, one inode-table lookup each. After a large delete (a pruned or removed
/// state root) a snapshot packed into those groups took 20 s instead of 3 s to fill with
/// 20,000 files.
pub(crate) fn mark_top_directory(dir: &Path) {
    /// `FS_TOPDIR_FL` from `linux/fs.h`.
    const TOPDIR: libc::c_int = 0x0002_0000;
    let Ok(file) = File::open(dir) else {
        return;
    };
    use std::os::fd::AsRawFd;
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS and FS_IOC_SETFLAGS read and write one int through a pointer to a
    // local, on a directory fd owned here.
    unsafe {
        if libc::ioctl(file.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) != 0
            || flags & TOPDIR != 0
        {
            return;
        }
        flags |= TOPDIR;
        libc::ioctl(file.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags);
    }
}

/// Makes sure the directory exists.
pub(crate) fn ensure_dir(path: &Path) -> Result<(), PathError> {
    std::fs::create_dir_all(path).map_err(at("create dir", path))
}

/// Renames, failing with `AlreadyExists` instead of replacing the target.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let from_c = CString::new(from.as_os_str().as_bytes())?;
    let to_c = CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: renameat2 with two NUL-terminated paths relative to the cwd.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from_c.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_tree_keeps_hard_links_symlinks_modes_and_times() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("d")).expect("mkdir");
        std::fs::write(src.join("d/a"), b"hello").expect("write");
        std::fs::hard_link(src.join("d/a"), src.join("b")).expect("link");
        std::os::unix::fs::symlink("d/a", src.join("s")).expect("symlink");
        std::fs::set_permissions(src.join("d/a"), std::fs::Permissions::from_mode(0o640))
            .expect("chmod");
        let dst = tmp.path().join("dst");
        copy_tree(&src, &dst).expect("copy");
        let a = std::fs::symlink_metadata(dst.join("d/a")).expect("stat a");
        let b = std::fs::symlink_metadata(dst.join("b")).expect("stat b");
        assert_eq!(a.ino(), b.ino());
        assert_eq!(a.mode() & 0o7777, 0o640);
        assert_eq!(std::fs::read(dst.join("b")).expect("read"), b"hello");
        assert_eq!(
            std::fs::read_link(dst.join("s")).expect("readlink"),
            Path::new("d/a")
        );
        let src_a = std::fs::symlink_metadata(src.join("d/a")).expect("stat src");
        assert_eq!(
            (a.mtime(), a.mtime_nsec()),
            (src_a.mtime(), src_a.mtime_nsec())
        );
    }

    #[test]
    fn random_ids_differ() {
        assert_ne!(random_id(), random_id());
        assert_eq!(random_id().len(), 16);
    }
}
