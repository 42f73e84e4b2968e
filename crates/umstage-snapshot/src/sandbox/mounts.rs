//! `RUN --mount` and the files every step gets (`/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`).
//!
//! The build engine resolves sources to host paths; this prepares them: cache directories
//! under the state root with their sharing lock held for the step, read-write binds as an
//! overlay whose upper dir is thrown away, secrets copied into a private tmpfs by the helper.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Mount, MountBuilder};
use serde::{Deserialize, Serialize};

use super::{SandboxError, Step};
use crate::fsutil::{self, at};
use crate::snapshot::flock_file;

/// How concurrent steps share a cache mount (`sharing=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sharing {
    /// Every step uses the same directory at once.
    #[default]
    Shared,
    /// A step that finds the directory in use gets its own.
    Private,
    /// Steps wait for each other.
    Locked,
}

/// `--mount=type=cache`: a directory kept under the state root between builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheMount {
    /// Cache id (defaults to the target in Dockerfiles; the engine fills it).
    pub id: String,
    /// Where it appears in the step.
    pub target: String,
    /// How concurrent steps share it.
    pub sharing: Sharing,
    /// Mounted read-only.
    pub read_only: bool,
    /// Mode of the cache directory when it is created.
    pub mode: u32,
    /// Owner of the cache directory when it is created.
    pub uid: u32,
    /// Group of the cache directory when it is created.
    pub gid: u32,
    /// A host directory (`from`/`source`) whose content seeds a new cache.
    pub seed: Option<PathBuf>,
}

impl CacheMount {
    /// A shared cache `id` at `target` with BuildKit's defaults (0755, root).
    pub fn new(id: impl Into<String>, target: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            target: target.into(),
            sharing: Sharing::Shared,
            read_only: false,
            mode: 0o755,
            uid: 0,
            gid: 0,
            seed: None,
        }
    }
}

/// `--mount=type=bind`: a host file or directory (a stage's rootfs, the context).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// The host path.
    pub source: PathBuf,
    /// Where it appears in the step.
    pub target: String,
    /// Writable (`rw`); what the step writes is thrown away.
    pub read_write: bool,
}

/// `--mount=type=tmpfs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmpfsMount {
    /// Where it appears in the step.
    pub target: String,
    /// Size limit in bytes.
    pub size: Option<u64>,
}

/// `--mount=type=secret`: never in a layer, never in a cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMount {
    /// Secret id.
    pub id: String,
    /// The host file holding it (from `--secret id=…,src=…` or `env=…`), if provided.
    pub source: Option<PathBuf>,
    /// Where it appears as a file; default `/run/secrets/<id>` unless `env` is given.
    pub target: Option<String>,
    /// The environment variable it is exposed as.
    pub env: Option<String>,
    /// Fail when not provided (else the mount is skipped).
    pub required: bool,
    /// File mode (default 0400).
    pub mode: u32,
    /// File owner.
    pub uid: u32,
    /// File group.
    pub gid: u32,
}

impl SecretMount {
    /// A secret `id` read from `source`, at `/run/secrets/<id>` with mode 0400.
    pub fn new(id: impl Into<String>, source: Option<PathBuf>) -> Self {
        Self {
            id: id.into(),
            source,
            target: None,
            env: None,
            required: false,
            mode: 0o400,
            uid: 0,
            gid: 0,
        }
    }
}

/// One `RUN --mount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepMount {
    /// `type=cache`.
    Cache(CacheMount),
    /// `type=bind`.
    Bind(BindMount),
    /// `type=tmpfs`.
    Tmpfs(TmpfsMount),
    /// `type=secret`.
    Secret(SecretMount),
}

/// A secret the helper copies into its private tmpfs before mounting it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SecretFile {
    pub(crate) source: PathBuf,
    pub(crate) name: String,
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// A small file the helper writes into its private tmpfs (`/etc/hosts` and the like).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PrivateFile {
    pub(crate) name: String,
    pub(crate) content: String,
}

