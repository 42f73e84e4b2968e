//! End to end, instruction by instruction: what BuildKit's Dockerfile reference documents for
//! the metadata instructions (ENV, ARG, LABEL, EXPOSE, CMD, ENTRYPOINT, USER, VOLUME, SHELL,
//! STOPSIGNAL, HEALTHCHECK, ONBUILD) and for RUN heredocs, read back from the image config and
//! its history as `docker inspect` and `docker history` would show them.

mod common;

use common::{Env, TestResult, assert_ok, config, history, stderr, text, unpack};
use umstage_testutil::archive;

#[test]
fn metadata_instructions_and_their_history_read_as_buildkit_writes_them() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox AS base\n\
             LABEL base.label=from-base shared=base\n\
             ENTRYPOINT [\"/bin/echo\"]\n\
             CMD [\"base-cmd\"]\n\
             FROM base\n\
             ARG VERSION=1.0\n\
             ARG PORT=8080\n\
             ENV abc=hello\n\
             ENV abc=bye def=$abc\n\
             ENV ghi=$abc\n\
             ENV legacy spaced value\n\
             LABEL version=$VERSION \\\n\
             \x20     shared=child\n\
             EXPOSE $PORT 9000-9001/udp\n\
             USER 1000:1000\n\
             VOLUME [\"/data\", \"/logs\"]\n\
             VOLUME /cache\n\
             STOPSIGNAL SIGQUIT\n\
             SHELL [\"/bin/sh\", \"-ec\"]\n\
             CMD run --now\n",
        )],
    )?;
    let out = env.build(&ctx, "image.tar", &["--build-arg", "VERSION=2.0"]);
    assert_ok(&out);
    let c = config(&env, "image.tar")?;
    let cfg = &c["config"];
    // A CMD of the child keeps the ENTRYPOINT it inherits; shell form goes through SHELL.
    assert_eq!(archive::strings(&cfg["Entrypoint"]), ["/bin/echo"]);
    assert_eq!(
        archive::strings(&cfg["Cmd"]),
        ["/bin/sh", "-ec", "run --now"]
    );
    assert_eq!(cfg["ArgsEscaped"], true);
    // One ENV line expands every variable with the values from before the line.
    let envs = archive::strings(&cfg["Env"]);
    for want in ["abc=bye", "def=hello", "ghi=bye", "legacy=spaced value"] {
        assert!(envs.iter().any(|e| e == want), "{want} missing in {envs:?}");
    }
    assert!(!envs.iter().any(|e| e.starts_with("VERSION=")), "{envs:?}");
    assert_eq!(cfg["Labels"]["base.label"], "from-base");
    assert_eq!(cfg["Labels"]["shared"], "child");
    assert_eq!(cfg["Labels"]["version"], "2.0");
    let ports: Vec<&String> = cfg["ExposedPorts"]
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    assert_eq!(ports, ["8080/tcp", "9000/udp", "9001/udp"]);
    assert_eq!(cfg["User"], "1000:1000");
    let volumes: Vec<&String> = cfg["Volumes"]
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    assert_eq!(volumes, ["/cache", "/data", "/logs"]);
    assert_eq!(cfg["StopSignal"], "SIGQUIT");
    assert_eq!(archive::strings(&cfg["Shell"]), ["/bin/sh", "-ec"]);

    let h = history(&c);
    assert_eq!(
        h[1..],
        [
            "LABEL base.label=from-base shared=base",
            "ENTRYPOINT [\"/bin/echo\"]",
            "CMD [\"base-cmd\"]",
            "ARG VERSION=2.0",
            "ARG PORT=8080",
            "ENV abc=hello",
            "ENV abc=bye def=hello",
            "ENV ghi=bye",
            "ENV legacy=spaced value",
            "LABEL version=2.0 shared=child",
            "EXPOSE map[8080/tcp:{} 9000/udp:{} 9001/udp:{}]",
            "USER 1000:1000",
            "VOLUME [/data /logs]",
            "VOLUME [/cache]",
            "STOPSIGNAL SIGQUIT",
            "SHELL [/bin/sh -ec]",
            "CMD [\"/bin/sh\" \"-ec\" \"run --now\"]",
        ],
        "{h:#?}"
    );
    let entries = c["history"].as_array().ok_or("no history")?;
    assert!(entries[1..].iter().all(|e| e["empty_layer"] == true));
    assert!(
        entries[1..]
            .iter()
            .all(|e| e["comment"] == "buildkit.dockerfile.v0")
    );

    // A shell-form ENTRYPOINT clears the CMD it inherits.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox AS base\nCMD [\"base-cmd\"]\nFROM base\nENTRYPOINT exec top -b\n",
    )?;
    assert_ok(&env.build(&ctx, "ep.tar", &[]));
    let ep = config(&env, "ep.tar")?;
    assert!(ep["config"]["Cmd"].is_null(), "{ep}");
    assert_eq!(
        archive::strings(&ep["config"]["Entrypoint"]),
        ["/bin/sh", "-c", "exec top -b"]
    );
    assert_eq!(
        history(&ep).last().map(String::as_str),
        Some("ENTRYPOINT [\"/bin/sh\" \"-c\" \"exec top -b\"]")
    );
    Ok(())
}

