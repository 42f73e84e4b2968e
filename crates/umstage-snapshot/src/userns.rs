//! The rootless bootstrap: re-executing umstage inside a new user + mount namespace.
//!
//! The outer process spawns `/proc/self/exe` with the same arguments. The child, at the top
//! of `main` (single-threaded, in [`crate::dispatch`]), unshares a user, mount and cgroup
//! namespace and tells the parent over a socket; the parent writes the id maps (through
//! `newuidmap`/`newgidmap`, directly for a single-id map, or an identity map as real root)
//! and answers; the child becomes root in the namespace and goes on with `main`. The parent
//! forwards termination signals and exits with the child's status. The child dies with
//! the parent (`PR_SET_PDEATHSIG`), and every mount lives in its namespace, so a SIGKILL at
//! any point leaves nothing behind on the host.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::unistd::{Gid, Pid, Uid};
use serde::{Deserialize, Serialize};

use crate::doctor::{Facts, Tier, TierChoice, Trial};

mod free_range;
pub(crate) mod subids;

use subids::{SubRange, find_in_path, read_subordinate};

/// Environment variable carrying the handshake socket's fd number to the re-executed child.
const HANDSHAKE_ENV: &str = "_UMSTAGE_USERNS_SOCKET";

/// Exit status of a re-executed child that could not enter its namespace.
const HANDSHAKE_FAILED: i32 = 125;

/// The child's first byte on the handshake socket: it unshared its namespaces.
const UNSHARED: u8 = b'u';
/// The child's first byte when unshare failed; the error number follows in one byte.
const REFUSED: u8 = b'!';

/// How ids are mapped into the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// 0 is the caller, 1.. are the caller's `/etc/subuid` and `/etc/subgid` ranges.
    Subordinate,
    /// Only 0 is mapped (to the caller): other owners are recorded (`sandbox::owners`), not set.
    SingleId,
    /// Started as real root: the identity map over all ids.
    Root,
}

/// What [`enter`] may use.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The sandbox tier asked for: the best that works, or exactly one (a single-id map even
    /// when subordinate ranges exist, or the ranges and no fallback).
    pub tier: TierChoice,
}

/// One line of a uid or gid map: `count` ids from `inside` map to `outside`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    /// First id inside the namespace.
    pub inside: u32,
    /// First id outside.
    pub outside: u32,
    /// How many ids.
    pub count: u32,
}

/// The namespace this process runs in, as [`enter`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserNamespace {
    mode: Mode,
    uid_map: Vec<IdRange>,
    gid_map: Vec<IdRange>,
    warning: Option<String>,
    single_id: Option<SingleId>,
}

/// Why a namespace has a single-id map, and what would give it subordinate ranges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SingleId {
    /// Why, such as `no range for user bob in /etc/subuid`.
    pub reason: String,
    /// The fix, such as the `usermod` command adding free ranges; `None` when asked for.
    pub fix: Option<String>,
}

impl UserNamespace {
    /// How ids are mapped.
    pub fn mode(&self) -> Mode {
        self.mode
    }
    /// The uid map written for the namespace.
    pub fn uid_map(&self) -> &[IdRange] {
        &self.uid_map
    }
    /// The gid map written for the namespace.
    pub fn gid_map(&self) -> &[IdRange] {
        &self.gid_map
    }
    /// A one-line warning for the user (single-id fallback and how to fix it), to print once.
    pub fn warning(&self) -> Option<&str> {
        self.warning.as_deref()
    }
    /// In single-id mode, why and the fix, for a caller that words the warning itself.
    pub fn single_id(&self) -> Option<&SingleId> {
        self.single_id.as_ref()
    }
    /// The sandbox tier this namespace gives `RUN` steps.
    pub fn tier(&self) -> Tier {
        match self.mode {
            Mode::Subordinate | Mode::Root => Tier::Userns,
            Mode::SingleId => Tier::UsernsSingle,
        }
    }
    /// Why this tier, one line: what the namespace maps, or what kept the ranges out of reach
    /// (the build says what one id changed, and the fix, when it ends).
    pub fn reason(&self) -> String {
        match (&self.single_id, self.mode) {
            (Some(cause), _) => format!("one id mapped ({})", cause.reason),
            (None, Mode::Root) => "a user namespace with every id mapped (real root)".into(),
            (None, _) => {
                let ids: u64 = self.uid_map.iter().map(|r| u64::from(r.count)).sum();
                format!("a user namespace with {ids} ids mapped (subordinate ranges)")
            }
        }
    }
}

