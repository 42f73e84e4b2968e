//! The content-addressed blob store: blobs are written to a temporary file, verified, synced and
//! renamed into place, so readers never see a partial or wrong blob.
//!
//! A blob checked in full gets a stamp (`verified/<alg>-<hex>`: its device, inode, size, mtime
//! and ctime), so a later [`ContentStore::verify`] or read of the unchanged file costs a `stat`
//! instead of a rehash (a warm build would otherwise hash every base layer again); a file
//! changed since fails the stamp and is hashed again.
//!
//! A store opened for a build carries the build's [`Lease`]: it names every blob in the lease
//! before it looks for it, reads it or publishes it, so garbage collection never removes a blob
//! the build relies on; one removed before that is simply absent (fetched or written again).

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::{Digest, DigestError, Hasher};
use crate::lease::{Lease, LeaseError};

/// A failure of the content store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation on the store failed.
    #[error("content store: {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Reading the data to store failed.
    #[error("content store: reading the blob's data: {0}")]
    Source(#[source] io::Error),
    /// The bytes received do not hash to the digest they were announced with; nothing was stored.
    #[error(
        "content mismatch: expected {expected}, got {actual} ({size} bytes); the data was discarded"
    )]
    Mismatch {
        /// The digest the data was announced with.
        expected: Digest,
        /// The digest of the data actually received.
        actual: Digest,
        /// How many bytes were received.
        size: u64,
    },
    /// A stored blob no longer matches its digest; it has been removed so it can be fetched or
    /// made again.
    #[error(
        "stored blob {0} is corrupt (its content does not match its digest); it was removed: the next build fetches or remakes it"
    )]
    Corrupt(Digest),
    /// The blob is not in the store.
    #[error("blob {0} is not in the content store")]
    Missing(Digest),
    /// The blob is larger than the caller allows.
    #[error("blob {digest} is {size} bytes, more than the {limit} allowed here")]
    TooLarge {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The digest cannot be used.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// The blob could not be named in the build's lease, so it cannot be relied on.
    #[error(transparent)]
    Lease(#[from] LeaseError),
}

type Result<T> = std::result::Result<T, StoreError>;

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// The digest and size of a stored blob.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobInfo {
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
}

/// A content-addressed blob store rooted in one directory (`blobs/<alg>/<hex>` plus `ingest/`).
#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
    lease: Option<Arc<Lease>>,
}

static INGEST_COUNTER: AtomicU64 = AtomicU64::new(0);

