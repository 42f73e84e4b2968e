//! The registry client against a real `docker-registry` on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use umstage_oci::auth::{AuthStore, Credential};
use umstage_oci::compress::Compression;
use umstage_oci::config::ImageConfig;
use umstage_oci::image::write_image;
use umstage_oci::registry::{RegistryClient, RegistryError, RegistryOptions, block_on};
use umstage_oci::unpack::{UnpackOptions, unpack_blob};
use umstage_oci::{ContentStore, ManifestFormat, Platform, reference};
use umstage_testutil::registry::Registry;

fn client_with(credential: Option<(&str, &str, &str)>) -> RegistryClient {
    let mut auth = AuthStore::default();
    if let Some((registry, username, password)) = credential {
        auth.insert(
            registry,
            Credential::Basic {
                username: username.into(),
                password: password.into(),
            },
        );
    }
    RegistryClient::new(RegistryOptions {
        auth,
        ..Default::default()
    })
}

#[test]
fn push_then_pull_round_trips_and_skopeo_sees_the_image() {
    let registry = Registry::start().expect("docker-registry must be installed (see .ci/run)");
    let tmp = tempfile::tempdir().unwrap();
    let store = ContentStore::open(tmp.path().join("store")).unwrap();
    let source = tmp.path().join("source");
    make_rich_tree(&source);
    let image = build_image(&store, &source, Compression::GZIP);
    let client = RegistryClient::default();
    let target = reference::parse(&registry.reference("team/rich:1.0")).unwrap();
    let pushed = block_on(client.push(&store, &image, &target, None))
        .unwrap()
        .unwrap();
    assert_eq!(&pushed, image.digest());

    let inspect: serde_json::Value = serde_json::from_str(&run(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{}", registry.reference("team/rich:1.0")),
        ],
    ))
    .unwrap();
    assert_eq!(inspect["Digest"], image.digest().to_string());

    let fresh = ContentStore::open(tmp.path().join("fresh")).unwrap();
    let pulled = block_on(client.pull(&fresh, &target, &Platform::default()))
        .unwrap()
        .unwrap();
    assert_eq!(pulled.digest(), image.digest());
    assert_eq!(pulled.config, image.config);
    let rootfs = tmp.path().join("rootfs");
    for layer in pulled.layers() {
        unpack_blob(&fresh, layer.digest(), &rootfs, &UnpackOptions::default()).unwrap();
    }
    assert_eq!(
        snapshot(&rootfs, true),
        clamp_mtimes(
            without_overlay_xattrs(snapshot(&source, true)),
            1_700_000_000
        )
    );

    // A stored blob that went bad is fetched again, never used.
    let layer = pulled.layers()[0].digest().clone();
    let path = fresh.blob_path(&layer).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    block_on(client.pull(&fresh, &target, &Platform::default()))
        .unwrap()
        .unwrap();
    fresh.verify(&layer).unwrap();

    // Pinned by digest, and into another repository with a cross-repository mount.
    let pinned =
        reference::parse(&format!("{}/team/rich@{}", registry.host(), image.digest())).unwrap();
    assert_eq!(
        block_on(client.pull(&fresh, &pinned, &Platform::default()))
            .unwrap()
            .unwrap()
            .digest(),
        image.digest()
    );
    let other = reference::parse(&registry.reference("other/rich:copy")).unwrap();
    block_on(client.push(&store, &image, &other, Some(&target)))
        .unwrap()
        .unwrap();
    assert_eq!(registry.tags("other/rich").unwrap(), ["copy"]);
}

#[test]
fn pulls_the_testutil_busybox_pushed_by_skopeo() {
    let registry = Registry::start().expect("docker-registry must be installed (see .ci/run)");
    let busybox = umstage_testutil::images::busybox()
        .expect("the busybox test image (busybox-static) must be available");
    let pushed = busybox.push(&registry).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let store = ContentStore::open(tmp.path().join("store")).unwrap();
    let image = block_on(RegistryClient::default().pull(
        &store,
        &reference::parse(&pushed).unwrap(),
        &Platform::default(),
    ))
    .unwrap()
    .unwrap();
    let rootfs = tmp.path().join("rootfs");
    for layer in image.layers() {
        unpack_blob(&store, layer.digest(), &rootfs, &UnpackOptions::default()).unwrap();
    }
    assert!(rootfs.join("bin/busybox").is_file() || rootfs.join("bin/sh").exists());
    assert_eq!(
        image.config.config.cmd.as_deref(),
        Some(&["sh".to_owned()][..])
    );
}

