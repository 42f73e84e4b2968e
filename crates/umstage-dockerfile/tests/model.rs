//! The typed model as the solver sees it: every instruction, flags, spans, heredocs, scoping and errors.

use umstage_dockerfile::{
    Base, BuildArgs, Command, CommandLine, ErrorKind, Healthcheck, MountType, NetworkMode,
    Platform, RunScript, SecurityMode, StageScope, dump, parse, parse_instruction,
};

fn first_stage(src: &str) -> Vec<Command> {
    let df = parse("Dockerfile", src).expect("parses");
    df.stages[0]
        .instructions
        .iter()
        .map(|i| i.command.clone())
        .collect()
}

fn error(src: &str) -> umstage_dockerfile::Error {
    match parse("Dockerfile", src) {
        Ok(_) => panic!("must fail: {src:?}"),
        Err(e) => e,
    }
}

#[test]
fn every_instruction_types() {
    let cmds = first_stage(
        "FROM --platform=$BUILDPLATFORM golang:1.22 AS build\n\
         RUN --mount=type=cache,target=/root/.cache --network=none --security=sandbox go build\n\
         CMD [\"/app\"]\n\
         LABEL a=b \"c d\"=e\n\
         MAINTAINER me\n\
         EXPOSE 80 53/udp\n\
         ENV A=1 B=2\n\
         ENV LEGACY some value\n\
         ADD --chown=1:1 --chmod=644 --link --keep-git-dir --checksum=sha256:abc --exclude=*.md --unpack=false a.tar /x/\n\
         COPY --from=build --chown=1 --chmod=755 --link --parents --exclude=x --exclude=y a b /dst/\n\
         ENTRYPOINT echo hi\n\
         VOLUME [\"/data\", \"/logs\"]\n\
         USER app:app\n\
         WORKDIR /srv\n\
         ARG X Y=2\n\
         ONBUILD RUN echo triggered\n\
         STOPSIGNAL SIGTERM\n\
         HEALTHCHECK --interval=30s --timeout=5s --start-period=1m --start-interval=2s --retries=3 CMD curl -f localhost\n\
         SHELL [\"/bin/bash\", \"-c\"]\n",
    );
    let names: Vec<&str> = cmds.iter().map(Command::name).collect();
    assert_eq!(
        names,
        [
            "RUN",
            "CMD",
            "LABEL",
            "MAINTAINER",
            "EXPOSE",
            "ENV",
            "ENV",
            "ADD",
            "COPY",
            "ENTRYPOINT",
            "VOLUME",
            "USER",
            "WORKDIR",
            "ARG",
            "ONBUILD",
            "STOPSIGNAL",
            "HEALTHCHECK",
            "SHELL"
        ]
    );
    let Command::Run(run) = &cmds[0] else {
        panic!()
    };
    assert_eq!(run.mounts[0].kind, MountType::Cache);
    assert_eq!(run.network, Some(NetworkMode::None));
    assert_eq!(run.security, Some(SecurityMode::Sandbox));
    assert_eq!(
        cmds[1],
        Command::Cmd(CommandLine::Exec(vec!["/app".into()]))
    );
    let Command::Env(legacy) = &cmds[6] else {
        panic!()
    };
    assert_eq!(
        (legacy[0].key.as_str(), legacy[0].value.as_str()),
        ("LEGACY", "some value")
    );
    let Command::Add(add) = &cmds[7] else {
        panic!()
    };
    assert_eq!(add.checksum.as_deref(), Some("sha256:abc"));
    assert_eq!(add.unpack, Some(false));
    assert!(add.link && add.keep_git_dir);
    let Command::Copy(copy) = &cmds[8] else {
        panic!()
    };
    assert_eq!(copy.from.as_deref(), Some("build"));
    assert_eq!(copy.excludes, ["x", "y"]);
    assert_eq!(copy.sources.paths, ["a", "b"]);
    assert_eq!(copy.sources.dest, "/dst/");
    assert!(copy.parents);
    assert_eq!(
        cmds[9],
        Command::Entrypoint(CommandLine::Shell("echo hi".into()))
    );
    let Command::Healthcheck(Healthcheck::Cmd { test, options }) = &cmds[16] else {
        panic!()
    };
    assert_eq!(test, &["CMD-SHELL", "curl -f localhost"]);
    assert_eq!(options.interval.as_secs(), 30);
    assert_eq!(options.start_period.as_secs(), 60);
    assert_eq!(options.retries, 3);
}

