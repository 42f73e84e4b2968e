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
//! This module keeps the records; what a snapshot's content holds, and how it is prepared,
//! mounted and diffed, is its driver's (`driver::Driver`, implemented by `overlay` and
//! `native`).

mod driver;
mod error;
mod kind;
mod mount;
mod native;
mod overlay;

pub use driver::LayerTarget;
pub use error::{OverlayProbeError, SnapshotError};
pub use kind::{DriverKind, SnapshotKind};
pub use mount::MountSpec;
pub(crate) use mount::{bind_mount, remount_read_only};

use std::fs::File;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use umstage_oci::changes::ChangeSet;
use umstage_oci::lease::flock;

use crate::fsutil::{self, at};
use driver::{Driver, Lowers};

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
    driver: Box<dyn Driver>,
    reason: String,
    lease_id: String,
    _lease: File,
}

impl Snapshotter {
    /// Opens (creating) the snapshots under `state_root` with the chosen driver.
    ///
    /// Needs to run inside the user namespace for overlay (see [`crate::userns::enter`]).
    pub fn open(state_root: &Path, choice: DriverChoice) -> Result<Self, SnapshotError> {
        fsutil::ensure_dir(state_root)?;
        // Outside any namespace a mount would land in the caller's own mount namespace.
        let chroot = crate::doctor::active_tier().is_some_and(crate::doctor::Tier::mounts_nothing);
        // Only the ptrace supervisor sees every write a step makes, and copies shared files up.
        let linked = crate::doctor::active_tier() == Some(crate::doctor::Tier::Ptrace);
        let (kind, reason) = match choice {
            DriverChoice::Overlay if chroot => {
                return Err(SnapshotError::OverlayUnavailable(
                    OverlayProbeError::ChrootTier,
                ));
            }
            DriverChoice::Auto if chroot => (
                DriverKind::Native,
                format!(
                    "the {} sandbox tier mounts nothing; {}",
                    crate::doctor::active_tier().map_or("chroot", crate::doctor::Tier::name),
                    native::detail(state_root, linked)
                ),
            ),
            DriverChoice::Overlay => match overlay::probe(state_root) {
                Ok(detail) => (DriverKind::Overlay, format!("asked for; {detail}")),
                Err(e) => return Err(e),
            },
            DriverChoice::Native => (
                DriverKind::Native,
                format!("asked for; {}", native::detail(state_root, linked)),
            ),
            DriverChoice::Auto => match overlay::probe(state_root) {
                Ok(detail) => (DriverKind::Overlay, detail),
                Err(e) => (
                    DriverKind::Native,
                    format!(
                        "overlay unavailable ({e}); {}",
                        native::detail(state_root, linked)
                    ),
                ),
            },
        };
        let root = state_root.join("snapshots").join(kind.to_string());
        let driver: Box<dyn Driver> = match kind {
            DriverKind::Overlay => Box::new(overlay::Overlay {
                empty: root.join("empty"),
            }),
            DriverKind::Native => Box::new(native::Native {
                empty: root.join("empty"),
                linked,
            }),
        };
        for sub in ["meta", "data", "empty", "leases", "trash"] {
            fsutil::ensure_dir(&root.join(sub))?;
        }
        fsutil::mark_top_directory(&root.join("data"));
        let lease_id = fsutil::random_id();
        // Locked before it is visible under its name: another process's collection (every
        // prune opens a snapshotter) must never see a live lease unlocked and take it for dead.
        let hidden = root.join("leases").join(format!(".{lease_id}"));
        let lease = File::create(&hidden).map_err(at("create", &hidden))?;
        flock(&lease, libc::LOCK_EX).map_err(at("lock", &hidden))?;
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
        tracing::debug!(driver = %snapshotter.driver(), reason = %snapshotter.reason, "snapshotter open");
        Ok(snapshotter)
    }

