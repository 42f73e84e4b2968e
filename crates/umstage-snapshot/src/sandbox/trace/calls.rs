//! What the supervisor does at a traced call's entry (translate its paths, answer it itself,
//! or refuse it) and at its exit (patch what it wrote, give back the registers it was given).

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use libc::user_regs_struct;
use nix::unistd::Pid;
use rustix::fs::{Mode, OFlags};
use umstage_oci::device::Device;
use umstage_oci::owner::{self, Owner};

use super::super::identity::{self, Identity};
use super::super::owners;
use super::context::Context;
use super::errno::errno;
use super::memory::{self, Scratch};
use super::paths::Follow;
use super::private::{CopyUp, Private};
use super::regs::{arg, set_arg};
use super::slots::Slot;
use super::sockets;
use super::syscalls::{How, Kind, PathArg};

/// What to do after a call's entry stop.
pub(super) enum Entry {
    /// Let it run as made, with no exit stop.
    Pass,
    /// Do not run it; it returns this (a negative errno for a failure).
    Skip(i64),
    /// It runs with rewritten arguments; the exit stop finishes it.
    Rewritten(Box<Pending>),
    /// It needs a scratch slot of this many bytes first: nothing was done, it runs again then.
    Scratch(u64),
}

/// A rewritten call waiting for its exit stop.
pub(super) struct Pending {
    saved: user_regs_struct,
    post: Post,
}

impl Pending {
    /// After a successful exec: the guest path of the dynamic program it started, which the
    /// kernel sees as the loader.
    pub(super) fn into_exe(self) -> Option<Vec<u8>> {
        match self.post {
            Post::Exec(exe) => exe,
            _ => None,
        }
    }
}

/// What the exit stop does besides giving the arguments back.
enum Post {
    Restore,
    /// The call was an exec, of a dynamic program at this guest path when it is `Some`: at
    /// its exit it failed (a successful exec never returns).
    Exec(Option<Vec<u8>>),
    /// Give the `/proc` link `link`'s host path back as the guest's.
    Readlink {
        link: Vec<u8>,
        buf: u64,
        size: u64,
    },
    /// The call made the file at this host path: it is this user's.
    Own(Vec<u8>, Owner),
    /// `uname` filled the `struct utsname` at this address: its node name is the step's.
    Uname(u64),
}

/// A file a call names, for the supervisor to open.
enum Target {
    /// A host path (after translation), following a final symlink or not.
    Host(Vec<u8>, Follow),
    /// `/proc/PID/<this>`: a descriptor or the working directory of the caller.
    Proc(String),
}

