//! `cargo xtask test`: the whole test suite on a fresh machine, as `.ci/run` runs it.

use std::process::Command;

use anyhow::{Context, Result};
use umstage_testutil::images::{IMAGES_DIR_ENV, images_dir};
use umstage_testutil::is_root;

use crate::setup::{TEST_PACKAGES, ensure_test_user, install_packages, run as run_cmd};
use crate::testimages;

pub fn run(args: &[String]) -> Result<()> {
    let (debian, passthrough) = match args.split_first() {
        Some((first, rest)) if first == "--debian" => (true, rest),
        _ => (false, args),
    };
    let passthrough = passthrough
        .strip_prefix(&["--".to_owned()][..])
        .unwrap_or(passthrough);
    if is_root() {
        install_packages(TEST_PACKAGES)?;
        ensure_test_user()?;
    } else {
        eprintln!(
            "xtask: not root: using the packages and subordinate ids this machine has; \
             run as root once to install what is missing"
        );
    }
    testimages::make(debian)?;

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let images = images_dir();
    // Doc tests first: nextest does not run them, and the suite's summary
    // should be the last thing printed.
    run_cmd(
        Command::new(&cargo)
            .args(["test", "--workspace", "--doc"])
            .env(IMAGES_DIR_ENV, &images),
    )
    .context("doc tests failed")?;
    let mut tests = Command::new(&cargo);
    if has_nextest(&cargo) {
        tests.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        tests.args(["test", "--workspace", "--no-fail-fast"]);
    }
    run_cmd(tests.args(passthrough).env(IMAGES_DIR_ENV, &images)).context("tests failed")
}

fn has_nextest(cargo: &str) -> bool {
    Command::new(cargo)
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}
