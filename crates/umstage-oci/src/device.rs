//! Recorded device nodes: only `CAP_MKNOD` in the initial user namespace makes a character or
//! block device, which no rootless tier has. Where a step (or an unpacked layer, or `COPY`)
//! makes one there, an empty regular file stands in for it with the device in the
//! `user.umstage.device` xattr (`c 1 3`, as `mknod` takes it); the sandboxes show it to
//! `stat` as the device, and the layer writer writes it into the tar as the device, leaving
//! the xattr out of the image.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use rustix::fs::{self as rfs, FileType, Mode, OFlags, XattrFlags};
use rustix::io::Errno;

/// The xattr that holds a recorded device.
pub const XATTR: &str = "user.umstage.device";

/// A character or block device's type and numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device {
    /// Block (`true`) or character (`false`).
    pub block: bool,
    /// Its major number.
    pub major: u32,
    /// Its minor number.
    pub minor: u32,
}

/// Why a recorded device could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed {XATTR} value")]
pub struct MalformedDevice;

impl Device {
    /// The device a `mknod` of `mode` and `dev` makes, if it makes one.
    pub fn from_mknod(mode: u32, dev: u64) -> Option<Device> {
        let block = match mode & libc::S_IFMT {
            libc::S_IFCHR => false,
            libc::S_IFBLK => true,
            _ => return None,
        };
        Some(Device {
            block,
            major: rfs::major(dev),
            minor: rfs::minor(dev),
        })
    }

    /// Its file type bits (`S_IFCHR` or `S_IFBLK`).
    pub fn file_type_bits(self) -> u32 {
        if self.block {
            libc::S_IFBLK
        } else {
            libc::S_IFCHR
        }
    }

    /// Its device number, as `st_rdev` holds it.
    pub fn rdev(self) -> u64 {
        rfs::makedev(self.major, self.minor)
    }

    /// The xattr's value.
    pub fn encode(self) -> Vec<u8> {
        let kind = if self.block { 'b' } else { 'c' };
        format!("{kind} {} {}", self.major, self.minor).into_bytes()
    }

    /// Reads an xattr value.
    pub fn decode(bytes: &[u8]) -> Result<Device, MalformedDevice> {
        let text = std::str::from_utf8(bytes).map_err(|_| MalformedDevice)?;
        let mut words = text.split(' ');
        let block = match words.next() {
            Some("c") => false,
            Some("b") => true,
            _ => return Err(MalformedDevice),
        };
        let mut number = || -> Result<u32, MalformedDevice> {
            words
                .next()
                .and_then(|w| w.parse().ok())
                .ok_or(MalformedDevice)
        };
        let (major, minor) = (number()?, number()?);
        if words.next().is_some() {
            return Err(MalformedDevice);
        }
        Ok(Device {
            block,
            major,
            minor,
        })
    }
}

/// The device recorded on the file `fd` is open on (any kind of descriptor, `O_PATH` too).
pub fn recorded(fd: &impl AsRawFd) -> Option<Device> {
    let mut value = [0u8; 32];
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let n = rfs::getxattr(path.as_str(), XATTR, &mut value).ok()?;
    Device::decode(&value[..n]).ok()
}

/// Makes `name` in `parent` the empty regular file that stands for `device`, with permission
/// bits `mode` (whatever the umask); fails with `EEXIST` where `name` exists.
pub fn make_placeholder(
    parent: impl AsFd,
    name: &OsStr,
    device: Device,
    mode: u32,
) -> io::Result<()> {
    let fd: OwnedFd = rfs::openat(
        &parent,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    // The record goes on before the mode, which may deny its owner writing it.
    let recorded = rfs::fsetxattr(&fd, XATTR, &device.encode(), XattrFlags::empty())
        .and_then(|()| rfs::fchmod(&fd, Mode::from_raw_mode(mode & 0o7777)));
    if let Err(e) = recorded {
        let _ = rfs::unlinkat(&parent, name, rfs::AtFlags::empty());
        return Err(e.into());
    }
    Ok(())
}

/// Makes the device `name` in `parent` with permission bits `mode`, or, where the kernel
/// refuses devices (`EPERM`), its recorded placeholder.
pub fn mknod_or_record(
    parent: impl AsFd,
    name: &OsStr,
    device: Device,
    mode: u32,
) -> io::Result<()> {
    let file_type = if device.block {
        FileType::BlockDevice
    } else {
        FileType::CharacterDevice
    };
    match rfs::mknodat(
        &parent,
        name,
        file_type,
        Mode::from_raw_mode(mode & 0o7777),
        device.rdev(),
    ) {
        Ok(()) => Ok(()),
        Err(Errno::PERM) => make_placeholder(parent, name, device, mode),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn devices_round_trip_and_malformed_values_are_refused() {
        let null = Device {
            block: false,
            major: 1,
            minor: 3,
        };
        assert_eq!(null.encode(), b"c 1 3");
        assert_eq!(Device::decode(b"c 1 3"), Ok(null));
        let sda = Device::from_mknod(libc::S_IFBLK | 0o660, rfs::makedev(8, 300)).unwrap();
        assert_eq!(Device::decode(&sda.encode()), Ok(sda));
        assert_eq!((sda.block, sda.major, sda.minor), (true, 8, 300));
        assert_eq!(Device::from_mknod(libc::S_IFIFO | 0o644, 0), None);
        for bad in [&b"x 1 3"[..], b"c 1", b"c 1 3 4", b"c -1 3", b"c 1 z", b""] {
            assert_eq!(Device::decode(bad), Err(MalformedDevice), "{bad:?}");
        }
    }

    #[test]
    fn a_placeholder_is_an_empty_file_with_its_record_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let parent =
            rfs::open(dir.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let dev = Device {
            block: false,
            major: 5,
            minor: 1,
        };
        make_placeholder(&parent, OsStr::new("console"), dev, 0o620).unwrap();
        let file = std::fs::File::open(dir.path().join("console")).unwrap();
        let meta = file.metadata().unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert!(meta.is_file() && meta.len() == 0);
        assert_eq!(meta.permissions().mode() & 0o7777, 0o620);
        assert_eq!(recorded(&file), Some(dev));
        let again = make_placeholder(&parent, OsStr::new("console"), dev, 0o620);
        assert_eq!(again.unwrap_err().raw_os_error(), Some(libc::EEXIST));
    }
}