/// Why the user namespace could not be entered.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    /// The kernel refused a user namespace; `why` is `umstage doctor`'s finding.
    #[error("cannot create a user namespace: {}: {why}", crate::doctor::trial::errno_name(*errno))]
    Unshare {
        /// The error number unshare failed with.
        errno: i32,
        /// The restriction that caused it and its fix, or what to run to find out.
        why: String,
    },
    /// The tier asked for with `--sandbox` cannot run here.
    #[error("the {tier} sandbox cannot run here: {why}")]
    TierUnavailable {
        /// The tier asked for.
        tier: Tier,
        /// The restriction in the way and its fix.
        why: String,
    },
    /// Writing the id maps failed even with a single-id map.
    #[error("cannot write the user namespace id map: {0}")]
    Map(#[source] IdMapError),
    /// Re-executing `/proc/self/exe` failed.
    #[error("cannot re-execute umstage into a user namespace: {0}")]
    Spawn(std::io::Error),
    /// The socket between parent and child failed.
    #[error("user namespace handshake failed: {0}")]
    Handshake(std::io::Error),
}

/// Why the id maps of the child's namespace could not be written, or taken up inside it.
#[derive(Debug, thiserror::Error)]
pub enum IdMapError {
    /// `newuidmap` or `newgidmap` could not be started.
    #[error("cannot run {tool}: {source} (fix: install the uidmap package)")]
    Spawn {
        /// The tool.
        tool: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `newuidmap` or `newgidmap` refused the map.
    #[error("{tool} failed with {status}: {detail}")]
    Tool {
        /// The tool.
        tool: String,
        /// How it exited.
        status: std::process::ExitStatus,
        /// The first line it printed on standard error.
        detail: String,
    },
    /// A `/proc/PID/{uid_map,gid_map,setgroups}` file could not be written.
    #[error("writing {}: {source}", path.display())]
    Proc {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Becoming root inside the namespace failed.
    #[error("{call} in the user namespace: {source}")]
    BecomeRoot {
        /// The call, such as `setresuid(0)`.
        call: &'static str,
        /// Why.
        #[source]
        source: nix::errno::Errno,
    },
}

static INSIDE: OnceLock<UserNamespace> = OnceLock::new();

/// Whether this process has entered its user namespace through [`enter`].
pub fn is_inside() -> bool {
    INSIDE.get().is_some()
}

/// The namespace this process runs in, if it entered one.
pub fn current() -> Option<&'static UserNamespace> {
    INSIDE.get()
}

/// Makes sure this process runs inside the user + mount namespace.
///
/// Inside (the re-executed child, after [`crate::dispatch`]) it returns what the namespace is.
/// Outside it re-executes `/proc/self/exe` with the same arguments, waits for it while
/// forwarding SIGINT, SIGTERM, SIGHUP and SIGQUIT, and exits with its status: in the outer
/// process it never returns `Ok`. Call it before starting threads, so the forwarded signals
/// reach the thread that waits.
pub fn enter(options: &Options) -> Result<UserNamespace, UsernsError> {
    if let Some(inside) = INSIDE.get() {
        return Ok(inside.clone());
    }
    let mut plan = plan_mapping(options);
    if options.tier == TierChoice::Exactly(Tier::Userns) && plan.mode == Mode::SingleId {
        return Err(UsernsError::TierUnavailable {
            tier: Tier::Userns,
            why: plan.warning.unwrap_or_default(),
        });
    }
    loop {
        match run_child(&plan)? {
            ChildEnd::Exited(status) => exit_like(status),
            ChildEnd::MapFailed(reason) if plan.mode == Mode::Subordinate => {
                let why = doctor_says(Trial::Works, Tier::Userns);
                if options.tier == TierChoice::Exactly(Tier::Userns) {
                    return Err(UsernsError::TierUnavailable {
                        tier: Tier::Userns,
                        why: format!("writing the subordinate id map failed ({reason}): {why}"),
                    });
                }
                let single = single_id_plan(SingleId {
                    reason: format!("writing the subordinate id map failed ({reason}): {why}"),
                    fix: None,
                });
                tracing::debug!(%reason, "falling back to a single-id map");
                plan = single;
            }
            ChildEnd::MapFailed(reason) => return Err(UsernsError::Map(reason)),
        }
    }
}

/// The maps to write, with the warning that goes with them.
#[derive(Debug, Clone)]
struct Plan {
    mode: Mode,
    uid_map: Vec<IdRange>,
    gid_map: Vec<IdRange>,
    warning: Option<String>,
    single_id: Option<SingleId>,
}

fn plan_mapping(options: &Options) -> Plan {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        let read = |file: &str| std::fs::read_to_string(file).unwrap_or_default();
        return Plan {
            mode: Mode::Root,
            uid_map: identity_of(&read("/proc/self/uid_map")),
            gid_map: identity_of(&read("/proc/self/gid_map")),
            warning: None,
            single_id: None,
        };
    }
    if options.tier == TierChoice::Exactly(Tier::UsernsSingle) {
        return single_id_plan(SingleId {
            reason: "a single-id map was asked for".into(),
            fix: None,
        });
    }
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    let subuid = read_subordinate(Path::new("/etc/subuid"), &name, uid.as_raw());
    let subgid = read_subordinate(Path::new("/etc/subgid"), &name, uid.as_raw());
    let missing_tool = ["newuidmap", "newgidmap"]
        .into_iter()
        .find(|tool| find_in_path(tool).is_none());
    let read = |file: &str| std::fs::read_to_string(file).unwrap_or_default();
    plan_subordinate(&name, &subuid, &subgid, missing_tool, || {
        free_range::fix(
            &name,
            &read("/etc/subuid"),
            &read("/etc/subgid"),
            &read("/etc/login.defs"),
        )
    })
}

