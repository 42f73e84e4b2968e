//! End to end, the build cache beyond one state root: a rebuild whose every step hits gives
//! the same image, and a cache exported by one state root (`--cache-to`) is used by another
//! (`--cache-from`), again giving the same image.

mod common;

use common::{Env, TestResult, assert_ok, ran, registry_with_cache, stderr, text};
use serde_json::Value;

/// The manifest digest and config digest of the image in an OCI archive, read with `tar`.
fn image_ids(env: &Env, archive: &str) -> Result<(String, String), Box<dyn std::error::Error>> {
    let read = |name: &str| -> Result<Value, Box<dyn std::error::Error>> {
        let out = umstage_testutil::run_stdout(
            std::process::Command::new("tar")
                .arg("-xOf")
                .arg(env.path(archive))
                .arg(name),
        )?;
        Ok(serde_json::from_str(&out)?)
    };
    let index = read("index.json")?;
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .ok_or("no manifest in the index")?
        .to_string();
    let hex = manifest_digest
        .strip_prefix("sha256:")
        .ok_or("not a sha256 digest")?;
    let manifest = read(&format!("blobs/sha256/{hex}"))?;
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .ok_or("no config digest")?
        .to_string();
    Ok((manifest_digest, config_digest))
}

const APP: &str = "FROM busybox AS build\nRUN echo dep > /dep\nCOPY src.txt /src.txt\nRUN cat /dep /src.txt > /built\nFROM busybox\nCOPY --from=build /built /app/built\nRUN wc -c /app/built > /size\nENV MODE=prod\nCMD [\"cat\", \"/app/built\"]\n";

fn app(env: &Env) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    env.context("app", &[("Dockerfile", APP), ("src.txt", "one\n")])
}

#[test]
fn a_rebuild_whose_every_step_hits_gives_the_same_image() -> TestResult {
    let env = Env::new()?;
    let ctx = app(&env)?;
    let first = env.build(&ctx, "first.tar", &[]);
    assert_ok(&first);
    assert_eq!(ran(&first).len(), 5, "{}", text(&first));
    // A second apart at least, so that a time taken anew would show.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = env.build(&ctx, "second.tar", &[]);
    assert_ok(&second);
    assert!(ran(&second).is_empty(), "{}", text(&second));
    assert_eq!(
        image_ids(&env, "first.tar")?,
        image_ids(&env, "second.tar")?
    );
    Ok(())
}

#[test]
fn an_inline_cache_and_what_it_carries_are_the_same_in_a_no_op_rebuild() -> TestResult {
    let env = Env::new()?;
    let ctx = app(&env)?;
    let inline = ["--build-arg", "BUILDKIT_INLINE_CACHE=1"];
    let first = env.build(&ctx, "first.tar", &inline);
    assert_ok(&first);
    // The final stage's COPY --from hits by its source stage's key now, where it missed
    // first: neither the records (an alias met before its result) nor what the cache carries
    // of the step show the difference.
    let second = env.build(&ctx, "second.tar", &inline);
    assert_ok(&second);
    assert!(ran(&second).is_empty(), "{}", text(&second));
    assert!(common::config(&env, "first.tar")?["umstage.cache.v1"]["explain"]["steps"].is_array());
    assert_eq!(
        image_ids(&env, "first.tar")?,
        image_ids(&env, "second.tar")?
    );
    Ok(())
}

