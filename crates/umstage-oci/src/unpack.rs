//! The layer unpacker: applies a layer tar onto a directory, either plainly (whiteouts delete) or
//! overlay-natively (whiteouts become overlay whiteouts, so the directory can be a lower dir).
//! Every path is resolved inside the target root; hostile entries are refused.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};

use crate::compress::decompress;
use crate::digest::Digest;
use crate::inroot::{Escape, InRootError, Resolved, Root, chmod_nofollow};
use crate::layer::{OPAQUE_MARKER, WHITEOUT_PREFIX};
use crate::store::{ContentStore, StoreError};
use crate::tarball::{EntryKind, Header, TarError, TarReader};

/// How whiteouts are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnpackMode {
    /// Whiteouts delete what they name; opaque markers empty their directory.
    Plain,
    /// Whiteouts become 0:0 character devices and opaque directories get the overlay opaque
    /// xattr, so the result can serve as an overlayfs lower directory.
    Overlay {
        /// `true` for `user.overlay.opaque` (mounts with `userxattr`, as in a user namespace),
        /// `false` for `trusted.overlay.opaque`.
        userxattr: bool,
    },
    /// An ordinary archive (ADD): `.wh.` names are plain files, nothing is deleted.
    Extract,
}

/// One contiguous range of a uid or gid map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// First id inside the image.
    pub container: u32,
    /// The id it becomes on disk.
    pub host: u32,
    /// Number of ids in the range.
    pub size: u32,
}

/// How image uids and gids become owners on disk.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdMap {
    /// uid ranges; empty means identity.
    pub uids: Vec<IdRange>,
    /// gid ranges; empty means identity.
    pub gids: Vec<IdRange>,
}

fn map_id(ranges: &[IdRange], id: u64) -> Option<u32> {
    // 4294967295 is -1 to the kernel ("leave as it is"): no file can be given it.
    let id = u32::try_from(id).ok().filter(|id| *id != u32::MAX)?;
    if ranges.is_empty() {
        return Some(id);
    }
    ranges
        .iter()
        .find(|r| id >= r.container && id - r.container < r.size)
        .map(|r| r.host + (id - r.container))
}

/// How to unpack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackOptions {
    /// Plain or overlay-native.
    pub mode: UnpackMode,
    /// Owner mapping.
    pub ids: IdMap,
    /// One owner (uid, gid) for every entry instead of the archive's (`ADD --chown`).
    pub owner: Option<(u32, u32)>,
    /// Turn failures to set owners or privileged xattrs into warnings (rootless without a
    /// subordinate id range).
    pub ignore_chown_errors: bool,
    /// Where an owner cannot be set, record it in the `user.rootlesscontainers` xattr
    /// ([`crate::owner`]) instead of warning: a single-id user namespace keeps the image's
    /// owners for the steps' `stat` and for the layers written from the tree.
    pub record_owners: bool,
    /// Largest regular file accepted.
    pub max_file_size: u64,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self {
            mode: UnpackMode::Plain,
            ids: IdMap::default(),
            owner: None,
            ignore_chown_errors: false,
            record_owners: false,
            max_file_size: 1 << 40,
        }
    }
}

/// What an unpack did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackReport {
    /// Entries applied.
    pub entries: u64,
    /// Things skipped (device nodes without permission, unsettable owners or xattrs).
    pub warnings: Vec<String>,
    /// Overlay mode: whiteouts and opaque markers under a path that is not a directory of this
    /// layer (it is a lower layer's directory or symlink, or nothing). Only the merged view can
    /// say what they name: apply them there with [`apply_deferred`]. A directory made up for
    /// them would instead hide a lower symlink, and a whiteout device in it would show in
    /// listings as a name that cannot be opened.
    pub deferred: Vec<Deferred>,
}

/// A whiteout or an opaque marker that an overlay-native unpack leaves to the merged view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deferred {
    /// Remove what this path names.
    Whiteout(PathBuf),
    /// Hide what lower layers hold in this directory.
    Opaque(PathBuf),
}

/// Whether resolving failed only because the path's parent is not (yet) a directory here.
fn not_here(e: &InRootError) -> bool {
    e.is_not_found() || matches!(e, InRootError::NotADirectory { .. })
}

