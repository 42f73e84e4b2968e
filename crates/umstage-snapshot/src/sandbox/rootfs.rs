//! Paths inside the step's root, read and created the way the sandbox helper and the chroot
//! tier both need: resolved by the kernel in the root (`RESOLVE_IN_ROOT`), created as they go.

use std::ffi::{CString, OsStr};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::OFlags;
use umstage_oci::inroot::{Root, fd_path};

use super::failure::HelperError;
use super::user::{ResolvedUser, resolve};

/// What the step needs once its root is ready.
pub(super) struct Ready {
    pub(super) user: ResolvedUser,
}

/// Whether a mount target is a directory or a file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Dir,
    File,
}

/// Opens `path` inside the directory `dir` with the kernel's in-root resolution.
fn openat2(dir: RawFd, path: &Path, flags: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: `dir` is a descriptor the caller keeps open for the duration of the call.
    let dir = unsafe { std::os::fd::BorrowedFd::borrow_raw(dir) };
    umstage_oci::inroot::open_in_root(dir, path, OFlags::from_bits_retain(flags as u32))
}

fn fstat_dev(fd: &OwnedFd) -> std::io::Result<u64> {
    let stat = nix::sys::stat::fstat(fd).map_err(std::io::Error::from)?;
    Ok(stat.st_dev)
}

// The rootfs is an `inroot::Root`, but the helper resolves in it with the kernel
// (`RESOLVE_IN_ROOT`), in its own mount namespace, and creates mount points as it goes.

/// Reads a file inside the root, `None` if it does not exist.
pub(super) fn read_file(root: &Root, rel: &str) -> Result<Option<String>, HelperError> {
    match openat2(root.fd().as_raw_fd(), Path::new(rel), libc::O_RDONLY) {
        Ok(fd) => {
            let mut text = String::new();
            std::fs::File::from(fd)
                .read_to_string(&mut text)
                .map_err(|e| HelperError::during(format!("reading /{rel}"), e))?;
            Ok(Some(text))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(HelperError::during(format!("opening /{rel}"), e)),
    }
}

/// The path of an fd inside the root, if it is on the root's own filesystem.
fn relative(root: &Root, fd: &OwnedFd) -> Option<PathBuf> {
    if fstat_dev(fd).ok()? != fstat_dev(root.fd()).ok()? {
        return None;
    }
    let full = std::fs::read_link(fd_path(fd)).ok()?;
    full.strip_prefix(root.path()).ok().map(Path::to_path_buf)
}

/// Opens `path` inside the root (`O_PATH`), creating what is missing; records created
/// entries on the root filesystem in `stubs` when given.
pub(super) fn ensure(
    root: &Root,
    path: &Path,
    last_kind: Kind,
    mut stubs: Option<&mut Vec<PathBuf>>,
) -> std::io::Result<OwnedFd> {
    let components: Vec<&OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(Ok(name)),
            Component::ParentDir => Some(Err(())),
            _ => None,
        })
        .collect::<Result<_, _>>()
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "'..' in path"))?;
    let mut current = PathBuf::new();
    let mut parent = root.fd().try_clone()?;
    for (index, name) in components.iter().enumerate() {
        current.push(name);
        let last = index + 1 == components.len();
        let fd = match openat2(root.fd().as_raw_fd(), &current, libc::O_PATH) {
            Ok(fd) => fd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let c_name = CString::new(name.as_bytes())?;
                let kind = if last { last_kind } else { Kind::Dir };
                // SAFETY: *at calls on our parent dir fd with a NUL-terminated name.
                let rc = unsafe {
                    match kind {
                        Kind::Dir => libc::mkdirat(parent.as_raw_fd(), c_name.as_ptr(), 0o755),
                        Kind::File => {
                            let fd = libc::openat(
                                parent.as_raw_fd(),
                                c_name.as_ptr(),
                                libc::O_CREAT
                                    | libc::O_EXCL
                                    | libc::O_WRONLY
                                    | libc::O_CLOEXEC
                                    | libc::O_NOFOLLOW,
                                0o644,
                            );
                            if fd >= 0 {
                                libc::close(fd);
                            }
                            fd
                        }
                    }
                };
                if rc < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(stubs) = stubs.as_deref_mut()
                    && let Some(dir) = relative(root, &parent)
                {
                    stubs.push(dir.join(name));
                }
                openat2(root.fd().as_raw_fd(), &current, libc::O_PATH)?
            }
            Err(e) => return Err(e),
        };
        if last {
            return Ok(fd);
        }
        parent = fd;
    }
    Ok(parent)
}

/// Resolves the step's `USER` in `root`'s `/etc/passwd` and `/etc/group` and makes its
/// working directory: what every tier does in the step's root before it starts.
pub(super) fn user_and_workdir(
    request: &super::Request,
    root: &Root,
) -> Result<ResolvedUser, HelperError> {
    let passwd = read_file(root, "etc/passwd")?;
    let group = read_file(root, "etc/group")?;
    let user = resolve(&request.user, passwd.as_deref(), group.as_deref())?;
    let process = request
        .spec
        .process()
        .as_ref()
        .ok_or("the step has no process")?;
    ensure(root, process.cwd(), Kind::Dir, None).map_err(|e| {
        HelperError::during(
            format!("creating working directory {}", process.cwd().display()),
            e,
        )
    })?;
    Ok(user)
}
