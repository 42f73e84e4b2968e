//! Copy-up before a change: in a linked snapshot (`crate::cow`) the step's regular files and
//! symlinks are its parent's inodes until it changes them, so before every call that would change a file's
//! data or metadata in place the supervisor gives the file a private inode, and the call then
//! acts on that.
//!
//! A call that names a path acts on the fresh inode by itself (the name now leads there),
//! except through a process's `/proc` link, which still leads to the old inode: the path is
//! then given as the file's guest path. A call on a descriptor (`fchmod` on a read-only one,
//! `fsetxattr`, `futimens`, an `ioctl` setting inode flags) is turned into its path form on
//! the new inode, or for the `ioctl` made by the supervisor. The `chown` family records the
//! owner in an xattr of the inode: `calls` asks `CopyUp::private` first.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use libc::user_regs_struct;
use nix::unistd::Pid;
use rustix::fs::{Mode, OFlags};

use super::context::Context;
use super::errno::errno;
use super::memory::{self, Scratch};
use super::paths::Follow;
use super::private::Private;
use super::regs::{arg, set_arg};
use super::syscalls::{How, PathArg, SYS_FCHMODAT2};

/// `FS_IOC_SETFLAGS` (`chattr`): sets an inode's flags through any descriptor of its owner.
pub(super) const FS_IOC_SETFLAGS: u32 = 0x4008_6602;
/// `FS_IOC_FSSETXATTR`: sets an inode's extended flags and project id the same way.
pub(super) const FS_IOC_FSSETXATTR: u32 = 0x401c_5820;

/// What a call changes.
enum Changed {
    Path(PathArg),
    /// The descriptor in this argument.
    Fd(usize),
}

/// Whether the call at this stop may change a file in place (and so need a copy-up).
pub(super) fn changes(regs: &user_regs_struct) -> bool {
    changed(regs.orig_rax as i64, regs).is_some()
}

/// What call `nr` (with `regs`) would change in place, if anything.
fn changed(nr: i64, regs: &user_regs_struct) -> Option<Changed> {
    let path = |dirfd: Option<usize>, path: usize, how: How| {
        Some(Changed::Path(PathArg { dirfd, path, how }))
    };
    let writes = |flags: u64| {
        let flags = flags as i32;
        let exclusive = flags & libc::O_CREAT != 0 && flags & libc::O_EXCL != 0;
        !exclusive && (flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0)
    };
    match nr {
        libc::SYS_open if writes(arg(regs, 1)) => path(None, 0, How::OpenFlags(1)),
        libc::SYS_openat if writes(arg(regs, 2)) => path(Some(0), 1, How::OpenFlags(2)),
        libc::SYS_creat => path(None, 0, How::Follow),
        libc::SYS_truncate
        | libc::SYS_chmod
        | libc::SYS_utime
        | libc::SYS_utimes
        | libc::SYS_setxattr
        | libc::SYS_removexattr => path(None, 0, How::Follow),
        libc::SYS_lsetxattr | libc::SYS_lremovexattr | libc::SYS_link => {
            path(None, 0, How::NoFollow)
        }
        libc::SYS_fchmodat | libc::SYS_futimesat => path(Some(0), 1, How::Follow),
        SYS_FCHMODAT2 | libc::SYS_utimensat => path(Some(0), 1, How::AtFlags(3)),
        libc::SYS_linkat => path(Some(0), 1, How::LinkFlags(4)),
        libc::SYS_fchmod | libc::SYS_fsetxattr | libc::SYS_fremovexattr | libc::SYS_ioctl => {
            Some(Changed::Fd(0))
        }
        _ => None,
    }
}

/// The argument holding the `AT_*` flags of a call whose path may be empty (or, for
/// `utimensat`, absent) to name its directory argument itself.
fn empty_path_flags(nr: i64) -> Option<usize> {
    match nr {
        libc::SYS_utimensat | SYS_FCHMODAT2 => Some(3),
        libc::SYS_linkat => Some(4),
        _ => None,
    }
}