/// The subordinate map, or a single-id plan whose warning says what is missing and how to fix it
/// (`add_ranges`: the command giving the user free ranges).
fn plan_subordinate(
    name: &str,
    subuid: &[SubRange],
    subgid: &[SubRange],
    missing_tool: Option<&str>,
    add_ranges: impl FnOnce() -> String,
) -> Plan {
    if subuid.is_empty() || subgid.is_empty() {
        let file = if subuid.is_empty() {
            "subuid"
        } else {
            "subgid"
        };
        return single_id_plan(SingleId {
            reason: format!("no range for user {name} in /etc/{file}"),
            fix: Some(add_ranges()),
        });
    }
    if let Some(tool) = missing_tool {
        return single_id_plan(SingleId {
            reason: format!("{tool} not found"),
            fix: Some("install the uidmap package, or shadow-utils on Fedora".into()),
        });
    }
    Plan {
        mode: Mode::Subordinate,
        uid_map: subordinate_map(nix::unistd::geteuid().as_raw(), subuid),
        gid_map: subordinate_map(nix::unistd::getegid().as_raw(), subgid),
        warning: None,
        single_id: None,
    }
}

fn single_id_plan(cause: SingleId) -> Plan {
    const LIMIT: &str = "running with a single-id map, so owners other than root are recorded, not set, and a non-root USER is played by root";
    let warning = match &cause.fix {
        Some(fix) => format!("{}: {LIMIT} (fix: {fix})", cause.reason),
        None => format!("{LIMIT} ({})", cause.reason),
    };
    let one = |outside| {
        vec![IdRange {
            inside: 0,
            outside,
            count: 1,
        }]
    };
    Plan {
        mode: Mode::SingleId,
        uid_map: one(nix::unistd::geteuid().as_raw()),
        gid_map: one(nix::unistd::getegid().as_raw()),
        warning: Some(warning),
        single_id: Some(cause),
    }
}