impl Context {
    /// The entry of a call: `regs` may be rewritten (the caller sets them).
    /// `exe` is the guest path of the program the caller runs where the kernel's answer would
    /// name the dynamic loader (see `exec`).
    pub(super) fn enter(
        &self,
        pid: Pid,
        regs: &mut user_regs_struct,
        who: &mut Identity,
        exe: Option<&[u8]>,
        slot: Option<Slot>,
    ) -> Entry {
        // A read-only mount's files are neither copied up nor changed.
        if let Some(kind) = super::syscalls::kind(regs.orig_rax as i64)
            && let Err(e) = self.refuse_read_only(pid, regs, kind)
        {
            return Entry::Skip(-i64::from(e));
        }
        // A copy-up cannot be done twice: a thread without a slot gets one before it starts.
        if slot.is_none() && super::copyup::changes(regs) {
            return Entry::Scratch(libc::PATH_MAX as u64);
        }
        let saved = *regs;
        let mut scratch = Scratch::new(pid, slot);
        match self.copy_up(pid, regs, &mut scratch) {
            Ok(None) => {}
            Ok(Some(value)) => return Entry::Skip(value),
            Err(e) => {
                *regs = saved;
                return Entry::Skip(-i64::from(e));
            }
        }
        let Some(kind) = super::syscalls::kind(regs.orig_rax as i64) else {
            return Entry::Pass;
        };
        let pending = |post| Entry::Rewritten(Box::new(Pending { saved, post }));
        let result: Result<Entry, i32> = (|| match kind {
            Kind::Paths(args) => {
                let mut hosts = Vec::with_capacity(args.len());
                for a in args {
                    hosts.push(self.translate(pid, regs, &mut scratch, *a)?);
                }
                // A rename or link between the root and a mount, or two mounts, fails as
                // across real mounts: nothing of one tree may become part of another (a
                // snapshot's shared file in a cache directory, a cache file in a snapshot).
                if let [Some((from, _)), Some((to, _))] = hosts.as_slice()
                    && self.root.tree_of(from) != self.root.tree_of(to)
                {
                    return Err(libc::EXDEV);
                }
                let any = hosts.iter().any(Option::is_some);
                Ok(if any {
                    pending(Post::Restore)
                } else {
                    Entry::Pass
                })
            }
            Kind::Creates { path, flags } => {
                let creating = flags.is_none_or(|i| arg(&saved, i) as i32 & libc::O_CREAT != 0);
                let post = self.creates(pid, regs, &mut scratch, path, creating, who)?;
                Ok(post.map_or(Entry::Pass, pending))
            }
            Kind::Mknod { path, mode, dev } => {
                let (mode, dev) = (arg(regs, mode) as u32, arg(regs, dev));
                if Device::from_mknod(mode, dev).is_none() {
                    let post = self.creates(pid, regs, &mut scratch, path, true, who)?;
                    return Ok(post.map_or(Entry::Pass, pending));
                }
                let Some((host, _)) = self.host_path(pid, regs, path)? else {
                    return Ok(Entry::Pass);
                };
                let owner = Owner {
                    uid: who.uid,
                    gid: who.gid,
                };
                super::devices::mknod(pid, &host, mode, dev, owner).map_err(errno)?;
                Ok(Entry::Skip(0))
            }
            Kind::Stat {
                path,
                fd,
                buf,
                statx,
            } => {
                let Some(target) = self.target(pid, regs, path, fd)? else {
                    return Ok(Entry::Pass);
                };
                // Answered here, in one stop: the call needs nothing of the kernel's but the
                // owner, which is patched anyway.
                let statx = statx.then(|| (arg(regs, 2) as i32, arg(regs, 3) as u32));
                stat_into(pid, &target, arg(regs, buf), statx).map_err(errno)?;
                Ok(Entry::Skip(0))
            }
            Kind::Chown { path, fd, uid, gid } => {
                let (uid, gid) = (arg(regs, uid) as u32, arg(regs, gid) as u32);
                let Some(target) = self.target(pid, regs, path, fd)? else {
                    return Ok(Entry::Pass);
                };
                chown(&self.cow, pid, &target, uid, gid).map_err(errno)?;
                Ok(Entry::Skip(0))
            }
            Kind::Readlink { path, buf, size } => {
                // The caller's own exe is its program, not the loader that runs it.
                let own_exe = format!("/proc/{pid}/exe").into_bytes();
                if let Some(exe) = exe
                    && self
                        .host_path(pid, regs, path)?
                        .is_some_and(|(l, _)| l == own_exe)
                {
                    let n = exe.len().min(arg(regs, size) as usize);
                    memory::write(pid, arg(regs, buf), &exe[..n]).map_err(errno)?;
                    return Ok(Entry::Skip(n as i64));
                }
                let translated = self.translate(pid, regs, &mut scratch, path)?;
                let (buf, size) = (arg(&saved, buf), arg(&saved, size));
                Ok(match translated {
                    Some((link, _)) if link.starts_with(b"/proc/") => {
                        pending(Post::Readlink { link, buf, size })
                    }
                    Some(_) => pending(Post::Restore),
                    None => Entry::Pass,
                })
            }
            Kind::Getcwd => self.getcwd(pid, regs).map(Entry::Skip),
            Kind::Identity => {
                let args = [0, 1, 2, 3, 4, 5].map(|i| arg(regs, i));
                let nr = regs.orig_rax as i64;
                let Some((value, writes)) = identity::answer(nr, args, *who) else {
                    return Ok(Entry::Pass);
                };
                for (addr, id) in writes {
                    memory::write(pid, addr, &id.to_ne_bytes()).map_err(errno)?;
                }
                *who = after(nr, args, *who);
                Ok(Entry::Skip(value))
            }
            Kind::Exec { path, argv } => {
                let exe = super::exec::rewrite(self, pid, regs, &mut scratch, path, argv, exe)?;
                Ok(pending(Post::Exec(exe)))
            }
            Kind::Socket { addr, len, follow } => {
                let follow = if follow { Follow::Yes } else { Follow::No };
                let rewritten = self.socket(pid, regs, &mut scratch, (addr, len), follow)?;
                Ok(if rewritten {
                    pending(Post::Restore)
                } else {
                    Entry::Pass
                })
            }
            Kind::SendMsg { msg } => {
                let rewritten = self.sendmsg(pid, regs, &mut scratch, msg)?;
                Ok(if rewritten {
                    pending(Post::Restore)
                } else {
                    Entry::Pass
                })
            }
            Kind::Refuse(e) => Err(e),
            Kind::Uname => Ok(pending(Post::Uname(arg(regs, 0)))),
            Kind::Prctl if arg(regs, 0) == libc::PR_SET_DUMPABLE as u64 => Ok(Entry::Skip(0)),
            Kind::Prctl | Kind::ChangesFd => Ok(Entry::Pass),
        })();
        if let Some(need) = scratch.short_of() {
            *regs = saved;
            return Entry::Scratch(need);
        }
        match result {
            Ok(entry) => entry,
            Err(e) => {
                *regs = saved;
                Entry::Skip(-i64::from(e))
            }
        }
    }