impl ContentStore {
    /// Opens (creating if needed) the store whose blobs live under `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for dir in ["blobs/sha256", "blobs/sha512", "ingest", "verified"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(io_err("creating", &path))?;
        }
        remove_stale_ingests(&root.join("ingest"));
        Ok(Self { root, lease: None })
    }

    /// This store, naming every blob it touches in `lease` first.
    #[must_use]
    pub fn with_lease(mut self, lease: Arc<Lease>) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Names the blob in the lease, if the store has one: from here on it is not collected.
    fn hold(&self, digest: &Digest) -> Result<()> {
        match &self.lease {
            Some(lease) => Ok(lease.hold_blob(digest)?),
            None => Ok(()),
        }
    }

    /// The directory this store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with `digest` is (or would be) stored.
    pub fn blob_path(&self, digest: &Digest) -> Result<PathBuf> {
        Hasher::for_digest(digest)?;
        Ok(self
            .root
            .join("blobs")
            .join(digest.algorithm().as_ref())
            .join(digest.digest()))
    }

    /// Whether a blob with `digest` is present (its content is checked when it is read). One
    /// that cannot be named in the lease counts as absent.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.hold(digest).is_ok() && self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    /// The size of a stored blob, or `None` when it is absent (or cannot be leased).
    pub fn size(&self, digest: &Digest) -> Option<u64> {
        let path = self.blob_path(digest).ok()?;
        self.hold(digest).ok()?;
        fs::metadata(path)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    /// Starts writing a new blob hashed with SHA-256.
    pub fn writer(&self) -> Result<BlobWriter> {
        self.writer_with(Some(Hasher::sha256()))
    }

    /// Starts writing a blob that must turn out to be `expected`.
    pub fn writer_for(&self, expected: &Digest) -> Result<BlobWriter> {
        let mut writer = self.writer_with(Some(Hasher::for_digest(expected)?))?;
        writer.expected = Some(expected.clone());
        Ok(writer)
    }

    fn writer_with(&self, hasher: Option<Hasher>) -> Result<BlobWriter> {
        let name = format!(
            "{}-{}-{}",
            std::process::id(),
            INGEST_COUNTER.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let temp = self.root.join("ingest").join(name);
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(io_err("creating", &temp))?;
        Ok(BlobWriter {
            store: self.clone(),
            file: Some(BufWriter::with_capacity(256 * 1024, file)),
            temp,
            hasher,
            size: 0,
            expected: None,
        })
    }

    /// Stores everything `reader` yields, streaming; when `expected` is given the data must match it.
    pub fn ingest(&self, mut reader: impl Read, expected: Option<&Digest>) -> Result<BlobInfo> {
        let mut writer = match expected {
            Some(digest) => self.writer_for(digest)?,
            None => self.writer()?,
        };
        io::copy(&mut reader, &mut writer).map_err(|e| match e.downcast::<StoreError>() {
            Ok(store_error) => store_error,
            Err(e) => StoreError::Source(e),
        })?;
        writer.commit()
    }

    /// Stores everything `reader` yields as the blob `digest` without hashing it again: for
    /// bytes the caller has just hashed whole and knows to be unchanged since (a file whose
    /// metadata, [`file_stamp`], is what it was then; `reader` fails if it is not by the end).
    /// The blob gets the stamp of a checked one.
    pub fn ingest_checked(&self, mut reader: impl Read, digest: &Digest) -> Result<BlobInfo> {
        let mut writer = self.writer_with(None)?;
        writer.expected = Some(digest.clone());
        io::copy(&mut reader, &mut writer).map_err(StoreError::Source)?;
        writer.commit()
    }

    /// Stores `bytes` (for small blobs such as configs and manifests).
    pub fn put(&self, bytes: &[u8]) -> Result<BlobInfo> {
        self.ingest(bytes, None)
    }

    /// Opens a stored blob for reading; reading it to the end checks its digest, unless the blob
    /// is unchanged since it last passed a check (its stamp holds).
    pub fn open_blob(&self, digest: &Digest) -> Result<VerifyingReader> {
        let path = self.blob_path(digest)?;
        self.hold(digest)?;
        let file = match crate::regular::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::Missing(digest.clone()));
            }
            // Anything but a regular file cannot hold the blob: dropped as a corrupt one is.
            Err(e) if crate::regular::is_not_regular(&e) => {
                tracing::warn!("dropping {}: {e}", path.display());
                let _ = fs::remove_file(&path);
                return Err(StoreError::Corrupt(digest.clone()));
            }
            Err(e) => return Err(io_err("opening", &path)(e)),
        };
        let hasher = match file.metadata() {
            Ok(metadata) if self.is_stamped(digest, &metadata) => None,
            _ => Some(Hasher::for_digest(digest)?),
        };
        Ok(VerifyingReader {
            inner: HashingFile { file, hasher },
            digest: digest.clone(),
            path,
            done: false,
        })
    }

    /// Reads a whole stored blob of at most `limit` bytes, checking its digest.
    pub fn read(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        let size = self
            .size(digest)
            .ok_or_else(|| StoreError::Missing(digest.clone()))?;
        if size > limit {
            return Err(StoreError::TooLarge {
                digest: digest.clone(),
                size,
                limit,
            });
        }
        let mut reader = self.open_blob(digest)?;
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| reader.map_error(e))?;
        Ok(bytes)
    }

    /// Checks a stored blob against its digest (unless it is unchanged since it last passed); a
    /// corrupt blob is removed and reported.
    pub fn verify(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest)?;
        self.hold(digest)?;
        if fs::symlink_metadata(&path).is_ok_and(|m| self.is_stamped(digest, &m)) {
            return Ok(());
        }
        let mut reader = self.open_blob(digest)?;
        io::copy(&mut reader, &mut io::sink()).map_err(|e| reader.map_error(e))?;
        self.write_stamp(digest, &path);
        Ok(())
    }

    /// Whether the blob whose file has `metadata` passed a check and has not changed since.
    fn is_stamped(&self, digest: &Digest, metadata: &fs::Metadata) -> bool {
        crate::regular::read_to_string(&self.stamp_path(digest))
            .is_ok_and(|s| s == file_stamp(metadata))
    }

    fn stamp_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("verified").join(format!(
            "{}-{}",
            digest.algorithm().as_ref(),
            digest.digest()
        ))
    }

    /// Records that the blob at `path` matched `digest` as it is now. Best effort: without a
    /// stamp the next check hashes the blob again.
    fn write_stamp(&self, digest: &Digest, path: &Path) {
        let Ok(metadata) = fs::symlink_metadata(path) else {
            return;
        };
        let stamp_path = self.stamp_path(digest);
        // In `ingest/`, where a crash's leftovers are collected.
        let temp = self.root.join("ingest").join(format!(
            "stamp-{}-{}",
            std::process::id(),
            INGEST_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        if fs::write(&temp, file_stamp(&metadata)).is_err()
            || fs::rename(&temp, &stamp_path).is_err()
        {
            let _ = fs::remove_file(&temp);
        }
    }

    /// The digests of every blob in the store.
    pub fn digests(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for algorithm in ["sha256", "sha512"] {
            let dir = self.root.join("blobs").join(algorithm);
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("listing", &dir)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(io_err("listing", &dir))?;
                let name = entry.file_name();
                // Anything else in there (a stray file) is not a blob of this store.
                if let Some(digest) = name
                    .to_str()
                    .and_then(|hex| crate::digest::parse(&format!("{algorithm}:{hex}")).ok())
                {
                    out.push(digest);
                }
            }
        }
        Ok(out)
    }

    /// Removes a blob; absent blobs are not an error.
    pub fn remove(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest)?;
        let _ = fs::remove_file(self.stamp_path(digest));
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("removing", &path)(e)),
            _ => Ok(()),
        }
    }
}

