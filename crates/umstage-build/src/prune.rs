//! Freeing space under a state root: the least recently used cache entries first, then the
//! snapshots and blobs that no remaining entry needs.
//!
//! Builds may run meanwhile. Each holds a lease (`umstage_oci::lease`) naming every blob and
//! snapshot it relies on; pruning decides and removes under the exclusive GC lock, keeping all
//! that the live leases name, so a running build never loses what it uses.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use umstage_oci::lease::{GcLock, LeaseError, LiveLeases};
use umstage_oci::{ContentStore, StoreError};
use umstage_snapshot::snapshot::SnapshotError;
use umstage_snapshot::{DriverChoice, Snapshotter};

use crate::cache::explain::InputLog;
use crate::cache::{CacheIndex, Record};
use crate::state::snapshot_names;

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
    /// The GC lock or the leases of running builds could not be read.
    #[error(transparent)]
    Lease(#[from] LeaseError),
}

/// What a prune did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Cache entries removed.
    pub entries: usize,
    /// Builds running on the state root, whose leases were kept.
    pub running_builds: usize,
    /// Whether the whole state root was emptied.
    pub everything: bool,
}

/// Temporary cache entries older than this were left by a killed writer.
const LEFTOVER_AGE: Duration = Duration::from_secs(600);

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PruneError + use<> {
    let path = path.to_path_buf();
    move |source| PruneError::Io {
        action,
        path,
        source,
    }
}

/// Removes everything under `root` (`umstage prune --all`); a missing root is already empty.
/// While builds are running it removes only what their leases do not hold: every cache entry
/// and every other snapshot and blob, as [`prune`] with nothing kept.
pub fn remove_everything(root: &Path) -> Result<Pruned, PruneError> {
    if !root.exists() {
        return Ok(Pruned {
            entries: 0,
            running_builds: 0,
            everything: true,
        });
    }
    let gc = GcLock::exclusive(root)?;
    let live = gc.live_leases()?;
    if live.count > 0 {
        return collect(root, &live, 0);
    }
    // No build can start while the lock is held (taking a lease needs it), and the lock is the
    // root directory itself, which stays.
    let entries = std::fs::read_dir(root).map_err(io_err("reading", root))?;
    for entry in entries {
        let path = entry.map_err(io_err("reading", root))?.path();
        let removed = if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(io_err("removing", &path))?;
    }
    Ok(Pruned {
        entries: 0,
        running_builds: 0,
        everything: true,
    })
}

/// Keeps the most recently used cache entries whose layers fit in `keep` bytes and removes
/// the rest, with the snapshots and blobs neither a kept entry nor a running build needs.
pub fn prune(root: &Path, keep: u64) -> Result<Pruned, PruneError> {
    std::fs::create_dir_all(root).map_err(io_err("creating", root))?;
    let gc = GcLock::exclusive(root)?;
    let live = gc.live_leases()?;
    collect(root, &live, keep)
}

