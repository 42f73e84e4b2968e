//! `cargo xtask man [DIR]`: the man pages, generated from umstage's own clap definitions (by its
//! `man-pages` command), into DIR (default `target/man`).

use std::process::Command;

use anyhow::{Context, Result, bail};

pub fn run(args: &[String]) -> Result<()> {
    let dir = match args {
        [] => "target/man".to_string(),
        [dir] => dir.clone(),
        _ => bail!("usage: cargo xtask man [DIR]"),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(["run", "--package", "umstage", "--", "man-pages", &dir])
        .status()
        .with_context(|| format!("running {cargo}"))?;
    if !status.success() {
        bail!("umstage man-pages {dir} failed: {status}");
    }
    println!("man pages written to {dir} (man -l {dir}/umstage-build.1)");
    Ok(())
}
