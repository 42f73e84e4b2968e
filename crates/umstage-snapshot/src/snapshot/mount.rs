//! Mounting a snapshot: overlayfs through the new mount API, bind mounts.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use serde::{Deserialize, Serialize};

/// How to mount one snapshot, in the spirit of containerd's `Mount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// `overlay` or `bind`.
    pub fstype: String,
    /// The bind source, or `overlay`.
    pub source: PathBuf,
    /// Options: for overlay `userxattr`, `lowerdir+=DIR` (top first), `upperdir=`, `workdir=`; for bind `ro`.
    pub options: Vec<String>,
}

impl MountSpec {
    /// An overlay of `lowers` (top first), writable when `upper_work` is given.
    pub(crate) fn overlay(lowers: &[PathBuf], upper_work: Option<(&Path, &Path)>) -> Self {
        let mut options = vec!["userxattr".to_string()];
        options.extend(lowers.iter().map(|l| format!("lowerdir+={}", l.display())));
        if let Some((upper, work)) = upper_work {
            options.push(format!("upperdir={}", upper.display()));
            options.push(format!("workdir={}", work.display()));
        }
        Self {
            fstype: "overlay".into(),
            source: PathBuf::from("overlay"),
            options,
        }
    }

    /// A bind mount of `dir`, read-only if asked.
    pub(crate) fn bind(dir: &Path, read_only: bool) -> Self {
        Self {
            fstype: "bind".into(),
            source: dir.to_path_buf(),
            options: if read_only {
                vec!["ro".into()]
            } else {
                Vec::new()
            },
        }
    }

    /// Whether the mount is read-only.
    pub fn is_read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
            || (self.fstype == "overlay"
                && !self.options.iter().any(|o| o.starts_with("upperdir=")))
    }

    /// Mounts it on `target` in this process's mount namespace.
    pub fn mount_at(&self, target: &Path) -> io::Result<()> {
        match self.fstype.as_str() {
            "overlay" => {
                let value = |prefix: &str| {
                    self.options
                        .iter()
                        .find_map(|o| o.strip_prefix(prefix).map(PathBuf::from))
                };
                let lowers: Vec<PathBuf> = self
                    .options
                    .iter()
                    .filter_map(|o| o.strip_prefix("lowerdir+=").map(PathBuf::from))
                    .collect();
                let upper = value("upperdir=");
                let work = value("workdir=");
                let upper_work = match (&upper, &work) {
                    (Some(u), Some(w)) => Some((u.as_path(), w.as_path())),
                    _ => None,
                };
                mount_overlay(&lowers, upper_work, target)
            }
            "bind" => bind_mount(&self.source, target, self.is_read_only()),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown snapshot mount type {other:?}"),
            )),
        }
    }
}

/// Bind-mounts `source` on `target`, then makes it read-only if asked (keeping locked flags).
pub(crate) fn bind_mount(source: &Path, target: &Path, read_only: bool) -> io::Result<()> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )?;
    if read_only {
        remount_read_only(target)?;
    }
    Ok(())
}

/// Remounts a bind mount read-only, keeping the flags a user namespace may not drop.
pub(crate) fn remount_read_only(target: &Path) -> io::Result<()> {
    let current = nix::sys::statvfs::statvfs(target)?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    use nix::sys::statvfs::FsFlags;
    for (has, flag) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if current.flags().contains(has) {
            flags |= flag;
        }
    }
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>)?;
    read_only_below(target)
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const AT_RECURSIVE: libc::c_uint = 0x8000;

/// Makes every mount below `target` read-only too: a recursive bind (a context holding a
/// mount point) carries its submounts, which the remount above leaves writable.
fn read_only_below(target: &Path) -> io::Result<()> {
    let path = CString::new(target.as_os_str().as_bytes())?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr with a NUL-terminated path and a live mount_attr of its size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        // Before Linux 5.12 there is no mount_setattr: only the top is read-only there.
        if err.raw_os_error() != Some(libc::ENOSYS) {
            return Err(err);
        }
    }
    Ok(())
}

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
/// Follow a symlink at the target, so `/proc/self/fd/N` reaches the directory it names.
const MOVE_MOUNT_T_SYMLINKS: libc::c_uint = 0x10;

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in mount option"))
}

