//! Image archives and layouts: writing the default `image.tar` (an OCI layout that also carries
//! Docker's `manifest.json` and `repositories`), OCI layout directories, and importing OCI
//! layouts, OCI archives and Docker archives as base images.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, MediaType};
use serde::{Deserialize, Serialize};

use crate::digest::{self, Digest};
use crate::image::{
    Image, ImageError, Manifest, ManifestFormat, Platform, media, parse_manifest, write_manifest,
};
use crate::reference::{self, Reference};
use crate::store::{BlobInfo, ContentStore, StoreError};
use crate::tarball::{self, EntryKind, Header, TarError, TarReader};

/// Annotation carrying the tag in an OCI layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation carrying the full image name (containerd, Docker ≥ 25).
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// An archive or layout could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The archive's tar stream is malformed.
    #[error("{archive}: {source}")]
    Tar {
        /// The archive.
        archive: String,
        /// The error.
        source: TarError,
    },
    /// The content is not a valid layout or archive.
    #[error("{archive}: {reason}")]
    Invalid {
        /// The archive or layout.
        archive: String,
        /// What is wrong.
        reason: String,
    },
    /// No image in the archive matches the selection.
    #[error("{archive}: no image named {wanted:?} (it has: {available})")]
    NotFound {
        /// The archive.
        archive: String,
        /// The name asked for.
        wanted: String,
        /// The names present.
        available: String,
    },
    /// An image could not be read.
    #[error("{archive}: {source}")]
    Image {
        /// The archive.
        archive: String,
        /// The error.
        source: Box<ImageError>,
    },
    /// The content store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Result<T> = std::result::Result<T, ArchiveError>;

/// One image to export and the names it goes by.
#[derive(Debug, Clone)]
pub struct TaggedImage<'a> {
    /// The image.
    pub image: &'a Image,
    /// Its names (`name:tag`, normalised).
    pub tags: Vec<Reference>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn blob_name(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm(), digest.digest())
}

