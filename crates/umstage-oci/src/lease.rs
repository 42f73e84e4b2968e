//! Leases on a state root, as containerd has them: a running build names in its lease every blob
//! and snapshot it relies on, before it relies on it, and garbage collection keeps everything a
//! live lease names.
//!
//! `<state root>/leases/<id>` is one build's lease: a file held with an exclusive `flock` for the
//! build's life, so the lease of a killed build is recognisably dead (anyone can lock it) and is
//! removed by the next collection. Each line names one thing: `blob sha256:…` or
//! `snapshot <chain id>`.
//!
//! The state root directory itself is the GC lock (it is never removed, so every process locks
//! the same inode). A build appends to its lease under a shared `flock` of it; a collector reads
//! the leases and removes what no one needs under an exclusive one. A name is therefore appended
//! either before the collector reads the leases (and is kept) or after it is done (and the build,
//! which looks for the thing only after naming it, finds it gone and makes it again).

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::digest::Digest;

/// A lease could not be taken, written or read.
#[derive(Debug, thiserror::Error)]
#[error("build lease: {action} {}: {source}", path.display())]
pub struct LeaseError {
    action: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LeaseError + 'a {
    move |source| LeaseError {
        action,
        path: path.to_owned(),
        source,
    }
}

const BLOB: &str = "blob ";
const SNAPSHOT: &str = "snapshot ";

/// One running build's lease: what it names stays under the state root until it is dropped.
#[derive(Debug)]
pub struct Lease {
    path: PathBuf,
    /// The state root, flocked shared while appending.
    root: File,
    inner: Mutex<Held>,
}

#[derive(Debug)]
struct Held {
    /// The lease file, opened for appending and flocked exclusively for the lease's life.
    file: File,
    names: HashSet<String>,
}

impl Lease {
    /// Takes a new lease on `state_root` (creating it), waiting while a collection runs.
    pub fn acquire(state_root: &Path) -> Result<Self, LeaseError> {
        fs::create_dir_all(state_root).map_err(io_err("creating", state_root))?;
        let root = File::open(state_root).map_err(io_err("opening", state_root))?;
        // Shared: a collection never sees the file between its creation and its lock, when it
        // would look dead, nor empties the root in between.
        flock(&root, libc::LOCK_SH).map_err(io_err("locking", state_root))?;
        let made = (|| {
            let dir = state_root.join("leases");
            fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
            let path = dir.join(unique_id());
            let file = File::options()
                .append(true)
                .create_new(true)
                .open(&path)
                .map_err(io_err("creating", &path))?;
            flock(&file, libc::LOCK_EX | libc::LOCK_NB).map_err(io_err("locking", &path))?;
            Ok((path, file))
        })();
        let _ = flock(&root, libc::LOCK_UN);
        let (path, file) = made?;
        Ok(Lease {
            path,
            root,
            inner: Mutex::new(Held {
                file,
                names: HashSet::new(),
            }),
        })
    }

    /// Names a blob in the lease (once; later calls cost a set lookup).
    pub fn hold_blob(&self, digest: &Digest) -> Result<(), LeaseError> {
        self.hold([format!("{BLOB}{digest}")])
    }

    /// Names committed snapshots (by chain id) in the lease.
    pub fn hold_snapshots<'a>(
        &self,
        chains: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), LeaseError> {
        self.hold(chains.into_iter().map(|c| format!("{SNAPSHOT}{c}")))
    }

    fn hold(&self, names: impl IntoIterator<Item = String>) -> Result<(), LeaseError> {
        // The mutex also keeps this process's threads from sharing the one shared flock (an
        // unlock by one would end another's).
        let mut held = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let new: Vec<String> = names
            .into_iter()
            .filter(|n| !held.names.contains(n))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for name in &new {
            text.push_str(name);
            text.push('\n');
        }
        flock(&self.root, libc::LOCK_SH).map_err(io_err("locking", &self.path))?;
        let written = held.file.write_all(text.as_bytes());
        let _ = flock(&self.root, libc::LOCK_UN);
        written.map_err(io_err("writing", &self.path))?;
        held.names.extend(new);
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Still locked while it goes: a collector that opened it meanwhile finds it live, or
        // dead and already gone.
        let _ = fs::remove_file(&self.path);
    }
}

/// The exclusive GC lock on a state root: while it is held no build adds to its lease, so what
/// the live leases name is all that running builds rely on.
#[derive(Debug)]
pub struct GcLock {
    state_root: PathBuf,
    _root: File,
}

/// What the live leases of a state root name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LiveLeases {
    /// How many builds hold a lease.
    pub count: usize,
    /// Blob digests (`sha256:…`).
    pub blobs: HashSet<String>,
    /// Chain ids of committed snapshots.
    pub snapshots: HashSet<String>,
}

