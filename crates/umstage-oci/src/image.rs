//! Images in the content store: manifests, indexes, platform selection, and writing new images.

use std::collections::{BTreeMap, HashMap};

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use serde_json::Value;

use crate::config::ImageConfig;
use crate::digest::Digest;
use crate::json::to_canonical_vec;
use crate::store::{BlobInfo, ContentStore, StoreError};

/// Media types umstage reads and writes, besides those `oci-spec` names.
pub mod media {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// Docker schema 2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker uncompressed layer.
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
    /// Docker gzip layer.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Every manifest and index type, for registry `Accept` headers.
    pub const MANIFEST_TYPES: [&str; 4] = [
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST,
        DOCKER_MANIFEST_LIST,
    ];
}

/// Largest manifest, index or config accepted.
pub const MAX_JSON_SIZE: u64 = 8 << 20;

/// Reading or writing an image failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The content store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A manifest, index or config is not valid JSON of the expected shape.
    #[error("{what} {digest}: invalid JSON: {source}")]
    Json {
        /// Manifest, index or config.
        what: &'static str,
        /// Its digest.
        digest: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The manifest kind is not supported.
    #[error("{digest}: unsupported manifest ({reason})")]
    Unsupported {
        /// The manifest digest.
        digest: Digest,
        /// Why.
        reason: String,
    },
    /// No manifest in an index matches the requested platform.
    #[error("no image for platform {wanted} in index {digest} (it has: {available})")]
    NoPlatform {
        /// The index.
        digest: Digest,
        /// The platform asked for.
        wanted: String,
        /// The platforms present.
        available: String,
    },
    /// The image cannot be expressed in the requested format.
    #[error("{0}")]
    Format(String),
}

type Result<T> = std::result::Result<T, ImageError>;

/// A target platform (`os/arch[/variant]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// Architecture, e.g. `amd64`.
    pub architecture: String,
    /// Variant, e.g. `v8`.
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(v) => write!(f, "/{v}"),
            None => Ok(()),
        }
    }
}

impl Default for Platform {
    fn default() -> Self {
        Self {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

/// A platform that is not `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {0:?} (expected os/arch[/variant])")]
pub struct PlatformError(String);

impl std::str::FromStr for Platform {
    type Err = PlatformError;

    fn from_str(text: &str) -> std::result::Result<Self, PlatformError> {
        let parts: Vec<&str> = text.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Self {
                os: (*os).into(),
                architecture: (*arch).into(),
                variant: None,
            }),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Ok(Self {
                    os: (*os).into(),
                    architecture: (*arch).into(),
                    variant: Some((*variant).into()),
                })
            }
            _ => Err(PlatformError(text.to_owned())),
        }
    }
}

impl Platform {
    fn matches(&self, other: &oci_spec::image::Platform) -> bool {
        let variant = other
            .variant()
            .as_deref()
            .filter(|v| !(other.architecture().to_string() == "arm64" && *v == "v8"));
        let wanted = self
            .variant
            .as_deref()
            .filter(|v| !(self.architecture == "arm64" && *v == "v8"));
        other.os().to_string() == self.os
            && other.architecture().to_string() == self.architecture
            && (wanted.is_none() || wanted == variant)
    }
}

/// Whether a manifest or index is OCI or Docker flavoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ManifestFormat {
    /// OCI media types (the default).
    #[default]
    Oci,
    /// Docker schema 2 media types.
    Docker,
}

/// A manifest-like blob: a single-platform manifest or an index of them.
#[derive(Debug, Clone, PartialEq)]
pub enum Manifest {
    /// An image manifest (OCI or Docker schema 2).
    Image(Box<ImageManifest>),
    /// An index or Docker manifest list.
    Index(Box<ImageIndex>),
}

fn json_err(
    what: &'static str,
    digest: &Digest,
) -> impl FnOnce(serde_json::Error) -> ImageError + use<> {
    let digest = digest.to_string();
    move |source| ImageError::Json {
        what,
        digest,
        source,
    }
}

/// Parses a manifest or index blob (OCI or Docker schema 2).
pub fn parse_manifest(bytes: &[u8], digest: &Digest) -> Result<Manifest> {
    let value: Value = serde_json::from_slice(bytes).map_err(json_err("manifest", digest))?;
    if value.get("schemaVersion").and_then(Value::as_u64) == Some(1) {
        return Err(ImageError::Unsupported {
            digest: digest.clone(),
            reason: "Docker schema 1 manifests are obsolete".into(),
        });
    }
    let media_type = value.get("mediaType").and_then(Value::as_str).unwrap_or("");
    let is_index = match media_type {
        media::OCI_INDEX | media::DOCKER_MANIFEST_LIST => true,
        media::OCI_MANIFEST | media::DOCKER_MANIFEST => false,
        "" => value.get("manifests").is_some(),
        other => {
            return Err(ImageError::Unsupported {
                digest: digest.clone(),
                reason: format!("media type {other}"),
            });
        }
    };
    if is_index {
        Ok(Manifest::Index(
            serde_json::from_value(value).map_err(json_err("index", digest))?,
        ))
    } else {
        Ok(Manifest::Image(
            serde_json::from_value(value).map_err(json_err("manifest", digest))?,
        ))
    }
}

