//! Reading the `.dockerignore` before anything runs. It may be a symlink a cloned repository
//! planted: one to a device (`/dev/zero`) would be read until memory runs out, and a FIFO
//! would block the build forever. (The Dockerfile is taken only when it is a regular file.)

use std::io::{self, Read};
use std::path::Path;

/// The `.dockerignore` at `path`, `None` when there is none; anything but a regular file is
/// refused.
pub(crate) fn read_ignore_file(path: &Path) -> io::Result<Option<String>> {
    let file = match umstage_oci::regular::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if umstage_oci::regular::is_not_regular(&e) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", path.display()),
            ));
        }
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    io::BufReader::new(file).read_to_string(&mut text)?;
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn devices_and_fifos_are_refused_and_a_missing_file_is_none()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero)?;
        assert!(read_ignore_file(&zero).is_err());
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )?;
        assert!(read_ignore_file(&fifo).is_err());
        assert_eq!(read_ignore_file(&dir.path().join("none"))?, None);
        let plain = dir.path().join("plain");
        fs::write(&plain, "*.log\n")?;
        assert_eq!(read_ignore_file(&plain)?.as_deref(), Some("*.log\n"));
        Ok(())
    }
}
