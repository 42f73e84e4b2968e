//! The `ptrace` tier's `RUN --mount`s: nothing can be mounted there, so each prepared mount
//! becomes a guest path the supervisor gives a host directory or file for (see `trace`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use umstage_oci::inroot::{Escape, Root, fd_path};

use super::SandboxError;
use super::mounts::{InRoot, Prepared};
use crate::fsutil::at;

/// One `RUN --mount` of a traced step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GuestMount {
    /// The guest path it stands for (a directory and all below it, or a single file).
    pub(crate) target: PathBuf,
    /// What it shows.
    pub(crate) source: GuestSource,
    /// Whether the step's writes under it fail with `EROFS`.
    pub(crate) read_only: bool,
}

/// What a traced step's mount shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum GuestSource {
    /// A fresh empty directory of the step's (a tmpfs).
    Empty,
    /// A host directory or file, canonical (its symlinks already resolved in its root).
    Host(PathBuf),
    /// The secret the helper writes under this name.
    Secret(String),
}

/// The prepared mounts as guest mounts: a bind's source resolved in its root now, as the
/// helper resolves it when it mounts; a secret named for the helper to write.
pub(crate) fn guest_mounts(
    prepared: &Prepared,
    sandbox_dir: &Path,
) -> Result<Vec<GuestMount>, SandboxError> {
    let secrets = sandbox_dir.join("secrets");
    prepared
        .mounts
        .iter()
        .map(|m| {
            let options = m.mount.options().clone().unwrap_or_default();
            let read_only = options.iter().any(|o| o == "ro");
            let source = m.mount.source().clone().unwrap_or_default();
            let source = match m.mount.typ().as_deref() {
                Some("bind") => match (&m.in_root, source.strip_prefix(&secrets)) {
                    (None, Ok(name)) => GuestSource::Secret(name.to_string_lossy().into_owned()),
                    (None, Err(_)) => GuestSource::Host(source),
                    (Some(path), _) => GuestSource::Host(resolve(InRoot {
                        root: source,
                        path: path.clone(),
                    })?),
                },
                _ => GuestSource::Empty,
            };
            Ok(GuestMount {
                target: m.mount.destination().clone(),
                source,
                read_only,
            })
        })
        .collect()
}

/// The canonical host path of a path inside its root.
fn resolve(source: InRoot) -> Result<PathBuf, SandboxError> {
    let root = Root::open(&source.root).map_err(at("open", &source.root))?;
    let fd = root
        .open_resolved(&source.path, Escape::Clamp)
        .map_err(|e| SandboxError::Source(source.clone(), e))?;
    std::fs::read_link(fd_path(&fd)).map_err(|e| at("resolve", &source.root)(e).into())
}
