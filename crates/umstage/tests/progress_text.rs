//! What the plain progress and a failure show, as `docker buildx build` shows them: the FROM
//! named by the reference the build uses, only the steps BuildKit makes a vertex of numbered,
//! a failed RUN in BuildKit's words, and the Dockerfile around the failing step.

mod common;

use common::{Env, TestResult, assert_ok, stderr, text};

#[test]
fn from_names_the_expanded_reference_and_only_vertex_steps_are_numbered() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "ARG BASE_IMAGE=busybox\nFROM ${BASE_IMAGE} AS builder\nARG X=1\nENV Y=2\n\
             WORKDIR /w\nRUN echo built\nUSER 1000\nCMD [\"sh\"]\n",
        )],
    )?;
    let out = env.build(&ctx, "i.tar", &["--progress", "plain"]);
    assert_ok(&out);
    let log = stderr(&out);
    // (a) the variable is expanded and the name completed; the stage's name is not repeated.
    assert!(
        log.contains("[builder 1/3] FROM docker.io/library/busybox:latest\n"),
        "{log}"
    );
    assert!(!log.contains("${BASE_IMAGE}"), "{log}");
    // (b) FROM, WORKDIR and RUN make vertices (3); ARG, ENV, USER and CMD are not numbered.
    assert!(log.contains("[builder 2/3] WORKDIR /w\n"), "{log}");
    assert!(log.contains("[builder 3/3] RUN echo built\n"), "{log}");
    for unnumbered in ["ARG X=1", "ENV Y=2", "USER 1000", "CMD [\"sh\"]"] {
        assert!(
            log.contains(&format!("[builder] {unnumbered}\n")),
            "{unnumbered}: {log}"
        );
    }
    Ok(())
}

#[test]
fn a_failed_run_says_its_exit_code_once_and_shows_the_dockerfile_around_it() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\nENV A=1\nRUN true\nRUN echo about to fail && \\\n    exit 3\n\
             CMD [\"sh\"]\nLABEL a=b\n",
        )],
    )?;
    let out = env.build(&ctx, "i.tar", &["--progress", "plain"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    // (c) BuildKit's words, the exit code said once.
    let last = err
        .lines()
        .find(|l| l.starts_with("umstage: error:"))
        .unwrap_or_default();
    assert!(
        last.contains(
            "process \"/bin/sh -c echo about to fail &&     exit 3\" \
             did not complete successfully: exit code: 3"
        ),
        "{err}"
    );
    assert_eq!(last.matches("exit code").count(), 1, "{err}");
    // (d) the file and line, then the lines around the step, its own marked.
    let excerpt = "Dockerfile:4\n--------------------\n   \
                   3 |     RUN true\n   \
                   4 | >>> RUN echo about to fail && \\\n   \
                   5 | >>>     exit 3\n   \
                   6 |     CMD [\"sh\"]\n\
                   --------------------\n";
    assert!(err.contains(excerpt), "{err}");
    Ok(())
}

#[test]
fn a_one_line_failure_shows_two_lines_either_side() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\nENV A=1\nRUN false\nCMD [\"sh\"]\n",
        )],
    )?;
    let out = env.build(&ctx, "i.tar", &["--progress", "plain"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    let excerpt = "--------------------\n   \
                   1 |     FROM busybox\n   \
                   2 |     ENV A=1\n   \
                   3 | >>> RUN false\n   \
                   4 |     CMD [\"sh\"]\n\
                   --------------------\n";
    assert!(err.contains(excerpt), "{err}");
    assert!(
        err.contains("process \"/bin/sh -c false\" did not complete successfully: exit code: 1"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_base_trigger_is_numbered_and_marked_onbuild() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox AS base\nONBUILD RUN echo triggered\nFROM base\nRUN true\n",
        )],
    )?;
    let out = env.build(&ctx, "i.tar", &["--progress", "plain"]);
    assert_ok(&out);
    let log = stderr(&out);
    // A FROM of a stage makes no vertex: it is not numbered, nor is the ONBUILD declaration.
    assert!(log.contains("[stage-1] FROM base\n"), "{log}");
    assert!(log.contains("[base] ONBUILD RUN echo triggered\n"), "{log}");
    assert!(
        log.contains("[stage-1 1/2] ONBUILD RUN echo triggered\n"),
        "{log}"
    );
    assert!(log.contains("[stage-1 2/2] RUN true\n"), "{log}");
    Ok(())
}
