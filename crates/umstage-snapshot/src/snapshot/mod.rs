//! Snapshots keyed by chain id under the state root, as containerd's snapshotter interface.
//!
//! Layout under `<state root>/snapshots/<driver>/`:
//! `meta/<sha256(key)>.json` one record per snapshot; `data/<id>/fs` its content (overlay:
//! the layer's own files, an upper dir; native: a whole tree), `data/<id>/work` the overlay
//! work dir, `data/<id>/merged` where it is mounted; `empty/` an empty lower;
//! `leases/<id>` one locked file per open [`Snapshotter`] (locked as `.<id>`, then renamed);
//! `lock` serialises record changes.
//! Committed snapshots are shared by every build; active ones belong to the snapshotter
//! that made them and are removed when it goes away, even by SIGKILL (next open collects them).

mod mount;

pub use mount::MountSpec;
pub(crate) use mount::{bind_mount, mount_overlay, remount_read_only};

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use umstage_oci::changes::ChangeSet;

use crate::fsutil::{self, PathError, at};

/// Which snapshot driver the user asked for (`--snapshotter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DriverChoice {
    /// The best driver that works here.
    #[default]
    Auto,
    /// Native overlayfs in the user namespace.
    Overlay,
    /// Copies (reflink where the filesystem can).
    Native,
}

impl FromStr for DriverChoice {
    type Err = SnapshotError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "auto" => Ok(Self::Auto),
            "overlay" | "overlayfs" => Ok(Self::Overlay),
            "native" => Ok(Self::Native),
            other => Err(SnapshotError::UnknownDriver(other.to_string())),
        }
    }
}

/// A snapshot driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Driver {
    /// Native overlayfs with `userxattr`: a snapshot holds one layer's changes.
    Overlay,
    /// Copying: a snapshot holds a whole tree.
    Native,
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Driver::Overlay => "overlay",
            Driver::Native => "native",
        })
    }
}

/// The state of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotKind {
    /// Writable, made by `prepare`.
    Active,
    /// Read-only, made by `view`.
    View,
    /// Read-only and shared, made by `commit`.
    Committed,
}

impl std::fmt::Display for SnapshotKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SnapshotKind::Active => "active",
            SnapshotKind::View => "a view",
            SnapshotKind::Committed => "committed",
        })
    }
}

/// What is known about one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Its key (a chain id for committed snapshots).
    pub key: String,
    /// Active, view or committed.
    pub kind: SnapshotKind,
    /// The committed snapshot it was made from.
    pub parent: Option<String>,
}

/// What `commit` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The snapshot is now committed under the name.
    Committed,
    /// Another build had committed the same name already; the active snapshot was dropped.
    AlreadyExisted,
}

/// Where a layer is unpacked into an active snapshot, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerTarget {
    /// Write the layer's own entries here, whiteouts as overlay whiteouts (0:0 character
    /// devices) and opaque directories marked `user.overlay.opaque=y` (overlay driver).
    Diff(PathBuf),
    /// Apply the layer onto the full tree here: whiteouts delete (native driver).
    Apply(PathBuf),
}