/// The identity map over the ids this process's own namespace maps (`/proc/self/uid_map`'s
/// text): every id on the host, or only the pod's 65536 where root runs in a user namespace
/// already (Kubernetes' `hostUsers: false`), where mapping more is refused.
fn identity_of(own_map: &str) -> Vec<IdRange> {
    let ranges: Vec<IdRange> = own_map
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace().map(|f| f.parse::<u32>().ok());
            let inside = fields.next()??;
            let _outside = fields.next()??;
            let count = fields.next()??;
            Some(IdRange {
                inside,
                outside: inside,
                count,
            })
        })
        .collect();
    if ranges.is_empty() {
        return vec![IdRange {
            inside: 0,
            outside: 0,
            count: u32::MAX,
        }];
    }
    ranges
}

/// 0 → the caller, then the ranges back to back from 1, stopping before the id space ends.
fn subordinate_map(own: u32, ranges: &[SubRange]) -> Vec<IdRange> {
    let mut map = vec![IdRange {
        inside: 0,
        outside: own,
        count: 1,
    }];
    let mut next: u64 = 1;
    for &(start, count) in ranges {
        let room = u64::from(u32::MAX) - next;
        let count = u64::from(count).min(room);
        if count == 0 {
            break;
        }
        map.push(IdRange {
            inside: next as u32,
            outside: start,
            count: count as u32,
        });
        next += count;
    }
    map
}

enum ChildEnd {
    Exited(std::process::ExitStatus),
    MapFailed(IdMapError),
}

/// The parent's answer to the child once the maps are written.
#[derive(Serialize, Deserialize)]
enum Answer {
    Entered(UserNamespace),
    Abort,
}

/// Signals the parent forwards to the child.
const FORWARDED: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

fn run_child(plan: &Plan) -> Result<ChildEnd, UsernsError> {
    let (mut parent_end, child_end) = UnixStream::pair().map_err(UsernsError::Handshake)?;
    let child_fd = child_end.as_raw_fd();

    let mut forwarded = SigSet::empty();
    for signal in FORWARDED {
        forwarded.add(signal);
    }
    let mut old_mask = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&forwarded), Some(&mut old_mask))
        .map_err(|e| UsernsError::Spawn(e.into()))?;

    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| OsString::from("umstage"));
    let mut command = Command::new("/proc/self/exe");
    command
        .arg0(argv0)
        .args(args)
        .env(HANDSHAKE_ENV, child_fd.to_string());
    let child_mask = old_mask;
    // SAFETY: the closure only makes async-signal-safe calls (fcntl, prctl, sigprocmask).
    unsafe {
        command.pre_exec(move || {
            let flags = libc::fcntl(child_fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(child_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&child_mask), None)?;
            Ok(())
        });
    }
    let spawned = command.spawn();
    drop(child_end);
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            restore_mask(&old_mask);
            return Err(UsernsError::Spawn(e));
        }
    };
    let pid = Pid::from_raw(child.id() as i32);

    let mut ready = [0u8; 2];
    let unshared = match parent_end.read(&mut ready) {
        Ok(1..) if ready[0] == UNSHARED => Ok(()),
        Ok(n @ 1..) if ready[0] == REFUSED => {
            let mut errno = [0u8; 1];
            let errno = match n {
                1 => parent_end
                    .read_exact(&mut errno)
                    .map(|()| errno[0])
                    .unwrap_or(0),
                _ => ready[1],
            };
            Err(Some(i32::from(errno)))
        }
        _ => Err(None),
    };
    if let Err(errno) = unshared {
        let status = child.wait().map_err(UsernsError::Handshake)?;
        restore_mask(&old_mask);
        if status.code() == Some(HANDSHAKE_FAILED)
            && let Some(errno) = errno
        {
            return Err(UsernsError::Unshare {
                errno,
                why: doctor_says(Trial::Unshare(errno), Tier::UsernsSingle),
            });
        }
        return Ok(ChildEnd::Exited(status));
    }

    if let Err(reason) = write_maps(pid, plan) {
        let _ = send_answer(&mut parent_end, &Answer::Abort);
        let _ = child.kill();
        let _ = child.wait();
        restore_mask(&old_mask);
        return Ok(ChildEnd::MapFailed(reason));
    }
    let entered = UserNamespace {
        mode: plan.mode,
        uid_map: plan.uid_map.clone(),
        gid_map: plan.gid_map.clone(),
        warning: plan.warning.clone(),
        single_id: plan.single_id.clone(),
    };
    send_answer(&mut parent_end, &Answer::Entered(entered)).map_err(UsernsError::Handshake)?;
    drop(parent_end);

    let status = supervise(&mut child, pid, &forwarded)?;
    restore_mask(&old_mask);
    Ok(ChildEnd::Exited(status))
}