#[test]
fn steps_reading_a_stage_that_ran_again_hit_when_what_they_read_is_unchanged() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "from",
        &[(
            "Dockerfile",
            "FROM busybox AS build\nARG V=1\nRUN echo \"$V\" > /stamp && echo dep > /dep\nFROM busybox\nCOPY --from=build /dep /dep\nRUN --mount=from=build,source=/dep,target=/m cat /m > /seen\nRUN echo after > /after\n",
        )],
    )?;
    let first = env.build(&ctx, "one.tar", &["--build-arg", "V=1"]);
    assert_ok(&first);
    assert_eq!(ran(&first).len(), 4, "{}", text(&first));
    // The build stage runs again and makes a new layer; /dep in it is what it was.
    let second = env.build(&ctx, "two.tar", &["--build-arg", "V=2"]);
    assert_ok(&second);
    assert_eq!(
        ran(&second),
        ["RUN echo \"$V\" > /stamp && echo dep > /dep"],
        "{}",
        text(&second)
    );
    assert_eq!(image_ids(&env, "one.tar")?, image_ids(&env, "two.tar")?);
    // Back to the first value: every step hits, by either key.
    let third = env.build(&ctx, "three.tar", &["--build-arg", "V=1"]);
    assert_ok(&third);
    assert!(ran(&third).is_empty(), "{}", text(&third));
    // What is read did change: both steps that read it run again.
    let changed = env.context(
        "from",
        &[(
            "Dockerfile",
            "FROM busybox AS build\nARG V=1\nRUN echo \"$V\" > /stamp && echo \"dep $V\" > /dep\nFROM busybox\nCOPY --from=build /dep /dep\nRUN --mount=from=build,source=/dep,target=/m cat /m > /seen\nRUN echo after > /after\n",
        )],
    )?;
    let fourth = env.build(&changed, "four.tar", &["--build-arg", "V=3"]);
    assert_ok(&fourth);
    assert_eq!(ran(&fourth).len(), 4, "{}", text(&fourth));
    Ok(())
}

/// The digest of the last layer of the image in an OCI archive.
fn last_layer(env: &Env, archive: &str) -> Result<String, Box<dyn std::error::Error>> {
    let (manifest, _) = image_ids(env, archive)?;
    let hex = manifest.strip_prefix("sha256:").ok_or("not sha256")?;
    let out = umstage_testutil::run_stdout(
        std::process::Command::new("tar")
            .arg("-xOf")
            .arg(env.path(archive))
            .arg(format!("blobs/sha256/{hex}")),
    )?;
    let manifest: Value = serde_json::from_str(&out)?;
    let layers = manifest["layers"].as_array().ok_or("no layers")?;
    Ok(layers
        .last()
        .and_then(|l| l["digest"].as_str())
        .ok_or("no layer")?
        .to_string())
}

#[test]
fn a_cache_directory_carries_every_step_to_an_empty_state_root() -> TestResult {
    let env = Env::new()?;
    let ctx = app(&env)?;
    let (max, min) = (env.path("cache-max"), env.path("cache-min"));
    let to_max = format!("type=local,dest={},mode=max", max.display());
    let to_min = format!("type=local,dest={}", min.display());
    let first = env.build(
        &ctx,
        "first.tar",
        &["--cache-to", &to_max, "--cache-to", &to_min],
    );
    assert_ok(&first);
    assert_eq!(ran(&first).len(), 5, "{}", text(&first));

    // The directory is an OCI layout an independent reader takes.
    let raw = umstage_testutil::run_stdout(
        std::process::Command::new("skopeo")
            .arg("inspect")
            .arg("--raw")
            .arg(format!("oci:{}:latest", max.display())),
    )?;
    let manifest: Value = serde_json::from_str(&raw)?;
    assert_eq!(
        manifest["artifactType"], "application/vnd.umstage.cache.v1",
        "{raw}"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.umstage.cache.config.v1+json"
    );

    // mode=max: an empty state root hits every step, and gives the same image.
    env.dir.mkdir("root-max")?;
    let from_max = format!("type=local,src={}", max.display());
    let second = env.build_in(
        &env.path("root-max"),
        &ctx,
        "second.tar",
        &["--cache-from", &from_max],
        &[],
    );
    assert_ok(&second);
    assert!(ran(&second).is_empty(), "{}", text(&second));
    assert_eq!(
        image_ids(&env, "first.tar")?,
        image_ids(&env, "second.tar")?
    );

    // mode=min holds the final stage's steps only: the build stage runs, the rest hits.
    env.dir.mkdir("root-min")?;
    let from_min = format!("type=local,src={}", min.display());
    let third = env.build_in(
        &env.path("root-min"),
        &ctx,
        "third.tar",
        &["--cache-from", &from_min],
        &[],
    );
    assert_ok(&third);
    assert_eq!(
        ran(&third),
        [
            "RUN echo dep > /dep",
            "COPY src.txt /src.txt",
            "RUN cat /dep /src.txt > /built"
        ],
        "{}",
        text(&third)
    );
    assert_eq!(image_ids(&env, "first.tar")?, image_ids(&env, "third.tar")?);

    // A blob that no longer matches its digest is never used: its step runs again.
    let digest = last_layer(&env, "first.tar")?;
    let hex = digest.strip_prefix("sha256:").ok_or("not sha256")?;
    std::fs::write(max.join("blobs/sha256").join(hex), b"tampered")?;
    env.dir.mkdir("root-corrupt")?;
    let fourth = env.build_in(
        &env.path("root-corrupt"),
        &ctx,
        "fourth.tar",
        &["--cache-from", &from_max],
        &[],
    );
    assert_ok(&fourth);
    assert_eq!(
        ran(&fourth),
        ["RUN wc -c /app/built > /size"],
        "{}",
        text(&fourth)
    );

    // A cache that is not there is a warning, and the build goes on.
    env.dir.mkdir("root-missing")?;
    let missing = format!("type=local,src={}", env.path("no-such-cache").display());
    let fifth = env.build_in(
        &env.path("root-missing"),
        &ctx,
        "fifth.tar",
        &["--cache-from", &missing],
        &[],
    );
    assert_ok(&fifth);
    assert!(
        stderr(&fifth).contains("WARNING: --cache-from: cache "),
        "{}",
        text(&fifth)
    );
    assert_eq!(ran(&fifth).len(), 5, "{}", text(&fifth));
    Ok(())
}

