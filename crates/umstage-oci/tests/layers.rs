//! Layer writer and unpacker against each other: round trips, whiteouts, determinism.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use umstage_oci::ContentStore;
use umstage_oci::changes::{Change, ChangeKind, ChangeSet};
use umstage_oci::compress::Compression;
use umstage_oci::layer::{LayerOptions, write_layer};
use umstage_oci::unpack::{UnpackMode, UnpackOptions, unpack_blob};

fn options(compression: Compression, epoch: Option<i64>) -> LayerOptions {
    LayerOptions {
        compression,
        source_date_epoch: epoch,
        threads: 2,
    }
}

#[test]
fn rich_tree_round_trips_through_gzip_zstd_and_plain_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    make_rich_tree(&source);
    let store = ContentStore::open(tmp.path().join("store")).unwrap();
    let expected = without_overlay_xattrs(snapshot(&source, true));
    for (i, compression) in [Compression::GZIP, Compression::ZSTD, Compression::None]
        .into_iter()
        .enumerate()
    {
        let layer = write_layer(
            &store,
            &full_change_set(&source),
            &options(compression, None),
        )
        .unwrap();
        assert_eq!(layer.media_type, compression.oci_media_type());
        let target = tmp.path().join(format!("target{i}"));
        let report = unpack_blob(
            &store,
            &layer.blob.digest,
            &target,
            &UnpackOptions::default(),
        )
        .unwrap();
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert_eq!(snapshot(&target, true), expected, "{compression:?}");
    }
}

#[test]
fn same_changes_with_source_date_epoch_give_identical_digests() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ContentStore::open(tmp.path().join("store")).unwrap();
    let mut digests = Vec::new();
    for run in 0..2 {
        let source = tmp.path().join(format!("source{run}"));
        make_rich_tree(&source);
        // Different real times on each run; the epoch must hide them.
        let when =
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(2_000_000_000 + run);
        std::fs::File::options()
            .write(true)
            .open(source.join("etc/hostname"))
            .unwrap()
            .set_modified(when)
            .unwrap();
        for compression in [Compression::GZIP, Compression::ZSTD] {
            let mut opts = options(compression, Some(1_700_000_000));
            opts.threads = 1 + run as usize;
            let layer = write_layer(&store, &full_change_set(&source), &opts).unwrap();
            digests.push((compression, layer.blob.digest, layer.diff_id));
        }
    }
    assert_eq!(digests[0], digests[2]);
    assert_eq!(digests[1], digests[3]);
    assert_ne!(digests[0].1, digests[1].1);
}

#[test]
fn unclamped_times_differ_so_the_determinism_test_can_fail() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ContentStore::open(tmp.path().join("store")).unwrap();
    let source = tmp.path().join("source");
    make_rich_tree(&source);
    let first = write_layer(
        &store,
        &full_change_set(&source),
        &options(Compression::GZIP, None),
    )
    .unwrap();
    let when = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(2_000_000_000);
    std::fs::File::options()
        .write(true)
        .open(source.join("etc/hostname"))
        .unwrap()
        .set_modified(when)
        .unwrap();
    let second = write_layer(
        &store,
        &full_change_set(&source),
        &options(Compression::GZIP, None),
    )
    .unwrap();
    assert_ne!(first.diff_id, second.diff_id);
}

fn change(path: &str, kind: ChangeKind) -> Change {
    Change {
        path: PathBuf::from(path),
        kind,
    }
}

/// A lower layer with `keep`, `gone`, `dir/{a,b}`, then an upper change set deleting `gone` and
/// making `dir` opaque with a new `dir/c`.
fn lower_and_upper(
    tmp: &Path,
    store: &ContentStore,
) -> (umstage_oci::layer::LayerInfo, umstage_oci::layer::LayerInfo) {
    let lower = tmp.join("lower");
    std::fs::create_dir_all(lower.join("dir")).unwrap();
    std::fs::write(lower.join("keep"), b"k").unwrap();
    std::fs::write(lower.join("gone"), b"g").unwrap();
    std::fs::write(lower.join("dir/a"), b"a").unwrap();
    std::fs::create_dir(lower.join("dir/b")).unwrap();
    let lower_layer =
        write_layer(store, &full_change_set(&lower), &LayerOptions::default()).unwrap();
    let upper = tmp.join("upper");
    std::fs::create_dir_all(upper.join("dir")).unwrap();
    std::fs::write(upper.join("dir/c"), b"c").unwrap();
    let changes = ChangeSet {
        source: upper,
        changes: vec![
            change("dir/c", ChangeKind::Upsert),
            change("gone", ChangeKind::Delete),
            change("dir", ChangeKind::OpaqueDir),
            change("dir", ChangeKind::Upsert),
        ],
    };
    let upper_layer = write_layer(store, &changes, &LayerOptions::default()).unwrap();
    (lower_layer, upper_layer)
}

