//! `mknod` of a device in the ptrace tier: the placeholder of `sandbox::devices`, made at the
//! translated path by the supervisor, owned by the step's played user.

use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::unistd::Pid;
use rustix::fs::{Mode, OFlags};
use umstage_oci::owner::Owner;

use super::super::{devices, owners};

/// Makes the device `mknod(mode, dev)` asks for at the host path `host` as its placeholder,
/// for process `pid` playing `owner`.
pub(super) fn mknod(
    pid: Pid,
    host: &[u8],
    mode: u32,
    dev: u64,
    owner: Owner,
) -> std::io::Result<()> {
    let path = Path::new(std::ffi::OsStr::from_bytes(host));
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    };
    // The supervisor is not confined by Landlock: a directory the step swapped for a symlink
    // since the path was resolved must not lead it to the host.
    let dir = umstage_oci::inroot::open_no_symlinks(parent, OFlags::PATH | OFlags::DIRECTORY)?;
    devices::mknod(pid.as_raw() as u32, &dir, name, mode, dev)?;
    if owner != Owner::default() {
        let made = rustix::fs::openat(
            &dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let at = PathBuf::from(format!("/proc/self/fd/{}", made.as_raw_fd()));
        owners::record(&made, &at, owner)?;
    }
    Ok(())
}
