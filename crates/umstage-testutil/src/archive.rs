//! Reading an image archive back with independent tools: `skopeo`, `umoci`,
//! and plain `tar` applying the layers one by one.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::{Error, Result, io, is_root, read_json, run, run_stdout};

/// How an archive is read: the `skopeo` transport that names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// An OCI image layout in a tar (`oci-archive:`), read through `index.json`.
    OciArchive,
    /// Docker's `docker save` format (`docker-archive:`), read through `manifest.json`.
    DockerArchive,
}

impl Transport {
    /// The `skopeo` reference for `archive` in this transport.
    pub fn reference(self, archive: &Path) -> String {
        let prefix = match self {
            Transport::OciArchive => "oci-archive",
            Transport::DockerArchive => "docker-archive",
        };
        format!("{prefix}:{}", archive.display())
    }
}

/// `skopeo inspect` of the archive: digest, layers, env, labels, … as skopeo reports them.
pub fn skopeo_inspect(archive: &Path, transport: Transport) -> Result<Value> {
    skopeo_json(&["inspect"], &transport.reference(archive))
}

/// `skopeo inspect --config`: the image config (`config`, `rootfs`, `history`, …).
pub fn skopeo_config(archive: &Path, transport: Transport) -> Result<Value> {
    skopeo_json(&["inspect", "--config"], &transport.reference(archive))
}

/// `skopeo inspect --raw`: the image manifest exactly as stored.
pub fn skopeo_manifest(archive: &Path, transport: Transport) -> Result<Value> {
    skopeo_json(&["inspect", "--raw"], &transport.reference(archive))
}

fn skopeo_json(args: &[&str], reference: &str) -> Result<Value> {
    let text = run_stdout(Command::new("skopeo").args(args).arg(reference))?;
    serde_json::from_str(&text).map_err(|e| Error::BadJson {
        path: PathBuf::from(reference),
        message: e.to_string(),
    })
}

/// `skopeo copy` of the archive into a new OCI layout `dest` as tag `image`
/// (skopeo verifies every blob's digest on the way).
pub fn skopeo_copy_to_layout(archive: &Path, transport: Transport, dest: &Path) -> Result<()> {
    run(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(transport.reference(archive))
        .arg(format!("oci:{}:image", dest.display())))?;
    Ok(())
}

/// One entry of a layer, as `tar --list --verbose --numeric-owner` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// The path in the layer, without a leading `./` or trailing `/`.
    pub path: String,
    /// The type and permission string (`drwxr-xr-x`, `-rw-r--r--`, `lrwxrwxrwx`, `hrw-r--r--`, `crw-------`).
    pub mode: String,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Size in bytes (0 for links, directories and devices).
    pub size: u64,
    /// The target of a symlink or a hard link.
    pub link: Option<String>,
    /// A character or block device's major and minor numbers.
    pub device: Option<(u32, u32)>,
}

impl TarEntry {
    /// The entry's type letter: `-` file, `d` dir, `l` symlink, `h` hard link, `c` char device, …
    pub fn kind(&self) -> char {
        self.mode.chars().next().unwrap_or('?')
    }

    /// Whether the entry is an OCI whiteout (`.wh.NAME` or the opaque marker `.wh..wh..opq`).
    pub fn is_whiteout(&self) -> bool {
        file_name(&self.path).starts_with(".wh.")
    }
}

/// A layer of an image read by [`apply_layers`].
#[derive(Debug, Clone)]
pub struct Layer {
    /// The layer blob's file in the extracted archive.
    pub blob: PathBuf,
    /// Its media type from the manifest (OCI archives only).
    pub media_type: Option<String>,
    /// Its entries, in archive order.
    pub entries: Vec<TarEntry>,
}

/// An image read back from an archive: the image config and its root
/// filesystem unpacked into a temp dir, removed on drop.
#[derive(Debug)]
pub struct Unpacked {
    /// The image config JSON (`config`, `rootfs`, `history`, …).
    pub config: Value,
    /// The manifest JSON (for OCI archives; Docker's `manifest.json` entry otherwise).
    pub manifest: Value,
    /// The unpacked root filesystem.
    pub rootfs: PathBuf,
    /// The layers, base first (empty for [`umoci_unpack`], which applies them itself).
    pub layers: Vec<Layer>,
    dir: tempfile::TempDir,
}

impl Unpacked {
    /// The temp dir holding everything read.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The path of `path` (absolute in the image, like `/etc/passwd`) in the unpacked rootfs.
    pub fn path(&self, path: &str) -> PathBuf {
        self.rootfs.join(path.trim_start_matches('/'))
    }

    /// The text of the file at `path` in the image.
    pub fn read_to_string(&self, path: &str) -> Result<String> {
        let file = self.path(path);
        io("reading", &file, std::fs::read_to_string(&file))
    }

    /// The image's `config.Env` as `KEY=VALUE` strings.
    pub fn env(&self) -> Vec<String> {
        strings(&self.config["config"]["Env"])
    }

