//! The sandbox helper: a fresh, single-threaded `/proc/self/exe` that runs one step.
//!
//! It reads a [`Request`] on stdin, unshares pid, uts, ipc (and net) namespaces, and forks
//! the step's pid 1. Pid 1 unshares a mount namespace, mounts the snapshot and the spec's
//! mounts (targets resolved inside the rootfs, never through its symlinks to the host),
//! `pivot_root`s, becomes the step's user and execs. The helper waits and reports on fd 3.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::{ForkResult, Gid, Uid};
use oci_spec::runtime::{LinuxNamespaceType, Mount};
use rustix::fs::{Mode, OFlags};

use super::failure::HelperError;
use super::rootfs::{Kind, Ready, ensure, user_and_workdir};
use super::{DEFAULT_PATH, ExitStatus, REPORT_FD, Report, Request};
use crate::snapshot::{MountSpec, bind_mount, remount_read_only};
use umstage_oci::inroot::{Root, fd_path};

/// Runs the helper and exits; never returns.
pub(crate) fn main() -> ! {
    let code = match run() {
        Ok(()) => 0,
        // The report crosses to another process: it goes as text.
        Err(e) => {
            send(&Report::SetupError(e.to_string()));
            125
        }
    };
    std::process::exit(code)
}

fn send(report: &Report) {
    let Ok(mut line) = serde_json::to_vec(report) else {
        return;
    };
    line.push(b'\n');
    let mut written = 0;
    while written < line.len() {
        // SAFETY: writes from a live buffer to the report fd the parent gave us.
        let n = unsafe {
            libc::write(
                REPORT_FD,
                line[written..].as_ptr().cast(),
                line.len() - written,
            )
        };
        if n <= 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        written += n as usize;
    }
}

fn errno(what: &str) -> impl FnOnce(nix::errno::Errno) -> HelperError + '_ {
    move |e| HelperError::during(what, e)
}

fn run() -> Result<(), HelperError> {
    // Die with the thread that started us; if it is gone already, we were reparented.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(errno("PR_SET_PDEATHSIG"))?;
    let parent = std::env::args().nth(2).and_then(|p| p.parse::<i32>().ok());
    if parent != Some(nix::unistd::getppid().as_raw()) {
        std::process::exit(125);
    }
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    )
    .map_err(errno("resetting the signal mask"))?;
    // Stdin is a socket: the request comes in on it and the reports go back on a copy at
    // REPORT_FD, which the step's program does not inherit.
    // SAFETY: dup3/close_range on fds this fresh process owns; nothing else uses fd 3 or above.
    unsafe {
        if libc::dup3(0, REPORT_FD, libc::O_CLOEXEC) < 0 {
            std::process::exit(125);
        }
        libc::syscall(libc::SYS_close_range, REPORT_FD + 1, u32::MAX, 0);
    }
    let mut input = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut input)
        .map_err(|e| HelperError::during("reading the step", e))?;
    let request: Request =
        serde_json::from_slice(&input).map_err(|e| HelperError::during("decoding the step", e))?;
    let null = std::fs::File::open("/dev/null").map_err(|e| HelperError::during("/dev/null", e))?;
    // SAFETY: dup2 onto stdin, which this process owns.
    if unsafe { libc::dup2(null.as_raw_fd(), 0) } < 0 {
        return Err(HelperError::during(
            "stdin",
            std::io::Error::last_os_error(),
        ));
    }
    drop(null);

    let wants = |kind: LinuxNamespaceType| {
        request
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .is_some_and(|ns| ns.iter().any(|n| n.typ() == kind))
    };
    // The chroot tier has no namespaces to make.
    if request.chroot.is_none() {
        let mut flags =
            CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
        let new_net = wants(LinuxNamespaceType::Network);
        if new_net {
            flags |= CloneFlags::CLONE_NEWNET;
        }
        nix::sched::unshare(flags).map_err(errno("unsharing the step's namespaces"))?;
        if new_net {
            loopback_up().map_err(|e| HelperError::during("bringing lo up", e))?;
        }
        if let Some(hostname) = request.spec.hostname() {
            nix::unistd::sethostname(hostname).map_err(errno("sethostname"))?;
        }
    }
    // The ptrace tier's user, working directory and root, for the step and its supervisor.
    let traced = match (&request.chroot, request.trace) {
        (Some(rootfs), true) => Some(super::trace::Setup::new(&request, rootfs)?),
        _ => None,
    };
    // Pid 1 hands the ownership recorder's listener back on this socket.
    let recorder = match request.record_owners {
        true => Some(UnixStream::pair().map_err(|e| HelperError::during("socketpair", e))?),
        false => None,
    };
    // SAFETY: this process is single-threaded (a fresh exec that started no threads).
    match unsafe { nix::unistd::fork() }.map_err(errno("fork"))? {
        ForkResult::Child => step_main(
            &request,
            recorder.map(|(_, theirs)| theirs),
            traced.as_ref(),
        ),
        ForkResult::Parent { child } => {
            // With no pid namespace to end the step's other processes with it, they share a
            // process group that is killed when the step's main process ends (set on both
            // sides of the fork, so neither order races).
            let chrooted = request.chroot.is_some();
            if chrooted {
                let _ = nix::unistd::setpgid(child, child);
            }
            let end_group = || {
                if chrooted {
                    let _ = nix::sys::signal::killpg(child, Signal::SIGKILL);
                }
            };
            if let Some(setup) = &traced {
                let status = setup.supervise(child);
                end_group();
                send(&Report::Ended(status?));
                return Ok(());
            }
            if let Some((ours, theirs)) = recorder {
                // Only pid 1 may hold its end: the receive ends when pid 1 does.
                drop(theirs);
                if let Some((listener, who)) = super::owners::receive_listener(&ours) {
                    super::owners::supervise(listener, who);
                    // Every process of the step is gone: what it made is the user's.
                    if let Some(who) = who {
                        super::identity::own_new_entries(&request.rootfs, who);
                    }
                }
            }
            loop {
                match nix::sys::wait::waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) => {
                        end_group();
                        send(&Report::Ended(ExitStatus::Code(code)));
                        return Ok(());
                    }
                    Ok(WaitStatus::Signaled(_, signal, _)) => {
                        end_group();
                        send(&Report::Ended(ExitStatus::Signal(signal as i32)));
                        return Ok(());
                    }
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        return Err(HelperError::during("waiting for the step", e));
                    }
                }
            }
        }
    }
}

