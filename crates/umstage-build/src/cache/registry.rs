//! The cache in a registry (`type=registry`): the cache manifest of `manifest` pushed next to
//! images; or an image pushed with an inline cache (`type=inline`), whose config carries the
//! records of its own steps and whose layers are the blobs they need. Read as a
//! [`CacheBackend`], whose blobs are downloaded only when a step or an output needs them.

use std::collections::{BTreeMap, HashMap};

use oci_spec::image::{Descriptor, MediaType};
use umstage_oci::compress::Compression;
use umstage_oci::reference::Reference;
use umstage_oci::registry::{RegistryClient, block_on};
use umstage_oci::{ContentStore, ImageConfig};

use super::carried::Carried;
use super::manifest::{self, CacheConfig};
use super::spec::ExportFormat;
use super::{CacheBackend, CacheError, CacheKey, Record};
use crate::state::{Layer, parse_digest};

/// The key of an image config that holds its inline cache.
pub const INLINE_KEY: &str = "umstage.cache.v1";

/// A cache read from a registry.
pub struct RegistryCache {
    name: String,
    records: BTreeMap<CacheKey, Record>,
    carried: Carried,
    /// The blobs the manifest lists: a record needing another is not used.
    blobs: ImageBlobs,
}

fn registry_err(cache: &str, e: impl std::fmt::Display) -> CacheError {
    CacheError::Registry {
        cache: cache.to_string(),
        message: e.to_string(),
    }
}

impl RegistryCache {
    /// Reads the cache `name` names: a cache manifest, or an image with an inline cache.
    pub fn open(
        client: &RegistryClient,
        name: &str,
        store: &ContentStore,
    ) -> Result<Self, CacheError> {
        let reference = umstage_oci::reference::parse(name).map_err(|e| registry_err(name, e))?;
        let format = |message: String| CacheError::Format {
            cache: name.to_string(),
            message,
        };
        let store_err = |e| CacheError::Store {
            cache: name.to_string(),
            source: Box::new(e),
        };
        let digest = block_on(client.pull_manifest(store, &reference))
            .map_err(|e| registry_err(name, e))?
            .map_err(|e| registry_err(name, e))?;
        let bytes = store
            .read(&digest, umstage_oci::image::MAX_JSON_SIZE)
            .map_err(store_err)?;
        let (config, layers) = manifest::read(name, &bytes)?;
        let config = &config;
        let inline = config.media_type().to_string() != manifest::CONFIG_MEDIA_TYPE;
        let limit = if inline {
            umstage_oci::image::MAX_JSON_SIZE
        } else {
            manifest::MAX_CONFIG
        };
        if config.size() > limit {
            return Err(format(format!(
                "its config of {} bytes is past the {limit} allowed",
                config.size()
            )));
        }
        block_on(client.pull_blobs(store, &reference, std::slice::from_ref(config)))
            .map_err(|e| registry_err(name, e))?
            .map_err(|e| registry_err(name, e))?;
        let config_bytes = store.read(config.digest(), limit).map_err(store_err)?;
        let mut records = if inline {
            let image: ImageConfig = serde_json::from_slice(&config_bytes)
                .map_err(|e| format(format!("its config is not an image config: {e}")))?;
            let value = image
                .extra
                .get(INLINE_KEY)
                .ok_or_else(|| format("the image has no inline cache".into()))?;
            serde_json::from_value::<CacheConfig>(value.clone())
                .map_err(|e| format(format!("unreadable inline cache: {e}")))?
        } else {
            manifest::parse_config(name, &config_bytes)?
        };
        let carried = std::mem::take(&mut records.explain);
        Ok(RegistryCache {
            name: name.to_string(),
            records: records.by_key(name),
            carried,
            blobs: ImageBlobs::new(client, reference, &layers),
        })
    }
}

impl RegistryCache {
    /// Where the cache is.
    pub fn reference(&self) -> &Reference {
        &self.blobs.reference
    }
}

impl CacheBackend for RegistryCache {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn lookup(&self, key: &CacheKey) -> Option<Record> {
        let record = self.records.get(key)?;
        record
            .needs()
            .iter()
            .all(|l| {
                // The manifest's descriptor is what the download is checked against: a record
                // that disagrees with it would export a manifest its blob does not match. Docker's
                // and the OCI's names for the same compression agree (`oci-mediatypes=false`).
                self.blobs.blobs.get(&l.digest).is_some_and(|d| {
                    let compression = Compression::from_media_type(d.media_type().as_ref());
                    d.size() == l.size
                        && compression.is_some()
                        && compression == Compression::from_media_type(&l.media_type)
                })
            })
            .then(|| record.clone())
    }

