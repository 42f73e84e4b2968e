//! A non-root `USER` in the one-id tier: only the caller's id exists in the namespace, so the
//! step stays root and the recorder ([`super::owners`]) answers its identity calls with the
//! user it should be (`getuid` and friends), lets its `setuid` family succeed without effect,
//! and, when the step ends, records that user as the owner of every entry the step created
//! ([`own_new_entries`]), so the layer holds what Docker's would.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use umstage_oci::owner::{Owner, XATTR, link};

use crate::snapshot::MountSpec;

/// The user a step runs as in appearance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    /// Its uid.
    pub(crate) uid: u32,
    /// Its primary gid.
    pub(crate) gid: u32,
}

impl Identity {
    /// The 8 bytes pid 1 sends it as, next to the listener.
    pub(crate) fn to_bytes(self) -> [u8; 8] {
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(&self.uid.to_le_bytes());
        out[4..].copy_from_slice(&self.gid.to_le_bytes());
        out
    }

    /// Reads what [`Identity::to_bytes`] wrote.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Identity> {
        let uid = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
        let gid = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
        Some(Identity { uid, gid })
    }
}

/// The identity calls the filter sends to the supervisor when a step has an [`Identity`].
pub(crate) fn intercepted() -> [i64; 16] {
    [
        libc::SYS_getuid,
        libc::SYS_geteuid,
        libc::SYS_getgid,
        libc::SYS_getegid,
        libc::SYS_getresuid,
        libc::SYS_getresgid,
        libc::SYS_getgroups,
        libc::SYS_setuid,
        libc::SYS_setgid,
        libc::SYS_setreuid,
        libc::SYS_setregid,
        libc::SYS_setresuid,
        libc::SYS_setresgid,
        libc::SYS_setgroups,
        libc::SYS_setfsuid,
        libc::SYS_setfsgid,
    ]
}

/// What an identity call returns: the value, and ids to write at the argument pointers.
pub(crate) fn answer(nr: i64, args: [u64; 6], who: Identity) -> Option<(i64, Vec<(u64, u32)>)> {
    let (uid, gid) = (i64::from(who.uid), i64::from(who.gid));
    let three = |id: u32| (0, vec![(args[0], id), (args[1], id), (args[2], id)]);
    Some(match nr {
        libc::SYS_getuid | libc::SYS_geteuid | libc::SYS_setfsuid => (uid, Vec::new()),
        libc::SYS_getgid | libc::SYS_getegid | libc::SYS_setfsgid => (gid, Vec::new()),
        libc::SYS_getresuid => three(who.uid),
        libc::SYS_getresgid => three(who.gid),
        // No supplementary groups: setgroups is denied in a one-id namespace.
        libc::SYS_getgroups => (0, Vec::new()),
        libc::SYS_setuid
        | libc::SYS_setgid
        | libc::SYS_setreuid
        | libc::SYS_setregid
        | libc::SYS_setresuid
        | libc::SYS_setresgid
        | libc::SYS_setgroups => (0, Vec::new()),
        _ => return None,
    })
}

/// After the step: records `who` as the owner of every entry in the overlay upper directory
/// that no lower layer has (what the step created) and that has no record yet. Copied-up
/// entries keep the owner they had. The native driver has no upper directory: its new
/// entries stay root's.
pub(crate) fn own_new_entries(rootfs: &[MountSpec], who: Identity) {
    let Some(spec) = rootfs.iter().find(|s| s.fstype == "overlay") else {
        return;
    };
    let option = |key: &str| -> Vec<PathBuf> {
        spec.options
            .iter()
            .filter_map(|o| o.strip_prefix(key))
            .map(PathBuf::from)
            .collect()
    };
    let Some(upper) = option("upperdir=").into_iter().next() else {
        return;
    };
    let lowers = option("lowerdir+=");
    let owner = Owner {
        uid: who.uid,
        gid: who.gid,
    };
    walk(&upper, Path::new(""), &lowers, owner);
}

fn walk(upper: &Path, rel: &Path, lowers: &[PathBuf], owner: Owner) {
    let Ok(entries) = std::fs::read_dir(upper.join(rel)) else {
        return;
    };
    for entry in entries.flatten() {
        let rel = rel.join(entry.file_name());
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        // A whiteout (a 0:0 character device) records a removal, not an entry.
        if kind.is_char_device() {
            continue;
        }
        let in_lower = lowers
            .iter()
            .any(|l| std::fs::symlink_metadata(l.join(&rel)).is_ok());
        if !in_lower && kind.is_symlink() {
            own_new_link(&upper.join(&rel), owner);
        } else if !in_lower {
            let path = upper.join(&rel);
            let recorded = rustix::fs::lgetxattr(&path, XATTR, &mut [0u8; 32]).is_ok();
            if !recorded {
                let set = rustix::fs::lsetxattr(
                    &path,
                    XATTR,
                    &owner.encode(),
                    rustix::fs::XattrFlags::empty(),
                );
                if let Err(e) = set {
                    tracing::debug!(path = %path.display(), "recording the step's user: {e}");
                }
            }
        }
        if kind.is_dir() {
            walk(upper, &rel, lowers, owner);
        }
    }
}

/// Records `owner` for the new symlink at `path` (on its directory: `owner::link`) where it
/// has no record yet.
fn own_new_link(path: &Path, owner: Owner) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let Ok(dir) = std::fs::File::open(dir) else {
        return;
    };
    if link::link_recorded(&dir, name).is_none()
        && let Err(e) = link::record_link(&dir, name, owner)
    {
        tracing::debug!(path = %path.display(), "recording the step's user: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_calls_answer_as_the_user_and_set_calls_succeed() {
        let who = Identity {
            uid: 1000,
            gid: 1001,
        };
        assert_eq!(Identity::from_bytes(&who.to_bytes()), Some(who));
        assert_eq!(
            answer(libc::SYS_getuid, [0; 6], who),
            Some((1000, Vec::new()))
        );
        assert_eq!(
            answer(libc::SYS_getegid, [0; 6], who),
            Some((1001, Vec::new()))
        );
        let res = answer(libc::SYS_getresuid, [8, 16, 24, 0, 0, 0], who);
        assert_eq!(res, Some((0, vec![(8, 1000), (16, 1000), (24, 1000)])));
        assert_eq!(
            answer(libc::SYS_setresuid, [5, 5, 5, 0, 0, 0], who),
            Some((0, Vec::new()))
        );
        assert_eq!(answer(libc::SYS_openat, [0; 6], who), None);
        for nr in intercepted() {
            assert!(answer(nr, [0; 6], who).is_some(), "{nr}");
        }
    }
}
