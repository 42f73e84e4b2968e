//! The cache in a directory (`type=local`): an OCI image layout whose `index.json` names a
//! cache manifest (`manifest`), its blobs beside it. Read as a [`CacheBackend`]; written by
//! [`export`].

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use oci_spec::image::{Descriptor, ImageIndex, MediaType};
use umstage_oci::digest::{Hasher, HashingReader};
use umstage_oci::{ContentStore, Digest};

use super::carried::Carried;
use super::manifest::{self, CacheConfig};
use super::spec::ExportFormat;
use super::{CacheBackend, CacheError, CacheKey, Record};
use crate::state::{Layer, parse_digest};

/// The annotation BuildKit's local cache names its manifest with.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// An index or manifest larger than this is refused.
const MAX_JSON: u64 = 4 << 20;

/// A cache directory being read.
pub struct LayoutCache {
    dir: PathBuf,
    records: BTreeMap<CacheKey, Record>,
    carried: Carried,
    /// Blobs found to match their digest, so each is hashed once.
    verified: Mutex<HashSet<String>>,
}

fn io_err(cache: &str, path: &Path) -> impl FnOnce(io::Error) -> CacheError + use<> {
    let cache = cache.to_string();
    let path = path.to_path_buf();
    move |source| CacheError::Io {
        cache,
        path,
        source,
    }
}

fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs")
        .join(digest.algorithm().as_ref())
        .join(digest.digest())
}

/// Reads the file at `path` whole, refusing one past `limit` bytes (checked while reading:
/// the file may grow after a size check).
fn read_bounded(cache: &str, path: &Path, limit: u64) -> Result<Vec<u8>, CacheError> {
    let file = fs::File::open(path).map_err(io_err(cache, path))?;
    let mut bytes = Vec::new();
    io::Read::read_to_end(
        &mut io::Read::take(file, limit.saturating_add(1)),
        &mut bytes,
    )
    .map_err(io_err(cache, path))?;
    if bytes.len() as u64 > limit {
        return Err(CacheError::Format {
            cache: cache.into(),
            message: format!("{} has more than the {limit} bytes allowed", path.display()),
        });
    }
    Ok(bytes)
}

/// Reads the blob `digest` of the cache in `dir` whole, refusing one past `limit` bytes or
/// one that does not match its digest.
fn read_verified(
    cache: &str,
    dir: &Path,
    digest: &Digest,
    limit: u64,
) -> Result<Vec<u8>, CacheError> {
    let bytes = read_bounded(cache, &blob_path(dir, digest), limit)?;
    let actual = umstage_oci::digest::sha256(&bytes);
    if &actual != digest {
        return Err(CacheError::Format {
            cache: cache.into(),
            message: format!("blob {digest} does not match its digest (it is {actual})"),
        });
    }
    Ok(bytes)
}

/// Whether the file at `path` has the digest `digest`, read in pieces.
fn hashes_to(path: &Path, digest: &Digest) -> bool {
    let (Ok(file), Ok(hasher)) = (fs::File::open(path), Hasher::for_digest(digest)) else {
        return false;
    };
    let mut reader = HashingReader::new(file, hasher);
    io::copy(&mut reader, &mut io::sink()).is_ok() && &reader.finish().0 == digest
}

