//! Ownership made right where only one id is mapped (the `userns-single` tier): the step's
//! `chown` family is recorded instead of failing, and its `stat` family shows what was recorded.
//!
//! The step's pid 1 installs a seccomp filter that sends only those system calls to a
//! listener ([`install`]), hands the listener to the helper ([`send_listener`]) and execs.
//! The helper ([`supervise`]) answers each call: a `chown` of a file becomes its owner in the
//! `user.rootlesscontainers` xattr ([`umstage_oci::owner`], as umoci and runc record it; a
//! chown back to 0:0 removes it), and a `stat` of a file that has one gets the kernel's
//! answer with the recorded owner, written into the caller's buffer. Every other call, and a
//! `stat` of a file with no record, goes to the kernel untouched. The layer writer writes the
//! recorded owners into the tar, so a later `stat` (same step or a later one) and the image
//! agree. Paths are resolved in the caller's root (`RESOLVE_IN_ROOT`), never in the helper's.

use std::ffi::OsString;
use std::fs::File;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use rustix::fs::{OFlags, XattrFlags};
use umstage_oci::owner::{Owner, XATTR, link};

use super::failure::HelperError;
use super::identity::Identity;

/// The kernel's `AUDIT_ARCH_*` for this build's architecture: the filter passes calls made
/// under any other ABI to the kernel untouched.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

/// What one intercepted call asks for, with its arguments decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    /// Change the owner of `target` (`u32::MAX` leaves that id as it is).
    Chown { target: Target, uid: u32, gid: u32 },
    /// `stat`, `lstat`, `fstat`, `newfstatat`: a `struct stat` at `buf`.
    Stat { target: Target, buf: u64 },
    /// `statx`: a `struct statx` at `buf`.
    Statx {
        target: Target,
        buf: u64,
        flags: i32,
        mask: u32,
    },
    /// `mknod`: a device is made as its placeholder ([`super::devices`]).
    Mknod {
        dirfd: i32,
        addr: u64,
        mode: u32,
        dev: u64,
    },
}

/// The file a call names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// A descriptor of the caller.
    Fd(i32),
    /// A path in the caller's memory, relative to `dirfd` (or its working directory).
    Path {
        dirfd: i32,
        addr: u64,
        follow: bool,
        empty_ok: bool,
    },
}

