//! Device `mknod` in the tiers that record owners (`userns-single`, `ptrace`): the kernel
//! makes character and block devices only with `CAP_MKNOD` in the initial user namespace, so
//! the supervisor makes the placeholder of [`umstage_oci::device`] in its place and shows it
//! to `stat` as the device. Other `mknod`s (FIFOs, regular files, sockets) go to the kernel.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;

use umstage_oci::device::{self, Device};

/// Makes `name` in `parent` the placeholder of the device `mknod(mode, dev)` asks for, made by
/// process `pid` (whose umask applies); `Ok(false)` where the call makes no device.
pub(super) fn mknod(
    pid: u32,
    parent: &OwnedFd,
    name: &OsStr,
    mode: u32,
    dev: u64,
) -> std::io::Result<bool> {
    let Some(device) = Device::from_mknod(mode, dev) else {
        return Ok(false);
    };
    let umask = umask_of(pid)?;
    device::make_placeholder(parent, name, device, mode & 0o7777 & !umask)?;
    Ok(true)
}

/// The umask of process `pid`.
fn umask_of(pid: u32) -> std::io::Result<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EIO))
}

/// A `stat` of a placeholder, made to show the device it stands for.
pub(super) fn patch_stat(st: &mut libc::stat, device: Device) {
    st.st_mode = (st.st_mode & 0o7777) | device.file_type_bits();
    st.st_rdev = device.rdev();
    st.st_size = 0;
    st.st_blocks = 0;
}

/// A `statx` of a placeholder, made to show the device it stands for.
pub(super) fn patch_statx(stx: &mut libc::statx, device: Device) {
    stx.stx_mode = (stx.stx_mode & 0o7777) | device.file_type_bits() as u16;
    stx.stx_rdev_major = device.major;
    stx.stx_rdev_minor = device.minor;
    stx.stx_size = 0;
    stx.stx_blocks = 0;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_device_mknod_makes_a_placeholder_with_the_umask_applied_and_stat_shows_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let parent: OwnedFd = std::fs::File::open(dir.path()).unwrap().into();
        let own = std::process::id();
        let umask = umask_of(own).unwrap();
        let fifo = mknod(own, &parent, OsStr::new("p"), libc::S_IFIFO | 0o644, 0).unwrap();
        assert!(!fifo);
        let dev = rustix::fs::makedev(1, 3);
        assert!(mknod(own, &parent, OsStr::new("null"), libc::S_IFCHR | 0o666, dev).unwrap());
        let path = dir.path().join("null");
        let file = std::fs::File::open(&path).unwrap();
        let recorded = device::recorded(&file).unwrap();
        // SAFETY: stat is plain data; lstat fills it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let cpath = std::ffi::CString::new(path.into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path and a stat buffer that lives for the call.
        assert_eq!(unsafe { libc::lstat(cpath.as_ptr(), &mut st) }, 0);
        assert_eq!(st.st_mode & 0o7777, 0o666 & !umask);
        patch_stat(&mut st, recorded);
        assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFCHR);
        assert_eq!(st.st_rdev, dev);
    }
}