#[test]
fn healthcheck_none_and_errors() {
    assert_eq!(
        first_stage("FROM a\nHEALTHCHECK NONE\n")[0],
        Command::Healthcheck(Healthcheck::None)
    );
    assert!(
        error("FROM a\nHEALTHCHECK NONE x\n")
            .message
            .contains("takes no arguments")
    );
    assert!(
        error("FROM a\nHEALTHCHECK CMD\n")
            .message
            .contains("Missing command")
    );
    assert!(
        error("FROM a\nHEALTHCHECK FOO x\n")
            .message
            .contains("Unknown type")
    );
    assert!(
        error("FROM a\nHEALTHCHECK --retries=-1 CMD x\n")
            .message
            .contains("--retries")
    );
    assert!(
        error("FROM a\nHEALTHCHECK --interval=soon CMD x\n")
            .message
            .contains("--interval")
    );
}

#[test]
fn flag_errors_name_the_flag_and_point_at_it() {
    let e = error("FROM a\nRUN --mount=type=cache,target=/x --netwrok=none make\n");
    assert_eq!(e.kind, ErrorKind::Flag);
    assert!(e.message.contains("--netwrok"));
    assert_eq!(e.suggestion.as_deref(), Some("did you mean --network?"));
    assert_eq!((e.span.start.line, e.span.start.col), (2, 34));
    assert!(
        e.to_string()
            .contains("\n  |                                  ^^^^^^^^^"),
        "{e}"
    );
    for (src, flag) in [
        ("FROM a\nCOPY --platform=x a b\n", "--platform"),
        ("FROM a\nCOPY --link=maybe a b\n", "--link"),
        ("FROM a\nCOPY --from a b\n", "--from"),
        ("FROM a\nADD --from=x a b\n", "--from"),
        ("FROM a\nRUN --network=bogus x\n", "--network"),
        ("FROM a\nRUN --security=x x\n", "--security"),
        ("FROM a\nRUN --mount=type=nfs x\n", "--mount"),
        ("FROM a\nENV --x=1 A=b\n", "--x"),
        ("FROM --platform a\n", "--platform"),
        ("FROM --platform=a --platform=b a\n", "--platform"),
    ] {
        let e = error(src);
        assert_eq!(e.kind, ErrorKind::Flag, "{src}");
        assert!(e.message.contains(flag), "{src}: {}", e.message);
    }
}

#[test]
fn missing_and_extra_arguments() {
    for (src, text) in [
        ("FROM a\nCOPY onlyone\n", "at least two arguments"),
        ("FROM\n", "FROM requires either one or three arguments"),
        ("FROM a b\n", "FROM requires either one or three arguments"),
        ("FROM a AS 1x\n", "invalid name for build stage"),
        ("FROM a\nUSER\n", "USER requires exactly one argument"),
        (
            "FROM a\nSTOPSIGNAL\n",
            "STOPSIGNAL requires exactly one argument",
        ),
        ("FROM a\nEXPOSE\n", "EXPOSE requires at least one argument"),
        ("FROM a\nSHELL /bin/sh -c\n", "JSON form"),
        ("FROM a\nONBUILD ONBUILD RUN x\n", "Chaining ONBUILD"),
        (
            "FROM a\nONBUILD FROM x\n",
            "isn't allowed as an ONBUILD trigger",
        ),
        (
            "FROM a\nCOPY a <<EOF\nx\nEOF\n",
            "cannot accept a heredoc as a destination",
        ),
        ("FROM a\nARG =x\n", "ARG names can not be blank"),
        ("FROM a\nENV a=b c\n", "can't find = in"),
        ("FROM a\nLABEL x\n", "LABEL must have two arguments"),
    ] {
        let e = error(src);
        assert!(e.message.contains(text), "{src}: {}", e.message);
        assert!(e.span.start.line >= 1);
    }
}

#[test]
fn spans_cover_continuations_and_heredocs() {
    let df = parse(
        "Dockerfile",
        "# c\n  FROM a\nRUN x \\\n  # inner\n  y\nCOPY <<EOF /f\nbody\nEOF\n",
    )
    .expect("parses");
    let from = &df.stages[0].from;
    assert_eq!(
        (
            from.span.start.line,
            from.span.start.col,
            from.span.end.line
        ),
        (2, 3, 2)
    );
    let run = &df.stages[0].instructions[0];
    assert_eq!((run.span.start.line, run.span.end.line), (3, 5));
    let copy = &df.stages[0].instructions[1];
    assert_eq!((copy.span.start.line, copy.span.end.line), (6, 8));
}

