//! The `ptrace` tier: a step with no namespace and no privilege at all (a non-root user under
//! a runtime's default seccomp profile, which refuses `unshare` but allows `ptrace`), run under
//! a system call supervisor in the sandbox helper.
//!
//! The step's process makes itself traced, stops, sets no-new-privileges and a seccomp filter
//! ([`filter`]) that stops only the calls the supervisor must see ([`syscalls`]), and execs.
//! The supervisor ([`tracer`]) follows every fork and, at each stop ([`calls`]), translates
//! path arguments from the guest's root (its snapshot's directory, a native snapshot) to host
//! paths ([`paths`], resolved by the kernel with `RESOLVE_IN_ROOT`), writing them into a
//! scratch mapping it makes in each thread ([`slots`], [`memory`]); gives `/proc`, `/dev` and `/sys` as the container's own; turns
//! host paths back into the guest's (`getcwd`, `/proc` links); plays root or the step's
//! `USER` to the identity calls; records `chown`s and shows them to `stat`s, as the
//! `userns-single` tier does ([`super::owners`], [`super::identity`]); and loads programs
//! through the guest's own dynamic loader ([`exec`]). Nothing can be mounted: the step's
//! `/etc/hosts`, `resolv.conf` and `hostname` are files the supervisor gives for those paths,
//! and a cache or tmpfs `RUN --mount` a directory it gives for the target and all below it.
//!
//! Translation keeps an honest step inside its root: `rm -rf /` touches the snapshot; the
//! supervisor is not dumpable, so the step cannot read or write its memory; the step may
//! neither trace (`ptrace` fails) nor chroot. A hostile step could race it (a path resolved
//! here is walked again by the kernel), so the step's process also confines itself with
//! Landlock before it execs ([`super::landlock`]: its root, its mounts, its private files, a
//! few devices, `/proc` and `/sys` to read), which holds whatever path the kernel walks.

mod calls;
mod context;
mod copyup;
mod datagrams;
mod devices;
mod errno;
mod exec;
mod filter;
mod follow;
mod memory;
mod mounts;
mod paths;
mod private;
mod readonly;
mod regs;
mod shared;
mod slots;
mod sockets;
mod syscalls;
mod tracer;

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use umstage_oci::inroot::Root as InRoot;

use super::failure::HelperError;
use super::identity::Identity;
use super::landlock::{Access, Ruleset};
use super::rootfs::user_and_workdir;
use super::user::ResolvedUser;
use super::{ExitStatus, Request};

/// The devices a step is given from the container's `/dev` (read, write, ioctls).
const DEVICES: [&str; 8] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/ptmx",
    "/dev/pts",
];

/// The Landlock rules of a step whose root is `rootfs`: everything beneath it, its private
/// files and its `RUN --mount`s (a read-only one to read and run); the devices it is given;
/// `/proc` and `/sys` to read.
fn confinement<'a>(
    rootfs: &'a Path,
    files: &'a Path,
    mounts: impl Iterator<Item = (&'a Path, bool)>,
) -> Result<Option<Ruleset>, HelperError> {
    let mut rules = match Ruleset::new().map_err(|e| HelperError::Below(e.into()))? {
        Ok(rules) => rules,
        Err(why) => {
            tracing::debug!("not confined by Landlock: {why}");
            return Ok(None);
        }
    };
    let own = [rootfs, files].into_iter().map(|dir| (dir, Access::ALL));
    let mounted = mounts.map(|(path, read_only)| {
        let access = if read_only {
            Access::READ_EXECUTE
        } else {
            Access::ALL
        };
        (path, access)
    });
    let rules_for = own
        .chain(mounted)
        .chain(DEVICES.iter().map(|d| (Path::new(*d), Access::DEVICE)))
        .chain([
            (Path::new("/proc"), Access::READ),
            (Path::new("/sys"), Access::READ),
        ]);
    for (path, access) in rules_for {
        rules
            .allow(path, access)
            .map_err(|e| HelperError::Below(e.into()))?;
    }
    Ok(Some(rules))
}

/// What the helper prepares before it forks the step: both sides use it.
pub(crate) struct Setup {
    ctx: context::Context,
    user: ResolvedUser,
    cwd: PathBuf,
    /// The step's private files (`/etc/hosts`...), removed when the step is over.
    files: PathBuf,
    /// What the step may reach, applied by its process before it execs; `None` where the
    /// kernel offers no Landlock (the build's tier line said why).
    landlock: Option<Ruleset>,
    /// Mount targets created in the root (relative, parents first), removed after the step.
    stubs: Vec<PathBuf>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.files) {
            tracing::debug!("removing {}: {e}", self.files.display());
        }
    }
}