    /// The exit of a rewritten call: finishes it and gives the caller its arguments back.
    pub(super) fn exit(&self, pid: Pid, regs: &mut user_regs_struct, pending: Box<Pending>) {
        let ret = regs.rax as i64;
        match pending.post {
            Post::Restore | Post::Exec(_) => {}
            Post::Readlink { link, buf, size } if ret > 0 => {
                if let Some(len) = self.readlink_to_guest(pid, &link, buf, size as usize) {
                    regs.rax = len as u64;
                }
            }
            Post::Own(host, owner) if ret >= 0 => {
                let made = Target::Host(host, Follow::No);
                if let Err(e) = open(pid, &made).and_then(|(fd, p)| owners::record(&fd, &p, owner))
                {
                    tracing::debug!("recording the step's user as an owner: {e}");
                }
            }
            Post::Uname(buf) if ret == 0 => {
                // struct utsname: six fields of 65 bytes; the node name is the second.
                const FIELD: usize = 65;
                let mut name = [0u8; FIELD];
                let n = self.hostname.len().min(FIELD - 1);
                name[..n].copy_from_slice(&self.hostname[..n]);
                if let Err(e) = memory::write(pid, buf + FIELD as u64, &name) {
                    tracing::debug!("uname's node name: {e}");
                }
            }
            Post::Readlink { .. } | Post::Own(..) | Post::Uname(_) => {}
        }
        for i in 0..6 {
            set_arg(regs, i, arg(&pending.saved, i));
        }
    }

    /// A call that may create the file at path argument `a` (translated in place): what its
    /// exit does, where a step with a non-root user owns what it creates; `None` where the
    /// path stays as it is.
    fn creates(
        &self,
        pid: Pid,
        regs: &mut user_regs_struct,
        scratch: &mut Scratch,
        a: PathArg,
        creating: bool,
        who: &Identity,
    ) -> Result<Option<Post>, i32> {
        let Some((host, _)) = self.translate(pid, regs, scratch, a)? else {
            return Ok(None);
        };
        let owner = Owner {
            uid: who.uid,
            gid: who.gid,
        };
        let new = creating
            && owner != Owner::default()
            && rustix::fs::lstat(Path::new(std::ffi::OsStr::from_bytes(&host)))
                .is_err_and(|e| e == rustix::io::Errno::NOENT);
        Ok(Some(if new {
            Post::Own(host, owner)
        } else {
            Post::Restore
        }))
    }

