//! `RUN --mount` translation: each Dockerfile mount (bind, cache, tmpfs, secret, ssh) becomes
//! what the sandbox mounts, with the context filtered by `.dockerignore` and stages mounted as
//! read-only views; and the content a bind or seeded cache mount reads, added to the step's key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use umstage_dockerfile::{Dockerignore, MountType};
use umstage_oci::inroot::Root;
use umstage_snapshot::sandbox::{self, StepMount};

use crate::cache::KeyBuilder;
use crate::copy::{self, CopyOptions, SourceTree};
use crate::error::StepError;
use crate::ids::unique_key;
use crate::ops::file::CopySource;
use crate::ops::step::Step;
use crate::request::BuildError;

impl Step<'_, '_> {
    /// Turns a `RUN --mount` into what the sandbox mounts.
    pub(crate) fn step_mount(
        &self,
        m: &umstage_dockerfile::Mount,
        source: Option<CopySource>,
        views: &mut Vec<(String, Option<umstage_snapshot::snapshot::MountGuard>)>,
        secret_files: &mut Vec<std::os::fd::OwnedFd>,
        ssh_index: usize,
    ) -> Result<Option<StepMount>, StepError> {
        let build = self.build;
        let target = m.target.clone().unwrap_or_default();
        let target = if target.starts_with('/') {
            target
        } else {
            format!("{}/{target}", self.cfg.workdir())
        };
        // The directory a `from=` (or the context) provides, and the `source=` path inside it,
        // which the sandbox resolves inside that directory, never on the host's terms.
        let mut in_root = |source: Option<CopySource>| -> Result<sandbox::InRoot, StepError> {
            let writable = m.kind == MountType::Bind && !m.readonly;
            let root = match source {
                None => self.context_view(writable)?,
                // A directory context is the context's kind: the same copy for writing.
                Some(CopySource::Dir { path, .. }) if writable => self.dir_copy(&path, None)?,
                Some(CopySource::Dir { path, .. }) => path,
                Some(CopySource::State(out, _)) => {
                    let (key, guard) = self.view(&out.state)?;
                    let path = guard.as_ref().map_or_else(
                        || build.request.state_root.join("empty"),
                        |g| g.path().to_path_buf(),
                    );
                    views.push((key, guard));
                    path
                }
            };
            Ok(sandbox::InRoot {
                root,
                path: PathBuf::from(m.source.as_deref().unwrap_or_default()),
            })
        };
        Ok(Some(match m.kind {
            MountType::Bind => StepMount::Bind(sandbox::BindMount {
                source: sandbox::BindSource::InRoot(in_root(source)?),
                target,
                read_write: !m.readonly,
            }),
            MountType::Cache => {
                let mut cache = sandbox::CacheMount::new(
                    m.id.clone().unwrap_or_else(|| target.clone()),
                    target,
                );
                cache.sharing = match m.sharing {
                    Some(umstage_dockerfile::Sharing::Private) => sandbox::Sharing::Private,
                    Some(umstage_dockerfile::Sharing::Locked) => sandbox::Sharing::Locked,
                    _ => sandbox::Sharing::Shared,
                };
                cache.read_only = m.readonly;
                if let Some(mode) = m.mode {
                    cache.mode = mode;
                }
                cache.uid = m.uid.unwrap_or(0);
                cache.gid = m.gid.unwrap_or(0);
                let at_root = m
                    .source
                    .as_deref()
                    .is_none_or(|s| umstage_oci::inroot::clean_abs(s) == "/");
                cache.settings_in_key =
                    at_root && (m.uid.is_some() || m.gid.is_some() || m.mode.is_some());
                if m.from.is_some() {
                    let from = match &source {
                        Some(CopySource::State(out, _)) => out.key.to_hex(),
                        Some(CopySource::Dir { path, .. }) => path.display().to_string(),
                        None => "context".into(),
                    };
                    let identity = format!("{from}:{}", m.source.as_deref().unwrap_or("/"));
                    cache.seed = Some(sandbox::CacheSeed {
                        dir: in_root(source)?,
                        identity,
                    });
                }
                StepMount::Cache(cache)
            }
            MountType::Tmpfs => StepMount::Tmpfs(sandbox::TmpfsMount {
                target,
                size: m.size,
            }),
            MountType::Secret => {
                let id =
                    m.id.clone()
                        .or_else(|| {
                            m.target
                                .as_deref()
                                .and_then(|t| Path::new(t).file_name())
                                .map(|n| n.to_string_lossy().into_owned())
                        })
                        .unwrap_or_default();
                let provided = build.request.secrets.iter().rev().find(|s| s.id == id);
                let file = match provided.map(|s| &s.source) {
                    Some(crate::options::SecretSource::File(p)) => Some(p.clone()),
                    Some(crate::options::SecretSource::Env(var)) => match std::env::var(var) {
                        Ok(value) => {
                            // Kept in memory only: nothing on disk even if umstage is killed.
                            let fd =
                                secret_in_memory(value.as_bytes()).map_err(StepError::below)?;
                            let path = PathBuf::from(format!(
                                "/proc/{}/fd/{}",
                                std::process::id(),
                                std::os::fd::AsRawFd::as_raw_fd(&fd)
                            ));
                            secret_files.push(fd);
                            Some(path)
                        }
                        Err(_) => None,
                    },
                    None => None,
                };
                let mut secret = sandbox::SecretMount::new(id, file);
                secret.target = m.target.clone();
                secret.env = m.env.clone();
                secret.required = m.required;
                if let Some(mode) = m.mode {
                    secret.mode = mode;
                }
                secret.uid = m.uid.unwrap_or(0);
                secret.gid = m.gid.unwrap_or(0);
                StepMount::Secret(secret)
            }
            MountType::Ssh => {
                let id = m.id.clone().unwrap_or_else(|| "default".into());
                let agent = build
                    .request
                    .ssh
                    .iter()
                    .rev()
                    .find(|a| a.id == id)
                    .and_then(|a| a.socket.clone());
                match agent {
                    Some(socket) => StepMount::Bind(sandbox::BindMount {
                        source: sandbox::BindSource::Host(socket),
                        target: if m.target.is_some() {
                            target
                        } else {
                            ssh_target(ssh_index)
                        },
                        read_write: false,
                    }),
                    None if m.required => {
                        return Err(StepError::Refused(format!(
                            "no ssh agent {id:?} forwarded: pass --ssh {id} (its socket from $SSH_AUTH_SOCK) or --ssh {id}=SOCKET"
                        )));
                    }
                    None => return Ok(None),
                }
            }
        }))
    }

