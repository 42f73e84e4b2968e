//! The cache as an OCI artifact, the same in a directory and in a registry: an image manifest
//! whose config blob lists the records (key and result) and whose layers are every blob the
//! results need. A key is content only, so the records mean the same on any machine.

use std::collections::{BTreeMap, HashSet};

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, ImageManifestBuilder, MediaType};
use serde::{Deserialize, Serialize};
use umstage_oci::ManifestFormat;
use umstage_oci::image::layer_media_type;

use super::carried::Carried;
use super::set::Resolved;
use super::spec::{CacheMode, ExportFormat};
use super::{CacheError, CacheKey, Record};
use crate::state::{Layer, parse_digest};

/// The media type of the config blob that lists the records.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.umstage.cache.config.v1+json";
/// The artifact type of a cache manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.umstage.cache.v1";
/// A cache config larger than this is refused when read.
pub const MAX_CONFIG: u64 = 64 << 20;

/// The config blob of a cache manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheConfig {
    /// Every record, each key once.
    pub records: Vec<Entry>,
    /// What explains a miss against these records elsewhere (absent from older caches).
    #[serde(default, skip_serializing_if = "Carried::is_empty")]
    pub explain: Carried,
}

/// One record of a cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The key, in hex.
    pub key: String,
    /// What it records.
    pub record: Record,
}

impl CacheConfig {
    /// What a build resolved, as `mode` exports it: with `Min`, only the steps of `min_stages`
    /// (the exported image's stage and the stages it is built `FROM`), each key once (its last
    /// record), sorted by key.
    pub fn from_resolved(
        resolved: &[Resolved],
        mode: CacheMode,
        min_stages: &HashSet<usize>,
    ) -> Self {
        let mut seen = HashSet::new();
        let mut records = Vec::new();
        for r in resolved.iter().rev() {
            if mode == CacheMode::Min && !min_stages.contains(&r.stage) {
                continue;
            }
            if seen.insert(r.key) {
                records.push(Entry {
                    key: r.key.to_hex(),
                    record: r.record.clone(),
                });
            }
        }
        // By key: the order a build met them in (an alias before or after its result) differs
        // between the build that made them and one that hit them, and an inline cache is part
        // of the image's config digest.
        records.sort_by(|a, b| a.key.cmp(&b.key));
        CacheConfig {
            records,
            explain: Carried::default(),
        }
    }

    /// The records with their layers' media types in OCI's names (`oci`) or Docker's, as the
    /// manifest that lists their blobs has them: an import takes a record only where the two
    /// agree. A zstd layer has no Docker name.
    pub fn in_media_types(mut self, cache: &str, oci: bool) -> Result<Self, CacheError> {
        let format = if oci {
            ManifestFormat::Oci
        } else {
            ManifestFormat::Docker
        };
        for entry in &mut self.records {
            let Record::Result(state) = &mut entry.record else {
                continue;
            };
            for l in &mut state.layers {
                let digest = parse_digest(&l.digest).map_err(|e| CacheError::Format {
                    cache: cache.to_string(),
                    message: e.to_string(),
                })?;
                let d = Descriptor::new(MediaType::from(l.media_type.as_str()), l.size, digest);
                l.media_type = layer_media_type(&d, format)
                    .map_err(|e| CacheError::Format {
                        cache: cache.to_string(),
                        message: format!("oci-mediatypes=false: layer {}: {e}", l.digest),
                    })?
                    .to_string();
            }
        }
        Ok(self)
    }

    /// The records, carrying `explain` too.
    pub fn carrying(self, explain: Carried) -> Self {
        CacheConfig { explain, ..self }
    }

    /// Every blob the records need, each once, in the order first needed.
    pub fn blobs(&self) -> Vec<Layer> {
        let mut seen = HashSet::new();
        self.records
            .iter()
            .flat_map(|e| e.record.needs())
            .filter(|l| seen.insert(l.digest.clone()))
            .cloned()
            .collect()
    }

    /// The records of `cache` by key. Entries with a malformed key are skipped, and so are
    /// results that are no image (`State::flaw`), with a warning: their steps run instead.
    pub fn by_key(self, cache: &str) -> BTreeMap<CacheKey, Record> {
        let mut flawed = Vec::new();
        let records = self
            .records
            .into_iter()
            .filter_map(|e| {
                if let Record::Result(state) = &e.record
                    && let Some(flaw) = state.flaw()
                {
                    flawed.push(flaw);
                    return None;
                }
                Some((CacheKey::from_hex(&e.key)?, e.record))
            })
            .collect();
        if let Some(first) = flawed.first() {
            tracing::warn!(
                "cache {cache}: {} records are unusable and not used (the first: {first})",
                flawed.len()
            );
        }
        records
    }
}

