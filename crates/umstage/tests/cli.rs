//! End to end, flag by flag: what `docker buildx build` documents for its command line, as a
//! user running `umstage build` sees it (outputs, names, result files, build checks, cache
//! flags, the Dockerfile from standard input, exit codes).

mod common;

use std::fs;

use common::{Env, TestResult, assert_ok, config, docker_manifest, stderr, text, unpack};
use serde_json::Value;
use umstage_testutil::archive::{self, Transport};

#[test]
fn build_checks_warn_by_default_fail_with_check_error_and_check_builds_nothing() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[("Dockerfile", "FROM busybox as base\nCMD echo hello\n")],
    )?;
    let out = env.build(&ctx, "image.tar", &[]);
    assert_ok(&out);
    let err = stderr(&out);
    assert!(
        err.contains("FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)"),
        "{err}"
    );
    assert!(
        err.contains("JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 2)"),
        "{err}"
    );
    assert!(err.contains("2 warnings found"), "{err}");

    // `--check` runs the checks only: nothing is built, and findings make it fail.
    let out = env.build(&ctx, "checked.tar", &["--check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!env.path("checked.tar").exists());
    let err = stderr(&out);
    assert!(
        err.contains("JSONArgsRecommended - https://docs.docker.com/go/dockerfile/rule/json-args-recommended/"),
        "{err}"
    );

    // `# check=skip=…` silences rules; `error=true` fails the build before anything runs.
    fs::write(
        ctx.join("Dockerfile"),
        "# check=skip=JSONArgsRecommended;error=true\nFROM busybox as base\nRUN echo must-not-run\nCMD echo hello\n",
    )?;
    let out = env.build(&ctx, "strict.tar", &[]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("FromAsCasing"), "{err}");
    assert!(!err.contains("JSONArgsRecommended"), "{err}");
    assert!(!err.contains("must-not-run"), "{err}");
    fs::write(
        ctx.join("Dockerfile"),
        "# check=skip=all\nFROM busybox as base\nCMD echo hello\n",
    )?;
    let out = env.build(&ctx, "quiet.tar", &["--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!stderr(&out).contains("FromAsCasing"), "{}", text(&out));
    Ok(())
}

#[test]
fn an_unused_build_arg_is_reported() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[("Dockerfile", "FROM busybox\nARG USED\nRUN true\n")],
    )?;
    let out = env.build(
        &ctx,
        "image.tar",
        &["--build-arg", "USED=1", "--build-arg", "NOT_USED=2"],
    );
    assert_ok(&out);
    let err = stderr(&out);
    assert!(
        err.contains("One or more build-args [NOT_USED] were not consumed"),
        "{err}"
    );
    assert!(!err.contains("[USED"), "{err}");
    Ok(())
}

#[test]
fn dockerfile_from_stdin_tags_and_result_files() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context("ctx", &[("data.txt", "from the context\n")])?;
    let iid = env.path("iid.txt");
    let meta = env.path("meta.json");
    let mut args = env.build_args("image.tar");
    args.extend(
        [
            "-f",
            "-",
            "-t",
            "example.com/team/app:1.0",
            "--tag",
            "app:latest",
            "--iidfile",
            iid.to_str().unwrap_or_default(),
            "--metadata-file",
            meta.to_str().unwrap_or_default(),
            "--label",
            "org.opencontainers.image.title=app",
            ctx.to_str().unwrap_or_default(),
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.umstage_with_input(
        &args,
        b"FROM busybox\nCOPY data.txt /data.txt\nLABEL from=stdin\n",
    );
    assert_ok(&out);
    let image = archive::apply_layers(&env.path("image.tar"), Transport::DockerArchive)?;
    assert_eq!(image.read_to_string("/data.txt")?, "from the context\n");
    let c = config(&env, "image.tar")?;
    assert_eq!(c["config"]["Labels"]["from"], "stdin");
    assert_eq!(
        c["config"]["Labels"]["org.opencontainers.image.title"],
        "app"
    );
    // Every -t name is in the archive, for docker load.
    let docker = docker_manifest(&env, "image.tar")?;
    assert_eq!(
        archive::strings(&docker[0]["RepoTags"]),
        ["example.com/team/app:1.0", "app:latest"]
    );
    let iid = fs::read_to_string(&iid)?;
    let meta: Value = serde_json::from_str(&fs::read_to_string(&meta)?)?;
    assert_eq!(meta["containerimage.config.digest"], iid.as_str());
    assert!(
        meta["containerimage.digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:"))
    );
    assert_eq!(meta["image.name"], "example.com/team/app:1.0,app:latest");
    // As BuildKit's, the OCI index lists the manifest named in the metadata once per name.
    let index: Value = serde_json::from_str(&umstage_testutil::run_stdout(
        std::process::Command::new("tar")
            .arg("-xOf")
            .arg(env.path("image.tar"))
            .arg("index.json"),
    )?)?;
    let entries = index["manifests"].as_array().ok_or("no manifests")?;
    assert_eq!(entries.len(), 2, "{index}");
    assert!(
        entries
            .iter()
            .all(|m| m["digest"] == meta["containerimage.digest"]),
        "{index}"
    );
    Ok(())
}

#[test]
fn output_types_oci_docker_local_tar_and_layout_directory() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[
            ("hello.txt", "hello\n"),
            (
                "Dockerfile",
                "FROM busybox\nCOPY hello.txt /hello.txt\nCMD [\"cat\", \"/hello.txt\"]\n",
            ),
        ],
    )?;
    let oci = format!("type=oci,dest={}", env.path("oci.tar").display());
    let docker = format!("type=docker,dest={}", env.path("docker.tar").display());
    let local = format!("type=local,dest={}", env.path("rootfs").display());
    let tar = format!("type=tar,dest={}", env.path("rootfs.tar").display());
    let layout = format!("type=oci,dest={},tar=false", env.path("layout").display());
    let out = env.build(
        &ctx,
        "default.tar",
        &[
            "-t", "app:1", "-o", &oci, "-o", &docker, "-o", &local, "-o", &tar, "-o", &layout,
        ],
    );
    assert_ok(&out);
    // type=oci: an OCI layout in a tar, OCI media types.
    let m = archive::skopeo_manifest(&env.path("oci.tar"), Transport::OciArchive)?;
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    // type=docker: what `docker load` reads, Docker media types.
    let m = archive::skopeo_manifest(&env.path("docker.tar"), Transport::DockerArchive)?;
    assert_eq!(
        m["mediaType"], "application/vnd.docker.distribution.manifest.v2+json",
        "{m}"
    );
    let c = archive::skopeo_config(&env.path("docker.tar"), Transport::DockerArchive)?;
    assert_eq!(archive::strings(&c["config"]["Cmd"]), ["cat", "/hello.txt"]);
    // type=local: the filesystem itself; type=tar: the same as one tar.
    assert_eq!(fs::read_to_string(env.path("rootfs/hello.txt"))?, "hello\n");
    assert!(env.path("rootfs/bin/busybox").is_file());
    let listing = umstage_testutil::run_stdout(
        std::process::Command::new("tar")
            .arg("-tf")
            .arg(env.path("rootfs.tar")),
    )?;
    assert!(
        listing
            .lines()
            .any(|l| l.trim_start_matches("./") == "hello.txt"),
        "{listing}"
    );
    // tar=false: an OCI layout directory skopeo reads.
    assert!(env.path("layout/oci-layout").is_file());
    let inspected = umstage_testutil::run_stdout(
        std::process::Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:1", env.path("layout").display())),
    )?;
    assert!(inspected.contains("\"Digest\""), "{inspected}");
    Ok(())
}