    /// Translates path argument `a` in place; the host path, or `None` where it stays as it is
    /// (no path, an empty one, or one relative to something outside the guest's view).
    pub(super) fn translate(
        &self,
        pid: Pid,
        regs: &mut user_regs_struct,
        scratch: &mut Scratch,
        a: PathArg,
    ) -> Result<Option<(Vec<u8>, Follow)>, i32> {
        let Some((host, follow)) = self.host_path(pid, regs, a)? else {
            return Ok(None);
        };
        let at = scratch.put_cstr(&host).map_err(errno)?;
        set_arg(regs, a.path, at);
        if let Some(dirfd) = a.dirfd {
            set_arg(regs, dirfd, libc::AT_FDCWD as u64);
        }
        Ok(Some((host, follow)))
    }

    /// The host path for path argument `a`, and whether the call follows a final symlink.
    pub(super) fn host_path(
        &self,
        pid: Pid,
        regs: &user_regs_struct,
        a: PathArg,
    ) -> Result<Option<(Vec<u8>, Follow)>, i32> {
        let addr = arg(regs, a.path);
        if addr == 0 {
            return Ok(None);
        }
        let path = memory::read_cstr(pid, addr).map_err(errno)?;
        if path.is_empty() {
            return Ok(None);
        }
        let dirfd = a.dirfd.map_or(libc::AT_FDCWD, |i| arg(regs, i) as i32);
        let Some(guest) = self.root.absolute(pid, dirfd, &path) else {
            return Ok(None);
        };
        let flag = |i: usize| arg(regs, i) as i32;
        let follow = match a.how {
            How::Follow => Follow::Yes,
            How::NoFollow => Follow::No,
            How::AtFlags(i) if flag(i) & libc::AT_SYMLINK_NOFOLLOW != 0 => Follow::No,
            How::AtFlags(_) => Follow::Yes,
            How::LinkFlags(i) if flag(i) & libc::AT_SYMLINK_FOLLOW != 0 => Follow::Yes,
            How::LinkFlags(_) => Follow::No,
            How::OpenFlags(i) => {
                let f = flag(i);
                let exclusive = f & libc::O_CREAT != 0 && f & libc::O_EXCL != 0;
                if f & libc::O_NOFOLLOW != 0 || exclusive {
                    Follow::No
                } else {
                    Follow::Yes
                }
            }
        };
        Ok(Some((self.root.to_host(pid, &guest, follow)?, follow)))
    }

    /// The file a `stat` or `chown` names: its host path, or the descriptor (or working
    /// directory) it acts on; `None` where the call is left to the kernel.
    fn target(
        &self,
        pid: Pid,
        regs: &user_regs_struct,
        path: Option<PathArg>,
        fd: usize,
    ) -> Result<Option<Target>, i32> {
        let Some(a) = path else {
            return Ok(Some(Target::Proc(format!("fd/{}", arg(regs, fd) as i32))));
        };
        if let Some((host, follow)) = self.host_path(pid, regs, a)? {
            return Ok(Some(Target::Host(host, follow)));
        }
        let addr = arg(regs, a.path);
        if addr == 0 || !memory::read_cstr(pid, addr).is_ok_and(|p| p.is_empty()) {
            return Ok(None);
        }
        // An empty path names the directory argument itself with AT_EMPTY_PATH, else nothing.
        let empty_ok = match a.how {
            How::AtFlags(i) => arg(regs, i) as i32 & libc::AT_EMPTY_PATH != 0,
            _ => false,
        };
        match a.dirfd.map(|i| arg(regs, i) as i32) {
            Some(libc::AT_FDCWD) if empty_ok => Ok(Some(Target::Proc("cwd".into()))),
            Some(dirfd) if empty_ok => Ok(Some(Target::Proc(format!("fd/{dirfd}")))),
            _ => Err(libc::ENOENT),
        }
    }

