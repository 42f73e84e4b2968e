//! Our archives and layouts against real readers (skopeo, umoci) and our importers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;
use umstage_oci::archive::{
    ArchiveOptions, Selector, TaggedImage, import_archive, import_layout_dir, write_archive,
    write_layout_dir,
};
use umstage_oci::compress::Compression;
use umstage_oci::unpack::UnpackOptions;
use umstage_oci::{ContentStore, reference};

fn export(store: &ContentStore, image: &umstage_oci::Image, path: &Path, tag: &str) {
    let tagged = [TaggedImage {
        image,
        tags: vec![reference::parse(tag).unwrap()],
    }];
    write_archive(
        store,
        &tagged,
        std::fs::File::create(path).unwrap(),
        ArchiveOptions::default(),
    )
    .unwrap();
}

/// Unpacks every layer of `image` (from `store`) into `target`.
fn unpack_image(store: &ContentStore, image: &umstage_oci::Image, target: &Path) {
    umstage_oci::unpack::unpack_image(store, image, target, &UnpackOptions::default()).unwrap();
}

#[test]
fn skopeo_reads_image_tar_in_both_transports_with_docker_extensions_kept() {
    let f = Fixture::new(Compression::GZIP);
    let (tmp, store, image) = (&f.tmp, &f.store, &f.image);
    let tar = tmp.path().join("image.tar");
    export(store, image, &tar, "umstage-test/rich:1.0");
    let tar_arg = tar.to_str().unwrap();

    let config: serde_json::Value = serde_json::from_str(&run(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--config",
            &format!("oci-archive:{tar_arg}"),
        ],
    ))
    .unwrap();
    assert_eq!(config["config"]["Healthcheck"]["Retries"], 3);
    assert_eq!(config["config"]["OnBuild"][0], "RUN echo child");
    assert_eq!(config["config"]["Shell"][1], "-c");
    let raw = run(
        "skopeo",
        &["inspect", "--raw", &format!("oci-archive:{tar_arg}")],
    );
    let manifest_digest = umstage_oci::digest::sha256(raw.as_bytes());
    assert_eq!(&manifest_digest, image.digest());

    let docker: serde_json::Value = serde_json::from_str(&run(
        "skopeo",
        &["inspect", &format!("docker-archive:{tar_arg}")],
    ))
    .unwrap();
    assert_eq!(docker["Layers"].as_array().unwrap().len(), 1);
    let docker_config: serde_json::Value = serde_json::from_str(&run(
        "skopeo",
        &["inspect", "--config", &format!("docker-archive:{tar_arg}")],
    ))
    .unwrap();
    assert_eq!(
        docker_config["rootfs"]["diff_ids"][0],
        image.config.rootfs.diff_ids[0].to_string()
    );
    // And both transports copy it (skopeo reads every blob and checks every digest).
    for transport in ["oci-archive", "docker-archive"] {
        let out = tmp.path().join(format!("copy-{transport}"));
        run(
            "skopeo",
            &[
                "copy",
                &format!("{transport}:{tar_arg}"),
                &format!("oci:{}:copied", out.display()),
            ],
        );
    }
}

