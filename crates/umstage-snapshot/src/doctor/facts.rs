//! Gathering what restricts a build here: each fact read from the kernel or the files that
//! decide it, and the user namespace tried rather than guessed.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::status::ProcStatus;
use super::trial::{self, Trial};

/// `newuidmap` or `newgidmap`, and what would let it map ids other than the caller's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MapTool {
    /// Not on `PATH`, `/usr/bin` or `/usr/sbin`.
    Missing,
    /// Found, but neither setuid root nor given file capabilities.
    Plain(PathBuf),
    /// Setuid root, as Debian installs it.
    SetuidRoot(PathBuf),
    /// With file capabilities (`security.capability`), as Fedora installs it.
    FileCaps(PathBuf),
}

/// Where the build keeps its state, and what that filesystem allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateRoot {
    /// The state root.
    pub path: PathBuf,
    /// The state root, or its nearest existing ancestor, lies on overlayfs.
    pub on_overlay: bool,
    /// Bytes an unprivileged writer can still use there.
    pub free_bytes: Option<u64>,
    /// Why no build can keep its state there, if none can: it (or, until it exists, its
    /// nearest existing ancestor) is not a directory the caller can write.
    pub unusable: Option<String>,
}

/// Whether the steps of the tiers without a namespace are confined by Landlock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Landlock {
    /// Confined, with this Landlock ABI.
    Abi(u32),
    /// Not confined, and why.
    Unavailable(String),
}

impl Landlock {
    fn probe() -> Landlock {
        match crate::sandbox::landlock::probe() {
            Ok(abi) => Landlock::Abi(abi),
            Err(why) => Landlock::Unavailable(why.to_string()),
        }
    }
}

/// Everything the diagnosis looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Facts {
    /// The effective uid.
    pub uid: u32,
    /// Its name in `/etc/passwd`, or the number.
    pub user: String,
    /// Seccomp, no-new-privileges and capabilities.
    pub status: ProcStatus,
    /// How far a user namespace trial got.
    pub trial: Trial,
    /// `user.max_user_namespaces`.
    pub max_user_namespaces: Option<u64>,
    /// Debian's `kernel.unprivileged_userns_clone`, where the kernel has it.
    pub unprivileged_userns_clone: Option<bool>,
    /// Ubuntu's `kernel.apparmor_restrict_unprivileged_userns`, where the kernel has it.
    pub apparmor_restricts_userns: Option<bool>,
    /// The caller's ranges in `/etc/subuid`, `(start, count)`.
    pub subuid: Vec<(u32, u32)>,
    /// The caller's ranges in `/etc/subgid`.
    pub subgid: Vec<(u32, u32)>,
    /// `newuidmap`.
    pub newuidmap: MapTool,
    /// `newgidmap`.
    pub newgidmap: MapTool,
    /// Mount points under `/proc` (masked or read-only paths, as container runtimes add).
    pub proc_overmounts: Vec<String>,
    /// The state root, when one was named.
    pub state_root: Option<StateRoot>,
    /// Landlock, for the `chroot` and `ptrace` tiers.
    pub landlock: Landlock,
}

