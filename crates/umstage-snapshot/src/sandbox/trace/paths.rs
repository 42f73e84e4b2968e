//! Guest paths to host paths and back: the step's `/` is its snapshot's directory, and its
//! `/proc`, `/dev` and `/sys` are the container's own.
//!
//! Resolution happens in the guest's root: the kernel resolves a path with `RESOLVE_IN_ROOT`
//! from a descriptor of the snapshot, so absolute symlinks and `..` stay inside it, and the
//! descriptor's `/proc/self/fd` link gives the canonical host path the call then gets.

use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::unistd::Pid;
use rustix::fs::{Mode, OFlags};
use umstage_oci::inroot::{fd_path, open_in_root};

pub(super) use super::follow::Follow;
use super::shared;

/// Where the guest's root lies on the host.
pub(super) struct Root {
    fd: OwnedFd,
    host: Vec<u8>,
    /// Guest paths given a host file of their own, whatever the image has there (the step's
    /// private `/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`).
    private: Vec<(Vec<u8>, Vec<u8>)>,
    /// Guest directories given a host directory, with all below them (`RUN --mount`s).
    dirs: Vec<Dir>,
    /// Canonical host directories and files the step may not change (read-only mounts).
    read_only: Vec<Vec<u8>>,
    /// The guest paths of the read-only mounts, as components.
    read_only_guests: Vec<Vec<Vec<u8>>>,
}

/// A host directory that stands for a guest directory and everything below it.
struct Dir {
    /// The guest directory's components.
    guest: Vec<Vec<u8>>,
    fd: OwnedFd,
    host: Vec<u8>,
}

/// The top directories that are the container's own, not the snapshot's.
const SHARED: [&[u8]; 3] = [b"proc", b"dev", b"sys"];

/// The most symlinks of the shared directories one path may go through, as the kernel's
/// limit (`ELOOP` past it).
const MAX_LINKS: u32 = 40;

impl Root {
    /// Opens the guest's root, the directory `dir`.
    pub(super) fn open(dir: &Path) -> io::Result<Self> {
        let fd = rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let host = std::fs::read_link(fd_path(&fd))?
            .into_os_string()
            .into_vec();
        Ok(Root {
            fd,
            host,
            private: Vec::new(),
            dirs: Vec::new(),
            read_only: Vec::new(),
            read_only_guests: Vec::new(),
        })
    }

    /// Gives the guest directory `guest` (absolute) and all below it the host directory `dir`,
    /// which the step may not change if `read_only`.
    pub(super) fn add_dir(&mut self, guest: &Path, dir: &Path, read_only: bool) -> io::Result<()> {
        let (guest, fd, host) = self.given(guest, dir, OFlags::DIRECTORY, read_only)?;
        self.dirs.push(Dir { guest, fd, host });
        Ok(())
    }

    /// Gives the guest's absolute path `guest` the host file `file` (a bind mount of one
    /// file), which the step may not change if `read_only`.
    pub(super) fn add_file(
        &mut self,
        guest: &Path,
        file: &Path,
        read_only: bool,
    ) -> io::Result<()> {
        let (guest, _, host) = self.given(guest, file, OFlags::empty(), read_only)?;
        let guest = guest.iter().flat_map(|p| [&b"/"[..], p].concat()).collect();
        self.private.push((guest, host));
        Ok(())
    }

    /// What a mount gives for `guest` (absolute): its components, `source` opened (`O_PATH`
    /// and `flags`) and its canonical host path; noted as read-only if `read_only`.
    fn given(
        &mut self,
        guest: &Path,
        source: &Path,
        flags: OFlags,
        read_only: bool,
    ) -> io::Result<(Vec<Vec<u8>>, OwnedFd, Vec<u8>)> {
        let fd = rustix::fs::open(
            source,
            OFlags::PATH | OFlags::CLOEXEC | flags,
            Mode::empty(),
        )?;
        let host = std::fs::read_link(fd_path(&fd))?
            .into_os_string()
            .into_vec();
        let guest = lexical(guest.as_os_str().as_bytes());
        if read_only {
            self.read_only.push(host.clone());
            self.read_only_guests.push(guest.clone());
        }
        Ok((guest, fd, host))
    }