/// The system calls the filter sends to the supervisor (the identity calls too for a step with
/// a non-root user).
fn intercepted(with_identity: bool) -> Vec<i64> {
    let mut calls = vec![
        libc::SYS_fchown,
        libc::SYS_fchownat,
        libc::SYS_fstat,
        libc::SYS_newfstatat,
        libc::SYS_statx,
        libc::SYS_mknodat,
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([
        libc::SYS_chown,
        libc::SYS_lchown,
        libc::SYS_stat,
        libc::SYS_lstat,
        libc::SYS_mknod,
    ]);
    if with_identity {
        calls.extend(super::identity::intercepted());
    }
    calls
}

/// Decodes a call from its number and arguments; `None` for anything else.
fn decode(nr: i64, a: [u64; 6]) -> Option<Call> {
    let fd = |v: u64| v as i32;
    let id = |v: u64| v as u32;
    let at = |dirfd: u64, addr: u64, flags: u64| Target::Path {
        dirfd: fd(dirfd),
        addr,
        follow: flags as i32 & libc::AT_SYMLINK_NOFOLLOW == 0,
        empty_ok: flags as i32 & libc::AT_EMPTY_PATH != 0,
    };
    let cwd = |addr: u64, follow: bool| Target::Path {
        dirfd: libc::AT_FDCWD,
        addr,
        follow,
        empty_ok: false,
    };
    #[cfg(target_arch = "x86_64")]
    match nr {
        libc::SYS_chown => {
            return Some(Call::Chown {
                target: cwd(a[0], true),
                uid: id(a[1]),
                gid: id(a[2]),
            });
        }
        libc::SYS_lchown => {
            return Some(Call::Chown {
                target: cwd(a[0], false),
                uid: id(a[1]),
                gid: id(a[2]),
            });
        }
        libc::SYS_stat => {
            return Some(Call::Stat {
                target: cwd(a[0], true),
                buf: a[1],
            });
        }
        libc::SYS_lstat => {
            return Some(Call::Stat {
                target: cwd(a[0], false),
                buf: a[1],
            });
        }
        libc::SYS_mknod => {
            return Some(Call::Mknod {
                dirfd: libc::AT_FDCWD,
                addr: a[0],
                mode: a[1] as u32,
                dev: a[2],
            });
        }
        _ => {}
    }
    let _ = cwd;
    match nr {
        libc::SYS_fchown => Some(Call::Chown {
            target: Target::Fd(fd(a[0])),
            uid: id(a[1]),
            gid: id(a[2]),
        }),
        libc::SYS_fchownat => Some(Call::Chown {
            target: at(a[0], a[1], a[4]),
            uid: id(a[2]),
            gid: id(a[3]),
        }),
        libc::SYS_fstat => Some(Call::Stat {
            target: Target::Fd(fd(a[0])),
            buf: a[1],
        }),
        libc::SYS_newfstatat => Some(Call::Stat {
            target: at(a[0], a[1], a[3]),
            buf: a[2],
        }),
        libc::SYS_statx => Some(Call::Statx {
            target: at(a[0], a[1], a[2]),
            buf: a[4],
            flags: a[2] as i32,
            mask: a[3] as u32,
        }),
        libc::SYS_mknodat => Some(Call::Mknod {
            dirfd: fd(a[0]),
            addr: a[1],
            mode: a[2] as u32,
            dev: a[3],
        }),
        _ => None,
    }
}

/// The filter: calls of this architecture named by [`intercepted`] go to the listener.
fn program(with_identity: bool) -> Vec<libc::sock_filter> {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let calls = intercepted(with_identity);
    // seccomp_data: nr at 0, arch at 4.
    let mut prog = vec![
        stmt(load, 4),
        jeq(AUDIT_ARCH, 0, calls.len() as u8 + 1),
        stmt(load, 0),
    ];
    for (i, nr) in calls.iter().enumerate() {
        // Jump to the USER_NOTIF return after the last comparison when equal.
        prog.push(jeq(*nr as u32, (calls.len() - i) as u8, 0));
    }
    prog.push(stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW));
    prog.push(stmt(
        libc::BPF_RET | libc::BPF_K,
        libc::SECCOMP_RET_USER_NOTIF,
    ));
    prog
}

/// In the step's pid 1, just before exec: installs the filter and returns its listener.
pub(crate) fn install(who: Option<Identity>) -> Result<OwnedFd, HelperError> {
    let fd = super::seccomp::load(
        &mut program(who.is_some()),
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
    )
    .map_err(|e| {
        HelperError::during(
            "installing the ownership recorder (seccomp user notification)",
            e,
        )
    })?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends the listener, and the user the step appears as, to the helper over `socket`.
pub(crate) fn send_listener(
    socket: &UnixStream,
    listener: &OwnedFd,
    who: Option<Identity>,
) -> Result<(), HelperError> {
    let fds = [listener.as_raw_fd()];
    let bytes = who.map(Identity::to_bytes);
    let data: &[u8] = match &bytes {
        Some(b) => b,
        None => b"l",
    };
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[IoSlice::new(data)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map(drop)
    .map_err(|e| HelperError::during("handing the ownership recorder to the helper", e))
}

/// In the helper: the listener pid 1 sent and the user the step appears as, or `None` when it
/// ended before sending one.
pub(crate) fn receive_listener(socket: &UnixStream) -> Option<(OwnedFd, Option<Identity>)> {
    let mut data = [0u8; 8];
    let mut iov = [IoSliceMut::new(&mut data)];
    let mut space = nix::cmsg_space!(RawFd);
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    let got = msg.bytes;
    let fd = msg.cmsgs().ok()?.find_map(|c| match c {
        ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
        _ => None,
    })?;
    // SAFETY: SCM_RIGHTS gave this process a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let who = (got == data.len())
        .then(|| Identity::from_bytes(&data))
        .flatten();
    Some((fd, who))
}

/// How the supervisor answers one call.
enum Answer {
    /// Let the kernel run the call as made.
    Continue,
    /// The call succeeded, returning this.
    Done(i64),
}

/// Answers the calls until every process under the filter is gone.
pub(crate) fn supervise(listener: OwnedFd, who: Option<Identity>) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    loop {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        let revents = fds[0].revents().unwrap_or(PollFlags::POLLHUP);
        if revents.contains(PollFlags::POLLIN) {
            serve_one(&listener, who);
        } else if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL)
        {
            return;
        }
    }
}

