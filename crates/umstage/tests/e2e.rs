//! End to end: the real `umstage` binary, run as an unprivileged user with subordinate id
//! ranges, builds images from a local busybox base; the archives are read back with tools that
//! share no code with umstage (`skopeo`, `umoci`, `tar`).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{Env, TestResult, assert_ok, config, layers, text, unpack};
use serde_json::Value;
use umstage_testutil::archive::{self, Transport};
use umstage_testutil::images;

#[test]
fn multi_stage_build_copies_from_stages_by_name_and_index() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[
            ("hello.txt", "hello from the context\n"),
            (
                "Dockerfile",
                "FROM busybox AS build\n\
                 RUN mkdir -p /out && echo built > /out/built.txt\n\
                 COPY hello.txt /out/\n\
                 FROM busybox\n\
                 RUN echo second > /second.txt\n\
                 FROM busybox\n\
                 COPY --from=build /out/ /app/\n\
                 COPY --from=1 /second.txt /app/second.txt\n\
                 CMD [\"cat\", \"/app/built.txt\"]\n",
            ),
        ],
    )?;
    let out = env.build(&ctx, "image.tar", &["-t", "example/app:1"]);
    assert_ok(&out);
    let image = unpack(&env, "image.tar")?;
    assert_eq!(image.read_to_string("/app/built.txt")?, "built\n");
    assert_eq!(
        image.read_to_string("/app/hello.txt")?,
        "hello from the context\n"
    );
    assert_eq!(image.read_to_string("/app/second.txt")?, "second\n");
    assert!(
        image.path("/bin/busybox").exists(),
        "the base layer is missing"
    );
    assert_eq!(
        archive::strings(&image.config["config"]["Cmd"]),
        ["cat", "/app/built.txt"]
    );
    // The same archive loads as a Docker archive, with the tag in it.
    let docker_manifest = umstage_testutil::run_stdout(
        std::process::Command::new("tar")
            .arg("-xOf")
            .arg(env.path("image.tar"))
            .arg("manifest.json"),
    )?;
    let docker_manifest: Value = serde_json::from_str(&docker_manifest)?;
    assert_eq!(
        archive::strings(&docker_manifest[0]["RepoTags"]),
        ["example/app:1"]
    );
    let inspected = archive::skopeo_inspect(&env.path("image.tar"), Transport::DockerArchive)?;
    assert!(
        inspected["Layers"].as_array().is_some_and(|l| l.len() == 3),
        "{inspected}"
    );
    Ok(())
}

#[test]
fn the_readme_quick_start_builds_as_it_says() -> TestResult {
    // README.md builds testdata/quickstart with busybox as a named context: keep it working.
    let env = Env::new()?;
    let source = umstage_testutil::workspace_root().join("testdata/quickstart");
    let mut files = Vec::new();
    for name in ["Dockerfile", "greet.sh"] {
        files.push((name, fs::read_to_string(source.join(name))?));
    }
    let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let ctx = env.context("quickstart", &files)?;
    assert_ok(&env.build(&ctx, "image.tar", &["-t", "greet:latest"]));
    let image = unpack(&env, "image.tar")?;
    assert_eq!(
        image.read_to_string("/usr/share/greet/greeting.txt")?,
        "hello, world, from Linux\n"
    );
    let greet = fs::metadata(image.path("/usr/local/bin/greet"))?;
    assert_eq!(greet.permissions().mode() & 0o777, 0o755);
    assert_eq!(image.config["config"]["User"], "user");
    assert_eq!(
        archive::strings(&image.config["config"]["Cmd"]),
        ["greet", "container"]
    );
    Ok(())
}

#[test]
fn target_builds_only_what_it_needs_and_skips_a_broken_unused_stage() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox AS broken\n\
             RUN echo this stage must not run && exit 3\n\
             FROM busybox AS wanted\n\
             RUN echo wanted > /wanted.txt\n\
             FROM busybox AS last\n\
             RUN exit 4\n",
        )],
    )?;
    let out = env.build(&ctx, "image.tar", &["--target", "wanted"]);
    assert_ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("must not run"), "{stderr}");
    let image = unpack(&env, "image.tar")?;
    assert_eq!(image.read_to_string("/wanted.txt")?, "wanted\n");
    Ok(())
}

#[test]
fn build_args_env_workdir_user_and_shell() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "ARG BASE=busybox\n\
             ARG GLOBAL=global-default\n\
             FROM ${BASE}\n\
             ARG GLOBAL\n\
             ARG VERSION=1.0\n\
             ARG UNSET_IN_STAGE\n\
             ENV APP_VERSION=$VERSION\n\
             RUN echo \"$VERSION $GLOBAL\" > /args.txt && echo \"[$UNSET_IN_STAGE]\" >> /args.txt\n\
             WORKDIR /srv\n\
             WORKDIR app\n\
             RUN pwd > /pwd.txt\n\
             SHELL [\"/bin/sh\", \"-c\", \"-x\"]\n\
             RUN echo shell-form\n\
             USER user\n\
             RUN id -u > /tmp/uid.txt\n\
             CMD echo run\n",
        )],
    )?;
    let out = env.build(&ctx, "image.tar", &["--build-arg", "VERSION=2.5"]);
    assert_ok(&out);
    let image = unpack(&env, "image.tar")?;
    assert_eq!(
        image.read_to_string("/args.txt")?,
        "2.5 global-default\n[]\n"
    );
    assert_eq!(image.read_to_string("/pwd.txt")?, "/srv/app\n");
    assert_eq!(image.read_to_string("/tmp/uid.txt")?, "1000\n");
    assert_eq!(image.env_var("APP_VERSION").as_deref(), Some("2.5"));
    // Build args are never persisted in the config.
    assert_eq!(image.env_var("VERSION"), None);
    let raw = config(&env, "image.tar")?;
    let c = &raw["config"];
    assert_eq!(c["WorkingDir"], "/srv/app");
    assert_eq!(c["User"], "user");
    assert_eq!(archive::strings(&c["Shell"]), ["/bin/sh", "-c", "-x"]);
    // Shell-form CMD uses the SHELL in force.
    assert_eq!(
        archive::strings(&c["Cmd"]),
        ["/bin/sh", "-c", "-x", "echo run"]
    );
    // `sh -x` traced the command on stderr: the SHELL was used for RUN too.
    assert!(String::from_utf8_lossy(&out.stderr).contains("+ echo shell-form"));
    Ok(())
}