#[test]
fn a_registry_carries_the_cache_as_a_manifest_and_inline_in_a_pushed_image() -> TestResult {
    let env = Env::new()?;
    let registry = umstage_testutil::registry::Registry::start()?;
    let ctx = app(&env)?;
    let cache_ref = registry.reference("app-cache:1");
    let to = format!("type=registry,ref={cache_ref},mode=max");
    let first = env.build(&ctx, "first.tar", &["--cache-to", &to]);
    assert_ok(&first);
    assert_eq!(ran(&first).len(), 5, "{}", text(&first));
    // An ordinary registry holds it, as an OCI manifest an independent reader takes.
    let raw = umstage_testutil::run_stdout(
        std::process::Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{cache_ref}")),
    )?;
    let manifest: Value = serde_json::from_str(&raw)?;
    assert_eq!(
        manifest["artifactType"], "application/vnd.umstage.cache.v1",
        "{raw}"
    );

    // An empty state root hits every step from it and gives the same image.
    env.dir.mkdir("root-b")?;
    let from = format!("type=registry,ref={cache_ref}");
    let second = env.build_in(
        &env.path("root-b"),
        &ctx,
        "second.tar",
        &["--cache-from", &from],
        &[],
    );
    assert_ok(&second);
    assert!(ran(&second).is_empty(), "{}", text(&second));
    assert_eq!(
        image_ids(&env, "first.tar")?,
        image_ids(&env, "second.tar")?
    );

    // A fully cached CI build that pushes to the registry it takes its cache from moves no
    // layer bytes: the push mounts them from the cache's repository.
    env.dir.mkdir("root-ci")?;
    let ci_root = env.path("root-ci");
    let bb = format!("busybox=oci-layout://{}", env.busybox.display());
    let ci_ref = registry.reference("app:ci");
    let ci = env.umstage(
        &[
            "build",
            "--root",
            ci_root.to_str().unwrap_or_default(),
            "--progress",
            "plain",
            "--build-context",
            &bb,
            "--cache-from",
            &from,
            "-t",
            &ci_ref,
            "--push",
            ctx.to_str().unwrap_or_default(),
        ],
        &[],
    );
    assert_ok(&ci);
    assert!(ran(&ci).is_empty(), "{}", text(&ci));
    let made = last_layer(&env, "first.tar")?;
    let hex = made.strip_prefix("sha256:").ok_or("not sha256")?;
    assert!(
        !ci_root.join("blobs/sha256").join(hex).exists(),
        "the layer {made} was downloaded"
    );
    let copied = env.path("ci-copy");
    umstage_testutil::run(
        std::process::Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{ci_ref}"))
            .arg(format!("oci:{}:ci", copied.display())),
    )?;
    let pushed: Value = serde_json::from_slice(&std::fs::read(copied.join("index.json"))?)?;
    assert_eq!(
        pushed["manifests"][0]["digest"].as_str(),
        Some(image_ids(&env, "first.tar")?.0.as_str())
    );

    // The seed flow of the multi-stage guides: the build stage pushed with its inline cache,
    // then the app built in another empty root with --cache-from that image.
    env.dir.mkdir("root-c")?;
    let seed = registry.reference("app:build");
    let pushed = env.build_in(
        &env.path("root-c"),
        &ctx,
        "seed.tar",
        &[
            "--target",
            "build",
            "--build-arg",
            "BUILDKIT_INLINE_CACHE=1",
            "-t",
            &seed,
            "--push",
        ],
        &[],
    );
    assert_ok(&pushed);
    assert!(
        !stderr(&pushed).contains("not consumed"),
        "{}",
        text(&pushed)
    );
    env.dir.mkdir("root-d")?;
    let app_build = env.build_in(
        &env.path("root-d"),
        &ctx,
        "app.tar",
        &["--cache-from", &seed],
        &[],
    );
    assert_ok(&app_build);
    assert_eq!(
        ran(&app_build),
        [
            "COPY --from=build /built /app/built",
            "RUN wc -c /app/built > /size"
        ],
        "{}",
        text(&app_build)
    );
    // The inline cache carries the build stage's steps only; the app's are not like them.
    assert_eq!(
        misses(&app_build),
        [
            "no cache entry for this step in the imported caches",
            "parent step changed (line 6: no cache entry for this step in the imported caches)"
        ],
        "{}",
        text(&app_build)
    );
    let built = common::unpack(&env, "app.tar")?;
    assert_eq!(built.read_to_string("app/built")?, "dep\none\n");
    // The seed image carries its inline cache; an image built FROM it does not inherit it.
    let seed_config = common::config(&env, "seed.tar")?;
    assert!(
        seed_config["umstage.cache.v1"]["records"].is_array(),
        "{seed_config}"
    );
    assert!(
        seed_config["umstage.cache.v1"]["explain"]["steps"].is_array(),
        "{seed_config}"
    );
    let child = env.context(
        "child",
        &[("Dockerfile", &format!("FROM {seed}\nRUN true\n"))],
    )?;
    let child_build = env.build_in(&env.path("root-d"), &child, "child.tar", &[], &[]);
    assert_ok(&child_build);
    assert!(
        common::config(&env, "child.tar")?
            .get("umstage.cache.v1")
            .is_none()
    );

    // A cache that cannot be reached is a warning, and the build goes on.
    env.dir.mkdir("root-e")?;
    let port = umstage_testutil::registry::free_port()?;
    let unreachable = format!("127.0.0.1:{port}/nothing:here");
    let fourth = env.build_in(
        &env.path("root-e"),
        &ctx,
        "fourth.tar",
        &["--cache-from", &unreachable],
        &[],
    );
    assert_ok(&fourth);
    assert!(
        stderr(&fourth).contains("WARNING: --cache-from: cache 127.0.0.1:"),
        "{}",
        text(&fourth)
    );
    assert_eq!(ran(&fourth).len(), 5, "{}", text(&fourth));
    Ok(())
}