fn index_for(images: &[TaggedImage<'_>], annotations: &BTreeMap<String, String>) -> ImageIndex {
    let mut manifests = Vec::new();
    for tagged in images {
        let descriptor = tagged.image.platform_descriptor();
        if tagged.tags.is_empty() {
            manifests.push(descriptor.clone());
        }
        for tag in &tagged.tags {
            let mut d = descriptor.clone();
            let mut annotations = HashMap::new();
            annotations.insert(CONTAINERD_NAME.to_owned(), tag.whole());
            annotations.insert(
                REF_NAME.to_owned(),
                tag.tag().unwrap_or("latest").to_owned(),
            );
            d.set_annotations(Some(annotations));
            manifests.push(d);
        }
    }
    let mut index = ImageIndex::default();
    index.set_media_type(Some(MediaType::ImageIndex));
    index.set_manifests(manifests);
    if !annotations.is_empty() {
        index.set_annotations(Some(
            annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ));
    }
    index
}

struct Metadata {
    files: Vec<(&'static str, Vec<u8>)>,
    blobs: BTreeMap<String, Digest>,
}

fn metadata(
    images: &[TaggedImage<'_>],
    with_docker: bool,
    index_annotations: &BTreeMap<String, String>,
) -> Result<Metadata> {
    let json = |value: &dyn erased::Canonical| -> Result<Vec<u8>> {
        value.canonical().map_err(|e| ArchiveError::Invalid {
            archive: "output".into(),
            reason: e.to_string(),
        })
    };
    let mut blobs = BTreeMap::new();
    let mut docker_manifest = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for tagged in images {
        let image = tagged.image;
        blobs.insert(blob_name(image.digest()), image.digest().clone());
        let config = image.manifest.config().digest().clone();
        blobs.insert(blob_name(&config), config.clone());
        for layer in image.layers() {
            blobs.insert(blob_name(layer.digest()), layer.digest().clone());
        }
        docker_manifest.push(DockerManifestEntry {
            config: blob_name(&config),
            repo_tags: Some(tagged.tags.iter().map(reference::familiar).collect()),
            layers: image
                .layers()
                .iter()
                .map(|l| blob_name(l.digest()))
                .collect(),
        });
        if let Some(top) = image.layers().last() {
            for tag in &tagged.tags {
                let familiar = reference::familiar(tag);
                let (repo, tag_name) = familiar.rsplit_once(':').unwrap_or((&familiar, "latest"));
                repositories
                    .entry(repo.to_owned())
                    .or_default()
                    .insert(tag_name.to_owned(), top.digest().digest().to_owned());
            }
        }
    }
    let mut files = vec![
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        ("index.json", json(&index_for(images, index_annotations))?),
    ];
    if with_docker {
        files.push(("manifest.json", json(&docker_manifest)?));
        if !repositories.is_empty() {
            files.push(("repositories", json(&repositories)?));
        }
    }
    Ok(Metadata { files, blobs })
}

mod erased {
    /// Object-safe canonical JSON, so one closure serves several types.
    pub trait Canonical {
        fn canonical(&self) -> serde_json::Result<Vec<u8>>;
    }
    impl<T: serde::Serialize> Canonical for T {
        fn canonical(&self) -> serde_json::Result<Vec<u8>> {
            crate::json::to_canonical_vec(self)
        }
    }
}

/// Options for writing an archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveOptions {
    /// Modification time of every entry (`SOURCE_DATE_EPOCH`, else 0).
    pub mtime: i64,
    /// Annotations of the layout's `index.json` (buildx's `--annotation index:`).
    pub index_annotations: BTreeMap<String, String>,
}

/// Writes the default `image.tar`: an OCI layout plus Docker's `manifest.json` and `repositories`,
/// loadable by `docker load`, `podman load` and `skopeo` (`oci-archive:` and `docker-archive:`).
pub fn write_archive(
    store: &ContentStore,
    images: &[TaggedImage<'_>],
    out: impl Write,
    options: ArchiveOptions,
) -> Result<()> {
    let out_path = PathBuf::from("image archive");
    let io_err = |source| ArchiveError::Io {
        path: out_path.clone(),
        source,
    };
    let meta = metadata(images, true, &options.index_annotations)?;
    let mut out = io::BufWriter::with_capacity(256 * 1024, out);
    let entry = |path: &str, kind: EntryKind, size: u64| {
        let mut header = Header::new(path, kind);
        header.mode = if kind == EntryKind::Dir { 0o755 } else { 0o644 };
        header.size = size;
        header.mtime = options.mtime;
        header
    };
    for (name, bytes) in &meta.files {
        tarball::write_header(&mut out, &entry(name, EntryKind::File, bytes.len() as u64))
            .map_err(io_err)?;
        out.write_all(bytes).map_err(io_err)?;
        tarball::write_padding(&mut out, bytes.len() as u64).map_err(io_err)?;
    }
    let mut dirs = BTreeSet::new();
    for (name, digest) in &meta.blobs {
        for dir in ["blobs".to_owned(), format!("blobs/{}", digest.algorithm())] {
            if dirs.insert(dir.clone()) {
                tarball::write_header(&mut out, &entry(&dir, EntryKind::Dir, 0)).map_err(io_err)?;
            }
        }
        let size = store
            .size(digest)
            .ok_or_else(|| StoreError::Missing(digest.clone()))?;
        tarball::write_header(&mut out, &entry(name, EntryKind::File, size)).map_err(io_err)?;
        let mut blob = store.open_blob(digest)?;
        let copied =
            io::copy(&mut blob, &mut out).map_err(|e| match e.downcast::<StoreError>() {
                Ok(store_error) => ArchiveError::Store(store_error),
                Err(e) => io_err(e),
            })?;
        if copied != size {
            return Err(StoreError::Corrupt(digest.clone()).into());
        }
        tarball::write_padding(&mut out, size).map_err(io_err)?;
    }
    tarball::write_end(&mut out).map_err(io_err)?;
    out.flush().map_err(io_err)
}

/// Writes the images as an OCI image layout directory (created if needed; existing blobs are kept).
pub fn write_layout_dir(
    store: &ContentStore,
    images: &[TaggedImage<'_>],
    dir: &Path,
    index_annotations: &BTreeMap<String, String>,
) -> Result<()> {
    let meta = metadata(images, false, index_annotations)?;
    let files: Vec<(&str, &[u8])> = meta
        .files
        .iter()
        .rev()
        .map(|(name, bytes)| (*name, bytes.as_slice()))
        .collect();
    write_layout(store, meta.blobs.values(), &files, dir)
}

/// Writes an OCI image layout in `dir` (created if needed): each of `blobs` (from `store`)
/// that it lacks, then `files` (`index.json`, `oci-layout`…) in order, each synced under a
/// temporary name and renamed into place, the files last, so a reader never sees an index
/// naming a missing blob.
pub fn write_layout<'a>(
    store: &ContentStore,
    blobs: impl IntoIterator<Item = &'a Digest>,
    files: &[(&str, &[u8])],
    dir: &Path,
) -> Result<()> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ArchiveError::Io { path, source }
    };
    for digest in blobs {
        let path = dir.join(blob_name(digest));
        if path.is_file() {
            continue;
        }
        let parent = path.parent().unwrap_or(dir);
        fs::create_dir_all(parent).map_err(io_err(parent))?;
        let temp = parent.join(format!(".{}.tmp-{}", digest.digest(), std::process::id()));
        let mut file = create_temp(&temp).map_err(io_err(&temp))?;
        let mut blob = store.open_blob(digest)?;
        let copied = io::copy(&mut blob, &mut file);
        if let Err(e) = copied {
            let _ = fs::remove_file(&temp);
            return Err(blob.map_error(e).into());
        }
        file.sync_all().map_err(io_err(&temp))?;
        fs::rename(&temp, &path).map_err(io_err(&path))?;
    }
    for (name, bytes) in files {
        let path = dir.join(name);
        let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let written = create_temp(&temp).and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        });
        written.map_err(io_err(&temp))?;
        fs::rename(&temp, &path).map_err(io_err(&path))?;
    }
    Ok(())
}

