//! Flags of `docker build` and `docker buildx build` that umstage does not have, each with why,
//! so a docker user who types one learns that instead of clap's tips ("to pass '--squash' as
//! a value, use '-- --squash'", "a similar argument exists: '--quiet'"), which mislead.

use clap::error::{ContextKind, ContextValue, ErrorKind};

/// Flag names (long and short) and why umstage has none of them.
const MISSING: &[(&[&str], &str)] = &[
    (
        &["--squash"],
        "it squashes the layers of the legacy builder; BuildKit does not have it either. To get one layer, copy the result into a fresh stage: FROM scratch, COPY --from=build / /",
    ),
    (
        &["--isolation"],
        "it chooses the isolation of Windows containers; umstage builds Linux images, each RUN in a user-namespace sandbox",
    ),
    (
        &["--cgroup-parent"],
        "RUN steps run in umstage's own cgroup namespace as an ordinary user, which cannot move them under another cgroup; start umstage itself in the cgroup (systemd-run --user --scope -p Slice=NAME umstage build …)",
    ),
    (
        &[
            "--memory",
            "-m",
            "--memory-swap",
            "--cpu-shares",
            "-c",
            "--cpu-period",
            "--cpu-quota",
            "--cpuset-cpus",
            "--cpuset-mems",
        ],
        "it limits the resources of the legacy builder's containers; BuildKit has no per-step limits either. Limit the whole build instead: systemd-run --user --scope -p MemoryMax=4G -p CPUQuota=200% umstage build …",
    ),
    (
        &["--security-opt"],
        "RUN steps get Docker's default capabilities and no seccomp or LSM profile of their own; RUN --security=insecure with --allow security.insecure grants every capability",
    ),
    (
        &["--userns"],
        "umstage chooses the user namespace itself: your id as root, your /etc/subuid and /etc/subgid ranges above it",
    ),
    (
        &["--disable-content-trust"],
        "umstage does not verify Docker Content Trust signatures, so there is nothing to disable",
    ),
    (
        &["--compress", "--stream"],
        "umstage reads the context in place; nothing is sent to a daemon",
    ),
    (
        &["--rm", "--force-rm"],
        "umstage leaves no intermediate containers: each step's sandbox is gone when it ends. Drop the flag",
    ),
    (
        &["--builder"],
        "umstage has no builder instances: the build runs in this process",
    ),
    (
        &["--sbom", "--provenance", "--attest"],
        "umstage does not make attestations (SBOM, provenance) yet",
    ),
    (
        &["--call", "--print"],
        "umstage has no frontend methods; --check runs the build checks",
    ),
    (
        &["--debug", "-D"],
        "umstage has no debug shell; --log-level debug shows its diagnostic log",
    ),
];

/// What to say instead of clap's `error`, when it is about a docker or buildx flag.
pub fn explain(error: &clap::Error) -> Option<String> {
    if error.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    let name = arg.split_once('=').map_or(arg.as_str(), |(n, _)| n);
    let (_, why) = MISSING.iter().find(|(names, _)| names.contains(&name))?;
    Some(format!(
        "error: {name} is a docker build flag that umstage does not have: {why}"
    ))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    fn said(args: &[&str]) -> Option<String> {
        Cli::try_parse_from(args).err().and_then(|e| explain(&e))
    }

    #[test]
    fn docker_flags_are_explained_with_or_without_a_value() {
        for args in [
            &["umstage", "build", "--squash", "."][..],
            &["umstage", "build", "--memory=2g", "."],
            &["umstage", "build", "-m", "2g", "."],
            &["umstage", "build", "--isolation", "hyperv", "."],
        ] {
            let message = said(args).unwrap_or_default();
            assert!(
                message.contains("is a docker build flag that umstage does not have: "),
                "{args:?}: {message}"
            );
        }
        // Other mistakes keep clap's own message.
        assert_eq!(said(&["umstage", "build", "--bogus", "."]), None);
        assert_eq!(said(&["umstage", "build", "--network", "wifi", "."]), None);
    }
}