#[test]
fn whiteouts_remove_base_files_across_layers() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\n\
             RUN mkdir -p /data/sub && echo a > /data/a && echo b > /data/sub/b\n\
             RUN rm /data/a && rm -r /data/sub && rm /bin/vi\n",
        )],
    )?;
    assert_ok(&env.build(&ctx, "image.tar", &[]));
    let image = layers(&env, "image.tar")?;
    assert_eq!(image.layers.len(), 3);
    let top: Vec<&str> = image.layers[2]
        .entries
        .iter()
        .filter(|e| e.is_whiteout())
        .map(|e| e.path.as_str())
        .collect();
    assert!(top.contains(&"data/.wh.a"), "{top:?}");
    assert!(top.contains(&"data/.wh.sub"), "{top:?}");
    assert!(top.contains(&"bin/.wh.vi"), "{top:?}");
    assert!(!image.path("/data/a").exists());
    assert!(!image.path("/bin/vi").exists());
    assert!(image.path("/bin/busybox").exists());
    Ok(())
}

#[test]
fn chown_and_chmod_on_copy() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[
            ("f.txt", "f\n"),
            ("dir/g.txt", "g\n"),
            (
                "Dockerfile",
                "FROM busybox\n\
                 COPY --chown=user:nogroup f.txt /owned.txt\n\
                 COPY --chown=42:43 --chmod=0750 dir /dir/\n\
                 COPY --chmod=u=rwx,go=r f.txt /sym.txt\n",
            ),
        ],
    )?;
    assert_ok(&env.build(&ctx, "image.tar", &[]));
    let image = layers(&env, "image.tar")?;
    let entry = |path: &str| {
        image
            .layers
            .iter()
            .flat_map(|l| l.entries.iter())
            .find(|e| e.path == path)
            .cloned()
    };
    let owned = entry("owned.txt").ok_or("owned.txt missing")?;
    assert_eq!((owned.uid, owned.gid), (1000, 65534));
    let g = entry("dir/g.txt").ok_or("dir/g.txt missing")?;
    assert_eq!((g.uid, g.gid, g.mode.as_str()), (42, 43, "-rwxr-x---"));
    let sym = entry("sym.txt").ok_or("sym.txt missing")?;
    assert_eq!(sym.mode, "-rwxr--r--");
    assert_eq!((sym.uid, sym.gid), (0, 0));
    Ok(())
}

#[test]
fn dockerignore_with_exceptions() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[
            (".dockerignore", "*.log\nsecret/\n!keep.log\n"),
            ("a.log", "no\n"),
            ("keep.log", "yes\n"),
            ("secret/key", "no\n"),
            ("src/main.c", "int main;\n"),
            ("Dockerfile", "FROM busybox\nCOPY . /ctx/\n"),
        ],
    )?;
    assert_ok(&env.build(&ctx, "image.tar", &[]));
    let image = unpack(&env, "image.tar")?;
    assert!(!image.path("/ctx/a.log").exists());
    assert!(!image.path("/ctx/secret").exists());
    assert_eq!(image.read_to_string("/ctx/keep.log")?, "yes\n");
    assert!(image.path("/ctx/src/main.c").exists());
    Ok(())
}

#[test]
fn heredocs_in_run_and_copy() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\n\
             ARG NAME=world\n\
             RUN <<EOF\n\
             echo one > /one.txt\n\
             echo two >> /one.txt\n\
             EOF\n\
             COPY <<EOT /greeting.txt\n\
             hello $NAME\n\
             EOT\n\
             COPY <<'EOT' /literal.txt\n\
             hello $NAME\n\
             EOT\n",
        )],
    )?;
    assert_ok(&env.build(&ctx, "image.tar", &[]));
    let image = unpack(&env, "image.tar")?;
    assert_eq!(image.read_to_string("/one.txt")?, "one\ntwo\n");
    assert_eq!(image.read_to_string("/greeting.txt")?, "hello world\n");
    assert_eq!(image.read_to_string("/literal.txt")?, "hello $NAME\n");
    Ok(())
}