/// Pid 1 of the step: set up and exec; reports and exits on failure.
fn step_main(
    request: &Request,
    recorder: Option<UnixStream>,
    traced: Option<&super::trace::Setup>,
) -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if request.chroot.is_some() {
        let own = nix::unistd::Pid::from_raw(0);
        let _ = nix::unistd::setpgid(own, own);
    }
    let mut stubs = Vec::new();
    let message = setup_and_exec(request, recorder.as_ref(), traced, &mut stubs);
    send(&Report::Stubs(stubs));
    send(&Report::SetupError(message));
    // SAFETY: _exit ends this forked process without running the parent's destructors.
    unsafe { libc::_exit(127) }
}

/// Returns only on failure, with the message for the user.
fn setup_and_exec(
    request: &Request,
    recorder: Option<&UnixStream>,
    traced: Option<&super::trace::Setup>,
    stubs: &mut Vec<PathBuf>,
) -> String {
    let prepared = match (&request.chroot, traced) {
        (_, Some(setup)) => {
            stubs.extend_from_slice(setup.stubs());
            Ok(Ready {
                user: setup.user().clone(),
            })
        }
        (Some(rootfs), None) => super::chroot::prepare_root(request, rootfs, stubs),
        (None, None) => prepare_root(request, stubs),
    };
    match prepared {
        Ok(ready) => {
            send(&Report::Stubs(stubs.clone()));
            exec_step(request, recorder, traced, ready)
        }
        Err(e) => e.to_string(),
    }
}