fn platform_image(store: &ContentStore, arch: &str) -> umstage_oci::Image {
    let config = ImageConfig {
        architecture: arch.into(),
        os: "linux".into(),
        ..Default::default()
    };
    write_image(
        store,
        &config,
        &[],
        ManifestFormat::Oci,
        &Default::default(),
    )
    .unwrap()
}

#[test]
fn pull_picks_the_platform_from_a_multi_platform_index() {
    let registry = Registry::start().expect("docker-registry must be installed (see .ci/run)");
    let tmp = tempfile::tempdir().unwrap();
    let store = ContentStore::open(tmp.path().join("store")).unwrap();
    let images = [
        platform_image(&store, "amd64"),
        platform_image(&store, "arm64"),
    ];
    let target = reference::parse(&registry.reference("multi:latest")).unwrap();
    let client = RegistryClient::default();
    block_on(client.push_index(&store, &images, &target))
        .unwrap()
        .unwrap();

    let fresh = ContentStore::open(tmp.path().join("fresh")).unwrap();
    let arm = block_on(client.pull(&fresh, &target, &"linux/arm64".parse().unwrap()))
        .unwrap()
        .unwrap();
    assert_eq!(arm.config.architecture, "arm64");
    let amd = block_on(client.pull(&fresh, &target, &Platform::default()))
        .unwrap()
        .unwrap();
    assert_eq!(amd.digest(), images[0].digest());
    let err = block_on(client.pull(&fresh, &target, &"linux/s390x".parse().unwrap()))
        .unwrap()
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("linux/s390x") && message.contains("linux/arm64"),
        "{message}"
    );
}

#[test]
fn auth_errors_are_distinct_and_never_show_the_password() {
    let registry = Registry::start_with_basic_auth("builder", "s3cret-pw")
        .expect("docker-registry and htpasswd must be installed");
    let tmp = tempfile::tempdir().unwrap();
    let store = ContentStore::open(tmp.path().join("store")).unwrap();
    let image = platform_image(&store, "amd64");
    let target = reference::parse(&registry.reference("private/app:1")).unwrap();
    let host = registry.host();

    let err = block_on(client_with(None).push(&store, &image, &target, None))
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(
        err.to_string().contains(&host) && err.to_string().contains("no credentials"),
        "{err}"
    );

    let err = block_on(
        client_with(Some((&host, "builder", "wrong-pw"))).push(&store, &image, &target, None),
    )
    .unwrap()
    .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(
        err.to_string().contains("rejected") && !format!("{err:?}").contains("wrong-pw"),
        "{err}"
    );

    let good = client_with(Some((&host, "builder", "s3cret-pw")));
    block_on(good.push(&store, &image, &target, None))
        .unwrap()
        .unwrap();
    let fresh = ContentStore::open(tmp.path().join("fresh")).unwrap();
    let pulled = block_on(good.pull(&fresh, &target, &Platform::default()))
        .unwrap()
        .unwrap();
    assert_eq!(pulled.digest(), image.digest());

    // Credentials from a Docker config file work the same way.
    let config = tmp.path().join("config.json");
    std::fs::write(
        &config,
        format!(r#"{{"auths":{{"{host}":{{"username":"builder","password":"s3cret-pw"}}}}}}"#),
    )
    .unwrap();
    let from_file = RegistryClient::new(RegistryOptions {
        auth: AuthStore::from_files(&[config]),
        ..Default::default()
    });
    block_on(from_file.pull(&fresh, &target, &Platform::default()))
        .unwrap()
        .unwrap();
}

#[test]
fn missing_images_and_unreachable_registries_say_so() {
    let registry = Registry::start().expect("docker-registry must be installed (see .ci/run)");
    let tmp = tempfile::tempdir().unwrap();
    let store = ContentStore::open(tmp.path().join("store")).unwrap();
    let missing = reference::parse(&registry.reference("nothing/here:1")).unwrap();
    let err = block_on(RegistryClient::default().pull(&store, &missing, &Platform::default()))
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("nothing/here"), "{err}");

    let port = umstage_testutil::registry::free_port().unwrap();
    let nowhere = reference::parse(&format!("127.0.0.1:{port}/app:1")).unwrap();
    let err = block_on(RegistryClient::default().pull(&store, &nowhere, &Platform::default()))
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}
