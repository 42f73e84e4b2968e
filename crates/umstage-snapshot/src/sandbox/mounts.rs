//! `RUN --mount` and the files every step gets (`/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`).
//!
//! The build engine names each source as a root and a path inside it ([`InRoot`]); this
//! prepares them: cache directories under the state root with their sharing lock held for the
//! step, read-write binds as an overlay whose upper dir is thrown away, secrets copied into a
//! private tmpfs by the helper. A path inside a root is resolved inside it, every component
//! including the last (`umstage_oci::inroot`), here and again by the helper when it mounts,
//! so a symlink planted by a step, an image or the context never reaches a host file.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Mount, MountBuilder};
use rustix::fs::{FileType, Mode, OFlags};
use serde::{Deserialize, Serialize};
use umstage_oci::inroot::{self, Escape, Root};

use super::failure::HelperError;
use super::{RunStep, SandboxError};
use crate::fsutil::{self, at};
use umstage_oci::lease::flock;
use umstage_oci::owner::{self, Owner};

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
    /// What seeds a new cache (`from`/`source`).
    pub seed: Option<CacheSeed>,
    /// `uid`, `gid` or `mode` was given for a cache without `source=`: then they tell it apart
    /// from other caches of its id, as BuildKit keys a cache by the state it starts from and
    /// makes that state by creating the cache's root with these settings.
    pub settings_in_key: bool,
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
            settings_in_key: false,
        }
    }
}

/// A path inside a root directory that the build engine trusts (a stage's mounted view, the
/// context): `path` comes from the Dockerfile or names what an earlier step or an image made,
/// so it is resolved inside `root`, every component including the last, as if `root` were `/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InRoot {
    /// The root directory on the host.
    pub root: PathBuf,
    /// The path inside it (`/`, `.` or empty for the root itself).
    pub path: PathBuf,
}

impl InRoot {
    /// Resolves the path inside its root to an `O_PATH` descriptor of what it names.
    fn resolve(&self) -> Result<OwnedFd, SandboxError> {
        let root = Root::open(&self.root).map_err(at("open", &self.root))?;
        root.open_resolved(&self.path, Escape::Clamp)
            .map_err(|e| SandboxError::Source(self.clone(), e))
    }
}

impl std::fmt::Display for InRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} in {}", self.path.display(), self.root.display())
    }
}

/// Where a bind mount's source is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindSource {
    /// A file or directory umstage itself chose: a script it wrote, the ssh agent's socket.
    Host(PathBuf),
    /// A path inside a stage, an image or the context.
    InRoot(InRoot),
}

/// The content a new cache starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSeed {
    /// The directory copied into a new cache.
    pub dir: InRoot,
    /// What the seed is, wherever it is mounted now (the source stage's cache key and the
    /// path): caches of one id seeded from different sources are kept apart, as in BuildKit.
    pub identity: String,
}

/// `--mount=type=bind`: a file or directory of a stage's rootfs or the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// What is mounted.
    pub source: BindSource,
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

/// One mount of the step; `in_root` is set for a bind whose `source` is a root directory and
/// whose object the helper resolves inside it (for an overlay, its lower directory).
#[derive(Debug, Clone)]
pub(crate) struct PreparedMount {
    pub(crate) mount: Mount,
    pub(crate) in_root: Option<PathBuf>,
}

/// What a step's mounts became, with the cache locks held until it is dropped.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) mounts: Vec<PreparedMount>,
    pub(crate) secret_files: Vec<SecretFile>,
    pub(crate) extra_env: Vec<String>,
    pub(crate) private_files: Vec<PrivateFile>,
    pub(crate) etc_mounts: Vec<PreparedMount>,
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

/// The target cleaned as BuildKit cleans it (Go's `path.Clean` of an absolute path: `..` at
/// `/` stays at `/`); a relative target is an error (the build engine makes them absolute).
fn clean_target(target: &str) -> Result<String, SandboxError> {
    if !target.starts_with('/') {
        return Err(SandboxError::InvalidStep(format!(
            "mount target {target:?} must be an absolute path"
        )));
    }
    let clean = inroot::clean_abs(target);
    if clean == "/" {
        // As BuildKit: a mount on `/` would hide the whole rootfs.
        return Err(SandboxError::InvalidStep(format!(
            "invalid mount target {target:?}: cannot mount on /"
        )));
    }
    Ok(clean)
}

