//! Rootless execution: the user-namespace bootstrap, snapshots over overlayfs or copies, the `RUN` sandbox and diffing.
//!
//! The binary calls [`dispatch`] first thing in `main`, then [`userns::enter`] before it
//! builds; everything else ([`Snapshotter`], [`sandbox::run_step`]) runs inside the user
//! namespace.

pub mod cancel;
mod cow;
pub mod diff;
pub mod doctor;
mod fsutil;
pub mod sandbox;
pub mod snapshot;
pub mod userns;

pub use cancel::Cancel;
pub use snapshot::{CommitOutcome, DriverChoice, DriverKind, LayerTarget, MountSpec, Snapshotter};

use std::ffi::OsStr;
use std::path::PathBuf;

/// The hidden first argument that makes the binary run as the sandbox helper.
pub const SANDBOX_HELPER_ARG: &str = "__umstage-sandbox";

/// Runs this crate's helper roles; call it first thing in `main`, before any thread exists.
///
/// When `argv[1]` is [`SANDBOX_HELPER_ARG`] the process is a `RUN` sandbox helper: it runs the
/// step and exits, never returning; [`doctor::trial::TRIAL_ARG`] makes it `umstage doctor`'s
/// user namespace trial, which also exits. When the process is the child re-executed by
/// [`userns::enter`], this finishes moving it into the new user and mount namespace (which
/// needs a single-threaded process) and returns, so `main` goes on inside the namespace.
/// Otherwise it does nothing.
pub fn dispatch() {
    if std::env::args_os().nth(1).as_deref() == Some(OsStr::new(SANDBOX_HELPER_ARG)) {
        sandbox::helper::main();
    }
    if std::env::args_os().nth(1).as_deref() == Some(OsStr::new(doctor::trial::TRIAL_ARG)) {
        doctor::trial::main();
    }
    userns::finish_reexec_if_child();
}

/// The default state root: `/var/lib/umstage` for real root, else `$XDG_DATA_HOME/umstage` or `~/.local/share/umstage`.
pub fn default_state_root() -> PathBuf {
    let real_root = match userns::current() {
        Some(ns) => ns.mode() == userns::Mode::Root,
        None => nix::unistd::geteuid().is_root(),
    };
    if real_root {
        return PathBuf::from("/var/lib/umstage");
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("umstage");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/umstage"),
        None => std::env::temp_dir().join(format!("umstage-{}", nix::unistd::getuid())),
    }
}
