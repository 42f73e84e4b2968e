//! Single-id mode as a user without subordinate ranges meets it: one plain warning through the
//! progress stream saying what it changes (owners recorded, not set) and which free range would
//! fix it; no raw log lines.

mod common;

use std::os::unix::fs::{PermissionsExt, chown};
use std::process::Command;

use common::{Env, TestResult, assert_ok, text};

/// `nobody` has no range in /etc/subuid, while the test user (and so the machine) has one.
const NOBODY: u32 = 65534;

#[test]
fn a_user_without_ranges_is_told_once_what_single_id_mode_changed_and_a_free_range() -> TestResult {
    if !umstage_testutil::is_root() {
        // Switching to a user without ranges needs root; `cargo xtask test` runs as root, and
        // CI must never pass by skipping it.
        let why = "skipped: needs root to run as nobody";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("{why}");
        return Ok(());
    }
    let env = Env::new()?;
    // A base image with an entry owned by 1000, made by the test user (who has ranges).
    let ctx = env.context(
        "base",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN touch /owned && chown 1000:1000 /owned\n",
        )],
    )?;
    let layout = env.path("owned-layout");
    let dest = format!("type=oci,dest={},tar=false,name=owned:1", layout.display());
    assert_ok(&env.build(&ctx, "unused.tar", &["-o", &dest]));

    let ctx = env.context("app", &[("Dockerfile", "FROM owned\nRUN echo ran\n")])?;
    let chown_ctx = env.context(
        "chown",
        &[("Dockerfile", "FROM owned\nRUN touch /x && chown 1000 /x\n")],
    )?;
    // Last: making a context gives the whole workspace back to the test user.
    let state = env.path("nobody-state");
    std::fs::create_dir_all(&state)?;
    chown(&state, Some(NOBODY), Some(NOBODY))?;
    let out_dir = env.path("nobody-out");
    std::fs::create_dir_all(&out_dir)?;
    chown(&out_dir, Some(NOBODY), Some(NOBODY))?;
    for entry in walk(&layout)? {
        let mode = entry.metadata()?.permissions().mode();
        std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode | 0o444))?;
    }
    let out = build_as_nobody(&env, &layout, &ctx)?;
    assert_ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("single-id")).collect();
    assert_eq!(warnings.len(), 1, "said once: {}", text(&out));
    let w = warnings[0];
    assert!(
        w.starts_with("WARNING: single-id mode (no range for user nobody in /etc/subuid): "),
        "{w}"
    );
    // The one-id tier records owners it cannot set: the base image's /owned keeps 1000:1000.
    assert!(w.contains("owners other than root are recorded"), "{w}");
    assert!(!w.contains("lost their owner"), "recorded, not lost: {w}");
    // The machine's first block belongs to the test user: the fix names another, free one.
    let fix = w.split(". Fix: ").nth(1).unwrap_or_default();
    assert!(fix.starts_with("sudo usermod --add-subuids "), "{w}");
    assert!(!fix.contains("100000-165535"), "{w}");
    assert!(
        !err.contains('\x1b'),
        "escape codes off a terminal: {err:?}"
    );
    assert!(!err.contains(" WARN "), "a raw log line: {err}");

    // A chown to another user is recorded instead of failing, and the mode is said after it.
    let out = build_as_nobody(&env, &layout, &chown_ctx)?;
    assert_ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    let ran = err.find("chown 1000 /x").unwrap_or(usize::MAX);
    let said = err.find("WARNING: single-id mode").unwrap_or(0);
    assert!(ran < said, "the step, then the mode: {err}");
    Ok(())
}

fn build_as_nobody(
    env: &Env,
    layout: &std::path::Path,
    ctx: &std::path::Path,
) -> std::io::Result<std::process::Output> {
    let state = env.path("nobody-state");
    let out_dir = env.path("nobody-out");
    Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "--",
        ])
        .arg(&env.bin)
        .args(["build", "--progress", "plain", "--root"])
        .arg(&state)
        .arg("--build-context")
        .arg(format!("owned=oci-layout://{}:1", layout.display()))
        .arg("-o")
        .arg(out_dir.join("image.tar"))
        .arg(ctx)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", &state)
        .current_dir("/")
        .output()
}

fn walk(dir: &std::path::Path) -> std::io::Result<Vec<std::fs::DirEntry>> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            all.extend(walk(&entry.path())?);
        }
        all.push(entry);
    }
    Ok(all)
}
