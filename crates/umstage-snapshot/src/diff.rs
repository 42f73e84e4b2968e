//! What a step changed: walking an overlay upper dir, or comparing two whole trees.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use umstage_oci::changes::{Change, ChangeKind};
use umstage_oci::owner::link;

use crate::fsutil::{self, PathError, at};

fn push(out: &mut Vec<Change>, path: &Path, kind: ChangeKind) {
    out.push(Change {
        path: path.to_path_buf(),
        kind,
    });
}

/// The changes recorded in an overlay upper dir over `lowers` (top first).
///
/// Costs O(entries in the upper dir): whiteouts become deletions, opaque directories
/// `OpaqueDir` plus an upsert of the directory and everything under it; a directory that
/// overlay copied up only to reach a changed child is left out when its own metadata equals
/// the lower one's.
pub fn overlay_changes(upper: &Path, lowers: &[PathBuf]) -> Result<Vec<Change>, PathError> {
    let mut out = Vec::new();
    walk_upper(upper, lowers, Path::new(""), false, &mut out)?;
    Ok(out)
}

fn walk_upper(
    upper: &Path,
    lowers: &[PathBuf],
    rel: &Path,
    fresh: bool,
    out: &mut Vec<Change>,
) -> Result<(), PathError> {
    let dir = upper.join(rel);
    for entry in std::fs::read_dir(&dir).map_err(at("read dir", &dir))? {
        let entry = entry.map_err(at("read dir", &dir))?;
        let path = rel.join(entry.file_name());
        let full = entry.path();
        let meta = std::fs::symlink_metadata(&full).map_err(at("stat", &full))?;
        if fsutil::is_whiteout(&meta) {
            push(out, &path, ChangeKind::Delete);
            continue;
        }
        if !meta.is_dir() {
            push(out, &path, ChangeKind::Upsert);
            continue;
        }
        if fsutil::is_opaque_dir(&full) {
            push(out, &path, ChangeKind::OpaqueDir);
            push(out, &path, ChangeKind::Upsert);
            walk_upper(upper, lowers, &path, true, out)?;
            continue;
        }
        let lower = if fresh {
            None
        } else {
            lookup_overlay(lowers, &path)
        };
        match lower {
            Some(lower) if lower.meta.is_dir() => {
                if !same_metadata(&meta, &full, &lower.meta, &lower.path)? {
                    push(out, &path, ChangeKind::Upsert);
                }
                walk_upper(upper, lowers, &path, false, out)?;
            }
            _ => {
                push(out, &path, ChangeKind::Upsert);
                walk_upper(upper, lowers, &path, true, out)?;
            }
        }
    }
    Ok(())
}

/// A path found in a lower layer.
pub(crate) struct Found {
    pub(crate) path: PathBuf,
    pub(crate) meta: Metadata,
}

/// Looks a path up through overlay layers (top first) as overlayfs would: a whiteout or a
/// non-directory on the way hides what is below, and so does an opaque directory.
pub(crate) fn lookup_overlay(lowers: &[PathBuf], rel: &Path) -> Option<Found> {
    let components: Vec<_> = rel.components().collect();
    for lower in lowers {
        let mut current = lower.clone();
        let mut opaque_above = false;
        for (index, component) in components.iter().enumerate() {
            current.push(component);
            let Ok(meta) = std::fs::symlink_metadata(&current) else {
                break;
            };
            if fsutil::is_whiteout(&meta) {
                return None;
            }
            if index + 1 == components.len() {
                return Some(Found {
                    path: current,
                    meta,
                });
            }
            if !meta.is_dir() {
                return None;
            }
            if fsutil::is_opaque_dir(&current) {
                opaque_above = true;
            }
        }
        if opaque_above {
            return None;
        }
    }
    None
}

/// Whether two directories hold entries of the same names.
pub(crate) fn same_children(a: &Path, b: &Path) -> bool {
    let names = |dir: &Path| -> Option<Vec<OsString>> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        Some(names)
    };
    matches!((names(a), names(b)), (Some(x), Some(y)) if x == y)
}

