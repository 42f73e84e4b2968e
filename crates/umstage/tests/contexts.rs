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