#[test]
fn no_cache_and_no_cache_filter_rerun_what_they_name() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox AS deps\n\
             RUN echo deps-ran-$((1+1))\n\
             FROM busybox\n\
             COPY --from=deps /etc/passwd /passwd\n\
             RUN echo final-ran-$((2+2))\n",
        )],
    )?;
    assert_ok(&env.build(&ctx, "one.tar", &[]));
    let cached = env.build(&ctx, "two.tar", &[]);
    assert_ok(&cached);
    let log = stderr(&cached);
    assert!(
        !log.contains("deps-ran-2") && !log.contains("final-ran-4"),
        "{log}"
    );

    let filtered = env.build(&ctx, "three.tar", &["--no-cache-filter", "deps"]);
    assert_ok(&filtered);
    let log = stderr(&filtered);
    assert!(log.contains("deps-ran-2"), "{log}");

    let all = env.build(&ctx, "four.tar", &["--no-cache"]);
    assert_ok(&all);
    let log = stderr(&all);
    assert!(
        log.contains("deps-ran-2") && log.contains("final-ran-4"),
        "{log}"
    );
    assert!(!log.contains("CACHED"), "{log}");
    Ok(())
}

#[test]
fn progress_modes_quiet_and_rawjson() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[("Dockerfile", "FROM busybox\nRUN echo visible-output\n")],
    )?;
    let out = env.build(&ctx, "q.tar", &["-q"]);
    assert_ok(&out);
    // -q prints the image id on standard output, and no progress.
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        id.starts_with("sha256:") && id.len() == 71,
        "{}",
        text(&out)
    );
    assert!(!stderr(&out).contains("visible-output"), "{}", text(&out));

    let out = env.build(&ctx, "j.tar", &["--no-cache", "--progress", "rawjson"]);
    assert_ok(&out);
    // rawjson is BuildKit's SolveStatus stream, one object per line: the RUN is a vertex that
    // starts and completes, and its output is a base64 log of that vertex on stdout (1).
    let statuses: Vec<Value> = stderr(&out)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let run = statuses
        .iter()
        .flat_map(|s| s["vertexes"].as_array().cloned().unwrap_or_default())
        .filter(|v| v["name"] == "[stage-0 2/2] RUN echo visible-output")
        .collect::<Vec<_>>();
    let Some(digest) = run.first().map(|v| &v["digest"]) else {
        return Err(format!("no RUN vertex: {}", text(&out)).into());
    };
    assert!(
        run.iter()
            .any(|v| v["started"].is_string() && v["completed"].is_string()),
        "{}",
        text(&out)
    );
    assert!(
        statuses
            .iter()
            .any(|s| s["logs"].as_array().is_some_and(|logs| {
                logs.iter().any(|l| {
                    l["vertex"] == *digest
                        && l["stream"] == 1
                        && l["data"] == "dmlzaWJsZS1vdXRwdXQK"
                        && l["timestamp"].is_string()
                })
            })),
        "{}",
        text(&out)
    );
    for s in &statuses {
        let keys: Vec<&String> = s
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert!(
            keys.iter()
                .all(|k| ["vertexes", "statuses", "logs", "warnings"].contains(&k.as_str())),
            "not a SolveStatus: {s}"
        );
    }
    Ok(())
}