fn prepare_root(request: &Request, stubs: &mut Vec<PathBuf>) -> Result<Ready, HelperError> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(errno("unsharing the mount namespace"))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(errno("making / private"))?;
    let root_path = request
        .spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .ok_or("the step has no root")?;
    let sandbox = &request.sandbox_dir;
    nix::mount::mount(
        Some("tmpfs"),
        sandbox,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755,size=16m"),
    )
    .map_err(errno("mounting the sandbox tmpfs"))?;
    write_private_files(request)?;
    let stub_layer = sandbox.join("stubs");
    let mounts: &[Mount] = request.spec.mounts().as_deref().unwrap_or_default();
    let sources = mounts
        .iter()
        .enumerate()
        .map(|(index, mount)| {
            let in_root = request.in_root.get(index).and_then(Option::as_deref);
            Source::resolve(mount, in_root).map_err(|e| {
                HelperError::during(
                    format!("mount source for {}", mount.destination().display()),
                    e,
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    make_stub_layer(&stub_layer, mounts, &sources)?;
    std::fs::create_dir_all(&root_path)
        .map_err(|e| HelperError::during(format!("{}", root_path.display()), e))?;
    for rootfs in &request.rootfs {
        let mut rootfs = rootfs.clone();
        if rootfs.fstype == "overlay" && !rootfs.is_read_only() {
            // Mount points come from a bottom layer on this tmpfs, so creating them writes
            // nothing into the snapshot.
            rootfs
                .options
                .push(format!("lowerdir+={}", stub_layer.display()));
        }
        rootfs.mount_at(&root_path).map_err(|e| {
            HelperError::during(
                format!("mounting the snapshot on {}", root_path.display()),
                e,
            )
        })?;
    }
    let root = Root::open(&root_path).map_err(|e| {
        HelperError::during(format!("opening the rootfs {}", root_path.display()), e)
    })?;

    let user = user_and_workdir(request, &root)?;

    for (mount, source) in mounts.iter().zip(&sources) {
        mount_one(&root, mount, source, stubs).map_err(|e| {
            HelperError::during(format!("mounting {}", mount.destination().display()), e)
        })?;
    }

    std::env::set_current_dir(&root_path)
        .map_err(|e| HelperError::during("chdir to the rootfs", e))?;
    nix::unistd::pivot_root(".", ".").map_err(errno("pivot_root"))?;
    nix::mount::umount2(".", MntFlags::MNT_DETACH).map_err(errno("detaching the old root"))?;
    std::env::set_current_dir("/").map_err(|e| HelperError::during("chdir /", e))?;
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
        ("/dev/ptmx", "pts/ptmx"),
    ] {
        let _ = std::os::unix::fs::symlink(target, link);
    }
    Ok(Ready { user })
}

/// Writes the step's small files and secrets into the sandbox tmpfs.
fn write_private_files(request: &Request) -> Result<(), HelperError> {
    let files = request.sandbox_dir.join("files");
    let secrets = request.sandbox_dir.join("secrets");
    for dir in [&files, &secrets] {
        std::fs::create_dir_all(dir)
            .map_err(|e| HelperError::during(format!("{}", dir.display()), e))?;
    }
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| HelperError::during(format!("chmod {}", secrets.display()), e))?;
    for file in &request.files {
        let path = files.join(&file.name);
        std::fs::write(&path, &file.content)
            .map_err(|e| HelperError::during(format!("{}", path.display()), e))?;
    }
    for secret in &request.secrets {
        super::mounts::write_secret(&secrets, secret)?;
    }
    Ok(())
}

/// Builds a tree holding every mount point (and its parents) of the step.
fn make_stub_layer(dir: &Path, mounts: &[Mount], sources: &[Source]) -> Result<(), HelperError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| HelperError::during(format!("{}", dir.display()), e))?;
    for (mount, source) in mounts.iter().zip(sources) {
        let Ok(rel) = mount.destination().strip_prefix("/") else {
            continue;
        };
        if rel.components().any(|c| !matches!(c, Component::Normal(_)))
            || rel.as_os_str().is_empty()
        {
            continue;
        }
        let path = dir.join(rel);
        let result = match source.kind() {
            Kind::Dir => std::fs::create_dir_all(&path),
            Kind::File => path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(&path, b"")),
        };
        // A clash (a file where a directory is wanted) is left for the mount itself to report.
        if let Err(e) = result {
            tracing::debug!("stub {}: {e}", path.display());
        }
    }
    Ok(())
}

/// What a mount is made from: for a bind, the source opened (`O_PATH`) in this mount namespace,
/// resolved inside its root when it comes from a stage, an image or the context; for an
/// overlay whose lower directory does, that directory.
enum Source {
    /// Nothing to resolve (proc, tmpfs, overlays of umstage's own directories).
    None,
    /// A bind's source.
    Bind(OwnedFd),
    /// The lower directory of a writable bind, made an overlay.
    Lower(OwnedFd),
}

