//! Recorded owners of symlinks: a symlink takes no user xattr, so its record is kept on its
//! directory, in `user.umstage.link.<name>`, whose value is `uid:gid:` followed by the link's
//! target. A record applies only to a link of that name with that target, so one left behind
//! by a link removed or replaced since does not give its owner to another.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{self as rfs, AtFlags, XattrFlags};
use rustix::io::Errno;

use super::Owner;

/// The prefix of the xattrs that hold symlinks' owners, on their directory.
pub const PREFIX: &str = "user.umstage.link.";

/// Whether an xattr's name is a symlink's owner record.
pub fn is_link_record(name: &[u8]) -> bool {
    name.starts_with(PREFIX.as_bytes())
}

/// The xattr for the link `name` (the kernel takes names of at most 255 bytes: a longer
/// link name's owner cannot be recorded).
fn xattr_name(name: &OsStr) -> io::Result<Vec<u8>> {
    let full = [PREFIX.as_bytes(), name.as_bytes()].concat();
    if full.len() > 255 || name.as_bytes().contains(&0) {
        return Err(Errno::NAMETOOLONG.into());
    }
    Ok(full)
}

fn dir_path(parent: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", parent.as_raw_fd())
}

/// The owner recorded for the symlink `name` in `parent` (any kind of descriptor, `O_PATH`
/// too), if its record names its current target.
pub fn link_recorded(parent: &(impl AsFd + AsRawFd), name: &OsStr) -> Option<Owner> {
    let key = xattr_name(name).ok()?;
    let mut value = vec![0u8; 4200];
    let n = rfs::getxattr(
        dir_path(parent).as_str(),
        OsStr::from_bytes(&key),
        &mut value,
    )
    .ok()?;
    let (owner, target) = decode(&value[..n])?;
    let now = rfs::readlinkat(parent, name, Vec::new()).ok()?;
    (now.as_bytes() == target).then_some(owner)
}

/// Records `owner` for the symlink `name` in `parent` (0:0, the unrecorded default, removes
/// the record), and has an overlay copy the link up, so that it is part of the layer.
pub fn record_link(parent: &(impl AsFd + AsRawFd), name: &OsStr, owner: Owner) -> io::Result<()> {
    let key = xattr_name(name)?;
    let key = OsStr::from_bytes(&key);
    let dir = dir_path(parent);
    if owner == Owner::default() {
        match rfs::removexattr(dir.as_str(), key) {
            Ok(()) | Err(Errno::NODATA | Errno::NOTSUP) => {}
            Err(e) => return Err(e.into()),
        }
    } else {
        let target = rfs::readlinkat(parent, name, Vec::new())?;
        let mut value = format!("{}:{}:", owner.uid, owner.gid).into_bytes();
        value.extend_from_slice(target.as_bytes());
        rfs::setxattr(dir.as_str(), key, &value, XattrFlags::empty())?;
    }
    // A chown that changes nothing still makes overlayfs copy the link up; elsewhere it is a
    // no-op, and a refusal only leaves the link where it was.
    let _ = rfs::chownat(parent, name, None, None, AtFlags::SYMLINK_NOFOLLOW);
    Ok(())
}

fn decode(value: &[u8]) -> Option<(Owner, &[u8])> {
    let mut parts = value.splitn(3, |b| *b == b':');
    let mut id = || -> Option<u32> { std::str::from_utf8(parts.next()?).ok()?.parse().ok() };
    let (uid, gid) = (id()?, id()?);
    Some((Owner { uid, gid }, parts.next()?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::fd::OwnedFd;

    #[test]
    fn a_links_record_is_on_its_directory_and_follows_its_target() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("a:b", dir.path().join("l")).unwrap();
        let parent: OwnedFd = std::fs::File::open(dir.path()).unwrap().into();
        let l = OsStr::new("l");
        assert_eq!(link_recorded(&parent, l), None);
        let owner = Owner { uid: 9, gid: 1000 };
        record_link(&parent, l, owner).unwrap();
        assert_eq!(link_recorded(&parent, l), Some(owner));
        // Replaced by a link elsewhere: the record no longer applies.
        std::fs::remove_file(dir.path().join("l")).unwrap();
        std::os::unix::fs::symlink("c", dir.path().join("l")).unwrap();
        assert_eq!(link_recorded(&parent, l), None);
        record_link(&parent, l, owner).unwrap();
        record_link(&parent, l, Owner::default()).unwrap();
        assert_eq!(link_recorded(&parent, l), None);
        assert!(is_link_record(&xattr_name(l).unwrap()));
        assert!(record_link(&parent, OsStr::new(&"n".repeat(250)), owner).is_err());
    }
}