    /// Whether anything the step sees is read-only.
    pub(super) fn has_read_only(&self) -> bool {
        !self.read_only.is_empty()
    }

    /// Whether the guest's absolute path `guest` may lead to something read-only: it is, or
    /// is below, a read-only mount's target, or it goes through a shared directory (whose
    /// links lead anywhere in the guest); a mount is chosen by the lexical path, as
    /// [`Root::to_host`] chooses it, and nothing resolved in another leads out of it.
    pub(super) fn may_be_read_only(&self, guest: &[u8]) -> bool {
        let normal = lexical(guest);
        normal
            .first()
            .is_some_and(|top| SHARED.contains(&top.as_slice()))
            || self
                .read_only_guests
                .iter()
                .any(|ro| normal.starts_with(ro))
    }

    /// Whether the host path `host` is, or is below, something the step may not change.
    pub(super) fn is_read_only(&self, host: &[u8]) -> bool {
        self.read_only.iter().any(|ro| {
            host.strip_prefix(ro.as_slice())
                .is_some_and(|rest| rest.is_empty() || rest.first() == Some(&b'/'))
        })
    }

    /// Which given tree the host path `host` lies in, as the kernel tells mounts apart: 0
    /// for the root, then one for each `RUN --mount` directory and each file given for a
    /// guest path; `None` for the container's own (`/proc`, `/dev`, a pipe...).
    pub(super) fn tree_of(&self, host: &[u8]) -> Option<usize> {
        let below = |top: &[u8]| {
            host.strip_prefix(top)
                .is_some_and(|rest| rest.is_empty() || rest.first() == Some(&b'/'))
        };
        if let Some(i) = self.dirs.iter().position(|dir| below(&dir.host)) {
            return Some(1 + i);
        }
        if let Some(i) = self.private.iter().position(|(_, file)| file == host) {
            return Some(1 + self.dirs.len() + i);
        }
        below(&self.host).then_some(0)
    }

    /// Gives the guest's absolute path `guest` the host file `host`.
    pub(super) fn add_private(&mut self, guest: &str, host: &Path) {
        self.private.push((
            guest.as_bytes().to_vec(),
            host.as_os_str().as_bytes().to_vec(),
        ));
    }

    /// The host path of the guest's `/`.
    #[cfg(test)]
    fn host(&self) -> &[u8] {
        &self.host
    }

    /// The guest path a host path stands for: inside the root, or in a shared directory;
    /// `None` for anything else (a pipe, a socket, a file elsewhere on the host).
    pub(super) fn to_guest(&self, host: &[u8]) -> Option<Vec<u8>> {
        for dir in &self.dirs {
            if let Some(rest) = host.strip_prefix(dir.host.as_slice())
                && (rest.is_empty() || rest.first() == Some(&b'/'))
            {
                let mut guest: Vec<u8> = dir
                    .guest
                    .iter()
                    .flat_map(|p| [&b"/"[..], p].concat())
                    .collect();
                guest.extend_from_slice(rest);
                if guest.is_empty() {
                    guest.push(b'/');
                }
                return Some(guest);
            }
        }
        if let Some((guest, _)) = self.private.iter().find(|(_, h)| h == host) {
            return Some(guest.clone());
        }
        if host == self.host.as_slice() {
            return Some(b"/".to_vec());
        }
        if let Some(rest) = host.strip_prefix(self.host.as_slice())
            && rest.first() == Some(&b'/')
        {
            return Some(rest.to_vec());
        }
        let top = host.strip_prefix(b"/")?.split(|b| *b == b'/').next()?;
        SHARED.contains(&top).then(|| host.to_vec())
    }