/// The reason each step that missed gave, in order.
fn misses(out: &std::process::Output) -> Vec<String> {
    stderr(out)
        .lines()
        .filter_map(|l| l.split_once(" cache miss: ").map(|(_, r)| r.to_string()))
        .collect()
}

/// A Dockerfile whose steps read a build arg and a context file.
const EXPLAINED: &str = "FROM busybox\nRUN echo base > /base\nARG VERSION=1.2\nCOPY src/main.c /src/main.c\nRUN echo $VERSION > /v\n";

/// Why the steps after `EXPLAINED`'s ARG miss when VERSION is 1.3 rather than 1.2.
const ARG_CAUSE: &str =
    "parent step changed (line 3: build arg VERSION changed (was 1.2, now 1.3))";

/// A build of `EXPLAINED` with src/main.c changed ran the steps from the COPY, and said why.
fn missed_after_the_file(out: &std::process::Output) {
    assert_eq!(
        ran(out),
        ["COPY src/main.c /src/main.c", "RUN echo $VERSION > /v"],
        "{}",
        text(out)
    );
    assert_eq!(
        misses(out),
        [
            "context file src/main.c changed",
            "parent step changed (line 4: context file src/main.c changed)"
        ],
        "{}",
        text(out)
    );
}

#[test]
fn a_step_that_misses_says_which_input_changed() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "explain",
        &[("Dockerfile", EXPLAINED), ("src/main.c", "int main;\n")],
    )?;
    let first = env.build(&ctx, "one.tar", &[]);
    assert_ok(&first);
    assert_eq!(
        misses(&first),
        ["no earlier build of this step in this state root"; 3],
        "{}",
        text(&first)
    );
    // A changed source file misses exactly the steps from the one that reads it.
    env.context("explain", &[("src/main.c", "int main(void);\n")])?;
    let second = env.build(&ctx, "two.tar", &[]);
    assert_ok(&second);
    missed_after_the_file(&second);
    let third = env.build(&ctx, "three.tar", &["--build-arg", "VERSION=1.3"]);
    assert_ok(&third);
    // The ARG's value is part of the chain, so both steps after it miss, and say why.
    assert_eq!(misses(&third), [ARG_CAUSE, ARG_CAUSE], "{}", text(&third));
    Ok(())
}

