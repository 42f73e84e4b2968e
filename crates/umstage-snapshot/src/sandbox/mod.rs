//! The `RUN` sandbox: one step in its own pid, uts, ipc and mount namespaces (and network for
//! `--network=none`) over an active snapshot, with its output streamed line by line.
//!
//! [`run_step`] describes the step as an OCI runtime [`Spec`](oci_spec::runtime::Spec) and
//! spawns `/proc/self/exe` as a single-threaded helper ([`crate::SANDBOX_HELPER_ARG`]); the
//! helper unshares the namespaces and forks the step's pid 1, which mounts the snapshot and
//! everything the spec lists, `pivot_root`s into it, switches to the step's user and execs.
//! When pid 1 exits the kernel kills every other process of the step; when the helper dies
//! (cancel, SIGKILL of umstage) pid 1 dies with it.

pub(crate) mod caps;
mod chroot;
mod devices;
mod failure;
mod guest;
pub(crate) mod helper;
mod identity;
pub(crate) mod landlock;
mod mounts;
mod owners;
mod rlimit;
mod rootfs;
mod seccomp;
mod spec;
#[cfg(target_arch = "x86_64")]
mod trace;
#[cfg(not(target_arch = "x86_64"))]
#[path = "trace_other.rs"]
mod trace;
pub mod user;

pub use mounts::{
    BindMount, BindSource, CacheMount, CacheSeed, InRoot, SecretMount, Sharing, StepMount,
    TmpfsMount,
};
pub use rlimit::{Ulimit, UlimitError};

use std::io::Write;
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::cancel::Cancel;
use crate::fsutil::{self, PathError};
use crate::snapshot::{MountSpec, SnapshotError, Snapshotter};

/// The hostname a step sees unless told otherwise (BuildKit's, which some scripts expect).
pub const DEFAULT_HOSTNAME: &str = "buildkitsandbox";

/// The most a secret may hold, in bytes (BuildKit's limit); a larger source is refused.
pub const MAX_SECRET_SIZE: u64 = 500 * 1024;

/// `PATH` when the step's environment has none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The network a step gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Network {
    /// The host's network (no slirp or tun device needed).
    #[default]
    Default,
    /// A new network namespace with only `lo`, up.
    None,
    /// The host's network.
    Host,
}

/// Docker's size of `/dev/shm`, 64 MiB.
pub const DEFAULT_SHM_SIZE: u64 = 64 << 20;

/// One `RUN` step, with everything the build engine has already resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStep {
    /// The command and its arguments (`argv`); the program is looked up in the step's `PATH`.
    pub args: Vec<String>,
    /// `KEY=VALUE` environment; `PATH` and `HOME` get Docker's defaults when missing.
    pub env: Vec<String>,
    /// Absolute working directory inside the rootfs, created if missing.
    pub cwd: String,
    /// `user[:group]` by name or number, resolved in the image's `/etc/passwd` and `/etc/group`; empty is root.
    pub user: String,
    /// The hostname the step sees.
    pub hostname: String,
    /// The network.
    pub network: Network,
    /// Extra `/etc/hosts` entries (`--add-host`): name and address.
    pub extra_hosts: Vec<(String, String)>,
    /// Size of the step's `/dev/shm` in bytes (`--shm-size`).
    pub shm_size: u64,
    /// Resource limits set before the command runs (`--ulimit`).
    pub ulimits: Vec<Ulimit>,
    /// `RUN --mount`s, in order.
    pub mounts: Vec<StepMount>,
    /// `RUN --security=insecure`: every capability the user namespace grants, instead of
    /// Docker's default set.
    pub privileged: bool,
}

impl Default for RunStep {
    fn default() -> Self {
        Self {
            args: Vec::new(),
            env: Vec::new(),
            cwd: "/".into(),
            user: String::new(),
            hostname: DEFAULT_HOSTNAME.into(),
            network: Network::Default,
            extra_hosts: Vec::new(),
            shm_size: DEFAULT_SHM_SIZE,
            ulimits: Vec::new(),
            mounts: Vec::new(),
            privileged: false,
        }
    }
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// The step's standard output.
    Stdout,
    /// The step's standard error.
    Stderr,
}

/// Something a running step reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepEvent {
    /// One line of output, without its newline (a last line may lack one; very long lines come in pieces).
    Output {
        /// The stream.
        stream: Stream,
        /// The bytes, as the step wrote them.
        line: Vec<u8>,
    },
}

/// How the step's main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl ExitStatus {
    /// Whether it exited with code 0.
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exit code {code}"),
            ExitStatus::Signal(signal) => write!(f, "killed by signal {signal}"),
        }
    }
}