/// Unpacking a layer failed; nothing outside the target was touched.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The tar stream is malformed.
    #[error(transparent)]
    Tar(#[from] TarError),
    /// An entry's path or link is refused.
    #[error("refused entry {path:?}: {reason}")]
    Refused {
        /// The entry.
        path: String,
        /// Why.
        reason: String,
    },
    /// An entry's path resolves outside the target.
    #[error("refused entry: {0}")]
    Resolve(#[from] InRootError),
    /// A file operation failed.
    #[error("unpacking {path:?} into {target}: {source}")]
    Io {
        /// The entry.
        path: String,
        /// The target directory.
        target: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The layer blob could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Errors while unpacking one layer of an image.
    #[error("layer {digest}: {source}")]
    Layer {
        /// The layer.
        digest: Digest,
        /// What went wrong.
        source: Box<UnpackError>,
    },
}

fn refused(path: &[u8], reason: impl Into<String>) -> UnpackError {
    UnpackError::Refused {
        path: String::from_utf8_lossy(path).into_owned(),
        reason: reason.into(),
    }
}

/// Normalises an archive path to a relative one, refusing absolute paths and `..`.
fn clean_path(raw: &[u8]) -> Result<PathBuf, UnpackError> {
    if raw.starts_with(b"/") {
        return Err(refused(raw, "absolute path"));
    }
    if raw.contains(&0) {
        return Err(refused(raw, "NUL byte in path"));
    }
    let mut out = PathBuf::new();
    for component in Path::new(OsStr::from_bytes(raw)).components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => return Err(refused(raw, "'..' component")),
            Component::RootDir | Component::Prefix(_) => return Err(refused(raw, "absolute path")),
        }
    }
    Ok(out)
}

struct Unpacker<'a> {
    root: Root,
    options: &'a UnpackOptions,
    report: UnpackReport,
    created: HashSet<PathBuf>,
    /// Directories' modes and times, applied last: a read-only directory must still take its
    /// children, and creating them changes its time.
    dirs: Vec<(PathBuf, u32, i64)>,
    buffer: Vec<u8>,
}

fn is_overlay_internal(name: &str) -> bool {
    name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.")
}