impl Setup {
    /// Resolves the step's user in its root `rootfs` and makes its working directory.
    pub(crate) fn new(request: &Request, rootfs: &Path) -> Result<Setup, HelperError> {
        // This helper is a fresh process: the build's played root holds here too.
        umstage_oci::owner::play_root(umstage_oci::owner::Owner {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        });
        let in_root = InRoot::open(rootfs).map_err(|e| {
            HelperError::during(format!("opening the rootfs {}", rootfs.display()), e)
        })?;
        let user = user_and_workdir(request, &in_root)?;
        let process = request
            .spec
            .process()
            .as_ref()
            .ok_or("the step has no process")?;
        let mut root = paths::Root::open(rootfs)
            .map_err(|e| HelperError::during(format!("opening {}", rootfs.display()), e))?;
        // Nothing can be mounted: the step's own /etc/hosts and the like are files of this
        // helper's, which the supervisor gives for those paths. In the container's /dev/shm
        // where it has one (a tmpfs: creating files on a busy disk costs a step milliseconds),
        // else in the state root.
        // Unique: another umstage with the same pid (another pid namespace sharing the
        // container's /dev/shm) must keep its own.
        let name = format!(
            "umstage-trace-{}-{}",
            std::process::id(),
            crate::fsutil::random_id()
        );
        let files = [Path::new("/dev/shm"), request.sandbox_dir.as_path()]
            .into_iter()
            .map(|dir| dir.join(&name))
            .find(|dir| {
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(dir)
                    .inspect_err(|e| tracing::debug!("{}: {e}", dir.display()))
                    .is_ok()
            })
            .ok_or("cannot create a directory for the step's private files")?;
        // Canonical: the supervisor opens what it resolves below it with no symlink allowed.
        let files = std::fs::canonicalize(&files)
            .map_err(|e| HelperError::during(format!("{}", files.display()), e))?;
        for file in &request.files {
            let host = files.join(&file.name);
            std::fs::write(&host, &file.content)
                .map_err(|e| HelperError::during(format!("writing {}", host.display()), e))?;
            root.add_private(&format!("/etc/{}", file.name), &host);
        }
        for secret in &request.secrets {
            super::mounts::write_secret(&files, secret)?;
        }
        let mut stubs = Vec::new();
        let mut sources = Vec::new();
        for (index, mount) in request.guest_mounts.iter().enumerate() {
            let source = mounts::give(&mut root, &in_root, &files, index, mount, &mut stubs)?;
            sources.push((source, mount.read_only));
        }
        // The step's own /dev/shm (POSIX shared memory and semaphores), as a container has.
        let shm = files.join("shm");
        std::fs::create_dir(&shm)
            .map_err(|e| HelperError::during(format!("creating {}", shm.display()), e))?;
        root.add_dir(Path::new("/dev/shm"), &shm, false)
            .map_err(|e| HelperError::during(format!("{} for /dev/shm", shm.display()), e))?;
        let landlock = confinement(
            rootfs,
            &files,
            sources.iter().map(|(path, ro)| (path.as_path(), *ro)),
        )?;
        let cwd = root
            .to_host(
                nix::unistd::getpid(),
                process.cwd().as_os_str().as_bytes(),
                paths::Follow::Yes,
            )
            .map_err(|e| {
                HelperError::during(
                    format!("working directory {}", process.cwd().display()),
                    std::io::Error::from_raw_os_error(e),
                )
            })?;
        Ok(Setup {
            ctx: context::Context {
                hostname: request
                    .spec
                    .hostname()
                    .clone()
                    .unwrap_or_default()
                    .into_bytes(),
                root,
                who: Identity {
                    uid: user.uid,
                    gid: user.gid,
                },
                cow: private::CopyUp::new(rootfs),
            },
            cwd: PathBuf::from(OsStr::from_bytes(&cwd)),
            user,
            files,
            landlock,
            stubs,
        })
    }

    /// The mount targets this step's setup created in its root.
    pub(crate) fn stubs(&self) -> &[PathBuf] {
        &self.stubs
    }

    /// The step's user.
    pub(crate) fn user(&self) -> &ResolvedUser {
        &self.user
    }

    /// Looks `program` up in `path_var` inside the root, as a shell would; its guest path.
    pub(crate) fn find_program(&self, program: &str, path_var: &str) -> Option<String> {
        if program.contains('/') {
            return Some(program.to_string());
        }
        path_var
            .split(':')
            .map(|dir| format!("{}/{program}", if dir.is_empty() { "." } else { dir }))
            .find(|candidate| {
                let Some(guest) = self.ctx.root.absolute(
                    nix::unistd::getpid(),
                    libc::AT_FDCWD,
                    candidate.as_bytes(),
                ) else {
                    return false;
                };
                self.ctx
                    .root
                    .to_host(nix::unistd::getpid(), &guest, paths::Follow::Yes)
                    .ok()
                    .and_then(|host| std::fs::metadata(OsStr::from_bytes(&host)).ok())
                    .is_some_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
    }

    /// In the step's process, last: becomes traced, waits for the supervisor, sets the filter
    /// and execs `program` (a guest path, which the supervisor translates).
    pub(crate) fn exec(
        &self,
        program: &str,
        args: &[CString],
        env: &[CString],
    ) -> Result<std::convert::Infallible, HelperError> {
        std::env::set_current_dir(&self.cwd)
            .map_err(|e| HelperError::during(format!("chdir {}", self.cwd.display()), e))?;
        let program = CString::new(program).map_err(|_| "NUL in program path")?;
        nix::sys::ptrace::traceme().map_err(|e| HelperError::during("PTRACE_TRACEME", e))?;
        nix::sys::signal::raise(Signal::SIGSTOP)
            .map_err(|e| HelperError::during("stopping for the supervisor", e))?;
        nix::sys::prctl::set_no_new_privs()
            .map_err(|e| HelperError::during("PR_SET_NO_NEW_PRIVS", e))?;
        if let Some(rules) = &self.landlock {
            rules
                .restrict_self()
                .map_err(|e| HelperError::Below(e.into()))?;
        }
        filter::install()?;
        nix::unistd::execve(&program, args, env)
            .map_err(|e| HelperError::during(format!("exec {}", program.to_string_lossy()), e))
    }

    /// In the helper: supervises the step's main process `child` until the step is over.
    pub(crate) fn supervise(&self, child: Pid) -> Result<ExitStatus, HelperError> {
        // The step runs as this same user: without this it could read and write our memory.
        nix::sys::prctl::set_dumpable(false)
            .map_err(|e| HelperError::during("PR_SET_DUMPABLE", e))?;
        // Processes the step leaves behind come back to us, so none outlives the step.
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| HelperError::during("PR_SET_CHILD_SUBREAPER", e))?;
        tracer::run(&self.ctx, child).map_err(|e| HelperError::during("supervising the step", e))
    }
}