#[test]
fn a_miss_in_an_empty_state_root_is_explained_against_the_imported_cache() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "explain",
        &[("Dockerfile", EXPLAINED), ("src/main.c", "int main;\n")],
    )?;
    let dir = env.path("cache-dir");
    let to_dir = format!("type=local,dest={},mode=max", dir.display());
    let first = env.build(&ctx, "one.tar", &["--cache-to", &to_dir]);
    assert_ok(&first);
    let from_dir = format!("type=local,src={}", dir.display());

    // A changed file, in a root that never built the step: the cache says what was there.
    env.context("explain", &[("src/main.c", "int main(void);\n")])?;
    env.dir.mkdir("root-b")?;
    let second = env.build_in(
        &env.path("root-b"),
        &ctx,
        "two.tar",
        &["--cache-from", &from_dir],
        &[],
    );
    assert_ok(&second);
    missed_after_the_file(&second);

    // A changed build arg names the old value, and what it makes miss after it.
    env.context("explain", &[("src/main.c", "int main;\n")])?;
    env.dir.mkdir("root-c")?;
    let third = env.build_in(
        &env.path("root-c"),
        &ctx,
        "three.tar",
        &["--cache-from", &from_dir, "--build-arg", "VERSION=1.3"],
        &[],
    );
    assert_ok(&third);
    assert_eq!(misses(&third), [ARG_CAUSE, ARG_CAUSE], "{}", text(&third));

    // Another base image: nothing in the cache follows it.
    let other_base = env.path("other-base");
    let based = env.context(
        "other",
        &[("Dockerfile", "FROM busybox\nRUN echo 2 > /two\n")],
    )?;
    let to_layout = format!("type=oci,dest={},tar=false", other_base.display());
    assert_ok(&env.build(&based, "other.tar", &["-o", &to_layout]));
    env.dir.mkdir("root-d")?;
    let bb = format!("busybox=oci-layout://{}", other_base.display());
    let fourth = env.build_in(
        &env.path("root-d"),
        &ctx,
        "four.tar",
        &["--cache-from", &from_dir, "--build-context", &bb],
        &[],
    );
    assert_ok(&fourth);
    assert_eq!(
        misses(&fourth).first().map(String::as_str),
        Some("no cache entry for this base image"),
        "{}",
        text(&fourth)
    );
    Ok(())
}