/// Creates the temporary file `path`, never through what is there already: a directory shared
/// with other users (a CI cache) may hold a symlink under the predictable name, planted to have
/// this process overwrite a file of its own. A stale one (a killed export's) is removed first.
fn create_temp(path: &Path) -> io::Result<fs::File> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    // O_EXCL: fails, rather than following it, if a link was planted again meanwhile.
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// Which image to take from an archive or layout holding several.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// A tag or full name (matched against `org.opencontainers.image.ref.name`,
    /// `io.containerd.image.name` and Docker `RepoTags`); `None` takes the only image.
    pub name: Option<String>,
    /// The platform to pick from an index.
    pub platform: Platform,
}

fn pick<'a>(archive: &str, index: &'a ImageIndex, selector: &Selector) -> Result<&'a Descriptor> {
    let names = |d: &Descriptor| -> Vec<String> {
        d.annotations()
            .as_ref()
            .map(|a| {
                [REF_NAME, CONTAINERD_NAME]
                    .iter()
                    .filter_map(|k| a.get(*k).cloned())
                    .collect()
            })
            .unwrap_or_default()
    };
    match &selector.name {
        None => match index.manifests().as_slice() {
            [only] => Ok(only),
            many => {
                let first = many.first();
                match first {
                    Some(first) if many.iter().all(|d| d.digest() == first.digest()) => Ok(first),
                    _ => Err(ArchiveError::NotFound {
                        archive: archive.to_owned(),
                        wanted: String::new(),
                        available: many.iter().flat_map(names).collect::<Vec<_>>().join(", "),
                    }),
                }
            }
        },
        Some(wanted) => {
            let normalised = reference::parse(wanted).map(|r| r.whole()).ok();
            index
                .manifests()
                .iter()
                .find(|d| {
                    names(d)
                        .iter()
                        .any(|n| n == wanted || Some(n) == normalised.as_ref())
                })
                .ok_or_else(|| ArchiveError::NotFound {
                    archive: archive.to_owned(),
                    wanted: wanted.clone(),
                    available: index
                        .manifests()
                        .iter()
                        .flat_map(names)
                        .collect::<Vec<_>>()
                        .join(", "),
                })
        }
    }
}

fn load_checked(
    store: &ContentStore,
    archive: &str,
    digest: &Digest,
    platform: &Platform,
) -> Result<Image> {
    let image = Image::load(store, digest, platform).map_err(|source| ArchiveError::Image {
        archive: archive.to_owned(),
        source: Box::new(source),
    })?;
    for layer in image.layers() {
        if !store.contains(layer.digest()) {
            return Err(ArchiveError::Invalid {
                archive: archive.to_owned(),
                reason: format!("layer {} is missing", layer.digest()),
            });
        }
    }
    Ok(image)
}