    /// The build context as a step may see it: what `.dockerignore` leaves, exactly as
    /// `COPY .` sees it. Without a `.dockerignore`, and for reading only, that is the context
    /// directory itself; else a copy of what it keeps, owned by root as BuildKit's context is,
    /// made under the state root on first use and shared by the build's steps (a writable bind
    /// is an overlay over it, so none changes it). A writable bind needs the copy: the overlay
    /// copies a file up before a chown or chmod, keeping its owner, and the kernel refuses
    /// that for a context file whose group (or owner) the user namespace does not map.
    pub(crate) fn context_view(&self, writable: bool) -> Result<PathBuf, StepError> {
        let build = self.build;
        let ignore = build.ignore.as_ref();
        if ignore.is_none() && !writable {
            return Ok(build.request.context.clone());
        }
        self.dir_copy(&build.request.context, ignore)
    }

    /// The build's copy of the directory `source` as `ignore` leaves it, owned by root, made
    /// under the state root by the first step that needs it.
    fn dir_copy(&self, source: &Path, ignore: Option<&Dockerignore>) -> Result<PathBuf, StepError> {
        let cell = {
            let mut dirs = (self.build.context_copy.dirs.lock()).unwrap_or_else(|p| p.into_inner());
            // The same directory is copied once with the .dockerignore and once without
            // (the context, and a named context of the same path).
            let key = (source.to_path_buf(), ignore.is_some());
            Arc::clone(dirs.entry(key).or_default())
        };
        let made = cell.get_or_init(|| self.make_dir_copy(source, ignore).map_err(Arc::new));
        made.clone().map_err(StepError::Shared)
    }

    /// The copy [`Step::dir_copy`] shares, made.
    fn make_dir_copy(
        &self,
        source: &Path,
        ignore: Option<&Dockerignore>,
    ) -> Result<PathBuf, StepError> {
        let dir = self
            .build
            .request
            .state_root
            .join("run")
            .join(unique_key("context"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| StepError::during(format!("{}", dir.display()), e))?;
        let context = CopySource::Dir {
            path: source.to_path_buf(),
            use_ignore: ignore.is_some(),
        };
        let copied = (|| -> Result<(), StepError> {
            let tree =
                SourceTree::open(source, ignore, true).map_err(|e| self.copy_error(e, &context))?;
            let plan = copy::plan(&tree, &[".".into()], "/", &CopyOptions::default(), &|_| {
                true
            })
            .map_err(|e| self.copy_error(e, &context))?;
            let root =
                Root::open(&dir).map_err(|e| StepError::during(format!("{}", dir.display()), e))?;
            copy::execute_linked(&root, &plan, (0, 0)).map_err(|e| self.copy_error(e, &context))
        })();
        match copied {
            Ok(()) => Ok(dir),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// Adds to `k` the content a `RUN --mount` reads from the build context or a directory
    /// context (`bind`, or a `cache` seeded `from=` one), so a changed file reruns the step.
    pub(crate) fn key_mount_source(
        &self,
        k: &mut KeyBuilder,
        m: &umstage_dockerfile::Mount,
        source: Option<&CopySource>,
    ) -> Result<(), BuildError> {
        let build = self.build;
        let (dir, context) = match (m.kind, source) {
            (MountType::Bind, None) => (build.request.context.clone(), true),
            (MountType::Bind | MountType::Cache, Some(CopySource::Dir { path, .. })) => {
                (path.clone(), false)
            }
            _ => return Ok(()),
        };
        let fail = |e: StepError| self.failed(e);
        let ignore = if context { build.ignore.as_ref() } else { None };
        let tree = SourceTree::open(&dir, ignore, true).map_err(|e| fail(StepError::below(e)))?;
        let wanted = m
            .source
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| ".".into());
        let source_dir = CopySource::Dir {
            path: dir.clone(),
            use_ignore: context,
        };
        let plan = copy::plan(&tree, &[wanted], "/", &CopyOptions::default(), &|_| false)
            .map_err(|e| fail(self.copy_error(e, &source_dir)))?;
        self.key_plan(k, &plan, context, false).map_err(fail)
    }
}

/// Where an ssh mount with no `target` puts the socket, as BuildKit does:
/// `/run/buildkit/ssh_agent.N`, N counting the step's ssh mounts.
pub(crate) fn ssh_target(index: usize) -> String {
    format!("/run/buildkit/ssh_agent.{index}")
}

/// A memory-only file holding `data`, readable through `/proc/PID/fd/N` by the step's helper.
pub(crate) fn secret_in_memory(data: &[u8]) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::io::Write;
    let fd = rustix::fs::memfd_create("umstage-secret", rustix::fs::MemfdFlags::CLOEXEC)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(data)?;
    Ok(file.into())
}