/// A build in the state root `root` with no output but the cache (`-o type=cacheonly`).
fn cacheonly(
    env: &Env,
    root: &std::path::Path,
    ctx: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    let mut all = vec![
        "build",
        "--root",
        root.to_str().unwrap_or_default(),
        "--progress",
        "plain",
        "-o",
        "type=cacheonly",
    ];
    all.extend_from_slice(args);
    all.push(ctx.to_str().unwrap_or_default());
    env.umstage(&all, &[])
}

/// The hex digests of the blobs in `root`'s content store.
fn stored_blobs(root: &std::path::Path) -> std::io::Result<Vec<String>> {
    Ok(std::fs::read_dir(root.join("blobs/sha256"))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect())
}

#[test]
fn a_build_whose_every_step_hits_downloads_no_base_layer() -> TestResult {
    let env = Env::new()?;
    let common::RegistryCache {
        registry: _registry,
        base,
        ctx,
        cache,
    } = registry_with_cache(&env, "lazy")?;
    env.dir.mkdir("root-b")?;
    let root = env.path("root-b");
    let bb = format!("busybox=oci-layout://{}", env.busybox.display());
    let second = cacheonly(
        &env,
        &root,
        &ctx,
        &["--build-context", &bb, "--cache-from", &cache],
    );
    assert_ok(&second);
    assert!(ran(&second).is_empty(), "{}", text(&second));
    let blobs = stored_blobs(&root)?;
    let layers = umstage_testutil::run_stdout(
        std::process::Command::new("skopeo")
            .args([
                "inspect",
                "--tls-verify=false",
                "--format",
                "{{range .Layers}}{{.}} {{end}}",
            ])
            .arg(format!("docker://{base}")),
    )?;
    assert!(layers.contains("sha256:"), "{layers}");
    for layer in layers.split_whitespace() {
        let hex = layer.strip_prefix("sha256:").ok_or("not sha256")?;
        assert!(
            !blobs.iter().any(|b| b == hex),
            "base layer {layer} was downloaded"
        );
    }
    // An output that needs the bytes gets them, and the image reads back.
    let third = env.build_in(&root, &ctx, "third.tar", &["--cache-from", &cache], &[]);
    assert_ok(&third);
    assert_eq!(image_ids(&env, "first.tar")?, image_ids(&env, "third.tar")?);
    let image = common::unpack(&env, "third.tar")?;
    assert_eq!(image.read_to_string("made")?, "made\n");
    Ok(())
}

#[test]
fn a_fully_cached_build_exporting_its_cache_back_to_the_registry_downloads_no_layer() -> TestResult
{
    let env = Env::new()?;
    let common::RegistryCache {
        registry: _registry,
        ctx,
        cache,
        ..
    } = registry_with_cache(&env, "ci")?;
    let to = format!("{cache},mode=max");
    let made = last_layer(&env, "first.tar")?;
    // The CI flow: an empty root, the cache from the registry and back to it.
    env.dir.mkdir("root-b")?;
    let root = env.path("root-b");
    let second = cacheonly(
        &env,
        &root,
        &ctx,
        &["--cache-from", &cache, "--cache-to", &to],
    );
    assert_ok(&second);
    assert!(ran(&second).is_empty(), "{}", text(&second));
    let blobs = stored_blobs(&root)?;
    let hex = made.strip_prefix("sha256:").ok_or("not sha256")?;
    assert!(
        !blobs.iter().any(|b| b == hex),
        "the cached RUN's layer {made} was downloaded to export the cache it came from"
    );
    // The cache it pushed still serves another empty root, whole.
    env.dir.mkdir("root-c")?;
    let third = env.build_in(
        &env.path("root-c"),
        &ctx,
        "third.tar",
        &["--cache-from", &cache],
        &[],
    );
    assert_ok(&third);
    assert!(ran(&third).is_empty(), "{}", text(&third));
    assert_eq!(image_ids(&env, "first.tar")?, image_ids(&env, "third.tar")?);
    Ok(())
}

