//! `umstage info` and `umstage prune`.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::Context;
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
/// and blobs no kept entry needs. What running builds hold stays in either case.
pub fn prune(root: &Path, all: bool, keep: Option<u64>) -> anyhow::Result<()> {
    if !root.exists() {
        println!("nothing to prune: {} does not exist", root.display());
        return Ok(());
    }
    let before = disk_usage(root);
    let pruned = if all {
        umstage_build::prune::remove_everything(root)?
    } else {
        umstage_build::prune::prune(root, keep.unwrap_or(0))?
    };
    let after = disk_usage(root);
    let freed = human(before.saturating_sub(after));
    if pruned.everything {
        println!("removed everything under {}: {freed} freed", root.display());
        return Ok(());
    }
    println!(
        "removed {} cache entries: {freed} freed, {} in use",
        pruned.entries,
        human(after)
    );
    if pruned.running_builds > 0 {
        println!(
            "kept what {} running build(s) hold{}",
            pruned.running_builds,
            if all {
                "; run it again once they are done to remove everything"
            } else {
                ""
            }
        );
    }
    Ok(())
}