#[test]
fn rawjson_build_checks_are_solve_status_warnings() -> TestResult {
    use base64::Engine as _;
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[("Dockerfile", "FROM busybox\nCMD echo not-json\n")],
    )?;
    let out = env.build(&ctx, "w.tar", &["--progress", "rawjson"]);
    assert_ok(&out);
    let statuses: Vec<Value> = stderr(&out)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let warnings: Vec<&Value> = statuses
        .iter()
        .filter_map(|s| s["warnings"].as_array())
        .flatten()
        .collect();
    let Some(w) = warnings.first() else {
        return Err(format!("no warning: {}", text(&out)).into());
    };
    let short = base64::engine::general_purpose::STANDARD
        .decode(w["short"].as_str().unwrap_or_default())?;
    assert!(
        String::from_utf8(short)?.starts_with("JSONArgsRecommended: "),
        "{w}"
    );
    assert_eq!(w["level"], 1, "{w}");
    assert_eq!(w["sourceInfo"]["filename"], "Dockerfile", "{w}");
    assert_eq!(w["range"][0]["start"]["line"], 2, "{w}");
    assert!(
        w["url"].as_str().is_some_and(|u| u.starts_with("https://")),
        "{w}"
    );
    // The vertex it names was sent, complete.
    assert!(
        statuses
            .iter()
            .any(|s| s["vertexes"].as_array().is_some_and(|v| v
                .iter()
                .any(|v| v["digest"] == w["vertex"] && v["completed"].is_string()))),
        "{}",
        text(&out)
    );
    Ok(())
}