impl GcLock {
    /// Waits for every build to finish its current append, then holds them off until dropped.
    pub fn exclusive(state_root: &Path) -> Result<Self, LeaseError> {
        let root = File::open(state_root).map_err(io_err("opening", state_root))?;
        flock(&root, libc::LOCK_EX).map_err(io_err("locking", state_root))?;
        Ok(GcLock {
            state_root: state_root.to_owned(),
            _root: root,
        })
    }

    /// Reads the live leases; removes the dead ones (whose build is gone).
    pub fn live_leases(&self) -> Result<LiveLeases, LeaseError> {
        let dir = self.state_root.join("leases");
        let mut live = LiveLeases::default();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(live),
            Err(e) => return Err(io_err("listing", &dir)(e)),
        };
        for entry in entries {
            let path = entry.map_err(io_err("listing", &dir))?.path();
            let mut file = match crate::regular::open(&path) {
                Ok(file) => file,
                // Its build ended meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                // No build leaves anything else here; it names nothing to keep.
                Err(e) if crate::regular::is_not_regular(&e) => {
                    tracing::warn!("ignoring {}: {e}", path.display());
                    continue;
                }
                Err(e) => return Err(io_err("opening", &path)(e)),
            };
            if flock(&file, libc::LOCK_EX | libc::LOCK_NB).is_ok() {
                tracing::debug!(lease = %path.display(), "removing the lease of a build that is gone");
                let _ = fs::remove_file(&path);
                continue;
            }
            let mut text = String::new();
            file.read_to_string(&mut text)
                .map_err(io_err("reading", &path))?;
            live.count += 1;
            for line in text.lines() {
                if let Some(digest) = line.strip_prefix(BLOB) {
                    live.blobs.insert(digest.to_owned());
                } else if let Some(chain) = line.strip_prefix(SNAPSHOT) {
                    live.snapshots.insert(chain.to_owned());
                }
            }
        }
        Ok(live)
    }
}

/// `flock(2)`, retried on EINTR: the one file-lock call of every umstage crate (leases here,
/// snapshot records and cache-mount sharing in the snapshot crate).
pub fn flock(file: &File, operation: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock on a descriptor owned by `file`.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// A name no other lease has: the pid, the time and a counter.
fn unique_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::digest::sha256;

    #[test]
    fn a_live_lease_names_what_it_holds_and_a_dropped_one_is_gone() {
        let root = tempfile::tempdir().unwrap();
        let lease = Lease::acquire(root.path()).unwrap();
        let digest = sha256(b"layer");
        lease.hold_blob(&digest).unwrap();
        lease.hold_blob(&digest).unwrap();
        lease.hold_snapshots(["sha256:aa", "sha256:bb"]).unwrap();
        let live = GcLock::exclusive(root.path())
            .unwrap()
            .live_leases()
            .unwrap();
        assert_eq!(live.count, 1);
        assert_eq!(live.blobs, HashSet::from([digest.to_string()]));
        assert_eq!(
            live.snapshots,
            HashSet::from(["sha256:aa".to_string(), "sha256:bb".to_string()])
        );
        // Each name is written once however often it is held.
        let text = fs::read_to_string(&lease.path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        drop(lease);
        let gc = GcLock::exclusive(root.path()).unwrap();
        assert_eq!(gc.live_leases().unwrap(), LiveLeases::default());
        assert_eq!(fs::read_dir(root.path().join("leases")).unwrap().count(), 0);
    }

    #[test]
    fn the_lease_of_a_killed_build_is_dead_and_removed() {
        let root = tempfile::tempdir().unwrap();
        let lease = Lease::acquire(root.path()).unwrap();
        lease.hold_blob(&sha256(b"x")).unwrap();
        let path = lease.path.clone();
        // As a SIGKILL leaves it: the file is still there, but no one holds its lock.
        std::mem::forget(lease);
        let kept = fs::read(&path).unwrap();
        fs::remove_file(&path).unwrap();
        fs::write(&path, kept).unwrap();
        let live = GcLock::exclusive(root.path())
            .unwrap()
            .live_leases()
            .unwrap();
        assert_eq!(live, LiveLeases::default());
        assert!(!path.exists());
    }

    #[test]
    fn holding_waits_for_a_collection_and_a_collection_sees_every_finished_hold() {
        let root = tempfile::tempdir().unwrap();
        let lease = Lease::acquire(root.path()).unwrap();
        let gc = GcLock::exclusive(root.path()).unwrap();
        let digest = sha256(b"blob");
        std::thread::scope(|s| {
            let holder = s.spawn(|| lease.hold_blob(&digest));
            // Give the hold time to reach the lock; whether it did or not, it cannot have
            // written while the collector holds it.
            std::thread::sleep(std::time::Duration::from_millis(100));
            assert!(gc.live_leases().unwrap().blobs.is_empty());
            assert_eq!(fs::read(&lease.path).unwrap(), b"");
            drop(gc);
            holder.join().unwrap().unwrap();
        });
        let live = GcLock::exclusive(root.path())
            .unwrap()
            .live_leases()
            .unwrap();
        assert!(live.blobs.contains(&digest.to_string()));
    }
}
