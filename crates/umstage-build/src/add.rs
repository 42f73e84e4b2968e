//! What ADD does beyond COPY: archives are extracted, and a URL's content (see `download`) is
//! placed as a file.

use std::path::{Path, PathBuf};

use umstage_oci::inroot::{Escape, Root};
use umstage_oci::unpack::{UnpackMode, UnpackOptions, unpack_into};

use crate::copy::{self, CopyOptions, Item, ItemKind, Plan};
use crate::download::Download;
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

/// Puts a URL's content (`download`, saved as `name`) at `dest` (absolute inside `root`; a
/// trailing `/` or an existing directory means "into this directory"), mode 0600 unless
/// `--chmod`, owned by `--chown` or root, as BuildKit's HTTP source.
pub(crate) fn place_download(
    root: &Root,
    download: &Download,
    name: &str,
    dest: &str,
    options: &CopyOptions,
    new_dirs_owner: (u32, u32),
) -> Result<(), StepError> {
    let dest_clean = PathBuf::from(crate::config::clean_abs(dest));
    let into_dir = dest.ends_with('/') || copy::is_dir_in(root, &dest_clean);
    let path = if into_dir {
        dest_clean.join(name)
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
            src: download.file.to_path_buf(),
            src_rel: PathBuf::from(name),
            dest: path,
            kind: ItemKind::File,
            mode,
            uid,
            gid,
            size: download.size,
            mtime: (download.mtime, 0),
            merge_only: false,
            stat: None,
            named: true,
        }],
        dest_dir,
        make_dest: false,
        new_dirs_mode: copy::new_dirs_mode(options),
    };
    copy::execute(root, &plan, new_dirs_owner).map_err(StepError::below)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

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
    fn archives_are_recognised_by_content() -> std::io::Result<()> {
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
