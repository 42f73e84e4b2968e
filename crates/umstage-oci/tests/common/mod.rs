//! Helpers shared by the integration tests: building source trees and comparing trees.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use umstage_oci::changes::{Change, ChangeKind, ChangeSet};

/// Everything a user would notice about one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// SHA-256 of the content (regular files).
    pub content: String,
    pub link: Option<PathBuf>,
    pub rdev: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
    pub mtime: Option<i64>,
    pub inode_group: Option<usize>,
}

/// Snapshot of a tree: relative path → entry. Hard links get the same `inode_group`.
pub fn snapshot(root: &Path, with_dir_mtimes: bool) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, usize> = BTreeMap::new();
    walk(root, root, &mut out, &mut inodes, with_dir_mtimes);
    out
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<PathBuf, Entry>,
    inodes: &mut BTreeMap<u64, usize>,
    dir_mtimes: bool,
) {
    let mut children: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    children.sort();
    for path in children {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let ft = meta.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "other"
        };
        let mut xattrs: Vec<(String, Vec<u8>)> = xattr_list(&path);
        xattrs.sort();
        let inode_group = (ft.is_file() && meta.nlink() > 1).then(|| {
            let n = inodes.len();
            *inodes.entry(meta.ino()).or_insert(n)
        });
        let entry = Entry {
            kind,
            mode: if ft.is_symlink() {
                0
            } else {
                meta.permissions().mode() & 0o7777
            },
            uid: meta.uid(),
            gid: meta.gid(),
            content: if ft.is_file() {
                umstage_oci::digest::sha256(&std::fs::read(&path).unwrap()).to_string()
            } else {
                String::new()
            },
            link: ft.is_symlink().then(|| std::fs::read_link(&path).unwrap()),
            rdev: meta.rdev(),
            xattrs,
            mtime: (!ft.is_dir() || dir_mtimes).then_some(meta.mtime()),
            inode_group,
        };
        out.insert(path.strip_prefix(root).unwrap().to_owned(), entry);
        if ft.is_dir() {
            walk(root, &path, out, inodes, dir_mtimes);
        }
    }
}

fn xattr_list(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut names = vec![0u8; 65536];
    let Ok(n) = rustix::fs::llistxattr(path, &mut names) else {
        return Vec::new();
    };
    names[..n]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|name| {
            let name = String::from_utf8(name.to_vec()).unwrap();
            let mut value = vec![0u8; 65536];
            let len = rustix::fs::lgetxattr(path, name.as_str(), &mut value).unwrap();
            value.truncate(len);
            (name, value)
        })
        .collect()
}

/// A change set upserting every path under `source`.
pub fn full_change_set(source: &Path) -> ChangeSet {
    let changes = snapshot(source, false)
        .into_keys()
        .map(|path| Change {
            path,
            kind: ChangeKind::Upsert,
        })
        .collect();
    ChangeSet {
        source: source.to_owned(),
        changes,
    }
}