/// Why a step could not run (a step that runs and fails is an [`ExitStatus`], not an error).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The snapshot is unusable.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// Preparing files for the step failed.
    #[error(transparent)]
    Io(#[from] PathError),
    /// The step is malformed.
    #[error("invalid step: {0}")]
    InvalidStep(String),
    /// A mount's source could not be resolved inside its root.
    #[error("mount source {0}: {1}")]
    Source(mounts::InRoot, umstage_oci::inroot::InRootError),
    /// A required secret has no source.
    #[error("secret {0} is required but was not provided (--secret id={0},src=...)")]
    SecretMissing(String),
    /// The helper could not be started.
    #[error("cannot start the sandbox helper: {0}")]
    Spawn(std::io::Error),
    /// Setting up the sandbox failed (user not found, mount refused, program not found...).
    #[error("{0}")]
    Setup(String),
    /// The helper ended without saying how the step ended.
    #[error("the sandbox helper died ({0})")]
    HelperDied(String),
    /// The step was cancelled.
    #[error("cancelled")]
    Cancelled,
}

/// What the helper reports on fd 3, one JSON line each.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Report {
    /// Mount targets created in the rootfs (relative paths, parents first).
    Stubs(Vec<PathBuf>),
    /// Setup failed before the step's program ran.
    SetupError(String),
    /// The step's main process ended.
    Ended(ExitStatus),
}

/// Everything the helper needs, sent on its stdin.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Request {
    /// The step as an OCI runtime spec (`root.path` is where the snapshot is mounted).
    pub(crate) spec: oci_spec::runtime::Spec,
    /// How to mount the snapshot on `root.path`.
    pub(crate) rootfs: Vec<MountSpec>,
    /// The unresolved `user[:group]`; the helper resolves it in the rootfs.
    pub(crate) user: String,
    /// Small files (`/etc/hosts`...) the helper writes into its tmpfs at `sandbox_dir/files`.
    pub(crate) files: Vec<mounts::PrivateFile>,
    /// Secrets the helper copies into its tmpfs at `sandbox_dir/secrets`.
    pub(crate) secrets: Vec<mounts::SecretFile>,
    /// Where the helper mounts its private tmpfs: the rootfs mount point, files, secrets, stubs.
    pub(crate) sandbox_dir: PathBuf,
    /// One entry for each of the spec's mounts: for a bind (or an overlay's lower directory)
    /// whose source is a stage, an image or the context, the path inside that source, which the
    /// helper resolves inside it (`RESOLVE_IN_ROOT`, the final component included) and mounts
    /// from the resulting descriptor.
    pub(crate) in_root: Vec<Option<PathBuf>>,
    /// Record the step's `chown`s and show them to its `stat`s ([`owners`]): only one id is
    /// mapped, so the kernel cannot.
    pub(crate) record_owners: bool,
    /// The `chroot` tier: the active snapshot's directory, which the step is chrooted in
    /// (no namespaces, no mounts); `None` in the user namespace tiers.
    pub(crate) chroot: Option<PathBuf>,
    /// The `ptrace` tier: the step is not chrooted in `chroot` but runs under the supervisor
    /// ([`trace`]), which translates its paths into it.
    pub(crate) trace: bool,
    /// The `ptrace` tier's `RUN --mount`s, which its supervisor gives (empty in other tiers).
    pub(crate) guest_mounts: Vec<guest::GuestMount>,
}

/// The fd the helper reports on (its copy of the socket it got as stdin).
pub(crate) const REPORT_FD: i32 = 3;

