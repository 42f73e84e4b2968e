//! The change set: what one build step changed in a filesystem, as input to the layer writer.

use std::path::PathBuf;

/// What happened to one path in a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// The path was created, or its content or metadata changed; the layer carries it in full.
    Upsert,
    /// The path was removed; the layer carries a `.wh.NAME` whiteout.
    Delete,
    /// The directory replaces whatever the lower layers had there; the layer carries `.wh..wh..opq`
    /// in it. The directory itself and its kept children appear as separate `Upsert` changes.
    OpaqueDir,
}

/// One changed path, relative to the change set's root, with no leading `/` and no `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Change {
    /// Path relative to the root, `/`-separated, never empty, never absolute.
    pub path: PathBuf,
    /// What happened to it.
    pub kind: ChangeKind,
}

/// Everything one step changed: the paths, and the directory their current content is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeSet {
    /// Directory holding the new state of every `Upsert` path (an overlay upper dir or a snapshot).
    pub source: PathBuf,
    /// The changes, in any order; the layer writer sorts them.
    pub changes: Vec<Change>,
}