    /// A unix socket address's path translated in place (arguments `addr` and its length);
    /// whether there was one.
    fn socket(
        &self,
        pid: Pid,
        regs: &mut user_regs_struct,
        scratch: &mut Scratch,
        (addr, len): (usize, usize),
        follow: Follow,
    ) -> Result<bool, i32> {
        let at = arg(regs, addr);
        let size = (arg(regs, len) as usize).min(sockets::SIZE);
        if at == 0 {
            return Ok(false);
        }
        let bytes = memory::read(pid, at, size).map_err(errno)?;
        let Some(new) = self.unix_address(pid, &bytes, follow)? else {
            return Ok(false);
        };
        let new_at = scratch.put(&new).map_err(errno)?;
        set_arg(regs, addr, new_at);
        set_arg(regs, len, new.len() as u64);
        Ok(true)
    }

    /// `getcwd`: the guest's path of the working directory, written into the caller's buffer;
    /// the call's return value.
    fn getcwd(&self, pid: Pid, regs: &user_regs_struct) -> Result<i64, i32> {
        let host = std::fs::read_link(format!("/proc/{pid}/cwd")).map_err(errno)?;
        let host = host.as_os_str().as_bytes();
        let mut guest = self.root.to_guest(host).unwrap_or_else(|| host.to_vec());
        guest.push(0);
        if guest.len() as u64 > arg(regs, 1) {
            return Err(libc::ERANGE);
        }
        memory::write(pid, arg(regs, 0), &guest).map_err(errno)?;
        Ok(guest.len() as i64)
    }

    /// Writes the guest's path for the target of the `/proc` link `link` (read here whole:
    /// the caller's buffer may have cut the host path short) into the caller's buffer; the
    /// new length, or `None` where the answer stands (a pipe, a path outside the guest).
    fn readlink_to_guest(&self, pid: Pid, link: &[u8], buf: u64, size: usize) -> Option<usize> {
        // `self` in the link is the caller, not this process.
        let link = if let Some(rest) = link.strip_prefix(b"/proc/self/") {
            [format!("/proc/{pid}/").as_bytes(), rest].concat()
        } else if let Some(rest) = link.strip_prefix(b"/proc/thread-self/") {
            [format!("/proc/{pid}/task/{pid}/").as_bytes(), rest].concat()
        } else {
            link.to_vec()
        };
        let host = std::fs::read_link(std::ffi::OsStr::from_bytes(&link)).ok()?;
        let host = host.as_os_str().as_bytes();
        let guest = self.root.to_guest(host)?;
        if guest == host {
            return None;
        }
        let n = guest.len().min(size);
        memory::write(pid, buf, &guest[..n]).ok()?;
        Some(n)
    }
}

/// Opens what `target` names as an `O_PATH` descriptor, with the path of its `/proc` link.
fn open(pid: Pid, target: &Target) -> std::io::Result<(OwnedFd, PathBuf)> {
    let flags = OFlags::PATH | OFlags::CLOEXEC;
    let fd = match target {
        Target::Host(host, follow) => {
            let nofollow = match follow {
                Follow::Yes => OFlags::empty(),
                Follow::No => OFlags::NOFOLLOW,
            };
            let path = Path::new(std::ffi::OsStr::from_bytes(host));
            // A resolved path has no symlink but a /proc magic link: one elsewhere was swapped
            // in since, and the supervisor, outside Landlock, must not follow it to the host.
            if host.starts_with(b"/proc/") {
                rustix::fs::open(path, flags | nofollow, Mode::empty())?
            } else {
                umstage_oci::inroot::open_no_symlinks(path, OFlags::PATH | nofollow)?
            }
        }
        Target::Proc(rest) => {
            rustix::fs::open(format!("/proc/{pid}/{rest}"), flags, Mode::empty())?
        }
    };
    let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    Ok((fd, path))
}