    /// The guest's absolute path for `path` as a process gave it, relative to `dirfd` (or its
    /// working directory); `None` where the base is outside the guest's view (the call is then
    /// left as it is).
    pub(super) fn absolute(&self, pid: Pid, dirfd: i32, path: &[u8]) -> Option<Vec<u8>> {
        if path.first() == Some(&b'/') {
            return Some(path.to_vec());
        }
        let base = if dirfd == libc::AT_FDCWD {
            format!("/proc/{pid}/cwd")
        } else {
            format!("/proc/{pid}/fd/{dirfd}")
        };
        let base = std::fs::read_link(base).ok()?.into_os_string().into_vec();
        let mut guest = self.to_guest(&base)?;
        if guest.last() != Some(&b'/') {
            guest.push(b'/');
        }
        guest.extend_from_slice(path);
        Some(guest)
    }

    /// The host path a call of process `pid` gets for the guest's absolute path `guest`, or
    /// the errno the call fails with (a missing parent directory, a loop).
    pub(super) fn to_host(&self, pid: Pid, guest: &[u8], follow: Follow) -> Result<Vec<u8>, i32> {
        self.to_host_after(pid, guest, follow, 0)
    }

    /// [`Root::to_host`] after `links` symlinks of the shared directories.
    fn to_host_after(
        &self,
        pid: Pid,
        guest: &[u8],
        follow: Follow,
        links: u32,
    ) -> Result<Vec<u8>, i32> {
        let normal = lexical(guest);
        let joined: Vec<u8> = normal
            .iter()
            .flat_map(|p| [&b"/"[..], p].concat())
            .collect();
        if let Some((_, host)) = self.private.iter().find(|(g, _)| *g == joined) {
            return Ok(host.clone());
        }
        // A directory given for a guest path (a `RUN --mount`, the step's own `/dev/shm`)
        // stands in for it, in the shared directories too. A trailing slash is kept for the
        // kernel (it then wants a directory).
        let trailing = guest.ends_with(b"/");
        let mounted = self
            .dirs
            .iter()
            .filter(|d| normal.starts_with(&d.guest))
            .max_by_key(|d| d.guest.len());
        if let Some(dir) = mounted {
            let rest = normal[dir.guest.len()..].join(&b'/');
            return resolve_path(&dir.fd, &rest, trailing, follow);
        }
        if let Some(top) = normal.first()
            && SHARED.contains(&top.as_slice())
        {
            let walked = shared::walk(pid, &normal, follow, guest.ends_with(b"/"), |h| {
                self.to_guest(h)
            })?;
            return match walked {
                shared::Walked::Host(host) => Ok(host),
                shared::Walked::Guest(_) if links >= MAX_LINKS => Err(libc::ELOOP),
                shared::Walked::Guest(next) => self.to_host_after(pid, &next, follow, links + 1),
            };
        }
        resolve_path(&self.fd, trim(guest), trailing, follow)
    }
}

/// The host path for `rel` under the directory `base`, resolved in it as in a root.
fn resolve_path(
    base: &OwnedFd,
    rel: &[u8],
    trailing: bool,
    follow: Follow,
) -> Result<Vec<u8>, i32> {
    let (parent, last) = match rel.iter().rposition(|b| *b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&b""[..], rel),
    };
    let special = last.is_empty() || last == b"." || last == b"..";
    if follow == Follow::Yes || special || trailing {
        match resolve(base, rel, OFlags::empty()) {
            Ok(mut host) => {
                if trailing {
                    host.push(b'/');
                }
                return Ok(host);
            }
            // Not there yet: the call creates it, or fails as the kernel says.
            Err(libc::ENOENT) if !special => {}
            Err(e) => return Err(e),
        }
    }
    let mut host = resolve(base, parent, OFlags::DIRECTORY)?;
    if host.last() != Some(&b'/') {
        host.push(b'/');
    }
    host.extend_from_slice(last);
    if trailing {
        host.push(b'/');
    }
    Ok(host)
}

