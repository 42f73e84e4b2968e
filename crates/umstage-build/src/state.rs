//! What a build step results in: an image config and its layers, as the cache stores it; and
//! making sure the filesystem of such a state exists as a committed snapshot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use umstage_oci::config::ImageConfig;
use umstage_oci::lease::Lease;
use umstage_oci::unpack::{UnpackMode, UnpackOptions, apply_deferred, unpack_blob};
use umstage_oci::{ContentStore, Digest};
use umstage_snapshot::{LayerTarget, Snapshotter};

use crate::error::StepError;

/// One layer of an image, as a manifest lists it plus its diff id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// Compressed blob digest.
    pub digest: String,
    /// Uncompressed tar digest.
    pub diff_id: String,
    /// Blob size.
    pub size: u64,
    /// Blob media type.
    pub media_type: String,
}

impl Layer {
    /// The manifest descriptor of this layer.
    pub fn descriptor(&self) -> Result<oci_spec::image::Descriptor, StepError> {
        let digest = parse_digest(&self.digest)?;
        Ok(oci_spec::image::Descriptor::new(
            oci_spec::image::MediaType::from(self.media_type.as_str()),
            self.size,
            digest,
        ))
    }
}

/// Parses a `sha256:…` digest.
pub fn parse_digest(text: &str) -> Result<Digest, StepError> {
    umstage_oci::digest::parse(text)
        .map_err(|e| StepError::during(format!("invalid digest {text:?}"), e))
}

/// The result of a step: the image so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The image config, `rootfs.diff_ids` and history included.
    pub config: ImageConfig,
    /// The layers, bottom first (one per diff id).
    pub layers: Vec<Layer>,
}

impl State {
    /// What makes this state no image, if anything: a layer list that does not match the
    /// config's diff ids, a digest that does not parse, a layer type umstage cannot read, a
    /// size no manifest can hold. A record read from a cache someone else wrote is checked so
    /// before it is used, so that a hit never exports a broken image.
    pub fn flaw(&self) -> Option<String> {
        let diff_ids = &self.config.rootfs.diff_ids;
        if diff_ids.len() != self.layers.len() {
            return Some(format!(
                "{} layers for {} diff ids",
                self.layers.len(),
                diff_ids.len()
            ));
        }
        for (layer, diff_id) in self.layers.iter().zip(diff_ids) {
            if layer.diff_id != diff_id.to_string() {
                return Some(format!(
                    "layer {:?} has the diff id {:?} where the config has {diff_id}",
                    layer.digest, layer.diff_id
                ));
            }
            if let Err(e) = umstage_oci::digest::parse(&layer.digest) {
                return Some(e.to_string());
            }
            if umstage_oci::compress::Compression::from_media_type(&layer.media_type).is_none() {
                return Some(format!(
                    "layer {} has the media type {:?}, not a layer's",
                    layer.digest, layer.media_type
                ));
            }
            // OCI sizes are signed 64-bit numbers.
            if i64::try_from(layer.size).is_err() {
                return Some(format!(
                    "layer {} has the impossible size {}",
                    layer.digest, layer.size
                ));
            }
        }
        None
    }
}

/// The chain id of each prefix of `layers`, as the OCI image spec defines them.
pub fn chain_ids(layers: &[Layer]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(layers.len());
    for layer in layers {
        let next = match out.last() {
            None => layer.diff_id.clone(),
            Some(parent) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{parent} {}", layer.diff_id)))
            ),
        };
        out.push(next);
    }
    out
}

/// The name of the committed snapshot of each prefix of `layers`: its chain id, prefixed by the
/// id mode of the build. One made in single-id mode (`ignore_chown_errors`) lost the owners the
/// mode cannot set, so a build with subordinate ids must not find it. Both modes are prefixed:
/// snapshots named by the bare chain id may be such lossy ones, left by a single-id build of an
/// earlier version, and are never used again (prune removes them).
pub fn snapshot_names(layers: &[Layer], single_id: bool) -> Vec<String> {
    let mode = if single_id { "single-id" } else { "ranges" };
    chain_ids(layers)
        .into_iter()
        .map(|c| format!("{mode}:{c}"))
        .collect()
}

/// The snapshotter, opened on first use: a build whose every step is cached never needs one
/// (opening probes overlayfs with a test mount).
pub struct LazySnapshotter {
    state_root: std::path::PathBuf,
    choice: umstage_snapshot::DriverChoice,
    cell: std::sync::OnceLock<Snapshotter>,
    opening: Mutex<()>,
}