/// What a verified blob's stamp records: which file it was and that it has not been written
/// since (any write moves its ctime; the stamp is taken after the rename, which moves it too).
/// What identifies a file's content as unchanged: device, inode, size, modification and
/// change times.
pub fn file_stamp(metadata: &fs::Metadata) -> String {
    format!(
        "{} {} {} {}.{} {}.{}",
        metadata.dev(),
        metadata.ino(),
        metadata.len(),
        metadata.mtime(),
        metadata.mtime_nsec(),
        metadata.ctime(),
        metadata.ctime_nsec()
    )
}

/// Temporary files left by writers that died (a crash mid-write) are removed once they are a
/// day old; younger ones may belong to a writer still running.
fn remove_stale_ingests(dir: &Path) {
    const STALE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE);
        if old {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// A blob being written; invisible to readers until [`BlobWriter::commit`] succeeds.
pub struct BlobWriter {
    store: ContentStore,
    file: Option<BufWriter<File>>,
    temp: PathBuf,
    /// `None` for bytes the caller checked (`ingest_checked`).
    hasher: Option<Hasher>,
    size: u64,
    expected: Option<Digest>,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer already committed"))?;
        let n = file.write(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), |f| f.flush())
    }
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Verifies, syncs and publishes the blob under its digest.
    pub fn commit(mut self) -> Result<BlobInfo> {
        let Some(file) = self.file.take() else {
            return Err(StoreError::Source(io::Error::other(
                "blob writer already committed",
            )));
        };
        let file = file
            .into_inner()
            .map_err(|e| io_err("writing", &self.temp)(e.into_error()))?;
        let (digest, expected) = match (self.hasher.take(), self.expected.take()) {
            (Some(hasher), expected) => (hasher.finish(), expected),
            (None, Some(checked)) => (checked, None),
            (None, None) => {
                return Err(StoreError::Source(io::Error::other(
                    "a blob written unhashed needs its digest",
                )));
            }
        };
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(StoreError::Mismatch {
                expected,
                actual: digest,
                size: self.size,
            });
        }
        let path = self.store.blob_path(&digest)?;
        // Named before it is published (or found), so no collection removes it from here on.
        self.store.hold(&digest)?;
        // Already stored and intact (configs and manifests come again with every pull): keep it
        // and spare the two syncs.
        if self.store.verify(&digest).is_err() {
            file.sync_all().map_err(io_err("syncing", &self.temp))?;
            drop(file);
            fs::rename(&self.temp, &path).map_err(io_err("publishing", &path))?;
            if let Some(dir) = path.parent() {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io_err("syncing", dir))?;
            }
            self.store.write_stamp(&digest, &path);
        } else {
            drop(file);
            let _ = fs::remove_file(&self.temp);
        }
        self.temp = PathBuf::new();
        Ok(BlobInfo {
            digest,
            size: self.size,
        })
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

