//! A step as an OCI runtime spec: what the helper executes, and what an external runtime could.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};

use super::mounts::Prepared;
use super::{DEFAULT_PATH, Network, RunStep, SandboxError};

/// The devices bound from the host into the step's `/dev`.
pub(crate) const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Docker's default capabilities, the set BuildKit gives a RUN step.
pub(crate) const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// The umask every step starts with.
pub(crate) const UMASK: u32 = 0o022;

fn invalid(e: impl std::fmt::Display) -> SandboxError {
    SandboxError::InvalidStep(e.to_string())
}

fn mount(
    destination: &str,
    typ: &str,
    source: &str,
    options: &[&str],
) -> Result<Mount, SandboxError> {
    MountBuilder::default()
        .destination(PathBuf::from(destination))
        .typ(typ)
        .source(PathBuf::from(source))
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(invalid)
}

/// The mounts every step gets, in mounting order; `/dev/shm` holds `shm_size` bytes.
fn standard_mounts(shm_size: u64) -> Result<Vec<Mount>, SandboxError> {
    let shm_size = format!("size={shm_size}");
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", &shm_size],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "bind",
            "/sys",
            &["rbind", "nosuid", "noexec", "nodev", "ro"],
        )?,
    ];
    for device in DEVICES {
        let path = format!("/dev/{device}");
        mounts.push(mount(&path, "bind", &path, &["bind", "nosuid", "noexec"])?);
    }
    Ok(mounts)
}

/// The spec for `step` with its snapshot mounted at `rootfs`, and for each of its mounts the
/// path the helper resolves inside the mount's source (see [`Request::in_root`](super::Request)).
pub(crate) fn build(
    step: &RunStep,
    rootfs: &Path,
    prepared: &Prepared,
) -> Result<(Spec, Vec<Option<PathBuf>>), SandboxError> {
    let mut env: Vec<String> = step.env.clone();
    env.extend(prepared.extra_env.iter().cloned());
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    let user = UserBuilder::default()
        .uid(0u32)
        .gid(0u32)
        .umask(UMASK)
        .username(step.user.clone())
        .build()
        .map_err(invalid)?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(step.args.clone())
        .env(env)
        .cwd(PathBuf::from(&step.cwd))
        .user(user)
        .rlimits(
            step.ulimits
                .iter()
                .map(|u| u.to_spec())
                .collect::<Result<Vec<_>, _>>()
                .map_err(invalid)?,
        )
        .no_new_privileges(false);
    // A privileged step keeps every capability the user namespace grants.
    let set: Capabilities = if step.privileged {
        super::caps::all()
    } else {
        DEFAULT_CAPABILITIES.into_iter().collect()
    };
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(set.clone())
        .effective(set.clone())
        .permitted(set)
        .inheritable(Capabilities::new())
        .ambient(Capabilities::new())
        .build()
        .map_err(invalid)?;
    let process = process
        .capabilities(capabilities)
        .build()
        .map_err(invalid)?;
    let mut mounts = standard_mounts(step.shm_size)?;
    let mut in_root = vec![None; mounts.len()];
    for prepared in prepared.etc_mounts.iter().chain(&prepared.mounts) {
        mounts.push(prepared.mount.clone());
        in_root.push(prepared.in_root.clone());
    }

    let mut kinds = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ];
    if step.network == Network::None {
        kinds.push(LinuxNamespaceType::Network);
    }
    let namespaces = kinds
        .into_iter()
        .map(|typ| {
            LinuxNamespaceBuilder::default()
                .typ(typ)
                .build()
                .map_err(invalid)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .build()
        .map_err(invalid)?;
    let root = RootBuilder::default()
        .path(rootfs.to_path_buf())
        .readonly(false)
        .build()
        .map_err(invalid)?;
    let spec = SpecBuilder::default()
        .version("1.0.2")
        .root(root)
        .process(process)
        .hostname(step.hostname.clone())
        .mounts(mounts)
        .linux(linux)
        .build()
        .map_err(invalid)?;
    Ok((spec, in_root))
}
