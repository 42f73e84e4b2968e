//! `umstage info` and `umstage prune`.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::Context;
use umstage_build::cache::CacheIndex;
use umstage_build::state::{State, chain_ids};
use umstage_snapshot::{DriverChoice, Snapshotter};

/// Bytes used by everything under `dir` (allocated blocks; each inode counted once).
fn disk_usage(dir: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if seen.insert((meta.dev(), meta.ino())) {
                total += meta.blocks() * 512;
            }
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    total
}

fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", units[unit])
}

/// Prints what this machine supports and the state of the store.
pub fn info(root: &Path, json: bool) -> anyhow::Result<()> {
    let uname = rustix::system::uname();
    let kernel = uname.release().to_string_lossy().into_owned();
    let ns = umstage_snapshot::userns::current();
    let mode = ns.map_or_else(|| "none".to_string(), |n| format!("{:?}", n.mode()));
    let map = |ranges: &[umstage_snapshot::userns::IdRange]| -> Vec<String> {
        ranges
            .iter()
            .map(|r| format!("{}->{} ({})", r.inside, r.outside, r.count))
            .collect()
    };
    let (uid_map, gid_map) = ns.map_or((Vec::new(), Vec::new()), |n| {
        (map(n.uid_map()), map(n.gid_map()))
    });
    let snapshotter = Snapshotter::open(root, DriverChoice::Auto)
        .with_context(|| format!("opening the state root {}", root.display()))?;
    let size = disk_usage(root);
    if json {
        let value = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "kernel": kernel,
            "user_namespace": { "mode": mode, "uid_map": uid_map, "gid_map": gid_map },
            "snapshotter": { "driver": snapshotter.driver().to_string(), "reason": snapshotter.selection_reason() },
            "state_root": { "path": root, "bytes": size },
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("umstage {}", env!("CARGO_PKG_VERSION"));
        println!("kernel:          {kernel}");
        println!("id mapping:      {mode}");
        println!("  uid map:       {}", uid_map.join(", "));
        println!("  gid map:       {}", gid_map.join(", "));
        println!(
            "snapshotter:     {} ({})",
            snapshotter.driver(),
            snapshotter.selection_reason()
        );
        println!("state root:      {}", root.display());
        println!("  size:          {}", human(size));
    }
    Ok(())
}

/// Removes build cache: everything with `all`; else the least recently used cache entries until
/// what the rest needs fits in `keep` bytes (nothing kept without `keep`), then the snapshots
/// and blobs no kept entry needs.
pub fn prune(root: &Path, all: bool, keep: Option<u64>) -> anyhow::Result<()> {
    let before = disk_usage(root);
    if all {
        let entries = match std::fs::read_dir(root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                println!("nothing to prune: {} does not exist", root.display());
                return Ok(());
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", root.display())),
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.with_context(|| format!("removing {}", path.display()))?;
        }
        println!(
            "removed everything under {}: {} freed",
            root.display(),
            human(before)
        );
        return Ok(());
    }
    let cache = CacheIndex::open(root.join("cache/steps"))?;
    cache.remove_leftovers()?;
    let mut entries = cache.entries()?;
    // Most recently used first.
    entries.sort_by_key(|e| std::cmp::Reverse(e.1));
    let budget = keep.unwrap_or(0);
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
        if used + extra <= budget {
            used += extra;
            kept_blobs.extend(state.layers.iter().map(|l| l.digest.clone()));
            kept_chains.extend(chain_ids(&state.layers));
        } else {
            dropped_chains.extend(chain_ids(&state.layers));
            cache.remove(&key)?;
            removed += 1;
        }
    }
    // Snapshots: remove the dropped chains no kept entry needs, longest first (children first).
    let snapshotter = Snapshotter::open(root, DriverChoice::Auto)?;
    dropped_chains.retain(|c| !kept_chains.contains(c));
    dropped_chains.sort();
    dropped_chains.dedup();
    let mut pending = dropped_chains;
    for _ in 0..pending.len().max(1) {
        let before_round = pending.len();
        pending.retain(|chain| match snapshotter.remove(chain) {
            Ok(()) => false,
            Err(umstage_snapshot::snapshot::SnapshotError::NotFound(_)) => false,
            Err(_) => true,
        });
        if pending.is_empty() || pending.len() == before_round {
            break;
        }
    }
    // Blobs: layers no kept entry references.
    let store = umstage_oci::ContentStore::open(root)?;
    let blobs_dir = root.join("blobs/sha256");
    if let Ok(dir) = std::fs::read_dir(&blobs_dir) {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let digest = format!("sha256:{name}");
            if kept_blobs.contains(&digest) {
                continue;
            }
            if let Ok(d) = umstage_oci::digest::parse(&digest) {
                let _ = store.remove(&d);
            }
        }
    }
    let after = disk_usage(root);
    println!(
        "removed {removed} cache entries: {} freed, {} in use",
        human(before.saturating_sub(after)),
        human(after)
    );
    Ok(())
}
