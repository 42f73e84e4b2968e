//! Landlock for the steps of the tiers without a namespace (`chroot`, `ptrace`): the step's
//! process confines itself, just before it execs, to the files it is given (its root, its
//! `RUN --mount` directories, its private files, a few devices, `/proc` and `/sys` to read).
//!
//! Landlock judges an access by where the file really is, whatever path string the kernel
//! walked to reach it: a symlink swapped in after the ptrace supervisor resolved a path, a
//! translated path rewritten by another thread, `/proc/PID/root` or a second chroot all end
//! at a host file outside the rules and are refused. It is an unprivileged LSM that needs no
//! namespace (only no-new-privileges), so it works where these tiers run. A domain also keeps
//! the step from tracing or reading the memory of processes outside it (umstage's own), and
//! from ABI 6 from signalling them or reaching their abstract Unix sockets.
//!
//! What Landlock (up to ABI 7) does not judge stays as it was: `stat`, `readlink`, `access`,
//! `chmod`, `chown`, `utimes` and xattrs of a path, `connect` to a Unix socket's path, and
//! the network.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

/// The oldest ABI used: ABI 1 cannot allow a rename or link between directories (`REFER`),
/// which builds do all the time (`dpkg`, `mv`, `ln`).
const MIN_ABI: u32 = 2;

/// The access rights, as `<linux/landlock.h>` numbers them.
mod fs {
    pub const EXECUTE: u64 = 1 << 0;
    pub const WRITE_FILE: u64 = 1 << 1;
    pub const READ_FILE: u64 = 1 << 2;
    pub const READ_DIR: u64 = 1 << 3;
    /// `REMOVE_DIR` through `MAKE_SYM` (bits 4 to 12): the rights only a directory takes.
    pub const DIR_ONLY_V1: u64 = 0x1ff0;
    pub const REFER: u64 = 1 << 13;
    pub const TRUNCATE: u64 = 1 << 14;
    pub const IOCTL_DEV: u64 = 1 << 15;
}

/// `LANDLOCK_SCOPE_*` (ABI 6).
const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;
const CREATE_RULESET_VERSION: libc::c_ulong = 1 << 0;
const RULE_PATH_BENEATH: libc::c_int = 1;

/// `struct landlock_ruleset_attr`; an older kernel takes it whole while the fields it does not
/// know are zero.
#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

/// `struct landlock_path_beneath_attr` (packed in the kernel's header).
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// What a rule lets the step do beneath a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Access(u64);

impl Access {
    /// Everything: the step's own trees.
    pub(crate) const ALL: Access = Access(u64::MAX);
    /// Read files and list directories.
    pub(crate) const READ: Access = Access(fs::READ_FILE | fs::READ_DIR);
    /// Read and run what is there (a read-only `RUN --mount`).
    pub(crate) const READ_EXECUTE: Access = Access(fs::READ_FILE | fs::READ_DIR | fs::EXECUTE);
    /// A device the step uses: read, write (`>` truncates), ioctls (a terminal's).
    pub(crate) const DEVICE: Access =
        Access(fs::READ_FILE | fs::WRITE_FILE | fs::TRUNCATE | fs::IOCTL_DEV);
}

/// Why the step is not confined by Landlock.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// `ENOSYS`.
    #[error(
        "the kernel has no Landlock (Linux 5.19 or later built with CONFIG_SECURITY_LANDLOCK), or a seccomp filter refuses landlock_create_ruleset"
    )]
    NoSyscall,
    /// `EOPNOTSUPP`: built in but not enabled at boot.
    #[error(
        "Landlock is built into the kernel but not enabled (add landlock to the kernel's lsm= boot parameter)"
    )]
    Disabled,
    /// `EPERM` and the like: a seccomp filter's answer.
    #[error("landlock_create_ruleset fails: {0} (a seccomp filter refuses it)")]
    Refused(String),
    /// ABI 1 only.
    #[error(
        "Landlock ABI {0} cannot allow renames and links between directories (Linux 5.19 or later can)"
    )]
    TooOld(u32),
}

