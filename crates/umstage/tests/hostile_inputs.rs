//! End to end, the files a build reads by path before anything runs, as a cloned repository
//! may plant them: a `.dockerignore` that is a symlink to a device, or a FIFO, and a
//! Dockerfile that is a symlink to a device. Each is a clear error, never a build that hangs
//! or reads without end.

mod common;

use std::process::Command;

use common::{Env, TestResult, assert_ok, stderr, text};

#[test]
fn an_ignore_file_that_is_a_device_or_a_fifo_is_refused() -> TestResult {
    let env = Env::new()?;
    let zero_ignore = env.context("zero-ignore", &[("Dockerfile", "FROM busybox\n")])?;
    std::os::unix::fs::symlink("/dev/zero", zero_ignore.join(".dockerignore"))?;
    let fifo_ignore = env.context("fifo-ignore", &[("Dockerfile", "FROM busybox\n")])?;
    umstage_testutil::run(Command::new("mkfifo").arg(fifo_ignore.join(".dockerignore")))?;
    for ctx in [&zero_ignore, &fifo_ignore] {
        let out = env.build(ctx, "out.tar", &[]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let named = format!(
            "{} is not a regular file",
            ctx.join(".dockerignore").display()
        );
        assert!(stderr(&out).contains(&named), "{}", text(&out));
    }
    // A Dockerfile is taken only when it is a regular file.
    let zero_dockerfile = env.context("zero-dockerfile", &[("f", "f\n")])?;
    std::os::unix::fs::symlink("/dev/zero", zero_dockerfile.join("Dockerfile"))?;
    let out = env.build(&zero_dockerfile, "out.tar", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // The same contexts build once the file is an ordinary one.
    std::fs::remove_file(fifo_ignore.join(".dockerignore"))?;
    std::fs::write(fifo_ignore.join(".dockerignore"), "*.log\n")?;
    assert_ok(&env.build(&fifo_ignore, "out.tar", &[]));
    Ok(())
}
