//! Trying a user namespace rather than guessing: a fresh `/proc/self/exe` (the process model
//! forbids forking a threaded process) unshares a user namespace, maps itself to root in it,
//! unshares a mount namespace and mounts a tmpfs, and reports how far it got.

use std::process::{Command, Stdio};

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

/// The hidden first argument that makes the binary run the trial and exit.
pub const TRIAL_ARG: &str = "__umstage-userns-trial";

/// How far an unprivileged process got towards a sandbox, each stage's error number if it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trial {
    /// `unshare(CLONE_NEWUSER)` failed.
    Unshare(i32),
    /// Writing its own single-id map failed.
    Map(i32),
    /// The namespace exists but a mount in it failed (a mount namespace or a tmpfs).
    Mount(i32),
    /// A user namespace with a mount in it: the sandbox can run.
    Works,
    /// The trial could not be run or said nothing readable.
    NotRun,
}

/// `EPERM` rather than the long description, as the kernel's headers name it.
pub fn errno_name(errno: i32) -> String {
    format!("{:?}", Errno::from_raw(errno))
}

/// Runs the trial in a fresh process and returns what it reported.
pub fn run() -> Trial {
    let output = Command::new("/proc/self/exe")
        .arg(TRIAL_ARG)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match output {
        Ok(out) => serde_json::from_slice(&out.stdout).unwrap_or(Trial::NotRun),
        Err(e) => {
            tracing::debug!("cannot run the user namespace trial: {e}");
            Trial::NotRun
        }
    }
}

/// The trial's own process: tries each stage, prints the outcome as JSON and exits.
pub(crate) fn main() -> ! {
    let outcome = attempt();
    let text = serde_json::to_string(&outcome).unwrap_or_default();
    println!("{text}");
    std::process::exit(0);
}

fn attempt() -> Trial {
    use nix::mount::{MsFlags, mount};
    use nix::sched::{CloneFlags, unshare};
    let uid = nix::unistd::geteuid();
    let gid = nix::unistd::getegid();
    if let Err(e) = unshare(CloneFlags::CLONE_NEWUSER) {
        return Trial::Unshare(e as i32);
    }
    let maps = [
        ("/proc/self/setgroups", "deny".to_string()),
        ("/proc/self/uid_map", format!("0 {uid} 1\n")),
        ("/proc/self/gid_map", format!("0 {gid} 1\n")),
    ];
    for (file, text) in maps {
        if let Err(e) = std::fs::write(file, text) {
            // Real root may not deny setgroups in some kernels' views; the map is what counts.
            if file.ends_with("setgroups") {
                continue;
            }
            return Trial::Map(e.raw_os_error().unwrap_or(libc::EPERM));
        }
    }
    if let Err(e) = unshare(CloneFlags::CLONE_NEWNS) {
        return Trial::Mount(e as i32);
    }
    let private = mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    );
    let tmpfs = private.and_then(|()| {
        mount(
            Some("tmpfs"),
            "/",
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
    });
    match tmpfs {
        Ok(()) => Trial::Works,
        Err(e) => Trial::Mount(e as i32),
    }
}
