//! The layer writer: a [`ChangeSet`] becomes a deterministic tar, compressed and hashed in one
//! pass, straight into the content store.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use oci_spec::image::MediaType;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};

use crate::changes::{ChangeKind, ChangeSet};
use crate::compress::{Compression, Encoder};
use crate::digest::{Digest, HashingWriter};
use crate::inroot::{Escape, InRootError, Root};
use crate::store::{BlobInfo, ContentStore, StoreError};
use crate::tarball::{self, EntryKind, Header};
use crate::{device, owner};

/// Prefix OCI uses for whiteout entries.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the entry marking a directory opaque.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// How to write a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerOptions {
    /// The compression of the blob.
    pub compression: Compression,
    /// `SOURCE_DATE_EPOCH`: file times newer than it are clamped to it.
    pub source_date_epoch: Option<i64>,
    /// Threads compression may use (the output does not depend on it).
    pub threads: usize,
}

impl Default for LayerOptions {
    fn default() -> Self {
        Self {
            compression: Compression::default(),
            source_date_epoch: None,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// A layer written to the content store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// The compressed blob.
    pub blob: BlobInfo,
    /// The digest of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    /// The blob's OCI media type.
    pub media_type: MediaType,
    /// Size of the uncompressed tar.
    pub tar_size: u64,
}

/// Writing a layer failed.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A change names a path the writer cannot use.
    #[error("change set: invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// A changed path could not be read from the change set's source directory.
    #[error("reading {path} from {source_dir}: {source}")]
    Read {
        /// The path inside the source.
        path: PathBuf,
        /// The source directory.
        source_dir: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A path could not be resolved inside the source directory.
    #[error("resolving in {source_dir}: {source}")]
    Resolve {
        /// The source directory.
        source_dir: PathBuf,
        /// The error.
        source: InRootError,
    },
    /// Writing the output failed.
    #[error("writing the layer: {0}")]
    Write(#[source] io::Error),
    /// The content store refused the blob.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A layer blob could not be read for compressing again.
    #[error("layer {blob}: {source}")]
    Recompress {
        /// The blob.
        blob: Digest,
        /// The error.
        source: io::Error,
    },
    /// A layer blob's tar is not the one its diff id names.
    #[error("layer {}: its tar is {}, not the diff id {}", .0.blob, .0.actual, .0.expected)]
    DiffId(Box<DiffIdMismatch>),
}

/// A layer blob whose tar is not the one its diff id names.
#[derive(Debug)]
pub struct DiffIdMismatch {
    /// The blob.
    pub blob: Digest,
    /// The diff id it should have.
    pub expected: Digest,
    /// The digest of its tar.
    pub actual: Digest,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Item {
    Upsert,
    /// A directory added because a listed path is below it; skipped if the source lacks it.
    Parent,
    Whiteout,
    Opaque,
}

/// Sort key: the components, with the opaque marker before its siblings, so a directory's
/// opaque marker is seen before anything else in it.
type SortKey = Vec<(u8, Vec<u8>)>;

fn sort_key(tar_path: &Path) -> SortKey {
    tar_path
        .components()
        .map(|c| {
            let bytes = c.as_os_str().as_bytes();
            (u8::from(bytes != OPAQUE_MARKER.as_bytes()), bytes.to_vec())
        })
        .collect()
}

fn check_path(path: &Path) -> Result<(), LayerError> {
    let invalid = |reason| LayerError::InvalidPath {
        path: path.to_owned(),
        reason,
    };
    if path.as_os_str().is_empty() {
        return Err(invalid("empty"));
    }
    for component in path.components() {
        match component {
            Component::Normal(name) if name.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()) => {
                return Err(invalid(
                    "names starting with .wh. are reserved for whiteouts",
                ));
            }
            Component::Normal(_) => {}
            _ => return Err(invalid("must be relative, without '.' or '..' components")),
        }
    }
    Ok(())
}

/// The entries of the layer, sorted, with implicit parent directories added.
fn plan(changes: &ChangeSet) -> Result<BTreeMap<SortKey, (PathBuf, Item)>, LayerError> {
    let mut entries = BTreeMap::new();
    for change in &changes.changes {
        check_path(&change.path)?;
        let (tar_path, item) = match change.kind {
            ChangeKind::Upsert => (change.path.clone(), Item::Upsert),
            ChangeKind::OpaqueDir => (change.path.join(OPAQUE_MARKER), Item::Opaque),
            ChangeKind::Delete => {
                let name = change.path.file_name().unwrap_or_default();
                let mut whiteout = OsStr::new(WHITEOUT_PREFIX).to_owned();
                whiteout.push(name);
                (change.path.with_file_name(whiteout), Item::Whiteout)
            }
        };
        let mut parent = tar_path.parent();
        while let Some(dir) = parent.filter(|p| !p.as_os_str().is_empty()) {
            entries
                .entry(sort_key(dir))
                .or_insert_with(|| (dir.to_owned(), Item::Parent));
            parent = dir.parent();
        }
        entries.insert(sort_key(&tar_path), (tar_path, item));
    }
    Ok(entries)
}

struct SourceReader {
    root: Root,
    cached_dir: Option<(PathBuf, OwnedFd)>,
    links: HashMap<(u64, u64), Vec<u8>>,
    buffer: Vec<u8>,
    options: LayerOptions,
}

impl SourceReader {
    fn read_err(&self, path: &Path) -> impl FnOnce(io::Error) -> LayerError + use<> {
        let path = path.to_owned();
        let source_dir = self.root.path().to_owned();
        move |source| LayerError::Read {
            path,
            source_dir,
            source,
        }
    }

    fn parent_fd(&mut self, dir: &Path) -> Result<&OwnedFd, LayerError> {
        if self.cached_dir.as_ref().is_none_or(|(p, _)| p != dir) {
            let fd = self
                .root
                .resolve_dir(dir, Escape::Refuse, false)
                .map_err(|source| LayerError::Resolve {
                    source_dir: self.root.path().to_owned(),
                    source,
                })?;
            self.cached_dir = Some((dir.to_owned(), fd));
        }
        match &self.cached_dir {
            Some((_, fd)) => Ok(fd),
            None => Err(LayerError::Write(io::Error::other("parent cache empty"))),
        }
    }

    fn clamp(&self, mtime: i64) -> i64 {
        self.options
            .source_date_epoch
            .map_or(mtime, |epoch| mtime.min(epoch))
    }

    fn marker(&self, tar_path: &Path) -> Header {
        let mut header = Header::new(tar_path.as_os_str().as_bytes(), EntryKind::File);
        header.mode = 0o644;
        header.mtime = self.clamp(0);
        header
    }

    fn write_entry(&mut self, out: &mut impl Write, path: &Path) -> Result<(), LayerError> {
        let dir = path.parent().unwrap_or(Path::new(""));
        let name = path.file_name().unwrap_or_default().to_owned();
        let err = self.read_err(path);
        let parent = self
            .parent_fd(dir)?
            .try_clone()
            .map_err(|e| self.read_err(path)(e))?;
        let stat =
            rfs::statat(&parent, &name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| err(e.into()))?;
        let file_type = FileType::from_raw_mode(stat.st_mode);
        let kind = match file_type {
            FileType::RegularFile => EntryKind::File,
            FileType::Directory => EntryKind::Dir,
            FileType::Symlink => EntryKind::Symlink,
            FileType::CharacterDevice => EntryKind::Char,
            FileType::BlockDevice => EntryKind::Block,
            FileType::Fifo => EntryKind::Fifo,
            _ => {
                tracing::warn!(path = %path.display(), "skipping a socket or unknown file type in the layer");
                return Ok(());
            }
        };
        let mut header = Header::new(path.as_os_str().as_bytes(), kind);
        header.mode = stat.st_mode & 0o7777;
        let real = owner::in_image(stat.st_uid, stat.st_gid);
        header.uid = u64::from(real.uid);
        header.gid = u64::from(real.gid);
        header.mtime = self.clamp(stat.st_mtime);
        let at = crate::inroot::Resolved {
            parent,
            name: name.clone(),
        };
        header.xattrs = read_xattrs(&at.proc_path()).map_err(self.read_err(path))?;
        drop(at);
        if let Some(i) = header.xattrs.iter().position(|(n, _)| n == owner::XATTR) {
            let (_, value) = header.xattrs.remove(i);
            let recorded = owner::Owner::decode(&value)
                .map_err(|e| self.read_err(path)(io::Error::new(io::ErrorKind::InvalidData, e)))?;
            header.uid = u64::from(recorded.uid);
            header.gid = u64::from(recorded.gid);
        }
        if let Some(i) = header.xattrs.iter().position(|(n, _)| n == device::XATTR) {
            let (_, value) = header.xattrs.remove(i);
            let device = device::Device::decode(&value)
                .map_err(|e| self.read_err(path)(io::Error::new(io::ErrorKind::InvalidData, e)))?;
            if kind == EntryKind::File {
                return write_device(out, header, device);
            }
        }
        match kind {
            EntryKind::Symlink => {
                let resolved_parent = self.parent_fd(dir)?;
                let link = rfs::readlinkat(resolved_parent, &name, Vec::new());
                let recorded = owner::link::link_recorded(resolved_parent, &name);
                header.link = link
                    .map_err(|e| self.read_err(path)(e.into()))?
                    .into_bytes();
                if let Some(recorded) = recorded {
                    header.uid = u64::from(recorded.uid);
                    header.gid = u64::from(recorded.gid);
                }
            }
            EntryKind::Char | EntryKind::Block => {
                header.dev_major = rfs::major(stat.st_rdev);
                header.dev_minor = rfs::minor(stat.st_rdev);
            }
            EntryKind::File if stat.st_nlink > 1 => {
                let key = (stat.st_dev, stat.st_ino);
                if let Some(first) = self.links.get(&key) {
                    header.kind = EntryKind::Hardlink;
                    header.link = first.clone();
                    header.xattrs.clear();
                } else {
                    self.links.insert(key, header.path.clone());
                }
            }
            _ => {}
        }
        if header.kind != EntryKind::File {
            return tarball::write_header(out, &header).map_err(LayerError::Write);
        }
        header.size = u64::try_from(stat.st_size).unwrap_or(0);
        let parent = self.parent_fd(dir)?;
        let fd = owner::lending_read(parent, Path::new(&name), || {
            rfs::openat(
                parent,
                &name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(io::Error::from)
        })
        .map_err(self.read_err(path))?;
        let mut file = std::fs::File::from(fd);
        tarball::write_header(out, &header).map_err(LayerError::Write)?;
        let mut left = header.size;
        while left > 0 {
            let want = left.min(self.buffer.len() as u64) as usize;
            let n = file
                .read(&mut self.buffer[..want])
                .map_err(self.read_err(path))?;
            if n == 0 {
                return Err(self.read_err(path)(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while the layer was written",
                )));
            }
            out.write_all(&self.buffer[..n])
                .map_err(LayerError::Write)?;
            left -= n as u64;
        }
        tarball::write_padding(out, header.size).map_err(LayerError::Write)
    }
}

/// A recorded device's placeholder ([`device`]) as the device it stands for.
fn write_device(
    out: &mut impl Write,
    mut header: Header,
    device: device::Device,
) -> Result<(), LayerError> {
    header.kind = if device.block {
        EntryKind::Block
    } else {
        EntryKind::Char
    };
    header.dev_major = device.major;
    header.dev_minor = device.minor;
    tarball::write_header(out, &header).map_err(LayerError::Write)
}

/// Overlay's own bookkeeping, never part of an image.
fn is_overlay_internal(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

fn read_xattrs(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut names = vec![0u8; 4096];
    let len = loop {
        match rfs::llistxattr(path, &mut names) {
            Ok(len) => break len,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if is_overlay_internal(name) || owner::link::is_link_record(name) {
            continue;
        }
        let Ok(text) = std::str::from_utf8(name) else {
            continue;
        };
        let mut value = vec![0u8; 256];
        let n = loop {
            match rfs::lgetxattr(path, text, &mut value) {
                Ok(n) => break n,
                Err(rustix::io::Errno::RANGE) => value.resize(value.len() * 4, 0),
                Err(rustix::io::Errno::NODATA) => break usize::MAX,
                Err(e) => return Err(e.into()),
            }
        };
        if n != usize::MAX {
            value.truncate(n);
            out.push((text.to_owned(), value));
        }
    }
    out.sort();
    Ok(out)
}

/// Writes the layer tar for `changes` (uncompressed) to `out`; returns `out`, the diff id and size.
pub fn write_tar<W: Write>(
    out: W,
    changes: &ChangeSet,
    options: &LayerOptions,
) -> Result<(W, Digest, u64), LayerError> {
    let entries = plan(changes)?;
    let root = Root::open(&changes.source).map_err(|source| LayerError::Read {
        path: PathBuf::new(),
        source_dir: changes.source.clone(),
        source,
    })?;
    let mut reader = SourceReader {
        root,
        cached_dir: None,
        links: HashMap::new(),
        buffer: vec![0u8; 256 * 1024],
        options: options.clone(),
    };
    let mut out = HashingWriter::new(out);
    for (tar_path, item) in entries.values() {
        match item {
            Item::Upsert => reader.write_entry(&mut out, tar_path)?,
            Item::Parent => match reader.write_entry(&mut out, tar_path) {
                Err(
                    LayerError::Read { source, .. }
                    | LayerError::Resolve {
                        source: InRootError::Io { source, .. },
                        ..
                    },
                ) if source.kind() == io::ErrorKind::NotFound => {}
                other => other?,
            },
            Item::Whiteout | Item::Opaque => {
                tarball::write_header(&mut out, &reader.marker(tar_path))
                    .map_err(LayerError::Write)?;
            }
        }
    }
    tarball::write_end(&mut out).map_err(LayerError::Write)?;
    let (out, diff_id, size) = out.finish();
    Ok((out, diff_id, size))
}

/// Writes the compressed layer for `changes` to `out`; returns `out`, the diff id and tar size.
pub fn write_compressed<W: Write + Send + 'static>(
    out: W,
    changes: &ChangeSet,
    options: &LayerOptions,
) -> Result<(W, Digest, u64), LayerError> {
    let encoder =
        Encoder::new(out, options.compression, options.threads).map_err(LayerError::Write)?;
    let (encoder, diff_id, size) = write_tar(encoder, changes, options)?;
    let out = encoder.finish().map_err(LayerError::Write)?;
    Ok((out, diff_id, size))
}

/// Writes the layer for `changes` into `store`, streaming.
pub fn write_layer(
    store: &ContentStore,
    changes: &ChangeSet,
    options: &LayerOptions,
) -> Result<LayerInfo, LayerError> {
    let writer = store.writer()?;
    let (writer, diff_id, tar_size) = write_compressed(writer, changes, options)?;
    let blob = writer.commit()?;
    Ok(LayerInfo {
        blob,
        diff_id,
        media_type: options.compression.oci_media_type(),
        tar_size,
    })
}

/// Writes the layer blob `blob` of `store` again with `compression`: the same tar, so the same
/// diff id, which it must have. Streamed; the old blob stays.
pub fn recompress(
    store: &ContentStore,
    blob: &Digest,
    diff_id: &Digest,
    compression: Compression,
    threads: usize,
) -> Result<LayerInfo, LayerError> {
    let failed = |source| LayerError::Recompress {
        blob: blob.clone(),
        source,
    };
    let mut tar = crate::compress::decompress(store.open_blob(blob)?).map_err(failed)?;
    let encoder = Encoder::new(store.writer()?, compression, threads).map_err(LayerError::Write)?;
    let mut out = HashingWriter::new(encoder);
    io::copy(&mut tar, &mut out).map_err(failed)?;
    let (encoder, actual, tar_size) = out.finish();
    if &actual != diff_id {
        return Err(LayerError::DiffId(Box::new(DiffIdMismatch {
            blob: blob.clone(),
            expected: diff_id.clone(),
            actual,
        })));
    }
    let blob = encoder.finish().map_err(LayerError::Write)?.commit()?;
    Ok(LayerInfo {
        blob,
        diff_id: actual,
        media_type: compression.oci_media_type(),
        tar_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::Change;

    #[test]
    fn a_recompressed_layer_keeps_its_tar() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let source = dir.path().join("source");
        std::fs::create_dir(&source)?;
        std::fs::write(source.join("file"), "content")?;
        let store = ContentStore::open(dir.path().join("store"))?;
        let changes = ChangeSet {
            source,
            changes: vec![Change {
                path: "file".into(),
                kind: ChangeKind::Upsert,
            }],
        };
        let gzip = write_layer(&store, &changes, &LayerOptions::default())?;
        let zstd = recompress(
            &store,
            &gzip.blob.digest,
            &gzip.diff_id,
            Compression::ZSTD,
            1,
        )?;
        assert_eq!(zstd.diff_id, gzip.diff_id);
        assert_eq!(zstd.media_type, MediaType::ImageLayerZstd);
        assert_ne!(zstd.blob.digest, gzip.blob.digest);
        assert!(store.contains(&gzip.blob.digest));
        let back = recompress(
            &store,
            &zstd.blob.digest,
            &gzip.diff_id,
            Compression::GZIP,
            1,
        )?;
        assert_eq!(back.blob.digest, gzip.blob.digest);
        let other = crate::digest::sha256(b"another tar");
        assert!(matches!(
            recompress(&store, &gzip.blob.digest, &other, Compression::None, 1),
            Err(LayerError::DiffId(_))
        ));
        Ok(())
    }
}