#[test]
fn onbuild_triggers_run_in_the_child_and_are_not_inherited() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[
            ("trigger.txt", "from the trigger\n"),
            (
                "Dockerfile",
                "FROM busybox AS base\n\
                 ONBUILD COPY trigger.txt /triggered.txt\n\
                 ONBUILD RUN echo ran >> /triggered.txt\n\
                 FROM base\n\
                 RUN cat /triggered.txt > /seen.txt\n",
            ),
        ],
    )?;
    assert_ok(&env.build(&ctx, "image.tar", &[]));
    let image = unpack(&env, "image.tar")?;
    assert_eq!(
        image.read_to_string("/seen.txt")?,
        "from the trigger\nran\n"
    );
    let raw = config(&env, "image.tar")?;
    assert!(raw["config"]["OnBuild"].is_null(), "{raw}");
    // The base stage itself keeps its triggers.
    assert_ok(&env.build(&ctx, "base.tar", &["--target", "base"]));
    let base = config(&env, "base.tar")?;
    assert_eq!(
        archive::strings(&base["config"]["OnBuild"]),
        [
            "COPY trigger.txt /triggered.txt",
            "RUN echo ran >> /triggered.txt"
        ]
    );
    Ok(())
}

#[test]
fn copy_from_an_external_image_and_from_scratch() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM scratch\n\
             COPY --from=busybox /bin/busybox /busybox\n\
             ENV A=1\n\
             ENTRYPOINT [\"/busybox\"]\n",
        )],
    )?;
    assert_ok(&env.build(&ctx, "image.tar", &[]));
    let image = layers(&env, "image.tar")?;
    assert_eq!(image.layers.len(), 1);
    assert!(image.path("/busybox").is_file());
    assert!(!image.path("/bin").exists());
    let c = &image.config["config"];
    assert_eq!(archive::strings(&c["Entrypoint"]), ["/busybox"]);
    // BuildKit gives a scratch stage the default PATH.
    assert!(
        archive::strings(&c["Env"])
            .iter()
            .any(|e| e.starts_with("PATH="))
    );
    let history = image.config["history"].as_array().ok_or("no history")?;
    let empty: Vec<bool> = history
        .iter()
        .map(|h| h["empty_layer"].as_bool().unwrap_or(false))
        .collect();
    assert_eq!(empty, [false, true, true]);
    Ok(())
}

#[test]
fn a_cached_rebuild_runs_nothing_and_a_change_reruns_only_what_reads_it() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[
            ("a.txt", "a\n"),
            ("b.txt", "b\n"),
            (
                "Dockerfile",
                "FROM busybox\n\
                 RUN echo ran-$((40+1))\n\
                 COPY a.txt /a.txt\n\
                 RUN echo ran-$((40+2))\n\
                 COPY b.txt /b.txt\n\
                 RUN echo ran-$((40+3))\n",
            ),
        ],
    )?;
    assert_ok(&env.build(&ctx, "one.tar", &[]));
    let again = env.build(&ctx, "two.tar", &[]);
    assert_ok(&again);
    let log = String::from_utf8_lossy(&again.stderr);
    assert!(!log.contains("ran-4"), "a cached build ran a step:\n{log}");
    assert_eq!(log.matches("CACHED").count(), 5, "{log}");
    assert_eq!(
        archive::skopeo_manifest(&env.path("one.tar"), Transport::OciArchive)?["layers"],
        archive::skopeo_manifest(&env.path("two.tar"), Transport::OciArchive)?["layers"]
    );
    // Changing b.txt reruns only the steps from its COPY on.
    fs::write(ctx.join("b.txt"), "changed\n")?;
    let third = env.build(&ctx, "three.tar", &[]);
    assert_ok(&third);
    let log = String::from_utf8_lossy(&third.stderr);
    assert!(!log.contains("ran-41") && !log.contains("ran-42"), "{log}");
    assert!(log.contains("ran-43"), "{log}");
    assert_eq!(
        unpack(&env, "three.tar")?.read_to_string("/b.txt")?,
        "changed\n"
    );
    Ok(())
}

#[test]
fn two_clean_builds_with_source_date_epoch_give_the_same_digest() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[
            ("f.txt", "content\n"),
            (
                "Dockerfile",
                "FROM busybox\nCOPY f.txt /f.txt\nRUN echo x > /x && mkdir -p /d/e && touch /d/e/f\n",
            ),
        ],
    )?;
    let sde = [("SOURCE_DATE_EPOCH", "1700000000")];
    let mut digests = Vec::new();
    for (i, root) in ["root-a", "root-b"].iter().enumerate() {
        let state = env.dir.mkdir(root)?;
        let iid = env.path(&format!("iid-{i}"));
        let meta = env.path(&format!("meta-{i}.json"));
        let out = env.build_in(
            &state,
            &ctx,
            &format!("img-{i}.tar"),
            &[
                "--iidfile",
                iid.to_str().unwrap_or_default(),
                "--metadata-file",
                meta.to_str().unwrap_or_default(),
            ],
            &sde,
        );
        assert_ok(&out);
        let meta: Value = serde_json::from_str(&fs::read_to_string(&meta)?)?;
        let iid = fs::read_to_string(&iid)?;
        assert_eq!(meta["containerimage.config.digest"], iid.as_str());
        digests.push(meta["containerimage.digest"].clone());
        // Let the clock move so that only SOURCE_DATE_EPOCH can make the builds agree.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert!(
        digests[0]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:"))
    );
    assert_eq!(digests[0], digests[1]);
    assert_eq!(
        fs::read(env.path("img-0.tar"))?,
        fs::read(env.path("img-1.tar"))?
    );
    let c = config(&env, "img-0.tar")?;
    assert_eq!(c["created"], "2023-11-14T22:13:20Z");
    Ok(())
}

