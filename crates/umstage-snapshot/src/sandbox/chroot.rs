//! The `chroot` tier's step setup: no namespace at all, for root in a container that may not
//! make one (no `CAP_SYS_ADMIN`, and a seccomp profile refusing `unshare` without it) but keeps
//! the default capabilities (`CAP_SYS_CHROOT`, `CAP_CHOWN`, `CAP_MKNOD`, `CAP_SETUID`...).
//!
//! The step runs chrooted in its snapshot's own directory (the native driver: nothing can be
//! mounted), with the character devices a step expects made in `/dev` for the step and removed
//! after it (reported as stubs). There is no `/proc` or `/sys`, no private hostname, and no
//! `RUN --mount`: [`super::run_step`] refuses what needs a mount before the helper starts.
//! The step cannot chroot itself (it could leave this chroot so); where the kernel offers
//! Landlock it is also confined to the snapshot's tree ([`confine`]), which holds whatever way
//! out root finds. It shares the container's pid, network and ipc namespaces.

use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use umstage_oci::inroot::Root;

use super::failure::HelperError;
use super::landlock::{Access, Ruleset};
use super::rootfs::{Kind, Ready, ensure, user_and_workdir};

/// `CAP_SYS_CHROOT`'s number, as `prctl` takes it.
const CAP_SYS_CHROOT: libc::c_ulong = 18;

/// The devices a step finds in `/dev`: name, major, minor (as Docker makes them).
const DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Prepares `rootfs` for the step and chroots into it; what it made is added to `stubs`.
pub(super) fn prepare_root(
    request: &super::Request,
    rootfs: &Path,
    stubs: &mut Vec<PathBuf>,
) -> Result<Ready, HelperError> {
    let root = Root::open(rootfs)
        .map_err(|e| HelperError::during(format!("opening the rootfs {}", rootfs.display()), e))?;
    let user = user_and_workdir(request, &root)?;
    let dev = ensure(&root, Path::new("/dev"), Kind::Dir, Some(stubs))
        .map_err(|e| HelperError::during("creating /dev", e))?;
    let dev = rustix::fs::openat(
        rustix::fs::CWD,
        format!("/proc/self/fd/{}", dev.as_raw_fd()),
        rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| HelperError::during("opening /dev", e))?;
    for (name, major, minor) in DEVICES {
        let made = rustix::fs::mknodat(
            &dev,
            OsStr::new(name),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(major as u32, minor as u32),
        );
        match made {
            // The umask took bits the step expects.
            Ok(()) => {
                let _ = rustix::fs::chmodat(
                    &dev,
                    OsStr::new(name),
                    rustix::fs::Mode::from_raw_mode(0o666),
                    rustix::fs::AtFlags::empty(),
                );
                stubs.push(PathBuf::from("dev").join(name));
            }
            // The image has its own, or the device cgroup refuses it: the step goes without.
            Err(e) => tracing::debug!("mknod /dev/{name}: {e}"),
        }
    }
    nix::unistd::chroot(rootfs)
        .map_err(|e| HelperError::during(format!("chroot {}", rootfs.display()), e))?;
    std::env::set_current_dir("/").map_err(|e| HelperError::during("chdir /", e))?;
    // A chroot is no boundary for a process that may chroot again (a second chroot and
    // enough `..` lead out): the step loses CAP_SYS_CHROOT, whatever else it keeps.
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, CAP_SYS_CHROOT, 0, 0, 0) } != 0 {
        return Err(HelperError::during(
            "dropping CAP_SYS_CHROOT",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(Ready { user })
}

/// Confines the step, already chrooted, to its root with Landlock (and so sets
/// no-new-privileges, which Landlock needs without `CAP_SYS_ADMIN`); without Landlock the
/// step runs as before (the build's tier line said why).
pub(super) fn confine() -> Result<(), HelperError> {
    let mut rules = match Ruleset::new().map_err(|e| HelperError::Below(e.into()))? {
        Ok(rules) => rules,
        Err(why) => {
            tracing::debug!("not confined by Landlock: {why}");
            return Ok(());
        }
    };
    rules
        .allow(Path::new("/"), Access::ALL)
        .map_err(|e| HelperError::Below(e.into()))?;
    nix::sys::prctl::set_no_new_privs()
        .map_err(|e| HelperError::during("PR_SET_NO_NEW_PRIVS", e))?;
    rules
        .restrict_self()
        .map_err(|e| HelperError::Below(e.into()))
}