fn serve_one(listener: &OwnedFd, who: Option<Identity>) {
    // SAFETY: seccomp_notif is plain data; the kernel wants it zeroed before RECV.
    let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: RECV fills `req`, which lives for the call.
    if unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV,
            &mut req,
        )
    } < 0
    {
        // The caller died meanwhile (ENOENT), or a signal interrupted us: nothing to answer.
        return;
    }
    let nr = i64::from(req.data.nr);
    let as_user = who.and_then(|w| super::identity::answer(nr, req.data.args, w));
    let answer = match as_user {
        Some((val, writes)) => {
            // An id that cannot be written leaves the call to the kernel (which answers root).
            let written = writes
                .iter()
                .all(|(addr, id)| write_struct(req.pid, *addr, id).is_ok());
            if written {
                Answer::Done(val)
            } else {
                Answer::Continue
            }
        }
        None => decode(nr, req.data.args)
            .and_then(|call| answer(listener, &req, call).ok())
            .unwrap_or(Answer::Continue),
    };
    let mut resp = libc::seccomp_notif_resp {
        id: req.id,
        val: 0,
        error: 0,
        flags: 0,
    };
    match answer {
        Answer::Continue => resp.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
        Answer::Done(val) => resp.val = val,
    }
    // SAFETY: SEND reads `resp`, which lives for the call. A caller killed meanwhile makes it
    // fail with ENOENT, which needs no handling.
    unsafe {
        libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &resp);
    }
}

/// Fails (and the call goes to the kernel) wherever the target cannot be found here.
fn answer(listener: &OwnedFd, req: &libc::seccomp_notif, call: Call) -> std::io::Result<Answer> {
    let pid = req.pid;
    // The pid could have been reused since the call was made: only a live call is answered.
    let live = || {
        // SAFETY: ID_VALID reads the u64 id, which lives for the call.
        let rc = unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
                &req.id,
            )
        };
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    let target = match call {
        Call::Chown { target, .. } | Call::Stat { target, .. } | Call::Statx { target, .. } => {
            target
        }
        Call::Mknod {
            dirfd,
            addr,
            mode,
            dev,
        } => {
            // A failure leaves the call to the kernel, which gives the errno it would have.
            let (parent, name) = open_parent(pid, dirfd, addr)?;
            live()?;
            return Ok(
                match super::devices::mknod(pid, &parent, &name, mode, dev)? {
                    true => Answer::Done(0),
                    false => Answer::Continue,
                },
            );
        }
    };
    let file = open_target(pid, target)?;
    live()?;
    let proc_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    // A symlink's owner is recorded on its directory (`owner::link`).
    let is_link = rustix::fs::fstat(&file).is_ok_and(|s| {
        rustix::fs::FileType::from_raw_mode(s.st_mode) == rustix::fs::FileType::Symlink
    });
    let link = match target {
        Target::Path {
            dirfd,
            addr,
            follow: false,
            ..
        } if is_link => Some(open_parent(pid, dirfd, addr)?),
        _ => None,
    };
    let recorded = match &link {
        Some((dir, name)) => link::link_recorded(dir, name),
        None => umstage_oci::owner::recorded(&file),
    };
    let device = umstage_oci::device::recorded(&file);
    match call {
        Call::Chown { uid, gid, .. } => {
            let now = match recorded {
                Some(owner) => owner,
                None => {
                    let st = rustix::fs::fstat(&file)?;
                    Owner {
                        uid: st.st_uid,
                        gid: st.st_gid,
                    }
                }
            };
            let new = Owner {
                uid: if uid == u32::MAX { now.uid } else { uid },
                gid: if gid == u32::MAX { now.gid } else { gid },
            };
            match &link {
                Some((dir, name)) => link::record_link(dir, name, new)?,
                None => {
                    record(&file, &proc_path, new)?;
                    clear_set_ids(&file, &proc_path)?;
                }
            }
            Ok(Answer::Done(0))
        }
        Call::Stat { buf, .. } => {
            if recorded.is_none() && device.is_none() {
                return Ok(Answer::Continue);
            }
            // SAFETY: stat is plain data.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: fstat writes `st`, which lives for the call.
            if unsafe { libc::fstat(file.as_raw_fd(), &mut st) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(owner) = recorded {
                st.st_uid = owner.uid;
                st.st_gid = owner.gid;
            }
            if let Some(device) = device {
                super::devices::patch_stat(&mut st, device);
            }
            write_struct(pid, buf, &st)?;
            Ok(Answer::Done(0))
        }
        Call::Statx {
            buf, flags, mask, ..
        } => {
            if recorded.is_none() && device.is_none() {
                return Ok(Answer::Continue);
            }
            // SAFETY: statx is plain data.
            let mut stx: libc::statx = unsafe { std::mem::zeroed() };
            let sync = flags & libc::AT_STATX_SYNC_TYPE;
            // SAFETY: statx writes `stx`, which lives for the call; the path is a C string.
            let rc = unsafe {
                libc::statx(
                    file.as_raw_fd(),
                    c"".as_ptr(),
                    libc::AT_EMPTY_PATH | sync,
                    mask,
                    &mut stx,
                )
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(owner) = recorded {
                stx.stx_uid = owner.uid;
                stx.stx_gid = owner.gid;
            }
            if let Some(device) = device {
                super::devices::patch_statx(&mut stx, device);
            }
            write_struct(pid, buf, &stx)?;
            Ok(Answer::Done(0))
        }
        Call::Mknod { .. } => Ok(Answer::Continue),
    }
}

/// Opens what a call names as an `O_PATH` descriptor, resolving paths in the caller's root.
fn open_target(pid: u32, target: Target) -> std::io::Result<OwnedFd> {
    match target {
        Target::Fd(fd) => open_proc(pid, &format!("fd/{fd}")),
        Target::Path {
            dirfd,
            addr,
            follow,
            empty_ok,
        } => open_path(pid, dirfd, &read_path(pid, addr)?, follow, empty_ok),
    }
}

/// Opens `/proc/PID/<rest>` as an `O_PATH` descriptor (which follows the magic link to the
/// file itself, whatever kind it is).
fn open_proc(pid: u32, rest: &str) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        format!("/proc/{pid}/{rest}"),
        OFlags::PATH | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?)
}