fn plain(mount: Mount) -> PreparedMount {
    PreparedMount {
        mount,
        in_root: None,
    }
}

/// Prepares the step's mounts (scratch space in `run_dir`, made only when needed) and its
/// `/etc` files (written by the helper into its tmpfs at `sandbox_dir`); `traced` for the
/// `ptrace` tier, which can mount no overlay.
pub(crate) fn prepare(
    state_root: &Path,
    run_dir: &Path,
    sandbox_dir: &Path,
    step: &RunStep,
    traced: bool,
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
                let target = clean_target(&cache.target)?;
                let (dir, lock) = cache_dir(state_root, cache)?;
                prepared._locks.push(lock);
                let access = if cache.read_only { "ro" } else { "rw" };
                prepared
                    .mounts
                    .push(plain(mount(&target, "bind", &dir, &["rbind", access])?));
            }
            StepMount::Bind(bind) => {
                let target = clean_target(&bind.target)?;
                prepared
                    .mounts
                    .push(bind_mount(run_dir, index, bind, &target, traced)?);
            }
            StepMount::Tmpfs(tmpfs) => {
                let target = clean_target(&tmpfs.target)?;
                let size = tmpfs.size.map(|s| format!("size={s}"));
                let mut options = vec!["nosuid", "nodev", "mode=1777"];
                if let Some(size) = &size {
                    options.push(size);
                }
                prepared.mounts.push(plain(mount(
                    &target,
                    "tmpfs",
                    Path::new("tmpfs"),
                    &options,
                )?));
            }
            StepMount::Secret(secret) => {
                let Some(source) = &secret.source else {
                    if secret.required {
                        return Err(SandboxError::SecretMissing(secret.id.clone()));
                    }
                    continue;
                };
                if let Some(var) = &secret.env {
                    let bytes = read_secret(source).map_err(at("read secret", source))?;
                    prepared
                        .extra_env
                        .push(format!("{var}={}", String::from_utf8_lossy(&bytes)));
                }
                let target = match (&secret.target, &secret.env) {
                    (Some(target), _) => target.clone(),
                    (None, Some(_)) => continue,
                    (None, None) => format!("/run/secrets/{}", secret.id),
                };
                let target = clean_target(&target)?;
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
                    .push(plain(mount(&target, "bind", &file, &["bind", "ro"])?));
            }
        }
    }
    Ok(prepared)
}

/// A secret's content, refused past [`MAX_SECRET_SIZE`](super::MAX_SECRET_SIZE) (a source
/// such as `/dev/zero` would otherwise never end).
pub(crate) fn read_secret(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let limit = super::MAX_SECRET_SIZE;
    let mut bytes = Vec::new();
    File::open(path)?.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "a secret may hold at most {limit} bytes"
        )));
    }
    Ok(bytes)
}

/// A bind mount: read-only binds as they are; a writable directory as an overlay over it whose
/// upper dir is thrown away (a copy where no overlay can be mounted, `traced`); a writable
/// file as a copy.
fn bind_mount(
    run_dir: &Path,
    index: usize,
    bind: &BindMount,
    target: &str,
    traced: bool,
) -> Result<PreparedMount, SandboxError> {
    let (host_path, in_root, resolved) = match &bind.source {
        BindSource::Host(path) => {
            let fd = rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| at("bind source", path)(e.into()))?;
            (path.clone(), None, fd)
        }
        BindSource::InRoot(source) => (
            source.root.clone(),
            Some(source.path.clone()),
            source.resolve()?,
        ),
    };
    let stat = rustix::fs::fstat(&resolved).map_err(|e| at("stat", &host_path)(e.into()))?;
    let is_dir = FileType::from_raw_mode(stat.st_mode) == FileType::Directory;
    if !bind.read_write {
        return Ok(PreparedMount {
            mount: mount(target, "bind", &host_path, &["rbind", "ro"])?,
            in_root,
        });
    }
    fsutil::ensure_dir(run_dir)?;
    let scratch = run_dir.join(format!("bind-{index}"));
    if is_dir && traced {
        // `/.` after the descriptor's path: the walk starts at the resolved directory.
        fsutil::copy_tree(&inroot::fd_path(&resolved).join("."), &scratch)?;
        Ok(plain(mount(target, "bind", &scratch, &["rbind", "rw"])?))
    } else if is_dir {
        for sub in ["upper", "work"] {
            fsutil::ensure_dir(&scratch.join(sub))?;
        }
        let lower = format!("lowerdir+={}", host_path.display());
        let upper = format!("upperdir={}", scratch.join("upper").display());
        let work = format!("workdir={}", scratch.join("work").display());
        Ok(PreparedMount {
            mount: mount(
                target,
                "overlay",
                Path::new("overlay"),
                &["userxattr", &lower, &upper, &work],
            )?,
            in_root,
        })
    } else if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        // A writable bind of a file is a copy; a FIFO or a device would block or never end.
        Err(SandboxError::InvalidStep(format!(
            "a writable bind mount of {} needs a directory or a regular file",
            match &bind.source {
                BindSource::Host(path) => path.display().to_string(),
                BindSource::InRoot(source) => source.to_string(),
            }
        )))
    } else {
        // Reopened through the descriptor: what was resolved is what is read.
        let mut from = File::open(inroot::fd_path(&resolved)).map_err(at("open", &host_path))?;
        let mut to = File::create_new(&scratch).map_err(at("create", &scratch))?;
        std::io::copy(&mut from, &mut to).map_err(at("copy bind source to", &scratch))?;
        Ok(plain(mount(target, "bind", &scratch, &["bind", "rw"])?))
    }
}

