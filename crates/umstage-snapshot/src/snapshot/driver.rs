//! What a snapshot driver does, as containerd splits it: the [`Snapshotter`](super::Snapshotter)
//! keeps the records (keys, parents, leases, commit), a driver decides what a snapshot's
//! content directory holds and how it is prepared, mounted and diffed.

use std::fmt::Debug;
use std::fs::Metadata;
use std::path::{Path, PathBuf};

use umstage_oci::changes::Change;

use super::error::SnapshotError;
use super::kind::{DriverKind, SnapshotKind};
use super::mount::MountSpec;

/// Where a layer is unpacked into an active snapshot, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerTarget {
    /// Write the layer's own entries here, whiteouts as overlay whiteouts (0:0 character
    /// devices) and opaque directories marked `user.overlay.opaque=y` (overlay driver).
    Diff(PathBuf),
    /// Apply the layer onto the full tree here: whiteouts delete (native driver).
    Apply(PathBuf),
}

/// The committed snapshots below one snapshot, read from the records only when a driver asks
/// (the native driver needs only the parent, the overlay driver the whole chain).
pub(crate) trait Lowers {
    /// The content directory of the committed parent, if there is one.
    fn parent(&self) -> Result<Option<PathBuf>, SnapshotError>;
    /// The content directories of the parent and its ancestors, top first.
    fn chain(&self) -> Result<Vec<PathBuf>, SnapshotError>;
}

/// One snapshot driver. `dir` is a snapshot's data directory: its content in `fs`, overlay's
/// work dir in `work`.
pub(crate) trait Driver: Debug + Send + Sync {
    /// Which driver this is.
    fn kind(&self) -> DriverKind;

    /// Fills the content directory `fs` (absent yet) of a new active snapshot.
    fn prepare(&self, fs: &Path, lowers: &dyn Lowers) -> Result<(), SnapshotError>;

    /// How to mount a snapshot of `kind`: writable when active, read-only otherwise.
    fn mounts(
        &self,
        dir: &Path,
        kind: SnapshotKind,
        lowers: &dyn Lowers,
    ) -> Result<MountSpec, SnapshotError>;

    /// Where and how a layer is unpacked into the active snapshot's content `fs`.
    fn layer_target(&self, fs: PathBuf) -> LayerTarget;

    /// What the active snapshot with content `fs` changed relative to its parent.
    fn diff(&self, fs: &Path, lowers: &dyn Lowers) -> Result<Vec<Change>, SnapshotError>;

    /// The directories that hold what an active snapshot's content sits on, top first.
    fn below(&self, lowers: &dyn Lowers) -> Result<Vec<PathBuf>, SnapshotError>;

    /// The metadata `rel` had before the step, in `below`.
    fn lookup_below(&self, below: &[PathBuf], rel: &Path) -> Option<Metadata>;

    /// Whether the step left the directory `rel` (at `here` in the active snapshot) as it was
    /// in `below`, apart from its times.
    fn untouched(&self, here: &Path, below: &[PathBuf], rel: &Path) -> bool;
}
