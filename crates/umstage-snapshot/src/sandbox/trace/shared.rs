//! Paths in the container's own `/proc`, `/dev` and `/sys`, walked a component at a time.
//!
//! Their symlinks would lead a path out of the guest's root if the kernel followed them on
//! the host: `/proc/PID/root` is the host's `/`, and `/proc/PID/cwd` or `/dev/fd/N` is a
//! directory of the snapshot from which the snapshot's own absolute symlinks and `..` are the
//! host's. So the walk follows every symlink itself: an ordinary one (`/dev/fd`,
//! `/proc/mounts`) gives a new guest path; a process's `root` is the guest's `/`; a process's
//! other links (`cwd`, `exe`, `fd/N`) give the guest path of what they point at, and only as
//! the last component, where the kernel opens the very file and walks no further, stay as
//! they are (a deleted file or a pipe is then still reached).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use nix::unistd::Pid;

use super::follow::Follow;

/// Where a path in a shared directory leads.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Walked {
    /// To this host path, which the kernel may walk as it is.
    Host(Vec<u8>),
    /// Through a symlink, to this guest path, to be resolved afresh.
    Guest(Vec<u8>),
}

/// Walks the components `parts` (`.` and `..` already taken) of a path in a shared
/// directory for process `pid`; `to_guest` gives the guest path of a host path, if the
/// guest sees it.
pub(super) fn walk(
    pid: Pid,
    parts: &[Vec<u8>],
    follow: Follow,
    trailing: bool,
    to_guest: impl Fn(&[u8]) -> Option<Vec<u8>>,
) -> Result<Walked, i32> {
    let mut host = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        host.push(b'/');
        // `self` is the caller, which the supervisor walking the path is not.
        match (i, part.as_slice()) {
            (1, b"self") if parts[0] == b"proc" => {
                host.extend_from_slice(pid.to_string().as_bytes())
            }
            (1, b"thread-self") if parts[0] == b"proc" => {
                host.extend_from_slice(format!("{pid}/task/{pid}").as_bytes())
            }
            _ => host.extend_from_slice(part),
        }
        let rest = &parts[i + 1..];
        if rest.is_empty() && follow == Follow::No {
            break;
        }
        let magic = parts[0] == b"proc"
            && i >= 2
            && (parts[1].iter().all(u8::is_ascii_digit)
                || matches!(parts[1].as_slice(), b"self" | b"thread-self"));
        if magic && part == b"root" {
            return Ok(Walked::Guest(join(b"/".to_vec(), rest, trailing)));
        }
        let meta = match std::fs::symlink_metadata(OsStr::from_bytes(&host)) {
            Ok(meta) => meta,
            // Nothing further can be a symlink: the kernel fails or creates as it would.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Err(e) => return Err(e.raw_os_error().unwrap_or(libc::EIO)),
        };
        if !meta.file_type().is_symlink() {
            continue;
        }
        let target = std::fs::read_link(OsStr::from_bytes(&host))
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        let target = target.as_os_str().as_bytes();
        let next = if magic {
            // A memfd's link reads as a path (`/memfd:NAME (deleted)`) but has none.
            let path = target.starts_with(b"/") && !target.starts_with(b"/memfd:");
            let guest = path.then(|| to_guest(target)).flatten();
            // The last component is opened, not walked: a pipe or a socket (no path), a file
            // the guest sees, or a program (never a directory to walk from).
            if rest.is_empty() && (guest.is_some() || !path || part == b"exe") {
                return Ok(Walked::Host(host));
            }
            match guest {
                Some(guest) => guest,
                None if path => return Err(libc::EACCES),
                None => return Err(libc::ENOTDIR),
            }
        } else if target.starts_with(b"/") {
            target.to_vec()
        } else {
            let dir = host.iter().rposition(|b| *b == b'/').unwrap_or(0);
            [&host[..=dir], target].concat()
        };
        return Ok(Walked::Guest(join(next, rest, trailing)));
    }
    if trailing {
        host.push(b'/');
    }
    Ok(Walked::Host(host))
}

/// `base` with the components `rest` after it.
fn join(mut base: Vec<u8>, rest: &[Vec<u8>], trailing: bool) -> Vec<u8> {
    for part in rest {
        if base.last() != Some(&b'/') {
            base.push(b'/');
        }
        base.extend_from_slice(part);
    }
    if trailing {
        base.push(b'/');
    }
    base
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parts(path: &str) -> Vec<Vec<u8>> {
        path.split('/')
            .filter(|p| !p.is_empty())
            .map(|p| p.as_bytes().to_vec())
            .collect()
    }

    #[test]
    fn process_links_lead_into_the_guest_and_never_onto_the_host() {
        let me = Pid::this();
        let root = tempfile::tempdir().unwrap();
        let host_root = std::fs::canonicalize(root.path()).unwrap();
        let host_root = host_root.as_os_str().as_bytes().to_vec();
        let to_guest = |h: &[u8]| {
            h.strip_prefix(host_root.as_slice()).map(|r| {
                if r.is_empty() {
                    b"/".to_vec()
                } else {
                    r.to_vec()
                }
            })
        };
        let walk = |p: &str, f| walk(me, &parts(p), f, false, to_guest);
        // A process's root is the guest's.
        assert_eq!(
            walk("/proc/self/root/etc/passwd", Follow::Yes),
            Ok(Walked::Guest(b"/etc/passwd".to_vec()))
        );
        assert_eq!(
            walk("/proc/1/root", Follow::Yes),
            Ok(Walked::Guest(b"/".to_vec()))
        );
        // The link itself, for lstat and readlink.
        assert_eq!(
            walk("/proc/self/root", Follow::No),
            Ok(Walked::Host(format!("/proc/{me}/root").into_bytes()))
        );
        // A working directory outside the guest is not a way out.
        assert_eq!(walk("/proc/self/cwd/x", Follow::Yes), Err(libc::EACCES));
        // Inside it, it is the guest's path, walked again in the root.
        let dir = std::fs::File::open(root.path()).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&dir);
        assert_eq!(
            walk(&format!("/dev/fd/{fd}/esc/etc"), Follow::Yes),
            Ok(Walked::Guest(
                format!("/proc/self/fd/{fd}/esc/etc").into_bytes()
            ))
        );
        assert_eq!(
            walk(&format!("/proc/self/fd/{fd}/esc/etc"), Follow::Yes),
            Ok(Walked::Guest(b"/esc/etc".to_vec()))
        );
        // As the last component it is reopened as it is.
        assert_eq!(
            walk(&format!("/proc/self/fd/{fd}"), Follow::Yes),
            Ok(Walked::Host(format!("/proc/{me}/fd/{fd}").into_bytes()))
        );
        // A memfd has no path: reopened (or executed) as it is.
        let memfd = rustix::fs::memfd_create("step", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&memfd);
        assert_eq!(
            walk(&format!("/proc/self/fd/{fd}"), Follow::Yes),
            Ok(Walked::Host(format!("/proc/{me}/fd/{fd}").into_bytes()))
        );
        // Plain files and missing ones are the host's.
        assert_eq!(
            walk("/proc/self/status", Follow::Yes),
            Ok(Walked::Host(format!("/proc/{me}/status").into_bytes()))
        );
        assert_eq!(
            walk("/dev/shm/new", Follow::Yes),
            Ok(Walked::Host(b"/dev/shm/new".to_vec()))
        );
    }
}