impl Facts {
    /// Reads every fact. With no `trial` given it runs one (it starts a process); a build that
    /// has just seen the namespace fail gives what it saw instead.
    pub fn gather(state_root: Option<&Path>, trial: Option<Trial>) -> Facts {
        let uid = nix::unistd::geteuid();
        let user = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map_or_else(|| uid.to_string(), |u| u.name);
        let subuid =
            crate::userns::subids::read_subordinate(Path::new("/etc/subuid"), &user, uid.as_raw());
        let subgid =
            crate::userns::subids::read_subordinate(Path::new("/etc/subgid"), &user, uid.as_raw());
        Facts {
            uid: uid.as_raw(),
            user,
            status: ProcStatus::current(),
            trial: trial.unwrap_or_else(trial::run),
            max_user_namespaces: read_number("/proc/sys/user/max_user_namespaces"),
            unprivileged_userns_clone: read_number("/proc/sys/kernel/unprivileged_userns_clone")
                .map(|n| n != 0),
            apparmor_restricts_userns: read_number(
                "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            )
            .map(|n| n != 0),
            subuid,
            subgid,
            newuidmap: map_tool("newuidmap"),
            newgidmap: map_tool("newgidmap"),
            proc_overmounts: proc_overmounts(
                &std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
            ),
            state_root: state_root.map(state_root_facts),
            landlock: Landlock::probe(),
        }
    }
}

fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn map_tool(name: &str) -> MapTool {
    let Some(path) = crate::userns::subids::find_in_path(name) else {
        return MapTool::Missing;
    };
    let Ok(meta) = std::fs::metadata(&path) else {
        return MapTool::Missing;
    };
    if meta.uid() == 0 && meta.permissions().mode() & 0o4000 != 0 {
        return MapTool::SetuidRoot(path);
    }
    let caps = rustix::fs::getxattr(&path, "security.capability", &mut [0u8; 64]);
    match caps {
        Ok(n) if n > 0 => MapTool::FileCaps(path),
        _ => MapTool::Plain(path),
    }
}

/// The mount points below `/proc` in a `mountinfo` text: what a runtime masked or made
/// read-only there (the kernel then refuses a fresh proc mount in a user namespace).
fn proc_overmounts(mountinfo: &str) -> Vec<String> {
    let mut found: Vec<String> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| point.starts_with("/proc/"))
        .map(str::to_string)
        .collect();
    found.sort();
    found.dedup();
    found
}

fn state_root_facts(path: &Path) -> StateRoot {
    let existing = path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let on_overlay = nix::sys::statfs::statfs(existing)
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::OVERLAYFS_SUPER_MAGIC);
    let free_bytes = nix::sys::statvfs::statvfs(existing)
        .ok()
        .map(|s| s.blocks_available() * s.fragment_size());
    StateRoot {
        path: path.to_path_buf(),
        on_overlay,
        free_bytes,
        unusable: unusable(path),
    }
}

/// Why `path` cannot be a state root, if it cannot. Existence is judged without following a
/// final symlink, so a dangling or looping one is named rather than skipped.
fn unusable(path: &Path) -> Option<String> {
    let existing = path
        .ancestors()
        .find(|p| p.symlink_metadata().is_ok())
        .unwrap_or(Path::new("/"));
    match std::fs::metadata(existing) {
        Err(e) => Some(format!("{}: {e}", existing.display())),
        Ok(m) if !m.is_dir() => Some(format!("{} is not a directory", existing.display())),
        Ok(_) => {
            let access = rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK;
            rustix::fs::access(existing, access)
                .err()
                .map(|e| format!("{} cannot be written by you: {e}", existing.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_proc_paths_are_found_in_mountinfo() {
        let text = "\
612 611 0:61 / / rw,relatime - overlay overlay rw
613 612 0:64 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
620 613 0:65 /null /proc/kcore rw,nosuid - tmpfs tmpfs rw
621 613 0:64 /sys /proc/sys ro,nosuid - proc proc rw
622 612 0:66 / /dev rw - tmpfs tmpfs rw
";
        assert_eq!(proc_overmounts(text), vec!["/proc/kcore", "/proc/sys"]);
        assert!(proc_overmounts("1 0 0:1 / /proc rw - proc proc rw\n").is_empty());
    }

    #[test]
    fn state_root_that_does_not_exist_is_judged_by_its_ancestor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = state_root_facts(&dir.path().join("not/yet"));
        assert!(root.free_bytes.is_some_and(|b| b > 0));
        assert_eq!(root.unusable, None);
        let file = dir.path().join("file");
        std::fs::write(&file, b"").expect("write");
        for bad in [file.clone(), file.join("below")] {
            let root = state_root_facts(&bad);
            assert!(
                root.unusable
                    .as_deref()
                    .is_some_and(|u| u.contains("not a directory")),
                "{root:?}"
            );
        }
    }
}