#[test]
fn whiteouts_and_opaque_dirs_apply_in_plain_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ContentStore::open(tmp.path().join("store")).unwrap();
    let (lower, upper) = lower_and_upper(tmp.path(), &store);
    let target = tmp.path().join("rootfs");
    for layer in [&lower, &upper] {
        unpack_blob(
            &store,
            &layer.blob.digest,
            &target,
            &UnpackOptions::default(),
        )
        .unwrap();
    }
    let names: Vec<_> = snapshot(&target, false).into_keys().collect();
    assert_eq!(names, ["dir", "dir/c", "keep"].map(PathBuf::from));
}

#[test]
fn overlay_native_unpack_makes_whiteout_devices_and_opaque_xattrs() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ContentStore::open(tmp.path().join("store")).unwrap();
    let (_, upper) = lower_and_upper(tmp.path(), &store);
    let target = tmp.path().join("diff");
    let opts = UnpackOptions {
        mode: UnpackMode::Overlay { userxattr: true },
        ..Default::default()
    };
    unpack_blob(&store, &upper.blob.digest, &target, &opts).unwrap();
    let tree = snapshot(&target, false);
    let gone = &tree[Path::new("gone")];
    assert_eq!((gone.kind, gone.rdev), ("char", 0));
    assert!(
        tree[Path::new("dir")]
            .xattrs
            .contains(&("user.overlay.opaque".to_owned(), b"y".to_vec()))
    );
    assert_eq!(
        tree[Path::new("dir/c")].content,
        umstage_oci::digest::sha256(b"c").to_string()
    );
}

#[test]
fn extract_mode_keeps_whiteout_names_as_plain_files() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ContentStore::open(tmp.path().join("store")).unwrap();
    let (lower, upper) = lower_and_upper(tmp.path(), &store);
    let target = tmp.path().join("extracted");
    let opts = UnpackOptions {
        mode: UnpackMode::Extract,
        ..Default::default()
    };
    for layer in [&lower, &upper] {
        unpack_blob(&store, &layer.blob.digest, &target, &opts).unwrap();
    }
    let names: Vec<_> = snapshot(&target, false).into_keys().collect();
    let expected = [
        "dir",
        "dir/.wh..wh..opq",
        "dir/a",
        "dir/b",
        "dir/c",
        ".wh.gone",
        "gone",
        "keep",
    ]
    .map(PathBuf::from);
    let mut expected = expected.to_vec();
    expected.sort();
    assert_eq!(names, expected);
}

#[test]
fn owners_are_mapped_through_the_id_map() {
    use umstage_oci::unpack::{IdMap, IdRange};
    let tmp = tempfile::tempdir().unwrap();
    let store = ContentStore::open(tmp.path().join("store")).unwrap();
    let source = tmp.path().join("source");
    make_rich_tree(&source);
    let layer = write_layer(&store, &full_change_set(&source), &LayerOptions::default()).unwrap();
    let map = |size| {
        vec![IdRange {
            container: 0,
            host: 100_000,
            size,
        }]
    };
    let opts = UnpackOptions {
        ids: IdMap {
            uids: map(65_536),
            gids: map(65_536),
        },
        ..Default::default()
    };
    let target = tmp.path().join("mapped");
    unpack_blob(&store, &layer.blob.digest, &target, &opts).unwrap();
    let tree = snapshot(&target, false);
    let hostname = &tree[Path::new("etc/hostname")];
    assert_eq!((hostname.uid, hostname.gid), (101_234, 105_678));
    assert_eq!(tree[Path::new("usr")].uid, 100_000);

    // An owner outside the map is an error unless chown errors are ignored.
    let narrow = UnpackOptions {
        ids: IdMap {
            uids: map(1000),
            gids: map(1000),
        },
        ..Default::default()
    };
    let err = unpack_blob(
        &store,
        &layer.blob.digest,
        &tmp.path().join("narrow"),
        &narrow,
    )
    .unwrap_err();
    assert!(err.to_string().contains("outside the id map"), "{err}");
    let lenient = UnpackOptions {
        ignore_chown_errors: true,
        ..narrow
    };
    let report = unpack_blob(
        &store,
        &layer.blob.digest,
        &tmp.path().join("lenient"),
        &lenient,
    )
    .unwrap();
    assert!(
        report.warnings.iter().any(|w| w.contains("etc/hostname")),
        "{:?}",
        report.warnings
    );
}

