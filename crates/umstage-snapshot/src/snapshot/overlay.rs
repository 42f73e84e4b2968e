//! The overlay driver: native overlayfs with `userxattr` in the user namespace. A snapshot's
//! content is one layer's changes (an upper dir); its parents are the lower dirs.

use std::fs::Metadata;
use std::path::{Path, PathBuf};

use umstage_oci::changes::Change;

use super::driver::{Driver, LayerTarget, Lowers};
use super::error::{OverlayProbeError, SnapshotError};
use super::kind::{DriverKind, SnapshotKind};
use super::mount::{MountSpec, mount_overlay};
use crate::fsutil::{self, at};

const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;

/// The overlay driver; `empty` is the empty lower that stands in for a missing one.
#[derive(Debug)]
pub(crate) struct Overlay {
    pub(crate) empty: PathBuf,
}

impl Driver for Overlay {
    fn kind(&self) -> DriverKind {
        DriverKind::Overlay
    }

    fn prepare(&self, fs: &Path, _lowers: &dyn Lowers) -> Result<(), SnapshotError> {
        Ok(std::fs::create_dir(fs).map_err(at("mkdir", fs))?)
    }

    fn mounts(
        &self,
        dir: &Path,
        kind: SnapshotKind,
        lowers: &dyn Lowers,
    ) -> Result<MountSpec, SnapshotError> {
        if kind == SnapshotKind::Active {
            let mut lowers = lowers.chain()?;
            if lowers.is_empty() {
                lowers.push(self.empty.clone());
            }
            return Ok(MountSpec::overlay(
                &lowers,
                Some((&dir.join("fs"), &dir.join("work"))),
            ));
        }
        // A committed snapshot shows its own layer on top; a view shows its parent's.
        let mut dirs = if kind == SnapshotKind::Committed {
            vec![dir.join("fs")]
        } else {
            Vec::new()
        };
        dirs.extend(lowers.chain()?);
        // A read-only overlay needs two lowers.
        while dirs.len() < 2 {
            dirs.push(self.empty.clone());
        }
        Ok(MountSpec::overlay(&dirs, None))
    }

    fn layer_target(&self, fs: PathBuf) -> LayerTarget {
        LayerTarget::Diff(fs)
    }

    fn diff(&self, fs: &Path, lowers: &dyn Lowers) -> Result<Vec<Change>, SnapshotError> {
        Ok(crate::diff::overlay_changes(fs, &lowers.chain()?)?)
    }

    fn below(&self, lowers: &dyn Lowers) -> Result<Vec<PathBuf>, SnapshotError> {
        lowers.chain()
    }

    fn lookup_below(&self, below: &[PathBuf], rel: &Path) -> Option<Metadata> {
        crate::diff::lookup_overlay(below, rel).map(|found| found.meta)
    }

    fn untouched(&self, here: &Path, _below: &[PathBuf], _rel: &Path) -> bool {
        // In an upper dir, a directory the step did not change holds nothing of its own.
        std::fs::read_dir(here)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false)
            && !fsutil::is_opaque_dir(here)
    }
}

/// Checks that overlayfs with `userxattr` works under the state root: whiteouts included.
pub(crate) fn probe(state_root: &Path) -> Result<String, SnapshotError> {
    let fs =
        nix::sys::statfs::statfs(state_root).map_err(|e| at("statfs", state_root)(e.into()))?;
    if fs.filesystem_type().0 as i64 == OVERLAYFS_SUPER_MAGIC {
        return Err(SnapshotError::StateRootOnOverlay(state_root.to_path_buf()));
    }
    let probe = state_root.join(format!("overlay-probe-{}", fsutil::random_id()));
    let failed = |step| {
        move |e: std::io::Error| OverlayProbeError::Failed {
            step,
            source: e.into(),
        }
    };
    let result = (|| -> Result<(), OverlayProbeError> {
        for sub in ["l1/dir", "l2", "upper", "work", "merged"] {
            std::fs::create_dir_all(probe.join(sub)).map_err(failed("mkdir"))?;
        }
        mount_overlay(
            &[probe.join("l1"), probe.join("l2")],
            Some((&probe.join("upper"), &probe.join("work"))),
            &probe.join("merged"),
        )
        .map_err(|e| OverlayProbeError::Failed {
            step: "mounting overlayfs with userxattr",
            source: e.into(),
        })?;
        let removed = std::fs::remove_dir(probe.join("merged/dir"));
        let _ = nix::mount::umount2(&probe.join("merged"), nix::mount::MntFlags::MNT_DETACH);
        removed.map_err(failed("removing a lower directory through overlayfs"))?;
        let whiteout = std::fs::symlink_metadata(probe.join("upper/dir"))
            .map_err(failed("no whiteout in the upper dir"))?;
        if !fsutil::is_whiteout(&whiteout) {
            return Err(OverlayProbeError::NoWhiteout);
        }
        Ok(())
    })();
    let _ = fsutil::remove_tree(&probe);
    result.map_err(SnapshotError::OverlayUnavailable)?;
    let fs_name = filesystem_name(fs.filesystem_type().0 as i64);
    Ok(format!(
        "overlayfs with userxattr works on {} ({fs_name})",
        state_root.display()
    ))
}

fn filesystem_name(magic: i64) -> &'static str {
    match magic {
        0xef53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683e => "btrfs",
        0x0102_1994 => "tmpfs",
        0x794c_7630 => "overlayfs",
        0x6573_5546 => "fuse",
        _ => "filesystem",
    }
}
