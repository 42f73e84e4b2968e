//! Path resolution confined to a root directory, as if the root were `/` (like `openat2` with
//! `RESOLVE_IN_ROOT`): symlinks are followed inside the root, never to a host file. The layer
//! unpacker uses it, and so must every operation on a path that comes from a Dockerfile, a
//! context, an image or an earlier step: COPY, ADD, WORKDIR, `RUN --mount` sources and targets.
//!
//! [`Root`] walks component by component, each opened `O_NOFOLLOW` relative to the directory
//! before it, so nothing is ever resolved by the kernel on the host's terms; the operation then
//! acts on the returned descriptor, never on a path joined again. [`open_in_root`] is the same
//! guarantee from the kernel (`openat2`), for the sandbox helper.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};

/// Symlinks followed in one resolution before giving up, as the kernel's limit.
const MAX_SYMLINKS: u32 = 40;

/// What to do when a path tries to climb above the root (`..` at the root, possibly via a symlink).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// Stay at the root, as the kernel does for `..` at `/` inside a chroot (COPY/ADD semantics).
    Clamp,
    /// Refuse the path with [`InRootError::Escapes`] (for untrusted layers).
    Refuse,
}

/// A path could not be resolved inside the root.
#[derive(Debug, thiserror::Error)]
pub enum InRootError {
    /// The path, possibly through a symlink, leads outside the root.
    #[error("{path}: leads outside the root{}", via.as_ref().map(|v| format!(" through the symlink {}", v.display())).unwrap_or_default())]
    Escapes {
        /// The path asked for.
        path: PathBuf,
        /// The symlink that made it escape, if one did.
        via: Option<PathBuf>,
    },
    /// Too many symlinks were followed.
    #[error("{0}: too many levels of symbolic links")]
    Loop(PathBuf),
    /// An intermediate component is not a directory.
    #[error("{path}: {component} is not a directory")]
    NotADirectory {
        /// The path asked for.
        path: PathBuf,
        /// The offending component.
        component: PathBuf,
    },
    /// A system call failed.
    #[error("{path}: {source}")]
    Io {
        /// The path asked for.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl InRootError {
    /// Whether the error says the path (or a parent of it) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// A directory used as the root for resolving paths.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

/// A resolved location: the directory that holds the final component, and its name.
#[derive(Debug)]
pub struct Resolved {
    /// The directory containing the entry (an `O_PATH` descriptor, usable with the `*at` calls).
    pub parent: OwnedFd,
    /// The final component (`.` when the path is the root itself).
    pub name: OsString,
}

impl Resolved {
    /// A `/proc/self/fd/N/name` path reaching the entry without following it, for calls that have
    /// no `*at` form (the `l*xattr` family).
    pub fn proc_path(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}", self.parent.as_raw_fd())).join(&self.name)
    }
}

/// Sets the permission bits of `name` in `dir` without following it: a symlink there (which has
/// no mode of its own) is left alone. `fchmodat` has no working no-follow flag, so the entry is
/// pinned with an `O_PATH | O_NOFOLLOW` descriptor and changed through that descriptor's
/// `/proc/self/fd` link, which names the pinned inode and nothing else.
pub fn chmod_nofollow(dir: impl AsFd, name: &OsStr, mode: u32) -> rustix::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = open_path(dir, name)?;
    let stat = rfs::fstat(&fd)?;
    if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink {
        return Ok(());
    }
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    rfs::chmod(link.as_str(), Mode::from_raw_mode(mode))
}

fn io_at(path: &Path) -> impl FnOnce(rustix::io::Errno) -> InRootError + '_ {
    move |e| InRootError::Io {
        path: path.to_owned(),
        source: e.into(),
    }
}