/// Imports an image from an OCI layout directory into the store (blobs verified as copied).
pub fn import_layout_dir(store: &ContentStore, dir: &Path, selector: &Selector) -> Result<Image> {
    let archive = dir.display().to_string();
    let read = |name: &str| -> Result<Vec<u8>> {
        let path = dir.join(name);
        let mut bytes = Vec::new();
        crate::regular::open(&path)
            .and_then(|f| f.take(crate::image::MAX_JSON_SIZE).read_to_end(&mut bytes))
            .map_err(|source| ArchiveError::Io { path, source })?;
        Ok(bytes)
    };
    let index: ImageIndex =
        serde_json::from_slice(&read("index.json")?).map_err(|e| ArchiveError::Invalid {
            archive: archive.clone(),
            reason: format!("index.json: {e}"),
        })?;
    let chosen = pick(&archive, &index, selector)?.digest().clone();
    let mut pending = vec![chosen.clone()];
    while let Some(digest) = pending.pop() {
        copy_blob_from_dir(store, dir, &digest)?;
        if let Ok(bytes) = store.read(&digest, crate::image::MAX_JSON_SIZE) {
            match parse_manifest(&bytes, &digest) {
                Ok(Manifest::Index(index)) => {
                    let d = crate::image::select_platform(&index, &digest, &selector.platform)
                        .map_err(|source| ArchiveError::Image {
                            archive: archive.clone(),
                            source: Box::new(source),
                        })?;
                    pending.push(d.digest().clone());
                }
                Ok(Manifest::Image(manifest)) => {
                    pending.push(manifest.config().digest().clone());
                    pending.extend(manifest.layers().iter().map(|l| l.digest().clone()));
                }
                Err(_) => {}
            }
        }
    }
    load_checked(store, &archive, &chosen, &selector.platform)
}