#[test]
fn a_dockerfile_specific_ignore_file_wins_over_the_context_one() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[
            ("a.txt", "a\n"),
            ("b.txt", "b\n"),
            (".dockerignore", "a.txt\n"),
            ("docker/app.Dockerfile", "FROM busybox\nCOPY . /ctx/\n"),
            ("docker/app.Dockerfile.dockerignore", "b.txt\n"),
        ],
    )?;
    let file = ctx.join("docker/app.Dockerfile");
    let out = env.build(
        &ctx,
        "image.tar",
        &["-f", file.to_str().unwrap_or_default()],
    );
    assert_ok(&out);
    let image = unpack(&env, "image.tar")?;
    assert!(image.path("/ctx/a.txt").is_file());
    assert!(!image.path("/ctx/b.txt").exists());
    Ok(())
}

#[test]
fn a_lowercase_dockerfile_is_built_when_there_is_no_dockerfile() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[("dockerfile", "FROM busybox\nRUN echo lowercase > /which\n")],
    )?;
    let out = env.build(&ctx, "lower.tar", &[]);
    assert_ok(&out);
    assert_eq!(
        unpack(&env, "lower.tar")?.read_to_string("/which")?,
        "lowercase\n"
    );
    // BuildKit reads `dockerfile` only when `Dockerfile` is missing.
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN echo capital > /which\n",
    )?;
    let out = env.build(&ctx, "capital.tar", &[]);
    assert_ok(&out);
    assert_eq!(
        unpack(&env, "capital.tar")?.read_to_string("/which")?,
        "capital\n"
    );
    Ok(())
}

#[test]
fn parser_directives_and_a_cache_only_output() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "# syntax=docker/dockerfile:1.7\n\
             # escape=`\n\
             FROM busybox\n\
             RUN echo one `\n\
             \x20   two > /joined.txt\n\
             COPY Dockerfile C:\\some\\path\n",
        )],
    )?;
    let out = env.build(&ctx, "image.tar", &[]);
    assert_ok(&out);
    // The syntax directive is read, said to be ignored, and the build goes on.
    assert!(
        stderr(&out).contains("# syntax=docker/dockerfile:1.7"),
        "{}",
        text(&out)
    );
    let image = unpack(&env, "image.tar")?;
    assert_eq!(image.read_to_string("/joined.txt")?, "one two\n");
    // With ` as the escape character a backslash is an ordinary character.
    assert!(image.path("/C:\\some\\path").is_file());

    // `-o type=cacheonly` alone: the build only fills the cache, and says nothing about it.
    let mut args = env.build_args("unused.tar");
    args.truncate(args.len() - 2);
    args.extend(["-o", "type=cacheonly", ctx.to_str().unwrap_or_default()].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.umstage(&args, &[]);
    assert_ok(&out);
    assert!(stderr(&out).contains("CACHED"), "{}", text(&out));
    assert!(!stderr(&out).contains("no output given"), "{}", text(&out));
    assert!(!env.path("unused.tar").exists());
    Ok(())
}
