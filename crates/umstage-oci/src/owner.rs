//! Recorded ownership: where only one id is mapped, a file's owner in the image is kept in the
//! `user.rootlesscontainers` xattr, as umoci's rootless mode and runc's rootless containers
//! do (a protobuf `Resource { uint32 uid = 1; uint32 gid = 2; }`, zero fields left out). The
//! layer writer writes that owner into the tar and leaves the xattr out of the image.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, XattrFlags};
use rustix::io::Errno;

pub mod link;

/// The xattr that holds a recorded owner.
pub const XATTR: &str = "user.rootlesscontainers";

/// The real ids that stand for root, where root is played (see [`play_root`]).
static PLAYED_ROOT: std::sync::OnceLock<Owner> = std::sync::OnceLock::new();

/// From now on in this process, files that `own` (the process's own uid and gid) owns are
/// root's in images, and every other owner is recorded, never set: for the ptrace sandbox
/// tier, where no namespace maps any id and the process may not change an owner.
pub fn play_root(own: Owner) {
    let _ = PLAYED_ROOT.set(own);
}

/// Whether root is played ([`play_root`]).
pub fn root_played() -> bool {
    PLAYED_ROOT.get().is_some()
}

/// Runs `open`, an open for reading of `path` (relative to `dir`); where root is played and
/// that is refused for a regular file of the process's own that its owner may not read (a
/// step's `chmod 000`, which real root reads all the same), runs it again with owner read
/// lent for the time of the open.
pub fn lending_read<T>(
    dir: impl std::os::fd::AsFd,
    path: &std::path::Path,
    open: impl Fn() -> io::Result<T>,
) -> io::Result<T> {
    let first = open();
    let (Err(refused), Some(own)) = (&first, PLAYED_ROOT.get()) else {
        return first;
    };
    if refused.raw_os_error() != Some(libc::EACCES) {
        return first;
    }
    let Ok(st) = rfs::statat(&dir, path, AtFlags::SYMLINK_NOFOLLOW) else {
        return first;
    };
    let mode = st.st_mode & 0o7777;
    let lendable = rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::RegularFile
        && st.st_uid == own.uid
        && mode & 0o400 == 0;
    if !lendable
        || rfs::chmodat(
            &dir,
            path,
            rfs::Mode::from_raw_mode(mode | 0o400),
            AtFlags::empty(),
        )
        .is_err()
    {
        return first;
    }
    let result = open();
    rfs::chmodat(&dir, path, rfs::Mode::from_raw_mode(mode), AtFlags::empty())?;
    result
}

/// The owner an image gets for a file whose real owner is `uid:gid` and that has no record.
pub fn in_image(uid: u32, gid: u32) -> Owner {
    match PLAYED_ROOT.get() {
        Some(own) => Owner {
            uid: if uid == own.uid { 0 } else { uid },
            gid: if gid == own.gid { 0 } else { gid },
        },
        None => Owner { uid, gid },
    }
}

/// The owner a file has in the image, whatever the filesystem says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Owner {
    /// The uid in the image.
    pub uid: u32,
    /// The gid in the image.
    pub gid: u32,
}

/// Why a recorded owner could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed {XATTR} value")]
pub struct MalformedOwner;

impl Owner {
    /// The xattr's value (proto3: a zero field is not written).
    pub fn encode(self) -> Vec<u8> {
        let mut out = Vec::new();
        for (tag, value) in [(0x08u8, self.uid), (0x10u8, self.gid)] {
            if value != 0 {
                out.push(tag);
                let mut v = value;
                while v >= 0x80 {
                    out.push((v as u8 & 0x7f) | 0x80);
                    v >>= 7;
                }
                out.push(v as u8);
            }
        }
        out
    }

    /// Reads an xattr value; unknown varint fields are skipped, as protobuf readers do.
    pub fn decode(bytes: &[u8]) -> Result<Owner, MalformedOwner> {
        let mut owner = Owner::default();
        let mut rest = bytes;
        while let Some((&tag, after)) = rest.split_first() {
            if tag & 0x07 != 0 {
                return Err(MalformedOwner);
            }
            let (value, after) = varint(after)?;
            match tag >> 3 {
                1 => owner.uid = u32::try_from(value).map_err(|_| MalformedOwner)?,
                2 => owner.gid = u32::try_from(value).map_err(|_| MalformedOwner)?,
                _ => {}
            }
            rest = after;
        }
        Ok(owner)
    }
}

