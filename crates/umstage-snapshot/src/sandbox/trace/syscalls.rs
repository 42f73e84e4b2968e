//! The x86-64 system calls the supervisor sees, and what each one's arguments are: which are
//! paths (relative to which directory argument, following a final symlink or not), and which
//! need more than a translated path (owners, identities, exec, output that holds host paths).

/// How a path argument treats a final symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum How {
    /// Follows it.
    Follow,
    /// Acts on the link itself, or creates the last component.
    NoFollow,
    /// Follows it unless this argument has `AT_SYMLINK_NOFOLLOW`.
    AtFlags(usize),
    /// Follows it only if this argument has `AT_SYMLINK_FOLLOW` (`linkat`).
    LinkFlags(usize),
    /// `open`'s flags in this argument: `O_NOFOLLOW`, or `O_CREAT|O_EXCL`, act on the link.
    OpenFlags(usize),
}

/// A path argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PathArg {
    /// The directory argument it is relative to (`AT_FDCWD` allowed), if any.
    pub(super) dirfd: Option<usize>,
    /// The argument holding the path's address.
    pub(super) path: usize,
    /// Its final symlink.
    pub(super) how: How,
}

/// What the supervisor does with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Translates these paths and lets the kernel run the call.
    Paths(&'static [PathArg]),
    /// A call that may create the file at `path` (with `O_CREAT` in argument `flags`, for
    /// `open`): a step with a non-root user owns what it creates.
    Creates { path: PathArg, flags: Option<usize> },
    /// `mknod` of `path` with the mode and device number in arguments `mode` and `dev`: a
    /// device is made as its placeholder (see `devices`), anything else as `Creates`.
    Mknod {
        path: PathArg,
        mode: usize,
        dev: usize,
    },
    /// A `stat` of a path (or, with none, of the descriptor in `fd`): the owner in the
    /// buffer is patched to the recorded one at the exit.
    Stat {
        path: Option<PathArg>,
        fd: usize,
        buf: usize,
        statx: bool,
    },
    /// A `chown` of a path (or of the descriptor in `fd`): recorded, not made.
    Chown {
        path: Option<PathArg>,
        fd: usize,
        uid: usize,
        gid: usize,
    },
    /// A `readlink`: a host path in the answer (a `/proc` link) is given back as the guest's.
    Readlink {
        path: PathArg,
        buf: usize,
        size: usize,
    },
    /// `getcwd`: answered with the guest's path.
    Getcwd,
    /// `getuid` and friends, `setuid` and friends: answered as the step's user.
    Identity,
    /// `execve`/`execveat`: see `exec`.
    Exec { path: PathArg, argv: usize },
    /// `bind` or `connect`: a unix socket's path in the address at `addr` (of `len` bytes)
    /// is translated (see `sockets`).
    Socket {
        addr: usize,
        len: usize,
        follow: bool,
    },
    /// `sendmsg`: a unix socket's path in the address its message header (at argument
    /// `msg`) names is translated (see `datagrams`).
    SendMsg { msg: usize },
    /// Refused with this errno (`chroot`: the step has no way out of its root).
    Refuse(i32),
    /// `uname`: the node name is the step's hostname (there is no UTS namespace to set it in).
    Uname,
    /// A call that changes a file through a descriptor: see `copyup`, which runs first.
    ChangesFd,
    /// `prctl`: `PR_SET_DUMPABLE` succeeds without effect (a process that is not dumpable
    /// shuts its tracer out of its memory, and every path it names could not be translated);
    /// the rest runs.
    Prctl,
}

const fn p(path: usize, how: How) -> PathArg {
    PathArg {
        dirfd: None,
        path,
        how,
    }
}

const fn at(dirfd: usize, path: usize, how: How) -> PathArg {
    PathArg {
        dirfd: Some(dirfd),
        path,
        how,
    }
}

use How::{AtFlags, Follow, LinkFlags, NoFollow, OpenFlags};

/// The calls that change a file through a descriptor of any access mode, which the filter
/// sends to the supervisor besides [`TRACED`] (`ioctl` only for the requests `copyup`
/// performs itself).
pub(super) const ON_DESCRIPTORS: [i64; 4] = [
    libc::SYS_fchmod,
    libc::SYS_fsetxattr,
    libc::SYS_fremovexattr,
    libc::SYS_ioctl,
];

/// `fchmodat2`, newer than the libc crate's table.
pub(super) const SYS_FCHMODAT2: i64 = 452;

