//! Which of the step's files are still its parent's (in a linked snapshot, `crate::cow`), and
//! making one the step's own: a private inode with the same data and metadata, renamed over
//! the name (see `copyup` for the calls that need it).

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::errno::errno;
use crate::cow::{self, Shared};

/// The inodes the step's root shares with its parent, read at the first change.
pub(super) struct CopyUp {
    root: PathBuf,
    shared: OnceCell<Shared>,
    /// Each parent's inode copied up (device, inode), and where its copy is: a descriptor
    /// opened before still leads to the parent's inode, and a change made through it must
    /// reach the copy.
    copies: RefCell<HashMap<(u64, u64), Copy>>,
}

/// Where a copied-up file's copy is, and which inode it is.
struct Copy {
    path: PathBuf,
    inode: (u64, u64),
}

/// What a file that a call changes needs.
pub(super) enum Private {
    /// Nothing: it is the step's own.
    Already,
    /// It was the parent's and has been copied up: this host path leads to the copy.
    Copied(Vec<u8>),
    /// It is the parent's and has no name in the step's root any more (a descriptor of a
    /// file the step removed): nothing the layer holds can change.
    Gone,
}

impl CopyUp {
    /// For the step's root `rootfs`.
    pub(super) fn new(rootfs: &Path) -> CopyUp {
        CopyUp {
            root: rootfs.to_path_buf(),
            shared: OnceCell::new(),
            copies: RefCell::new(HashMap::new()),
        }
    }

    fn shared(&self) -> Result<&Shared, i32> {
        if let Some(shared) = self.shared.get() {
            return Ok(shared);
        }
        let shared = Shared::of(&self.root).map_err(|e| {
            tracing::warn!("reading the shared inodes of {}: {e}", self.root.display());
            e.raw_os_error().unwrap_or(libc::EIO)
        })?;
        Ok(self.shared.get_or_init(|| shared))
    }

    /// Makes the file open (`O_PATH`) as `file` the step's own before a change.
    pub(super) fn private(&self, file: &OwnedFd) -> Result<Private, i32> {
        let st = rustix::fs::fstat(file).map_err(|e| e.raw_os_error())?;
        let linked = matches!(
            rustix::fs::FileType::from_raw_mode(st.st_mode),
            rustix::fs::FileType::RegularFile | rustix::fs::FileType::Symlink
        );
        if !linked {
            return Ok(Private::Already);
        }
        let shared = self.shared()?;
        if shared.is_empty() || !shared.holds(st.st_dev, st.st_ino) {
            return Ok(Private::Already);
        }
        let link = format!("/proc/self/fd/{}", file.as_raw_fd());
        let real = std::fs::read_link(&link).map_err(errno)?;
        let named = rustix::fs::lstat(&real)
            .is_ok_and(|now| (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino));
        if !named {
            return Ok(self.copy_of((st.st_dev, st.st_ino)));
        }
        cow::copy_up(&real).map_err(errno)?;
        tracing::trace!(path = %real.display(), "copied up");
        if let Ok(copy) = rustix::fs::lstat(&real) {
            self.copies.borrow_mut().insert(
                (st.st_dev, st.st_ino),
                Copy {
                    path: real.clone(),
                    inode: (copy.st_dev, copy.st_ino),
                },
            );
        }
        Ok(Private::Copied(real.into_os_string().into_encoded_bytes()))
    }

    /// For a parent's inode that has no name in the root: its copy, where it was copied up
    /// and the copy is still at the same path; otherwise it is gone.
    fn copy_of(&self, inode: (u64, u64)) -> Private {
        let copies = self.copies.borrow();
        let Some(copy) = copies.get(&inode) else {
            return Private::Gone;
        };
        let still =
            rustix::fs::lstat(&copy.path).is_ok_and(|now| (now.st_dev, now.st_ino) == copy.inode);
        if still {
            Private::Copied(copy.path.clone().into_os_string().into_encoded_bytes())
        } else {
            Private::Gone
        }
    }
}
