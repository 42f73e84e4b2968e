//! Which of the step's files are still its parent's (in a linked snapshot, `crate::cow`), and
//! making one the step's own: a private inode with the same data and metadata, renamed over
//! the name (see `copyup` for the calls that need it).

use std::cell::OnceCell;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use crate::cow::{self, Shared};

/// The inodes the step's root shares with its parent, read at the first change.
pub(super) struct CopyUp {
    root: std::path::PathBuf,
    shared: OnceCell<Shared>,
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
            return Ok(Private::Gone);
        }
        cow::copy_up(&real).map_err(errno)?;
        tracing::trace!(path = %real.display(), "copied up");
        Ok(Private::Copied(real.into_os_string().into_encoded_bytes()))
    }
}

/// The errno of `e`, EIO where it has none.
pub(super) fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}