/// Sets the owner of `name` in `parent` (never following a final symlink). Where the user
/// namespace maps only one id the kernel refuses other owners (`EINVAL`); the owner is then
/// recorded instead. A record left from before is removed once the real owner is right. A
/// symlink takes no user xattr: its record goes on its directory ([`link`]).
pub fn chown_or_record(parent: &OwnedFd, name: &OsStr, owner: Owner) -> io::Result<()> {
    if root_played() {
        return record_at(parent, name, owner);
    }
    // 4294967295 is -1 to the kernel ("leave as it is"): that owner can only be recorded.
    let chown = if owner.uid == u32::MAX || owner.gid == u32::MAX {
        Err(Errno::INVAL)
    } else {
        rfs::chownat(
            parent,
            name,
            Some(rfs::Uid::from_raw(owner.uid)),
            Some(rfs::Gid::from_raw(owner.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
    };
    let at = PathBuf::from(format!("/proc/self/fd/{}", parent.as_raw_fd())).join(name);
    let result = match chown {
        Ok(()) => match rfs::lremovexattr(&at, XATTR) {
            // A symlink (or another file that takes no user xattr) may have a record on its
            // directory instead.
            Err(Errno::PERM) => return link::record_link(parent, name, Owner::default()),
            Err(Errno::NODATA | Errno::NOTSUP) => Ok(()),
            other => other,
        },
        Err(Errno::INVAL) if is_symlink(parent, name) => {
            return link::record_link(parent, name, owner);
        }
        Err(Errno::INVAL) => rfs::lsetxattr(&at, XATTR, &owner.encode(), XattrFlags::empty()),
        Err(e) => Err(e),
    };
    result.map_err(io::Error::from)
}

/// Where root is played: records `owner` on `name` in `parent` (0:0 is the unrecorded
/// default, so its record is removed).
fn record_at(parent: &OwnedFd, name: &OsStr, owner: Owner) -> io::Result<()> {
    if is_symlink(parent, name) {
        return link::record_link(parent, name, owner);
    }
    let at = PathBuf::from(format!("/proc/self/fd/{}", parent.as_raw_fd())).join(name);
    let result = if owner == Owner::default() {
        match rfs::lremovexattr(&at, XATTR) {
            Err(Errno::NODATA | Errno::NOTSUP | Errno::PERM) => Ok(()),
            other => other,
        }
    } else {
        rfs::lsetxattr(&at, XATTR, &owner.encode(), XattrFlags::empty())
    };
    result.map_err(io::Error::from)
}

/// The owner recorded on the file `fd` is open on (any kind of descriptor, `O_PATH` too).
pub fn recorded(fd: &impl AsRawFd) -> Option<Owner> {
    recorded_at(Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())))
}

/// The owner recorded on the file at `path`, symlinks followed (a `/proc/…/fd/N` link leads
/// to the file itself).
pub fn recorded_at(path: &Path) -> Option<Owner> {
    let mut value = [0u8; 32];
    let n = rfs::getxattr(path, XATTR, &mut value).ok()?;
    Owner::decode(&value[..n]).ok()
}

fn is_symlink(parent: &OwnedFd, name: &OsStr) -> bool {
    rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|s| rfs::FileType::from_raw_mode(s.st_mode) == rfs::FileType::Symlink)
}

fn varint(bytes: &[u8]) -> Result<(u64, &[u8]), MalformedOwner> {
    let mut value = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, &bytes[i + 1..]));
        }
    }
    Err(MalformedOwner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_round_trip_and_zero_fields_are_left_out() {
        for owner in [
            Owner { uid: 0, gid: 0 },
            Owner { uid: 1234, gid: 0 },
            Owner { uid: 0, gid: 5 },
            Owner {
                uid: 100000,
                gid: u32::MAX,
            },
        ] {
            assert_eq!(Owner::decode(&owner.encode()), Ok(owner));
        }
        assert!(Owner::default().encode().is_empty());
        // What umoci writes for uid 1000, gid 1000.
        assert_eq!(
            Owner {
                uid: 1000,
                gid: 1000
            }
            .encode(),
            [0x08, 0xe8, 0x07, 0x10, 0xe8, 0x07]
        );
    }

    #[test]
    fn a_record_reads_the_same_through_a_path_and_a_descriptor() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("f");
        std::fs::write(&file, "x")?;
        let owner = Owner { uid: 7, gid: 8 };
        // A filesystem without user xattrs (some tmpfs) has nothing to read back.
        if rfs::setxattr(&file, XATTR, &owner.encode(), XattrFlags::empty()).is_err() {
            return Ok(());
        }
        let fd = std::fs::File::open(&file)?;
        assert_eq!(recorded_at(&file), Some(owner));
        assert_eq!(recorded(&fd), Some(owner));
        assert_eq!(recorded_at(&dir.path().join("none")), None);
        Ok(())
    }

    #[test]
    fn malformed_values_are_refused() {
        assert_eq!(Owner::decode(&[0x08]), Err(MalformedOwner));
        assert_eq!(Owner::decode(&[0x0a, 0x01, 0x00]), Err(MalformedOwner));
        assert_eq!(
            Owner::decode(&[0x08, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err(MalformedOwner)
        );
    }
}