#[test]
fn umoci_unpacks_our_image_to_the_source_tree() {
    let f = Fixture::new(Compression::GZIP);
    let (tmp, store, source, image) = (&f.tmp, &f.store, &f.source, &f.image);
    let tar = tmp.path().join("image.tar");
    export(store, image, &tar, "rich:1.0");
    let layout = tmp.path().join("layout");
    run(
        "skopeo",
        &[
            "copy",
            &format!("oci-archive:{}", tar.display()),
            &format!("oci:{}:rich", layout.display()),
        ],
    );
    let bundle = tmp.path().join("bundle");
    run(
        "umoci",
        &[
            "unpack",
            "--rootless",
            "--image",
            &format!("{}:rich", layout.display()),
            bundle.to_str().unwrap(),
        ],
    );
    // Rootless umoci keeps owners in an xattr, cannot make device nodes (it leaves an empty file), and clamps times it cannot set:
    // compare what it can reproduce.
    let strip = |tree: std::collections::BTreeMap<std::path::PathBuf, Entry>| {
        tree.into_iter()
            .filter(|(p, _)| p != Path::new("null"))
            .map(|(p, mut e)| {
                e.uid = 0;
                e.gid = 0;
                e.xattrs
                    .retain(|(k, _)| k.starts_with("user.") && k != "user.rootlesscontainers");
                e.mtime = None;
                (p, e)
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let expected = strip(without_overlay_xattrs(snapshot(source, false)));
    let unpacked = strip(snapshot(&bundle.join("rootfs"), false));
    assert_eq!(unpacked, expected);
}

#[test]
fn image_tar_imports_back_to_the_same_image() {
    let f = Fixture::new(Compression::ZSTD);
    let (tmp, store, image) = (&f.tmp, &f.store, &f.image);
    let tar = tmp.path().join("image.tar");
    export(store, image, &tar, "rich:1.0");
    let other = ContentStore::open(tmp.path().join("other")).unwrap();
    let selector = Selector {
        name: Some("rich:1.0".into()),
        ..Default::default()
    };
    let imported = import_archive(
        &other,
        "image.tar",
        std::fs::File::open(&tar).unwrap(),
        &selector,
    )
    .unwrap();
    assert_eq!(imported.digest(), image.digest());
    assert_eq!(imported.config, image.config);
    let err = import_archive(
        &other,
        "image.tar",
        std::fs::File::open(&tar).unwrap(),
        &Selector {
            name: Some("nope".into()),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("nope") && err.to_string().contains("rich"),
        "{err}"
    );
}

#[test]
fn docker_archive_and_oci_layout_from_skopeo_import_as_base_images() {
    let f = Fixture::new(Compression::GZIP);
    let (tmp, store, source, image) = (&f.tmp, &f.store, &f.source, &f.image);
    let tar = tmp.path().join("image.tar");
    export(store, image, &tar, "rich:1.0");
    let docker_tar = tmp.path().join("docker.tar");
    let layout = tmp.path().join("layout");
    run(
        "skopeo",
        &[
            "copy",
            &format!("oci-archive:{}", tar.display()),
            &format!("docker-archive:{}:rich:2.0", docker_tar.display()),
        ],
    );
    run(
        "skopeo",
        &[
            "copy",
            &format!("oci-archive:{}", tar.display()),
            &format!("oci:{}:base", layout.display()),
        ],
    );
    let expected = clamp_mtimes(
        without_overlay_xattrs(snapshot(source, true)),
        1_700_000_000,
    );

    let fresh = ContentStore::open(tmp.path().join("fresh")).unwrap();
    let selector = Selector {
        name: Some("rich:2.0".into()),
        ..Default::default()
    };
    let from_docker = import_archive(
        &fresh,
        "docker.tar",
        std::fs::File::open(&docker_tar).unwrap(),
        &selector,
    )
    .unwrap();
    assert_eq!(
        from_docker.config.config.healthcheck,
        image.config.config.healthcheck
    );
    let target = tmp.path().join("from-docker");
    unpack_image(&fresh, &from_docker, &target);
    assert_eq!(snapshot(&target, true), expected);

    let from_layout = import_layout_dir(
        &fresh,
        &layout,
        &Selector {
            name: Some("base".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let target = tmp.path().join("from-layout");
    unpack_image(&fresh, &from_layout, &target);
    assert_eq!(snapshot(&target, true), expected);
}

#[test]
fn layout_dir_output_is_read_by_skopeo() {
    let f = Fixture::new(Compression::GZIP);
    let (tmp, store, image) = (&f.tmp, &f.store, &f.image);
    let dir = tmp.path().join("out");
    let tagged = [TaggedImage {
        image,
        tags: vec![reference::parse("rich:3").unwrap()],
    }];
    write_layout_dir(store, &tagged, &dir, &Default::default()).unwrap();
    let raw = run(
        "skopeo",
        &["inspect", "--raw", &format!("oci:{}:3", dir.display())],
    );
    assert_eq!(&umstage_oci::digest::sha256(raw.as_bytes()), image.digest());
}

#[test]
fn podman_loads_image_tar_with_its_tag() {
    let f = Fixture::new(Compression::GZIP);
    let (tmp, store, image) = (&f.tmp, &f.store, &f.image);
    let tar = tmp.path().join("image.tar");
    export(store, image, &tar, "umstage-test/loaded:7");
    // A private storage so the test touches nothing of the host's podman state.
    let root = tmp.path().join("podman-root");
    let runroot = tmp.path().join("podman-run");
    let podman = |args: &[&str]| {
        let mut all = vec![
            "--root",
            root.to_str().unwrap(),
            "--runroot",
            runroot.to_str().unwrap(),
            "--storage-driver",
            "vfs",
            "--events-backend",
            "none",
        ];
        all.extend_from_slice(args);
        run("podman", &all)
    };
    podman(&["load", "-i", tar.to_str().unwrap()]);
    let inspect: serde_json::Value =
        serde_json::from_str(&podman(&["image", "inspect", "umstage-test/loaded:7"])).unwrap();
    assert_eq!(inspect[0]["Id"], image.manifest.config().digest().digest());
    assert_eq!(inspect[0]["Config"]["Cmd"][0], "/bin/sh");
}

#[test]
fn docker_media_types_on_request_are_read_by_skopeo() {
    let f = Fixture::new(Compression::GZIP);
    let (tmp, store, source, oci) = (&f.tmp, &f.store, &f.source, &f.image);
    let docker = umstage_oci::image::write_image(
        store,
        &oci.config,
        oci.layers(),
        umstage_oci::ManifestFormat::Docker,
        &Default::default(),
    )
    .unwrap();
    assert_eq!(
        docker.descriptor.media_type().to_string(),
        umstage_oci::image::media::DOCKER_MANIFEST
    );
    assert_eq!(
        docker.layers()[0].media_type().to_string(),
        umstage_oci::image::media::DOCKER_LAYER_GZIP
    );
    let tar = tmp.path().join("docker-types.tar");
    export(store, &docker, &tar, "dockerish:1");
    let raw: serde_json::Value = serde_json::from_str(&run(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("docker-archive:{}", tar.display()),
        ],
    ))
    .unwrap();
    assert_eq!(raw["mediaType"], umstage_oci::image::media::DOCKER_MANIFEST);
    let config: serde_json::Value = serde_json::from_str(&run(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--config",
            &format!("oci-archive:{}", tar.display()),
        ],
    ))
    .unwrap();
    assert_eq!(config["config"]["Shell"][0], "/bin/sh");
    let err = umstage_oci::image::write_image(
        store,
        &oci.config,
        &[umstage_oci::layer::write_layer(
            store,
            &full_change_set(source),
            &umstage_oci::layer::LayerOptions {
                compression: Compression::ZSTD,
                ..Default::default()
            },
        )
        .unwrap()
        .descriptor()],
        umstage_oci::ManifestFormat::Docker,
        &Default::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("zstd"), "{err}");
}
