//! The cache in a directory (`type=local`): an OCI image layout whose `index.json` names a
//! cache manifest (`manifest`), its blobs beside it. Read as a [`CacheBackend`]; written by
//! [`export`].

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use oci_spec::image::{Descriptor, ImageIndex, MediaType};
use umstage_oci::digest::{Hasher, HashingReader};
use umstage_oci::store::file_stamp;
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
    /// Blobs found to match their digest, with the stamp of their file then: each is hashed
    /// once, and the store takes it unchanged without hashing it again.
    verified: Mutex<HashMap<String, String>>,
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

/// Opens the file at `path` for reading if it is a regular file. A shared cache directory
/// may hold anything: a FIFO would block the open or the read forever, a device never end.
fn open_regular(cache: &str, path: &Path) -> Result<fs::File, CacheError> {
    umstage_oci::regular::open(path).map_err(|e| {
        if umstage_oci::regular::is_not_regular(&e) {
            CacheError::Format {
                cache: cache.into(),
                message: format!("{} is not a regular file", path.display()),
            }
        } else {
            io_err(cache, path)(e)
        }
    })
}

/// Reads the file at `path` whole, refusing one past `limit` bytes (checked while reading:
/// the file may grow after a size check).
fn read_bounded(cache: &str, path: &Path, limit: u64) -> Result<Vec<u8>, CacheError> {
    let file = open_regular(cache, path)?;
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

/// The stamp (`file_stamp`) of the file at `path` when it is a regular file of `size` bytes
/// with the digest `digest`, read in pieces and unchanged while it was; `None` when it is not.
fn hashes_to(path: &Path, digest: &Digest, size: u64) -> Option<String> {
    let file = open_regular("", path).ok()?;
    let before = file_stamp(&file.metadata().ok()?);
    if file.metadata().ok()?.len() != size {
        return None;
    }
    let mut reader = HashingReader::new(
        io::Read::take(&file, size),
        Hasher::for_digest(digest).ok()?,
    );
    io::copy(&mut reader, &mut io::sink()).ok()?;
    let after = file_stamp(&file.metadata().ok()?);
    (&reader.finish().0 == digest && before == after).then_some(after)
}

/// A blob file that `holds` hashed, read to its end; it fails there if the file changed since,
/// so the store takes no bytes that were not the ones checked.
struct Unchanged {
    file: fs::File,
    stamp: String,
}

impl io::Read for Unchanged {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if n == 0 && !buf.is_empty() && file_stamp(&self.file.metadata()?) != self.stamp {
            return Err(io::Error::other("the blob changed since it was checked"));
        }
        Ok(n)
    }
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
            records: parsed.by_key(&cache),
            carried,
            verified: Mutex::new(HashMap::new()),
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
            .is_ok_and(|v| v.contains_key(&layer.digest))
        {
            return true;
        }
        // Hashed before it is relied on: a blob that does not match is never used, and the
        // step that needs it runs instead. Streamed: a layer can be larger than memory.
        let Some(stamp) = hashes_to(&blob_path(&self.dir, &digest), &digest, layer.size) else {
            return false;
        };
        if let Ok(mut v) = self.verified.lock() {
            v.insert(layer.digest.clone(), stamp);
        }
        true
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
        let file = match open_regular(&cache, &path) {
            Ok(f) => f,
            Err(CacheError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let checked = self
            .verified
            .lock()
            .ok()
            .and_then(|v| v.get(&layer.digest).cloned());
        let metadata = file.metadata().map_err(io_err(&cache, &path))?;
        let stored = match checked {
            // Hashed by `holds`, and the same file still: not hashed a second time.
            Some(stamp) if stamp == file_stamp(&metadata) => {
                store.ingest_checked(Unchanged { file, stamp }, &digest)
            }
            // No more than the record says: a file that grew since fails its digest.
            _ => store.ingest(io::Read::take(file, layer.size), Some(&digest)),
        };
        stored.map_err(|e| CacheError::Store {
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
    let failed = |message: String| CacheError::Format {
        cache: cache.clone(),
        message,
    };
    let stored = |r: Result<umstage_oci::BlobInfo, umstage_oci::StoreError>| {
        r.map_err(|e| CacheError::Store {
            cache: cache.clone(),
            source: Box::new(e),
        })
    };
    let config_bytes = umstage_oci::to_canonical_vec(config)
        .map_err(|e| failed(format!("serialising the records: {e}")))?;
    // Into the store first: the layout is written from there, and the store digests them.
    let config_blob = stored(store.put(&config_bytes))?;
    let layers = config.blobs();
    let built = manifest::manifest(
        &cache,
        &config_blob.digest,
        config_blob.size,
        &layers,
        format,
    )?;
    let manifest_blob = stored(store.put(&built.bytes))?;
    let mut descriptor = Descriptor::new(
        built.media_type,
        manifest_blob.size,
        manifest_blob.digest.clone(),
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
    let index_bytes = umstage_oci::to_canonical_vec(&index)
        .map_err(|e| failed(format!("serialising the index: {e}")))?;
    let mut blobs = Vec::with_capacity(layers.len() + 2);
    for layer in &layers {
        blobs.push(parse_digest(&layer.digest).map_err(|e| failed(e.to_string()))?);
    }
    blobs.push(config_blob.digest);
    blobs.push(manifest_blob.digest.clone());
    let files: [(&str, &[u8]); 2] = [
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        ("index.json", &index_bytes),
    ];
    umstage_oci::archive::write_layout(store, &blobs, &files, dir).map_err(|e| {
        CacheError::Layout {
            cache: cache.clone(),
            source: Box::new(e),
        }
    })?;
    Ok(manifest_blob.digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::KeyBuilder;
    use crate::state::State;

    /// A cache of one record needing one layer, exported from a store in `root` to
    /// `root/cache`: the store, the layer, the key and the record.
    fn one_layer_cache(
        root: &Path,
    ) -> Result<(ContentStore, Layer, CacheKey, Record), Box<dyn std::error::Error>> {
        let store = ContentStore::open(root.join("store"))?;
        let blob = store.put(b"layer bytes")?;
        let layer = Layer {
            digest: blob.digest.to_string(),
            diff_id: blob.digest.to_string(),
            size: blob.size,
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        };
        let key = KeyBuilder::new("t").str("k").finish();
        let mut image = crate::config::scratch("linux", "amd64", None);
        image.rootfs.diff_ids.push(blob.digest.clone());
        let record = Record::Result(Box::new(State {
            config: image,
            layers: vec![layer.clone()],
        }));
        let config = CacheConfig {
            records: vec![manifest::Entry {
                key: key.to_hex(),
                record: record.clone(),
            }],
            explain: Carried::default(),
        };
        export(
            &root.join("cache"),
            &config,
            &store,
            &ExportFormat::default(),
        )?;
        Ok((store, layer, key, record))
    }

    #[test]
    fn an_exported_directory_reads_back_and_a_corrupt_blob_is_a_miss()
    -> Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        let (_, layer, key, record) = one_layer_cache(root.path())?;
        let blob = parse_digest(&layer.digest)?;
        let dir = root.path().join("cache");
        let cache = LayoutCache::open(&dir, None)?;
        assert_eq!(cache.lookup(&key), Some(record));
        let other = ContentStore::open(root.path().join("other"))?;
        assert!(cache.fetch(&layer, &other)?);
        assert!(other.contains(&blob));

        fs::write(blob_path(&dir, &blob), b"tampered")?;
        let reopened = LayoutCache::open(&dir, None)?;
        assert_eq!(reopened.lookup(&key), None);
        assert!(LayoutCache::open(&root.path().join("none"), None).is_err());
        Ok(())
    }

    #[test]
    fn a_blob_changed_after_its_check_is_not_fetched() -> Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        let (_, layer, key, _) = one_layer_cache(root.path())?;
        let blob = parse_digest(&layer.digest)?;
        let dir = root.path().join("cache");
        let cache = LayoutCache::open(&dir, None)?;
        assert!(cache.lookup(&key).is_some());
        // Past the filesystem's timestamp tick, as any later change would be.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(blob_path(&dir, &blob), b"tampered!!!")?;
        let other = ContentStore::open(root.path().join("other"))?;
        assert!(cache.fetch(&layer, &other).is_err());
        assert!(!other.contains(&blob));
        Ok(())
    }
}
