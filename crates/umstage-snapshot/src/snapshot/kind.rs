//! The names every part of the snapshotter shares: which driver keeps the snapshots, and what
//! state a snapshot is in.

use serde::{Deserialize, Serialize};

/// Which snapshot driver is in use (its behaviour is the driver module of that name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DriverKind {
    /// Native overlayfs with `userxattr`: a snapshot holds one layer's changes.
    Overlay,
    /// Copying: a snapshot holds a whole tree.
    Native,
}

impl std::fmt::Display for DriverKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DriverKind::Overlay => "overlay",
            DriverKind::Native => "native",
        })
    }
}

/// The state of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotKind {
    /// Writable, made by `prepare`.
    Active,
    /// Read-only, made by `view`.
    View,
    /// Read-only and shared, made by `commit`.
    Committed,
}

impl std::fmt::Display for SnapshotKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SnapshotKind::Active => "active",
            SnapshotKind::View => "a view",
            SnapshotKind::Committed => "committed",
        })
    }
}