/// A Landlock call that failed where the kernel offers Landlock.
#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    /// Making the ruleset or confining the process.
    #[error("{what}: {source}")]
    Call {
        /// The call.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Adding the rule for a path.
    #[error("allowing {}: {source}", path.display())]
    Rule {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The Landlock ABI this kernel offers (2 or later), or why steps go unconfined.
pub(crate) fn probe() -> Result<u32, Unavailable> {
    // SAFETY: with a null attribute, size 0 and the version flag the call only returns a number.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    if abi < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENOSYS) => Unavailable::NoSyscall,
            Some(libc::EOPNOTSUPP) => Unavailable::Disabled,
            _ => Unavailable::Refused(e.to_string()),
        });
    }
    let abi = u32::try_from(abi).unwrap_or(u32::MAX);
    if abi < MIN_ABI {
        return Err(Unavailable::TooOld(abi));
    }
    Ok(abi)
}

/// The rights an ABI knows, all handled (denied unless a rule allows them).
fn handled_fs(abi: u32) -> u64 {
    let mut handled = fs::EXECUTE | fs::WRITE_FILE | fs::READ_FILE | fs::READ_DIR;
    handled |= fs::DIR_ONLY_V1 | fs::REFER;
    if abi >= 3 {
        handled |= fs::TRUNCATE;
    }
    if abi >= 5 {
        handled |= fs::IOCTL_DEV;
    }
    handled
}

/// A ruleset being filled in, made before the step's process forks and applied by it.
#[derive(Debug)]
pub(crate) struct Ruleset {
    fd: OwnedFd,
    handled: u64,
}