/// Runs one step in the active snapshot `key`, streaming its output to `on_event`.
///
/// Returns how the step's main process ended; all its other processes are gone by then.
/// Nothing the step's `--mount`s, `/etc/hosts`, `/etc/resolv.conf` or `/etc/hostname` add
/// stays in the snapshot. With `cancel` cancelled the step is killed and
/// [`SandboxError::Cancelled`] returned. Must run inside the user namespace.
pub fn run_step(
    snapshotter: &Snapshotter,
    key: &str,
    step: &RunStep,
    cancel: &Cancel,
    on_event: &mut dyn FnMut(StepEvent),
) -> Result<ExitStatus, SandboxError> {
    if step.args.is_empty() {
        return Err(SandboxError::InvalidStep("no command".into()));
    }
    if !step.cwd.starts_with('/') {
        return Err(SandboxError::InvalidStep(format!(
            "working directory {:?} is not absolute",
            step.cwd
        )));
    }
    let active_dir = snapshotter.active_dir(key)?;
    let tier = crate::doctor::active_tier();
    let chroot = match tier {
        Some(tier) if tier.mounts_nothing() => {
            Some(chroot_dir(snapshotter, active_dir, step, tier)?)
        }
        _ => None,
    };
    let rootfs = snapshotter.mounts(key)?;
    let sandbox_dir = snapshotter.state_root().join("sandbox");
    fsutil::ensure_dir(&sandbox_dir)?;
    let run_dir = snapshotter
        .state_root()
        .join("run")
        .join(fsutil::random_id());
    let result = (|| {
        let trace = tier == Some(crate::doctor::Tier::Ptrace);
        let prepared = mounts::prepare(
            snapshotter.state_root(),
            &run_dir,
            &sandbox_dir,
            step,
            trace,
        )?;
        let guest_mounts = if trace {
            guest::guest_mounts(&prepared, &sandbox_dir)?
        } else {
            Vec::new()
        };
        let (spec, in_root) = spec::build(step, &sandbox_dir.join("rootfs"), &prepared)?;
        let request = Request {
            spec,
            in_root,
            rootfs,
            user: step.user.clone(),
            files: prepared.private_files.clone(),
            secrets: prepared.secret_files.clone(),
            sandbox_dir: sandbox_dir.clone(),
            record_owners: crate::userns::current()
                .is_some_and(|ns| ns.mode() == crate::userns::Mode::SingleId),
            chroot: chroot.clone(),
            trace,
            guest_mounts,
        };
        let outcome = run_helper(&request, cancel, on_event);
        drop(prepared);
        outcome
    })();
    let cleanup = fsutil::remove_tree(&run_dir);
    let (status, stubs) = result?;
    snapshotter.remove_stubs(key, &stubs)?;
    cleanup?;
    status
}

/// The directory a `chroot` or `ptrace` tier step runs in, or why the step needs a namespace
/// tier.
fn chroot_dir(
    snapshotter: &Snapshotter,
    active_dir: PathBuf,
    step: &RunStep,
    tier: crate::doctor::Tier,
) -> Result<PathBuf, SandboxError> {
    let needs = |what: &str| {
        Err(SandboxError::InvalidStep(format!(
            "{what} needs a user namespace, which this sandbox tier ({tier}) does not have: `umstage doctor` says what would allow one"
        )))
    };
    // The supervisor gives every mount's directory or file for its target (see `guest`).
    if tier != crate::doctor::Tier::Ptrace && !step.mounts.is_empty() {
        return needs("RUN --mount");
    }
    if step.network == Network::None {
        return needs("RUN --network=none");
    }
    if snapshotter.driver() != crate::DriverKind::Native {
        return needs("an overlay snapshot");
    }
    Ok(active_dir)
}

type HelperOutcome = (Result<ExitStatus, SandboxError>, Vec<PathBuf>);

fn run_helper(
    request: &Request,
    cancel: &Cancel,
    on_event: &mut dyn FnMut(StepEvent),
) -> Result<HelperOutcome, SandboxError> {
    let payload = serde_json::to_vec(request)
        .map_err(|e| SandboxError::InvalidStep(format!("cannot encode the step: {e}")))?;
    // One socket carries the request to the helper's stdin and its reports back. The request
    // is in the socket before the helper starts, so it never waits for us.
    let (ours, theirs) = UnixStream::pair().map_err(SandboxError::Spawn)?;
    let unsent = prefill(&ours, &payload).map_err(SandboxError::Spawn)?;
    if unsent.is_empty() {
        ours.shutdown(Shutdown::Write)
            .map_err(SandboxError::Spawn)?;
    }
    // No closure runs in the child, so the standard library spawns with posix_spawn (vfork
    // semantics): neither the copy of this process's page tables a fork makes nor its
    // teardown at exec. The helper sets its parent-death signal and signal mask itself.
    let mut command = Command::new("/proc/self/exe");
    command
        .arg(crate::SANDBOX_HELPER_ARG)
        .arg(std::process::id().to_string())
        .env_clear()
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Terminal signals go to umstage, which decides; the step is not in its group.
        .process_group(0);
    let spawned = command.spawn();
    // The command holds the helper's end of the socket; the helper's exit must end our reads.
    drop(command);
    let mut child = spawned.map_err(SandboxError::Spawn)?;
    if !unsent.is_empty() {
        // A helper that died early shows up below through its report.
        let _ = (&ours).write_all(unsent);
        let _ = ours.shutdown(Shutdown::Write);
    }
    let stdout: OwnedFd = child
        .stdout
        .take()
        .map(OwnedFd::from)
        .ok_or_else(|| SandboxError::Spawn(std::io::Error::other("no stdout pipe")))?;
    let stderr: OwnedFd = child
        .stderr
        .take()
        .map(OwnedFd::from)
        .ok_or_else(|| SandboxError::Spawn(std::io::Error::other("no stderr pipe")))?;

    let report = OwnedFd::from(ours);
    let pumped = pump(&stdout, &stderr, &report, cancel, &mut child, on_event);
    let waited = child.wait();
    let (report_bytes, cancelled) = pumped.map_err(SandboxError::Spawn)?;

    let mut stubs = Vec::new();
    let mut ended = None;
    let mut setup_error = None;
    for line in report_bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
    {
        match serde_json::from_slice::<Report>(line) {
            Ok(Report::Stubs(list)) => stubs = list,
            Ok(Report::SetupError(message)) => setup_error = Some(message),
            Ok(Report::Ended(status)) => ended = Some(status),
            Err(e) => tracing::warn!("unreadable sandbox report: {e}"),
        }
    }
    let status = if cancelled {
        Err(SandboxError::Cancelled)
    } else if let Some(message) = setup_error {
        Err(SandboxError::Setup(message))
    } else if let Some(status) = ended {
        Ok(status)
    } else {
        let how = match waited {
            Ok(status) => status.to_string(),
            Err(e) => e.to_string(),
        };
        Err(SandboxError::HelperDied(how))
    };
    Ok((status, stubs))
}