/// Whether two entries have the same type, mode, owner, times, size, link target and xattrs.
fn same_metadata(
    a: &Metadata,
    a_path: &Path,
    b: &Metadata,
    b_path: &Path,
) -> Result<bool, PathError> {
    let same = a.mode() == b.mode()
        && a.uid() == b.uid()
        && a.gid() == b.gid()
        && a.mtime() == b.mtime()
        && a.mtime_nsec() == b.mtime_nsec()
        && (a.is_dir() || a.size() == b.size())
        && a.rdev() == b.rdev();
    if !same {
        return Ok(false);
    }
    if a.file_type().is_symlink()
        && std::fs::read_link(a_path).map_err(at("read link", a_path))?
            != std::fs::read_link(b_path).map_err(at("read link", b_path))?
    {
        return Ok(false);
    }
    // A directory's records of its symlinks' owners are their metadata, not its own.
    let own = |path: &Path| -> Result<Vec<_>, PathError> {
        let mut all = fsutil::xattrs(path).map_err(at("read xattrs", path))?;
        all.retain(|(name, _)| !link::is_link_record(name.as_bytes()));
        Ok(all)
    };
    Ok(own(a_path)? == own(b_path)?)
}

/// The names of the symlinks in directory `after` whose recorded owner
/// (`umstage_oci::owner::link`) differs from the one `before` records.
fn relinked(before: &Path, after: &Path) -> Result<BTreeSet<OsString>, PathError> {
    let records = |dir: &Path| -> Result<BTreeMap<OsString, Vec<u8>>, PathError> {
        let all = match fsutil::xattrs(dir) {
            Ok(all) => all,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(at("read xattrs", dir)(e)),
        };
        Ok(all
            .into_iter()
            .filter_map(|(name, value)| {
                let link = name.as_bytes().strip_prefix(link::PREFIX.as_bytes())?;
                Some((OsStr::from_bytes(link).to_owned(), value))
            })
            .collect())
    };
    let (old, new) = (records(before)?, records(after)?);
    Ok(old
        .keys()
        .chain(new.keys())
        .filter(|name| old.get(*name) != new.get(*name))
        .cloned()
        .collect())
}

/// The changes from the tree `before` to the tree `after` (the native driver's diff).
///
/// An entry that is the same inode in both is unchanged (a linked snapshot's file; see
/// `crate::cow`). Others are compared by metadata (type, mode, owner, size, mtime, xattrs,
/// link target); file content is read only when the metadata cannot tell (equal, with a
/// whole-second mtime that a coarse filesystem may have truncated).
pub fn tree_changes(before: &Path, after: &Path) -> Result<Vec<Change>, PathError> {
    let mut out = Vec::new();
    compare_dirs(before, after, Path::new(""), &mut out)?;
    Ok(out)
}

fn entries(dir: &Path) -> Result<BTreeMap<OsString, Metadata>, PathError> {
    let mut map = BTreeMap::new();
    let iter = match std::fs::read_dir(dir) {
        Ok(iter) => iter,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(map),
        Err(e) => return Err(at("read dir", dir)(e)),
    };
    for entry in iter {
        let entry = entry.map_err(at("read dir", dir))?;
        let meta = std::fs::symlink_metadata(entry.path()).map_err(at("stat", &entry.path()))?;
        map.insert(entry.file_name(), meta);
    }
    Ok(map)
}

fn compare_dirs(
    before: &Path,
    after: &Path,
    rel: &Path,
    out: &mut Vec<Change>,
) -> Result<(), PathError> {
    let old = entries(&before.join(rel))?;
    let new = entries(&after.join(rel))?;
    let relinked = relinked(&before.join(rel), &after.join(rel))?;
    for name in old.keys().filter(|name| !new.contains_key(*name)) {
        push(out, &rel.join(name), ChangeKind::Delete);
    }
    for (name, meta) in &new {
        let path = rel.join(name);
        let after_path = after.join(&path);
        let before_path = before.join(&path);
        match old.get(name) {
            Some(previous) if previous.file_type() == meta.file_type() => {
                if meta.is_dir() {
                    if !same_metadata(meta, &after_path, previous, &before_path)? {
                        push(out, &path, ChangeKind::Upsert);
                    }
                    compare_dirs(before, after, &path, out)?;
                } else if (meta.is_symlink() && relinked.contains(name))
                    // The parent's own inode (a linked snapshot) is as it was: nothing
                    // changes one in place.
                    || ((meta.dev(), meta.ino()) != (previous.dev(), previous.ino())
                        && file_changed(meta, &after_path, previous, &before_path)?)
                {
                    push(out, &path, ChangeKind::Upsert);
                }
            }
            _ => {
                push(out, &path, ChangeKind::Upsert);
                if meta.is_dir() {
                    add_all(after, &path, out)?;
                }
            }
        }
    }
    Ok(())
}