/// The owner a file shows: its record, or its real owner as the image sees it.
fn shown(fd: &OwnedFd, path: &Path) -> std::io::Result<Owner> {
    let read = || match rustix::fs::getxattr(path, umstage_oci::owner::XATTR, &mut [0u8; 32]) {
        Err(rustix::io::Errno::NODATA | rustix::io::Errno::NOTSUP) => Ok(None),
        Err(e) => Err(std::io::Error::from(e)),
        Ok(_) => Ok(umstage_oci::owner::recorded_at(path)),
    };
    // A file whose record cannot be read even so (a /proc file) has none.
    if let Ok(Some(recorded)) = as_owner(fd, path, read) {
        return Ok(recorded);
    }
    let st = rustix::fs::fstat(fd)?;
    Ok(owner::in_image(st.st_uid, st.st_gid))
}

/// Where `target` is a symlink itself (a path whose final symlink is not followed): its
/// directory and its name there, which its owner's record is kept by (`owner::link`).
fn link_of(target: &Target, fd: &OwnedFd) -> Option<(OwnedFd, std::ffi::OsString)> {
    let Target::Host(host, Follow::No) = target else {
        return None;
    };
    let st = rustix::fs::fstat(fd).ok()?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Symlink {
        return None;
    }
    let path = Path::new(std::ffi::OsStr::from_bytes(host));
    // Not through a symlink swapped in since the path was resolved (the supervisor is not
    // confined by Landlock).
    let flags = OFlags::PATH | OFlags::DIRECTORY;
    let dir = umstage_oci::inroot::open_no_symlinks(path.parent()?, flags).ok()?;
    Some((dir, path.file_name()?.to_owned()))
}

/// The owner the symlink `fd` (`name` in `dir`) shows: its record, or its real owner as the
/// image sees it.
fn link_shown(fd: &OwnedFd, dir: &OwnedFd, name: &std::ffi::OsStr) -> std::io::Result<Owner> {
    if let Some(recorded) = owner::link::link_recorded(dir, name) {
        return Ok(recorded);
    }
    let st = rustix::fs::fstat(fd)?;
    Ok(owner::in_image(st.st_uid, st.st_gid))
}

/// Runs `op`, an xattr access; where it is refused on a file of ours whose mode denies us
/// reading or writing it (played root makes such files: shadow's tools create theirs with
/// mode 000), again with owner read and write added for the time of `op`: real root needs
/// no permission for it.
fn as_owner<T>(
    fd: &OwnedFd,
    path: &Path,
    op: impl Fn() -> std::io::Result<T>,
) -> std::io::Result<T> {
    let first = op();
    let Err(refused) = &first else {
        return first;
    };
    let st = rustix::fs::fstat(fd)?;
    let mode = st.st_mode & 0o7777;
    let locked = refused.raw_os_error() == Some(libc::EACCES)
        && rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Symlink
        && mode & 0o600 != 0o600
        && st.st_uid == nix::unistd::geteuid().as_raw();
    if !locked || rustix::fs::chmod(path, Mode::from_raw_mode(mode | 0o600)).is_err() {
        return first;
    }
    let result = op();
    rustix::fs::chmod(path, Mode::from_raw_mode(mode))?;
    result
}

/// A `chown`, recorded (`u32::MAX` keeps that id) on the step's own inode.
fn chown(cow: &CopyUp, pid: Pid, target: &Target, uid: u32, gid: u32) -> std::io::Result<()> {
    let (fd, path) = open(pid, target)?;
    let link = link_of(target, &fd);
    // A symlink's owner is recorded in its directory, which is the step's own.
    let private = match link {
        Some(_) => Private::Already,
        None => cow
            .private(&fd)
            .map_err(std::io::Error::from_raw_os_error)?,
    };
    let (fd, path) = match private {
        Private::Already => (fd, path),
        Private::Copied(real) => open(pid, &Target::Host(real, Follow::No))?,
        // The parent's file, no longer in the step's root: nothing to record it on.
        Private::Gone => return Ok(()),
    };
    let now = match &link {
        Some((dir, name)) => link_shown(&fd, dir, name)?,
        None => shown(&fd, &path)?,
    };
    let new = Owner {
        uid: if uid == u32::MAX { now.uid } else { uid },
        gid: if gid == u32::MAX { now.gid } else { gid },
    };
    if let Some((dir, name)) = &link {
        return owner::link::record_link(dir, name, new);
    }
    as_owner(&fd, &path, || owners::record(&fd, &path, new))?;
    owners::clear_set_ids(&fd, &path)
}