#[test]
fn heredoc_run_scripts() {
    let script = |src: &str| {
        let Command::Run(r) = &first_stage(src)[0] else {
            panic!()
        };
        r.script()
    };
    assert_eq!(
        script("FROM a\nRUN <<EOF\necho hi\nEOF\n"),
        RunScript::Shell("echo hi\n".into())
    );
    assert_eq!(
        script("FROM a\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n"),
        RunScript::File {
            name: "EOF".into(),
            data: "#!/usr/bin/env python3\nprint(1)\n".into()
        }
    );
    assert_eq!(
        script("FROM a\nRUN python3 <<EOF > out\nprint(1)\nEOF\n"),
        RunScript::Shell("python3 <<EOF > out\nprint(1)\nEOF".into())
    );
    assert_eq!(
        script("FROM a\nRUN <<-EOF\n\techo tab\n\tEOF\n"),
        RunScript::Shell("echo tab\n".into())
    );
    assert_eq!(
        script("FROM a\nRUN [\"echo\", \"x\"]\n"),
        RunScript::Exec(vec!["echo".into(), "x".into()])
    );
}

#[test]
fn onbuild_heredoc_triggers_round_trip() {
    let cmds = first_stage("FROM a\nONBUILD RUN <<EOF\necho hi\nEOF\n");
    let Command::Onbuild(text) = &cmds[0] else {
        panic!()
    };
    assert_eq!(text, "RUN <<EOF\necho hi\nEOF");
    let trigger = parse_instruction("ONBUILD", text).expect("trigger parses");
    let Command::Run(r) = &trigger.command else {
        panic!()
    };
    assert_eq!(r.script(), RunScript::Shell("echo hi\n".into()));
}

#[test]
fn escape_directive_bom_and_crlf() {
    let a = dump(
        "D",
        "# escape=`\r\nFROM a\r\nRUN dir c:\\ `\r\n  && echo x\r\n",
    )
    .expect("parses");
    assert_eq!(a, "(from \"a\")\n(run \"dir c:\\\\   && echo x\")\n");
    let b = dump("D", "\u{feff}FROM a\nRUN x\n").expect("parses");
    assert_eq!(b, "(from \"a\")\n(run \"x\")\n");
}

#[test]
fn platform_args_and_from_expansion() {
    let df = parse(
        "Dockerfile",
        "ARG VARIANT=alpine\nFROM --platform=$BUILDPLATFORM golang:$VARIANT AS b\nARG TARGETARCH\nRUN echo $TARGETARCH\nFROM b\n",
    )
    .expect("parses");
    let args = BuildArgs {
        target_platform: Platform::parse("linux/arm64/v8").expect("platform"),
        build_platform: Platform::parse("linux/amd64").expect("platform"),
        ..BuildArgs::default()
    };
    let meta = df.meta_scope(&args).expect("meta");
    let g = df.graph(&meta).expect("graph");
    assert_eq!(g.nodes[0].base, Base::Image("golang:alpine".into()));
    assert_eq!(g.nodes[0].platform.as_deref(), Some("linux/amd64"));
    assert_eq!(g.nodes[1].base, Base::Stage(0));
    let mut scope = StageScope::new(&args, &meta, []);
    scope.step(&df.stages[0].instructions[0]).expect("arg");
    assert!(
        scope
            .run_env()
            .contains(&("TARGETARCH".into(), "arm64".into()))
    );
    assert!(
        scope
            .visible_args()
            .contains(&("TARGETARCH".into(), "arm64".into()))
    );
}

#[test]
fn stage_names_are_case_insensitive() {
    let df = parse(
        "Dockerfile",
        "FROM a AS Builder\nFROM builder\nCOPY --from=BUILDER /a /b\n",
    )
    .expect("parses");
    let meta = df.meta_scope(&BuildArgs::default()).expect("meta");
    let g = df.graph(&meta).expect("graph");
    assert_eq!(g.deps(1), vec![0]);
    assert_eq!(df.resolve_target(Some("BUILDER")).expect("target"), 0);
}

#[test]
fn unknown_instruction_suggests() {
    let e = error("FROM a\nRUN x\nFROMM b\n");
    assert_eq!(e.kind, ErrorKind::UnknownInstruction);
    assert!(
        e.to_string()
            .starts_with("Dockerfile:3:1: unknown instruction \"FROMM\" (did you mean FROM?)")
    );
    let e = error("FROM a\nCOPPY a b\n");
    assert_eq!(e.suggestion.as_deref(), Some("did you mean COPY?"));
}
