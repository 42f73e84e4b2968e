//! A cache export's blobs in the compression its `compression=` asks for: as BuildKit, the
//! layers this build made, or with `force-compression=true` every blob; a blob already in
//! that compression is kept as it is. A local cache hit's blob is not converted without
//! `force-compression`, whatever its compression: BuildKit converts a layer that already has
//! a blob only when forced. A converted layer has the same tar (diff id) in a new
//! blob, and the records name the new blob, so an import's hits give images with it.

use std::collections::{HashMap, HashSet};
use std::mem::discriminant;

use umstage_oci::ContentStore;
use umstage_oci::compress::Compression;
use umstage_oci::layer::{LayerOptions, recompress};

use super::manifest::CacheConfig;
use super::spec::ExportFormat;
use super::{CacheError, Record};
use crate::state::{Layer, parse_digest};

/// The blobs of `config` that `format` converts: those not in its compression, of the layers
/// `made` by this build, or every one with `force-compression`.
pub fn to_convert(
    config: &CacheConfig,
    format: &ExportFormat,
    made: &HashSet<String>,
) -> Vec<Layer> {
    let Some(wanted) = format.compression else {
        return Vec::new();
    };
    config
        .blobs()
        .into_iter()
        .filter(|l| format.force_compression || made.contains(&l.digest))
        .filter(|l| {
            Compression::from_media_type(&l.media_type)
                .is_none_or(|c| discriminant(&c) != discriminant(&wanted))
        })
        .collect()
}

/// Converts `layers` (in `store`) to `format`'s compression and makes `config`'s records name
/// the converted blobs.
pub fn convert(
    cache: &str,
    mut config: CacheConfig,
    layers: &[Layer],
    format: &ExportFormat,
    store: &ContentStore,
) -> Result<CacheConfig, CacheError> {
    let Some(compression) = format.compression else {
        return Ok(config);
    };
    let failed = |message: String| CacheError::Format {
        cache: cache.to_string(),
        message,
    };
    let threads = LayerOptions::default().threads;
    let mut converted: HashMap<String, Layer> = HashMap::new();
    for layer in layers {
        let blob = parse_digest(&layer.digest).map_err(|e| failed(e.to_string()))?;
        let diff_id = parse_digest(&layer.diff_id).map_err(|e| failed(e.to_string()))?;
        let info = recompress(store, &blob, &diff_id, compression, threads).map_err(|e| {
            CacheError::Convert {
                cache: cache.to_string(),
                source: Box::new(e),
            }
        })?;
        converted.insert(
            layer.digest.clone(),
            Layer {
                digest: info.blob.digest.to_string(),
                diff_id: layer.diff_id.clone(),
                size: info.blob.size,
                media_type: info.media_type.to_string(),
            },
        );
    }
    for entry in &mut config.records {
        if let Record::Result(state) = &mut entry.record {
            for layer in &mut state.layers {
                if let Some(new) = converted.get(&layer.digest) {
                    *layer = new.clone();
                }
            }
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::KeyBuilder;
    use crate::cache::manifest::Entry;
    use crate::state::State;

    #[test]
    fn the_layers_made_here_are_converted_and_others_with_force()
    -> Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        let store = ContentStore::open(root.path().join("store"))?;
        // An empty tar (two zero blocks), stored uncompressed.
        let tar = vec![0u8; 1024];
        let blob = store.put(&tar)?;
        let layer = |media_type: &str| Layer {
            digest: blob.digest.to_string(),
            diff_id: umstage_oci::digest::sha256(&tar).to_string(),
            size: blob.size,
            media_type: media_type.into(),
        };
        let plain = layer("application/vnd.oci.image.layer.v1.tar");
        let state = State {
            config: crate::config::scratch("linux", "amd64", None),
            layers: vec![plain.clone()],
        };
        let config = CacheConfig {
            records: vec![Entry {
                key: KeyBuilder::new("t").str("k").finish().to_hex(),
                record: Record::Result(Box::new(state)),
            }],
            explain: Default::default(),
        };
        let zstd = ExportFormat {
            compression: Some(Compression::ZSTD),
            ..ExportFormat::default()
        };
        let made = HashSet::from([plain.digest.clone()]);
        // A layer this build did not make (a hit, from the local cache or an import) keeps
        // its blob without force-compression.
        assert!(to_convert(&config, &zstd, &HashSet::new()).is_empty());
        assert!(to_convert(&config, &ExportFormat::default(), &made).is_empty());
        let forced = ExportFormat {
            force_compression: true,
            ..zstd
        };
        assert_eq!(
            to_convert(&config, &forced, &HashSet::new()),
            std::slice::from_ref(&plain)
        );
        let wanted = to_convert(&config, &zstd, &made);
        assert_eq!(wanted, std::slice::from_ref(&plain));
        let out = convert("t", config, &wanted, &zstd, &store)?;
        let blobs = out.blobs();
        assert_eq!(blobs.len(), 1);
        assert_eq!(
            blobs[0].media_type,
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
        assert_eq!(blobs[0].diff_id, plain.diff_id);
        assert!(store.contains(&parse_digest(&blobs[0].digest)?));
        assert!(to_convert(&out, &forced, &made).is_empty());
        Ok(())
    }
}