fn etc_files(
    sandbox_dir: &Path,
    step: &RunStep,
) -> Result<(Vec<PrivateFile>, Vec<PreparedMount>), SandboxError> {
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
        mounts.push(plain(mount(target, "bind", &source, &["bind", "rw"])?));
        files.push(PrivateFile {
            name: name.to_string(),
            content,
        });
    }
    Ok((files, mounts))
}

/// The name of a cache's directory under `cache-mounts`: its id, and what else keys it.
fn cache_name(cache: &CacheMount) -> String {
    let mut key = cache.id.clone();
    if let Some(seed) = &cache.seed {
        key = format!("{key}\0{}", seed.identity);
    }
    if cache.settings_in_key {
        key = format!("{key}\0{}:{}:{:o}", cache.uid, cache.gid, cache.mode);
    }
    fsutil::sha256_hex(&key)
}

/// The cache directory for a mount, created on first use, with its sharing lock held.
fn cache_dir(state_root: &Path, cache: &CacheMount) -> Result<(PathBuf, File), SandboxError> {
    let base = state_root.join("cache-mounts").join(cache_name(cache));
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
            flock(&lock, operation).map_err(at("lock", &base))?;
            (0, lock)
        }
        Sharing::Private => {
            let mut instance = 0;
            loop {
                let lock = open_lock(instance)?;
                if flock(&lock, libc::LOCK_EX | libc::LOCK_NB).is_ok() {
                    break (instance, lock);
                }
                instance += 1;
            }
        }
    };
    let dir = base.join(instance.to_string());
    match std::fs::symlink_metadata(&dir) {
        Ok(meta) if meta.is_dir() => {}
        // Anything else in its place (a symlink a seed left before this was fixed) is removed,
        // never followed: the cache starts again from its seed.
        Ok(_) => match std::fs::remove_file(&dir) {
            // Another build sharing the cache removed it first.
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(at("remove", &dir)(e).into());
            }
            _ => {}
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(at("stat", &dir)(e).into()),
    }
    if !dir.exists() {
        let fresh = base.join(format!(".new-{}", fsutil::random_id()));
        if let Err(e) = fill_cache_dir(&fresh, cache) {
            // Nothing half-made stays in the state root.
            let _ = fsutil::remove_tree(&fresh);
            return Err(e);
        }
        if fsutil::rename_noreplace(&fresh, &dir).is_err() {
            fsutil::remove_tree(&fresh)?;
        }
        let id_file = base.join("id");
        std::fs::write(&id_file, &cache.id).map_err(at("write", &id_file))?;
    }
    Ok((dir, lock))
}

/// Makes a new cache directory at `fresh`: empty, or a copy of its seed; then its owner and mode.
fn fill_cache_dir(fresh: &Path, cache: &CacheMount) -> Result<(), SandboxError> {
    match &cache.seed {
        Some(CacheSeed { dir: seed, .. }) => {
            let source = seed.resolve()?;
            let is_dir = rustix::fs::fstat(&source)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory);
            if !is_dir {
                return Err(SandboxError::InvalidStep(format!(
                    "cache mount source {seed} is not a directory"
                )));
            }
            // `/.` after the descriptor's path: the walk starts at the resolved directory.
            fsutil::copy_tree(&inroot::fd_path(&source).join("."), fresh)?;
        }
        None => std::fs::create_dir(fresh).map_err(at("mkdir", fresh))?,
    }
    set_owner_and_mode(fresh, cache)
}

