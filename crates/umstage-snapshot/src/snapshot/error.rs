//! Why a snapshot operation failed.

use std::path::PathBuf;

use super::kind::SnapshotKind;
use crate::fsutil::PathError;

/// Why a snapshot operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// `--snapshotter` named no driver.
    #[error("unknown snapshotter {0:?}: expected auto, overlay or native")]
    UnknownDriver(String),
    /// The key is taken.
    #[error("snapshot {0} already exists")]
    AlreadyExists(String),
    /// No snapshot has the key.
    #[error("snapshot {0} does not exist")]
    NotFound(String),
    /// The snapshot is in the wrong state for the operation.
    #[error("snapshot {key} is {actual}, not {expected}")]
    WrongKind {
        /// The snapshot.
        key: String,
        /// What it is.
        actual: SnapshotKind,
        /// What the operation needs.
        expected: SnapshotKind,
    },
    /// Other snapshots are built on it.
    #[error("snapshot {key} has children (for example {child}); remove them first")]
    HasChildren {
        /// The snapshot.
        key: String,
        /// One child.
        child: String,
    },
    /// The overlay driver was asked for, but the state root is on overlayfs.
    #[error(
        "the overlay snapshotter cannot keep snapshots in {0}: it is on overlayfs (as inside a container), where an upper dir cannot live; put the state root on a volume (for example an emptyDir) or use --snapshotter native"
    )]
    StateRootOnOverlay(PathBuf),
    /// The overlay driver was asked for, but overlayfs does not work here.
    #[error("the overlay snapshotter does not work here: {0}")]
    OverlayUnavailable(#[source] OverlayProbeError),
    /// A record under the state root cannot be read.
    #[error("snapshot record {path} is corrupt: {reason}")]
    CorruptRecord {
        /// The record file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A filesystem operation failed.
    #[error(transparent)]
    Io(#[from] PathError),
}

/// Which step of trying overlayfs under the state root failed.
#[derive(Debug, thiserror::Error)]
pub enum OverlayProbeError {
    /// A step failed with an error of the system.
    #[error("{step}: {source}")]
    Failed {
        /// The step, such as `mounting overlayfs with userxattr`.
        step: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Removing a lower directory through the mount left no whiteout.
    #[error("the upper dir holds no 0:0 whiteout")]
    NoWhiteout,
    /// The chroot and ptrace sandbox tiers run outside any namespace, where a mount would be
    /// the host's.
    #[error("the chroot and ptrace sandbox tiers mount nothing")]
    ChrootTier,
}