/// Resolves `rel` in `base` as in a root; its canonical host path.
fn resolve(base: &OwnedFd, rel: &[u8], flags: OFlags) -> Result<Vec<u8>, i32> {
    let fd = open_in_root(
        base,
        Path::new(OsStr::from_bytes(rel)),
        OFlags::PATH | flags,
    )
    .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    let host: PathBuf =
        std::fs::read_link(fd_path(&fd)).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    Ok(host.into_os_string().into_vec())
}

/// `path` without leading and trailing slashes.
fn trim(path: &[u8]) -> &[u8] {
    let start = path.iter().position(|b| *b != b'/').unwrap_or(path.len());
    let end = path
        .iter()
        .rposition(|b| *b != b'/')
        .map_or(start, |e| e + 1);
    &path[start..end.max(start)]
}

/// The components of an absolute path with `.` and `..` taken lexically (`..` at `/` stays).
fn lexical(path: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for part in path.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            other => out.push(other.to_vec()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn guest_paths_resolve_inside_the_root_and_come_back() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("usr/bin")).unwrap();
        std::fs::write(dir.path().join("usr/bin/busybox"), b"").unwrap();
        std::os::unix::fs::symlink("/usr/bin/busybox", dir.path().join("usr/bin/sh")).unwrap();
        std::os::unix::fs::symlink("../../..", dir.path().join("usr/bin/up")).unwrap();
        let root = Root::open(dir.path()).unwrap();
        let me = Pid::this();
        let host = |p: &[u8]| root.host().iter().chain(p).copied().collect::<Vec<u8>>();
        // An absolute symlink is followed inside the root.
        assert_eq!(
            root.to_host(me, b"/usr/bin/sh", Follow::Yes).unwrap(),
            host(b"/usr/bin/busybox")
        );
        assert_eq!(
            root.to_host(me, b"/usr/bin/sh", Follow::No).unwrap(),
            host(b"/usr/bin/sh")
        );
        // `..` stops at the root, through a symlink too.
        assert_eq!(
            root.to_host(me, b"/../../usr", Follow::Yes).unwrap(),
            host(b"/usr")
        );
        assert_eq!(
            root.to_host(me, b"/usr/bin/up/etc", Follow::No).unwrap(),
            host(b"/etc")
        );
        assert_eq!(
            root.to_host(me, b"/usr/bin/up/usr", Follow::Yes).unwrap(),
            host(b"/usr")
        );
        assert_eq!(
            root.to_host(me, b"/usr/new/", Follow::No).unwrap(),
            host(b"/usr/new/")
        );
        assert_eq!(
            root.to_host(me, b"/usr//", Follow::No).unwrap(),
            host(b"/usr/")
        );
        assert_eq!(root.to_host(me, b"/", Follow::No).unwrap(), host(b"/"));
        // A new file's parent is resolved.
        assert_eq!(
            root.to_host(me, b"/usr/new", Follow::Yes).unwrap(),
            host(b"/usr/new")
        );
        assert_eq!(
            root.to_host(me, b"/nope/new", Follow::No).unwrap_err(),
            libc::ENOENT
        );
        // The shared directories are the container's own.
        assert_eq!(
            root.to_host(me, b"/proc/self/../1/status", Follow::Yes)
                .unwrap(),
            b"/proc/1/status"
        );
        assert_eq!(
            root.to_host(me, b"/proc/self/exe", Follow::Yes).unwrap(),
            format!("/proc/{me}/exe").into_bytes()
        );
        assert_eq!(root.to_guest(&host(b"/usr/bin")).unwrap(), b"/usr/bin");
        assert_eq!(root.to_guest(root.host()).unwrap(), b"/");
        assert_eq!(root.to_guest(b"/dev/null").unwrap(), b"/dev/null");
        assert_eq!(root.to_guest(b"/etc/passwd"), None);
        let mut root = root;
        root.add_private("/etc/hosts", Path::new("/private/hosts"));
        assert_eq!(
            root.to_host(me, b"/etc/../etc//hosts", Follow::Yes)
                .unwrap(),
            b"/private/hosts"
        );
        // A mounted directory, and everything below it, is the host directory's.
        let cache = tempfile::tempdir().unwrap();
        std::fs::create_dir(cache.path().join("sub")).unwrap();
        root.add_dir(Path::new("/var/cache"), cache.path(), false)
            .unwrap();
        assert!(!root.has_read_only());
        let cached = std::fs::canonicalize(cache.path()).unwrap();
        let cached = cached.as_os_str().as_bytes();
        assert_eq!(
            root.to_host(me, b"/var/cache", Follow::Yes).unwrap(),
            cached
        );
        assert_eq!(
            root.to_host(me, b"/var/./cache/sub/new", Follow::No)
                .unwrap(),
            [cached, b"/sub/new"].concat()
        );
        assert_eq!(
            root.to_guest(&[cached, b"/sub"].concat()).unwrap(),
            b"/var/cache/sub"
        );
        assert_eq!(root.to_guest(cached).unwrap(), b"/var/cache");
        // A directory given for a path in a shared directory stands in for it there too.
        let shm = tempfile::tempdir().unwrap();
        root.add_dir(Path::new("/dev/shm"), shm.path(), false)
            .unwrap();
        let shm_host = std::fs::canonicalize(shm.path()).unwrap();
        let shm_host = shm_host.as_os_str().as_bytes();
        assert_eq!(
            root.to_host(me, b"/dev/shm/sem.x", Follow::Yes).unwrap(),
            [shm_host, b"/sem.x"].concat()
        );
        assert_eq!(
            root.to_guest(&[shm_host, b"/sem.x"].concat()).unwrap(),
            b"/dev/shm/sem.x"
        );
        assert_eq!(
            root.to_host(me, b"/dev/null", Follow::Yes).unwrap(),
            b"/dev/null"
        );
    }

    #[test]
    fn read_only_mounts_cover_their_file_or_everything_below_their_directory() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = tempfile::tempdir().unwrap();
        std::fs::create_dir(ctx.path().join("sub")).unwrap();
        std::fs::write(ctx.path().join("go.mod"), b"module x\n").unwrap();
        let mut root = Root::open(dir.path()).unwrap();
        let me = Pid::this();
        root.add_dir(Path::new("/src"), ctx.path(), true).unwrap();
        root.add_file(Path::new("/w/./go.mod"), &ctx.path().join("go.mod"), true)
            .unwrap();
        assert!(root.has_read_only());
        let ctx_host = std::fs::canonicalize(ctx.path()).unwrap();
        let ctx_host = ctx_host.as_os_str().as_bytes();
        let file = root.to_host(me, b"/w/go.mod", Follow::Yes).unwrap();
        assert_eq!(file, [ctx_host, b"/go.mod"].concat());
        assert!(root.is_read_only(&file));
        for guest in [&b"/src"[..], b"/src/sub/new", b"/src/../src/sub"] {
            let host = root.to_host(me, guest, Follow::No).unwrap();
            assert!(
                root.is_read_only(&host),
                "{}",
                String::from_utf8_lossy(guest)
            );
        }
        for (guest, may) in [
            (&b"/src/../src/x"[..], true),
            (b"/w/go.mod", true),
            (b"/proc/self/cwd/x", true),
            (b"/srcx", false),
            (b"/w/go.sum", false),
            (b"/src/../etc", false),
        ] {
            assert_eq!(
                root.may_be_read_only(guest),
                may,
                "{}",
                String::from_utf8_lossy(guest)
            );
        }
        // A sibling whose name merely starts the same is not below it.
        assert!(!root.is_read_only(&[ctx_host, b"x"].concat()));
        let outside = root.to_host(me, b"/other", Follow::No).unwrap();
        assert!(!root.is_read_only(&outside));
    }
}