#[test]
fn symlinks_never_reach_host_files() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\n\
             RUN ln -s /etc /linked && ln -s /nonexistent-host-dir /dangling\n\
             COPY payload.txt /linked/\n\
             COPY payload.txt /dangling/\n\
             COPY escape /escape-copy\n",
        )],
    )?;
    fs::write(ctx.join("payload.txt"), "payload\n")?;
    // A context symlink to a host file outside the context.
    let host_file = env.path("host-secret.txt");
    fs::write(&host_file, "host secret\n")?;
    std::os::unix::fs::symlink(&host_file, ctx.join("escape"))?;
    env.dir.user().chown_tree(env.dir.path())?;
    let out = env.build(&ctx, "image.tar", &[]);
    // The escaping symlink resolves inside the context, where it names nothing.
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("escape"),
        "{}",
        text(&out)
    );
    assert!(!Path::new("/etc/payload.txt").exists());
    assert!(!Path::new("/nonexistent-host-dir").exists());

    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\n\
         RUN ln -s /etc /linked && ln -s /nonexistent-host-dir /dangling\n\
         COPY payload.txt /linked/\n\
         COPY payload.txt /dangling/\n",
    )?;
    assert_ok(&env.build(&ctx, "image.tar", &[]));
    let image = unpack(&env, "image.tar")?;
    assert_eq!(image.read_to_string("/etc/payload.txt")?, "payload\n");
    assert_eq!(
        image.read_to_string("/nonexistent-host-dir/payload.txt")?,
        "payload\n"
    );
    assert!(!Path::new("/etc/payload.txt").exists());
    assert!(!Path::new("/nonexistent-host-dir").exists());
    Ok(())
}

#[test]
fn errors_name_what_is_wrong_and_exit_with_the_right_code() -> TestResult {
    let env = Env::new()?;
    let case = |name: &str,
                dockerfile: &str,
                extra: &[&str]|
     -> Result<(i32, String), Box<dyn std::error::Error>> {
        let ctx = env.context(name, &[("Dockerfile", dockerfile), ("present.txt", "x")])?;
        let out = env.build(&ctx, &format!("{name}.tar"), extra);
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };

    let (code, err) = case(
        "unknown-instr",
        "FROM busybox\nRUN true\nFROMM busybox\n",
        &[],
    )?;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("Dockerfile:3") && err.contains("FROMM"),
        "{err}"
    );

    let (code, err) = case("missing-src", "FROM busybox\nCOPY nothere.txt /x\n", &[])?;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("nothere.txt") && err.contains("Dockerfile:2"),
        "{err}"
    );

    let (code, err) = case(
        "failing-run",
        "FROM busybox AS work\nRUN echo about to fail && exit 7\n",
        &[],
    )?;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("exit code: 7"), "{err}");
    assert!(
        err.contains("stage work") && err.contains("Dockerfile:2"),
        "{err}"
    );
    assert!(
        err.contains("about to fail"),
        "the output tail is missing: {err}"
    );

    let (code, err) = case(
        "unknown-target",
        "FROM busybox AS one\n",
        &["--target", "two"],
    )?;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("two"), "{err}");

    let (code, err) = case(
        "unknown-from",
        "FROM busybox\nCOPY --from=nostage /x /y\n",
        &[],
    )?;
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("nostage"), "{err}");

    let (code, err) = case("bad-flag", "FROM busybox\n", &["--no-such-flag"])?;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--no-such-flag"), "{err}");
    assert!(!err.contains("panicked"));
    Ok(())
}

#[test]
fn filesystem_outputs_and_metadata() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[("Dockerfile", "FROM busybox\nRUN echo out > /result.txt\n")],
    )?;
    let local = env.path("local-out");
    let tarball = env.path("fs.tar");
    let out = env.build(
        &ctx,
        "image.tar",
        &[
            "-o",
            &format!("type=local,dest={}", local.display()),
            "-o",
            &format!("type=tar,dest={}", tarball.display()),
        ],
    );
    assert_ok(&out);
    assert_eq!(fs::read_to_string(local.join("result.txt"))?, "out\n");
    let listing =
        umstage_testutil::run_stdout(std::process::Command::new("tar").arg("-tf").arg(&tarball))?;
    assert!(
        listing
            .lines()
            .any(|l| l.trim_start_matches("./") == "result.txt"),
        "{listing}"
    );
    assert!(
        fs::metadata(local.join("bin/busybox"))?
            .permissions()
            .mode()
            & 0o111
            != 0
    );
    Ok(())
}

#[test]
fn debug_parse_handles_every_real_world_dockerfile() -> TestResult {
    let env = Env::new()?;
    let dir = umstage_testutil::shared_dir().join("conformance/real-world");
    let mut count = 0;
    let entries = fs::read_dir(&dir).map_err(|e| {
        format!(
            "cannot read {} (is ../shared beside the workspace?): {e}",
            dir.display()
        )
    })?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "Dockerfile") {
            continue;
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_umstage"))
            .args(["debug", "parse"])
            .arg(&path)
            .output()?;
        assert!(out.status.success(), "{}:\n{}", path.display(), text(&out));
        assert!(!out.stdout.is_empty(), "{}: empty dump", path.display());
        count += 1;
    }
    assert!(
        count > 50,
        "only {count} real-world Dockerfiles found in {}",
        dir.display()
    );
    println!("umstage debug parse: {count} real-world Dockerfiles parsed");
    let bad = env.context("bad", &[("Dockerfile", "FROM busybox\nRUN <<EOF\n")])?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_umstage"))
        .args(["debug", "parse"])
        .arg(bad.join("Dockerfile"))
        .output()?;
    assert_eq!(out.status.code(), Some(2));
    Ok(())
}