/// What `umstage doctor` finds in the way of `tier`, given what the namespace just did, as
/// one line naming the restriction and its fix.
fn doctor_says(seen: Trial, tier: Tier) -> String {
    let diagnosis = crate::doctor::diagnose(&Facts::gather(None, Some(seen)));
    match diagnosis.blockers_of(tier) {
        found if found.is_empty() => {
            "no restriction umstage knows explains it; `umstage doctor` lists what it checked"
                .into()
        }
        found => format!("{found} (`umstage doctor` shows every finding)"),
    }
}

fn restore_mask(mask: &SigSet) {
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(mask), None);
}

fn send_answer(stream: &mut UnixStream, answer: &Answer) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(answer).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

/// Writes the child's uid and gid maps as the plan says; the error is one line for the user.
fn write_maps(pid: Pid, plan: &Plan) -> Result<(), IdMapError> {
    match plan.mode {
        Mode::Subordinate => {
            run_map_tool("newuidmap", pid, &plan.uid_map)?;
            run_map_tool("newgidmap", pid, &plan.gid_map)
        }
        Mode::SingleId | Mode::Root => {
            let proc_dir = PathBuf::from(format!("/proc/{pid}"));
            if plan.mode == Mode::SingleId {
                write_proc(&proc_dir.join("setgroups"), "deny")?;
            }
            write_proc(&proc_dir.join("uid_map"), &map_text(&plan.uid_map))?;
            write_proc(&proc_dir.join("gid_map"), &map_text(&plan.gid_map))
        }
    }
}

fn map_text(map: &[IdRange]) -> String {
    map.iter()
        .map(|r| format!("{} {} {}\n", r.inside, r.outside, r.count))
        .collect()
}

fn write_proc(path: &Path, text: &str) -> Result<(), IdMapError> {
    std::fs::write(path, text).map_err(|source| IdMapError::Proc {
        path: path.to_owned(),
        source,
    })
}

fn run_map_tool(tool: &str, pid: Pid, map: &[IdRange]) -> Result<(), IdMapError> {
    let mut command = Command::new(tool);
    command.arg(pid.to_string());
    for range in map {
        command.args([
            range.inside.to_string(),
            range.outside.to_string(),
            range.count.to_string(),
        ]);
    }
    let output = command.output().map_err(|source| IdMapError::Spawn {
        tool: tool.to_owned(),
        source,
    })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let detail = stderr
        .lines()
        .next()
        .unwrap_or("no message")
        .trim()
        .to_string();
    Err(IdMapError::Tool {
        tool: tool.to_owned(),
        status: output.status,
        detail,
    })
}