fn add_all(root: &Path, rel: &Path, out: &mut Vec<Change>) -> Result<(), PathError> {
    let dir = root.join(rel);
    for entry in std::fs::read_dir(&dir).map_err(at("read dir", &dir))? {
        let entry = entry.map_err(at("read dir", &dir))?;
        let path = rel.join(entry.file_name());
        push(out, &path, ChangeKind::Upsert);
        if entry
            .file_type()
            .map_err(at("stat", &entry.path()))?
            .is_dir()
        {
            add_all(root, &path, out)?;
        }
    }
    Ok(())
}

fn file_changed(
    a: &Metadata,
    a_path: &Path,
    b: &Metadata,
    b_path: &Path,
) -> Result<bool, PathError> {
    if !same_metadata(a, a_path, b, b_path)? {
        return Ok(true);
    }
    let ambiguous = a.is_file() && a.mtime_nsec() == 0 && a.size() > 0;
    if !ambiguous {
        return Ok(false);
    }
    Ok(!same_content(a_path, b_path)?)
}

fn same_content(a: &Path, b: &Path) -> Result<bool, PathError> {
    let open = |p: &Path| {
        umstage_oci::owner::lending_read(rustix::fs::CWD, p, || std::fs::File::open(p))
            .map_err(at("open", p))
    };
    let mut fa = open(a)?;
    let mut fb = open(b)?;
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(at("read", a))?;
        let nb = read_full(&mut fb, &mut bb).map_err(at("read", b))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sorted(mut changes: Vec<Change>) -> Vec<(String, ChangeKind)> {
        changes.sort_by(|a, b| a.path.cmp(&b.path));
        changes
            .into_iter()
            .map(|c| (c.path.display().to_string(), c.kind))
            .collect()
    }

    #[test]
    fn tree_changes_sees_create_modify_delete_chmod_and_new_dirs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let before = tmp.path().join("before");
        std::fs::create_dir_all(before.join("etc")).expect("mkdir");
        std::fs::write(before.join("etc/keep"), b"same").expect("write");
        std::fs::write(before.join("etc/edit"), b"old").expect("write");
        std::fs::write(before.join("gone"), b"x").expect("write");
        std::fs::write(before.join("mode"), b"x").expect("write");
        let after = tmp.path().join("after");
        crate::fsutil::copy_tree(&before, &after).expect("copy");
        std::fs::write(after.join("etc/edit"), b"new content").expect("write");
        std::fs::remove_file(after.join("gone")).expect("rm");
        std::fs::set_permissions(after.join("mode"), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        std::fs::create_dir_all(after.join("new/sub")).expect("mkdir");
        std::fs::write(after.join("new/sub/f"), b"f").expect("write");
        let etc_times = std::fs::metadata(before.join("etc")).expect("stat");
        crate::fsutil::set_times(&after.join("etc"), &etc_times).expect("times");
        let root_times = std::fs::metadata(&before).expect("stat");
        crate::fsutil::set_times(&after, &root_times).expect("times");
        assert_eq!(
            sorted(tree_changes(&before, &after).expect("diff")),
            vec![
                ("etc/edit".to_string(), ChangeKind::Upsert),
                ("gone".to_string(), ChangeKind::Delete),
                ("mode".to_string(), ChangeKind::Upsert),
                ("new".to_string(), ChangeKind::Upsert),
                ("new/sub".to_string(), ChangeKind::Upsert),
                ("new/sub/f".to_string(), ChangeKind::Upsert),
            ]
        );
    }

    #[test]
    fn a_linked_tree_diffs_by_inode_and_sees_copied_up_changes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let before = tmp.path().join("before");
        std::fs::create_dir_all(before.join("etc")).expect("mkdir");
        for name in ["keep", "edit", "touch", "gone", "moved"] {
            std::fs::write(before.join("etc").join(name), b"same").expect("write");
        }
        let after = tmp.path().join("after");
        crate::cow::link_tree(&before, &after).expect("link");
        let edit = after.join("etc/edit");
        crate::cow::copy_up(&edit).expect("copy up");
        std::fs::write(&edit, b"new").expect("write");
        // Copied up and left as it was: metadata and content equal, so unchanged.
        crate::cow::copy_up(&after.join("etc/touch")).expect("copy up");
        std::fs::remove_file(after.join("etc/gone")).expect("rm");
        std::fs::rename(after.join("etc/moved"), after.join("etc/there")).expect("mv");
        let etc_times = std::fs::metadata(before.join("etc")).expect("stat");
        crate::fsutil::set_times(&after.join("etc"), &etc_times).expect("times");
        let root_times = std::fs::metadata(&before).expect("stat");
        crate::fsutil::set_times(&after, &root_times).expect("times");
        assert_eq!(
            sorted(tree_changes(&before, &after).expect("diff")),
            vec![
                ("etc/edit".to_string(), ChangeKind::Upsert),
                ("etc/gone".to_string(), ChangeKind::Delete),
                ("etc/moved".to_string(), ChangeKind::Delete),
                ("etc/there".to_string(), ChangeKind::Upsert),
            ]
        );
        assert_eq!(
            std::fs::read(before.join("etc/edit")).expect("read"),
            b"same"
        );
    }

    #[test]
    fn a_symlinks_recorded_owner_changes_the_link_not_its_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let before = tmp.path().join("before");
        std::fs::create_dir_all(before.join("d")).expect("mkdir");
        std::os::unix::fs::symlink("t", before.join("d/l")).expect("symlink");
        std::os::unix::fs::symlink("t", before.join("d/other")).expect("symlink");
        let after = tmp.path().join("after");
        crate::fsutil::copy_tree(&before, &after).expect("copy");
        let dir = std::fs::File::open(after.join("d")).expect("open");
        let owner = umstage_oci::owner::Owner { uid: 9, gid: 8 };
        link::record_link(&dir, OsStr::new("l"), owner).expect("record");
        let times = std::fs::metadata(before.join("d")).expect("stat");
        crate::fsutil::set_times(&after.join("d"), &times).expect("times");
        assert_eq!(
            sorted(tree_changes(&before, &after).expect("diff")),
            vec![("d/l".to_string(), ChangeKind::Upsert)]
        );
    }

    #[test]
    fn equal_metadata_with_whole_second_mtime_compares_content() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        std::fs::write(&a, b"abc").expect("write");
        std::fs::write(&b, b"abd").expect("write");
        let mut meta_source = tmp.path().join("a");
        meta_source.set_extension("");
        for path in [&a, &b] {
            let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("c");
            let times = [
                libc::timespec {
                    tv_sec: 1_000_000,
                    tv_nsec: 0,
                },
                libc::timespec {
                    tv_sec: 1_000_000,
                    tv_nsec: 0,
                },
            ];
            // SAFETY: valid path and two timespecs.
            assert_eq!(
                unsafe { libc::utimensat(libc::AT_FDCWD, cpath.as_ptr(), times.as_ptr(), 0) },
                0
            );
        }
        let ma = std::fs::symlink_metadata(&a).expect("stat");
        let mb = std::fs::symlink_metadata(&b).expect("stat");
        assert!(file_changed(&ma, &a, &mb, &b).expect("compare"));
        std::fs::write(&b, b"abc").expect("write");
        let cpath = std::ffi::CString::new(b.as_os_str().as_encoded_bytes()).expect("c");
        let times = [
            libc::timespec {
                tv_sec: 1_000_000,
                tv_nsec: 0,
            },
            libc::timespec {
                tv_sec: 1_000_000,
                tv_nsec: 0,
            },
        ];
        // SAFETY: valid path and two timespecs.
        assert_eq!(
            unsafe { libc::utimensat(libc::AT_FDCWD, cpath.as_ptr(), times.as_ptr(), 0) },
            0
        );
        let mb = std::fs::symlink_metadata(&b).expect("stat");
        assert!(!file_changed(&ma, &a, &mb, &b).expect("compare"));
    }
}