struct HashingFile {
    file: File,
    /// `None` for a blob whose stamp holds.
    hasher: Option<Hasher>,
}

/// A reader over a stored blob that fails at the end if the content does not match the digest
/// (and then removes the corrupt blob from the store); a blob whose stamp holds is not hashed.
pub struct VerifyingReader {
    inner: HashingFile,
    digest: Digest,
    path: PathBuf,
    done: bool,
}

impl VerifyingReader {
    /// Turns an error from this reader back into the store error it carries, if any.
    pub fn map_error(&self, e: io::Error) -> StoreError {
        match e.downcast::<StoreError>() {
            Ok(store_error) => store_error,
            Err(e) => io_err("reading", &self.path)(e),
        }
    }
}

impl Read for VerifyingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let n = self.inner.file.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.done = true;
            let Some(hasher) = self.inner.hasher.take() else {
                return Ok(0);
            };
            if hasher.finish() != self.digest {
                let _ = fs::remove_file(&self.path);
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    StoreError::Corrupt(self.digest.clone()),
                ));
            }
            return Ok(0);
        }
        if let Some(hasher) = &mut self.inner.hasher {
            hasher.update(&buf[..n]);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::digest::sha256;

    #[test]
    fn put_then_read_round_trips_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let a = store.put(b"hello").unwrap();
        let b = store.put(b"hello").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.digest, sha256(b"hello"));
        assert_eq!(store.read(&a.digest, 100).unwrap(), b"hello");
        assert!(
            fs::read_dir(dir.path().join("ingest"))
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn digests_lists_every_stored_blob_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let a = store.put(b"a").unwrap().digest;
        let b = store.put(b"b").unwrap().digest;
        fs::write(dir.path().join("blobs/sha256/not-a-digest"), b"").unwrap();
        let mut listed = store.digests().unwrap();
        listed.sort_by_key(ToString::to_string);
        let mut expected = vec![a, b];
        expected.sort_by_key(ToString::to_string);
        assert_eq!(listed, expected);
    }

    #[test]
    fn wrong_content_for_expected_digest_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let expected = sha256(b"right");
        let err = store.ingest(&b"wrong"[..], Some(&expected)).unwrap_err();
        assert!(matches!(err, StoreError::Mismatch { .. }), "{err}");
        assert!(!store.contains(&expected));
        assert!(!store.contains(&sha256(b"wrong")));
    }

    #[test]
    fn a_checked_blob_is_stored_under_its_digest_without_a_second_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let digest = sha256(b"checked");
        let info = store.ingest_checked(&b"checked"[..], &digest).unwrap();
        assert_eq!((info.digest.clone(), info.size), (digest.clone(), 7));
        assert_eq!(store.read(&digest, 100).unwrap(), b"checked");
        // A reader that fails (the source changed) publishes nothing.
        let failing = io::Read::chain(&b"half"[..], FailingReader);
        assert!(store.ingest_checked(failing, &sha256(b"half")).is_err());
        assert!(!store.contains(&sha256(b"half")));
        assert!(
            fs::read_dir(dir.path().join("ingest"))
                .unwrap()
                .next()
                .is_none()
        );
    }

    struct FailingReader;

    impl Read for FailingReader {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("changed"))
        }
    }

    #[test]
    fn corrupt_blob_is_detected_on_read_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let info = store.put(b"original").unwrap();
        // Past the filesystem's timestamp tick, as any later change would be.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(store.blob_path(&info.digest).unwrap(), b"tampered").unwrap();
        let err = store.read(&info.digest, 100).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
        assert!(!store.contains(&info.digest));
        store.put(b"original").unwrap();
        store.verify(&info.digest).unwrap();
    }

    #[test]
    fn a_blob_changed_after_it_was_verified_is_checked_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let info = store.put(b"original").unwrap();
        store.verify(&info.digest).unwrap();
        // Past the filesystem's timestamp tick, as any later change would be.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(store.blob_path(&info.digest).unwrap(), b"tampere").unwrap();
        let err = store.verify(&info.digest).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
        assert!(!store.contains(&info.digest));
        // Stored again, it passes, and a second put of the same bytes keeps the stored file.
        store.put(b"original").unwrap();
        let path = store.blob_path(&info.digest).unwrap();
        let inode = fs::metadata(&path).unwrap().ino();
        store.put(b"original").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode);
        store.verify(&info.digest).unwrap();
    }

    #[test]
    fn interrupted_write_leaves_no_blob_and_next_write_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let data = vec![7u8; 1 << 20];
        let mut writer = store.writer().unwrap();
        writer.write_all(&data[..1000]).unwrap();
        drop(writer);
        let digest = sha256(&data);
        assert!(!store.contains(&digest));
        assert!(
            fs::read_dir(dir.path().join("ingest"))
                .unwrap()
                .next()
                .is_none()
        );
        assert_eq!(
            store.ingest(&data[..], Some(&digest)).unwrap().size,
            1 << 20
        );
    }

    #[test]
    fn stale_temporary_files_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        ContentStore::open(dir.path()).unwrap();
        let old = dir.path().join("ingest/123-0-0");
        let young = dir.path().join("ingest/456-0-0");
        fs::write(&old, b"partial").unwrap();
        fs::write(&young, b"partial").unwrap();
        let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(48 * 3600);
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(two_days_ago)
            .unwrap();
        ContentStore::open(dir.path()).unwrap();
        assert!(!old.exists());
        assert!(young.exists());
    }

    #[test]
    fn a_leased_store_names_each_blob_before_it_looks_for_or_publishes_it() {
        use crate::lease::{GcLock, Lease};
        let dir = tempfile::tempdir().unwrap();
        let lease = Arc::new(Lease::acquire(dir.path()).unwrap());
        let store = ContentStore::open(dir.path())
            .unwrap()
            .with_lease(Arc::clone(&lease));
        let written = store.put(b"layer").unwrap().digest;
        let absent = sha256(b"not here");
        assert!(!store.contains(&absent));
        // Found by a second store of the same root, as another build finds a cached layer.
        let other = ContentStore::open(dir.path())
            .unwrap()
            .with_lease(Arc::new(Lease::acquire(dir.path()).unwrap()));
        assert!(other.contains(&written));
        let live = GcLock::exclusive(dir.path())
            .unwrap()
            .live_leases()
            .unwrap();
        assert_eq!(live.count, 2);
        let names: std::collections::HashSet<String> =
            [written.to_string(), absent.to_string()].into();
        assert_eq!(live.blobs, names);
        // A blob a collection removed before it was named is absent, and stored again.
        store.remove(&written).unwrap();
        assert!(!store.contains(&written));
        store.put(b"layer").unwrap();
        assert!(store.contains(&written));
    }

    #[test]
    fn concurrent_writers_of_one_blob_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| store.ingest(&data[..], None)))
                .collect();
            for h in handles {
                assert_eq!(h.join().unwrap().unwrap().size, data.len() as u64);
            }
        });
        store.verify(&sha256(&data)).unwrap();
    }
}