    /// The value of `KEY` in `config.Env`.
    pub fn env_var(&self, key: &str) -> Option<String> {
        self.env().into_iter().find_map(|kv| {
            kv.split_once('=')
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| v.to_owned())
        })
    }
}

/// The strings of a JSON array (empty when it is not one).
pub fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn temp_dir() -> Result<tempfile::TempDir> {
    io(
        "creating a temp dir in",
        &std::env::temp_dir(),
        tempfile::Builder::new().prefix("umstage-unpack-").tempdir(),
    )
}

/// Reads the archive with `skopeo copy` into an OCI layout and unpacks it
/// with `umoci unpack` (`--rootless` unless running as root, so root keeps
/// the files' owners). The config comes from `skopeo inspect --config`.
pub fn umoci_unpack(archive: &Path, transport: Transport) -> Result<Unpacked> {
    let dir = temp_dir()?;
    let layout = dir.path().join("layout");
    skopeo_copy_to_layout(archive, transport, &layout)?;
    let bundle = dir.path().join("bundle");
    let mut cmd = Command::new("umoci");
    cmd.arg("unpack");
    if !is_root() {
        cmd.arg("--rootless");
    }
    run(cmd
        .arg("--image")
        .arg(format!("{}:image", layout.display()))
        .arg(&bundle))?;
    let reference = format!("oci:{}:image", layout.display());
    Ok(Unpacked {
        config: skopeo_json(&["inspect", "--config"], &reference)?,
        manifest: skopeo_json(&["inspect", "--raw"], &reference)?,
        rootfs: bundle.join("rootfs"),
        layers: Vec::new(),
        dir,
    })
}

/// Extracts the archive with `tar`, finds the config and layers by reading its
/// `index.json` (OCI) or `manifest.json` (Docker), then applies the layers in
/// order with plain `tar`: whiteouts (`.wh.NAME`) delete what lower layers put
/// there, opaque markers (`.wh..wh..opq`) empty their directory first.
///
/// Meant for archives a test made: like any `tar` run per layer, a symlink to a
/// directory from one layer is followed by a later layer's entries below it.
pub fn apply_layers(archive: &Path, transport: Transport) -> Result<Unpacked> {
    let dir = temp_dir()?;
    let extracted = dir.path().join("archive");
    io("creating", &extracted, std::fs::create_dir(&extracted))?;
    run(Command::new("tar")
        .args(["--extract", "--no-same-owner", "--file"])
        .arg(archive)
        .arg("--directory")
        .arg(&extracted))?;
    let (manifest, config_path, layer_blobs) = match transport {
        Transport::OciArchive => oci_parts(&extracted)?,
        Transport::DockerArchive => docker_parts(&extracted)?,
    };
    let rootfs = dir.path().join("rootfs");
    io("creating", &rootfs, std::fs::create_dir(&rootfs))?;
    let mut layers = Vec::new();
    for (blob, media_type) in layer_blobs {
        let entries = list_layer(&blob)?;
        apply_layer(&rootfs, &blob, &entries)?;
        layers.push(Layer {
            blob,
            media_type,
            entries,
        });
    }
    Ok(Unpacked {
        config: read_json(&config_path)?,
        manifest,
        rootfs,
        layers,
        dir,
    })
}

/// Blob path of `digest` (`sha256:HEX`) in an extracted OCI layout.
fn blob_path(layout: &Path, digest: &Value) -> Result<PathBuf> {
    let digest = digest.as_str().unwrap_or_default();
    let (algorithm, hex) = digest.split_once(':').ok_or_else(|| Error::BadJson {
        path: layout.to_owned(),
        message: format!("`{digest}` is not a digest"),
    })?;
    Ok(layout.join("blobs").join(algorithm).join(hex))
}

type Parts = (Value, PathBuf, Vec<(PathBuf, Option<String>)>);