#[test]
fn pulls_the_base_from_a_registry_and_pushes_the_result() -> TestResult {
    let env = Env::new()?;
    let registry = umstage_testutil::registry::Registry::start()?;
    let base = images::busybox()?.push(&registry)?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "ARG BASE\nFROM $BASE\nRUN echo pulled > /pulled.txt\nCOPY --from=$BASE /bin/busybox /copy/busybox\n",
        )],
    )?;
    let target = registry.reference("app:1");
    let root = env.path("state");
    let out = env.umstage(
        &[
            "build",
            "--root",
            root.to_str().unwrap_or_default(),
            "--progress",
            "plain",
            "--build-arg",
            &format!("BASE={base}"),
            "-t",
            &target,
            "--push",
            "-o",
            env.path("image.tar").to_str().unwrap_or_default(),
            ctx.to_str().unwrap_or_default(),
        ],
        &[],
    );
    assert_ok(&out);
    assert_eq!(registry.tags("app")?, ["1"]);
    let image = unpack(&env, "image.tar")?;
    assert_eq!(image.read_to_string("/pulled.txt")?, "pulled\n");
    assert!(image.path("/copy/busybox").is_file());
    let pushed = umstage_testutil::run_stdout(
        std::process::Command::new("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{target}")),
    )?;
    let pushed: Value = serde_json::from_str(&pushed)?;
    assert_eq!(
        pushed["Layers"].as_array().map(Vec::len),
        Some(3),
        "{pushed}"
    );

    // A named context may carry the name of the image it stands for, and a stage that waits
    // for another gets its own base (resolved ahead) all the same.
    let ctx = env.context(
        "named",
        &[(
            "Dockerfile",
            &format!(
                "FROM {base} AS first\nRUN echo first > /first.txt\n\
                 FROM {base}\nCOPY --from=first /first.txt /from-first.txt\n"
            ),
        )],
    )?;
    let out = env.umstage(
        &[
            "build",
            "--root",
            root.to_str().unwrap_or_default(),
            "--progress",
            "plain",
            "--build-context",
            &format!("{base}=docker-image://{base}"),
            "-o",
            env.path("named.tar").to_str().unwrap_or_default(),
            ctx.to_str().unwrap_or_default(),
        ],
        &[],
    );
    assert_ok(&out);
    let image = unpack(&env, "named.tar")?;
    assert_eq!(image.read_to_string("/from-first.txt")?, "first\n");
    Ok(())
}

#[test]
fn credentials_come_from_the_credential_helper_the_docker_config_names() -> TestResult {
    let env = Env::new()?;
    let registry =
        umstage_testutil::registry::Registry::start_with_basic_auth("builder", "s3cret-pw")?;
    let host = registry.host();
    // A helper speaking Docker's protocol: the server on stdin, the credential as JSON.
    let helper_dir = env.context(
        "helpers",
        &[(
            "docker-credential-umstagetest",
            &format!(
                "#!/bin/sh\nread server\nif [ \"$1\" = get ] && [ \"$server\" = {host} ]; then\n\
                 echo '{{\"ServerURL\":\"{host}\",\"Username\":\"builder\",\"Secret\":\"s3cret-pw\"}}'\n\
                 else echo 'credentials not found in native keychain'; exit 1; fi\n"
            ),
        )],
    )?;
    fs::set_permissions(
        helper_dir.join("docker-credential-umstagetest"),
        fs::Permissions::from_mode(0o755),
    )?;
    let with_helper = env.context(
        "docker-helper",
        &[(
            "config.json",
            &format!(r#"{{"credHelpers":{{"{host}":"umstagetest"}}}}"#),
        )],
    )?;
    let with_missing_store = env.context(
        "docker-store",
        &[("config.json", r#"{"credsStore":"umstage-missing"}"#)],
    )?;
    let ctx = env.context(
        "ctx",
        &[("Dockerfile", "FROM busybox\nRUN echo hi > /hi.txt\n")],
    )?;
    let bb = format!("busybox=oci-layout://{}", env.busybox.display());
    let target = registry.reference("private/app:1");
    let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", helper_dir.display());
    let push = |config: &Path| {
        env.umstage(
            &[
                "build",
                "--progress",
                "plain",
                "--build-context",
                &bb,
                "-t",
                &target,
                "--push",
                ctx.to_str().unwrap_or_default(),
            ],
            &[
                ("DOCKER_CONFIG", config.to_str().unwrap_or_default()),
                ("PATH", &path),
            ],
        )
    };

    let refused = push(&with_missing_store);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let said = text(&refused);
    assert!(
        said.contains("docker-credential-umstage-missing is not installed"),
        "{said}"
    );
    assert!(!said.contains("s3cret-pw"), "{said}");

    let pushed = push(&with_helper);
    assert_ok(&pushed);
    assert_eq!(registry.tags("private/app")?, ["1"]);
    Ok(())
}

#[test]
fn a_library_warning_reaches_the_user_through_the_progress_stream() -> TestResult {
    let env = Env::new()?;
    let registry = umstage_testutil::registry::Registry::start()?;
    let config = env.context("docker-bad", &[("config.json", "{\"auths\": ")])?;
    let ctx = env.context(
        "ctx",
        &[("Dockerfile", "FROM busybox\nRUN echo hi > /hi.txt\n")],
    )?;
    let bb = format!("busybox=oci-layout://{}", env.busybox.display());
    let target = registry.reference("warned/app:1");
    let out = env.umstage(
        &[
            "build",
            "--progress",
            "plain",
            "--build-context",
            &bb,
            "-t",
            &target,
            "--push",
            ctx.to_str().unwrap_or_default(),
        ],
        &[("DOCKER_CONFIG", config.to_str().unwrap_or_default())],
    );
    assert_ok(&out);
    let said = text(&out);
    let warning = said
        .lines()
        .find(|l| l.contains("ignoring malformed registry auth file"))
        .unwrap_or_default();
    assert!(warning.contains("config.json"), "{said}");
    // Rendered as a progress warning, once, not as a raw log line.
    assert!(warning.trim_start().starts_with("WARNING: "), "{said}");
    assert_eq!(
        said.matches("malformed registry auth file").count(),
        1,
        "{said}"
    );
    assert!(!said.contains(" WARN "), "{said}");
    assert!(!said.contains('\x1b'), "{said}");
    assert_eq!(registry.tags("warned/app")?, ["1"]);
    Ok(())
}

/// Serves `body` to every request on a loopback port, from a thread, until the test ends.
fn serve_once_per_request(
    body: &'static [u8],
    requests: usize,
) -> Result<u16, Box<dyn std::error::Error>> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let header = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: Tue, 14 Nov 2023 22:13:20 GMT\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(header.as_bytes());
            let _ = stream.write_all(body);
        }
    });
    Ok(port)
}