    fn record(&self, _key: &CacheKey, _record: &Record) -> Result<(), CacheError> {
        // Read only: the build's records are pushed by `export` once it is done.
        Ok(())
    }

    fn carried(&self) -> Option<&Carried> {
        Some(&self.carried)
    }

    fn fetch(&self, layer: &Layer, store: &ContentStore) -> Result<bool, CacheError> {
        self.blobs.fetch(layer, store)
    }

    fn fetch_all(&self, layers: &[Layer], store: &ContentStore) -> Result<(), CacheError> {
        self.blobs.fetch_all(layers, store)
    }
}

/// A base image's layers in its registry, fetched when a step or an output needs them: a
/// build whose every step hits downloads none.
pub struct ImageBlobs {
    reference: Reference,
    client: RegistryClient,
    blobs: HashMap<String, Descriptor>,
}

impl ImageBlobs {
    /// The layers `blobs` of the image `reference`.
    pub fn new(client: &RegistryClient, reference: Reference, blobs: &[Descriptor]) -> Self {
        ImageBlobs {
            reference,
            client: client.clone(),
            blobs: blobs
                .iter()
                .map(|d| (d.digest().to_string(), d.clone()))
                .collect(),
        }
    }
}

impl CacheBackend for ImageBlobs {
    fn describe(&self) -> String {
        self.reference.whole()
    }

    fn lookup(&self, _key: &CacheKey) -> Option<Record> {
        None
    }

    fn record(&self, _key: &CacheKey, _record: &Record) -> Result<(), CacheError> {
        Ok(())
    }

    fn fetch(&self, layer: &Layer, store: &ContentStore) -> Result<bool, CacheError> {
        download(
            &self.client,
            &self.reference,
            &self.blobs,
            std::slice::from_ref(layer),
            store,
        )
    }

    fn fetch_all(&self, layers: &[Layer], store: &ContentStore) -> Result<(), CacheError> {
        download(&self.client, &self.reference, &self.blobs, layers, store).map(|_| ())
    }
}

/// Downloads those of `layers` that `blobs` lists from `reference` into `store`, in
/// parallel; each is checked against its digest and size as it arrives, and one that does not
/// match is never stored. Whether every one was listed.
fn download(
    client: &RegistryClient,
    reference: &Reference,
    blobs: &HashMap<String, Descriptor>,
    layers: &[Layer],
    store: &ContentStore,
) -> Result<bool, CacheError> {
    let wanted: Vec<Descriptor> = layers
        .iter()
        .filter_map(|l| blobs.get(&l.digest).cloned())
        .collect();
    let name = reference.whole();
    block_on(client.pull_blobs(store, reference, &wanted))
        .map_err(|e| registry_err(&name, e))?
        .map_err(|e| registry_err(&name, e))?;
    Ok(wanted.len() == layers.len())
}

/// Pushes `config`'s records and the blobs they need as the cache manifest `name`, in
/// `format`: blobs the registry has are not sent again, those `mount_from` (a repository of
/// the same registry) has are mounted, and only the others are read from `store` (where they
/// must be then).
pub fn export(
    client: &RegistryClient,
    name: &str,
    config: &CacheConfig,
    store: &ContentStore,
    mount_from: Option<&Reference>,
    format: &ExportFormat,
) -> Result<(), CacheError> {
    let reference = umstage_oci::reference::parse(name).map_err(|e| registry_err(name, e))?;
    let config_blob =
        umstage_oci::image::put_json(store, config).map_err(|e| CacheError::Format {
            cache: name.to_string(),
            message: e.to_string(),
        })?;
    let blobs = config.blobs();
    let built = manifest::manifest(name, &config_blob.digest, config_blob.size, &blobs, format)?;
    let manifest_blob = store.put(&built.bytes).map_err(|e| CacheError::Store {
        cache: name.to_string(),
        source: Box::new(e),
    })?;
    let mut descriptors = vec![Descriptor::new(
        MediaType::from(manifest::CONFIG_MEDIA_TYPE),
        config_blob.size,
        config_blob.digest.clone(),
    )];
    for layer in &blobs {
        let digest = parse_digest(&layer.digest).map_err(|e| CacheError::Format {
            cache: name.to_string(),
            message: e.to_string(),
        })?;
        descriptors.push(Descriptor::new(
            MediaType::from(layer.media_type.as_str()),
            layer.size,
            digest,
        ));
    }
    let manifest_descriptor =
        Descriptor::new(built.media_type, manifest_blob.size, manifest_blob.digest);
    block_on(client.push_manifest(
        store,
        &manifest_descriptor,
        &descriptors,
        &reference,
        mount_from,
    ))
    .map_err(|e| registry_err(name, e))?
    .map_err(|e| registry_err(name, e))
}
