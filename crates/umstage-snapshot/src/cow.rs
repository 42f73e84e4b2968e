//! Linked snapshots: a tree whose directories are fresh but whose regular files and symlinks
//! are hard links to its parent's inodes, and the copy-up that keeps the parent pristine.
//!
//! Making such a tree costs a link per entry instead of a copy of its data, and the diff takes
//! a linked entry as unchanged without reading it (an image is mostly files and symlinks; a
//! symlink made anew and diffed by content cost as much as a file's link). It is safe only
//! while nothing modifies a shared inode in place: every writer into the tree first replaces
//! a shared file by a private copy ([`copy_up`]), which the ptrace supervisor does before each
//! call that would change a file's data or metadata. Which inodes are shared is the set written
//! beside the tree while linking ([`Shared`]); an inode the step links anew is private, since
//! the supervisor copies a shared one up before it is linked.
//!
//! The parent's own hard-link groups (one inode under several names) become private copies,
//! linked as the group was: a copy-up could not find every name of a shared group.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::Metadata;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::fsutil::{self, PathError, at};

/// The file beside a linked tree `fs` that lists the inodes it shares with its parent.
fn set_path(fs: &Path) -> PathBuf {
    fs.with_file_name("shared-inodes")
}

/// Makes `dst` (absent yet) a linked tree of `src`: directories and special files made anew
/// with `src`'s metadata, regular files and symlinks hard-linked (copied where a link cannot
/// be made), and the set of shared inodes written beside it.
pub(crate) fn link_tree(src: &Path, dst: &Path) -> Result<(), PathError> {
    let meta = std::fs::symlink_metadata(src).map_err(at("stat", src))?;
    let mut linker = Linker {
        seen: HashMap::new(),
    };
    linker.entry(src, dst, &meta)?;
    let mut inos: Vec<u64> = linker
        .seen
        .into_iter()
        .filter(|(_, first)| first.shared)
        .map(|(ino, _)| ino)
        .collect();
    inos.sort_unstable();
    let mut bytes = Vec::with_capacity(8 * (inos.len() + 1));
    bytes.extend_from_slice(&meta.dev().to_le_bytes());
    for ino in inos {
        bytes.extend_from_slice(&ino.to_le_bytes());
    }
    let path = set_path(dst);
    std::fs::write(&path, bytes).map_err(at("write", &path))
}

/// Where the first name of a parent's inode went in the new tree, and whether it is still
/// the parent's inode there.
struct First {
    path: PathBuf,
    shared: bool,
}

struct Linker {
    /// The parent's regular files and symlinks by inode (all on one filesystem).
    seen: HashMap<u64, First>,
}

impl Linker {
    fn entry(&mut self, src: &Path, dst: &Path, meta: &Metadata) -> Result<(), PathError> {
        let kind = meta.file_type();
        if kind.is_dir() {
            std::fs::create_dir(dst).map_err(at("mkdir", dst))?;
            for entry in std::fs::read_dir(src).map_err(at("read dir", src))? {
                let entry = entry.map_err(at("read dir", src))?;
                let child = entry.metadata().map_err(at("stat", &entry.path()))?;
                self.entry(&entry.path(), &dst.join(entry.file_name()), &child)?;
            }
            return fsutil::copy_metadata(dst, meta, src);
        }
        if !kind.is_file() && !kind.is_symlink() {
            return fsutil::copy_entry_alone(src, dst, meta);
        }
        if let Some(first) = self.seen.get_mut(&meta.ino()) {
            // A second name of one parent inode: the group becomes private, linked as it was.
            if first.shared {
                copy_up(&first.path).map_err(at("copy up", &first.path))?;
                first.shared = false;
            }
            return std::fs::hard_link(&first.path, dst).map_err(at("link", dst));
        }
        let shared = match std::fs::hard_link(src, dst) {
            Ok(()) => true,
            // Too many links, another filesystem, a file protected_hardlinks keeps from us.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMLINK | libc::EXDEV | libc::EPERM)
                ) =>
            {
                fsutil::copy_entry_alone(src, dst, meta)?;
                false
            }
            Err(e) => return Err(at("link", dst)(e)),
        };
        self.seen.insert(
            meta.ino(),
            First {
                path: dst.to_path_buf(),
                shared,
            },
        );
        Ok(())
    }
}

/// The inodes a linked tree shares with its parent: none for any other tree.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    dev: u64,
    inos: Vec<u64>,
}

impl Shared {
    /// The set of the tree `fs` (empty when it is not a linked tree).
    pub(crate) fn of(fs: &Path) -> io::Result<Shared> {
        let bytes = match std::fs::read(set_path(fs)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Shared::default()),
            Err(e) => return Err(e),
        };
        let mut words = bytes
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]));
        let dev = words.next().unwrap_or(0);
        Ok(Shared {
            dev,
            inos: words.collect(),
        })
    }

    /// Whether the file with this (device, inode) is one the parent holds too.
    pub(crate) fn holds(&self, dev: u64, ino: u64) -> bool {
        dev == self.dev && self.inos.binary_search(&ino).is_ok()
    }

    /// Whether the tree shares nothing (it was copied, or has no parent).
    pub(crate) fn is_empty(&self) -> bool {
        self.inos.is_empty()
    }
}

