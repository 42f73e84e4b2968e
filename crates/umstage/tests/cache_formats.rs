//! End to end, the forms a cache export takes as buildx's `--cache-to` options ask
//! (`compression=`, `force-compression=`, `oci-mediatypes=`, `image-manifest=`), read back
//! with `skopeo inspect --raw` and by a build in an empty state root.

mod common;

use common::{Env, TestResult, assert_ok, stderr, text};
use serde_json::Value;

const APP: &str = "FROM busybox AS build\nRUN echo dep > /dep\nCOPY src.txt /src.txt\nRUN cat /dep /src.txt > /built\nFROM busybox\nCOPY --from=build /built /app/built\n";

/// The raw manifest skopeo reads at `location` (`oci:DIR:latest`, `docker://REF`).
fn raw(location: &str) -> Result<Value, Box<dyn std::error::Error>> {
    let out = umstage_testutil::run_stdout(
        std::process::Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(location),
    )?;
    Ok(serde_json::from_str(&out)?)
}

/// The media types of the blobs a cache manifest lists (an image manifest's layers, or an
/// index's entries), in order.
fn blob_types(manifest: &Value) -> Vec<String> {
    let list = manifest["layers"]
        .as_array()
        .or_else(|| manifest["manifests"].as_array());
    list.into_iter()
        .flatten()
        .filter_map(|d| d["mediaType"].as_str().map(str::to_owned))
        .collect()
}

/// Builds `ctx` in a new empty state root from each cache of `froms` (into `0.tar`, `1.tar`…):
/// every step hits, with no warning.
fn every_step_hits_in_an_empty_root(
    env: &Env,
    ctx: &std::path::Path,
    froms: &[String],
) -> TestResult {
    for (n, from) in froms.iter().enumerate() {
        let root = format!("root-{n}");
        env.dir.mkdir(&root)?;
        let out = format!("{n}.tar");
        let build = env.build_in(&env.path(&root), ctx, &out, &["--cache-from", from], &[]);
        assert_ok(&build);
        assert!(
            !stderr(&build).contains(" cache miss: "),
            "{}",
            text(&build)
        );
        assert!(!stderr(&build).contains("WARNING"), "{}", text(&build));
    }
    Ok(())
}

#[test]
fn compression_converts_the_layers_made_here_and_with_force_every_one() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context("app", &[("Dockerfile", APP), ("src.txt", "one\n")])?;
    let (zstd, plain) = (env.path("cache-zstd"), env.path("cache-plain"));
    let to_zstd = format!(
        "type=local,dest={},mode=max,compression=zstd,compression-level=3",
        zstd.display()
    );
    let to_plain = format!(
        "type=local,dest={},mode=max,compression=uncompressed,force-compression=true",
        plain.display()
    );
    let first = env.build(
        &ctx,
        "first.tar",
        &["--cache-to", &to_zstd, "--cache-to", &to_plain],
    );
    assert_ok(&first);

    // The four layers the build made are zstd; busybox's was pulled, and stays gzip.
    let manifest = raw(&format!("oci:{}:latest", zstd.display()))?;
    let mut types = blob_types(&manifest);
    types.sort();
    assert_eq!(
        types,
        [
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ],
        "{manifest}"
    );
    // Forced: busybox's too.
    let manifest = raw(&format!("oci:{}:latest", plain.display()))?;
    let types = blob_types(&manifest);
    assert_eq!(types.len(), 5, "{manifest}");
    assert!(
        types
            .iter()
            .all(|t| t == "application/vnd.oci.image.layer.v1.tar"),
        "{manifest}"
    );

    // An empty state root hits every step from a converted cache, and gets its layers.
    let froms = [zstd, plain].map(|c| format!("type=local,src={}", c.display()));
    every_step_hits_in_an_empty_root(&env, &ctx, &froms)?;
    // umoci, which unpacks it, reads no zstd.
    let built = common::unpack(&env, "1.tar")?;
    assert_eq!(built.read_to_string("app/built")?, "dep\none\n");
    Ok(())
}

#[test]
fn a_registry_cache_can_be_an_index_and_have_docker_media_types() -> TestResult {
    let env = Env::new()?;
    let registry = umstage_testutil::registry::Registry::start()?;
    let ctx = env.context("app", &[("Dockerfile", APP), ("src.txt", "one\n")])?;
    let (index_ref, docker_ref) = (
        registry.reference("app-cache:index"),
        registry.reference("app-cache:docker"),
    );
    let to_index = format!("type=registry,ref={index_ref},mode=max,image-manifest=false");
    let to_docker = format!("type=registry,ref={docker_ref},mode=max,oci-mediatypes=false");
    let first = env.build(
        &ctx,
        "first.tar",
        &["--cache-to", &to_index, "--cache-to", &to_docker],
    );
    assert_ok(&first);

    let index = raw(&format!("docker://{index_ref}"))?;
    assert_eq!(
        index["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{index}"
    );
    assert_eq!(
        blob_types(&index).last().map(String::as_str),
        Some("application/vnd.umstage.cache.config.v1+json"),
        "{index}"
    );
    let docker = raw(&format!("docker://{docker_ref}"))?;
    assert_eq!(
        docker["mediaType"], "application/vnd.docker.distribution.manifest.list.v2+json",
        "{docker}"
    );
    let types = blob_types(&docker);
    assert_eq!(types.len(), 6, "{docker}");
    assert!(
        types[..5]
            .iter()
            .all(|t| t == "application/vnd.docker.image.rootfs.diff.tar.gzip"),
        "{docker}"
    );

    let froms = [index_ref, docker_ref].map(|r| format!("type=registry,ref={r}"));
    every_step_hits_in_an_empty_root(&env, &ctx, &froms)?;
    Ok(())
}

#[test]
fn an_option_umstage_cannot_honour_is_refused_by_name() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context("app", &[("Dockerfile", APP), ("src.txt", "one\n")])?;
    for (option, says) in [
        ("compression=estargz", "compression=estargz"),
        (
            "compression=zstd,compression-level=30",
            "compression-level=30",
        ),
        (
            "oci-mediatypes=false,image-manifest=true",
            "image-manifest=true needs oci-mediatypes=true",
        ),
        (
            "compression=zstd,oci-mediatypes=false",
            "compression=zstd needs oci-mediatypes=true",
        ),
    ] {
        let to = format!("type=local,dest={},{option}", env.path("c").display());
        let out = env.build(&ctx, "out.tar", &["--cache-to", &to]);
        assert!(!out.status.success(), "{}", text(&out));
        assert!(stderr(&out).contains(says), "{}", text(&out));
    }
    // A zstd layer has no Docker media type, as in an image: one that is zstd only when the
    // cache is written (the base's, forced) is refused then.
    let to = format!(
        "type=local,dest={},compression=zstd,force-compression=true",
        env.path("d").display()
    );
    assert_ok(&env.build(&ctx, "zstd.tar", &["--cache-to", &to]));
    let from = format!("type=local,src={}", env.path("d").display());
    let to = format!(
        "type=local,dest={},oci-mediatypes=false",
        env.path("e").display()
    );
    env.dir.mkdir("root-z")?;
    let out = env.build_in(
        &env.path("root-z"),
        &ctx,
        "out.tar",
        &["--cache-from", &from, "--cache-to", &to],
        &[],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        stderr(&out).contains("oci-mediatypes=false"),
        "{}",
        text(&out)
    );
    Ok(())
}