fn oci_parts(layout: &Path) -> Result<Parts> {
    let index_path = layout.join("index.json");
    let index = read_json(&index_path)?;
    let mut descriptor = index["manifests"][0].clone();
    // An index may point at a nested index; follow the first manifest down.
    while descriptor["mediaType"] == "application/vnd.oci.image.index.v1+json" {
        let nested = read_json(&blob_path(layout, &descriptor["digest"])?)?;
        descriptor = nested["manifests"][0].clone();
    }
    if descriptor.is_null() {
        return Err(Error::BadJson {
            path: index_path,
            message: "lists no manifest".into(),
        });
    }
    let manifest = read_json(&blob_path(layout, &descriptor["digest"])?)?;
    let config = blob_path(layout, &manifest["config"]["digest"])?;
    let layers = manifest["layers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|layer| {
            Ok((
                blob_path(layout, &layer["digest"])?,
                layer["mediaType"].as_str().map(str::to_owned),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((manifest, config, layers))
}

fn docker_parts(extracted: &Path) -> Result<Parts> {
    let manifest_path = extracted.join("manifest.json");
    let manifests = read_json(&manifest_path)?;
    let manifest = manifests[0].clone();
    let Some(config) = manifest["Config"].as_str() else {
        return Err(Error::BadJson {
            path: manifest_path,
            message: "has no Config in its first entry".into(),
        });
    };
    let layers = strings(&manifest["Layers"])
        .into_iter()
        .map(|layer| (extracted.join(layer), None))
        .collect();
    Ok((manifest.clone(), extracted.join(config), layers))
}

/// Lists a layer (any compression GNU tar detects) with numeric owners.
pub fn list_layer(blob: &Path) -> Result<Vec<TarEntry>> {
    let listing = run_stdout(
        Command::new("tar")
            .args(["--list", "--verbose", "--numeric-owner", "--file"])
            .arg(blob),
    )?;
    listing
        .lines()
        .map(|line| {
            parse_listing_line(line).ok_or_else(|| Error::BadJson {
                path: blob.to_owned(),
                message: format!("unexpected `tar --list` line: {line}"),
            })
        })
        .collect()
}

/// Parses `drwxr-xr-x 0/0  0 2024-01-01 00:00 ./etc/` (and ` -> target`, ` link to target`).
fn parse_listing_line(line: &str) -> Option<TarEntry> {
    let mut rest = line;
    let mut fields = [""; 5];
    for field in &mut fields {
        rest = rest.trim_start();
        let end = rest.find(' ')?;
        *field = &rest[..end];
        rest = &rest[end..];
    }
    let name = rest.strip_prefix(' ')?;
    let [mode, owner, size, _date, _time] = fields;
    let (uid, gid) = owner.split_once('/')?;
    let (path, link) = match mode.chars().next()? {
        'l' => name.split_once(" -> ").map(|(p, t)| (p, Some(t)))?,
        'h' => name.split_once(" link to ").map(|(p, t)| (p, Some(t)))?,
        _ => (name, None),
    };
    Some(TarEntry {
        path: clean(path),
        mode: mode.to_owned(),
        uid: uid.parse().ok()?,
        gid: gid.parse().ok()?,
        // Devices show "major,minor" here.
        size: size.parse().unwrap_or(0),
        link: link.map(str::to_owned),
        device: size
            .split_once(',')
            .and_then(|(major, minor)| Some((major.parse().ok()?, minor.parse().ok()?))),
    })
}

fn clean(path: &str) -> String {
    let path = path.strip_prefix("./").unwrap_or(path);
    let path = path.trim_end_matches('/');
    if path.is_empty() {
        ".".into()
    } else {
        path.into()
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn apply_layer(rootfs: &Path, blob: &Path, entries: &[TarEntry]) -> Result<()> {
    for entry in entries.iter().filter(|e| e.is_whiteout()) {
        let (parent, name) = match entry.path.rsplit_once('/') {
            Some((parent, name)) => (rootfs.join(parent), name),
            None => (rootfs.to_owned(), entry.path.as_str()),
        };
        if name == ".wh..wh..opq" {
            remove_children(&parent)?;
        } else if let Some(hidden) = name.strip_prefix(".wh.") {
            remove_any(&parent.join(hidden))?;
        }
    }
    let mut cmd = Command::new("tar");
    cmd.args(["--extract", "--numeric-owner", "--exclude=.wh.*"]);
    if is_root() {
        cmd.arg("--same-owner");
    } else {
        cmd.arg("--no-same-owner");
    }
    run(cmd.arg("--file").arg(blob).arg("--directory").arg(rootfs))?;
    Ok(())
}

fn remove_children(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        remove_any(&io("listing", dir, entry)?.path())?;
    }
    Ok(())
}

fn remove_any(path: &Path) -> Result<()> {
    let result = match std::fs::symlink_metadata(path) {
        Err(_) => return Ok(()),
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    };
    io("removing", path, result)
}

#[cfg(test)]
mod tests {
    use super::parse_listing_line;

    #[test]
    fn listing_lines_give_owner_mode_and_links() {
        let dir = parse_listing_line("drwxr-xr-x 0/0               0 1970-01-01 00:00 ./etc/");
        assert_eq!(
            dir.as_ref().map(|e| (e.path.as_str(), e.kind())),
            Some(("etc", 'd'))
        );

        let link =
            parse_listing_line("lrwxrwxrwx 0/0   0 1970-01-01 00:00 ./bin/sh -> /bin/busybox");
        assert_eq!(
            link.map(|e| (e.path, e.link)),
            Some(("bin/sh".to_owned(), Some("/bin/busybox".to_owned())))
        );

        let file = parse_listing_line("-rw------- 1000/1001  12 2024-03-04 05:06 home/a file.txt");
        assert_eq!(
            file.map(|e| (e.path, e.uid, e.gid, e.size)),
            Some(("home/a file.txt".to_owned(), 1000, 1001, 12))
        );

        let hard = parse_listing_line("hrw-r--r-- 0/0 0 1970-01-01 00:00 b link to a");
        assert_eq!(hard.and_then(|e| e.link), Some("a".to_owned()));

        let null = parse_listing_line("crw-r--r-- 0/0 1,3 1970-01-01 00:00 dev/null");
        assert_eq!(null.and_then(|e| e.device), Some((1, 3)));

        assert!(parse_listing_line("garbage").is_none());
    }
}
