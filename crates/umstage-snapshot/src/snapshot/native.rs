//! The native driver: whole trees. A snapshot's content is a whole tree; its parent's tree is
//! all it sits on. Copied (sharing file data by reflink where the filesystem can), or, in the
//! ptrace tier, whose supervisor copies a file up before a step changes it, linked
//! (`crate::cow`): regular files are hard links to the parent's.

use std::fs::Metadata;
use std::path::{Path, PathBuf};

use umstage_oci::changes::Change;

use super::driver::{Driver, LayerTarget, Lowers};
use super::error::SnapshotError;
use super::kind::{DriverKind, SnapshotKind};
use super::mount::MountSpec;
use crate::fsutil::{self, at};

/// The native driver; `empty` is the empty tree a snapshot without a parent is diffed against.
#[derive(Debug)]
pub(crate) struct Native {
    pub(crate) empty: PathBuf,
    /// Whether new snapshots link their parent's files instead of copying them: only where
    /// every writer into an active snapshot copies a shared file up first.
    pub(crate) linked: bool,
}

impl Driver for Native {
    fn kind(&self) -> DriverKind {
        DriverKind::Native
    }

    fn prepare(&self, fs: &Path, lowers: &dyn Lowers) -> Result<(), SnapshotError> {
        match lowers.parent()? {
            Some(from) if self.linked => Ok(crate::cow::link_tree(&from, fs)?),
            Some(from) => Ok(fsutil::copy_tree(&from, fs)?),
            None => Ok(std::fs::create_dir(fs).map_err(at("mkdir", fs))?),
        }
    }

    fn mounts(
        &self,
        dir: &Path,
        kind: SnapshotKind,
        lowers: &dyn Lowers,
    ) -> Result<MountSpec, SnapshotError> {
        Ok(match kind {
            SnapshotKind::Active => MountSpec::bind(&dir.join("fs"), false),
            SnapshotKind::Committed => MountSpec::bind(&dir.join("fs"), true),
            SnapshotKind::View => {
                // A view always has a parent; without one there is nothing to show.
                let parent = lowers
                    .parent()?
                    .ok_or_else(|| SnapshotError::NotFound(String::new()))?;
                MountSpec::bind(&parent, true)
            }
        })
    }

    fn layer_target(&self, fs: PathBuf) -> LayerTarget {
        LayerTarget::Apply(fs)
    }

    fn diff(&self, fs: &Path, lowers: &dyn Lowers) -> Result<Vec<Change>, SnapshotError> {
        let parent = lowers.parent()?.unwrap_or_else(|| self.empty.clone());
        Ok(crate::diff::tree_changes(&parent, fs)?)
    }

    fn below(&self, lowers: &dyn Lowers) -> Result<Vec<PathBuf>, SnapshotError> {
        Ok(lowers.parent()?.into_iter().collect())
    }

    fn lookup_below(&self, below: &[PathBuf], rel: &Path) -> Option<Metadata> {
        below
            .first()
            .and_then(|tree| std::fs::symlink_metadata(tree.join(rel)).ok())
    }

    fn untouched(&self, here: &Path, below: &[PathBuf], rel: &Path) -> bool {
        below
            .first()
            .is_some_and(|tree| crate::diff::same_children(here, &tree.join(rel)))
    }
}

/// How the native driver's snapshots share data on the filesystem of `state_root`.
pub(crate) fn detail(state_root: &Path, linked: bool) -> String {
    if linked {
        "linked snapshots: files are hard links to the parent's, copied before a step changes them"
            .into()
    } else if fsutil::supports_reflink(state_root) {
        "copying snapshots share file data by reflink".into()
    } else {
        "copying snapshots copy file data (no reflink on this filesystem)".into()
    }
}