impl LayoutCache {
    /// Opens the cache in `dir`: the manifest `digest` names, or else the one the index
    /// calls `latest`, or else its only one.
    pub fn open(dir: &Path, digest: Option<&str>) -> Result<Self, CacheError> {
        let cache = dir.display().to_string();
        let format = |message: String| CacheError::Format {
            cache: cache.clone(),
            message,
        };
        let index_path = dir.join("index.json");
        let bytes = read_bounded(&cache, &index_path, MAX_JSON)?;
        let index: ImageIndex = serde_json::from_slice(&bytes)
            .map_err(|e| format(format!("index.json is not an OCI index: {e}")))?;
        let manifests = index.manifests();
        let chosen = match digest {
            Some(d) => manifests.iter().find(|m| m.digest().to_string() == d),
            None => manifests
                .iter()
                .find(|m| {
                    m.annotations()
                        .as_ref()
                        .and_then(|a| a.get(REF_NAME))
                        .is_some_and(|n| n == "latest")
                })
                .or_else(|| manifests.first().filter(|_| manifests.len() == 1)),
        }
        .ok_or_else(|| format("index.json names no cache manifest to use".into()))?;
        let manifest_bytes = read_verified(&cache, dir, chosen.digest(), MAX_JSON)?;
        let (config, _) = manifest::config_of(&cache, &manifest_bytes)?;
        let config_bytes = read_verified(&cache, dir, config.digest(), manifest::MAX_CONFIG)?;
        let mut parsed = manifest::parse_config(&cache, &config_bytes)?;
        let carried = std::mem::take(&mut parsed.explain);
        Ok(LayoutCache {
            dir: dir.to_path_buf(),
            records: parsed.by_key(),
            carried,
            verified: Mutex::new(HashSet::new()),
        })
    }

    /// Whether the directory holds `layer`'s blob, intact.
    fn holds(&self, layer: &Layer) -> bool {
        let Ok(digest) = parse_digest(&layer.digest) else {
            return false;
        };
        if self
            .verified
            .lock()
            .is_ok_and(|v| v.contains(&layer.digest))
        {
            return true;
        }
        // Hashed before it is relied on: a blob that does not match is never used, and the
        // step that needs it runs instead. Streamed: a layer can be larger than memory.
        let intact = hashes_to(&blob_path(&self.dir, &digest), &digest);
        if intact && let Ok(mut v) = self.verified.lock() {
            v.insert(layer.digest.clone());
        }
        intact
    }
}

impl CacheBackend for LayoutCache {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    fn lookup(&self, key: &CacheKey) -> Option<Record> {
        let record = self.records.get(key)?;
        record
            .needs()
            .iter()
            .all(|l| self.holds(l))
            .then(|| record.clone())
    }

    fn record(&self, _key: &CacheKey, _record: &Record) -> Result<(), CacheError> {
        // An imported directory is read only; `export` writes one.
        Ok(())
    }

    fn carried(&self) -> Option<&Carried> {
        Some(&self.carried)
    }

    fn fetch(&self, layer: &Layer, store: &ContentStore) -> Result<bool, CacheError> {
        let cache = self.describe();
        let digest = parse_digest(&layer.digest).map_err(|e| CacheError::Format {
            cache: cache.clone(),
            message: e.to_string(),
        })?;
        let path = blob_path(&self.dir, &digest);
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err(&cache, &path)(e)),
        };
        store
            .ingest(file, Some(&digest))
            .map_err(|e| CacheError::Store {
                cache,
                source: Box::new(e),
            })?;
        Ok(true)
    }
}