/// Waits for the child, forwarding the blocked termination signals to it.
fn supervise(
    child: &mut std::process::Child,
    pid: Pid,
    forwarded: &SigSet,
) -> Result<std::process::ExitStatus, UsernsError> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    use std::os::fd::AsFd;

    let signals = SignalFd::with_flags(forwarded, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| UsernsError::Handshake(e.into()))?;
    let pidfd = pidfd_open(pid).map_err(UsernsError::Handshake)?;
    loop {
        let mut fds = [
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(UsernsError::Handshake(e.into())),
        }
        let child_done = fds[1].any().unwrap_or(false);
        while let Ok(Some(info)) = signals.read_signal() {
            if let Ok(signal) = Signal::try_from(info.ssi_signo as i32) {
                let _ = nix::sys::signal::kill(pid, signal);
            }
        }
        if child_done {
            return child.wait().map_err(UsernsError::Handshake);
        }
    }
}

fn pidfd_open(pid: Pid) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Exits this process the way the child ended: the same code, or death by the same signal.
fn exit_like(status: std::process::ExitStatus) -> ! {
    if let Some(code) = status.code() {
        std::process::exit(code);
    }
    if let Some(signal) = status.signal().and_then(|s| Signal::try_from(s).ok()) {
        // SAFETY: restoring the default action of a signal has no memory-safety preconditions.
        unsafe {
            let _ = nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigDfl);
        }
        let mut set = SigSet::empty();
        set.add(signal);
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
        let _ = nix::sys::signal::raise(signal);
        std::process::exit(128 + signal as i32);
    }
    std::process::exit(1);
}

/// In the re-executed child: unshare, wait for the maps, become root in the namespace.
pub(crate) fn finish_reexec_if_child() {
    let Some(fd_text) = std::env::var_os(HANDSHAKE_ENV) else {
        return;
    };
    // SAFETY: called from `dispatch` at the top of `main`, before any other thread exists.
    unsafe { std::env::remove_var(HANDSHAKE_ENV) };
    let Some(fd) = fd_text.to_str().and_then(|t| t.parse::<RawFd>().ok()) else {
        eprintln!("umstage: bad {HANDSHAKE_ENV} value");
        std::process::exit(HANDSHAKE_FAILED);
    };
    // The fd was left open across exec for us by the parent; if it is not a socket, the
    // reads below fail and we exit.
    // SAFETY: the parent passed this fd to us and nothing else in this process uses it.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    // SAFETY: FD_CLOEXEC on an fd we own.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    match handshake_as_child(stream) {
        Ok(inside) => {
            let _ = INSIDE.set(inside);
        }
        Err(message) => {
            if let Some(message) = message {
                eprintln!("umstage: {message}");
            }
            std::process::exit(HANDSHAKE_FAILED);
        }
    }
}

/// `Err(None)` means the parent aborted (it reports why itself).
fn handshake_as_child(mut stream: UnixStream) -> Result<UserNamespace, Option<String>> {
    let parent = nix::unistd::getppid();
    if let Err(e) = nix::sched::unshare(
        CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWCGROUP,
    ) {
        // The parent reports it, with doctor's reading of why.
        let errno = u8::try_from(e as i32).unwrap_or(u8::MAX);
        let _ = stream.write_all(&[REFUSED, errno]);
        return Err(None);
    }
    stream
        .write_all(&[UNSHARED])
        .map_err(|e| Some(format!("handshake: {e}")))?;
    let mut line = String::new();
    BufReader::new(&mut stream)
        .read_line(&mut line)
        .map_err(|e| Some(format!("handshake: {e}")))?;
    let inside = match serde_json::from_str::<Answer>(&line) {
        Ok(Answer::Entered(inside)) => inside,
        Ok(Answer::Abort) | Err(_) => return Err(None),
    };
    // The parent reads the reason over the socket, as text.
    become_root(&inside).map_err(|e| Some(e.to_string()))?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| Some(format!("PR_SET_PDEATHSIG: {e}")))?;
    if nix::unistd::getppid() != parent {
        return Err(Some("the parent process died".into()));
    }
    // Nothing we mount may propagate back to the host, nor the host's mounts into us.
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| {
        let why = doctor_says(Trial::Mount(e as i32), Tier::UsernsSingle);
        Some(format!(
            "making / private in the mount namespace: {e}: {why}"
        ))
    })?;
    Ok(inside)
}

