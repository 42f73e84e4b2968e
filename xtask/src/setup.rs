//! Preparing a fresh Debian machine (as root): packages and the unprivileged test user.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use umstage_testutil::user::TEST_USER;

/// The Debian packages the test suite uses (keep in step with `.ci/run`'s apt line).
pub const TEST_PACKAGES: &[&str] = &[
    "uidmap",
    "skopeo",
    "umoci",
    "podman",
    "docker-registry",
    "busybox-static",
    "debootstrap",
    "attr",
    "jq",
    "apache2-utils",
    "xz-utils",
    "zstd",
    "bzip2",
    "ca-certificates",
    "openssh-client",
    "docker.io",
    "make",
    "musl-tools",
];

/// First subordinate id handed out when no range is taken yet.
const SUBID_START: u64 = 100_000;
/// Ids in the test user's subordinate range (a full 16-bit range, as images expect).
const SUBID_COUNT: u64 = 65_536;

/// Installs whichever of `packages` are missing, with apt.
pub fn install_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !is_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).ends_with("install ok installed"))
}

/// Makes sure the unprivileged test user exists with `/etc/subuid` and `/etc/subgid` ranges.
pub fn ensure_test_user() -> Result<()> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    if !passwd
        .lines()
        .any(|l| l.split(':').next() == Some(TEST_USER))
    {
        eprintln!("xtask: creating the user {TEST_USER}");
        run(Command::new("useradd").args(["--create-home", "--shell", "/bin/sh", TEST_USER]))?;
    }
    for file in ["/etc/subuid", "/etc/subgid"] {
        ensure_subid_range(Path::new(file))?;
    }
    Ok(())
}

/// Gives the test user a range in `file` if it has none, after every range already taken.
fn ensure_subid_range(file: &Path) -> Result<()> {
    let text = match std::fs::read_to_string(file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        other => other.with_context(|| format!("reading {}", file.display()))?,
    };
    if text.lines().any(|l| l.split(':').next() == Some(TEST_USER)) {
        return Ok(());
    }
    let start = next_free_subid(&text);
    eprintln!(
        "xtask: giving {TEST_USER} the range {start}:{SUBID_COUNT} in {}",
        file.display()
    );
    let mut out = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(file)
        .with_context(|| format!("opening {}", file.display()))?;
    let separator = if text.is_empty() || text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    writeln!(out, "{separator}{TEST_USER}:{start}:{SUBID_COUNT}")
        .with_context(|| format!("writing {}", file.display()))
}

/// The first id at or above [`SUBID_START`] past every range listed in `text`.
fn next_free_subid(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':').skip(1);
            Some(f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?)
        })
        .fold(SUBID_START, u64::max)
}

/// Runs a command with inherited output; a failure names it.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run `{}`", umstage_testutil::command_line(cmd)))?;
    if !status.success() {
        bail!(
            "`{}` failed ({status})",
            umstage_testutil::command_line(cmd)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{SUBID_START, next_free_subid};

    #[test]
    fn next_subid_range_starts_after_every_taken_range() {
        assert_eq!(next_free_subid(""), SUBID_START);
        assert_eq!(next_free_subid("a:100000:65536\nb:165536:65536\n"), 231_072);
        assert_eq!(next_free_subid("a:1000:10\nbroken\n"), SUBID_START);
    }
}