    /// The driver in use.
    pub fn driver(&self) -> DriverKind {
        self.driver.kind()
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
        let filled = if kind == SnapshotKind::Active {
            self.driver.prepare(&data.join("fs"), &self.below(parent))
        } else {
            std::fs::create_dir(data.join("fs"))
                .map_err(at("mkdir", &data.join("fs")))
                .map_err(SnapshotError::from)
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
        let mount =
            self.driver
                .mounts(&data, record.kind, &self.below(record.parent.as_deref()))?;
        Ok(vec![mount])
    }

    /// Where to unpack a layer into the active snapshot `key`, and how.
    pub fn layer_target(&self, key: &str) -> Result<LayerTarget, SnapshotError> {
        let fs = self.data_dir(&self.active(key)?.dir).join("fs");
        Ok(self.driver.layer_target(fs))
    }

    /// What the active snapshot `key` changed relative to its parent.
    pub fn diff(&self, key: &str) -> Result<ChangeSet, SnapshotError> {
        let record = self.active(key)?;
        let fs = self.data_dir(&record.dir).join("fs");
        let changes = self
            .driver
            .diff(&fs, &self.below(record.parent.as_deref()))?;
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
        let specs = self.mounts(key)?;
        // The chroot and ptrace tiers may not mount: a native snapshot is one whole tree, used in place.
        if crate::doctor::active_tier().is_some_and(crate::doctor::Tier::mounts_nothing)
            && let [spec] = specs.as_slice()
            && spec.fstype == "bind"
        {
            return Ok(MountGuard {
                target: spec.source.clone(),
                mounted: false,
            });
        }
        let target = self.data_dir(&record.dir).join("merged");
        fsutil::ensure_dir(&target)?;
        for spec in specs {
            spec.mount_at(&target)
                .map_err(at("mount snapshot on", &target))?;
        }
        Ok(MountGuard {
            target,
            mounted: true,
        })
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

    /// What a snapshot with the committed `parent` sits on, read when the driver asks.
    fn below<'a>(&'a self, parent: Option<&'a str>) -> Below<'a> {
        Below {
            snapshots: self,
            parent,
        }
    }

    /// The content dir of the active snapshot `key` and the dirs below it, top first.
    pub(crate) fn layers_of_active(
        &self,
        key: &str,
    ) -> Result<(PathBuf, Vec<PathBuf>), SnapshotError> {
        let record = self.active(key)?;
        let fs = self.data_dir(&record.dir).join("fs");
        let below = self.driver.below(&self.below(record.parent.as_deref()))?;
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
        let file = umstage_oci::regular::open_with(
            File::options().create(true).truncate(false).write(true),
            &path,
        )
        .map_err(at("open", &path))?;
        flock(&file, libc::LOCK_EX).map_err(at("lock", &path))?;
        Ok(file)
    }

    fn read_record(&self, key: &str) -> Result<Option<Record>, SnapshotError> {
        let path = self.record_path(key);
        let bytes = match umstage_oci::regular::read(&path) {
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
            match umstage_oci::regular::read(&entry.path()) {
                Ok(bytes) => match serde_json::from_slice::<Record>(&bytes) {
                    Ok(record) => records.push(record),
                    Err(e) => {
                        tracing::warn!(path = %entry.path().display(), "skipping corrupt snapshot record: {e}")
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) if umstage_oci::regular::is_not_regular(&e) => {
                    tracing::warn!(path = %entry.path().display(), "skipping a snapshot record: {e}")
                }
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
            let Ok(file) = umstage_oci::regular::open(&entry.path()) else {
                continue;
            };
            if flock(&file, libc::LOCK_EX | libc::LOCK_NB).is_ok() {
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
            } else if (meta.is_file() && meta.len() == 0) || meta.file_type().is_char_device() {
                // Empty mount-point files, and the chroot tier's /dev nodes.
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
            let Some(before) = self.driver.lookup_below(&below, &parent) else {
                continue;
            };
            let untouched = self.driver.untouched(&here, &below, &parent);
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

/// The committed snapshots below one snapshot, as records under this snapshotter.
struct Below<'a> {
    snapshots: &'a Snapshotter,
    parent: Option<&'a str>,
}

impl Lowers for Below<'_> {
    fn parent(&self) -> Result<Option<PathBuf>, SnapshotError> {
        self.parent
            .map(|p| {
                let record = self.snapshots.committed(p)?;
                Ok(self.snapshots.data_dir(&record.dir).join("fs"))
            })
            .transpose()
    }

    fn chain(&self) -> Result<Vec<PathBuf>, SnapshotError> {
        self.snapshots.lower_dirs(self.parent)
    }
}

/// A snapshot mounted in this process's mount namespace; unmounted on drop.
#[derive(Debug)]
pub struct MountGuard {
    target: PathBuf,
    /// False where the tree is used in place (the chroot tier): nothing to unmount.
    mounted: bool,
}

impl MountGuard {
    /// Where the snapshot is mounted.
    pub fn path(&self) -> &Path {
        &self.target
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        if let Err(e) = nix::mount::umount2(&self.target, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!(target = %self.target.display(), "unmounting snapshot: {e}");
        }
    }
}