fn open_path(dir: impl AsFd, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rfs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

impl Root {
    /// Opens `path` as a root.
    pub fn open(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        let fd = rfs::open(
            &path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self { fd, path })
    }

    /// A directory already resolved (inside another root, say) as a root; `path` names it in
    /// messages only.
    pub fn from_fd(fd: OwnedFd, path: impl Into<PathBuf>) -> Self {
        Self {
            fd,
            path: path.into(),
        }
    }

    /// The root's path on the host.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The root directory's descriptor.
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Resolves every component of `path` but the last inside the root, following symlinks there;
    /// missing directories are created (mode 0755) when `create_parents` is set.
    pub fn resolve_parent(
        &self,
        path: &Path,
        escape: Escape,
        create_parents: bool,
    ) -> Result<Resolved, InRootError> {
        let mut components = normal_components(path, escape)?;
        let Some(name) = components.pop_back() else {
            return Ok(Resolved {
                parent: rfs::openat(&self.fd, ".", OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
                    .map_err(io_at(path))?,
                name: ".".into(),
            });
        };
        let (parent, _) = self.walk(path, components, escape, create_parents)?;
        if name == ".." {
            // `a/..` as a final component: resolve fully instead.
            let dir = self.resolve_dir(path, escape, false)?;
            return Ok(Resolved {
                parent: dir,
                name: ".".into(),
            });
        }
        Ok(Resolved { parent, name })
    }

    /// Resolves `path` to a directory inside the root, following symlinks there, optionally
    /// creating missing directories.
    pub fn resolve_dir(
        &self,
        path: &Path,
        escape: Escape,
        create: bool,
    ) -> Result<OwnedFd, InRootError> {
        let components = normal_components(path, escape)?;
        Ok(self.walk(path, components, escape, create)?.0)
    }

    /// Resolves every component of `path` inside the root, the last one too, following symlinks
    /// there. Returns where the entry is (its final name is no symlink; it may not exist) and its
    /// path relative to the root with every symlink replaced by what it names.
    pub fn resolve(&self, path: &Path, escape: Escape) -> Result<(Resolved, PathBuf), InRootError> {
        let mut current = path.to_path_buf();
        let mut from_link = false;
        for _ in 0..=MAX_SYMLINKS {
            // A link's target may climb with `..` and stay inside the root (`x -> ../lib/x`):
            // only the path asked for is refused for a written `..`; the walk refuses climbing
            // past the root either way.
            let lexical = if from_link { Escape::Clamp } else { escape };
            let mut components = normal_components(&current, lexical)?;
            let Some(name) = components.pop_back() else {
                let fd = rfs::openat(&self.fd, ".", OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
                    .map_err(io_at(path))?;
                let resolved = Resolved {
                    parent: fd,
                    name: ".".into(),
                };
                return Ok((resolved, PathBuf::new()));
            };
            let (parent, parent_path) = self.walk(path, components, escape, false)?;
            if name == ".." {
                let mut up = parent_path;
                if !up.pop() && escape == Escape::Refuse {
                    return Err(InRootError::Escapes {
                        path: path.to_owned(),
                        via: None,
                    });
                }
                current = Path::new("/").join(up);
                continue;
            }
            let is_link = rfs::statat(&parent, &name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Symlink);
            if !is_link {
                let rel = parent_path.join(&name);
                return Ok((Resolved { parent, name }, rel));
            }
            let target = rfs::readlinkat(&parent, &name, Vec::new()).map_err(io_at(path))?;
            let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
            from_link = true;
            current = if target.is_absolute() {
                target
            } else {
                Path::new("/").join(parent_path).join(target)
            };
        }
        Err(InRootError::Loop(path.to_owned()))
    }

    /// Resolves `path`'s directory inside the root (symlinks followed there) and names its last
    /// component in it, not followed: the entry itself, a symlink included, for removing or
    /// replacing it. Returns it with its path relative to the root, symlinks replaced.
    pub fn resolve_entry(
        &self,
        path: &Path,
        escape: Escape,
    ) -> Result<(Resolved, PathBuf), InRootError> {
        let Some(name) = path.file_name() else {
            return self.resolve(path, escape);
        };
        let parent = path.parent().unwrap_or(Path::new(""));
        let (dir, dir_rel) = self.resolve(parent, escape)?;
        let dir_fd = rfs::openat(
            &dir.parent,
            &dir.name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_at(path))?;
        let resolved = Resolved {
            parent: dir_fd,
            name: name.to_owned(),
        };
        Ok((resolved, dir_rel.join(name)))
    }

    /// Opens what `path` names inside the root, every component including the last followed
    /// inside it (see [`Root::resolve`]): an `O_PATH` descriptor of an entry that exists, for
    /// `*at` calls with `AT_EMPTY_PATH` or a reopen through [`fd_path`].
    pub fn open_resolved(&self, path: &Path, escape: Escape) -> Result<OwnedFd, InRootError> {
        let (resolved, _) = self.resolve(path, escape)?;
        open_path(&resolved.parent, &resolved.name).map_err(io_at(path))
    }

    /// Walks `queue` from the root; returns the directory reached and its path relative to the
    /// root with symlinks replaced.
    fn walk(
        &self,
        path: &Path,
        mut queue: VecDeque<OsString>,
        escape: Escape,
        create: bool,
    ) -> Result<(OwnedFd, PathBuf), InRootError> {
        let mut stack: Vec<OwnedFd> = Vec::new();
        let mut links = 0;
        let mut via: Option<PathBuf> = None;
        let mut walked = PathBuf::new();
        while let Some(component) = queue.pop_front() {
            if component == ".." {
                if stack.pop().is_none() && escape == Escape::Refuse {
                    return Err(InRootError::Escapes {
                        path: path.to_owned(),
                        via,
                    });
                }
                walked.pop();
                continue;
            }
            let current = stack.last().unwrap_or(&self.fd);
            let fd = match open_path(current, &component) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT) if create => {
                    match rfs::mkdirat(current, &component, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(io_at(path)(e)),
                    }
                    open_path(current, &component).map_err(io_at(path))?
                }
                Err(e) => return Err(io_at(path)(e)),
            };
            let stat = rfs::fstat(&fd).map_err(io_at(path))?;
            walked.push(&component);
            match FileType::from_raw_mode(stat.st_mode) {
                FileType::Directory => stack.push(fd),
                FileType::Symlink => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(InRootError::Loop(path.to_owned()));
                    }
                    let target =
                        rfs::readlinkat(current, &component, Vec::new()).map_err(io_at(path))?;
                    let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
                    via = Some(walked.clone());
                    walked.pop();
                    if target.is_absolute() {
                        stack.clear();
                        walked = PathBuf::new();
                    }
                    for part in target.components().rev() {
                        match part {
                            Component::Normal(p) => queue.push_front(p.to_owned()),
                            Component::ParentDir => queue.push_front("..".into()),
                            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                        }
                    }
                }
                _ => {
                    return Err(InRootError::NotADirectory {
                        path: path.to_owned(),
                        component: walked,
                    });
                }
            }
        }
        let fd = match stack.pop() {
            Some(fd) => fd,
            None => rfs::openat(&self.fd, ".", OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
                .map_err(io_at(path))?,
        };
        Ok((fd, walked))
    }

    /// Opens a file for reading at `path` inside the root, following symlinks there (the last one
    /// too, as a process in the image would: `/etc/passwd -> /usr/share/…`), never to the host.
    pub fn open_file(&self, path: &Path, escape: Escape) -> Result<std::fs::File, InRootError> {
        let (resolved, _) = self.resolve(path, escape)?;
        let fd = rfs::openat(
            &resolved.parent,
            &resolved.name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_at(path))?;
        Ok(std::fs::File::from(fd))
    }

    /// `lstat` of `path` inside the root.
    pub fn lstat(&self, path: &Path, escape: Escape) -> Result<rfs::Stat, InRootError> {
        let resolved = self.resolve_parent(path, escape, false)?;
        rfs::statat(&resolved.parent, &resolved.name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io_at(path))
    }
}

