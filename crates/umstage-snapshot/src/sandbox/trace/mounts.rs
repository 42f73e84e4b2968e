//! A traced step's `RUN --mount`s, given by the supervisor for their targets: a directory
//! (cache, tmpfs, bind of a directory) for its target and all below it, a file (bind of a
//! file, secret, ssh agent socket) for its exact path. Their targets are made in the root
//! as the other tiers make mount points, so `ls` shows them, and removed after the step.

use std::path::{Path, PathBuf};

use umstage_oci::inroot::Root as InRoot;

use super::super::failure::HelperError;
use super::super::guest::{GuestMount, GuestSource};
use super::super::rootfs::{Kind, ensure};
use super::paths::Root;

/// Gives `mount` (the step's `index`th) in `root`, its target made in `in_root` (recorded in
/// `stubs`); the host directory or file that stands for it.
pub(super) fn give(
    root: &mut Root,
    in_root: &InRoot,
    files: &Path,
    index: usize,
    mount: &GuestMount,
    stubs: &mut Vec<PathBuf>,
) -> Result<PathBuf, HelperError> {
    let source = match &mount.source {
        GuestSource::Empty => {
            let dir = files.join(format!("tmpfs-{index}"));
            std::fs::create_dir(&dir)
                .map_err(|e| HelperError::during(format!("creating {}", dir.display()), e))?;
            dir
        }
        GuestSource::Host(path) => path.clone(),
        GuestSource::Secret(name) => files.join(name),
    };
    let is_dir = std::fs::metadata(&source)
        .map_err(|e| HelperError::during(format!("{}", source.display()), e))?
        .is_dir();
    let kind = if is_dir { Kind::Dir } else { Kind::File };
    ensure(in_root, &mount.target, kind, Some(stubs)).map_err(|e| {
        HelperError::during(
            format!("creating the mount point {}", mount.target.display()),
            e,
        )
    })?;
    let given = if is_dir {
        root.add_dir(&mount.target, &source, mount.read_only)
    } else {
        root.add_file(&mount.target, &source, mount.read_only)
    };
    given.map_err(|e| {
        HelperError::during(
            format!("mount {} on {}", source.display(), mount.target.display()),
            e,
        )
    })?;
    Ok(source)
}