/// Opens `path` of process `pid` (relative to its `dirfd`) as an `O_PATH` descriptor,
/// resolving it in the caller's root.
fn open_path(
    pid: u32,
    dirfd: i32,
    path: &Path,
    follow: bool,
    empty_ok: bool,
) -> std::io::Result<OwnedFd> {
    let proc = |rest: String| open_proc(pid, &rest);
    let base = |p: &Path| {
        if p.is_absolute() {
            proc("root".into())
        } else if dirfd == libc::AT_FDCWD {
            proc("cwd".into())
        } else {
            proc(format!("fd/{dirfd}"))
        }
    };
    if path.as_os_str().is_empty() {
        if !empty_ok {
            return Err(std::io::Error::from_raw_os_error(libc::ENOENT));
        }
        return base(path);
    }
    // A relative path is resolved with its directory as the root: one that climbs out of it
    // goes to the kernel untouched rather than being resolved wrongly.
    if path.is_relative()
        && path
            .components()
            .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(std::io::Error::from_raw_os_error(libc::EXDEV));
    }
    let flags = OFlags::PATH
        | if follow {
            OFlags::empty()
        } else {
            OFlags::NOFOLLOW
        };
    umstage_oci::inroot::open_in_root(base(path)?, path, flags)
}

/// Opens the directory a `mknod`'s path (at `addr`, relative to `dirfd`) makes its entry in,
/// as an `O_PATH` descriptor resolved in the caller's root, with the entry's name.
fn open_parent(pid: u32, dirfd: i32, addr: u64) -> std::io::Result<(OwnedFd, OsString)> {
    let path = read_path(pid, addr)?;
    let name = match path.file_name() {
        Some(name) if !path.as_os_str().as_bytes().ends_with(b"/") => name.to_owned(),
        _ => return Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
    };
    let parent = path.parent().unwrap_or(Path::new(""));
    Ok((open_path(pid, dirfd, parent, true, true)?, name))
}

/// A chown of a file that is not a directory clears its set-user-id bit, and its set-group-id
/// bit where group execution is allowed, for root too (as the kernel does since Linux 2.2.13).
pub(super) fn clear_set_ids(file: &OwnedFd, path: &Path) -> std::io::Result<()> {
    let st = rustix::fs::fstat(file)?;
    let file_type = rustix::fs::FileType::from_raw_mode(st.st_mode);
    if file_type != rustix::fs::FileType::RegularFile {
        return Ok(());
    }
    let mut mode = st.st_mode & 0o7777;
    mode &= !0o4000;
    if mode & 0o010 != 0 {
        mode &= !0o2000;
    }
    if mode != st.st_mode & 0o7777 {
        rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(mode))?;
    }
    Ok(())
}