impl Unpacker<'_> {
    fn io(&self, path: &Path) -> impl FnOnce(io::Error) -> UnpackError + use<> {
        let path = path.to_string_lossy().into_owned();
        let target = self.root.path().to_owned();
        move |source| UnpackError::Io {
            path,
            target,
            source,
        }
    }

    fn errno(&self, path: &Path) -> impl FnOnce(rustix::io::Errno) -> UnpackError + use<> {
        let f = self.io(path);
        move |e| f(e.into())
    }

    /// Records what could not be applied; the caller decides what the user is told.
    fn warn(&mut self, message: String) {
        tracing::debug!("{message}");
        self.report.warnings.push(message);
    }

    /// What a path leading out of the root does: a layer doing so is hostile and refused; an
    /// ordinary archive (ADD) is resolved as if the target were its root, as BuildKit extracts
    /// one (a link to `..` stays at the target).
    fn escape(&self) -> Escape {
        if self.options.mode == UnpackMode::Extract {
            Escape::Clamp
        } else {
            Escape::Refuse
        }
    }

    fn apply<R: Read>(
        &mut self,
        tar: &mut TarReader<R>,
        header: Header,
    ) -> Result<(), UnpackError> {
        let path = clean_path(&header.path)?;
        let Some(name) = path.file_name().map(OsStr::to_owned) else {
            return Ok(()); // the root itself: its metadata belongs to whoever made the target
        };
        let name_bytes = name.as_bytes();
        let whiteouts = self.options.mode != UnpackMode::Extract;
        if whiteouts && name_bytes == OPAQUE_MARKER.as_bytes() {
            let dir = path.parent().unwrap_or(Path::new(""));
            return self.opaque(dir);
        }
        if let Some(hidden) = name_bytes
            .strip_prefix(WHITEOUT_PREFIX.as_bytes())
            .filter(|_| whiteouts)
        {
            if hidden.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                return Ok(()); // other `.wh..wh.` metadata (aufs): nothing to apply
            }
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(refused(&header.path, "whiteout names no file"));
            }
            return self.whiteout(&path.with_file_name(OsStr::from_bytes(hidden)));
        }
        let resolved = self.root.resolve_parent(&path, self.escape(), true)?;
        let existing = rfs::statat(&resolved.parent, &name, AtFlags::SYMLINK_NOFOLLOW).ok();
        let existing_dir = existing
            .as_ref()
            .is_some_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory);
        if existing.is_some() && !(header.kind == EntryKind::Dir && existing_dir) {
            remove_all(&resolved.parent, &name).map_err(self.errno(&path))?;
        }
        let err = self.errno(&path);
        match header.kind {
            EntryKind::Dir => {
                if !existing_dir {
                    rfs::mkdirat(&resolved.parent, &name, Mode::from_raw_mode(0o700))
                        .map_err(err)?;
                }
                self.dirs
                    .push((path.clone(), header.mode & 0o7777, header.mtime));
            }
            EntryKind::File => {
                if header.size > self.options.max_file_size {
                    return Err(refused(
                        &header.path,
                        format!("file of {} bytes exceeds the limit", header.size),
                    ));
                }
                let fd = rfs::openat(
                    &resolved.parent,
                    &name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(err)?;
                let mut file = std::fs::File::from(fd);
                let mut content = tar.content();
                loop {
                    let n = content.read(&mut self.buffer).map_err(self.io(&path))?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&self.buffer[..n]).map_err(self.io(&path))?;
                }
            }
            EntryKind::Symlink => {
                if header.link.contains(&0) {
                    return Err(refused(&header.path, "NUL byte in symlink target"));
                }
                rfs::symlinkat(OsStr::from_bytes(&header.link), &resolved.parent, &name)
                    .map_err(err)?;
            }
            EntryKind::Hardlink => {
                let source = clean_path(&header.link)?;
                if source.as_os_str().is_empty() {
                    return Err(refused(&header.path, "hard link to the root"));
                }
                let from = self.root.resolve_parent(&source, self.escape(), false)?;
                rfs::linkat(
                    &from.parent,
                    &from.name,
                    &resolved.parent,
                    &name,
                    AtFlags::empty(),
                )
                .map_err(err)?;
                self.created.insert(path);
                return Ok(());
            }
            EntryKind::Char | EntryKind::Block | EntryKind::Fifo => {
                let file_type = match header.kind {
                    EntryKind::Char => FileType::CharacterDevice,
                    EntryKind::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let dev = rfs::makedev(header.dev_major, header.dev_minor);
                match rfs::mknodat(
                    &resolved.parent,
                    &name,
                    file_type,
                    Mode::from_raw_mode(0o600),
                    dev,
                ) {
                    Ok(()) => {}
                    // Where owners are recorded, devices are too ([`crate::device`]).
                    Err(rustix::io::Errno::PERM)
                        if header.kind != EntryKind::Fifo && self.options.record_owners =>
                    {
                        let device = crate::device::Device {
                            block: header.kind == EntryKind::Block,
                            major: header.dev_major,
                            minor: header.dev_minor,
                        };
                        crate::device::make_placeholder(&resolved.parent, &name, device, 0o600)
                            .map_err(self.io(&path))?;
                    }
                    Err(rustix::io::Errno::PERM | rustix::io::Errno::ACCESS)
                        if header.kind != EntryKind::Fifo =>
                    {
                        self.warn(format!(
                            "skipped device node {} ({}:{}): not permitted here",
                            path.display(),
                            header.dev_major,
                            header.dev_minor
                        ));
                        return Ok(());
                    }
                    Err(e) => return Err(err(e)),
                }
            }
        }
        self.set_metadata(&path, &resolved, &header)?;
        self.created.insert(path);
        Ok(())
    }

    fn set_metadata(
        &mut self,
        path: &Path,
        at: &Resolved,
        header: &Header,
    ) -> Result<(), UnpackError> {
        let (uid, gid) = match self.options.owner {
            Some((uid, gid)) => (
                Some(uid).filter(|id| *id != u32::MAX),
                Some(gid).filter(|id| *id != u32::MAX),
            ),
            None => (
                map_id(&self.options.ids.uids, header.uid),
                map_id(&self.options.ids.gids, header.gid),
            ),
        };
        let chown = match (uid, gid) {
            // Where root is played nothing is chowned: root's files are the process's own, and
            // every other owner is recorded.
            (Some(0), Some(0)) if crate::owner::root_played() => Ok(()),
            (Some(_), Some(_)) if crate::owner::root_played() => {
                Err(io::Error::from(rustix::io::Errno::PERM))
            }
            (Some(uid), Some(gid)) => rfs::chownat(
                &at.parent,
                &at.name,
                Some(rfs::Uid::from_raw(uid)),
                Some(rfs::Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(io::Error::from),
            _ => Err(io::Error::other(format!(
                "owner {}:{} is outside the id map",
                header.uid, header.gid
            ))),
        };
        let mut record = None;
        if let Err(e) = chown {
            if self.options.record_owners && self.options.owner.is_none() {
                record = u32::try_from(header.uid)
                    .ok()
                    .zip(u32::try_from(header.gid).ok())
                    .map(|(uid, gid)| crate::owner::Owner { uid, gid });
            }
            if !self.options.ignore_chown_errors && record.is_none() {
                return Err(self.io(path)(e));
            }
            if record.is_none() {
                self.warn(format!(
                    "{}: could not set owner {}:{}: {e}",
                    path.display(),
                    header.uid,
                    header.gid
                ));
            }
        }
        for (key, value) in &header.xattrs {
            // Nothing but the real owner is recorded; a layer cannot bring its own record.
            if is_overlay_internal(key)
                || key == crate::owner::XATTR
                || key == crate::device::XATTR
                || crate::owner::link::is_link_record(key.as_bytes())
            {
                continue;
            }
            if let Err(e) = rfs::lsetxattr(at.proc_path(), key.as_str(), value, XattrFlags::empty())
            {
                let privileged = key.starts_with("trusted.") || key.starts_with("security.");
                let tolerable = privileged
                    || self.options.ignore_chown_errors
                    || e == rustix::io::Errno::NOTSUP;
                if !tolerable {
                    return Err(self.errno(path)(e));
                }
                self.warn(format!(
                    "{}: could not set xattr {key}: {e}",
                    path.display()
                ));
            }
        }
        if let Some(owner) = record.filter(|_| header.kind == EntryKind::Symlink) {
            if let Err(e) = crate::owner::link::record_link(&at.parent, &at.name, owner) {
                self.warn(format!(
                    "{}: could not record owner {}:{}: {e}",
                    path.display(),
                    owner.uid,
                    owner.gid
                ));
            }
        } else if let Some(owner) = record {
            let value = owner.encode();
            let set = rfs::lsetxattr(
                at.proc_path(),
                crate::owner::XATTR,
                &value,
                XattrFlags::empty(),
            );
            if let Err(e) = set {
                self.warn(format!(
                    "{}: could not record owner {}:{}: {e}",
                    path.display(),
                    owner.uid,
                    owner.gid
                ));
            }
        }
        if !matches!(header.kind, EntryKind::Symlink | EntryKind::Dir) {
            chmod_nofollow(&at.parent, &at.name, header.mode & 0o7777).map_err(self.errno(path))?;
        }
        if header.kind != EntryKind::Dir {
            set_mtime(&at.parent, &at.name, header.mtime).map_err(self.errno(path))?;
        }
        Ok(())
    }

    fn whiteout(&mut self, target: &Path) -> Result<(), UnpackError> {
        let create = matches!(self.options.mode, UnpackMode::Overlay { .. });
        let resolved = match self.root.resolve_parent(target, self.escape(), false) {
            Ok(r) => r,
            Err(e) if not_here(&e) => {
                if create {
                    self.report
                        .deferred
                        .push(Deferred::Whiteout(target.to_owned()));
                }
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let exists =
            rfs::statat(&resolved.parent, &resolved.name, AtFlags::SYMLINK_NOFOLLOW).is_ok();
        if exists {
            remove_all(&resolved.parent, &resolved.name).map_err(self.errno(target))?;
        }
        if create {
            rfs::mknodat(
                &resolved.parent,
                &resolved.name,
                FileType::CharacterDevice,
                Mode::empty(),
                rfs::makedev(0, 0),
            )
            .map_err(self.errno(target))?;
        }
        Ok(())
    }

    fn opaque(&mut self, dir: &Path) -> Result<(), UnpackError> {
        if let UnpackMode::Overlay { userxattr } = self.options.mode {
            match self.root.resolve_dir(dir, self.escape(), false) {
                Ok(fd) => self.mark_opaque(fd, dir, userxattr)?,
                Err(e) if not_here(&e) => {
                    self.report.deferred.push(Deferred::Opaque(dir.to_owned()));
                }
                Err(e) => return Err(e.into()),
            }
            return Ok(());
        }
        let fd = self.root.resolve_dir(dir, self.escape(), true)?;
        let dir_fd = rfs::openat(
            &fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(self.errno(dir))?;
        for name in list_dir(&dir_fd).map_err(self.errno(dir))? {
            if !self.created.contains(&dir.join(&name)) {
                remove_all(&dir_fd, &name).map_err(self.errno(dir))?;
            }
        }
        Ok(())
    }

    fn mark_opaque(&self, dir_fd: OwnedFd, dir: &Path, userxattr: bool) -> Result<(), UnpackError> {
        let key = if userxattr {
            "user.overlay.opaque"
        } else {
            "trusted.overlay.opaque"
        };
        let at = Resolved {
            parent: dir_fd,
            name: ".".into(),
        };
        rfs::lsetxattr(at.proc_path(), key, b"y", XattrFlags::empty()).map_err(self.errno(dir))
    }

    fn finish(&mut self) -> Result<(), UnpackError> {
        if let UnpackMode::Overlay { userxattr } = self.options.mode {
            for deferred in std::mem::take(&mut self.report.deferred) {
                match deferred {
                    // Entries after the marker made the directory in this layer: mark it here.
                    Deferred::Opaque(dir) => {
                        match self.root.resolve_dir(&dir, self.escape(), false) {
                            Ok(fd) => self.mark_opaque(fd, &dir, userxattr)?,
                            Err(e) if not_here(&e) => {
                                self.report.deferred.push(Deferred::Opaque(dir))
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                    other => self.report.deferred.push(other),
                }
            }
        }
        // Deepest first, so a parent's time is set after its children's.
        for (path, mode, mtime) in std::mem::take(&mut self.dirs).into_iter().rev() {
            let at = self.root.resolve_parent(&path, self.escape(), false)?;
            if rfs::statat(&at.parent, &at.name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory)
            {
                chmod_nofollow(&at.parent, &at.name, mode).map_err(self.errno(&path))?;
                set_mtime(&at.parent, &at.name, mtime).map_err(self.errno(&path))?;
            }
        }
        Ok(())
    }
}

fn set_mtime(dir: impl AsFd, name: &OsStr, mtime: i64) -> rustix::io::Result<()> {
    let time = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    rfs::utimensat(
        dir,
        name,
        &Timestamps {
            last_access: time,
            last_modification: time,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
}

fn list_dir(dir: &OwnedFd) -> rustix::io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    let reader = rfs::Dir::read_from(dir)?;
    for entry in reader {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_owned());
        }
    }
    Ok(names)
}

/// Removes `name` in `dir`, recursively, without following symlinks.
fn remove_all(dir: impl AsFd, name: &OsStr) -> rustix::io::Result<()> {
    let stat = rfs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
        let fd = rfs::openat(
            &dir,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        for child in list_dir(&fd)? {
            remove_all(&fd, &child)?;
        }
        rfs::unlinkat(&dir, name, AtFlags::REMOVEDIR)
    } else {
        rfs::unlinkat(&dir, name, AtFlags::empty())
    }
}

/// Applies an uncompressed or compressed (gzip, zstd, bzip2, xz: detected) tar onto `target`.
pub fn unpack(
    reader: impl Read,
    target: &Path,
    options: &UnpackOptions,
) -> Result<UnpackReport, UnpackError> {
    let io_err = |source| UnpackError::Io {
        path: String::new(),
        target: target.to_owned(),
        source,
    };
    std::fs::create_dir_all(target).map_err(io_err)?;
    let root = Root::open(target).map_err(io_err)?;
    unpack_into(reader, root, options)
}

/// Applies a tar, as [`unpack`] does, onto the directory `root` already resolved.
pub fn unpack_into(
    reader: impl Read,
    root: Root,
    options: &UnpackOptions,
) -> Result<UnpackReport, UnpackError> {
    let target = root.path().to_owned();
    let io_err = |source| UnpackError::Io {
        path: String::new(),
        target: target.clone(),
        source,
    };
    let decompressed = decompress(reader).map_err(io_err)?;
    let mut tar = TarReader::new(decompressed);
    let mut unpacker = Unpacker {
        root,
        options,
        report: UnpackReport::default(),
        created: HashSet::new(),
        dirs: Vec::new(),
        buffer: vec![0u8; 256 * 1024],
    };
    while let Some(header) = tar.next_header()? {
        unpacker.apply(&mut tar, header)?;
        unpacker.report.entries += 1;
    }
    // Drain trailing padding so a compressed stream is read to its end (and fully checked).
    io::copy(&mut tar.into_inner(), &mut io::sink()).map_err(io_err)?;
    unpacker.finish()?;
    Ok(unpacker.report)
}

/// Applies what [`UnpackReport::deferred`] left to the merged view mounted at `merged` (the
/// layer's snapshot over its lower layers), whose own directory is `layer`. Each path is
/// resolved inside the merged root, through the lower layers' symlinks as a whole image would:
/// a whiteout removes what it names, an opaque marker empties its directory (the overlay
/// records both in the layer), sparing what this layer itself holds there; a path that names
/// nothing is left alone.
pub fn apply_deferred(
    merged: &Path,
    layer: &Path,
    deferred: &[Deferred],
) -> Result<(), UnpackError> {
    let open = |dir: &Path| {
        Root::open(dir).map_err(|source| UnpackError::Io {
            path: String::new(),
            target: dir.to_owned(),
            source,
        })
    };
    let (root, own) = (open(merged)?, open(layer)?);
    let io_err = |path: &Path| {
        let path = path.to_string_lossy().into_owned();
        move |e: rustix::io::Errno| UnpackError::Io {
            path,
            target: merged.to_owned(),
            source: e.into(),
        }
    };
    // Whether this layer holds `rel` (a path with every symlink resolved) itself.
    let ours = |rel: &Path| own.lstat(rel, Escape::Refuse).is_ok();
    for item in deferred {
        let (path, opaque) = match item {
            Deferred::Whiteout(p) => (p, false),
            Deferred::Opaque(p) => (p, true),
        };
        // A whiteout removes the entry itself, a symlink included, so only its directory is
        // resolved; an opaque marker names a directory, followed to where it is.
        let found = if opaque {
            root.resolve(path, Escape::Refuse)
        } else {
            root.resolve_entry(path, Escape::Refuse)
        };
        let (resolved, rel) = match found {
            Ok(r) => r,
            Err(e) if not_here(&e) => continue,
            Err(e) => return Err(e.into()),
        };
        let kind = match rfs::statat(&resolved.parent, &resolved.name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => FileType::from_raw_mode(stat.st_mode),
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(io_err(path)(e)),
        };
        if !opaque {
            if !ours(&rel) {
                remove_all(&resolved.parent, &resolved.name).map_err(io_err(path))?;
            }
            continue;
        }
        if kind != FileType::Directory {
            continue;
        }
        let dir = rfs::openat(
            &resolved.parent,
            &resolved.name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err(path))?;
        for name in list_dir(&dir).map_err(io_err(path))? {
            if !ours(&rel.join(&name)) {
                remove_all(&dir, &name).map_err(io_err(path))?;
            }
        }
    }
    Ok(())
}

/// Applies the stored layer `digest` onto `target`, verifying the blob as it is read.
pub fn unpack_blob(
    store: &ContentStore,
    digest: &Digest,
    target: &Path,
    options: &UnpackOptions,
) -> Result<UnpackReport, UnpackError> {
    let wrap = |source: UnpackError| UnpackError::Layer {
        digest: digest.clone(),
        source: Box::new(source),
    };
    let blob = store.open_blob(digest).map_err(|e| wrap(e.into()))?;
    unpack(blob, target, options).map_err(|e| match e {
        UnpackError::Io { ref source, .. } | UnpackError::Tar(TarError::Io(ref source))
            if source
                .get_ref()
                .is_some_and(|inner| inner.is::<StoreError>()) =>
        {
            wrap(UnpackError::Store(StoreError::Corrupt(digest.clone())))
        }
        other => wrap(other),
    })
}

/// Applies every layer of `image`, bottom first, onto `target` (e.g. a rootfs for
/// `--output type=local`, or an overlay lower dir per layer when called layer by layer).
pub fn unpack_image(
    store: &ContentStore,
    image: &crate::image::Image,
    target: &Path,
    options: &UnpackOptions,
) -> Result<UnpackReport, UnpackError> {
    let mut report = UnpackReport::default();
    for layer in image.layers() {
        let one = unpack_blob(store, layer.digest(), target, options)?;
        report.entries += one.entries;
        report.warnings.extend(one.warnings);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_minus_one_maps_to_no_owner() {
        let ranges = [IdRange {
            container: 0,
            host: 100000,
            size: 65536,
        }];
        assert_eq!(map_id(&[], 5), Some(5));
        assert_eq!(map_id(&[], u64::from(u32::MAX)), None);
        assert_eq!(map_id(&[], 1 << 40), None);
        assert_eq!(map_id(&ranges, 1), Some(100001));
    }
}