/// A cache manifest, ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    /// Its bytes (canonical JSON).
    pub bytes: Vec<u8>,
    /// Its media type.
    pub media_type: MediaType,
}

/// The manifest of `cache` over a config blob (`config_digest`, `config_size`) and `blobs`,
/// in `format`: an OCI image manifest naming the cache as its artifact type, or (with
/// `image-manifest=false`) an index listing the blobs and the config, as BuildKit's older
/// caches, in Docker's media types with `oci-mediatypes=false` (the layers' as `blobs` name
/// them: see `CacheConfig::in_media_types`).
pub fn manifest(
    cache: &str,
    config_digest: &umstage_oci::Digest,
    config_size: u64,
    blobs: &[Layer],
    format: &ExportFormat,
) -> Result<Built, CacheError> {
    let failed = |message: String| CacheError::Format {
        cache: cache.to_string(),
        message,
    };
    let mut layers = Vec::with_capacity(blobs.len());
    for l in blobs {
        layers.push(Descriptor::new(
            MediaType::from(l.media_type.as_str()),
            l.size,
            parse_digest(&l.digest).map_err(|e| failed(e.to_string()))?,
        ));
    }
    let config = Descriptor::new(
        MediaType::from(CONFIG_MEDIA_TYPE),
        config_size,
        config_digest.clone(),
    );
    let serialised = |r: Result<Vec<u8>, serde_json::Error>| {
        r.map_err(|e| failed(format!("serialising the manifest: {e}")))
    };
    if format.image_manifest {
        let built = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .artifact_type(MediaType::from(ARTIFACT_TYPE))
            .config(config)
            .layers(layers)
            .build()
            .map_err(|e| failed(e.to_string()))?;
        return Ok(Built {
            bytes: serialised(umstage_oci::to_canonical_vec(&built))?,
            media_type: MediaType::ImageManifest,
        });
    }
    let media_type = if format.oci_media_types {
        MediaType::ImageIndex
    } else {
        MediaType::from(umstage_oci::image::media::DOCKER_MANIFEST_LIST)
    };
    layers.push(config);
    let mut index = ImageIndex::default();
    index.set_media_type(Some(media_type.clone()));
    index.set_manifests(layers);
    Ok(Built {
        bytes: serialised(umstage_oci::to_canonical_vec(&index))?,
        media_type,
    })
}

/// What a manifest `bytes` names: its config and its other blobs. An index (a cache written
/// with `image-manifest=false`) names its config among its entries, by the cache config's
/// media type.
pub fn read(cache: &str, bytes: &[u8]) -> Result<(Descriptor, Vec<Descriptor>), CacheError> {
    let failed = |message: String| CacheError::Format {
        cache: cache.to_string(),
        message,
    };
    #[derive(Deserialize)]
    struct Shape {
        manifests: Option<serde_json::Value>,
    }
    let shape: Shape =
        serde_json::from_slice(bytes).map_err(|e| failed(format!("not a manifest: {e}")))?;
    if shape.manifests.is_none() {
        let manifest: ImageManifest = serde_json::from_slice(bytes)
            .map_err(|e| failed(format!("not an image manifest: {e}")))?;
        return Ok((manifest.config().clone(), manifest.layers().to_vec()));
    }
    let index: ImageIndex =
        serde_json::from_slice(bytes).map_err(|e| failed(format!("not an index: {e}")))?;
    let (configs, blobs): (Vec<Descriptor>, Vec<Descriptor>) = index
        .manifests()
        .iter()
        .cloned()
        .partition(|d| d.media_type().to_string() == CONFIG_MEDIA_TYPE);
    match configs.as_slice() {
        [config] => Ok((config.clone(), blobs)),
        _ => Err(failed(
            "an index that names no umstage cache config, or several".into(),
        )),
    }
}