fn check(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Mounts an overlay with any number of lowers (`lowerdir+`, kernel ≥ 6.8), else through
/// `mount(2)`, whose option string holds only one page.
pub(crate) fn mount_overlay(
    lowers: &[PathBuf],
    upper_work: Option<(&Path, &Path)>,
    target: &Path,
) -> io::Result<()> {
    match mount_overlay_fsconfig(lowers, upper_work, target) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS)) => {
            mount_overlay_legacy(lowers, upper_work, target)
        }
        Err(e) => Err(e),
    }
}

fn mount_overlay_fsconfig(
    lowers: &[PathBuf],
    upper_work: Option<(&Path, &Path)>,
    target: &Path,
) -> io::Result<()> {
    let fstype = cstring(b"overlay")?;
    // SAFETY: fsopen takes a NUL-terminated name and flags, returning a new fd or -1.
    let raw = check(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) })?;
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    let context = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
    let set = |key: &[u8], value: Option<&[u8]>| -> io::Result<()> {
        let key = cstring(key)?;
        let value = value.map(cstring).transpose()?;
        let (cmd, value_ptr) = match &value {
            Some(v) => (FSCONFIG_SET_STRING, v.as_ptr()),
            None => (FSCONFIG_SET_FLAG, std::ptr::null()),
        };
        // SAFETY: fsconfig on our context fd with NUL-terminated key and value (or null for a flag).
        check(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                context.as_raw_fd(),
                cmd,
                key.as_ptr(),
                value_ptr,
                0,
            )
        })
        .map(drop)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "overlay option {}: {e}",
                    String::from_utf8_lossy(key.as_bytes())
                ),
            )
        })
    };
    set(b"userxattr", None)?;
    for lower in lowers {
        set(b"lowerdir+", Some(lower.as_os_str().as_bytes()))
            .map_err(|e| io::Error::new(e.kind(), format!("{e} ({})", lower.display())))?;
    }
    if let Some((upper, work)) = upper_work {
        set(b"upperdir", Some(upper.as_os_str().as_bytes()))?;
        set(b"workdir", Some(work.as_os_str().as_bytes()))?;
    }
    // SAFETY: CMD_CREATE takes no key or value.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            context.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })?;
    // SAFETY: fsmount on our configured context returns a new mount fd or -1.
    let raw = check(unsafe {
        libc::syscall(libc::SYS_fsmount, context.as_raw_fd(), FSMOUNT_CLOEXEC, 0)
    })?;
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    let mounted = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
    let empty = cstring(b"")?;
    let target_c = cstring(target.as_os_str().as_bytes())?;
    // SAFETY: move_mount from our mount fd (empty path) to a NUL-terminated target path.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mounted.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target_c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_SYMLINKS,
        )
    })?;
    Ok(())
}

fn mount_overlay_legacy(
    lowers: &[PathBuf],
    upper_work: Option<(&Path, &Path)>,
    target: &Path,
) -> io::Result<()> {
    let escape = |p: &Path| -> io::Result<String> {
        let text = p.to_str().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "overlay path is not UTF-8")
        })?;
        if text.contains([',', ':', '\\']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("overlay path {text} contains ',', ':' or '\\'"),
            ));
        }
        Ok(text.to_string())
    };
    let lower_list = lowers
        .iter()
        .map(|l| escape(l))
        .collect::<io::Result<Vec<_>>>()?;
    let mut data = format!("userxattr,lowerdir={}", lower_list.join(":"));
    if let Some((upper, work)) = upper_work {
        data.push_str(&format!(
            ",upperdir={},workdir={}",
            escape(upper)?,
            escape(work)?
        ));
    }
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    if data.len() >= page {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} overlay lower dirs do not fit mount(2)'s one-page option string, and this kernel lacks fsconfig lowerdir+ (Linux 6.8)",
                lowers.len()
            ),
        ));
    }
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )?;
    Ok(())
}