#[test]
fn add_extracts_archives_and_downloads_urls_with_checksums() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context("ctx", &[("payload/inside.txt", "inside the archive\n")])?;
    for (name, flag) in [
        ("a.tar.gz", "-czf"),
        ("b.tar.bz2", "-cjf"),
        ("c.tar.xz", "-cJf"),
    ] {
        umstage_testutil::run(
            std::process::Command::new("tar")
                .arg(flag)
                .arg(ctx.join(name))
                .arg("-C")
                .arg(&ctx)
                .arg("payload"),
        )?;
    }
    const BODY: &[u8] = b"downloaded content\n";
    let port = serve_once_per_request(BODY, 2)?;
    let sum = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(BODY))
    };
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM busybox\n\
             ADD a.tar.gz /gz/\n\
             ADD b.tar.bz2 /bz/\n\
             ADD c.tar.xz /xz/\n\
             ADD --chown=1000:1000 a.tar.gz /etc/\n\
             COPY a.tar.gz /copied/\n\
             ADD --checksum=sha256:{sum} http://127.0.0.1:{port}/files/data.txt /web/\n"
        ),
    )?;
    env.dir.user().chown_tree(env.dir.path())?;
    assert_ok(&env.build(&ctx, "image.tar", &[]));
    let image = unpack(&env, "image.tar")?;
    for dir in ["gz", "bz", "xz"] {
        assert_eq!(
            image.read_to_string(&format!("/{dir}/payload/inside.txt"))?,
            "inside the archive\n"
        );
    }
    // --chown owns what the archive brings, not what the directory already held.
    let layered = layers(&env, "image.tar")?;
    let add_layer = layered
        .layers
        .iter()
        .find(|l| l.entries.iter().any(|e| e.path == "etc/payload/inside.txt"))
        .ok_or("no layer holds the archive extracted into /etc")?;
    for e in &add_layer.entries {
        match e.path.as_str() {
            "etc" => assert_eq!((e.uid, e.gid), (0, 0), "{e:?}"),
            p if p.starts_with("etc/payload") => assert_eq!((e.uid, e.gid), (1000, 1000), "{e:?}"),
            p => panic!("ADD --chown changed {p}, which the archive does not hold: {e:?}"),
        }
    }
    // COPY never extracts.
    assert!(image.path("/copied/a.tar.gz").is_file());
    assert_eq!(
        image.read_to_string("/web/data.txt")?,
        "downloaded content\n"
    );
    let mode = fs::symlink_metadata(image.path("/web/data.txt"))?
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // A wrong checksum fails the step and says so; a git URL is refused with a message.
    let port = serve_once_per_request(BODY, 1)?;
    let bad = env.context(
        "bad",
        &[(
            "Dockerfile",
            &format!(
                "FROM busybox\nADD --checksum=sha256:{} http://127.0.0.1:{port}/x /x\n",
                "0".repeat(64)
            ),
        )],
    )?;
    let out = env.build(&bad, "bad.tar", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--checksum"),
        "{}",
        text(&out)
    );
    let git = env.context(
        "git",
        &[(
            "Dockerfile",
            "FROM busybox\nADD https://example.invalid/repo.git /src\n",
        )],
    )?;
    let out = env.build(&git, "git.tar", &[]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not supported yet"),
        "{}",
        text(&out)
    );
    Ok(())
}

