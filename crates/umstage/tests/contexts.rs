//! End to end: where a build's files come from, as `docker buildx build` documents it: named
//! contexts (`--build-context`) used by FROM and `COPY --from`, a named context replacing a
//! stage of the same name, and a context or Dockerfile read from standard input.

mod common;

use common::{Env, TestResult, assert_ok, stderr, text};
use umstage_testutil::archive::{self, Transport};

#[test]
fn a_directory_context_serves_from_and_copy_from_and_replaces_a_stage() -> TestResult {
    let env = Env::new()?;
    let files = env.context("files", &[("sub/x.txt", "from a directory\n")])?;
    let deps = env.context("deps", &[("y.txt", "replaces the stage\n")])?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox AS deps\n\
             RUN echo this-stage-is-replaced && exit 1\n\
             FROM files AS assembled\n\
             COPY --from=deps / /deps/\n\
             FROM busybox\n\
             COPY --from=assembled /sub/x.txt /x.txt\n\
             COPY --from=assembled /deps/y.txt /y.txt\n\
             COPY --from=files sub/x.txt /direct.txt\n",
        )],
    )?;
    let files_arg = format!("files={}", files.display());
    let deps_arg = format!("deps={}", deps.display());
    let out = env.build(
        &ctx,
        "image.tar",
        &["--build-context", &files_arg, "--build-context", &deps_arg],
    );
    assert_ok(&out);
    assert!(
        !stderr(&out).contains("this-stage-is-replaced"),
        "{}",
        text(&out)
    );
    let image = archive::apply_layers(&env.path("image.tar"), Transport::OciArchive)?;
    assert_eq!(image.read_to_string("/x.txt")?, "from a directory\n");
    assert_eq!(image.read_to_string("/y.txt")?, "replaces the stage\n");
    assert_eq!(image.read_to_string("/direct.txt")?, "from a directory\n");

    // The directory stage itself, as an image: its files, owned by root, and nothing else.
    let out = env.build(
        &ctx,
        "assembled.tar",
        &[
            "--build-context",
            &files_arg,
            "--build-context",
            &deps_arg,
            "--target",
            "assembled",
        ],
    );
    assert_ok(&out);
    let image = archive::apply_layers(&env.path("assembled.tar"), Transport::OciArchive)?;
    assert!(!image.path("/bin").exists());
    let x = common::entry(&image, "sub/x.txt").ok_or("sub/x.txt missing")?;
    assert_eq!((x.uid, x.gid), (0, 0));
    assert!(
        archive::strings(&image.config["config"]["Env"])
            .iter()
            .any(|e| e.starts_with("PATH=")),
        "{}",
        image.config
    );
    Ok(())
}

#[test]
fn a_dockerfile_or_a_tar_context_on_standard_input() -> TestResult {
    let env = Env::new()?;
    // `umstage build -`: a Dockerfile on standard input and no context.
    let mut args = env.build_args("plain.tar");
    args.push("-".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.umstage_with_input(&args, b"FROM busybox\nRUN echo from-stdin > /stdin.txt\n");
    assert_ok(&out);
    let image = archive::apply_layers(&env.path("plain.tar"), Transport::OciArchive)?;
    assert_eq!(image.read_to_string("/stdin.txt")?, "from-stdin\n");

    // `umstage build - < context.tar.gz`: the archive is the context, Dockerfile included.
    let ctx = env.context(
        "ctx",
        &[
            ("data/file.txt", "packed\n"),
            ("build.Dockerfile", "FROM busybox\nCOPY data /data\n"),
        ],
    )?;
    let packed = umstage_testutil::run(
        std::process::Command::new("tar")
            .arg("-czf")
            .arg("-")
            .arg("-C")
            .arg(&ctx)
            .arg("."),
    )?;
    let mut args = env.build_args("packed.tar");
    args.extend(["-f", "build.Dockerfile", "-"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.umstage_with_input(&args, &packed.stdout);
    assert_ok(&out);
    let image = archive::apply_layers(&env.path("packed.tar"), Transport::OciArchive)?;
    assert_eq!(image.read_to_string("/data/file.txt")?, "packed\n");
    Ok(())
}

/// Writes `data` as a blob of the OCI layout at `dir`; returns its descriptor fields.
fn blob(dir: &std::path::Path, data: &[u8]) -> Result<(String, usize), Box<dyn std::error::Error>> {
    use sha2::Digest as _;
    let hex = hex::encode(sha2::Sha256::digest(data));
    std::fs::create_dir_all(dir.join("blobs/sha256"))?;
    std::fs::write(dir.join("blobs/sha256").join(&hex), data)?;
    Ok((format!("sha256:{hex}"), data.len()))
}

/// An OCI layout whose index holds one image per architecture, each a single layer with a file
/// `/which` naming its architecture.
fn multi_platform_layout(env: &Env) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    use sha2::Digest as _;
    let dir = env.path("multi-layout");
    let mut manifests = Vec::new();
    for arch in ["arm64", "amd64"] {
        let files = env.context(&format!("files-{arch}"), &[("which", arch)])?;
        let tar = umstage_testutil::run(
            std::process::Command::new("tar")
                .args(["--owner=0", "--group=0", "-cf", "-", "-C"])
                .arg(&files)
                .arg("which"),
        )?
        .stdout;
        let diff_id = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&tar)));
        let (layer, layer_size) = blob(&dir, &tar)?;
        let config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        });
        let (config, config_size) = blob(&dir, config.to_string().as_bytes())?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_size}],
        });
        let (digest, size) = blob(&dir, manifest.to_string().as_bytes())?;
        manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": size,
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let inner = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let (digest, size) = blob(&dir, inner.to_string().as_bytes())?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest, "size": size,
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    std::fs::write(dir.join("index.json"), index.to_string())?;
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    env.dir.user().chown_tree(&dir)?;
    Ok(dir)
}

#[test]
fn the_platform_is_picked_from_a_multi_platform_index() -> TestResult {
    let env = Env::new()?;
    let layout = multi_platform_layout(&env)?;
    let multi = format!("multi=oci-layout://{}", layout.display());
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM multi AS native\n\
             FROM --platform=linux/arm64 multi AS arm\n\
             FROM scratch\n\
             COPY --from=native /which /native\n\
             COPY --from=arm /which /arm\n",
        )],
    )?;
    assert_ok(&env.build(&ctx, "image.tar", &["--build-context", &multi]));
    let image = archive::apply_layers(&env.path("image.tar"), Transport::OciArchive)?;
    assert_eq!(image.read_to_string("/native")?, "amd64");
    assert_eq!(image.read_to_string("/arm")?, "arm64");
    assert_eq!(image.config["architecture"], "amd64");

    // --platform picks the base for every stage and names the image's platform; with no RUN
    // step nothing needs to execute for the other architecture.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM multi\nARG TARGETARCH\nLABEL arch=$TARGETARCH\n",
    )?;
    let out = env.build(
        &ctx,
        "arm.tar",
        &["--build-context", &multi, "--platform", "linux/arm64"],
    );
    assert_ok(&out);
    let image = archive::apply_layers(&env.path("arm.tar"), Transport::OciArchive)?;
    assert_eq!(image.read_to_string("/which")?, "arm64");
    assert_eq!(image.config["architecture"], "arm64");
    assert_eq!(image.config["config"]["Labels"]["arch"], "arm64");
    let index = archive::skopeo_manifest(&env.path("arm.tar"), Transport::OciArchive)?;
    assert!(index["layers"].is_array(), "{index}");

    // A bad platform is a usage error.
    let out = env.build(&ctx, "bad.tar", &["--platform", "nonsense"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    Ok(())
}