/// `path` cleaned lexically as an absolute path inside a root, as Go's `path.Clean` of
/// `"/" + path` (BuildKit's rule for destinations and mount targets): `.` and empty components
/// dropped, `..` taking one away and stopping at `/`.
pub fn clean_abs(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Splits a path into its components, dropping `/` and `.`; `..` is kept for the walk to handle,
/// except that with [`Escape::Refuse`] a lexical `..` is refused outright.
fn normal_components(path: &Path, escape: Escape) -> Result<VecDeque<OsString>, InRootError> {
    let mut out = VecDeque::new();
    for component in path.components() {
        match component {
            Component::Normal(c) => out.push_back(c.to_owned()),
            Component::ParentDir if escape == Escape::Refuse => {
                return Err(InRootError::Escapes {
                    path: path.to_owned(),
                    via: None,
                });
            }
            Component::ParentDir => out.push_back("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

/// Opens `path` inside the directory `root` with the kernel's in-root resolution: `openat2`
/// with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`, so every component, the last included, is
/// resolved as if `root` were `/`, and no `/proc` magic link is followed. Add `O_NOFOLLOW` to
/// `flags` to refuse a final symlink instead of following it inside the root.
pub fn open_in_root(root: impl AsFd, path: &Path, flags: OFlags) -> io::Result<OwnedFd> {
    // openat2 has no AT_EMPTY_PATH: the root itself is `.`.
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    loop {
        match rfs::openat2(
            root.as_fd(),
            path,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            rfs::ResolveFlags::IN_ROOT | rfs::ResolveFlags::NO_MAGICLINKS,
        ) {
            // The kernel asks for a retry when a rename raced with the walk.
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// Opens a host path that holds no symlink by construction (a canonical root joined with a path
/// already resolved inside it), letting the kernel check that no component is one (`openat2`
/// with `RESOLVE_NO_SYMLINKS`): a symlink swapped in since makes the call fail, never leads
/// elsewhere. With `O_PATH | O_NOFOLLOW` a final symlink is opened itself.
pub fn open_no_symlinks(path: &Path, flags: OFlags) -> io::Result<OwnedFd> {
    loop {
        match rfs::openat2(
            rfs::CWD,
            path,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            rfs::ResolveFlags::NO_SYMLINKS,
        ) {
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// `lstat` of such a path (see [`open_no_symlinks`]).
pub fn lstat_no_symlinks(path: &Path) -> io::Result<std::fs::Metadata> {
    std::fs::File::from(open_no_symlinks(path, OFlags::PATH | OFlags::NOFOLLOW)?).metadata()
}

/// The entries of such a directory (see [`open_no_symlinks`]).
pub fn read_dir_no_symlinks(path: &Path) -> io::Result<std::fs::ReadDir> {
    let dir = open_no_symlinks(path, OFlags::RDONLY | OFlags::DIRECTORY)?;
    std::fs::read_dir(fd_path(&dir))
}

/// The target of such a symlink (see [`open_no_symlinks`]).
pub fn read_link_no_symlinks(path: &Path) -> io::Result<PathBuf> {
    let link = open_no_symlinks(path, OFlags::PATH | OFlags::NOFOLLOW)?;
    let target = rfs::readlinkat(&link, "", Vec::new())?;
    Ok(PathBuf::from(OsStr::from_bytes(target.as_bytes())))
}

/// The path the kernel gives for what `fd` refers to, as seen from this process.
pub fn fd_path(fd: impl AsFd) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::symlink;

    fn stat_ino(fd: &OwnedFd) -> u64 {
        rfs::fstat(fd).unwrap().st_ino
    }

    #[test]
    fn absolute_and_dotdot_symlinks_stay_inside_with_clamp() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        symlink("/usr/lib", root.join("abs")).unwrap();
        symlink("../../../../../..", root.join("up")).unwrap();
        let r = Root::open(&root).unwrap();
        let lib = std::fs::metadata(root.join("usr/lib")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            stat_ino(
                &r.resolve_dir(Path::new("abs"), Escape::Clamp, false)
                    .unwrap()
            ),
            lib.ino()
        );
        let up = r
            .resolve_dir(Path::new("up/usr/lib"), Escape::Clamp, false)
            .unwrap();
        assert_eq!(stat_ino(&up), lib.ino());
    }

    #[test]
    fn escaping_symlink_is_refused_in_refuse_mode() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        symlink("../..", root.join("up")).unwrap();
        let r = Root::open(&root).unwrap();
        let err = r
            .resolve_parent(Path::new("up/etc/passwd"), Escape::Refuse, false)
            .unwrap_err();
        assert!(
            matches!(err, InRootError::Escapes { via: Some(_), .. }),
            "{err}"
        );
        let err = r
            .resolve_parent(Path::new("a/../../x"), Escape::Refuse, false)
            .unwrap_err();
        assert!(matches!(err, InRootError::Escapes { .. }), "{err}");
    }

    #[test]
    fn symlink_loops_and_files_as_directories_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        symlink("b", dir.path().join("a")).unwrap();
        symlink("a", dir.path().join("b")).unwrap();
        std::fs::write(dir.path().join("f"), b"").unwrap();
        let r = Root::open(dir.path()).unwrap();
        assert!(matches!(
            r.resolve_dir(Path::new("a"), Escape::Clamp, false),
            Err(InRootError::Loop(_))
        ));
        assert!(matches!(
            r.resolve_dir(Path::new("f/x"), Escape::Clamp, false),
            Err(InRootError::NotADirectory { .. })
        ));
    }

    #[test]
    fn create_parents_makes_directories_inside_the_root_through_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        symlink("/", root.join("slash")).unwrap();
        let r = Root::open(&root).unwrap();
        r.resolve_parent(Path::new("slash/new/deep/file"), Escape::Clamp, true)
            .unwrap();
        assert!(root.join("new/deep").is_dir());
        assert!(!Path::new("/new").exists());
    }

    #[test]
    fn resolve_follows_the_last_symlink_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        std::fs::write(root.join("real/sub/file"), b"in").unwrap();
        symlink("/real", root.join("abs")).unwrap();
        symlink("../../../../abs/sub/file", root.join("climb")).unwrap();
        symlink("climb", root.join("chain")).unwrap();
        symlink("/real/new", root.join("dangling")).unwrap();
        let r = Root::open(&root).unwrap();
        for link in ["climb", "chain", "abs/sub/../sub/file"] {
            let (at, rel) = r.resolve(Path::new(link), Escape::Clamp).unwrap();
            assert_eq!(rel, Path::new("real/sub/file"), "{link}");
            assert_eq!(at.name, "file");
        }
        let (_, rel) = r.resolve(Path::new("dangling"), Escape::Clamp).unwrap();
        assert_eq!(rel, Path::new("real/new"));
        assert!(matches!(
            r.resolve(Path::new("climb"), Escape::Refuse),
            Err(InRootError::Escapes { .. })
        ));
    }

    #[test]
    fn chmod_nofollow_changes_the_entry_never_a_symlink_target() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"host").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(dir.path().join("file"), b"").unwrap();
        symlink(&outside, dir.path().join("link")).unwrap();
        let fd = rfs::open(dir.path(), OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).unwrap();
        chmod_nofollow(&fd, OsStr::new("file"), 0o751).unwrap();
        chmod_nofollow(&fd, OsStr::new("link"), 0o777).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&dir.path().join("file")), 0o751);
        assert_eq!(mode(&outside), 0o600);
    }
    #[test]
    fn resolve_follows_a_final_symlink_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("etc/file"), b"inside").unwrap();
        std::fs::write(outside.join("file"), b"outside").unwrap();
        symlink(&outside, root.join("abs")).unwrap();
        symlink("../../../outside", root.join("rel")).unwrap();
        symlink("/etc/file", root.join("final")).unwrap();
        symlink("final", root.join("chained")).unwrap();
        let r = Root::open(&root).unwrap();
        let read = |fd: OwnedFd| std::fs::read_to_string(fd_path(&fd)).unwrap();
        for name in ["final", "chained", "etc/../../etc/file", "/../etc/file"] {
            assert_eq!(
                read(r.open_resolved(Path::new(name), Escape::Clamp).unwrap()),
                "inside",
                "{name}"
            );
        }
        // A link to a host directory is followed inside the root, where it names nothing.
        for name in ["abs", "abs/file", "rel/file"] {
            let err = r.open_resolved(Path::new(name), Escape::Clamp).unwrap_err();
            assert!(err.is_not_found(), "{name}: {err}");
        }
        let err = r
            .open_resolved(Path::new("rel"), Escape::Refuse)
            .unwrap_err();
        assert!(matches!(err, InRootError::Escapes { .. }), "{err}");
    }

    #[test]
    fn open_in_root_is_confined_by_the_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/file"), b"inside").unwrap();
        std::fs::write(dir.path().join("secret"), b"outside").unwrap();
        symlink("../secret", root.join("up")).unwrap();
        symlink("/proc/self/root/etc/passwd", root.join("magic")).unwrap();
        symlink("/etc/file", root.join("final")).unwrap();
        let r = Root::open(&root).unwrap();
        let file = open_in_root(r.fd(), Path::new("final"), OFlags::RDONLY).unwrap();
        let top = open_in_root(r.fd(), Path::new(""), OFlags::PATH).unwrap();
        assert_eq!(stat_ino(&top), stat_ino(r.fd()));
        assert_eq!(std::fs::read_to_string(fd_path(&file)).unwrap(), "inside");
        assert!(open_in_root(r.fd(), Path::new("up"), OFlags::RDONLY).is_err());
        assert!(open_in_root(r.fd(), Path::new("magic"), OFlags::RDONLY).is_err());
        assert!(
            open_in_root(r.fd(), Path::new("final"), OFlags::PATH | OFlags::NOFOLLOW)
                .and_then(|fd| rfs::fstat(&fd).map_err(io::Error::from))
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
        );
    }

    #[test]
    fn paths_without_symlinks_are_checked_by_the_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        std::fs::create_dir(real.join("d")).unwrap();
        std::fs::write(real.join("d/f"), b"f").unwrap();
        symlink(real.join("d"), real.join("via")).unwrap();
        symlink("f", real.join("d/link")).unwrap();
        assert!(open_no_symlinks(&real.join("d/f"), OFlags::RDONLY).is_ok());
        assert!(open_no_symlinks(&real.join("via/f"), OFlags::RDONLY).is_err());
        assert!(open_no_symlinks(&real.join("d/link"), OFlags::RDONLY).is_err());
        assert!(
            lstat_no_symlinks(&real.join("d/link"))
                .unwrap()
                .is_symlink()
        );
        assert!(lstat_no_symlinks(&real.join("via/link")).is_err());
        assert_eq!(
            read_link_no_symlinks(&real.join("d/link")).unwrap(),
            Path::new("f")
        );
        let mut names: Vec<_> = read_dir_no_symlinks(&real.join("d"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["f", "link"]);
        assert!(read_dir_no_symlinks(&real.join("via")).is_err());
    }
}
