//! Carrying out a planned copy: directories made, entries created or replaced inside the
//! destination root through descriptors, hard links kept, times set last.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use umstage_oci::inroot::{Escape, Root, chmod_nofollow, fd_path, open_no_symlinks};
use umstage_oci::owner;

use super::{CopyError, Item, ItemKind, Plan, errno, io_err};

/// Creates `dir` (absolute inside `root`) and its missing parents, each new one with mode 0755
/// and the given owner; existing ones (symlinks followed inside the root) are left alone.
pub fn make_dirs(root: &Root, dir: &Path, owner: (u32, u32)) -> Result<(), CopyError> {
    make_dirs_mode(root, dir, owner, 0o755)
}

/// As [`make_dirs`], each new directory with `mode` (whatever the umask).
pub fn make_dirs_mode(
    root: &Root,
    dir: &Path,
    owner: (u32, u32),
    mode: u32,
) -> Result<(), CopyError> {
    make_dirs_noting(root, dir, owner, mode, &mut Vec::new())
}

/// As [`make_dirs_mode`], adding each directory it creates to `created`.
fn make_dirs_noting(
    root: &Root,
    dir: &Path,
    owner: (u32, u32),
    mode: u32,
    created: &mut Vec<PathBuf>,
) -> Result<(), CopyError> {
    let mut current = PathBuf::from("/");
    for component in dir.components() {
        let Component::Normal(name) = component else {
            continue;
        };
        let parent = root.resolve_dir(&current, Escape::Clamp, false)?;
        current.push(name);
        match rfs::mkdirat(&parent, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => {
                let (uid, gid) = owner;
                owner::chown_or_record(&parent, name, owner::Owner { uid, gid })
                    .map_err(io_err(&current))?;
                chmod_nofollow(&parent, name, mode).map_err(errno(&current))?;
                created.push(current.clone());
            }
            Err(rustix::io::Errno::EXIST) => {
                // A symlink (even a dangling one) is followed inside the root, and what it
                // names is created.
                let is_link = rfs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Symlink);
                if is_link {
                    root.resolve_dir(&current, Escape::Clamp, true)?;
                }
            }
            Err(e) => return Err(errno(&current)(e)),
        }
    }
    Ok(())
}

/// Creates every planned entry inside `root`, replacing files and symlinks already there.
pub fn execute(root: &Root, plan: &Plan, owner_of_new_dirs: (u32, u32)) -> Result<(), CopyError> {
    execute_with(root, plan, owner_of_new_dirs, Files::Copy)
}

/// As [`execute`], into a fresh tree nothing will ever write to (a read-only view, or the
/// lower layer of an overlay), so a regular file that would come out identical (owner, mode,
/// times: the same inode) is hard-linked instead of copied. Where a link cannot be made
/// (another filesystem, someone else's file) the file is copied.
pub fn execute_linked(
    root: &Root,
    plan: &Plan,
    owner_of_new_dirs: (u32, u32),
) -> Result<(), CopyError> {
    execute_with(root, plan, owner_of_new_dirs, Files::LinkWhenIdentical)
}

/// How [`execute_with`] makes regular files.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Files {
    Copy,
    LinkWhenIdentical,
}