/// Writes as much of `payload` into the empty socket as it holds, returning the rest.
fn prefill<'a>(socket: &UnixStream, payload: &'a [u8]) -> std::io::Result<&'a [u8]> {
    socket.set_nonblocking(true)?;
    let mut sent = 0;
    while sent < payload.len() {
        match (&*socket).write(&payload[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    socket.set_nonblocking(false)?;
    Ok(&payload[sent..])
}

/// Longest line passed on in one piece.
const MAX_LINE: usize = 64 * 1024;

/// Reads the step's output and the helper's report until all are closed; kills the helper on cancel.
fn pump(
    stdout: &OwnedFd,
    stderr: &OwnedFd,
    report: &OwnedFd,
    cancel: &Cancel,
    child: &mut std::process::Child,
    on_event: &mut dyn FnMut(StepEvent),
) -> std::io::Result<(Vec<u8>, bool)> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut open = [true, true, true];
    let mut pending: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut report_bytes = Vec::new();
    let mut cancelled = false;
    let mut buf = vec![0u8; 64 * 1024];
    while open.iter().any(|o| *o) {
        let sources = [stdout.as_fd(), stderr.as_fd(), report.as_fd()];
        let mut fds: Vec<PollFd> = sources
            .iter()
            .zip(open)
            .filter(|(_, is_open)| *is_open)
            .map(|(fd, _)| PollFd::new(*fd, PollFlags::POLLIN))
            .collect();
        let watch_cancel = !cancelled;
        if watch_cancel {
            fds.push(PollFd::new(cancel.fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<bool> = fds.iter().map(|fd| fd.any().unwrap_or(false)).collect();
        if watch_cancel && ready.last().copied().unwrap_or(false) {
            cancelled = true;
            let _ = child.kill();
        }
        let mut index = 0;
        for source in 0..3 {
            if !open[source] {
                continue;
            }
            let is_ready = ready[index];
            index += 1;
            if !is_ready {
                continue;
            }
            let fd = sources[source];
            let n = read_some(fd, &mut buf)?;
            if n == 0 {
                open[source] = false;
                if source < 2 && !pending[source].is_empty() {
                    emit(on_event, source, std::mem::take(&mut pending[source]));
                }
                continue;
            }
            if source == 2 {
                report_bytes.extend_from_slice(&buf[..n]);
                continue;
            }
            let pending = &mut pending[source];
            pending.extend_from_slice(&buf[..n]);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = pending.drain(..=end).collect();
                line.pop();
                emit(on_event, source, line);
            }
            while pending.len() >= MAX_LINE {
                let piece: Vec<u8> = pending.drain(..MAX_LINE).collect();
                emit(on_event, source, piece);
            }
        }
    }
    Ok((report_bytes, cancelled))
}

fn read_some(fd: std::os::fd::BorrowedFd<'_>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match nix::unistd::read(fd, buf) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other.map_err(std::io::Error::from),
        }
    }
}

fn emit(on_event: &mut dyn FnMut(StepEvent), source: usize, line: Vec<u8>) {
    let stream = if source == 0 {
        Stream::Stdout
    } else {
        Stream::Stderr
    };
    on_event(StepEvent::Output { stream, line });
}