/// What a step's mounts became, with the cache locks held until it is dropped.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) mounts: Vec<Mount>,
    pub(crate) secret_files: Vec<SecretFile>,
    pub(crate) extra_env: Vec<String>,
    pub(crate) private_files: Vec<PrivateFile>,
    pub(crate) etc_mounts: Vec<Mount>,
    _locks: Vec<File>,
}

fn mount(
    destination: &str,
    typ: &str,
    source: &Path,
    options: &[&str],
) -> Result<Mount, SandboxError> {
    MountBuilder::default()
        .destination(PathBuf::from(destination))
        .typ(typ)
        .source(source.to_path_buf())
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(|e| SandboxError::InvalidStep(format!("mount {destination}: {e}")))
}

fn check_target(target: &str) -> Result<(), SandboxError> {
    if !target.starts_with('/') || target.split('/').any(|c| c == "..") {
        return Err(SandboxError::InvalidStep(format!(
            "mount target {target:?} must be an absolute path without '..'"
        )));
    }
    Ok(())
}

/// Prepares the step's mounts (scratch space in `run_dir`, made only when needed) and its
/// `/etc` files (written by the helper into its tmpfs at `sandbox_dir`).
pub(crate) fn prepare(
    state_root: &Path,
    run_dir: &Path,
    sandbox_dir: &Path,
    step: &Step,
) -> Result<Prepared, SandboxError> {
    let (private_files, etc_mounts) = etc_files(sandbox_dir, step)?;
    let mut prepared = Prepared {
        mounts: Vec::new(),
        secret_files: Vec::new(),
        extra_env: Vec::new(),
        private_files,
        etc_mounts,
        _locks: Vec::new(),
    };
    for (index, step_mount) in step.mounts.iter().enumerate() {
        match step_mount {
            StepMount::Cache(cache) => {
                check_target(&cache.target)?;
                let (dir, lock) = cache_dir(state_root, cache)?;
                prepared._locks.push(lock);
                let access = if cache.read_only { "ro" } else { "rw" };
                prepared
                    .mounts
                    .push(mount(&cache.target, "bind", &dir, &["rbind", access])?);
            }
            StepMount::Bind(bind) => {
                check_target(&bind.target)?;
                let meta =
                    std::fs::metadata(&bind.source).map_err(at("bind source", &bind.source))?;
                if !bind.read_write {
                    prepared.mounts.push(mount(
                        &bind.target,
                        "bind",
                        &bind.source,
                        &["rbind", "ro"],
                    )?);
                } else if meta.is_dir() {
                    let scratch = run_dir.join(format!("bind-{index}"));
                    fsutil::ensure_dir(run_dir)?;
                    for sub in ["upper", "work"] {
                        fsutil::ensure_dir(&scratch.join(sub))?;
                    }
                    let lower = format!("lowerdir+={}", bind.source.display());
                    let upper = format!("upperdir={}", scratch.join("upper").display());
                    let work = format!("workdir={}", scratch.join("work").display());
                    prepared.mounts.push(mount(
                        &bind.target,
                        "overlay",
                        Path::new("overlay"),
                        &["userxattr", &lower, &upper, &work],
                    )?);
                } else {
                    fsutil::ensure_dir(run_dir)?;
                    let copy = run_dir.join(format!("bind-{index}"));
                    std::fs::copy(&bind.source, &copy).map_err(at("copy bind source to", &copy))?;
                    prepared
                        .mounts
                        .push(mount(&bind.target, "bind", &copy, &["bind", "rw"])?);
                }
            }
            StepMount::Tmpfs(tmpfs) => {
                check_target(&tmpfs.target)?;
                let size = tmpfs.size.map(|s| format!("size={s}"));
                let mut options = vec!["nosuid", "nodev", "mode=1777"];
                if let Some(size) = &size {
                    options.push(size);
                }
                prepared
                    .mounts
                    .push(mount(&tmpfs.target, "tmpfs", Path::new("tmpfs"), &options)?);
            }
            StepMount::Secret(secret) => {
                let Some(source) = &secret.source else {
                    if secret.required {
                        return Err(SandboxError::SecretMissing(secret.id.clone()));
                    }
                    continue;
                };
                if let Some(var) = &secret.env {
                    let bytes = std::fs::read(source).map_err(at("read secret", source))?;
                    prepared
                        .extra_env
                        .push(format!("{var}={}", String::from_utf8_lossy(&bytes)));
                }
                let target = match (&secret.target, &secret.env) {
                    (Some(target), _) => target.clone(),
                    (None, Some(_)) => continue,
                    (None, None) => format!("/run/secrets/{}", secret.id),
                };
                check_target(&target)?;
                let name = format!("secret-{index}");
                prepared.secret_files.push(SecretFile {
                    source: source.clone(),
                    name: name.clone(),
                    mode: secret.mode,
                    uid: secret.uid,
                    gid: secret.gid,
                });
                let file = sandbox_dir.join("secrets").join(name);
                prepared
                    .mounts
                    .push(mount(&target, "bind", &file, &["bind", "ro"])?);
            }
        }
    }
    Ok(prepared)
}

