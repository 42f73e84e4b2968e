//! End to end: input that cannot make a sound build is refused before anything is built, with
//! a message that names the culprit (file and place, flag and value) and the usage exit code
//! where the command line is at fault.

mod common;

use std::fs;

use common::{Env, TestResult, text};

#[test]
fn a_dockerfile_that_is_not_utf8_is_refused_at_its_first_invalid_byte() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context("ctx", &[])?;
    let dockerfile = b"FROM busybox\nLABEL caf\xc3\xa9=\xe9t\xe9\nRUN true\n";
    fs::write(ctx.join("Dockerfile"), dockerfile)?;
    env.dir.user().chown_tree(&ctx)?;
    let out = env.build(&ctx, "image.tar", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        err.contains("Dockerfile:2:12: not UTF-8: byte 0xe9"),
        "{}",
        text(&out)
    );

    // The same bytes from standard input are located the same way.
    let mut args = env.build_args("stdin.tar");
    args.extend(["-f", "-", ctx.to_str().unwrap_or_default()].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.umstage_with_input(&args, dockerfile);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Dockerfile:2:12: not UTF-8"),
        "{}",
        text(&out)
    );
    Ok(())
}

#[test]
fn a_secret_file_that_does_not_exist_fails_before_the_build_even_unused() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context("ctx", &[("Dockerfile", "FROM busybox\nRUN true\n")])?;
    let missing = env.path("no-such-secret");
    let spec = format!("id=x,src={}", missing.display());
    let out = env.build(&ctx, "image.tar", &["--secret", &spec]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        err.contains("--secret") && err.contains(&format!("cannot read {}", missing.display())),
        "{}",
        text(&out)
    );
    assert!(
        !err.contains("RUN true"),
        "the build started: {}",
        text(&out)
    );
    assert!(!env.path("image.tar").exists());

    // Past BuildKit's 500 KiB, a secret is refused up front too.
    let big = env.path("big-secret");
    std::fs::write(&big, vec![b'x'; 600 * 1024])?;
    env.dir.user().chown_tree(&big)?;
    let spec = format!("id=big,src={}", big.display());
    let out = env.build(&ctx, "image.tar", &["--secret", &spec]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr_has(&out, "at most 512000"), "{}", text(&out));

    // An unset variable is an empty secret to buildx, not an error.
    let out = env.build(
        &ctx,
        "image.tar",
        &["--secret", "id=y,env=UMSTAGE_TEST_SECRET_NOT_SET"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    Ok(())
}

#[test]
fn a_log_level_that_is_no_level_or_filter_is_a_usage_error() -> TestResult {
    let env = Env::new()?;
    for bad in ["((((", "verbose"] {
        let out = env.umstage(&["--log-level", bad, "info"], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            err.contains(&format!("'{bad}'")) && err.contains("--log-level"),
            "{}",
            text(&out)
        );
    }
    let out = env.umstage(&["--log-level", "umstage_build=debug,warn", "info"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    Ok(())
}

fn stderr_has(out: &std::process::Output, needle: &str) -> bool {
    String::from_utf8_lossy(&out.stderr).contains(needle)
}

#[test]
fn labels_that_add_up_past_what_a_config_may_hold_are_refused_at_their_line() -> TestResult {
    let env = Env::new()?;
    // Each word stays within the expansion limit; together they pass 8 MiB.
    let mut dockerfile = format!("FROM busybox\nARG A0={}\n", "x".repeat(1024));
    for i in 1..=9 {
        dockerfile.push_str(&format!("ARG A{i}=$A{prev}$A{prev}\n", prev = i - 1));
    }
    for i in 0..20 {
        dockerfile.push_str(&format!("LABEL l{i}=$A9\n"));
    }
    let ctx = env.context("ctx", &[("Dockerfile", &dockerfile)])?;
    let out = env.build(&ctx, "image.tar", &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        stderr_has(&out, "image config would grow") && stderr_has(&out, "Dockerfile:"),
        "{}",
        text(&out)
    );
    assert!(!env.path("image.tar").exists());
    Ok(())
}

#[test]
fn a_copy_from_variable_that_is_empty_says_why_not_which_image() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\nARG SRC=busybox\nCOPY --from=$SRC /bin/sh /sh\n",
        )],
    )?;
    let out = env.build(&ctx, "image.tar", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        err.contains("Dockerfile:3:1: variable expansion is not supported for --from=$SRC")
            && err.contains("define a new stage with FROM using ARG from global scope")
            && !err.contains("invalid image reference"),
        "{}",
        text(&out)
    );
    Ok(())
}