/// The config descriptor of `cache`'s manifest `bytes` (an image manifest or an index), and
/// the blobs it lists, or why they are not a cache manifest.
pub fn config_of(cache: &str, bytes: &[u8]) -> Result<(Descriptor, Vec<Descriptor>), CacheError> {
    let format = |message: String| CacheError::Format {
        cache: cache.to_string(),
        message,
    };
    let (config, blobs) = read(cache, bytes)?;
    if config.media_type().to_string() != CONFIG_MEDIA_TYPE {
        return Err(format(format!(
            "its config is {}, not an umstage cache",
            config.media_type()
        )));
    }
    if config.size() > MAX_CONFIG {
        return Err(format(format!(
            "its config of {} bytes is past the {MAX_CONFIG} a cache may list",
            config.size()
        )));
    }
    Ok((config, blobs))
}

/// Reads `cache`'s config blob `bytes` into its records.
pub fn parse_config(cache: &str, bytes: &[u8]) -> Result<CacheConfig, CacheError> {
    serde_json::from_slice(bytes).map_err(|e| CacheError::Format {
        cache: cache.to_string(),
        message: format!("unreadable records: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::KeyBuilder;
    use crate::state::State;

    fn layer(n: char) -> Layer {
        Layer {
            digest: format!("sha256:{}", n.to_string().repeat(64)),
            diff_id: format!("sha256:{}", n.to_string().repeat(64)),
            size: 1,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        }
    }

    #[test]
    fn min_keeps_the_final_stages_and_blobs_are_listed_once() {
        let state = |layers: Vec<Layer>| {
            Record::Result(Box::new(State {
                config: crate::config::scratch("linux", "amd64", None),
                layers,
            }))
        };
        let k = |s: &str| KeyBuilder::new("t").str(s).finish();
        let resolved = vec![
            Resolved {
                stage: 0,
                key: k("a"),
                record: state(vec![layer('a')]),
            },
            Resolved {
                stage: 1,
                key: k("b"),
                record: state(vec![layer('a'), layer('b')]),
            },
        ];
        let max = CacheConfig::from_resolved(&resolved, CacheMode::Max, &HashSet::from([1]));
        assert_eq!(max.records.len(), 2);
        assert_eq!(max.blobs(), vec![layer('a'), layer('b')]);
        let min = CacheConfig::from_resolved(&resolved, CacheMode::Min, &HashSet::from([1]));
        assert_eq!(min.records.len(), 1);
        assert_eq!(min.records[0].key, k("b").to_hex());
        let digest = umstage_oci::digest::sha256(b"{}");
        let m = manifest("t", &digest, 2, &max.blobs(), &ExportFormat::default());
        let Ok(built) = m else {
            panic!("no manifest: {m:?}");
        };
        assert_eq!(built.media_type, MediaType::ImageManifest);
        let read = config_of("t", &built.bytes).map(|(d, blobs)| (d.size(), blobs.len()));
        assert_eq!(read.ok(), Some((2, 2)));
    }

    #[test]
    fn an_index_of_docker_media_types_lists_the_blobs_and_the_config() {
        let docker = ExportFormat {
            oci_media_types: false,
            image_manifest: false,
            ..ExportFormat::default()
        };
        let digest = umstage_oci::digest::sha256(b"{}");
        let one = |l: Layer, k: &str| CacheConfig {
            records: vec![Entry {
                key: KeyBuilder::new("t").str(k).finish().to_hex(),
                record: Record::Result(Box::new(State {
                    config: crate::config::scratch("linux", "amd64", None),
                    layers: vec![l],
                })),
            }],
            explain: Carried::default(),
        };
        let Ok(docker_records) = one(layer('a'), "a").in_media_types("t", false) else {
            panic!("gzip has a Docker name");
        };
        let m = manifest("t", &digest, 2, &docker_records.blobs(), &docker);
        let Ok(built) = m else {
            panic!("no manifest: {m:?}");
        };
        assert_eq!(
            built.media_type.to_string(),
            umstage_oci::image::media::DOCKER_MANIFEST_LIST
        );
        let value: serde_json::Value = serde_json::from_slice(&built.bytes).unwrap_or_default();
        assert_eq!(
            value["manifests"][0]["mediaType"],
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
        let read = config_of("t", &built.bytes).map(|(d, blobs)| (d.digest().clone(), blobs));
        let Ok((config, blobs)) = read else {
            panic!("unreadable: {read:?}");
        };
        assert_eq!((&config, blobs.len()), (&digest, 1));
        let mut zstd = layer('z');
        zstd.media_type = "application/vnd.oci.image.layer.v1.tar+zstd".into();
        assert!(one(zstd, "z").in_media_types("t", false).is_err());
    }
}