/// Gives a new cache directory its owner and mode through a descriptor opened without
/// following a symlink, so neither can reach anything but the directory itself.
fn set_owner_and_mode(dir: &Path, cache: &CacheMount) -> Result<(), SandboxError> {
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| at("open", dir)(e.into()))?;
    let owner = umstage_oci::owner::Owner {
        uid: cache.uid,
        gid: cache.gid,
    };
    if umstage_oci::owner::root_played() {
        // No owner can be set where root is played (the ptrace tier): it is recorded.
        umstage_oci::owner::chown_or_record(&fd, std::ffi::OsStr::new(""), owner)
    } else {
        rustix::fs::fchown(
            &fd,
            Some(rustix::fs::Uid::from_raw(owner.uid)),
            Some(rustix::fs::Gid::from_raw(owner.gid)),
        )
        .map_err(std::io::Error::from)
    }
    .map_err(at("chown cache dir", dir))?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(cache.mode & 0o7777))
        .map_err(|e| at("chmod", dir)(e.into()))?;
    Ok(())
}

/// Writes `secret` into the directory `files`, with its mode and owner: set where the kernel
/// takes it, recorded where root is played (the ptrace tier) or the id is not mapped (the
/// one-id tier).
pub(crate) fn write_secret(files: &Path, secret: &SecretFile) -> Result<(), HelperError> {
    let content = read_secret(&secret.source).map_err(|e| {
        HelperError::during(format!("reading secret {}", secret.source.display()), e)
    })?;
    let path = files.join(&secret.name);
    std::fs::write(&path, content)
        .map_err(|e| HelperError::during(format!("{}", path.display()), e))?;
    let owner = Owner {
        uid: secret.uid,
        gid: secret.gid,
    };
    if owner != Owner::default() {
        let dir = rustix::fs::open(
            files,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| {
            HelperError::during(format!("{}", files.display()), std::io::Error::from(e))
        })?;
        // Recorded in a user xattr, which a tmpfs older than Linux 6.6 does not take: the
        // secret is then readable all the same, its owner shown as root.
        if let Err(e) = owner::chown_or_record(&dir, OsStr::new(&secret.name), owner) {
            tracing::warn!(
                "secret {}: owner {}:{} not recorded: {e}",
                secret.name,
                owner.uid,
                owner.gid
            );
        }
    }
    // After the owner: a record needs the file writable.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(secret.mode & 0o7777))
        .map_err(|e| HelperError::during("chmod secret", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_of_one_id_are_kept_apart_by_their_seed_and_settings() {
        let plain = CacheMount::new("go", "/go");
        // Names from before settings entered the key stay, so existing caches are found.
        assert_eq!(cache_name(&plain), fsutil::sha256_hex("go"));
        let mut owned = plain.clone();
        owned.uid = 1000;
        owned.settings_in_key = true;
        let mut other_mode = owned.clone();
        other_mode.mode = 0o700;
        let mut seeded = plain.clone();
        seeded.seed = Some(CacheSeed {
            dir: InRoot {
                root: PathBuf::from("/x"),
                path: PathBuf::from("/"),
            },
            identity: "stage:/".into(),
        });
        let names = [&plain, &owned, &other_mode, &seeded].map(cache_name);
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // Settings given with `source=` are not part of the key (BuildKit ignores them there).
        let mut ignored = seeded.clone();
        ignored.uid = 1000;
        assert_eq!(cache_name(&ignored), cache_name(&seeded));
    }

    #[test]
    fn targets_are_cleaned_as_buildkit_cleans_them() {
        for (target, clean) in [
            ("/a/../b", "/b"),
            ("/../../etc", "/etc"),
            ("/x/./y/", "/x/y"),
            ("/a/..//b/../c", "/c"),
        ] {
            assert_eq!(
                clean_target(target).ok().as_deref(),
                Some(clean),
                "{target}"
            );
        }
        // As BuildKit: relative targets never reach here, and nothing mounts on `/`.
        for bad in ["relative", "/", "/..", "/a/.."] {
            assert!(clean_target(bad).is_err(), "{bad}");
        }
    }
}