#[test]
fn healthcheck_options_none_and_onbuild_leave_no_history_of_their_own() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox AS checked\n\
             HEALTHCHECK --interval=1m30s --timeout=5s --start-period=10s --start-interval=2s --retries=5 \\\n\
             \x20 CMD [\"wget\", \"-q\", \"http://localhost/\"]\n\
             ONBUILD RUN echo triggered\n\
             FROM checked AS unchecked\n\
             HEALTHCHECK NONE\n",
        )],
    )?;
    assert_ok(&env.build(&ctx, "checked.tar", &["--target", "checked"]));
    let c = config(&env, "checked.tar")?;
    let hc = &c["config"]["Healthcheck"];
    assert_eq!(
        archive::strings(&hc["Test"]),
        ["CMD", "wget", "-q", "http://localhost/"]
    );
    assert_eq!(hc["Interval"], 90_000_000_000i64);
    assert_eq!(hc["Timeout"], 5_000_000_000i64);
    assert_eq!(hc["StartPeriod"], 10_000_000_000i64);
    assert_eq!(hc["StartInterval"], 2_000_000_000i64);
    assert_eq!(hc["Retries"], 5);
    assert_eq!(
        archive::strings(&c["config"]["OnBuild"]),
        ["RUN echo triggered"]
    );
    // BuildKit records no history entry for ONBUILD.
    let h = history(&c);
    assert_eq!(h.len(), 2, "{h:#?}");
    assert!(
        h[1].starts_with("HEALTHCHECK &{[\"CMD\" \"wget\""),
        "{h:#?}"
    );

    let out = env.build(&ctx, "unchecked.tar", &[]);
    assert_ok(&out);
    // The trigger ran in the child stage.
    assert!(stderr(&out).contains("triggered"), "{}", text(&out));
    let u = config(&env, "unchecked.tar")?;
    assert_eq!(
        archive::strings(&u["config"]["Healthcheck"]["Test"]),
        ["NONE"]
    );
    assert!(u["config"]["OnBuild"].is_null(), "{u}");
    Ok(())
}

#[test]
fn a_bad_stopsignal_is_an_error_naming_its_line() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[("Dockerfile", "FROM busybox\nSTOPSIGNAL SIGNOPE\n")],
    )?;
    let out = env.build(&ctx, "image.tar", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("Dockerfile:2") && err.contains("SIGNOPE"),
        "{err}"
    );
    Ok(())
}

#[test]
fn platform_args_are_predefined_globally_and_need_an_arg_in_a_stage() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM --platform=$BUILDPLATFORM busybox AS tools\n\
             ARG TARGETOS TARGETARCH\n\
             ARG BUILDPLATFORM\n\
             RUN echo \"$TARGETOS/$TARGETARCH on $BUILDPLATFORM [$TARGETPLATFORM]\" > /plat\n\
             FROM busybox\n\
             COPY --from=tools /plat /plat\n",
        )],
    )?;
    assert_ok(&env.build(&ctx, "image.tar", &[]));
    let image = unpack(&env, "image.tar")?;
    // TARGETPLATFORM was not declared in the stage: it is empty there.
    assert_eq!(
        image.read_to_string("/plat")?,
        "linux/amd64 on linux/amd64 []\n"
    );
    assert_eq!(image.config["architecture"], "amd64");
    assert_eq!(image.config["os"], "linux");
    Ok(())
}

