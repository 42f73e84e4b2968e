//! Opening files that must be regular files without ever blocking. A state root, a cache
//! directory or a build context may hold a FIFO where a file is expected: a plain `open()` of it
//! blocks until a writer comes, and a termination signal cannot end it (the handler returns and
//! the call restarts), so the build would hang deaf to SIGTERM. A link to a device
//! (`/dev/zero`) would be read forever. Each file is opened with `O_NONBLOCK` (a FIFO opens at
//! once then), checked with `fstat`, and the flag is cleared before it is read.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::{FileType, OFlags};

/// A file that had to be a regular file is something else (the error around it names it).
#[derive(Debug, thiserror::Error)]
#[error("not a regular file")]
pub struct NotRegular;

/// Whether `error` says that a file was not a regular file ([`NotRegular`]).
pub fn is_not_regular(error: &io::Error) -> bool {
    error.get_ref().is_some_and(|e| e.is::<NotRegular>())
}

/// Opens `path` for reading if it is a regular file (symlinks followed).
pub fn open(path: &Path) -> io::Result<File> {
    open_with(OpenOptions::new().read(true), path)
}

/// Opens `path` with `options` (which must set no custom flags) if it is a regular file: a
/// FIFO opened for writing without a reader fails at once rather than waiting for one.
pub fn open_with(options: &mut OpenOptions, path: &Path) -> io::Result<File> {
    let file = options
        .custom_flags(OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| fifo_without_reader(e, path))?;
    checked(file.into())
}

/// The file `fd`, opened with `O_NONBLOCK`, if it is a regular file, with the flag cleared.
pub fn checked(fd: OwnedFd) -> io::Result<File> {
    let stat = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(not_regular());
    }
    let flags = rustix::fs::fcntl_getfl(&fd)?;
    rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK)?;
    Ok(File::from(fd))
}

/// The content of the regular file `path`.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The text of the regular file `path`.
pub fn read_to_string(path: &Path) -> io::Result<String> {
    let mut text = String::new();
    open(path)?.read_to_string(&mut text)?;
    Ok(text)
}

/// A write-only open of a FIFO without a reader fails with ENXIO, which says nothing of the
/// FIFO: say what is there instead.
fn fifo_without_reader(error: io::Error, path: &Path) -> io::Error {
    if error.raw_os_error() == Some(libc::ENXIO)
        && std::fs::symlink_metadata(path).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_fifo()
        })
    {
        return not_regular();
    }
    error
}

fn not_regular() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, NotRegular)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkfifo(path: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
    }

    #[test]
    fn fifos_and_devices_are_refused_at_once_and_regular_files_read_blocking() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let err = read(&fifo).expect_err("a FIFO is refused");
        assert!(is_not_regular(&err), "{err}");
        assert_eq!(err.to_string(), "not a regular file");
        let err = open_with(OpenOptions::new().write(true), &fifo).expect_err("refused");
        assert!(is_not_regular(&err), "{err}");
        assert!(is_not_regular(
            &read(Path::new("/dev/zero")).expect_err("a device")
        ));
        assert!(is_not_regular(&read(dir.path()).expect_err("a directory")));

        let plain = dir.path().join("plain");
        std::fs::write(&plain, "text")?;
        assert_eq!(read_to_string(&plain)?, "text");
        let file = open(&plain)?;
        let flags = rustix::fs::fcntl_getfl(&file)?;
        assert!(!flags.contains(OFlags::NONBLOCK));
        Ok(())
    }
}