impl LazySnapshotter {
    /// A snapshotter under `state_root` with the driver `choice`, not opened yet.
    pub fn new(state_root: std::path::PathBuf, choice: umstage_snapshot::DriverChoice) -> Self {
        LazySnapshotter {
            state_root,
            choice,
            cell: std::sync::OnceLock::new(),
            opening: Mutex::new(()),
        }
    }

    /// The snapshotter, opening it if this is the first use.
    pub fn get(&self) -> Result<&Snapshotter, StepError> {
        if let Some(s) = self.cell.get() {
            return Ok(s);
        }
        let _guard = self
            .opening
            .lock()
            .map_err(|_| "snapshotter lock poisoned".to_string())?;
        if let Some(s) = self.cell.get() {
            return Ok(s);
        }
        let opened = Snapshotter::open(&self.state_root, self.choice).map_err(StepError::below)?;
        Ok(self.cell.get_or_init(|| opened))
    }

    /// Removes a snapshot made earlier through this snapshotter; best effort, for cleanup.
    pub fn remove(&self, key: &str) {
        if let Some(s) = self.cell.get() {
            let _ = s.remove(key);
        }
    }
}

/// Unpacks base layers into committed snapshots, once per chain id even when several stages
/// need the same one at the same time.
pub struct Unpacker {
    /// The build's lease: every chain is named in it before it is looked for.
    lease: Arc<Lease>,
    in_progress: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    skipped: Mutex<Skipped>,
}

/// Entries of the layers unpacked so far whose owner, device or extended attribute could not
/// be applied (a single-id namespace has no other ids and may make no devices).
#[derive(Debug, Default, Clone)]
pub struct Skipped {
    /// How many.
    pub count: usize,
    /// The first, as the unpacker worded it (path and what was lost).
    pub first: Option<String>,
}

impl Unpacker {
    /// An unpacker for the build holding `lease`.
    pub fn new(lease: Arc<Lease>) -> Self {
        Unpacker {
            lease,
            in_progress: Mutex::new(HashMap::new()),
            skipped: Mutex::new(Skipped::default()),
        }
    }