#[test]
fn owners_that_cannot_be_set_are_recorded_and_written_back_into_layers() {
    use umstage_oci::unpack::{IdMap, IdRange};
    let tmp = tempfile::tempdir().unwrap();
    let store = ContentStore::open(tmp.path().join("store")).unwrap();
    let source = tmp.path().join("source");
    make_rich_tree(&source);
    let layer = write_layer(&store, &full_change_set(&source), &LayerOptions::default()).unwrap();
    // A single-id namespace: only the caller's own ids can be set.
    let own = |id: u32| {
        vec![IdRange {
            container: 0,
            host: id,
            size: 1,
        }]
    };
    let opts = UnpackOptions {
        ids: IdMap {
            uids: own(rustix::process::geteuid().as_raw()),
            gids: own(rustix::process::getegid().as_raw()),
        },
        ignore_chown_errors: true,
        record_owners: true,
        ..Default::default()
    };
    let target = tmp.path().join("single");
    unpack_blob(&store, &layer.blob.digest, &target, &opts).unwrap();
    let recorded = rustix::fs::getxattr(
        target.join("etc/hostname").as_path(),
        umstage_oci::owner::XATTR,
        &mut [0u8; 32],
    );
    assert!(recorded.is_ok(), "{recorded:?}");
    let again = write_layer(&store, &full_change_set(&target), &LayerOptions::default()).unwrap();
    let back = tmp.path().join("back");
    unpack_blob(&store, &again.blob.digest, &back, &UnpackOptions::default()).unwrap();
    let tree = snapshot(&back, false);
    let hostname = &tree[Path::new("etc/hostname")];
    assert_eq!((hostname.uid, hostname.gid), (1_234, 5_678));
    assert!(
        tree.values()
            .all(|e| e.xattrs.iter().all(|(n, _)| n != umstage_oci::owner::XATTR)),
        "the record must not reach the layer"
    );
}

#[test]
fn read_only_directories_still_receive_their_children() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let store = ContentStore::open(tmp.path().join("store")).unwrap();
    let source = tmp.path().join("source");
    std::fs::create_dir_all(source.join("ro/sub")).unwrap();
    std::fs::write(source.join("ro/sub/file"), b"x").unwrap();
    std::fs::set_permissions(
        source.join("ro/sub"),
        std::fs::Permissions::from_mode(0o555),
    )
    .unwrap();
    std::fs::set_permissions(source.join("ro"), std::fs::Permissions::from_mode(0o500)).unwrap();
    // Only the file is listed: its parents come from the source, and a deleted path whose
    // parent is gone from the source is still a valid whiteout.
    let changes = ChangeSet {
        source: source.clone(),
        changes: vec![
            change("ro/sub/file", ChangeKind::Upsert),
            change("gone/dir/x", ChangeKind::Delete),
        ],
    };
    let layer = write_layer(&store, &changes, &LayerOptions::default()).unwrap();
    let target = tmp.path().join("target");
    unpack_blob(
        &store,
        &layer.blob.digest,
        &target,
        &UnpackOptions::default(),
    )
    .unwrap();
    let tree = snapshot(&target, true);
    assert_eq!(tree[Path::new("ro")].mode, 0o500);
    assert_eq!(tree[Path::new("ro/sub")].mode, 0o555);
    assert_eq!(
        tree[Path::new("ro/sub/file")].content,
        umstage_oci::digest::sha256(b"x").to_string()
    );
    assert_eq!(
        tree[Path::new("ro")].mtime,
        snapshot(&source, true)[Path::new("ro")].mtime
    );
}