/// The CI Makefile of the multi-stage guides: the build stage pushed with its inline cache,
/// then the app built with `--cache-from` that image, each in its own empty state root.
const MAKEFILE: &str = "\
COMMON = --progress plain --build-context busybox=oci-layout://$(BUSYBOX)

build-stage:
\t$(UMSTAGE) build --root $(ROOT)/seed $(COMMON) --target build --build-arg BUILDKIT_INLINE_CACHE=1 -t $(REPO)/app:build --push .

app: build-stage
\t$(UMSTAGE) build --root $(ROOT)/app $(COMMON) --cache-from $(REPO)/app:build -t $(REPO)/app:1 --push -o $(OUT) .
";

#[test]
fn the_seed_flow_of_the_guides_runs_from_a_makefile() -> TestResult {
    let env = Env::new()?;
    let registry = umstage_testutil::registry::Registry::start()?;
    let ctx = env.context(
        "seeded",
        &[
            ("Dockerfile", APP),
            ("src.txt", "one\n"),
            ("Makefile", MAKEFILE),
        ],
    )?;
    env.dir.mkdir("roots")?;
    let out = env
        .dir
        .user()
        .command("make")
        .arg("-C")
        .arg(&ctx)
        .arg("app")
        .arg(format!("UMSTAGE={}", env.bin.display()))
        .arg(format!("BUSYBOX={}", env.busybox.display()))
        .arg(format!("ROOT={}", env.path("roots").display()))
        .arg(format!("REPO={}", registry.host()))
        .arg(format!("OUT={}", env.path("app.tar").display()))
        .env("XDG_DATA_HOME", env.path("xdg"))
        .output()?;
    assert_ok(&out);
    // The second build ran only the app stage's steps: the build stage came from the image.
    let err = stderr(&out);
    let second = &err[err.rfind("building stage").ok_or("no second build")?..];
    let second_out = std::process::Output {
        status: out.status,
        stdout: Vec::new(),
        stderr: second.as_bytes().to_vec(),
    };
    assert_eq!(
        ran(&second_out),
        [
            "COPY --from=build /built /app/built",
            "RUN wc -c /app/built > /size"
        ],
        "{}",
        text(&out)
    );
    let mut tags = registry.tags("app")?;
    tags.sort();
    assert_eq!(tags, ["1", "build"]);
    let image = common::unpack(&env, "app.tar")?;
    assert_eq!(image.read_to_string("app/built")?, "dep\none\n");
    Ok(())
}

#[test]
fn a_registry_cache_layer_that_does_not_match_its_digest_is_rejected_and_its_step_rebuilt()
-> TestResult {
    let env = Env::new()?;
    let registry = umstage_testutil::registry::Registry::start()?;
    let ctx = app(&env)?;
    let cache = format!(
        "type=registry,ref={}",
        registry.reference("corrupt-cache:1")
    );
    let first = env.build(
        &ctx,
        "first.tar",
        &["--cache-to", &format!("{cache},mode=max")],
    );
    assert_ok(&first);
    // The layer of the last RUN, altered in the registry's storage (same length).
    let digest = last_layer(&env, "first.tar")?;
    let hex = digest.strip_prefix("sha256:").ok_or("not sha256")?;
    let data = registry
        .storage_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut bytes = std::fs::read(&data)?;
    for b in bytes.iter_mut().take(64) {
        *b = !*b;
    }
    std::fs::write(&data, &bytes)?;

    env.dir.mkdir("root-b")?;
    let second = env.build_in(
        &env.path("root-b"),
        &ctx,
        "second.tar",
        &["--cache-from", &cache],
        &[],
    );
    assert_ok(&second);
    assert!(
        stderr(&second).contains("is unusable; building again without it"),
        "{}",
        text(&second)
    );
    assert!(
        ran(&second).contains(&"RUN wc -c /app/built > /size".to_string()),
        "{}",
        text(&second)
    );
    let image = common::unpack(&env, "second.tar")?;
    assert_eq!(image.read_to_string("app/built")?, "dep\none\n");
    Ok(())
}