#[test]
fn arg_scoping_build_args_from_the_environment_and_proxy_args() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "ARG GLOBAL=global\n\
             ARG FROM_ENV\n\
             FROM busybox\n\
             RUN echo \"global=[$GLOBAL]\" > /out\n\
             ARG GLOBAL\n\
             ARG FROM_ENV\n\
             ARG DEFAULTED=default\n\
             ENV DEFAULTED=env-wins\n\
             RUN echo \"global=[$GLOBAL] env=[$FROM_ENV] defaulted=[$DEFAULTED] proxy=[$HTTP_PROXY]\" >> /out\n",
        )],
    )?;
    let out = env.build_env(
        &ctx,
        "image.tar",
        &[
            "--build-arg",
            "FROM_ENV",
            "--build-arg",
            "DEFAULTED=from-cli",
            "--build-arg",
            "HTTP_PROXY=http://proxy.invalid:3128",
        ],
        &[("FROM_ENV", "taken-from-env")],
    );
    assert_ok(&out);
    let image = unpack(&env, "image.tar")?;
    // A global ARG is only seen in a stage after the stage declares it again; ENV wins over
    // ARG; a bare --build-arg NAME takes the value of NAME in the environment.
    assert_eq!(
        image.read_to_string("/out")?,
        "global=[]\nglobal=[global] env=[taken-from-env] defaulted=[env-wins] proxy=[http://proxy.invalid:3128]\n"
    );
    let h = history(&config(&env, "image.tar")?);
    let last = h.last().ok_or("no history")?;
    // The proxy build arg reaches RUN but, undeclared, stays out of the history.
    assert!(!last.contains("proxy.invalid"), "{last}");
    assert!(last.starts_with("RUN |"), "{last}");
    assert!(last.contains("FROM_ENV=taken-from-env"), "{last}");
    Ok(())
}

#[test]
fn run_heredocs_shebang_scripts_several_documents_and_tab_chomping() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\n\
             ARG WHO=world\n\
             RUN <<EOT\n\
             #!/bin/sh\n\
             echo \"script $0 says hello $WHO\" > /shebang.txt\n\
             EOT\n\
             RUN <<ONE cat > /one.txt && <<TWO cat > /two.txt\n\
             first document\n\
             ONE\n\
             second document\n\
             TWO\n\
             RUN <<-EOT\n\
             \techo chomped > /chomped.txt\n\
             \tEOT\n\
             RUN cat <<EOT > /expanded.txt\n\
             hello $WHO\n\
             EOT\n",
        )],
    )?;
    assert_ok(&env.build(&ctx, "image.tar", &[]));
    let image = unpack(&env, "image.tar")?;
    assert_eq!(
        image.read_to_string("/shebang.txt")?,
        "script /dev/pipes/EOT says hello world\n"
    );
    assert_eq!(image.read_to_string("/one.txt")?, "first document\n");
    assert_eq!(image.read_to_string("/two.txt")?, "second document\n");
    assert_eq!(image.read_to_string("/chomped.txt")?, "chomped\n");
    assert_eq!(image.read_to_string("/expanded.txt")?, "hello world\n");
    let h = history(&config(&env, "image.tar")?);
    assert!(
        h.iter()
            .any(|e| e == "RUN |1 WHO=world /bin/sh -c /dev/pipes/EOT # buildkit"),
        "{h:#?}"
    );
    Ok(())
}

#[test]
fn an_absolute_workdir_keeps_its_trailing_slash_in_the_config() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\n\
             WORKDIR /go/src/app/\n\
             RUN pwd > /pwd.txt\n\
             WORKDIR sub/\n",
        )],
    )?;
    let out = env.build(&ctx, "slash.tar", &[]);
    assert_ok(&out);
    let image = unpack(&env, "slash.tar")?;
    let cfg = config(&env, "slash.tar")?;
    // As docker shows it: an absolute WORKDIR as written, a relative one joined and cleaned.
    let h = history(&cfg);
    assert!(h.iter().any(|e| e == "WORKDIR /go/src/app/"), "{h:?}");
    assert_eq!(cfg["config"]["WorkingDir"], "/go/src/app/sub");
    assert_eq!(image.read_to_string("/pwd.txt")?, "/go/src/app\n");
    assert!(image.path("/go/src/app/sub").is_dir());

    let ctx = env.context(
        "ctx2",
        &[("Dockerfile", "FROM busybox\nWORKDIR /go/src/app/\n")],
    )?;
    assert_ok(&env.build(&ctx, "last.tar", &[]));
    assert_eq!(
        config(&env, "last.tar")?["config"]["WorkingDir"],
        "/go/src/app/"
    );
    Ok(())
}

#[test]
fn a_chomped_heredoc_is_a_script_only_when_its_shebang_starts_the_raw_body() -> TestResult {
    let env = Env::new()?;
    // BuildKit's dispatchRun looks for `#!` in the heredoc as written, before `<<-` strips
    // tabs: a shebang at column 0 makes a script (its body chomped, as in BuildKit's
    // testHeredocIndent), a tab-indented one leaves the body to the shell.
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\n\
             RUN <<-EOT\n\
             #!/bin/sh\n\
             echo \"$0\n\tbar\" > /script.txt\n\
             EOT\n\
             RUN <<-EOT\n\
             \t#!/bin/sh\n\
             \techo \"$0\" > /indented.txt\n\
             \tEOT\n",
        )],
    )?;
    assert_ok(&env.build(&ctx, "image.tar", &[]));
    let image = unpack(&env, "image.tar")?;
    assert_eq!(
        image.read_to_string("/script.txt")?,
        "/dev/pipes/EOT\nbar\n"
    );
    assert_eq!(image.read_to_string("/indented.txt")?, "/bin/sh\n");
    Ok(())
}