fn copy_blob_from_dir(store: &ContentStore, dir: &Path, digest: &Digest) -> Result<BlobInfo> {
    if let Some(size) = store.size(digest) {
        return Ok(BlobInfo {
            digest: digest.clone(),
            size,
        });
    }
    let path = dir.join(blob_name(digest));
    let file = crate::regular::open(&path).map_err(|source| ArchiveError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(store.ingest(file, Some(digest))?)
}

/// Imports an image from an OCI archive or a Docker archive (`docker save`), streaming: every
/// blob is verified against its name as it is stored.
pub fn import_archive(
    store: &ContentStore,
    name: &str,
    reader: impl Read,
    selector: &Selector,
) -> Result<Image> {
    let archive = name.to_owned();
    let tar_err = |source| ArchiveError::Tar {
        archive: archive.clone(),
        source,
    };
    let invalid = |reason: String| ArchiveError::Invalid {
        archive: archive.clone(),
        reason,
    };
    let mut tar =
        TarReader::new(crate::compress::decompress(reader).map_err(|e| tar_err(TarError::Io(e)))?);
    let mut small: HashMap<String, Vec<u8>> = HashMap::new();
    let mut files: HashMap<String, BlobInfo> = HashMap::new();
    let mut links: HashMap<String, String> = HashMap::new();
    while let Some(header) = tar.next_header().map_err(tar_err)? {
        let path = String::from_utf8_lossy(&header.path)
            .trim_start_matches("./")
            .to_owned();
        match header.kind {
            EntryKind::File => {}
            EntryKind::Symlink | EntryKind::Hardlink => {
                let target = String::from_utf8_lossy(&header.link).into_owned();
                let target = if header.kind == EntryKind::Symlink {
                    normalise_relative(Path::new(&path).parent().unwrap_or(Path::new("")), &target)
                } else {
                    target.trim_start_matches("./").to_owned()
                };
                links.insert(path, target);
                continue;
            }
            _ => continue,
        }
        if matches!(
            path.as_str(),
            "index.json" | "manifest.json" | "oci-layout" | "repositories"
        ) {
            if header.size > crate::image::MAX_JSON_SIZE {
                return Err(invalid(format!("{path} is {} bytes", header.size)));
            }
            let mut bytes = Vec::new();
            tar.content()
                .read_to_end(&mut bytes)
                .map_err(|e| tar_err(TarError::Io(e)))?;
            small.insert(path, bytes);
            continue;
        }
        let expected = path
            .strip_prefix("blobs/")
            .and_then(|rest| rest.split_once('/'))
            .and_then(|(alg, hex)| digest::parse(&format!("{alg}:{hex}")).ok());
        let info = match &expected {
            Some(d) if store.size(d) == Some(header.size) => {
                io::copy(&mut tar.content(), &mut io::sink())
                    .map_err(|e| tar_err(TarError::Io(e)))?;
                BlobInfo {
                    digest: d.clone(),
                    size: header.size,
                }
            }
            _ => store
                .ingest(tar.content(), expected.as_ref())
                .map_err(|e| match e {
                    StoreError::Mismatch {
                        expected, actual, ..
                    } => invalid(format!(
                        "{path} does not match its name (content is {actual}, expected {expected})"
                    )),
                    other => other.into(),
                })?,
        };
        files.insert(path, info);
    }
    let resolve = |path: &str| -> Option<BlobInfo> {
        let mut path = path.trim_start_matches("./").to_owned();
        for _ in 0..16 {
            if let Some(info) = files.get(&path) {
                return Some(info.clone());
            }
            path = links.get(&path)?.clone();
        }
        None
    };
    if let Some(index) = small.get("index.json") {
        let index: ImageIndex =
            serde_json::from_slice(index).map_err(|e| invalid(format!("index.json: {e}")))?;
        let chosen = pick(&archive, &index, selector)?.digest().clone();
        return load_checked(store, &archive, &chosen, &selector.platform);
    }
    let Some(manifest) = small.get("manifest.json") else {
        return Err(invalid(
            "neither index.json nor manifest.json: not an OCI or Docker archive".into(),
        ));
    };
    let entries: Vec<DockerManifestEntry> =
        serde_json::from_slice(manifest).map_err(|e| invalid(format!("manifest.json: {e}")))?;
    let entry = match &selector.name {
        None if entries.len() == 1 => entries.first(),
        None => None,
        Some(wanted) => {
            let wanted_ref = reference::parse(wanted).ok().map(|r| r.whole());
            entries.iter().find(|e| {
                e.repo_tags.iter().flatten().any(|t| {
                    t == wanted
                        || (wanted_ref.is_some()
                            && reference::parse(t).ok().map(|r| r.whole()) == wanted_ref)
                })
            })
        }
    };
    let entry = entry.ok_or_else(|| ArchiveError::NotFound {
        archive: archive.clone(),
        wanted: selector.name.clone().unwrap_or_default(),
        available: entries
            .iter()
            .flat_map(|e| e.repo_tags.iter().flatten().cloned())
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    let config = resolve(&entry.config)
        .ok_or_else(|| invalid(format!("config {} is missing", entry.config)))?;
    let mut layers = Vec::new();
    for layer in &entry.layers {
        let info = resolve(layer).ok_or_else(|| invalid(format!("layer {layer} is missing")))?;
        let mut head = [0u8; 4];
        let n = store
            .open_blob(&info.digest)?
            .read(&mut head)
            .map_err(|e| invalid(format!("layer {layer}: {e}")))?;
        let media_type = match &head[..n] {
            [0x1f, 0x8b, ..] => media::DOCKER_LAYER_GZIP,
            [0x28, 0xb5, 0x2f, 0xfd] => "application/vnd.oci.image.layer.v1.tar+zstd",
            _ => media::DOCKER_LAYER,
        };
        layers.push(Descriptor::new(
            MediaType::Other(media_type.into()),
            info.size,
            info.digest,
        ));
    }
    let format = if layers
        .iter()
        .any(|l| l.media_type().to_string().contains("zstd"))
    {
        ManifestFormat::Oci
    } else {
        ManifestFormat::Docker
    };
    let descriptor =
        write_manifest(store, &config, &layers, format, &BTreeMap::new()).map_err(|source| {
            ArchiveError::Image {
                archive: archive.clone(),
                source: Box::new(source),
            }
        })?;
    load_checked(store, &archive, descriptor.digest(), &selector.platform)
}

fn normalise_relative(base: &Path, target: &str) -> String {
    let mut parts: Vec<String> = base
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p.to_owned()),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layout_is_never_written_through_a_planted_temporary_name()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        let store = ContentStore::open(root.path().join("store"))?;
        let blob = store.put(b"blob bytes")?;
        let victim = root.path().join("victim");
        fs::write(&victim, b"mine")?;
        let dir = root.path().join("layout");
        let blob_path = dir.join(blob_name(&blob.digest));
        let pid = std::process::id();
        let planted = [
            dir.join(format!(".index.json.tmp-{pid}")),
            blob_path.with_file_name(format!(".{}.tmp-{pid}", blob.digest.digest())),
        ];
        for link in &planted {
            fs::create_dir_all(link.parent().ok_or("no parent")?)?;
            std::os::unix::fs::symlink(&victim, link)?;
        }
        write_layout(&store, [&blob.digest], &[("index.json", b"{}")], &dir)?;
        assert_eq!(fs::read(&victim)?, b"mine");
        assert_eq!(fs::read(dir.join("index.json"))?, b"{}");
        assert_eq!(fs::read(&blob_path)?, b"blob bytes");
        assert!(planted.iter().all(|l| l.symlink_metadata().is_err()));
        Ok(())
    }
}