/// Every call the filter sends to the supervisor.
pub(super) const TRACED: [i64; 60] = [
    libc::SYS_open,
    libc::SYS_openat,
    libc::SYS_creat,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_access,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_chdir,
    libc::SYS_chmod,
    libc::SYS_fchmodat,
    SYS_FCHMODAT2,
    libc::SYS_chown,
    libc::SYS_lchown,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_mkdir,
    libc::SYS_mkdirat,
    libc::SYS_mknod,
    libc::SYS_mknodat,
    libc::SYS_rmdir,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_link,
    libc::SYS_linkat,
    libc::SYS_symlink,
    libc::SYS_symlinkat,
    libc::SYS_readlink,
    libc::SYS_readlinkat,
    libc::SYS_truncate,
    libc::SYS_utime,
    libc::SYS_utimes,
    libc::SYS_utimensat,
    libc::SYS_futimesat,
    libc::SYS_statfs,
    libc::SYS_getxattr,
    libc::SYS_lgetxattr,
    libc::SYS_setxattr,
    libc::SYS_lsetxattr,
    libc::SYS_listxattr,
    libc::SYS_llistxattr,
    libc::SYS_removexattr,
    libc::SYS_lremovexattr,
    libc::SYS_inotify_add_watch,
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_getcwd,
    libc::SYS_chroot,
    libc::SYS_prctl,
    libc::SYS_uname,
    libc::SYS_bind,
    libc::SYS_connect,
    // Stops only with an address (see `filter`): a plain `send` is `sendto` without one.
    libc::SYS_sendto,
    libc::SYS_sendmsg,
];

/// Every call the filter sends to the supervisor: [`TRACED`] and the identity calls.
pub(super) fn traced() -> Vec<i64> {
    let mut all = TRACED.to_vec();
    all.extend(ON_DESCRIPTORS);
    all.extend(super::super::identity::intercepted());
    all
}

/// Calls refused outright by the filter, with their errno: ones that would act beside the
/// supervisor (io_uring runs file operations it never sees, `openat2` and the `*xattrat`,
/// `file_*attr` and handle calls take paths it does not translate, a traced step may not
/// trace).
pub(super) const REFUSED: [(i64, i32); 14] = [
    (libc::SYS_io_uring_setup, libc::ENOSYS),
    (libc::SYS_io_uring_enter, libc::ENOSYS),
    (libc::SYS_io_uring_register, libc::ENOSYS),
    (libc::SYS_openat2, libc::ENOSYS),
    (libc::SYS_name_to_handle_at, libc::EOPNOTSUPP),
    (libc::SYS_open_by_handle_at, libc::EPERM),
    (libc::SYS_ptrace, libc::EPERM),
    (libc::SYS_uselib, libc::ENOSYS),
    (463, libc::ENOSYS),
    (464, libc::ENOSYS),
    (465, libc::ENOSYS),
    (466, libc::ENOSYS),
    (468, libc::ENOSYS),
    (469, libc::ENOSYS),
];