/// Writes `config`'s records and the blobs they need (from `store`) as the cache in `dir`,
/// its manifest in `format`, replacing the manifest it names; blobs already there are kept.
/// The index is written last, so a reader never sees one naming a missing blob.
pub fn export(
    dir: &Path,
    config: &CacheConfig,
    store: &ContentStore,
    format: &ExportFormat,
) -> Result<Digest, CacheError> {
    let cache = dir.display().to_string();
    let blobs_dir = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs_dir).map_err(io_err(&cache, &blobs_dir))?;
    let store_err = |e| CacheError::Store {
        cache: cache.clone(),
        source: Box::new(e),
    };
    for layer in config.blobs() {
        let digest = parse_digest(&layer.digest).map_err(|e| CacheError::Format {
            cache: cache.clone(),
            message: e.to_string(),
        })?;
        let path = blob_path(dir, &digest);
        if path.is_file() {
            continue;
        }
        let mut blob = store.open_blob(&digest).map_err(store_err)?;
        write_atomic(&cache, &path, |f| io::copy(&mut blob, f).map(drop))?;
    }
    let config_bytes = umstage_oci::to_canonical_vec(config).map_err(|e| CacheError::Format {
        cache: cache.clone(),
        message: format!("serialising the records: {e}"),
    })?;
    let config_digest = put(&cache, dir, &config_bytes)?;
    let built = manifest::manifest(
        &cache,
        &config_digest,
        config_bytes.len() as u64,
        &config.blobs(),
        format,
    )?;
    let manifest_digest = put(&cache, dir, &built.bytes)?;
    let mut descriptor = Descriptor::new(
        built.media_type,
        built.bytes.len() as u64,
        manifest_digest.clone(),
    );
    if format.image_manifest {
        descriptor.set_artifact_type(Some(MediaType::from(manifest::ARTIFACT_TYPE)));
    }
    descriptor.set_annotations(Some(
        [(REF_NAME.to_string(), "latest".to_string())]
            .into_iter()
            .collect(),
    ));
    let mut index = ImageIndex::default();
    index.set_media_type(Some(MediaType::ImageIndex));
    index.set_manifests(vec![descriptor]);
    let index_bytes = umstage_oci::to_canonical_vec(&index).map_err(|e| CacheError::Format {
        cache: cache.clone(),
        message: format!("serialising the index: {e}"),
    })?;
    write_atomic(&cache, &dir.join("oci-layout"), |f| {
        io::Write::write_all(f, br#"{"imageLayoutVersion":"1.0.0"}"#)
    })?;
    write_atomic(&cache, &dir.join("index.json"), |f| {
        io::Write::write_all(f, &index_bytes)
    })?;
    Ok(manifest_digest)
}

/// Stores `bytes` as a blob of the cache in `dir`; returns its digest.
fn put(cache: &str, dir: &Path, bytes: &[u8]) -> Result<Digest, CacheError> {
    let digest = umstage_oci::digest::sha256(bytes);
    let path = blob_path(dir, &digest);
    if !path.is_file() {
        write_atomic(cache, &path, |f| io::Write::write_all(f, bytes))?;
    }
    Ok(digest)
}

/// Writes `path` through a temporary file renamed into place.
fn write_atomic(
    cache: &str,
    path: &Path,
    write: impl FnOnce(&mut fs::File) -> io::Result<()>,
) -> Result<(), CacheError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::NamedTempFile::new_in(parent).map_err(io_err(cache, parent))?;
    write(temp.as_file_mut()).map_err(io_err(cache, path))?;
    temp.as_file().sync_all().map_err(io_err(cache, path))?;
    temp.persist(path)
        .map_err(|e| io_err(cache, path)(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::KeyBuilder;
    use crate::state::State;

    #[test]
    fn an_exported_directory_reads_back_and_a_corrupt_blob_is_a_miss()
    -> Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        let store = ContentStore::open(root.path().join("store"))?;
        let blob = store.put(b"layer bytes")?;
        let layer = Layer {
            digest: blob.digest.to_string(),
            diff_id: blob.digest.to_string(),
            size: blob.size,
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        };
        let key = KeyBuilder::new("t").str("k").finish();
        let record = Record::Result(Box::new(State {
            config: crate::config::scratch("linux", "amd64", None),
            layers: vec![layer.clone()],
        }));
        let config = CacheConfig {
            records: vec![manifest::Entry {
                key: key.to_hex(),
                record: record.clone(),
            }],
            explain: Carried::default(),
        };
        let dir = root.path().join("cache");
        export(&dir, &config, &store, &ExportFormat::default())?;
        let cache = LayoutCache::open(&dir, None)?;
        assert_eq!(cache.lookup(&key), Some(record));
        let other = ContentStore::open(root.path().join("other"))?;
        assert!(cache.fetch(&layer, &other)?);
        assert!(other.contains(&blob.digest));

        fs::write(blob_path(&dir, &blob.digest), b"tampered")?;
        let reopened = LayoutCache::open(&dir, None)?;
        assert_eq!(reopened.lookup(&key), None);
        assert!(LayoutCache::open(&root.path().join("none"), None).is_err());
        Ok(())
    }
}