#[test]
fn an_add_url_with_credentials_keeps_its_download_without_them() -> TestResult {
    let env = Env::new()?;
    let port = serve_once_per_request(b"behind a password\n", 1)?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            &format!("FROM scratch\nADD http://user:s3cret@127.0.0.1:{port}/data.txt /\n"),
        )],
    )?;
    env.dir.user().chown_tree(env.dir.path())?;
    assert_ok(&env.build(&ctx, "image.tar", &[]));
    let mut records = 0;
    for dir in fs::read_dir(env.path("state/downloads"))? {
        let record = fs::read_to_string(dir?.path().join("record.json"))?;
        assert!(
            !record.contains("s3cret") && !record.contains("user@"),
            "{record}"
        );
        assert!(
            record.contains(&format!("http://127.0.0.1:{port}/data.txt")),
            "{record}"
        );
        records += 1;
    }
    assert_eq!(records, 1);
    Ok(())
}

#[test]
fn a_run_step_reruns_when_a_context_file_it_binds_changes() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[
            ("bound/data.txt", "first\n"),
            (
                "Dockerfile",
                "FROM busybox\n\
                 RUN --mount=type=bind,source=bound,target=/b cat /b/data.txt > /seen.txt\n",
            ),
        ],
    )?;
    assert_ok(&env.build(&ctx, "first.tar", &[]));
    assert_eq!(
        layers(&env, "first.tar")?.read_to_string("/seen.txt")?,
        "first\n"
    );
    // The step reads the mounted file: its cache key covers that file's content.
    fs::write(ctx.join("bound/data.txt"), "second\n")?;
    assert_ok(&env.build(&ctx, "second.tar", &[]));
    assert_eq!(
        layers(&env, "second.tar")?.read_to_string("/seen.txt")?,
        "second\n"
    );
    Ok(())
}

#[test]
fn run_network_none_and_mounts() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[
            ("secret.txt", "s3cr3t\n"),
            ("bound/data.txt", "bound\n"),
            (
                "Dockerfile",
                "FROM busybox\n\
                 RUN --network=none grep -o '^ *[a-z0-9]*:' /proc/net/dev | tr -d ' :' > /net.txt\n\
                 RUN --mount=type=cache,target=/cache echo run >> /cache/log && cat /cache/log > /cache-seen.txt\n\
                 RUN --mount=type=tmpfs,target=/scratch touch /scratch/x && ls /scratch > /tmpfs-seen.txt\n\
                 RUN --mount=type=bind,source=bound,target=/b cat /b/data.txt > /bind-seen.txt\n\
                 RUN --mount=type=secret,id=tok cat /run/secrets/tok > /secret-seen.txt\n\
                 RUN --mount=type=secret,id=envtok,env=TOKEN echo \"$TOKEN\" > /env-secret-seen.txt\n",
            ),
        ],
    )?;
    let secret = format!("id=tok,src={}", ctx.join("secret.txt").display());
    let out = env.build_env(
        &ctx,
        "image.tar",
        &["--secret", &secret, "--secret", "id=envtok,env=MY_TOKEN"],
        &[("MY_TOKEN", "from-the-environment")],
    );
    assert_ok(&out);
    let image = layers(&env, "image.tar")?;
    assert_eq!(image.read_to_string("/net.txt")?, "lo\n");
    assert_eq!(image.read_to_string("/cache-seen.txt")?, "run\n");
    assert_eq!(image.read_to_string("/tmpfs-seen.txt")?, "x\n");
    assert_eq!(image.read_to_string("/bind-seen.txt")?, "bound\n");
    assert_eq!(image.read_to_string("/secret-seen.txt")?, "s3cr3t\n");
    assert_eq!(
        image.read_to_string("/env-secret-seen.txt")?,
        "from-the-environment\n"
    );
    // Nothing a mount holds lands in a layer.
    for layer in &image.layers[1..] {
        for e in &layer.entries {
            assert!(
                !e.path.starts_with("cache/")
                    && !e.path.starts_with("scratch/")
                    && !e.path.starts_with("run/secrets/tok"),
                "{} leaked into a layer",
                e.path
            );
        }
    }
    Ok(())
}

#[test]
fn directory_build_contexts_info_prune_and_concurrent_builds() -> TestResult {
    let env = Env::new()?;
    let extra = env.context("extra", &[("lib/util.txt", "from a named context\n")])?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\nCOPY --from=libs lib/util.txt /util.txt\nRUN echo $((6*7)) > /answer\n",
        )],
    )?;
    let libs = format!("libs={}", extra.display());
    // Two builds on one state root at the same time both succeed.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| env.build(&ctx, "a.tar", &["--build-context", &libs]));
        let b = s.spawn(|| env.build(&ctx, "b.tar", &["--build-context", &libs]));
        (a.join(), b.join())
    });
    let (a, b) = (a.map_err(|_| "thread")?, b.map_err(|_| "thread")?);
    assert_ok(&a);
    assert_ok(&b);
    let image = unpack(&env, "a.tar")?;
    assert_eq!(image.read_to_string("/util.txt")?, "from a named context\n");
    assert_eq!(image.read_to_string("/answer")?, "42\n");

    let root = env.path("state");
    let info = env.umstage(
        &[
            "info",
            "--json",
            "--root",
            root.to_str().unwrap_or_default(),
        ],
        &[],
    );
    assert_ok(&info);
    let info: Value = serde_json::from_slice(&info.stdout)?;
    assert!(info["snapshotter"]["driver"].is_string(), "{info}");
    assert!(
        info["state_root"]["bytes"].as_u64().is_some_and(|b| b > 0),
        "{info}"
    );
    assert_eq!(info["user_namespace"]["mode"], "Subordinate", "{info}");

    let prune = env.umstage(&["prune", "--root", root.to_str().unwrap_or_default()], &[]);
    assert_ok(&prune);
    // After a prune the same build runs its steps again, and succeeds.
    let again = env.build(&ctx, "c.tar", &["--build-context", &libs]);
    assert_ok(&again);
    assert!(!String::from_utf8_lossy(&again.stderr).contains("CACHED"));
    let all = env.umstage(
        &[
            "prune",
            "--all",
            "--root",
            root.to_str().unwrap_or_default(),
        ],
        &[],
    );
    assert_ok(&all);
    assert_eq!(fs::read_dir(&root)?.count(), 0);
    Ok(())
}