impl Ruleset {
    /// A ruleset handling every right the kernel knows, or why there is none.
    pub(crate) fn new() -> Result<Result<Ruleset, Unavailable>, LandlockError> {
        let abi = match probe() {
            Ok(abi) => abi,
            Err(why) => return Ok(Err(why)),
        };
        let handled = handled_fs(abi);
        // The network is not handled: a step reaches it as in every tier.
        let attr = RulesetAttr {
            handled_access_fs: handled,
            handled_access_net: 0,
            scoped: if abi >= 6 {
                SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
            } else {
                0
            },
        };
        // SAFETY: `attr` is a live struct of the size given; the kernel returns a new fd
        // (close-on-exec), owned right after.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                &attr as *const RulesetAttr,
                std::mem::size_of::<RulesetAttr>(),
                0,
            )
        };
        if fd < 0 {
            return Err(LandlockError::Call {
                what: "landlock_create_ruleset",
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: a new descriptor the kernel just returned to us.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Ok(Ruleset { fd, handled }))
    }

    /// Lets the step do `access` on `path` and everything beneath it; a path that does not
    /// exist (a device this container lacks) is passed over.
    pub(crate) fn allow(&mut self, path: &Path, access: Access) -> Result<(), LandlockError> {
        let rule = |source| LandlockError::Rule {
            path: path.to_path_buf(),
            source,
        };
        let file = match rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()) {
            Ok(file) => file,
            Err(rustix::io::Errno::NOENT) => return Ok(()),
            Err(e) => return Err(rule(e.into())),
        };
        let is_dir = rustix::fs::fstat(&file)
            .map_err(|e| rule(e.into()))
            .map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir())?;
        let mut allowed = access.0 & self.handled;
        if !is_dir {
            // The kernel refuses a directory's rights on a file.
            allowed &= fs::EXECUTE | fs::WRITE_FILE | fs::READ_FILE | fs::TRUNCATE | fs::IOCTL_DEV;
        }
        let attr = PathBeneathAttr {
            allowed_access: allowed,
            parent_fd: file.as_raw_fd(),
        };
        // SAFETY: `attr` is a live struct the kernel reads; both descriptors are open.
        let done = unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                self.fd.as_raw_fd(),
                RULE_PATH_BENEATH,
                &attr as *const PathBeneathAttr,
                0,
            )
        };
        if done < 0 {
            return Err(rule(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Confines this process (and all it starts) to the rules; it must have no-new-privileges
    /// set (or `CAP_SYS_ADMIN`).
    pub(crate) fn restrict_self(&self) -> Result<(), LandlockError> {
        // SAFETY: a plain system call on a descriptor we own.
        let done =
            unsafe { libc::syscall(libc::SYS_landlock_restrict_self, self.fd.as_raw_fd(), 0) };
        if done < 0 {
            return Err(LandlockError::Call {
                what: "landlock_restrict_self",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Runs `check` in a new thread confined to `allowed` (Landlock and no-new-privileges
    /// hold for the calling thread only, so the test process stays as it was).
    fn in_confined_thread(allowed: &Path, check: impl FnOnce() -> bool + Send) -> Option<bool> {
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut rules = Ruleset::new().ok()?.ok()?;
                rules.allow(allowed, Access::ALL).ok()?;
                nix::sys::prctl::set_no_new_privs().ok()?;
                rules.restrict_self().ok()?;
                Some(check())
            })
            .join()
            .ok()
            .flatten()
        })
    }

    #[test]
    fn a_confined_process_reaches_its_tree_and_nothing_beside_it() {
        if let Err(why) = probe() {
            eprintln!("skipped: {why}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("inside");
        std::fs::create_dir(&inside).unwrap();
        std::fs::write(dir.path().join("canary"), b"secret").unwrap();
        // A symlink inside leading out is followed to where it leads, and refused there.
        std::os::unix::fs::symlink(dir.path(), inside.join("out")).unwrap();
        let confined = in_confined_thread(&inside, || {
            let made = std::fs::write(inside.join("new"), b"x").is_ok();
            let renamed = std::fs::create_dir(inside.join("d")).is_ok()
                && std::fs::rename(inside.join("new"), inside.join("d/new")).is_ok();
            let read_out = std::fs::read(inside.join("out/canary")).is_ok();
            let made_out = std::fs::write(dir.path().join("made"), b"x").is_ok();
            let proc_root = std::fs::read(format!(
                "/proc/{}/root{}/canary",
                nix::unistd::getppid(),
                dir.path().display()
            ))
            .is_ok();
            (made, renamed, read_out, made_out, proc_root) == (true, true, false, false, false)
        });
        assert_eq!(confined, Some(true));
        assert!(!dir.path().join("made").exists());
        assert!(inside.join("d/new").exists());
    }

    /// A seccomp filter answering `landlock_create_ruleset` with `EPERM`, as a runtime's
    /// profile that does not list it does, installed on the calling thread only (which must
    /// have no-new-privileges).
    fn refuse_landlock_here() -> bool {
        let jump = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
        let mut filter = [
            libc::sock_filter {
                code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
                jt: 0,
                jf: 0,
                k: 0,
            },
            libc::sock_filter {
                code: jump,
                jt: 0,
                jf: 1,
                k: libc::SYS_landlock_create_ruleset as u32,
            },
            libc::sock_filter {
                code: (libc::BPF_RET | libc::BPF_K) as u16,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
            },
            libc::sock_filter {
                code: (libc::BPF_RET | libc::BPF_K) as u16,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ALLOW,
            },
        ];
        crate::sandbox::seccomp::load(&mut filter, 0).is_ok()
    }

    #[test]
    fn a_seccomp_profile_refusing_landlock_is_named_as_the_reason() {
        if let Err(why) = probe() {
            eprintln!("skipped: {why}");
            return;
        }
        let seen = std::thread::spawn(|| {
            nix::sys::prctl::set_no_new_privs().ok()?;
            refuse_landlock_here().then(probe)
        })
        .join()
        .unwrap();
        let why = seen.unwrap().unwrap_err();
        assert!(matches!(why, Unavailable::Refused(_)), "{why:?}");
        assert!(
            why.to_string().contains("a seccomp filter refuses it"),
            "{why}"
        );
        // Only that thread was filtered.
        assert!(probe().is_ok());
    }

    #[test]
    fn rights_a_kernel_does_not_know_are_not_asked_for() {
        assert_eq!(handled_fs(2) & (fs::TRUNCATE | fs::IOCTL_DEV), 0);
        assert_eq!(handled_fs(3) & fs::IOCTL_DEV, 0);
        assert_ne!(handled_fs(5) & fs::IOCTL_DEV, 0);
    }
}