impl Context {
    /// Before a traced call: copies up the file it would change, if that is the parent's,
    /// and makes the call act on the copy (`regs` rewritten). `Some` with the call's return
    /// value where it is answered here.
    pub(super) fn copy_up(
        &self,
        pid: Pid,
        regs: &mut user_regs_struct,
        scratch: &mut Scratch,
    ) -> Result<Option<i64>, i32> {
        let nr = regs.orig_rax as i64;
        let Some(what) = changed(nr, regs) else {
            return Ok(None);
        };
        let (file, by_fd, magic) = match what {
            Changed::Fd(i) => (open_fd(pid, arg(regs, i) as i32), true, false),
            Changed::Path(a) => match self.host_path(pid, regs, a)? {
                Some((host, follow)) => {
                    (open_host(&host, follow), false, host.starts_with(b"/proc/"))
                }
                None => match self.empty_path_fd(pid, regs, nr, a) {
                    Some(fd) => (open_fd(pid, fd), true, false),
                    None => return Ok(None),
                },
            },
        };
        // What cannot be opened is left to the call, which fails or creates as it would.
        let Ok(file) = file else {
            return Ok(None);
        };
        let real = match self.cow.private(&file)? {
            Private::Already => return Ok(None),
            Private::Gone
                if matches!(
                    nr,
                    libc::SYS_open | libc::SYS_openat | libc::SYS_creat | libc::SYS_truncate
                ) =>
            {
                return Err(libc::EPERM);
            }
            // Linked again, a removed file has one name in the root: nothing to keep apart.
            Private::Gone if matches!(nr, libc::SYS_link | libc::SYS_linkat) => return Ok(None),
            Private::Gone => return Ok(Some(0)),
            Private::Copied(real) => real,
        };
        if !by_fd && !magic {
            return Ok(None);
        }
        let guest = self.root.to_guest(&real).ok_or(libc::EACCES)?;
        if nr == libc::SYS_ioctl {
            return ioctl(pid, regs, &real).map(Some);
        }
        let at = scratch.put_cstr(&guest).map_err(errno)?;
        let cwd = libc::AT_FDCWD as u64;
        match (nr, what) {
            (_, Changed::Path(a)) => {
                set_arg(regs, a.path, at);
                if let Some(dirfd) = a.dirfd {
                    set_arg(regs, dirfd, cwd);
                }
                if let Some(flags) = empty_path_flags(nr) {
                    let kept = arg(regs, flags) as i32 & !libc::AT_EMPTY_PATH;
                    set_arg(regs, flags, kept as u64);
                }
            }
            (libc::SYS_fchmod, _) => {
                regs.orig_rax = libc::SYS_fchmodat as u64;
                set_arg(regs, 2, arg(regs, 1));
                set_arg(regs, 1, at);
                set_arg(regs, 0, cwd);
            }
            (libc::SYS_fsetxattr, _) => {
                regs.orig_rax = libc::SYS_lsetxattr as u64;
                set_arg(regs, 0, at);
            }
            (libc::SYS_fremovexattr, _) => {
                regs.orig_rax = libc::SYS_lremovexattr as u64;
                set_arg(regs, 0, at);
            }
            _ => return Err(libc::ENOSYS),
        }
        Ok(None)
    }

    /// The descriptor an empty (or, for `utimensat`, absent) path names with `AT_EMPTY_PATH`.
    fn empty_path_fd(&self, pid: Pid, regs: &user_regs_struct, nr: i64, a: PathArg) -> Option<i32> {
        let flags = empty_path_flags(nr)?;
        let addr = arg(regs, a.path);
        let empty = addr != 0 && memory::read_cstr(pid, addr).is_ok_and(|p| p.is_empty());
        let absent = addr == 0 && nr == libc::SYS_utimensat;
        let allowed = absent || (empty && arg(regs, flags) as i32 & libc::AT_EMPTY_PATH != 0);
        let fd = arg(regs, a.dirfd?) as i32;
        (allowed && fd != libc::AT_FDCWD).then_some(fd)
    }
}

fn open_fd(pid: Pid, fd: i32) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(
        format!("/proc/{pid}/fd/{fd}"),
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn open_host(host: &[u8], follow: Follow) -> rustix::io::Result<OwnedFd> {
    let nofollow = match follow {
        Follow::Yes => OFlags::empty(),
        Follow::No => OFlags::NOFOLLOW,
    };
    rustix::fs::open(
        Path::new(OsStr::from_bytes(host)),
        OFlags::PATH | OFlags::CLOEXEC | nofollow,
        Mode::empty(),
    )
}

/// Makes the inode-flag `ioctl` of `regs` on the copy at `real`; the call's return value.
fn ioctl(pid: Pid, regs: &user_regs_struct, real: &[u8]) -> Result<i64, i32> {
    let request = arg(regs, 1) as u32;
    let size = match request {
        FS_IOC_SETFLAGS => std::mem::size_of::<libc::c_int>(),
        FS_IOC_FSSETXATTR => 28,
        _ => return Err(libc::ENOTTY),
    };
    let mut value = memory::read(pid, arg(regs, 2), size).map_err(errno)?;
    let path = Path::new(OsStr::from_bytes(real));
    let file =
        umstage_oci::owner::lending_read(rustix::fs::CWD, path, || std::fs::File::open(path))
            .map_err(errno)?;
    // SAFETY: both requests read a buffer of `size` bytes, which `value` holds.
    let rc = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            request as libc::c_ulong,
            value.as_mut_ptr(),
        )
    };
    if rc < 0 {
        return Err(errno(std::io::Error::last_os_error()));
    }
    Ok(i64::from(rc))
}