fn etc_files(
    sandbox_dir: &Path,
    step: &Step,
) -> Result<(Vec<PrivateFile>, Vec<Mount>), SandboxError> {
    let mut hosts = format!(
        "127.0.0.1\tlocalhost {0}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        step.hostname
    );
    for (name, address) in &step.extra_hosts {
        hosts.push_str(&format!("{address}\t{name}\n"));
    }
    let resolv = std::fs::read_to_string("/etc/resolv.conf")
        .ok()
        .filter(|text| {
            text.lines()
                .any(|l| l.trim_start().starts_with("nameserver"))
        })
        .unwrap_or_else(|| "nameserver 8.8.8.8\nnameserver 8.8.4.4\n".to_string());
    let mut files = Vec::new();
    let mut mounts = Vec::new();
    for (name, content, target) in [
        ("hosts", hosts, "/etc/hosts"),
        ("resolv.conf", resolv, "/etc/resolv.conf"),
        ("hostname", format!("{}\n", step.hostname), "/etc/hostname"),
    ] {
        let source = sandbox_dir.join("files").join(name);
        mounts.push(mount(target, "bind", &source, &["bind", "rw"])?);
        files.push(PrivateFile {
            name: name.to_string(),
            content,
        });
    }
    Ok((files, mounts))
}

/// The cache directory for a mount, created on first use, with its sharing lock held.
fn cache_dir(state_root: &Path, cache: &CacheMount) -> Result<(PathBuf, File), SandboxError> {
    let base = state_root
        .join("cache-mounts")
        .join(fsutil::sha256_hex(&cache.id));
    fsutil::ensure_dir(&base)?;
    let open_lock = |instance: usize| -> Result<File, SandboxError> {
        let path = base.join(format!("{instance}.lock"));
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| at("open", &path)(e).into())
    };
    let (instance, lock) = match cache.sharing {
        Sharing::Shared | Sharing::Locked => {
            let lock = open_lock(0)?;
            let operation = if cache.sharing == Sharing::Shared {
                libc::LOCK_SH
            } else {
                libc::LOCK_EX
            };
            flock_file(&lock, operation).map_err(at("lock", &base))?;
            (0, lock)
        }
        Sharing::Private => {
            let mut instance = 0;
            loop {
                let lock = open_lock(instance)?;
                if flock_file(&lock, libc::LOCK_EX | libc::LOCK_NB).is_ok() {
                    break (instance, lock);
                }
                instance += 1;
            }
        }
    };
    let dir = base.join(instance.to_string());
    if !dir.exists() {
        let fresh = base.join(format!(".new-{}", fsutil::random_id()));
        match &cache.seed {
            Some(seed) => fsutil::copy_tree(seed, &fresh)?,
            None => std::fs::create_dir(&fresh).map_err(at("mkdir", &fresh))?,
        }
        std::os::unix::fs::chown(&fresh, Some(cache.uid), Some(cache.gid))
            .map_err(at("chown cache dir", &fresh))?;
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(cache.mode & 0o7777))
            .map_err(at("chmod", &fresh))?;
        if fsutil::rename_noreplace(&fresh, &dir).is_err() {
            fsutil::remove_tree(&fresh)?;
        }
        let id_file = base.join("id");
        std::fs::write(&id_file, &cache.id).map_err(at("write", &id_file))?;
    }
    Ok((dir, lock))
}