#[test]
fn a_proxy_build_arg_is_seen_under_both_spellings_and_kept_out_of_the_image() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\n\
             RUN echo \"[$HTTP_PROXY] [$http_proxy] [$NO_PROXY] [$no_proxy]\" > /proxies\n",
        )],
    )?;
    let out = env.build(
        &ctx,
        "image.tar",
        &[
            "--build-arg",
            "http_proxy=http://proxy.invalid:3128",
            "--build-arg",
            "NO_PROXY=localhost",
        ],
    );
    assert_ok(&out);
    let image = unpack(&env, "image.tar")?;
    assert_eq!(
        image.read_to_string("/proxies")?,
        "[http://proxy.invalid:3128] [http://proxy.invalid:3128] [localhost] [localhost]\n"
    );
    // As BuildKit: in neither the history nor the config, and not in the step's cache key.
    let cfg = config(&env, "image.tar")?;
    let h = history(&cfg);
    assert!(h.iter().all(|e| !e.contains("proxy.invalid")), "{h:?}");
    let config_env = cfg["config"]["Env"].to_string();
    assert!(
        !config_env.contains("proxy.invalid") && !config_env.contains("localhost"),
        "{config_env}"
    );
    let out = env.build(
        &ctx,
        "again.tar",
        &["--build-arg", "http_proxy=http://other.invalid:8080"],
    );
    assert_ok(&out);
    assert!(stderr(&out).contains("CACHED"), "{}", text(&out));
    Ok(())
}

#[test]
fn targetstage_names_the_stage_built_once_a_stage_declares_it() -> TestResult {
    let env = Env::new()?;
    // BuildKit's testTargetStageNameArg, on busybox.
    let stages = "FROM busybox AS base\n\
                  WORKDIR /out\n\
                  RUN echo -n \"value:$TARGETSTAGE\" > /out/first\n\
                  ARG TARGETSTAGE\n\
                  RUN echo -n \"value:$TARGETSTAGE\" > /out/second\n\
                  FROM scratch AS foo\n\
                  COPY --from=base /out/ /\n\
                  FROM scratch\n\
                  COPY --from=base /out/ /\n";
    let ctx = env.context("ctx", &[("Dockerfile", stages)])?;
    let read = |archive: &str| -> Result<(String, String), Box<dyn std::error::Error>> {
        let image = unpack(&env, archive)?;
        Ok((
            image.read_to_string("/first")?,
            image.read_to_string("/second")?,
        ))
    };
    assert_ok(&env.build(&ctx, "foo.tar", &["--target", "foo"]));
    assert_eq!(read("foo.tar")?, ("value:".into(), "value:foo".into()));
    assert_ok(&env.build(&ctx, "default.tar", &[]));
    assert_eq!(
        read("default.tar")?,
        ("value:".into(), "value:default".into())
    );
    let named = format!("{stages}FROM scratch AS final\nCOPY --from=base /out/ /\n");
    let ctx = env.context("ctx-named", &[("Dockerfile", &named)])?;
    assert_ok(&env.build(&ctx, "final.tar", &[]));
    assert_eq!(read("final.tar")?, ("value:".into(), "value:final".into()));
    Ok(())
}

#[test]
fn onbuild_triggers_inherited_from_a_stage_build_the_stages_they_read_first() -> TestResult {
    let env = Env::new()?;
    // BuildKit's testOnBuildInheritedStageWithFrom, on busybox, and a mount from= alike.
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox AS src\n\
             RUN mkdir -p /in && echo -n 12 > /in/file\n\
             FROM busybox AS base\n\
             ONBUILD COPY --from=src /in/file /out/foo\n\
             ONBUILD RUN --mount=from=src,target=/m cp /m/in/file /out/mounted\n\
             FROM base AS mid\n\
             RUN cp /out/foo /out/bar\n\
             FROM scratch\n\
             COPY --from=mid /out/bar /out/mounted /\n",
        )],
    )?;
    let out = env.build(&ctx, "image.tar", &[]);
    assert_ok(&out);
    let image = unpack(&env, "image.tar")?;
    assert_eq!(image.read_to_string("/bar")?, "12");
    assert_eq!(image.read_to_string("/mounted")?, "12");
    Ok(())
}