/// A `stat` (or, with its flags and mask, `statx`) of `target`, with the owner it shows,
/// written into the caller's buffer at `buf`.
fn stat_into(
    pid: Pid,
    target: &Target,
    buf: u64,
    statx: Option<(i32, u32)>,
) -> std::io::Result<()> {
    let (fd, path) = open(pid, target)?;
    let owner = match link_of(target, &fd) {
        Some((dir, name)) => link_shown(&fd, &dir, &name)?,
        None => shown(&fd, &path)?,
    };
    let device = umstage_oci::device::recorded(&fd);
    match statx {
        None => {
            // SAFETY: stat is plain data.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: fstat writes `st`, which lives for the call.
            if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
            st.st_uid = owner.uid;
            st.st_gid = owner.gid;
            if let Some(device) = device {
                super::super::devices::patch_stat(&mut st, device);
            }
            memory::write(pid, buf, as_bytes(&st))
        }
        Some((flags, mask)) => {
            // SAFETY: statx is plain data.
            let mut stx: libc::statx = unsafe { std::mem::zeroed() };
            let sync = flags & libc::AT_STATX_SYNC_TYPE;
            // SAFETY: statx writes `stx`, which lives for the call; the path is a C string.
            let rc = unsafe {
                libc::statx(
                    fd.as_raw_fd(),
                    c"".as_ptr(),
                    libc::AT_EMPTY_PATH | sync,
                    mask,
                    &mut stx,
                )
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            stx.stx_uid = owner.uid;
            stx.stx_gid = owner.gid;
            if let Some(device) = device {
                super::super::devices::patch_statx(&mut stx, device);
            }
            memory::write(pid, buf, as_bytes(&stx))
        }
    }
}

/// A plain C struct's bytes.
fn as_bytes<T>(value: &T) -> &[u8] {
    // SAFETY: `value` is a plain C struct (no padding is read as anything but bytes); its
    // bytes are read for its own size.
    unsafe {
        std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>())
    }
}

/// The user a process is after a successful `setuid`-family call `nr` with `args`, where the
/// supervisor keeps one played user per process (the ptrace tier): the effective id given,
/// else the real one; other calls leave it.
fn after(nr: i64, args: [u64; 6], who: Identity) -> Identity {
    let given = |v: u64| (v as u32 != u32::MAX).then_some(v as u32);
    let (uid, gid) = match nr {
        libc::SYS_setuid => (given(args[0]), None),
        libc::SYS_setgid => (None, given(args[0])),
        libc::SYS_setreuid | libc::SYS_setresuid => (given(args[1]).or(given(args[0])), None),
        libc::SYS_setregid | libc::SYS_setresgid => (None, given(args[1]).or(given(args[0]))),
        _ => (None, None),
    };
    Identity {
        uid: uid.unwrap_or(who.uid),
        gid: gid.unwrap_or(who.gid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setuid_changes_the_played_user_by_its_effective_id() {
        let root = Identity { uid: 0, gid: 0 };
        let dropped = after(libc::SYS_setresuid, [42, 42, 42, 0, 0, 0], root);
        assert_eq!(dropped, Identity { uid: 42, gid: 0 });
        let keep = u64::from(u32::MAX);
        assert_eq!(
            after(libc::SYS_setregid, [keep, 7, keep, 0, 0, 0], dropped),
            Identity { uid: 42, gid: 7 }
        );
        assert_eq!(after(libc::SYS_getuid, [0; 6], dropped), dropped);
    }
}