/// Replaces the regular file or symlink at `path` by a private copy of it: same data, owner, mode,
/// xattrs and times, a new inode renamed over the name. The directory's times are kept, as
/// an in-place change would have kept them.
///
/// `path` is canonical, so the directory is opened with no symlink allowed and everything
/// after goes through that descriptor (and the source is opened without following): a step
/// that swaps a component for a symlink meanwhile makes the copy-up fail, never leads it
/// out of the root.
pub(crate) fn copy_up(path: &Path) -> io::Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    let pinned = umstage_oci::inroot::open_no_symlinks(
        dir,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY,
    )?;
    // Through ".": the times are set without following, which must not mean the magic link.
    let dir = &PathBuf::from(format!("/proc/self/fd/{}/.", pinned.as_raw_fd()));
    let path = &dir.join(name);
    let dir_meta = std::fs::metadata(dir)?;
    let meta = std::fs::symlink_metadata(path)?;
    let tmp = dir.join(temp_name(name));
    let made = with_writable_dir(dir, &dir_meta, || {
        fsutil::copy_entry_alone(path, &tmp, &meta)
            .map_err(|e| e.source)
            .and_then(|()| std::fs::rename(&tmp, path))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
    });
    fsutil::set_times(dir, &dir_meta)?;
    made
}

/// A name for a copy beside `name`, hidden and unique.
fn temp_name(name: &OsStr) -> PathBuf {
    let mut tmp = std::ffi::OsString::from(".umstage-cow-");
    tmp.push(fsutil::random_id());
    tmp.push("-");
    tmp.push(name);
    // Long names stay within NAME_MAX: the random part alone makes the name unique.
    if tmp.len() > 200 {
        return PathBuf::from(format!(".umstage-cow-{}", fsutil::random_id()));
    }
    PathBuf::from(tmp)
}

/// Runs `op`, which creates in `dir`; where the directory's mode denies us writing to it
/// (played root makes such directories), again with owner write added for the time of `op`.
fn with_writable_dir(
    dir: &Path,
    meta: &Metadata,
    op: impl Fn() -> io::Result<()>,
) -> io::Result<()> {
    let first = op();
    let denied = matches!(&first, Err(e) if e.raw_os_error() == Some(libc::EACCES));
    let mode = meta.mode() & 0o7777;
    if !denied || mode & 0o300 == 0o300 {
        return first;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o300))?;
    let result = op();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ino(path: &Path) -> u64 {
        std::fs::symlink_metadata(path).expect("stat").ino()
    }

    #[test]
    fn a_linked_tree_shares_files_not_dirs_and_keeps_hard_link_groups_private() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // As snapshots lie: each tree in a directory of its own, its set beside it.
        let src = tmp.path().join("parent/fs");
        std::fs::create_dir_all(src.join("d")).expect("mkdir");
        std::fs::write(src.join("d/a"), b"hello").expect("write");
        std::fs::write(src.join("g1"), b"group").expect("write");
        std::fs::hard_link(src.join("g1"), src.join("d/g2")).expect("link");
        std::os::unix::fs::symlink("d/a", src.join("s")).expect("symlink");
        std::fs::set_permissions(src.join("d"), std::fs::Permissions::from_mode(0o750))
            .expect("chmod");
        std::fs::create_dir(tmp.path().join("child")).expect("mkdir");
        let dst = tmp.path().join("child/fs");
        link_tree(&src, &dst).expect("link tree");

        assert_eq!(ino(&src.join("d/a")), ino(&dst.join("d/a")));
        assert_ne!(ino(&src.join("d")), ino(&dst.join("d")));
        assert_eq!(
            std::fs::symlink_metadata(dst.join("d"))
                .expect("stat")
                .mode()
                & 0o7777,
            0o750
        );
        assert_eq!(ino(&src.join("s")), ino(&dst.join("s")));
        assert_eq!(
            std::fs::read_link(dst.join("s")).expect("readlink"),
            Path::new("d/a")
        );
        // The group is one private inode under both names.
        assert_eq!(ino(&dst.join("g1")), ino(&dst.join("d/g2")));
        assert_ne!(ino(&dst.join("g1")), ino(&src.join("g1")));
        assert_eq!(std::fs::read(dst.join("d/g2")).expect("read"), b"group");

        let shared = Shared::of(&dst).expect("set");
        let dev = std::fs::metadata(&dst).expect("stat").dev();
        assert!(shared.holds(dev, ino(&src.join("d/a"))));
        assert!(!shared.holds(dev, ino(&dst.join("g1"))));
        assert!(!shared.holds(dev, ino(&src.join("g1"))));
        assert!(Shared::of(&src).expect("none").is_empty());
    }

    #[test]
    fn a_copy_up_leaves_the_parent_and_the_directory_times_alone() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("d")).expect("mkdir");
        std::fs::write(src.join("d/a"), b"hello").expect("write");
        std::fs::set_permissions(src.join("d/a"), std::fs::Permissions::from_mode(0o400))
            .expect("chmod");
        let dst = tmp.path().join("dst");
        link_tree(&src, &dst).expect("link tree");
        // A directory we may not write to, as played root leaves them.
        std::fs::set_permissions(dst.join("d"), std::fs::Permissions::from_mode(0o555))
            .expect("chmod");
        let before = std::fs::symlink_metadata(dst.join("d")).expect("stat");

        copy_up(&dst.join("d/a")).expect("copy up");
        let copied = std::fs::symlink_metadata(dst.join("d/a")).expect("stat");
        assert_ne!(copied.ino(), ino(&src.join("d/a")));
        assert_eq!(copied.mode() & 0o7777, 0o400);
        let original = std::fs::symlink_metadata(src.join("d/a")).expect("stat");
        assert_eq!(
            (copied.mtime(), copied.mtime_nsec()),
            (original.mtime(), original.mtime_nsec())
        );
        assert_eq!(original.nlink(), 1);
        let after = std::fs::symlink_metadata(dst.join("d")).expect("stat");
        assert_eq!(
            (after.mtime(), after.mtime_nsec(), after.mode()),
            (before.mtime(), before.mtime_nsec(), before.mode())
        );
        let names: Vec<_> = std::fs::read_dir(dst.join("d"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["a"]);
        std::fs::set_permissions(dst.join("d"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
}
