//! The flags a docker user types: the ones umstage has, each seen where it acts (inside RUN,
//! in the image, in podman), and the ones it lacks, refused with why.

mod common;

use std::process::Command;

use common::{Env, TestResult, assert_ok, stderr, text};
use serde_json::Value;

#[test]
fn docker_flags_umstage_lacks_are_refused_with_why() -> TestResult {
    let env = Env::new()?;
    for (args, says) in [
        (&["build", "--squash", "."][..], "FROM scratch"),
        (&["build", "--memory", "2g", "."], "systemd-run"),
        (&["build", "--cgroup-parent=x", "."], "cgroup"),
        (&["build", "--isolation", "hyperv", "."], "Windows"),
    ] {
        let out = env.umstage(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let err = stderr(&out);
        let flag = args[1].split('=').next().unwrap_or_default();
        assert!(
            err.contains(&format!(
                "error: {flag} is a docker build flag that umstage does not have: "
            )) && err.contains(says),
            "{args:?}: {err}"
        );
        assert!(!err.contains("tip:"), "clap's tips mislead: {err}");
    }
    Ok(())
}

/// The size in KiB that the step's `df -k /dev/shm` printed (its line ends with the mount point).
fn shm_kib(log: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.trim_end().ends_with(" /dev/shm"))?;
    let mut fields = line.split_whitespace().rev();
    // `... SIZE USED AVAIL USE% /dev/shm`: the size is fifth from the end.
    fields.nth(4)?.parse().ok()
}

#[test]
fn run_sees_add_host_shm_size_and_ulimit_and_they_key_the_step() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN grep -E 'db|v6' /etc/hosts; df -k /dev/shm | tail -n 1; echo soft=$(ulimit -n) hard=$(ulimit -Hn)\n",
        )],
    )?;
    let flags = [
        "--add-host",
        "db:10.1.2.3",
        "--add-host",
        "v6=::1",
        "--shm-size",
        "256m",
        "--ulimit",
        "nofile=512:1024",
    ];
    let out = env.build(&ctx, "a.tar", &flags);
    assert_ok(&out);
    let log = stderr(&out);
    assert!(log.contains("10.1.2.3\tdb"), "{log}");
    assert!(log.contains("::1\tv6"), "{log}");
    assert_eq!(shm_kib(&log), Some(262_144), "a 256 MiB /dev/shm: {log}");
    assert!(log.contains("soft=512 hard=1024"), "{log}");
    // Another host is another step, as in BuildKit, whose ExecOp carries them.
    let out = env.build(&ctx, "b.tar", &["--add-host", "db:10.9.9.9"]);
    assert_ok(&out);
    let log = stderr(&out);
    assert!(
        log.contains("10.9.9.9\tdb") && !log.contains("CACHED"),
        "{log}"
    );
    assert_eq!(
        shm_kib(&log),
        Some(65_536),
        "Docker's 64 MiB by default: {log}"
    );
    // Docker's mistakes, in Docker's words.
    let out = env.build(&ctx, "c.tar", &["--add-host", "db:host-gateway"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        stderr(&out).contains("umstage has no daemon"),
        "{}",
        text(&out)
    );
    let out = env.build(&ctx, "c.tar", &["--ulimit", "files=1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("nofile"), "{}", text(&out));
    Ok(())
}

/// The JSON file `name` of the archive `tar` (extracted with tar, not umstage).
fn archive_json(env: &Env, tar: &str, name: &str) -> Result<Value, Box<dyn std::error::Error>> {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(env.path(tar))
        .arg(name)
        .output()?;
    assert!(out.status.success(), "{}", text(&out));
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[test]
fn annotations_go_on_the_manifest_or_the_index_as_buildx_puts_them() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context("ctx", &[("Dockerfile", "FROM busybox\n")])?;
    let out = env.build(
        &ctx,
        "image.tar",
        &[
            "--annotation",
            "org.opencontainers.image.title=plain",
            "--annotation",
            "manifest:org.example.level=manifest",
            "--annotation",
            "index:org.example.level=index",
        ],
    );
    assert_ok(&out);
    let index = archive_json(&env, "image.tar", "index.json")?;
    assert_eq!(
        index["annotations"]["org.example.level"], "index",
        "{index}"
    );
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap_or_default()
        .replace(':', "/");
    let manifest = archive_json(&env, "image.tar", &format!("blobs/{digest}"))?;
    let annotations = &manifest["annotations"];
    assert_eq!(
        annotations["org.opencontainers.image.title"], "plain",
        "{manifest}"
    );
    assert_eq!(annotations["org.example.level"], "manifest", "{manifest}");
    let out = env.build(&ctx, "x.tar", &["--annotation", "manifest-descriptor:k=v"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    Ok(())
}

#[test]
fn load_hands_the_image_to_podman_and_says_so() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[("Dockerfile", "FROM busybox\nRUN echo loaded > /l\n")],
    )?;
    // No Docker daemon answers for the test user, so podman loads it, into the test's own
    // storage ($XDG_DATA_HOME/containers, which Env sets).
    let mut args = env.build_args("unused.tar");
    args.retain(|a| a != "-o" && !a.ends_with("unused.tar"));
    let iid = env.path("iid");
    args.extend([
        "-t".into(),
        "umstage-load-test:1".into(),
        "--load".into(),
        "--iidfile".into(),
        iid.to_string_lossy().into_owned(),
    ]);
    args.push(ctx.to_string_lossy().into_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.umstage(&args, &[]);
    assert_ok(&out);
    let log = stderr(&out);
    assert!(
        log.contains("loading the image into podman (podman load)"),
        "{log}"
    );
    assert!(
        log.contains("Loaded image: docker.io/library/umstage-load-test:1"),
        "{log}"
    );
    // podman knows it by the image id umstage made.
    let mut podman = env.dir.user().command("podman");
    podman
        .args([
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            "umstage-load-test:1",
        ])
        .env("XDG_DATA_HOME", env.path("xdg"));
    let inspect = podman.output()?;
    let id = std::fs::read_to_string(&iid)?;
    assert_eq!(
        format!("sha256:{}", String::from_utf8_lossy(&inspect.stdout).trim()),
        id,
        "{}",
        text(&inspect)
    );
    Ok(())
}

#[test]
fn pull_resolves_the_base_tag_again() -> TestResult {
    let env = Env::new()?;
    let registry = umstage_testutil::registry::Registry::start()?;
    let base = registry.reference("base:1");
    let push = |content: &str| -> TestResult {
        let ctx = env.context(
            &format!("base-{content}"),
            &[(
                "Dockerfile",
                &format!("FROM busybox\nRUN echo {content} > /v\n"),
            )],
        )?;
        assert_ok(&env.build(&ctx, "base.tar", &["-t", &base, "--push"]));
        Ok(())
    };
    let app = env.context(
        "app",
        &[("Dockerfile", &format!("FROM {base}\nRUN cat /v\n"))],
    )?;
    push("first")?;
    let out = env.build(&app, "app.tar", &["--pull"]);
    assert_ok(&out);
    assert!(stderr(&out).contains(" first"), "{}", text(&out));
    push("second")?;
    let out = env.build(&app, "app.tar", &["--pull"]);
    assert_ok(&out);
    assert!(stderr(&out).contains(" second"), "{}", text(&out));
    Ok(())
}