fn become_root(inside: &UserNamespace) -> Result<(), IdMapError> {
    let root_gid = Gid::from_raw(0);
    let root_uid = Uid::from_raw(0);
    let failed = |call| move |source| IdMapError::BecomeRoot { call, source };
    nix::unistd::setresgid(root_gid, root_gid, root_gid).map_err(failed("setresgid(0)"))?;
    if inside.mode != Mode::SingleId {
        nix::unistd::setgroups(&[]).map_err(failed("setgroups"))?;
    }
    nix::unistd::setresuid(root_uid, root_uid, root_uid).map_err(failed("setresuid(0)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_map_puts_caller_at_zero_and_ranges_back_to_back() {
        let map = subordinate_map(1001, &[(100000, 65536), (400000, 5)]);
        assert_eq!(
            map,
            vec![
                IdRange {
                    inside: 0,
                    outside: 1001,
                    count: 1
                },
                IdRange {
                    inside: 1,
                    outside: 100000,
                    count: 65536
                },
                IdRange {
                    inside: 65537,
                    outside: 400000,
                    count: 5
                },
            ]
        );
    }

    #[test]
    fn missing_range_or_tool_falls_back_to_single_id_with_a_fix() {
        let range = [(100000, 65536)];
        let plan = plan_subordinate("bob", &[], &range, None, || {
            "sudo usermod --add-subuids 1-2 --add-subgids 3-4 bob".into()
        });
        assert_eq!(plan.mode, Mode::SingleId);
        let warning = plan.warning.expect("warning");
        assert!(
            warning.contains("no range for user bob in /etc/subuid"),
            "{warning}"
        );
        assert!(
            warning.contains("(fix: sudo usermod --add-subuids 1-2 --add-subgids 3-4 bob)"),
            "{warning}"
        );
        assert!(!warning.contains('\n'));
        let plan = plan_subordinate("bob", &range, &range, Some("newuidmap"), String::new);
        assert_eq!(plan.mode, Mode::SingleId);
        assert!(
            plan.warning
                .expect("warning")
                .contains("install the uidmap package")
        );
        let plan = plan_subordinate("bob", &range, &range, None, String::new);
        assert_eq!(plan.mode, Mode::Subordinate);
        assert!(plan.warning.is_none());
        assert_eq!(plan.uid_map.len(), 2);
    }

    #[test]
    fn root_maps_what_its_own_namespace_maps() {
        let host = identity_of("         0          0 4294967295\n");
        assert_eq!(
            host,
            [IdRange {
                inside: 0,
                outside: 0,
                count: u32::MAX
            }]
        );
        let pod = identity_of("         0     100000      65536\n");
        assert_eq!(
            pod,
            [IdRange {
                inside: 0,
                outside: 0,
                count: 65536
            }]
        );
        assert_eq!(identity_of("")[0].count, u32::MAX);
    }

    #[test]
    fn subordinate_map_never_overflows_the_id_space() {
        let map = subordinate_map(5, &[(1, u32::MAX), (7, 9)]);
        assert_eq!(map.len(), 2);
        assert_eq!(
            u64::from(map[1].inside) + u64::from(map[1].count),
            u64::from(u32::MAX)
        );
    }
}
