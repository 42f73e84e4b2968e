//! Read-only `RUN --mount`s in the `ptrace` tier: nothing is mounted, so the supervisor fails
//! a call that would change something under one with `EROFS`, as a read-only mount does
//! (Landlock, which grants such a mount only reading, holds it against a race).

use std::os::unix::ffi::OsStrExt;

use libc::user_regs_struct;
use nix::unistd::Pid;

use super::context::Context;
use super::memory;
use super::regs::arg;
use super::syscalls::{Kind, PathArg};

/// Whether a path argument changes what it names always, or only where nothing is there
/// yet (a creation: where something is, the kernel answers `EEXIST` first, as it does on a
/// read-only mount).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Always,
    IfMissing,
}

/// The path arguments of call `nr` (of kind `kind`) that would change what they name.
fn changed(nr: i64, regs: &user_regs_struct, kind: Kind) -> Vec<(PathArg, Change)> {
    match kind {
        Kind::Creates {
            path,
            flags: Some(i),
        } => {
            let flags = arg(regs, i) as i32;
            if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
                vec![(path, Change::Always)]
            } else if flags & libc::O_CREAT != 0 {
                vec![(path, Change::IfMissing)]
            } else {
                Vec::new()
            }
        }
        Kind::Creates { path, flags: None } if nr == libc::SYS_creat => {
            vec![(path, Change::Always)]
        }
        Kind::Creates { path, .. } | Kind::Mknod { path, .. } => vec![(path, Change::IfMissing)],
        Kind::Chown {
            path: Some(path), ..
        } => vec![(path, Change::Always)],
        Kind::Paths(args) => match nr {
            libc::SYS_symlink | libc::SYS_symlinkat => {
                args.iter().map(|a| (*a, Change::IfMissing)).collect()
            }
            // The new link only: its target is not changed.
            libc::SYS_link | libc::SYS_linkat => args
                .iter()
                .skip(1)
                .map(|a| (*a, Change::IfMissing))
                .collect(),
            libc::SYS_chmod
            | libc::SYS_fchmodat
            | super::syscalls::SYS_FCHMODAT2
            | libc::SYS_truncate
            | libc::SYS_utime
            | libc::SYS_utimes
            | libc::SYS_utimensat
            | libc::SYS_futimesat
            | libc::SYS_setxattr
            | libc::SYS_lsetxattr
            | libc::SYS_removexattr
            | libc::SYS_lremovexattr
            | libc::SYS_rmdir
            | libc::SYS_unlink
            | libc::SYS_unlinkat
            | libc::SYS_rename
            | libc::SYS_renameat
            | libc::SYS_renameat2 => args.iter().map(|a| (*a, Change::Always)).collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

impl Context {
    /// `Err(EROFS)` where the call would change something under a read-only mount.
    pub(super) fn refuse_read_only(
        &self,
        pid: Pid,
        regs: &user_regs_struct,
        kind: Kind,
    ) -> Result<(), i32> {
        if !self.root.has_read_only() {
            return Ok(());
        }
        let nr = regs.orig_rax as i64;
        // Where a descriptor's link leads: the file a call with no path changes.
        let fd_read_only = |fd: u64| {
            std::fs::read_link(format!("/proc/{pid}/fd/{}", fd as i32))
                .is_ok_and(|host| self.root.is_read_only(host.as_os_str().as_bytes()))
        };
        let fd = match kind {
            Kind::Chown { path: None, fd, .. } => Some(fd),
            // `fchmod`, `fsetxattr`, `fremovexattr`, an inode-changing `ioctl`: the first.
            Kind::ChangesFd => Some(0),
            _ => None,
        };
        if let Some(fd) = fd {
            return if fd_read_only(arg(regs, fd)) {
                Err(libc::EROFS)
            } else {
                Ok(())
            };
        }
        for (a, change) in changed(nr, regs, kind) {
            // Most writes are nowhere near a read-only mount: a look at the guest path spares
            // them the resolution.
            let addr = arg(regs, a.path);
            let dirfd = a.dirfd.map_or(libc::AT_FDCWD, |i| arg(regs, i) as i32);
            let path = (addr != 0)
                .then(|| memory::read_cstr(pid, addr).ok())
                .flatten();
            if let Some(path) = path.filter(|p| !p.is_empty())
                && self
                    .root
                    .absolute(pid, dirfd, &path)
                    .is_some_and(|guest| !self.root.may_be_read_only(&guest))
            {
                continue;
            }
            let Some((host, _)) = self.host_path(pid, regs, a)? else {
                // No path (`utimensat(fd, NULL)`) or an empty one (`AT_EMPTY_PATH`): the
                // directory argument's file.
                if let Some(dirfd) = a.dirfd
                    && fd_read_only(arg(regs, dirfd))
                {
                    return Err(libc::EROFS);
                }
                continue;
            };
            if !self.root.is_read_only(&host) {
                continue;
            }
            let exists = || {
                rustix::fs::lstat(std::path::Path::new(std::ffi::OsStr::from_bytes(&host))).is_ok()
            };
            if change == Change::Always || !exists() {
                return Err(libc::EROFS);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs(nr: i64, args: [u64; 3]) -> user_regs_struct {
        // SAFETY: plain data; all-zero is a valid value.
        let mut regs: user_regs_struct = unsafe { std::mem::zeroed() };
        regs.orig_rax = nr as u64;
        regs.rdi = args[0];
        regs.rsi = args[1];
        regs.rdx = args[2];
        regs
    }

    fn changes(nr: i64, args: [u64; 3]) -> Vec<Change> {
        let kind = super::super::syscalls::kind(nr).map(|k| changed(nr, &regs(nr, args), k));
        kind.unwrap_or_default()
            .into_iter()
            .map(|(_, c)| c)
            .collect()
    }

    #[test]
    fn only_calls_that_change_a_file_are_refused() {
        use Change::{Always, IfMissing};
        let read = libc::O_RDONLY as u64;
        assert!(changes(libc::SYS_openat, [0, 0, read]).is_empty());
        assert!(changes(libc::SYS_stat, [0, 0, 0]).is_empty());
        assert!(changes(libc::SYS_readlink, [0, 0, 0]).is_empty());
        assert_eq!(
            changes(libc::SYS_openat, [0, 0, libc::O_WRONLY as u64]),
            [Always]
        );
        assert_eq!(
            changes(
                libc::SYS_openat,
                [0, 0, (libc::O_RDONLY | libc::O_TRUNC) as u64]
            ),
            [Always]
        );
        assert_eq!(
            changes(libc::SYS_open, [0, libc::O_CREAT as u64, 0]),
            [IfMissing]
        );
        assert_eq!(changes(libc::SYS_mkdir, [0, 0, 0]), [IfMissing]);
        assert_eq!(changes(libc::SYS_link, [0, 0, 0]), [IfMissing]);
        assert_eq!(changes(libc::SYS_rename, [0, 0, 0]), [Always, Always]);
        assert_eq!(changes(libc::SYS_unlinkat, [0, 0, 0]), [Always]);
        assert_eq!(changes(libc::SYS_fchownat, [0, 0, 0]), [Always]);
        assert_eq!(changes(libc::SYS_creat, [0, 0, 0]), [Always]);
    }
}
