//! A build context given on standard input (`umstage build - < context.tar`), as `docker build`
//! takes one: a tar archive (plain or compressed) is the context; anything else is a Dockerfile
//! with an empty context.

use std::path::Path;

use umstage_oci::unpack::{UnpackMode, UnpackOptions, unpack};

use crate::request::BuildError;
use crate::tarhead::is_tar;

/// What standard input held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StdinContext {
    /// A tar archive, now extracted into the directory given.
    Archive,
    /// A Dockerfile's bytes (the solver checks they are UTF-8); the context is empty.
    Dockerfile(Vec<u8>),
}

/// Takes standard input's bytes: extracts an archive into `dir` (which must exist), or
/// returns them as a Dockerfile.
pub fn from_stdin(data: Vec<u8>, dir: &Path) -> Result<StdinContext, BuildError> {
    if !is_tar(&data[..]) {
        return Ok(StdinContext::Dockerfile(data));
    }
    let options = UnpackOptions {
        mode: UnpackMode::Plain,
        ignore_chown_errors: true,
        ..UnpackOptions::default()
    };
    unpack(&data[..], dir, &options)
        .map_err(|e| BuildError::input("the context archive on standard input", e))?;
    Ok(StdinContext::Archive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_a_dockerfile_and_a_tar_is_a_context() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        assert_eq!(
            from_stdin(b"FROM scratch\n".to_vec(), dir.path())?,
            StdinContext::Dockerfile(b"FROM scratch\n".to_vec())
        );
        let mut tar = vec![0u8; 1536];
        tar[..10].copy_from_slice(b"Dockerfile");
        tar[100..107].copy_from_slice(b"000644\0");
        tar[108..115].copy_from_slice(b"000000\0");
        tar[116..123].copy_from_slice(b"000000\0");
        tar[124..136].copy_from_slice(b"00000000015\0");
        tar[136..148].copy_from_slice(b"00000000000\0");
        tar[156] = b'0';
        tar[257..263].copy_from_slice(b"ustar\0");
        tar[263..265].copy_from_slice(b"00");
        tar[148..156].copy_from_slice(b"        ");
        let sum: u32 = tar[..512].iter().map(|&b| u32::from(b)).sum();
        tar[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        tar[512..525].copy_from_slice(b"FROM scratch\n");
        assert!(is_tar(&tar[..]));
        assert_eq!(from_stdin(tar, dir.path())?, StdinContext::Archive);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("Dockerfile"))?,
            "FROM scratch\n"
        );
        Ok(())
    }
}