#[test]
fn metadata_instructions_shape_the_config_as_buildkit_does() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox AS base\n\
             CMD [\"from-base\"]\n\
             FROM base\n\
             ENTRYPOINT [\"/bin/echo\"]\n\
             LABEL org.example.one=1 two=\"2 words\"\n\
             EXPOSE 80 53/udp\n\
             EXPOSE 127.0.0.1:8080:9090/udp 7000-7001\n\
             VOLUME /data\n\
             STOPSIGNAL SIGTERM\n\
             HEALTHCHECK --interval=30s --retries=2 CMD wget -q localhost\n\
             MAINTAINER someone\n",
        )],
    )?;
    let iid = env.path("iid");
    let out = env.build(
        &ctx,
        "image.tar",
        &[
            "--label",
            "cli.label=yes",
            "--iidfile",
            iid.to_str().unwrap_or_default(),
            "--progress",
            "rawjson",
        ],
    );
    assert_ok(&out);
    // rawjson: BuildKit's SolveStatus, one JSON object per line on stderr; the export is a
    // vertex that completes.
    let statuses: Vec<Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        statuses
            .iter()
            .any(|s| s["vertexes"]
                .as_array()
                .is_some_and(|v| v.iter().any(|v| v["name"]
                    .as_str()
                    .is_some_and(|n| n.contains("image.tar"))
                    && v["completed"].is_string()))),
        "{}",
        text(&out)
    );
    let c = config(&env, "image.tar")?;
    assert!(fs::read_to_string(&iid)?.starts_with("sha256:"));
    let cfg = &c["config"];
    // ENTRYPOINT clears the CMD inherited from the base stage.
    assert!(cfg["Cmd"].is_null(), "{cfg}");
    assert_eq!(archive::strings(&cfg["Entrypoint"]), ["/bin/echo"]);
    assert_eq!(cfg["Labels"]["org.example.one"], "1");
    assert_eq!(cfg["Labels"]["two"], "2 words");
    assert_eq!(cfg["Labels"]["cli.label"], "yes");
    assert!(cfg["ExposedPorts"]["80/tcp"].is_object() && cfg["ExposedPorts"]["53/udp"].is_object());
    // As BuildKit: a published form keeps the container port; a range is every port in it.
    for port in ["9090/udp", "7000/tcp", "7001/tcp"] {
        assert!(cfg["ExposedPorts"][port].is_object(), "{port}: {cfg}");
    }
    assert!(cfg["Volumes"]["/data"].is_object());
    assert_eq!(cfg["StopSignal"], "SIGTERM");
    assert_eq!(
        archive::strings(&cfg["Healthcheck"]["Test"]),
        ["CMD-SHELL", "wget -q localhost"]
    );
    assert_eq!(cfg["Healthcheck"]["Interval"], 30_000_000_000i64);
    assert_eq!(cfg["Healthcheck"]["Retries"], 2);
    assert_eq!(c["author"], "someone");
    let history = c["history"].as_array().ok_or("no history")?;
    assert!(
        history.iter().skip(1).all(|h| h["empty_layer"] == true),
        "{history:?}"
    );
    Ok(())
}

#[test]
fn a_build_killed_with_sigkill_leaves_a_root_the_next_build_reuses() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN echo first-$((1+1)) > /first\nRUN sleep 60\n",
        )],
    )?;
    let root = env.path("state");
    let bb = format!("busybox=oci-layout://{}", env.busybox.display());
    let mut cmd = env.dir.user().command(&env.bin);
    cmd.args(["build", "--progress", "plain", "--root"])
        .arg(&root)
        .args(["--build-context", &bb])
        .arg(&ctx)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn()?;
    // Long enough for the first RUN to be committed while the second is running.
    std::thread::sleep(std::time::Duration::from_secs(4));
    child.kill()?;
    child.wait()?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mounts = fs::read_to_string("/proc/self/mountinfo")?;
    assert!(
        !mounts.contains(root.to_str().unwrap_or("?")),
        "mounts left behind:\n{mounts}"
    );

    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN echo first-$((1+1)) > /first\nRUN true\n",
    )?;
    let out = env.build(&ctx, "image.tar", &[]);
    assert_ok(&out);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("#2 CACHED"),
        "the committed step was not reused:\n{log}"
    );
    assert_eq!(
        unpack(&env, "image.tar")?.read_to_string("/first")?,
        "first-2\n"
    );
    // The killed build's lease is still there, but dead: prune --all counts no running build
    // and empties the root.
    assert_eq!(fs::read_dir(root.join("leases"))?.count(), 1);
    let all = env.umstage(
        &[
            "prune",
            "--all",
            "--root",
            root.to_str().unwrap_or_default(),
        ],
        &[],
    );
    assert_ok(&all);
    assert_eq!(fs::read_dir(&root)?.count(), 0, "{}", text(&all));
    Ok(())
}