/// Why a snapshot operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// `--snapshotter` named no driver.
    #[error("unknown snapshotter {0:?}: expected auto, overlay or native")]
    UnknownDriver(String),
    /// The key is taken.
    #[error("snapshot {0} already exists")]
    AlreadyExists(String),
    /// No snapshot has the key.
    #[error("snapshot {0} does not exist")]
    NotFound(String),
    /// The snapshot is in the wrong state for the operation.
    #[error("snapshot {key} is {actual}, not {expected}")]
    WrongKind {
        /// The snapshot.
        key: String,
        /// What it is.
        actual: SnapshotKind,
        /// What the operation needs.
        expected: SnapshotKind,
    },
    /// Other snapshots are built on it.
    #[error("snapshot {key} has children (for example {child}); remove them first")]
    HasChildren {
        /// The snapshot.
        key: String,
        /// One child.
        child: String,
    },
    /// The overlay driver was asked for, but the state root is on overlayfs.
    #[error(
        "the overlay snapshotter cannot keep snapshots in {0}: it is on overlayfs (as inside a container), where an upper dir cannot live; put the state root on a volume (for example an emptyDir) or use --snapshotter native"
    )]
    StateRootOnOverlay(PathBuf),
    /// The overlay driver was asked for, but overlayfs does not work here.
    #[error("the overlay snapshotter does not work here: {0}")]
    OverlayUnavailable(String),
    /// A record under the state root cannot be read.
    #[error("snapshot record {path} is corrupt: {reason}")]
    CorruptRecord {
        /// The record file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A filesystem operation failed.
    #[error(transparent)]
    Io(#[from] PathError),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    key: String,
    kind: SnapshotKind,
    parent: Option<String>,
    dir: String,
    lease: Option<String>,
}

/// Snapshots of one driver under a state root; safe to share between threads and processes.
#[derive(Debug)]
pub struct Snapshotter {
    state_root: PathBuf,
    root: PathBuf,
    driver: Driver,
    reason: String,
    lease_id: String,
    _lease: File,
}

const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;

impl Snapshotter {
    /// Opens (creating) the snapshots under `state_root` with the chosen driver.
    ///
    /// Needs to run inside the user namespace for overlay (see [`crate::userns::enter`]).
    pub fn open(state_root: &Path, choice: DriverChoice) -> Result<Self, SnapshotError> {
        fsutil::ensure_dir(state_root)?;
        let (driver, reason) = match choice {
            DriverChoice::Overlay => match probe_overlay(state_root) {
                Ok(detail) => (Driver::Overlay, format!("asked for; {detail}")),
                Err(e) => return Err(e),
            },
            DriverChoice::Native => (
                Driver::Native,
                format!("asked for; {}", native_detail(state_root)),
            ),
            DriverChoice::Auto => match probe_overlay(state_root) {
                Ok(detail) => (Driver::Overlay, detail),
                Err(e) => (
                    Driver::Native,
                    format!("overlay unavailable ({e}); {}", native_detail(state_root)),
                ),
            },
        };
        let root = state_root.join("snapshots").join(driver.to_string());
        for sub in ["meta", "data", "empty", "leases", "trash"] {
            fsutil::ensure_dir(&root.join(sub))?;
        }
        fsutil::mark_top_directory(&root.join("data"));
        let lease_id = fsutil::random_id();
        // Locked before it is visible under its name: another process's collection (every
        // prune opens a snapshotter) must never see a live lease unlocked and take it for dead.
        let hidden = root.join("leases").join(format!(".{lease_id}"));
        let lease = File::create(&hidden).map_err(at("create", &hidden))?;
        flock_file(&lease, libc::LOCK_EX).map_err(at("lock", &hidden))?;
        let lease_path = root.join("leases").join(&lease_id);
        if let Err(e) = std::fs::rename(&hidden, &lease_path) {
            let _ = std::fs::remove_file(&hidden);
            return Err(at("rename", &lease_path)(e).into());
        }
        let snapshotter = Self {
            state_root: state_root.to_path_buf(),
            root,
            driver,
            reason,
            lease_id,
            _lease: lease,
        };
        snapshotter.collect_abandoned()?;
        tracing::debug!(driver = %snapshotter.driver, reason = %snapshotter.reason, "snapshotter open");
        Ok(snapshotter)
    }

    /// The driver in use.
    pub fn driver(&self) -> Driver {
        self.driver
    }

    /// Why this driver was chosen (for `umstage info` and progress output).
    pub fn selection_reason(&self) -> &str {
        &self.reason
    }

    /// The state root the snapshots live under.
    pub fn state_root(&self) -> &Path {
        &self.state_root
    }

    /// Makes a writable snapshot `key` on top of the committed `parent` (or empty).
    pub fn prepare(&self, key: &str, parent: Option<&str>) -> Result<(), SnapshotError> {
        self.create(key, parent, SnapshotKind::Active)
    }

    /// Makes a read-only snapshot `key` showing the committed `parent`.
    pub fn view(&self, key: &str, parent: &str) -> Result<(), SnapshotError> {
        self.create(key, Some(parent), SnapshotKind::View)
    }

    fn create(
        &self,
        key: &str,
        parent: Option<&str>,
        kind: SnapshotKind,
    ) -> Result<(), SnapshotError> {
        let dir = fsutil::random_id();
        let record = Record {
            key: key.to_string(),
            kind,
            parent: parent.map(str::to_string),
            dir: dir.clone(),
            lease: Some(self.lease_id.clone()),
        };
        let data = self.data_dir(&dir);
        {
            let _lock = self.lock()?;
            if self.read_record(key)?.is_some() {
                return Err(SnapshotError::AlreadyExists(key.to_string()));
            }
            if let Some(parent) = parent {
                let parent_record = self.committed(parent)?;
                drop(parent_record);
            }
            fsutil::ensure_dir(&data.join("work"))?;
            self.write_record(&record)?;
        }
        let filled = match (self.driver, kind, parent) {
            (Driver::Native, SnapshotKind::Active, Some(parent)) => {
                let from = self.data_dir(&self.committed(parent)?.dir).join("fs");
                fsutil::copy_tree(&from, &data.join("fs")).map_err(SnapshotError::from)
            }
            _ => std::fs::create_dir(data.join("fs"))
                .map_err(at("mkdir", &data.join("fs")))
                .map_err(SnapshotError::from),
        };
        if let Err(e) = filled {
            let _ = self.remove(key);
            return Err(e);
        }
        Ok(())
    }

    /// Commits the active snapshot `key` as the read-only, shared `name` (a chain id).
    pub fn commit(&self, name: &str, key: &str) -> Result<CommitOutcome, SnapshotError> {
        let record = self.active(key)?;
        let outcome = {
            let _lock = self.lock()?;
            if self.read_record(name)?.is_some() {
                self.delete_record(key)?;
                CommitOutcome::AlreadyExisted
            } else {
                let committed = Record {
                    key: name.to_string(),
                    kind: SnapshotKind::Committed,
                    parent: record.parent.clone(),
                    dir: record.dir.clone(),
                    lease: None,
                };
                self.write_record(&committed)?;
                self.delete_record(key)?;
                CommitOutcome::Committed
            }
        };
        // A committed snapshot keeps its (empty) overlay work dir: removing it costs a step
        // more I/O than the inode it holds; `remove` takes it with the rest.
        if outcome == CommitOutcome::AlreadyExisted {
            self.discard_data(&record.dir)?;
        }
        Ok(outcome)
    }

    /// Removes a snapshot that no other snapshot is built on.
    pub fn remove(&self, key: &str) -> Result<(), SnapshotError> {
        let record = {
            let _lock = self.lock()?;
            let record = self
                .read_record(key)?
                .ok_or_else(|| SnapshotError::NotFound(key.to_string()))?;
            if let Some(child) = self
                .records()?
                .into_iter()
                .find(|r| r.parent.as_deref() == Some(key))
            {
                return Err(SnapshotError::HasChildren {
                    key: key.to_string(),
                    child: child.key,
                });
            }
            self.delete_record(key)?;
            record
        };
        self.discard_data(&record.dir)
    }

    /// What is known about a snapshot.
    pub fn stat(&self, key: &str) -> Result<Info, SnapshotError> {
        let record = self
            .read_record(key)?
            .ok_or_else(|| SnapshotError::NotFound(key.to_string()))?;
        Ok(Info {
            key: record.key,
            kind: record.kind,
            parent: record.parent,
        })
    }

    /// Every committed snapshot (for garbage collection).
    pub fn list_committed(&self) -> Result<Vec<Info>, SnapshotError> {
        Ok(self
            .records()?
            .into_iter()
            .filter(|r| r.kind == SnapshotKind::Committed)
            .map(|r| Info {
                key: r.key,
                kind: r.kind,
                parent: r.parent,
            })
            .collect())
    }

    /// Whether a committed snapshot `name` exists (a cache hit for a chain id).
    pub fn has_committed(&self, name: &str) -> Result<bool, SnapshotError> {
        Ok(matches!(self.read_record(name)?, Some(r) if r.kind == SnapshotKind::Committed))
    }

    /// How to mount the snapshot: writable for active ones, read-only otherwise.
    pub fn mounts(&self, key: &str) -> Result<Vec<MountSpec>, SnapshotError> {
        let record = self
            .read_record(key)?
            .ok_or_else(|| SnapshotError::NotFound(key.to_string()))?;
        let data = self.data_dir(&record.dir);
        let mount = match (self.driver, record.kind) {
            (Driver::Native, SnapshotKind::Active) => MountSpec::bind(&data.join("fs"), false),
            (Driver::Native, SnapshotKind::Committed) => MountSpec::bind(&data.join("fs"), true),
            (Driver::Native, SnapshotKind::View) => {
                let parent = record.parent.as_deref().unwrap_or_default();
                MountSpec::bind(
                    &self.data_dir(&self.committed(parent)?.dir).join("fs"),
                    true,
                )
            }
            (Driver::Overlay, SnapshotKind::Active) => {
                let mut lowers = self.lower_dirs(record.parent.as_deref())?;
                if lowers.is_empty() {
                    lowers.push(self.root.join("empty"));
                }
                MountSpec::overlay(&lowers, Some((&data.join("fs"), &data.join("work"))))
            }
            (Driver::Overlay, kind) => {
                let top = if kind == SnapshotKind::Committed {
                    Some(key)
                } else {
                    record.parent.as_deref()
                };
                let mut lowers = self.lower_dirs(top)?;
                // A read-only overlay needs two lowers.
                while lowers.len() < 2 {
                    lowers.push(self.root.join("empty"));
                }
                MountSpec::overlay(&lowers, None)
            }
        };
        Ok(vec![mount])
    }

    /// Where to unpack a layer into the active snapshot `key`, and how.
    pub fn layer_target(&self, key: &str) -> Result<LayerTarget, SnapshotError> {
        let fs = self.data_dir(&self.active(key)?.dir).join("fs");
        Ok(match self.driver {
            Driver::Overlay => LayerTarget::Diff(fs),
            Driver::Native => LayerTarget::Apply(fs),
        })
    }

    /// What the active snapshot `key` changed relative to its parent.
    pub fn diff(&self, key: &str) -> Result<ChangeSet, SnapshotError> {
        let record = self.active(key)?;
        let fs = self.data_dir(&record.dir).join("fs");
        let changes = match self.driver {
            Driver::Overlay => {
                let lowers = self.lower_dirs(record.parent.as_deref())?;
                crate::diff::overlay_changes(&fs, &lowers)?
            }
            Driver::Native => {
                let parent = match record.parent.as_deref() {
                    Some(parent) => self.data_dir(&self.committed(parent)?.dir).join("fs"),
                    None => self.root.join("empty"),
                };
                crate::diff::tree_changes(&parent, &fs)?
            }
        };
        Ok(ChangeSet {
            source: fs,
            changes,
        })
    }

    /// Mounts the snapshot in this process's mount namespace until the guard drops (for COPY).
    ///
    /// Do not run a step on an active snapshot while it is mounted here.
    pub fn mount(&self, key: &str) -> Result<MountGuard, SnapshotError> {
        let record = self
            .read_record(key)?
            .ok_or_else(|| SnapshotError::NotFound(key.to_string()))?;
        let target = self.data_dir(&record.dir).join("merged");
        fsutil::ensure_dir(&target)?;
        for spec in self.mounts(key)? {
            spec.mount_at(&target)
                .map_err(at("mount snapshot on", &target))?;
        }
        Ok(MountGuard { target })
    }

    /// The content directory of the active snapshot `key`.
    pub(crate) fn active_dir(&self, key: &str) -> Result<PathBuf, SnapshotError> {
        Ok(self.data_dir(&self.active(key)?.dir).join("fs"))
    }

    /// The content directories of a committed snapshot and its ancestors, top first.
    pub(crate) fn lower_dirs(&self, top: Option<&str>) -> Result<Vec<PathBuf>, SnapshotError> {
        let mut lowers = Vec::new();
        let mut next = top.map(str::to_string);
        while let Some(key) = next {
            let record = self.committed(&key)?;
            lowers.push(self.data_dir(&record.dir).join("fs"));
            next = record.parent;
            if lowers.len() > 100_000 {
                return Err(SnapshotError::CorruptRecord {
                    path: self.record_path(&key),
                    reason: "the parent chain loops".into(),
                });
            }
        }
        Ok(lowers)
    }

    /// The content dir of the active snapshot `key` and the dirs below it, top first.
    pub(crate) fn layers_of_active(
        &self,
        key: &str,
    ) -> Result<(PathBuf, Vec<PathBuf>), SnapshotError> {
        let record = self.active(key)?;
        let fs = self.data_dir(&record.dir).join("fs");
        let below = match self.driver {
            Driver::Overlay => self.lower_dirs(record.parent.as_deref())?,
            Driver::Native => match record.parent.as_deref() {
                Some(parent) => vec![self.data_dir(&self.committed(parent)?.dir).join("fs")],
                None => Vec::new(),
            },
        };
        Ok((fs, below))
    }

    fn active(&self, key: &str) -> Result<Record, SnapshotError> {
        self.of_kind(key, SnapshotKind::Active)
    }

    fn committed(&self, key: &str) -> Result<Record, SnapshotError> {
        self.of_kind(key, SnapshotKind::Committed)
    }

    fn of_kind(&self, key: &str, expected: SnapshotKind) -> Result<Record, SnapshotError> {
        let record = self
            .read_record(key)?
            .ok_or_else(|| SnapshotError::NotFound(key.to_string()))?;
        if record.kind != expected {
            return Err(SnapshotError::WrongKind {
                key: key.to_string(),
                actual: record.kind,
                expected,
            });
        }
        Ok(record)
    }

    fn data_dir(&self, dir: &str) -> PathBuf {
        self.root.join("data").join(dir)
    }

    fn record_path(&self, key: &str) -> PathBuf {
        self.root
            .join("meta")
            .join(format!("{}.json", fsutil::sha256_hex(key)))
    }

    fn lock(&self) -> Result<File, SnapshotError> {
        let path = self.root.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(at("open", &path))?;
        flock_file(&file, libc::LOCK_EX).map_err(at("lock", &path))?;
        Ok(file)
    }

    fn read_record(&self, key: &str) -> Result<Option<Record>, SnapshotError> {
        let path = self.record_path(key);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(at("read", &path)(e).into()),
        };
        let record: Record =
            serde_json::from_slice(&bytes).map_err(|e| SnapshotError::CorruptRecord {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if record.key != key {
            return Err(SnapshotError::CorruptRecord {
                path,
                reason: format!("it names {:?}, not {key:?}", record.key),
            });
        }
        Ok(Some(record))
    }

    /// Writes a new record atomically; an existing one is an error.
    fn write_record(&self, record: &Record) -> Result<(), SnapshotError> {
        let path = self.record_path(&record.key);
        let tmp = self
            .root
            .join("meta")
            .join(format!(".tmp-{}", fsutil::random_id()));
        let bytes = serde_json::to_vec(record).map_err(|e| SnapshotError::CorruptRecord {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        std::fs::write(&tmp, bytes).map_err(at("write", &tmp))?;
        if let Err(e) = fsutil::rename_noreplace(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            if e.kind() == io::ErrorKind::AlreadyExists {
                return Err(SnapshotError::AlreadyExists(record.key.clone()));
            }
            return Err(at("rename", &path)(e).into());
        }
        Ok(())
    }

    fn delete_record(&self, key: &str) -> Result<(), SnapshotError> {
        let path = self.record_path(key);
        std::fs::remove_file(&path).map_err(|e| at("remove", &path)(e).into())
    }

    fn records(&self) -> Result<Vec<Record>, SnapshotError> {
        let meta = self.root.join("meta");
        let mut records = Vec::new();
        for entry in std::fs::read_dir(&meta).map_err(at("read dir", &meta))? {
            let entry = entry.map_err(at("read dir", &meta))?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            match std::fs::read(entry.path()) {
                Ok(bytes) => match serde_json::from_slice::<Record>(&bytes) {
                    Ok(record) => records.push(record),
                    Err(e) => {
                        tracing::warn!(path = %entry.path().display(), "skipping corrupt snapshot record: {e}")
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(at("read", &entry.path())(e).into()),
            }
        }
        Ok(records)
    }

    /// Moves a data dir to the trash and deletes it.
    fn discard_data(&self, dir: &str) -> Result<(), SnapshotError> {
        let from = self.data_dir(dir);
        let to = self.root.join("trash").join(dir);
        match std::fs::rename(&from, &to) {
            Ok(()) => Ok(fsutil::remove_tree(&to)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(_) => Ok(fsutil::remove_tree(&from)?),
        }
    }

    /// Removes active snapshots and views whose snapshotter is gone, and old trash.
    fn collect_abandoned(&self) -> Result<(), SnapshotError> {
        let leases_dir = self.root.join("leases");
        let mut dead = Vec::new();
        let _lock = self.lock()?;
        for entry in std::fs::read_dir(&leases_dir).map_err(at("read dir", &leases_dir))? {
            let entry = entry.map_err(at("read dir", &leases_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == self.lease_id || name.starts_with('.') {
                continue;
            }
            let Ok(file) = File::open(entry.path()) else {
                continue;
            };
            if flock_file(&file, libc::LOCK_EX | libc::LOCK_NB).is_ok() {
                dead.push((name, entry.path()));
            }
        }
        if dead.is_empty() {
            return Ok(());
        }
        let mut abandoned: Vec<Record> = self
            .records()?
            .into_iter()
            .filter(|r| {
                r.lease
                    .as_ref()
                    .is_some_and(|l| dead.iter().any(|(d, _)| d == l))
            })
            .collect();
        // Children first, so no parent disappears under a child.
        abandoned.sort_by_key(|r| std::cmp::Reverse(r.parent.is_some()));
        for record in abandoned {
            tracing::debug!(key = %record.key, "removing abandoned snapshot");
            self.delete_record(&record.key)?;
            self.discard_data(&record.dir)?;
        }
        for (_, path) in dead {
            let _ = std::fs::remove_file(path);
        }
        let trash = self.root.join("trash");
        if let Ok(entries) = std::fs::read_dir(&trash) {
            for entry in entries.flatten() {
                let _ = fsutil::remove_tree(&entry.path());
            }
        }
        Ok(())
    }

    /// Removes the mount stubs the sandbox made in an active snapshot, restoring the
    /// times of the directories they were made in when nothing else changed there.
    pub(crate) fn remove_stubs(&self, key: &str, stubs: &[PathBuf]) -> Result<(), SnapshotError> {
        if stubs.is_empty() {
            return Ok(());
        }
        let (fs, below) = self.layers_of_active(key)?;
        let mut parents = Vec::new();
        for stub in stubs.iter().rev() {
            let path = fs.join(stub);
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let removed = if meta.is_dir() {
                std::fs::remove_dir(&path).is_ok()
            } else if meta.is_file() && meta.len() == 0 {
                std::fs::remove_file(&path).is_ok()
            } else {
                false
            };
            if removed && let Some(parent) = stub.parent() {
                parents.push(parent.to_path_buf());
            }
        }
        for parent in parents {
            if stubs.contains(&parent) {
                continue;
            }
            let here = fs.join(&parent);
            let Some(before) = crate::diff::lookup_lower(&below, &parent, self.driver) else {
                continue;
            };
            let untouched = match self.driver {
                Driver::Overlay => {
                    std::fs::read_dir(&here)
                        .map(|mut d| d.next().is_none())
                        .unwrap_or(false)
                        && !fsutil::is_opaque_dir(&here)
                }
                Driver::Native => crate::diff::same_children(&here, &below[0].join(&parent)),
            };
            if untouched && before.is_dir() {
                fsutil::set_times(&here, &before).map_err(at("set times", &here))?;
            }
        }
        Ok(())
    }
}

impl Drop for Snapshotter {
    fn drop(&mut self) {
        let Ok(records) = self.records() else { return };
        for record in records
            .into_iter()
            .filter(|r| r.lease.as_deref() == Some(self.lease_id.as_str()))
        {
            let _ = self.remove(&record.key);
        }
        let _ = std::fs::remove_file(self.root.join("leases").join(&self.lease_id));
    }
}

/// A snapshot mounted in this process's mount namespace; unmounted on drop.
#[derive(Debug)]
pub struct MountGuard {
    target: PathBuf,
}

impl MountGuard {
    /// Where the snapshot is mounted.
    pub fn path(&self) -> &Path {
        &self.target
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount2(&self.target, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!(target = %self.target.display(), "unmounting snapshot: {e}");
        }
    }
}

/// `flock(2)`, retried on EINTR.
pub(crate) fn flock_file(file: &File, operation: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock on an fd owned by `file`.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Checks that overlayfs with `userxattr` works under the state root: whiteouts included.
fn probe_overlay(state_root: &Path) -> Result<String, SnapshotError> {
    let fs =
        nix::sys::statfs::statfs(state_root).map_err(|e| at("statfs", state_root)(e.into()))?;
    if fs.filesystem_type().0 as i64 == OVERLAYFS_SUPER_MAGIC {
        return Err(SnapshotError::StateRootOnOverlay(state_root.to_path_buf()));
    }
    let probe = state_root.join(format!("overlay-probe-{}", fsutil::random_id()));
    let result = (|| -> Result<(), String> {
        for sub in ["l1/dir", "l2", "upper", "work", "merged"] {
            std::fs::create_dir_all(probe.join(sub)).map_err(|e| format!("mkdir: {e}"))?;
        }
        mount_overlay(
            &[probe.join("l1"), probe.join("l2")],
            Some((&probe.join("upper"), &probe.join("work"))),
            &probe.join("merged"),
        )
        .map_err(|e| format!("mounting overlayfs with userxattr: {e}"))?;
        let removed = std::fs::remove_dir(probe.join("merged/dir"));
        let _ = nix::mount::umount2(&probe.join("merged"), nix::mount::MntFlags::MNT_DETACH);
        removed.map_err(|e| format!("removing a lower directory through overlayfs: {e}"))?;
        let whiteout = std::fs::symlink_metadata(probe.join("upper/dir"))
            .map_err(|e| format!("no whiteout in the upper dir: {e}"))?;
        if !fsutil::is_whiteout(&whiteout) {
            return Err("the upper dir holds no 0:0 whiteout".into());
        }
        Ok(())
    })();
    let _ = fsutil::remove_tree(&probe);
    result.map_err(SnapshotError::OverlayUnavailable)?;
    let fs_name = filesystem_name(fs.filesystem_type().0 as i64);
    Ok(format!(
        "overlayfs with userxattr works on {} ({fs_name})",
        state_root.display()
    ))
}

fn native_detail(state_root: &Path) -> String {
    if fsutil::supports_reflink(state_root) {
        "copying snapshots share file data by reflink".into()
    } else {
        "copying snapshots copy file data (no reflink on this filesystem)".into()
    }
}

fn filesystem_name(magic: i64) -> &'static str {
    match magic {
        0xef53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683e => "btrfs",
        0x0102_1994 => "tmpfs",
        0x794c_7630 => "overlayfs",
        0x6573_5546 => "fuse",
        _ => "filesystem",
    }
}