    /// What the unpacks of this build could not apply.
    pub fn skipped(&self) -> Skipped {
        self.skipped.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Makes sure the committed snapshot of `layers` exists, unpacking the missing ones from the
    /// content store; returns its name (`snapshot_names`; `None` when there are no layers).
    pub fn ensure(
        &self,
        snapshotter: &Snapshotter,
        store: &ContentStore,
        layers: &[Layer],
        ignore_chown_errors: bool,
    ) -> Result<Option<String>, StepError> {
        let chains = snapshot_names(layers, ignore_chown_errors);
        // Named before they are looked for: a prune keeps the ones found, and any it removed
        // first are unpacked again below.
        self.lease
            .hold_snapshots(chains.iter().map(String::as_str))
            .map_err(StepError::below)?;
        // Find the highest chain already there; unpack the ones above it.
        let have = chains
            .iter()
            .rposition(|c| snapshotter.has_committed(c).unwrap_or(false));
        let start = have.map_or(0, |i| i + 1);
        for i in start..chains.len() {
            let chain = &chains[i];
            let lock = {
                let mut map = self
                    .in_progress
                    .lock()
                    .map_err(|_| "snapshot unpack lock poisoned".to_string())?;
                Arc::clone(map.entry(chain.clone()).or_default())
            };
            let _guard = lock
                .lock()
                .map_err(|_| "snapshot unpack lock poisoned".to_string())?;
            if snapshotter.has_committed(chain).map_err(StepError::below)? {
                continue;
            }
            let parent = i.checked_sub(1).map(|p| chains[p].as_str());
            let key = crate::ids::unique_key("unpack");
            snapshotter
                .prepare(&key, parent)
                .map_err(StepError::below)?;
            let digest = parse_digest(&layers[i].digest)?;
            let result = (|| {
                let (dir, mode) = match snapshotter.layer_target(&key).map_err(StepError::below)? {
                    LayerTarget::Diff(dir) => (dir, UnpackMode::Overlay { userxattr: true }),
                    LayerTarget::Apply(dir) => (dir, UnpackMode::Plain),
                };
                let options = UnpackOptions {
                    mode,
                    ignore_chown_errors,
                    // Chown fails only in a single-id namespace, where the owners are recorded
                    // for the sandbox's stat and the layer writer.
                    record_owners: ignore_chown_errors,
                    ..UnpackOptions::default()
                };
                let report =
                    unpack_blob(store, &digest, &dir, &options).map_err(StepError::below)?;
                if let (Ok(mut skipped), Some(first)) =
                    (self.skipped.lock(), report.warnings.first())
                {
                    skipped.count += report.warnings.len();
                    skipped.first.get_or_insert_with(|| first.clone());
                }
                if !report.deferred.is_empty() {
                    let merged = snapshotter.mount(&key).map_err(StepError::below)?;
                    apply_deferred(merged.path(), &dir, &report.deferred)
                        .map_err(StepError::below)?;
                }
                snapshotter.commit(chain, &key).map_err(StepError::below)
            })();
            if let Err(e) = result {
                let _ = snapshotter.remove(&key);
                return Err(StepError::during(
                    format!("unpacking layer {}", layers[i].digest),
                    e,
                ));
            }
        }
        Ok(chains.last().cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let layer = |d: &str| Layer {
            digest: String::new(),
            diff_id: d.into(),
            size: 0,
            media_type: String::new(),
        };
        let ids = chain_ids(&[layer("sha256:a"), layer("sha256:b")]);
        assert_eq!(ids[0], "sha256:a");
        let expected = hex::encode(Sha256::digest("sha256:a sha256:b"));
        assert_eq!(ids[1], format!("sha256:{expected}"));
        assert!(chain_ids(&[]).is_empty());
        // Single-id mode's snapshots are kept apart from the others of the same layers.
        let layers = [layer("sha256:a"), layer("sha256:b")];
        let (ranges, single) = (
            snapshot_names(&layers, false),
            snapshot_names(&layers, true),
        );
        assert_eq!((ranges.len(), single.len()), (2, 2));
        // Nor is either found under the bare chain id, which an earlier version used for both.
        assert!(ranges.iter().chain(&single).all(|n| !ids.contains(n)));
        assert!(single.iter().all(|n| !ranges.contains(n)));
    }

    #[test]
    fn a_state_is_flawed_when_its_layers_do_not_describe_its_config() {
        let digest = umstage_oci::digest::sha256(b"layer");
        let mut config = crate::config::scratch("linux", "amd64", None);
        config.rootfs.diff_ids.push(digest.clone());
        let layer = Layer {
            digest: digest.to_string(),
            diff_id: digest.to_string(),
            size: 5,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        };
        let state = |change: &dyn Fn(&mut Layer)| {
            let mut l = layer.clone();
            change(&mut l);
            State {
                config: config.clone(),
                layers: vec![l],
            }
        };
        assert_eq!(state(&|_| ()).flaw(), None);
        for change in [
            &(|l: &mut Layer| l.diff_id = "sha256:../x".into()) as &dyn Fn(&mut Layer),
            &|l| l.digest = "sha256:../../x".into(),
            &|l| l.media_type = "text/html".into(),
            &|l| l.size = u64::MAX,
        ] {
            assert!(state(change).flaw().is_some());
        }
        let fewer = State {
            config: config.clone(),
            layers: Vec::new(),
        };
        assert!(fewer.flaw().is_some());
    }

    #[test]
    fn single_id_unpacks_are_not_found_by_a_build_with_ranges()
    -> Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        let lease = Arc::new(Lease::acquire(root.path())?);
        let store = ContentStore::open(root.path())?;
        // An empty tar archive: a layer with nothing in it.
        let blob = store.put(&[0u8; 1024])?.digest.to_string();
        let layers = [Layer {
            digest: blob.clone(),
            diff_id: blob,
            size: 1024,
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        }];
        let snapshotter = Snapshotter::open(root.path(), umstage_snapshot::DriverChoice::Auto)?;
        let unpacker = Unpacker::new(lease);
        let single = unpacker.ensure(&snapshotter, &store, &layers, true)?;
        let ranged = unpacker.ensure(&snapshotter, &store, &layers, false)?;
        assert_ne!(single, ranged);
        assert_eq!(ranged, snapshot_names(&layers, false).pop());
        assert!(snapshotter.has_committed(&single.ok_or("no snapshot")?)?);
        Ok(())
    }
}