/// What the supervisor does with call `nr`; `None` for a call it lets through.
pub(super) fn kind(nr: i64) -> Option<Kind> {
    Some(match nr {
        libc::SYS_open => Kind::Creates {
            path: p(0, OpenFlags(1)),
            flags: Some(1),
        },
        libc::SYS_openat => Kind::Creates {
            path: at(0, 1, OpenFlags(2)),
            flags: Some(2),
        },
        libc::SYS_creat => Kind::Creates {
            path: p(0, Follow),
            flags: None,
        },
        libc::SYS_mkdir => Kind::Creates {
            path: p(0, NoFollow),
            flags: None,
        },
        libc::SYS_mkdirat => Kind::Creates {
            path: at(0, 1, NoFollow),
            flags: None,
        },
        libc::SYS_mknod => Kind::Mknod {
            path: p(0, NoFollow),
            mode: 1,
            dev: 2,
        },
        libc::SYS_mknodat => Kind::Mknod {
            path: at(0, 1, NoFollow),
            mode: 2,
            dev: 3,
        },
        libc::SYS_access
        | libc::SYS_chdir
        | libc::SYS_chmod
        | libc::SYS_truncate
        | libc::SYS_utime
        | libc::SYS_utimes
        | libc::SYS_statfs
        | libc::SYS_getxattr
        | libc::SYS_setxattr
        | libc::SYS_listxattr
        | libc::SYS_removexattr => Kind::Paths(const { &[p(0, Follow)] }),
        libc::SYS_rmdir
        | libc::SYS_unlink
        | libc::SYS_lgetxattr
        | libc::SYS_lsetxattr
        | libc::SYS_llistxattr
        | libc::SYS_lremovexattr => Kind::Paths(const { &[p(0, NoFollow)] }),
        libc::SYS_faccessat | libc::SYS_fchmodat | libc::SYS_futimesat => {
            Kind::Paths(const { &[at(0, 1, Follow)] })
        }
        libc::SYS_faccessat2 | SYS_FCHMODAT2 | libc::SYS_utimensat => {
            Kind::Paths(const { &[at(0, 1, AtFlags(3))] })
        }
        libc::SYS_unlinkat => Kind::Paths(const { &[at(0, 1, NoFollow)] }),
        libc::SYS_rename | libc::SYS_link => {
            Kind::Paths(const { &[p(0, NoFollow), p(1, NoFollow)] })
        }
        libc::SYS_renameat | libc::SYS_renameat2 => {
            Kind::Paths(const { &[at(0, 1, NoFollow), at(2, 3, NoFollow)] })
        }
        libc::SYS_linkat => Kind::Paths(const { &[at(0, 1, LinkFlags(4)), at(2, 3, NoFollow)] }),
        // The target is the link's content, the guest's own: only the new link is a path.
        libc::SYS_symlink => Kind::Paths(const { &[p(1, NoFollow)] }),
        libc::SYS_symlinkat => Kind::Paths(const { &[at(1, 2, NoFollow)] }),
        libc::SYS_inotify_add_watch => Kind::Paths(const { &[p(1, Follow)] }),
        libc::SYS_stat => Kind::Stat {
            path: Some(p(0, Follow)),
            fd: 0,
            buf: 1,
            statx: false,
        },
        libc::SYS_lstat => Kind::Stat {
            path: Some(p(0, NoFollow)),
            fd: 0,
            buf: 1,
            statx: false,
        },
        libc::SYS_fstat => Kind::Stat {
            path: None,
            fd: 0,
            buf: 1,
            statx: false,
        },
        libc::SYS_newfstatat => Kind::Stat {
            path: Some(at(0, 1, AtFlags(3))),
            fd: 0,
            buf: 2,
            statx: false,
        },
        libc::SYS_statx => Kind::Stat {
            path: Some(at(0, 1, AtFlags(2))),
            fd: 0,
            buf: 4,
            statx: true,
        },
        libc::SYS_chown => Kind::Chown {
            path: Some(p(0, Follow)),
            fd: 0,
            uid: 1,
            gid: 2,
        },
        libc::SYS_lchown => Kind::Chown {
            path: Some(p(0, NoFollow)),
            fd: 0,
            uid: 1,
            gid: 2,
        },
        libc::SYS_fchown => Kind::Chown {
            path: None,
            fd: 0,
            uid: 1,
            gid: 2,
        },
        libc::SYS_fchownat => Kind::Chown {
            path: Some(at(0, 1, AtFlags(4))),
            fd: 0,
            uid: 2,
            gid: 3,
        },
        libc::SYS_readlink => Kind::Readlink {
            path: p(0, NoFollow),
            buf: 1,
            size: 2,
        },
        libc::SYS_readlinkat => Kind::Readlink {
            path: at(0, 1, NoFollow),
            buf: 2,
            size: 3,
        },
        libc::SYS_execve => Kind::Exec {
            path: p(0, Follow),
            argv: 1,
        },
        libc::SYS_execveat => Kind::Exec {
            path: at(0, 1, AtFlags(4)),
            argv: 2,
        },
        libc::SYS_getcwd => Kind::Getcwd,
        libc::SYS_chroot => Kind::Refuse(libc::EPERM),
        // bind makes the socket file (never through a final symlink); connect opens it.
        libc::SYS_bind => Kind::Socket {
            addr: 1,
            len: 2,
            follow: false,
        },
        libc::SYS_connect => Kind::Socket {
            addr: 1,
            len: 2,
            follow: true,
        },
        // A datagram's address is a socket to send to, as connect's is.
        libc::SYS_sendto => Kind::Socket {
            addr: 4,
            len: 5,
            follow: true,
        },
        libc::SYS_sendmsg => Kind::SendMsg { msg: 1 },
        libc::SYS_prctl => Kind::Prctl,
        _ if ON_DESCRIPTORS.contains(&nr) => Kind::ChangesFd,
        libc::SYS_uname => Kind::Uname,
        _ if super::super::identity::intercepted().contains(&nr) => Kind::Identity,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_traced_call_has_a_kind_and_none_is_refused_too() {
        for nr in &traced() {
            assert!(kind(*nr).is_some(), "{nr}");
            assert!(REFUSED.iter().all(|(r, _)| r != nr), "{nr}");
        }
        assert_eq!(kind(libc::SYS_read), None);
        assert_eq!(kind(libc::SYS_getuid), Some(Kind::Identity));
        assert_eq!(kind(libc::SYS_setresgid), Some(Kind::Identity));
    }
}
