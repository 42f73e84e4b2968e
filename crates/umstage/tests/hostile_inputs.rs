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

/// The busybox layout of `env` copied to `name`, its file `file` replaced by `plant`.
fn planted_layout(
    env: &Env,
    name: &str,
    file: &str,
    plant: impl Fn(&std::path::Path) -> std::io::Result<()>,
) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    let dir = env.path(name);
    umstage_testutil::run(Command::new("cp").arg("-a").arg(&env.busybox).arg(&dir))?;
    let path = dir.join(file);
    std::fs::remove_file(&path)?;
    plant(&path)?;
    Ok(dir)
}

#[test]
fn a_layout_context_whose_index_or_blob_is_a_fifo_or_a_device_is_refused() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context("ctx", &[("Dockerfile", "FROM base\nRUN true\n")])?;
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.busybox.join("index.json"))?)?;
    let manifest_hex = index["manifests"][0]["digest"]
        .as_str()
        .and_then(|d| d.strip_prefix("sha256:"))
        .ok_or("no manifest")?;
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(
        env.busybox.join("blobs/sha256").join(manifest_hex),
    )?)?;
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .and_then(|d| d.strip_prefix("sha256:"))
        .ok_or("no layer")?;
    let mkfifo = |p: &std::path::Path| {
        umstage_testutil::run(Command::new("mkfifo").arg(p))
            .map(drop)
            .map_err(std::io::Error::other)
    };
    let zero = |p: &std::path::Path| std::os::unix::fs::symlink("/dev/zero", p);
    let layouts = [
        (
            planted_layout(&env, "fifo-index", "index.json", mkfifo)?,
            "index.json".to_string(),
        ),
        (
            planted_layout(&env, "zero-index", "index.json", zero)?,
            "index.json".to_string(),
        ),
        (
            planted_layout(&env, "zero-blob", &format!("blobs/sha256/{layer}"), zero)?,
            format!("blobs/sha256/{layer}"),
        ),
    ];
    for (layout, file) in &layouts {
        let base = format!("base=oci-layout://{}", layout.display());
        let out = env.build(&ctx, "out.tar", &["--build-context", &base]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let named = format!("{}: not a regular file", layout.join(file).display());
        assert!(stderr(&out).contains(&named), "{}", text(&out));
    }
    Ok(())
}
