//! What ADD does beyond COPY: local archives are extracted, http(s) sources are downloaded
//! (checked against `--checksum` when given).

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use umstage_oci::inroot::{Escape, Root};
use umstage_oci::unpack::{UnpackMode, UnpackOptions, unpack_into};

use crate::copy::{self, CopyOptions, Item, ItemKind, Plan};
use crate::error::StepError;

/// Whether the file is a tar archive, compressed (gzip, bzip2, xz, zstd) or not: as BuildKit,
/// a compressed file that is not a tar inside (a plain `.gz`) is copied, not extracted.
pub fn is_archive(path: &Path) -> bool {
    copy::open_source(path).is_ok_and(crate::tarhead::is_tar)
}

/// Extracts the archive `src` into the directory `target` (absolute inside `root`, existing).
/// Entries keep the owners the archive gives them, unless `owner` overrides (for the
/// archive's entries only: what `target` already held keeps its owner).
pub fn extract(
    root: &Root,
    src: &Path,
    target: &Path,
    owner: Option<(u32, u32)>,
) -> Result<(), StepError> {
    let dir = root
        .resolve_dir(target, Escape::Clamp, false)
        .map_err(StepError::below)?;
    let file =
        copy::open_source(src).map_err(|e| StepError::during(format!("{}", src.display()), e))?;
    let options = UnpackOptions {
        mode: UnpackMode::Extract,
        owner,
        ..UnpackOptions::default()
    };
    // Into the resolved directory itself: no host path is joined after resolving.
    let into = Root::from_fd(
        dir,
        root.path().join(target.strip_prefix("/").unwrap_or(target)),
    );
    unpack_into(file, into, &options)
        .map_err(|e| StepError::during(format!("extracting {}", src.display()), e))?;
    Ok(())
}

/// Downloads `url` into `dest` (absolute inside `root`; a trailing `/` means "into this
/// directory, named after the URL's last path segment"), mode 0600 unless `--chmod`, checked
/// against `checksum` (`sha256:…`) when given.
pub fn fetch_into(
    root: &Root,
    url: &str,
    checksum: Option<&str>,
    dest: &str,
    options: &CopyOptions,
    new_dirs_owner: (u32, u32),
) -> Result<(), StepError> {
    let response = ureq::get(url)
        .call()
        .map_err(|e| StepError::during(format!("downloading {url}"), e))?;
    let mtime = response
        .header("Last-Modified")
        .and_then(|h| httpdate::parse_http_date(h).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64);
    let tmp = tempfile::NamedTempFile::new().map_err(StepError::below)?;
    let mut out = tmp.reopen().map_err(StepError::below)?;
    let mut hasher = Sha256::new();
    let mut reader = response.into_reader();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| StepError::during(format!("downloading {url}"), e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        io::Write::write_all(&mut out, &buf[..n]).map_err(StepError::below)?;
        size += n as u64;
    }
    let got = format!("sha256:{}", hex::encode(hasher.finalize()));
    if let Some(want) = checksum
        && want != got
    {
        return Err(StepError::Refused(format!(
            "the download of {url} has digest {got}, but --checksum wants {want}"
        )));
    }
    let name = url_file_name(url);
    let dest_clean = PathBuf::from(crate::config::clean_abs(dest));
    let into_dir = dest.ends_with('/') || copy::is_dir_in(root, &dest_clean);
    let path = if into_dir {
        dest_clean.join(&name)
    } else {
        dest_clean.clone()
    };
    let (uid, gid) = options.chown.unwrap_or((0, 0));
    let mode = options
        .chmod
        .as_ref()
        .map_or(0o600, |c| c.apply(0o600, false));
    let dest_dir = path
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let plan = Plan {
        items: vec![Item {
            src: tmp.path().to_path_buf(),
            src_rel: PathBuf::from(&name),
            dest: path,
            kind: ItemKind::File,
            mode,
            uid,
            gid,
            size,
            mtime: (mtime, 0),
            merge_only: false,
            stat: None,
        }],
        dest_dir,
    };
    copy::execute(root, &plan, new_dirs_owner).map_err(StepError::below)
}

/// The file name a URL's content is saved under: its last path segment, or `index.html`.
fn url_file_name(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or(url);
    let after_scheme = without_query
        .split_once("://")
        .map_or(without_query, |x| x.1);
    match after_scheme.split_once('/') {
        Some((_, path)) => path
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
            .unwrap_or("index.html")
            .to_string(),
        None => "index.html".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn url_names() {
        assert_eq!(url_file_name("https://h/x/y/file.tgz?a=1"), "file.tgz");
        assert_eq!(url_file_name("https://h/"), "index.html");
        assert_eq!(url_file_name("http://h"), "index.html");
    }

    #[test]
    fn an_added_archive_is_a_plain_archive_not_a_layer() -> Result<(), Box<dyn std::error::Error>> {
        // `.wh.` names in an ADDed tar are ordinary files: nothing already there is deleted.
        let dir = tempfile::tempdir()?;
        let payload = dir.path().join("payload");
        fs::create_dir_all(&payload)?;
        fs::write(payload.join(".wh.keep"), b"just a file\n")?;
        let archive = dir.path().join("a.tar");
        let status = std::process::Command::new("tar")
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(&payload)
            .arg(".wh.keep")
            .status()?;
        assert!(status.success());
        let rootfs = dir.path().join("rootfs");
        fs::create_dir_all(rootfs.join("opt"))?;
        fs::write(rootfs.join("opt/keep"), b"kept\n")?;

        extract(&Root::open(&rootfs)?, &archive, Path::new("/opt"), None)?;
        assert_eq!(fs::read(rootfs.join("opt/keep"))?, b"kept\n");
        assert_eq!(fs::read(rootfs.join("opt/.wh.keep"))?, b"just a file\n");
        Ok(())
    }

    #[test]
    fn archives_are_recognised_by_content() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let plain = dir.path().join("a.tar.gz");
        fs::write(&plain, b"not really an archive")?;
        assert!(!is_archive(&plain));
        // A gzip stream cut short holds no tar header: it is copied as it is.
        let gz = dir.path().join("b");
        fs::write(&gz, [0x1f, 0x8b, 8, 0])?;
        assert!(!is_archive(&gz));
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        let t = dir.path().join("c");
        fs::write(&t, tar)?;
        assert!(is_archive(&t));
        Ok(())
    }
}
