//! Freeing space under a state root: the least recently used cache entries first, then the
//! snapshots and blobs that no remaining entry needs.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use umstage_oci::{ContentStore, StoreError};
use umstage_snapshot::snapshot::SnapshotError;
use umstage_snapshot::{DriverChoice, Snapshotter};

use crate::cache::CacheIndex;
use crate::state::{State, chain_ids};

/// Pruning stopped before it was done; what it removed so far stays removed.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// A file or directory of the state root could not be read or removed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The snapshotter could not be opened.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The content store could not be opened or listed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PruneError + use<> {
    let path = path.to_path_buf();
    move |source| PruneError::Io {
        action,
        path,
        source,
    }
}

/// Removes everything under `root` (`umstage prune --all`); a missing root is already empty.
pub fn remove_everything(root: &Path) -> Result<(), PruneError> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("reading", root)(e)),
    };
    for entry in entries {
        let path = entry.map_err(io_err("reading", root))?.path();
        let removed = if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(io_err("removing", &path))?;
    }
    Ok(())
}

/// Keeps the most recently used cache entries whose layers fit in `keep` bytes and removes
/// the rest, with the snapshots and blobs only they used; returns how many entries went.
pub fn prune(root: &Path, keep: u64) -> Result<usize, PruneError> {
    let steps = root.join("cache/steps");
    let cache = CacheIndex::open(&steps).map_err(io_err("opening", &steps))?;
    cache
        .remove_leftovers()
        .map_err(io_err("cleaning", &steps))?;
    let mut entries = cache.entries().map_err(io_err("reading", &steps))?;
    // Most recently used first.
    entries.sort_by_key(|e| std::cmp::Reverse(e.1));
    let mut used = 0u64;
    let mut kept_blobs = HashSet::new();
    let mut kept_chains = HashSet::new();
    let mut dropped_chains = Vec::new();
    let mut removed = 0usize;
    for (key, _) in entries {
        let Some(state) = cache.get::<State>(&key) else {
            continue;
        };
        let extra: u64 = state
            .layers
            .iter()
            .filter(|l| !kept_blobs.contains(&l.digest))
            .map(|l| l.size)
            .sum();
        if used + extra <= keep {
            used += extra;
            kept_blobs.extend(state.layers.iter().map(|l| l.digest.clone()));
            kept_chains.extend(chain_ids(&state.layers));
        } else {
            dropped_chains.extend(chain_ids(&state.layers));
            cache
                .remove(&key)
                .map_err(io_err("removing an entry of", &steps))?;
            removed += 1;
        }
    }
    // Snapshots: remove the dropped chains no kept entry needs, children before parents.
    let snapshotter = Snapshotter::open(root, DriverChoice::Auto)?;
    dropped_chains.retain(|c| !kept_chains.contains(c));
    dropped_chains.sort();
    dropped_chains.dedup();
    let mut pending = dropped_chains;
    for _ in 0..pending.len().max(1) {
        let before_round = pending.len();
        pending.retain(|chain| match snapshotter.remove(chain) {
            Ok(()) | Err(SnapshotError::NotFound(_)) => false,
            Err(_) => true,
        });
        if pending.is_empty() || pending.len() == before_round {
            break;
        }
    }
    // Blobs: layers no kept entry references.
    let store = ContentStore::open(root)?;
    for digest in store.digests()? {
        if !kept_blobs.contains(&digest.to_string()) {
            let _ = store.remove(&digest);
        }
    }
    Ok(removed)
}