fn execute_with(
    root: &Root,
    plan: &Plan,
    owner_of_new_dirs: (u32, u32),
    files: Files,
) -> Result<(), CopyError> {
    // Directories made that no source gives: their times are stamped last (see `stamp`).
    let mut made = Vec::new();
    let mut make_dirs =
        |dir: &Path| make_dirs_noting(root, dir, owner_of_new_dirs, plan.new_dirs_mode, &mut made);
    // A wildcard that matched nothing copies nothing: not even the destination is made,
    // unless the plan says BuildKit makes it.
    if plan.items.is_empty() {
        if plan.make_dest {
            make_dirs(&plan.dest_dir)?;
        }
        return stamp(root, &made, (0, 0));
    }
    make_dirs(&plan.dest_dir)?;
    let mut dirs: HashMap<PathBuf, OwnedFd> = HashMap::new();
    // Regular files the source holds more than one link to, by (device, inode): where the
    // first was made. The others are linked to it, as BuildKit's copier keeps hard links.
    let mut linked: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for item in &plan.items {
        if item.merge_only {
            make_dirs(&item.dest)?;
            continue;
        }
        let parent_path = item.dest.parent().unwrap_or(Path::new("/")).to_path_buf();
        let Some(name) = item.dest.file_name() else {
            // The destination is the root itself: only its children are copied.
            continue;
        };
        if !dirs.contains_key(&parent_path) {
            make_dirs(&parent_path)?;
            let fd = open_dir(root, &parent_path)?;
            dirs.insert(parent_path.clone(), fd);
        }
        let Some(parent) = dirs.get(&parent_path) else {
            continue;
        };
        let inode = item
            .stat
            .as_ref()
            .filter(|m| item.kind == ItemKind::File && m.nlink() > 1)
            .map(|m| (m.dev(), m.ino()));
        if let Some(first) = inode.and_then(|i| linked.get(&i))
            && link_to(&dirs, first, parent, name, item)?
        {
            continue;
        }
        if !(files == Files::LinkWhenIdentical && link_identical(parent, name, item)) {
            create(parent, name, item)?;
        }
        if let Some(inode) = inode {
            linked.entry(inode).or_insert_with(|| item.dest.clone());
        }
    }
    // Directory times last: creating their children changed them.
    for item in plan.items.iter().rev() {
        if item.kind == ItemKind::Dir && !item.merge_only {
            let parent_path = item.dest.parent().unwrap_or(Path::new("/"));
            if let (Some(parent), Some(name)) = (dirs.get(parent_path), item.dest.file_name()) {
                rfs::utimensat(
                    parent,
                    name,
                    &timestamps(item.mtime),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(errno(&item.dest))?;
            }
        }
    }
    let newest = plan.items.iter().map(|i| i.mtime).max().unwrap_or((0, 0));
    stamp(root, &made, newest)
}

/// Sets the times of the directories a copy made that no source gives (missing parents, the
/// destination of a directory's contents) to `time`, the newest of the copied entries' (the
/// Unix epoch when there are none). BuildKit stamps them with the copy's timestamp when it
/// has one (none from a Dockerfile) and leaves them the time of the copy otherwise, so that
/// rerunning a COPY gives another layer; derived from what is copied, the time is the same
/// on every run, and never later than the content it holds. `SOURCE_DATE_EPOCH` still clamps
/// it in the layer.
fn stamp(root: &Root, made: &[PathBuf], time: (i64, i64)) -> Result<(), CopyError> {
    for dir in made {
        let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
            continue;
        };
        let parent = open_dir(root, parent)?;
        rfs::utimensat(&parent, name, &timestamps(time), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(errno(dir))?;
    }
    Ok(())
}

fn timestamps((sec, nsec): (i64, i64)) -> Timestamps {
    let t = Timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Opens a directory inside the root for `*at` calls, following symlinks inside the root.
fn open_dir(root: &Root, path: &Path) -> Result<OwnedFd, CopyError> {
    let fd = root.resolve_dir(path, Escape::Clamp, false)?;
    rfs::openat(
        &fd,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno(path))
}

/// Makes `name` in `parent` a hard link to `first` (a file this copy made, whose directory is
/// open in `dirs`), replacing a file or symlink there. False when no link could be made (then
/// the file is copied).
fn link_to(
    dirs: &HashMap<PathBuf, OwnedFd>,
    first: &Path,
    parent: &OwnedFd,
    name: &OsStr,
    item: &Item,
) -> Result<bool, CopyError> {
    let (Some(first_dir), Some(first_name)) =
        (first.parent().and_then(|p| dirs.get(p)), first.file_name())
    else {
        return Ok(false);
    };
    let existing = rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
        .ok()
        .map(|s| FileType::from_raw_mode(s.st_mode));
    remove_non_dir(parent, name, existing, item)?;
    Ok(rfs::linkat(first_dir, first_name, parent, name, AtFlags::empty()).is_ok())
}

/// Hard-links a planned regular file when the link would be what a copy makes: same owner and
/// mode as planned, into an empty place. False when it cannot be linked (then it is copied).
fn link_identical(parent: &OwnedFd, name: &OsStr, item: &Item) -> bool {
    if item.kind != ItemKind::File {
        return false;
    }
    let Ok(source) = open_no_symlinks(&item.src, OFlags::PATH | OFlags::NOFOLLOW) else {
        return false;
    };
    let identical = rfs::fstat(&source).is_ok_and(|st| {
        FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
            && st.st_uid == item.uid
            && st.st_gid == item.gid
            && st.st_mode & 0o7777 == item.mode
    });
    // Through the descriptor's /proc path: linkat(AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH.
    identical
        && rfs::linkat(
            rfs::CWD,
            fd_path(&source),
            parent,
            name,
            AtFlags::SYMLINK_FOLLOW,
        )
        .is_ok()
}

fn create(parent: &OwnedFd, name: &OsStr, item: &Item) -> Result<(), CopyError> {
    let path = item.dest.as_path();
    let existing = rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
        .ok()
        .map(|s| FileType::from_raw_mode(s.st_mode));
    let times = timestamps(item.mtime);
    match &item.kind {
        ItemKind::Dir => {
            match existing {
                Some(FileType::Directory) => {}
                Some(_) => {
                    rfs::unlinkat(parent, name, AtFlags::empty()).map_err(errno(path))?;
                    rfs::mkdirat(parent, name, Mode::from_raw_mode(0o700)).map_err(errno(path))?;
                }
                None => {
                    rfs::mkdirat(parent, name, Mode::from_raw_mode(0o700)).map_err(errno(path))?;
                }
            }
            set_owner_mode(parent, name, item)?;
        }
        ItemKind::File | ItemKind::Inline(_) => {
            if let Some(t) = existing {
                if t == FileType::Directory {
                    rfs::unlinkat(parent, name, AtFlags::REMOVEDIR).map_err(|_| {
                        CopyError::FileOverDir {
                            src: item.src_rel.display().to_string(),
                            dest: path.display().to_string(),
                        }
                    })?;
                } else {
                    // Replaced, never written in place, as BuildKit's copier does: in a
                    // linked snapshot (the ptrace tier) the inode may be the parent's too.
                    rfs::unlinkat(parent, name, AtFlags::empty()).map_err(errno(path))?;
                }
            }
            let fd = rfs::openat(
                parent,
                name,
                OFlags::WRONLY
                    | OFlags::CREATE
                    | OFlags::TRUNC
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(errno(path))?;
            let mut out = fs::File::from(fd);
            match &item.kind {
                ItemKind::Inline(data) => {
                    io::Write::write_all(&mut out, data).map_err(io_err(path))?
                }
                _ => {
                    let mut input = open_source(&item.src).map_err(io_err(&item.src_rel))?;
                    io::copy(&mut input, &mut out).map_err(io_err(path))?;
                }
            }
            set_owner(parent, name, item)?;
            // After chown, which clears set-id bits.
            rfs::fchmod(&out, Mode::from_raw_mode(item.mode)).map_err(errno(path))?;
            rfs::futimens(&out, &times).map_err(errno(path))?;
        }
        ItemKind::Symlink(target) => {
            remove_non_dir(parent, name, existing, item)?;
            rfs::symlinkat(target.as_os_str(), parent, name).map_err(errno(path))?;
            // A symlink has no mode of its own: only its owner is set.
            set_owner(parent, name, item)?;
            rfs::utimensat(parent, name, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(errno(path))?;
        }
        ItemKind::Device(device) => {
            remove_non_dir(parent, name, existing, item)?;
            umstage_oci::device::mknod_or_record(parent, name, *device, 0o600)
                .map_err(io_err(path))?;
            set_owner_mode(parent, name, item)?;
            rfs::utimensat(parent, name, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(errno(path))?;
        }
        ItemKind::Fifo => {
            remove_non_dir(parent, name, existing, item)?;
            rfs::mknodat(parent, name, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
                .map_err(errno(path))?;
            set_owner_mode(parent, name, item)?;
            rfs::utimensat(parent, name, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(errno(path))?;
        }
    }
    Ok(())
}

fn remove_non_dir(
    parent: &OwnedFd,
    name: &OsStr,
    existing: Option<FileType>,
    item: &Item,
) -> Result<(), CopyError> {
    match existing {
        None => Ok(()),
        Some(FileType::Directory) => {
            rfs::unlinkat(parent, name, AtFlags::REMOVEDIR).map_err(|_| CopyError::FileOverDir {
                src: item.src_rel.display().to_string(),
                dest: item.dest.display().to_string(),
            })
        }
        Some(_) => rfs::unlinkat(parent, name, AtFlags::empty()).map_err(errno(&item.dest)),
    }
}

/// Sets the owner, or records it where the namespace maps one id ([`owner::chown_or_record`]).
fn set_owner(parent: &OwnedFd, name: &OsStr, item: &Item) -> Result<(), CopyError> {
    let owner = owner::Owner {
        uid: item.uid,
        gid: item.gid,
    };
    owner::chown_or_record(parent, name, owner).map_err(io_err(&item.dest))
}

fn set_owner_mode(parent: &OwnedFd, name: &OsStr, item: &Item) -> Result<(), CopyError> {
    set_owner(parent, name, item)?;
    chmod_nofollow(parent, name, item.mode).map_err(errno(&item.dest))
}

/// Opens a source file that the plan saw as a regular file, never through a symlink put in its
/// place, or in the place of a directory above it, since, nor blocking on a FIFO put there.
pub(crate) fn open_source(path: &Path) -> io::Result<fs::File> {
    owner::lending_read(rustix::fs::CWD, path, || {
        let fd = open_no_symlinks(path, OFlags::RDONLY | OFlags::NONBLOCK)?;
        umstage_oci::regular::checked(fd)
    })
}

/// Whether `path` (absolute inside `root`) is an existing directory, symlinks followed inside
/// the root.
pub fn is_dir_in(root: &Root, path: &Path) -> bool {
    root.resolve_dir(path, Escape::Clamp, false).is_ok()
}
