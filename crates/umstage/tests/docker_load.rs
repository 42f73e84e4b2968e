//! End to end: the archive umstage writes loads into a real Docker daemon (`docker load`), as
//! the default `-o image.tar` promises, and so does `--output type=docker`.
//!
//! The test starts a private `dockerd` (Debian's `docker.io`) with its own data root and socket
//! and no bridge, iptables or forwarding changes, and stops it by its pid. It needs root: run
//! as anyone else it says so and skips (and fails when `CI` is set, so CI never skips it).

mod common;

use std::process::Command;

use common::dockerd::Daemon;
use common::{Env, TestResult, assert_ok};
use serde_json::Value;

#[test]
fn docker_load_reads_the_default_archive_and_the_docker_output() -> TestResult {
    if !umstage_testutil::is_root() {
        let why = "docker_load: SKIPPED: starting a private dockerd needs root";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("{why}");
        return Ok(());
    }
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[
            ("hello.txt", "hello docker\n"),
            (
                "Dockerfile",
                "FROM busybox\n\
                 COPY hello.txt /hello.txt\n\
                 RUN echo built > /built.txt\n\
                 ENV GREETING=hi\n\
                 LABEL org.example.loaded=yes\n\
                 CMD [\"cat\", \"/hello.txt\"]\n",
            ),
        ],
    )?;
    let docker_out = format!("type=docker,dest={}", env.path("docker.tar").display());
    let out = env.build(
        &ctx,
        "image.tar",
        &["-t", "umstage-e2e/loaded:1", "-o", &docker_out],
    );
    assert_ok(&out);

    let daemon = Daemon::start()?;
    let loaded = daemon.load(&env.path("image.tar"))?;
    assert!(
        loaded.contains("Loaded image: umstage-e2e/loaded:1"),
        "{loaded}"
    );
    let image = daemon.inspect("umstage-e2e/loaded:1")?;
    let config = &image["Config"];
    assert_eq!(
        umstage_testutil::archive::strings(&config["Cmd"]),
        ["cat", "/hello.txt"]
    );
    assert!(
        umstage_testutil::archive::strings(&config["Env"])
            .iter()
            .any(|e| e == "GREETING=hi"),
        "{config}"
    );
    assert_eq!(config["Labels"]["org.example.loaded"], "yes");
    assert_eq!(image["Os"], "linux");
    // Base layer, COPY, RUN: three layers, each readable by Docker.
    assert_eq!(
        image["RootFS"]["Layers"].as_array().map(Vec::len),
        Some(3),
        "{image}"
    );
    // The image id Docker computes is umstage's config digest.
    let iid = umstage_testutil::run_stdout(
        Command::new("tar")
            .arg("-xOf")
            .arg(env.path("image.tar"))
            .arg("manifest.json"),
    )?;
    let manifest: Value = serde_json::from_str(&iid)?;
    let config_blob = manifest[0]["Config"].as_str().unwrap_or_default();
    assert!(
        config_blob.ends_with(
            image["Id"]
                .as_str()
                .unwrap_or("?")
                .trim_start_matches("sha256:")
        ),
        "{config_blob} vs {}",
        image["Id"]
    );
    // The files are there: docker cp out of a created (never started) container.
    let container = umstage_testutil::run_stdout(daemon.docker().args([
        "create",
        "--network",
        "none",
        "umstage-e2e/loaded:1",
    ]))?;
    let copied = umstage_testutil::run_stdout(daemon.docker().args([
        "cp",
        &format!("{}:/built.txt", container.trim()),
        "-",
    ]))?;
    assert!(copied.contains("built\n"), "{copied:?}");

    // --output type=docker loads too (it carries the -t name).
    let loaded = daemon.load(&env.path("docker.tar"))?;
    assert!(loaded.contains("umstage-e2e/loaded:1"), "{loaded}");
    Ok(())
}

#[test]
fn load_flag_hands_the_image_to_docker_when_its_daemon_answers() -> TestResult {
    if !umstage_testutil::is_root() {
        let why = "docker_load: SKIPPED: starting a private dockerd needs root";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("{why}");
        return Ok(());
    }
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[("Dockerfile", "FROM busybox\nRUN echo built > /b\n")],
    )?;
    let daemon = Daemon::start()?;
    // The test user reaches this root daemon as a member of a docker group would.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(daemon._dir.path(), std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(&daemon.socket, std::fs::Permissions::from_mode(0o666))?;
    let host = format!("unix://{}", daemon.socket.display());
    let mut args = env.build_args("image.tar");
    args.extend(["-t".into(), "umstage-e2e/flag:1".into(), "--load".into()]);
    args.push(ctx.to_string_lossy().into_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.umstage(&args, &[("DOCKER_HOST", &host)]);
    assert_ok(&out);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("loading the image into docker (docker load)"),
        "{log}"
    );
    assert!(log.contains("Loaded image: umstage-e2e/flag:1"), "{log}");
    let image = daemon.inspect("umstage-e2e/flag:1")?;
    assert_eq!(
        image["RootFS"]["Layers"].as_array().map(Vec::len),
        Some(2),
        "{image}"
    );
    Ok(())
}