/// Picks the manifest for `platform` from an index.
pub fn select_platform<'a>(
    index: &'a ImageIndex,
    digest: &Digest,
    platform: &Platform,
) -> Result<&'a Descriptor> {
    index
        .manifests()
        .iter()
        .find(|d| d.platform().as_ref().is_some_and(|p| platform.matches(p)))
        .ok_or_else(|| ImageError::NoPlatform {
            digest: digest.clone(),
            wanted: platform.to_string(),
            available: index
                .manifests()
                .iter()
                .filter_map(|d| d.platform().as_ref())
                .map(|p| match p.variant() {
                    Some(v) => format!("{}/{}/{v}", p.os(), p.architecture()),
                    None => format!("{}/{}", p.os(), p.architecture()),
                })
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// A single-platform image whose manifest and config are in the content store.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Descriptor of the manifest.
    pub descriptor: Descriptor,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The config.
    pub config: ImageConfig,
}

impl Image {
    /// Loads the image `digest` names from the store, choosing `platform` if it is an index.
    pub fn load(store: &ContentStore, digest: &Digest, platform: &Platform) -> Result<Self> {
        let mut digest = digest.clone();
        for _ in 0..4 {
            let bytes = store.read(&digest, MAX_JSON_SIZE)?;
            match parse_manifest(&bytes, &digest)? {
                Manifest::Index(index) => {
                    digest = select_platform(&index, &digest, platform)?.digest().clone()
                }
                Manifest::Image(manifest) => {
                    let media_type = manifest
                        .media_type()
                        .clone()
                        .unwrap_or(MediaType::ImageManifest);
                    let descriptor =
                        Descriptor::new(media_type, bytes.len() as u64, digest.clone());
                    let config_digest = manifest.config().digest().clone();
                    let config_bytes = store.read(&config_digest, MAX_JSON_SIZE)?;
                    let config: ImageConfig = serde_json::from_slice(&config_bytes)
                        .map_err(json_err("config", &config_digest))?;
                    let (diff_ids, layers) =
                        (config.rootfs.diff_ids.len(), manifest.layers().len());
                    if diff_ids != layers {
                        return Err(ImageError::Unsupported {
                            digest,
                            reason: format!(
                                "its config lists {diff_ids} diff ids but its manifest {layers} layer(s)"
                            ),
                        });
                    }
                    return Ok(Self {
                        descriptor,
                        manifest: *manifest,
                        config,
                    });
                }
            }
        }
        Err(ImageError::Unsupported {
            digest,
            reason: "indexes nested too deeply".into(),
        })
    }

    /// The layer descriptors, bottom first.
    pub fn layers(&self) -> &[Descriptor] {
        self.manifest.layers()
    }

    /// The manifest's digest.
    pub fn digest(&self) -> &Digest {
        self.descriptor.digest()
    }

    /// Whether the manifest uses Docker media types.
    pub fn format(&self) -> ManifestFormat {
        if self.descriptor.media_type().to_string() == media::DOCKER_MANIFEST {
            ManifestFormat::Docker
        } else {
            ManifestFormat::Oci
        }
    }
}

/// The media type of `layer` in a manifest of `format` (a zstd layer has none in Docker's).
pub fn layer_media_type(layer: &Descriptor, format: ManifestFormat) -> Result<MediaType> {
    let current = layer.media_type().to_string();
    let compression = crate::compress::Compression::from_media_type(&current);
    Ok(match (format, compression) {
        (ManifestFormat::Oci, Some(c)) => c.oci_media_type(),
        (ManifestFormat::Docker, Some(crate::compress::Compression::None)) => {
            MediaType::Other(media::DOCKER_LAYER.into())
        }
        (ManifestFormat::Docker, Some(crate::compress::Compression::Gzip { .. })) => {
            MediaType::Other(media::DOCKER_LAYER_GZIP.into())
        }
        (ManifestFormat::Docker, Some(crate::compress::Compression::Zstd { .. })) => {
            return Err(ImageError::Format(
                "zstd layers cannot be written in Docker format; use OCI or gzip".into(),
            ));
        }
        (_, None) => layer.media_type().clone(),
    })
}

/// Writes `config` and a manifest over `layers` (already in the store) and returns the image.
pub fn write_image(
    store: &ContentStore,
    config: &ImageConfig,
    layers: &[Descriptor],
    format: ManifestFormat,
    annotations: &BTreeMap<String, String>,
) -> Result<Image> {
    let config_blob = put_json(store, config)?;
    let (manifest, manifest_type) = build_manifest(&config_blob, layers, format, annotations)?;
    let BlobInfo { digest, size } = put_json(store, &manifest)?;
    Ok(Image {
        descriptor: Descriptor::new(manifest_type, size, digest),
        manifest,
        config: config.clone(),
    })
}

/// Writes a manifest over a stored config blob and stored layers; returns its descriptor.
pub fn write_manifest(
    store: &ContentStore,
    config_blob: &BlobInfo,
    layers: &[Descriptor],
    format: ManifestFormat,
    annotations: &BTreeMap<String, String>,
) -> Result<Descriptor> {
    let (manifest, manifest_type) = build_manifest(config_blob, layers, format, annotations)?;
    let BlobInfo { digest, size } = put_json(store, &manifest)?;
    Ok(Descriptor::new(manifest_type, size, digest))
}

fn build_manifest(
    config_blob: &BlobInfo,
    layers: &[Descriptor],
    format: ManifestFormat,
    annotations: &BTreeMap<String, String>,
) -> Result<(ImageManifest, MediaType)> {
    let (manifest_type, config_type) = match format {
        ManifestFormat::Oci => (MediaType::ImageManifest, MediaType::ImageConfig),
        ManifestFormat::Docker => (
            MediaType::Other(media::DOCKER_MANIFEST.into()),
            MediaType::Other(media::DOCKER_CONFIG.into()),
        ),
    };
    let mut layer_descriptors = Vec::with_capacity(layers.len());
    for layer in layers {
        let mut d = layer.clone();
        d.set_media_type(layer_media_type(layer, format)?);
        layer_descriptors.push(d);
    }
    let manifest_annotations =
        (!annotations.is_empty() && format == ManifestFormat::Oci).then(|| {
            annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>()
        });
    let mut builder = oci_spec::image::ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(manifest_type.clone())
        .config(Descriptor::new(
            config_type,
            config_blob.size,
            config_blob.digest.clone(),
        ))
        .layers(layer_descriptors);
    if let Some(annotations) = manifest_annotations {
        builder = builder.annotations(annotations);
    }
    let manifest = builder
        .build()
        .map_err(|e| ImageError::Format(format!("building the manifest: {e}")))?;
    Ok((manifest, manifest_type))
}

impl Image {
    /// The manifest's descriptor with the platform taken from the config, as an index lists it.
    pub fn platform_descriptor(&self) -> Descriptor {
        let mut descriptor = self.descriptor.clone();
        if let Ok(mut platform) = oci_spec::image::PlatformBuilder::default()
            .os(self.config.os.as_str())
            .architecture(self.config.architecture.as_str())
            .build()
        {
            platform.set_variant(self.config.variant.clone());
            descriptor.set_platform(Some(platform));
        }
        descriptor
    }
}

/// Writes an OCI index over `images` (one per platform) and returns its descriptor.
pub fn write_index(store: &ContentStore, images: &[Image]) -> Result<Descriptor> {
    let mut index = ImageIndex::default();
    index.set_media_type(Some(MediaType::ImageIndex));
    index.set_manifests(images.iter().map(Image::platform_descriptor).collect());
    let BlobInfo { digest, size } = put_json(store, &index)?;
    Ok(Descriptor::new(MediaType::ImageIndex, size, digest))
}

/// Stores `value` as canonical JSON.
pub fn put_json<T: serde::Serialize>(store: &ContentStore, value: &T) -> Result<BlobInfo> {
    let bytes = to_canonical_vec(value)
        .map_err(|e| ImageError::Format(format!("serialising JSON: {e}")))?;
    Ok(store.put(&bytes)?)
}

impl crate::layer::LayerInfo {
    /// The descriptor of this layer for a manifest.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            self.media_type.clone(),
            self.blob.size,
            self.blob.digest.clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_config_whose_diff_ids_do_not_match_the_layers_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let layer = store.put(b"not really a layer").unwrap();
        let descriptor = Descriptor::new(MediaType::ImageLayerGzip, layer.size, layer.digest);
        let mut config = ImageConfig::default();
        // Two diff ids for one layer: no reader can apply this image.
        config.rootfs.diff_ids = vec![
            store.put(b"a").unwrap().digest,
            store.put(b"b").unwrap().digest,
        ];
        let written = write_image(
            &store,
            &config,
            &[descriptor],
            ManifestFormat::Oci,
            &BTreeMap::new(),
        )
        .unwrap();
        let err = Image::load(&store, written.digest(), &Platform::default()).unwrap_err();
        assert!(
            err.to_string().contains("2 diff ids") && err.to_string().contains("1 layer"),
            "{err}"
        );
    }
}