/// Reads a NUL-terminated path from the caller's memory, a page at a time.
fn read_path(pid: u32, addr: u64) -> std::io::Result<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let mem = File::open(format!("/proc/{pid}/mem"))?;
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < libc::PATH_MAX as usize {
        let in_page = 4096 - (at % 4096) as usize;
        let mut chunk = vec![0u8; in_page];
        let n = mem.read_at(&mut chunk, at)?;
        if n == 0 {
            break;
        }
        if let Some(end) = chunk[..n].iter().position(|b| *b == 0) {
            out.extend_from_slice(&chunk[..end]);
            return Ok(PathBuf::from(std::ffi::OsString::from_vec(out)));
        }
        out.extend_from_slice(&chunk[..n]);
        at += n as u64;
    }
    Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG))
}

fn write_struct<T>(pid: u32, addr: u64, value: &T) -> std::io::Result<()> {
    // SAFETY: `value` is a plain C struct; its bytes are read for its own size.
    let bytes = unsafe {
        std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>())
    };
    let mem = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))?;
    mem.write_all_at(bytes, addr)
}

/// Records `owner` on `file`, through `path` (its `/proc/self/fd` link, which the xattr
/// calls follow to the file itself); 0:0 needs no record. A symlink takes no user xattr: its
/// owner goes unrecorded, and the call still succeeds, as it would for root.
pub(super) fn record(file: &OwnedFd, path: &Path, owner: Owner) -> std::io::Result<()> {
    let is_symlink = rustix::fs::fstat(file).is_ok_and(|s| {
        rustix::fs::FileType::from_raw_mode(s.st_mode) == rustix::fs::FileType::Symlink
    });
    if is_symlink {
        return Ok(());
    }
    let result = if owner == Owner::default() {
        match rustix::fs::removexattr(path, XATTR) {
            Err(rustix::io::Errno::NODATA) => Ok(()),
            other => other,
        }
    } else {
        rustix::fs::setxattr(path, XATTR, &owner.encode(), XattrFlags::empty())
    };
    result.map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_decode_to_their_target_and_ids() {
        let chown = decode(
            libc::SYS_fchownat,
            [
                libc::AT_FDCWD as u64,
                0x1000,
                1234,
                u64::from(u32::MAX),
                libc::AT_SYMLINK_NOFOLLOW as u64,
                0,
            ],
        );
        assert_eq!(
            chown,
            Some(Call::Chown {
                target: Target::Path {
                    dirfd: libc::AT_FDCWD,
                    addr: 0x1000,
                    follow: false,
                    empty_ok: false
                },
                uid: 1234,
                gid: u32::MAX,
            })
        );
        let statx = decode(
            libc::SYS_statx,
            [3, 0x2000, libc::AT_EMPTY_PATH as u64, 0x7ff, 0x3000, 0],
        );
        assert!(matches!(
            statx,
            Some(Call::Statx {
                buf: 0x3000,
                mask: 0x7ff,
                target: Target::Path {
                    dirfd: 3,
                    empty_ok: true,
                    follow: true,
                    ..
                },
                ..
            })
        ));
        assert_eq!(
            decode(libc::SYS_fstat, [5, 0x4000, 0, 0, 0, 0]),
            Some(Call::Stat {
                target: Target::Fd(5),
                buf: 0x4000
            })
        );
        assert_eq!(decode(libc::SYS_openat, [0; 6]), None);
    }

    #[test]
    fn every_intercepted_call_decodes_and_the_filter_ends_in_two_returns() {
        for nr in intercepted(false) {
            assert!(decode(nr, [0; 6]).is_some(), "{nr}");
        }
        let prog = program(false);
        assert_eq!(prog.len(), intercepted(false).len() + 5);
        assert_eq!(program(true).len(), intercepted(true).len() + 5);
        assert_eq!(prog[prog.len() - 1].k, libc::SECCOMP_RET_USER_NOTIF);
        assert_eq!(prog[prog.len() - 2].k, libc::SECCOMP_RET_ALLOW);
    }
}