impl Source {
    fn resolve(mount: &Mount, in_root: Option<&Path>) -> std::io::Result<Self> {
        let open = |root: &Path| -> std::io::Result<OwnedFd> {
            let flags = OFlags::PATH | OFlags::CLOEXEC;
            match in_root {
                Some(path) => {
                    let dir = rustix::fs::open(root, flags | OFlags::DIRECTORY, Mode::empty())?;
                    umstage_oci::inroot::open_in_root(&dir, path, OFlags::PATH)
                }
                None => Ok(rustix::fs::open(root, flags, Mode::empty())?),
            }
        };
        match mount.typ().as_deref() {
            Some("bind") => {
                let source = mount.source().clone().unwrap_or_default();
                Ok(Self::Bind(open(&source)?))
            }
            Some("overlay") if in_root.is_some() => {
                let options = mount.options().as_deref().unwrap_or_default();
                let lower = options
                    .iter()
                    .find_map(|o| o.strip_prefix("lowerdir+="))
                    .ok_or_else(|| std::io::Error::other("the overlay has no lower directory"))?;
                Ok(Self::Lower(open(Path::new(lower))?))
            }
            _ => Ok(Self::None),
        }
    }

    /// Whether the mount goes on a directory or on a file.
    fn kind(&self) -> Kind {
        match self {
            Self::Bind(fd)
                if nix::sys::stat::fstat(fd)
                    .is_ok_and(|st| st.st_mode & libc::S_IFMT != libc::S_IFDIR) =>
            {
                Kind::File
            }
            _ => Kind::Dir,
        }
    }
}

fn exec_step(
    request: &Request,
    recorder: Option<&UnixStream>,
    traced: Option<&super::trace::Setup>,
    ready: Ready,
) -> String {
    match try_exec(request, recorder, traced, ready) {
        Ok(never) => match never {},
        Err(e) => e.to_string(),
    }
}

fn try_exec(
    request: &Request,
    recorder: Option<&UnixStream>,
    traced: Option<&super::trace::Setup>,
    ready: Ready,
) -> Result<std::convert::Infallible, HelperError> {
    let process = request
        .spec
        .process()
        .as_ref()
        .ok_or("the step has no process")?;
    // A traced step has no capabilities to limit, and its user is played by the supervisor.
    if let Some(bounding) = process
        .capabilities()
        .as_ref()
        .and_then(|c| c.bounding().as_ref())
        .filter(|_| traced.is_none())
    {
        super::caps::limit_to(bounding)?;
    }
    super::rlimit::apply(process.rlimits().as_deref().unwrap_or_default())?;
    let user = ready.user;
    let groups_denied = std::fs::read_to_string("/proc/self/setgroups")
        .map(|t| t.trim() == "deny")
        .unwrap_or(false);
    let unmapped = |what: &'static str, id: u32| {
        move |e: nix::errno::Errno| {
            format!(
                "cannot switch to {what} {id}: {e} (is it mapped? with a single-id user namespace only 0 exists)"
            )
        }
    };
    // A traced step keeps the pod's ids: the supervisor answers its identity calls.
    let switch_ids = traced.is_none();
    if switch_ids && !groups_denied {
        let groups: Vec<Gid> = user
            .additional_gids
            .iter()
            .map(|g| Gid::from_raw(*g))
            .collect();
        nix::unistd::setgroups(&groups)
            .map_err(|e| HelperError::during(format!("setgroups {:?}", user.additional_gids), e))?;
    } else if switch_ids && user.additional_gids.iter().any(|g| *g != user.gid) {
        tracing::debug!("supplementary groups skipped: setgroups is denied in this namespace");
    }
    // With one id and the recorder, a non-root user is played, not become (`identity`).
    let appear_as = (recorder.is_some() && (user.uid != 0 || user.gid != 0)).then_some(
        super::identity::Identity {
            uid: user.uid,
            gid: user.gid,
        },
    );
    if appear_as.is_none() && switch_ids {
        let gid = Gid::from_raw(user.gid);
        nix::unistd::setresgid(gid, gid, gid).map_err(unmapped("gid", user.gid))?;
        let uid = Uid::from_raw(user.uid);
        nix::unistd::setresuid(uid, uid, uid).map_err(unmapped("uid", user.uid))?;
    }
    // Changing credentials cleared the parent-death signal.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(errno("PR_SET_PDEATHSIG"))?;
    let umask = process.user().umask().unwrap_or(super::spec::UMASK);
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    if traced.is_none() {
        std::env::set_current_dir(process.cwd())
            .map_err(|e| HelperError::during(format!("chdir {}", process.cwd().display()), e))?;
    }

    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    let args = process.args().clone().unwrap_or_default();
    let program = args.first().ok_or("the step has no command")?;
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let not_found = || format!("exec: \"{program}\": executable file not found in $PATH");
    let resolved = match traced {
        Some(setup) => PathBuf::from(
            setup
                .find_program(program, path_var)
                .ok_or_else(not_found)?,
        ),
        None => find_program(program, path_var).ok_or_else(not_found)?,
    };
    let c_program =
        CString::new(resolved.as_os_str().as_bytes()).map_err(|_| "NUL in program path")?;
    let c_args = args
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "NUL in an argument")?;
    let c_env = env
        .iter()
        .map(|e| CString::new(e.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "NUL in the environment")?;
    // Last, so that nothing of the setup goes through the recorder.
    if let Some(socket) = recorder {
        let listener = super::owners::install(appear_as)?;
        super::owners::send_listener(socket, &listener, appear_as)?;
    }
    if let Some(setup) = traced {
        return setup.exec(&resolved.to_string_lossy(), &c_args, &c_env);
    }
    if request.chroot.is_some() {
        super::chroot::confine()?;
    }
    nix::unistd::execve(&c_program, &c_args, &c_env)
        .map_err(|e| HelperError::during(format!("exec {}", resolved.display()), e))
}