/// The collection itself; the caller holds the GC lock, so `live` stays all that builds hold.
fn collect(root: &Path, live: &LiveLeases, keep: u64) -> Result<Pruned, PruneError> {
    let steps = root.join("cache/steps");
    let cache = CacheIndex::open(&steps).map_err(io_err("opening", &steps))?;
    cache
        .remove_leftovers(LEFTOVER_AGE)
        .map_err(io_err("cleaning", &steps))?;
    let mut entries = cache.entries().map_err(io_err("reading", &steps))?;
    // Most recently used first.
    entries.sort_by_key(|e| std::cmp::Reverse(e.1));
    let mut size = 0u64;
    let mut kept_blobs: HashSet<String> = live.blobs.clone();
    let mut kept_chains: HashSet<String> = live.snapshots.clone();
    let mut budget_blobs = HashSet::new();
    let mut removed = 0usize;
    let mut oldest_kept = None;
    for (key, used) in entries {
        let Some(record) = cache.get::<Record>(&key) else {
            continue;
        };
        let layers = record.needs();
        let extra: u64 = layers
            .iter()
            .filter(|l| !budget_blobs.contains(&l.digest))
            .map(|l| l.size)
            .sum();
        if size + extra <= keep {
            size += extra;
            oldest_kept = Some(used);
            budget_blobs.extend(layers.iter().map(|l| l.digest.clone()));
            kept_blobs.extend(layers.iter().map(|l| l.digest.clone()));
            // Kept whichever mode unpacked them.
            kept_chains.extend(snapshot_names(layers, false));
            kept_chains.extend(snapshot_names(layers, true));
        } else {
            cache
                .remove(&key)
                .map_err(io_err("removing an entry of", &steps))?;
            removed += 1;
        }
    }
    // Snapshots: every committed one nothing keeps, children before parents. One with a child
    // still in use (an active step, a view, a kept snapshot) stays.
    let snapshotter = Snapshotter::open(root, DriverChoice::Auto)?;
    let mut pending: Vec<String> = snapshotter
        .list_committed()?
        .into_iter()
        .map(|info| info.key)
        .filter(|chain| !kept_chains.contains(chain))
        .collect();
    pending.sort();
    loop {
        let before_round = pending.len();
        pending.retain(|chain| match snapshotter.remove(chain) {
            Ok(()) | Err(SnapshotError::NotFound(_)) => false,
            Err(_) => true,
        });
        if pending.is_empty() || pending.len() == before_round {
            break;
        }
    }
    // Blobs: those nothing keeps.
    let store = ContentStore::open(root)?;
    for digest in store.digests()? {
        if !kept_blobs.contains(&digest.to_string()) {
            let _ = store.remove(&digest);
        }
    }
    remove_downloads(root, live)?;
    // What explains a step's miss: kept for the steps built since the oldest kept entry was
    // used (entries come most recently used first), so the log shrinks with the cache.
    let inputs = root.join("cache/inputs");
    InputLog::new(&inputs)
        .remove_older_than(oldest_kept)
        .map_err(io_err("cleaning", &inputs))?;
    Ok(Pruned {
        entries: removed,
        running_builds: live.count,
        everything: false,
    })
}

/// ADD's kept URL downloads (`download`) only save a transfer when the server says they are
/// current, and no lease names them: they go when no build runs, with the files a killed
/// build left there. A running build may be reading or replacing any of them, so they stay
/// while one does.
fn remove_downloads(root: &Path, live: &LiveLeases) -> Result<(), PruneError> {
    if live.count > 0 {
        return Ok(());
    }
    let dir = root.join("downloads");
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("removing", &dir)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use umstage_oci::lease::Lease;

    use super::*;

    #[test]
    fn prune_keeps_what_a_live_lease_holds_and_nothing_else()
    -> Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        let lease = Arc::new(Lease::acquire(root.path())?);
        let store = ContentStore::open(root.path())?.with_lease(Arc::clone(&lease));
        let held = store.put(b"held")?.digest;
        let loose = ContentStore::open(root.path())?.put(b"loose")?.digest;
        let snapshotter = Snapshotter::open(root.path(), DriverChoice::Auto)?;
        for (chain, parent) in [("sha256:held", None), ("sha256:loose", Some("sha256:held"))] {
            snapshotter.prepare("making", parent)?;
            snapshotter.commit(chain, "making")?;
        }
        lease.hold_snapshots(["sha256:held"])?;

        let pruned = prune(root.path(), 0)?;
        assert_eq!(pruned.running_builds, 1);
        assert!(store.contains(&held));
        assert!(!store.contains(&loose));
        assert!(snapshotter.has_committed("sha256:held")?);
        assert!(!snapshotter.has_committed("sha256:loose")?);

        // --all with the build still running removes only what the lease does not hold.
        let all = remove_everything(root.path())?;
        assert!(!all.everything);
        assert!(store.contains(&held));
        assert!(snapshotter.has_committed("sha256:held")?);

        // Once the build is gone, its lease is dead and --all empties the root.
        drop((store, lease, snapshotter));
        assert!(remove_everything(root.path())?.everything);
        assert_eq!(std::fs::read_dir(root.path())?.count(), 0);
        Ok(())
    }

    #[test]
    fn prune_removes_url_downloads_once_no_build_runs() -> Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        let kept = root.path().join("downloads/0123");
        std::fs::create_dir_all(&kept)?;
        for name in ["record.json", "sha256-00", ".incoming-a", ".in-use-b"] {
            std::fs::write(kept.join(name), b"x")?;
        }
        let lease = Lease::acquire(root.path())?;
        prune(root.path(), u64::MAX)?;
        assert!(kept.join(".in-use-b").is_file());
        drop(lease);
        prune(root.path(), u64::MAX)?;
        assert!(!root.path().join("downloads").exists());
        Ok(())
    }
}