/// Builds a tree with every kind of entry the layer writer must handle.
pub fn make_rich_tree(dir: &Path) {
    use std::os::unix::fs::symlink;
    let p = |s: &str| dir.join(s);
    std::fs::create_dir_all(p("usr/bin")).unwrap();
    std::fs::create_dir_all(p("etc/deep/er")).unwrap();
    std::fs::write(p("etc/hostname"), b"umstage\n").unwrap();
    std::fs::write(p("usr/bin/tool"), vec![0x7fu8; 300_000]).unwrap();
    std::fs::set_permissions(p("usr/bin/tool"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::hard_link(p("usr/bin/tool"), p("usr/bin/tool-link")).unwrap();
    symlink("tool", p("usr/bin/relative-link")).unwrap();
    symlink("/etc/hostname", p("absolute-link")).unwrap();
    let long = "a-rather-long-directory-name-that-needs-pax".repeat(3);
    std::fs::create_dir_all(dir.join(&long)).unwrap();
    std::fs::write(
        dir.join(&long).join("file-with-a-long-name-too.txt"),
        b"long",
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p("null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    std::os::unix::fs::chown(p("etc/hostname"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::lchown(p("absolute-link"), Some(42), Some(43)).unwrap();
    rustix::fs::setxattr(
        p("usr/bin/tool"),
        "security.capability",
        &[
            1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::setxattr(
        p("etc/hostname"),
        "user.comment",
        b"kept",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::setxattr(
        p("etc/hostname"),
        "trusted.overlay.origin",
        b"dropped",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::setxattr(
        p("etc/deep"),
        "user.overlay.impure",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    std::fs::set_permissions(p("etc/deep/er"), std::fs::Permissions::from_mode(0o1777)).unwrap();
}

/// Removes overlay-internal xattrs from a snapshot (they must not travel in layers).
pub fn without_overlay_xattrs(mut tree: BTreeMap<PathBuf, Entry>) -> BTreeMap<PathBuf, Entry> {
    for entry in tree.values_mut() {
        entry
            .xattrs
            .retain(|(k, _)| !k.starts_with("trusted.overlay.") && !k.starts_with("user.overlay."));
    }
    tree
}

/// Runs an external checker tool, failing loudly when it is missing or fails.
pub fn run(tool: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{tool} is required for this test and could not run ({e}); install it (see .ci/run)"
            )
        });
    assert!(
        output.status.success(),
        "{tool} {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Builds a one-layer image from `source` in `store` with Docker extensions in its config.
pub fn build_image(
    store: &umstage_oci::ContentStore,
    source: &Path,
    compression: umstage_oci::compress::Compression,
) -> umstage_oci::Image {
    use umstage_oci::config::{HealthConfig, History, ImageConfig};
    let layer = umstage_oci::layer::write_layer(
        store,
        &full_change_set(source),
        &umstage_oci::layer::LayerOptions {
            compression,
            source_date_epoch: Some(1_700_000_000),
            threads: 2,
        },
    )
    .unwrap();
    let mut config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        ..Default::default()
    };
    config.created = Some(umstage_oci::config::rfc3339(1_700_000_000));
    config.config.cmd = Some(vec!["/bin/sh".into()]);
    config.config.env = Some(vec!["PATH=/usr/bin:/bin".into()]);
    config.config.healthcheck = Some(HealthConfig {
        test: vec!["CMD-SHELL".into(), "true".into()],
        interval: 30_000_000_000,
        retries: 3,
        ..Default::default()
    });
    config.config.on_build = Some(vec!["RUN echo child".into()]);
    config.config.shell = Some(vec!["/bin/sh".into(), "-c".into()]);
    config.rootfs.diff_ids = vec![layer.diff_id.clone()];
    config.history = vec![History {
        created: config.created.clone(),
        created_by: Some("COPY . /".into()),
        ..Default::default()
    }];
    umstage_oci::image::write_image(
        store,
        &config,
        &[layer.descriptor()],
        umstage_oci::ManifestFormat::Oci,
        &Default::default(),
    )
    .unwrap()
}

/// The tree as a layer written with `SOURCE_DATE_EPOCH = epoch` records it.
pub fn clamp_mtimes(mut tree: BTreeMap<PathBuf, Entry>, epoch: i64) -> BTreeMap<PathBuf, Entry> {
    for entry in tree.values_mut() {
        entry.mtime = entry.mtime.map(|m| m.min(epoch));
    }
    tree
}

/// A temp dir with a store, a rich source tree and a one-layer image of it.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub store: umstage_oci::ContentStore,
    pub source: PathBuf,
    pub image: umstage_oci::Image,
}

impl Fixture {
    /// Builds the fixture with `compression` for the layer.
    pub fn new(compression: umstage_oci::compress::Compression) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let store = umstage_oci::ContentStore::open(tmp.path().join("store")).unwrap();
        let source = tmp.path().join("source");
        make_rich_tree(&source);
        let image = build_image(&store, &source, compression);
        Self {
            tmp,
            store,
            source,
            image,
        }
    }

    /// A path inside the fixture's temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}