fn find_program(program: &str, path_var: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    path_var
        .split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Splits OCI mount options into flags and filesystem data.
fn parse_options(options: &[String]) -> (MsFlags, bool, bool, String) {
    let mut flags = MsFlags::empty();
    let mut recursive = false;
    let mut read_only = false;
    let mut data = Vec::new();
    for option in options {
        match option.as_str() {
            "ro" => read_only = true,
            "rw" => {}
            "bind" => {}
            "rbind" => recursive = true,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            other => data.push(other),
        }
    }
    (flags, recursive, read_only, data.join(","))
}

fn mount_one(
    root: &Root,
    mount: &Mount,
    resolved: &Source,
    stubs: &mut Vec<PathBuf>,
) -> Result<(), HelperError> {
    let typ = mount.typ().clone().unwrap_or_default();
    let source = mount.source().clone().unwrap_or_default();
    let mut options = mount.options().clone().unwrap_or_default();
    let kind = resolved.kind();
    let target_fd = ensure(root, mount.destination(), kind, Some(stubs))
        .map_err(|e| HelperError::during("creating the mount point", e))?;
    let target = fd_path(&target_fd);
    let (flags, recursive, read_only, data) = parse_options(&options);
    let reopen = || {
        ensure(root, mount.destination(), kind, None)
            .map_err(|e| HelperError::during("reopening the mount point", e))
    };
    match typ.as_str() {
        "bind" => {
            let mut bind_flags = MsFlags::MS_BIND;
            if recursive {
                bind_flags |= MsFlags::MS_REC;
            }
            // From the descriptor: what was resolved is what is mounted.
            let source = match resolved {
                Source::Bind(fd) => fd_path(fd),
                _ => source,
            };
            nix::mount::mount(
                Some(&source),
                &target,
                None::<&str>,
                bind_flags,
                None::<&str>,
            )
            .map_err(errno("bind"))?;
            if read_only {
                let top = reopen()?;
                remount_read_only(&fd_path(&top))
                    .map_err(|e| HelperError::during("read-only remount", e))?;
            }
        }
        "proc" => {
            let fresh = nix::mount::mount(Some("proc"), &target, Some("proc"), flags, None::<&str>);
            if let Err(e) = fresh {
                tracing::debug!("fresh /proc refused ({e}); binding the host's");
                bind_mount(Path::new("/proc"), &target, false)
                    .map_err(|e| HelperError::during("bind /proc", e))?;
            }
        }
        "overlay" => {
            if let Source::Lower(fd) = resolved {
                for option in &mut options {
                    if option.starts_with("lowerdir+=") {
                        *option = format!("lowerdir+={}", fd_path(fd).display());
                    }
                }
            }
            let spec = MountSpec {
                fstype: "overlay".into(),
                source: PathBuf::from("overlay"),
                options: options.clone(),
            };
            spec.mount_at(&target)
                .map_err(|e| HelperError::Below(e.into()))?;
        }
        _ => {
            let data_opt = (!data.is_empty()).then_some(data.as_str());
            nix::mount::mount(Some(&source), &target, Some(typ.as_str()), flags, data_opt)
                .map_err(|e| HelperError::during(typ.clone(), e))?;
            if read_only {
                let top = reopen()?;
                remount_read_only(&fd_path(&top))
                    .map_err(|e| HelperError::during("read-only remount", e))?;
            }
        }
    }
    Ok(())
}

/// Brings the loopback interface of a new network namespace up.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: a plain socket() call; the fd is owned right after.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the fd was just returned by socket().
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
