//! End to end, build pods: the umstage binary alone in a minimal image (made from the host's
//! files: the binary, `newuidmap`/`newgidmap` with file capabilities, their libraries, `/etc/passwd`,
//! `/etc/group`, `/etc/subuid`, `/etc/subgid`), run by a private dockerd (Debian's 20.10, its
//! default seccomp profile, as containerd's and CRI-O's RuntimeDefault) under the profiles
//! Kubernetes runs pods with:
//!
//! - P1, Pod Security "restricted": `--user 1000 --cap-drop ALL --security-opt no-new-privileges`;
//! - P2, "baseline": `--user 1000` (and with `--security-opt systempaths=unconfined`);
//! - P3, root with the default capabilities (where Kaniko runs);
//! - P4, BuildKit's rootless recipe: `--user 1000 --security-opt seccomp=unconfined
//!   --security-opt apparmor=unconfined`, with subordinate ranges, and as a user without any.
//!
//! Each builds a multi-stage Dockerfile that chowns to other ids, reads `/proc/self/status`,
//! signals its parent (refused under Landlock without a namespace) and `COPY --from`s the
//! result, and the image is read back with `tar` (owners, modes, sizes); `umstage doctor
//! --json` must name the tier the build then uses. P1 and P2 (a non-root user the runtime's
//! seccomp profile refuses a user namespace) build in the ptrace tier, and doctor still names
//! the restriction that keeps the namespace tiers out.
//! It needs root to start dockerd: run as anyone else it says so and skips (and fails when
//! `CI` is set).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::dockerd::Daemon;
use common::{TestResult, entry};
use umstage_testutil::archive::{Transport, apply_layers};

const IMAGE: &str = "umstage-pod:test";

const DOCKERFILE: &str = "FROM busybox AS build\n\
RUN mkdir -p /out/sub && echo data > /out/f && chown 1234:55 /out/f && chown 7:8 /out/sub \\\n\
 && chmod 640 /out/f && stat -c 'owner %u:%g %a %n' /out/f /out/sub \\\n\
 && (grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status || echo 'status unavailable') \\\n\
 && (chroot / true 2>/dev/null && echo 'chroot allowed' || echo 'chroot refused') \\\n\
 && (kill -0 $PPID 2>/dev/null && echo 'signal allowed' || echo 'signal refused')\n\
FROM busybox\n\
COPY --from=build /out /res\n\
RUN stat -c 'copied %u:%g %n' /res/f /res/sub\n";

const USER_DOCKERFILE: &str = "FROM busybox\nUSER 1000\nRUN echo \"uid $(id -u)\"\n";

/// The users of the runner image: 1000 has subordinate ranges, 1001 none.
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nbuilder:x:1000:1000::/home/builder:/bin/sh\nloner:x:1001:1001::/home/loner:/bin/sh\n";
const GROUP: &str = "root:x:0:\nbuilder:x:1000:\nloner:x:1001:\n";
const SUBIDS: &str = "builder:100000:65536\n";

/// Copies `file` (symlinks followed) to the same path under `rootfs`.
fn copy_in(rootfs: &Path, file: &Path, to: &Path) -> TestResult {
    let dest = rootfs.join(to.strip_prefix("/")?);
    fs::create_dir_all(dest.parent().ok_or("no parent")?)?;
    fs::copy(file, &dest)?;
    Ok(())
}

/// The shared libraries `ldd` lists for `binary`.
fn libraries(binary: &Path) -> Result<Vec<PathBuf>, Box<dyn std::error::Error>> {
    let text = umstage_testutil::run_stdout(Command::new("ldd").arg(binary))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let path = l.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// Makes the runner image from the host's files and imports it into the daemon.
fn make_image(daemon: &Daemon, dir: &Path) -> TestResult {
    let rootfs = dir.join("rootfs");
    let umstage = Path::new(env!("CARGO_BIN_EXE_umstage"));
    copy_in(&rootfs, umstage, Path::new("/usr/local/bin/umstage"))?;
    // File capabilities, not Debian's setuid bit: in a container without CAP_SYS_ADMIN only
    // a map written under the caller's own uid is accepted (umstage doctor says so).
    for (tool, caps) in [
        ("/usr/bin/newuidmap", "cap_setuid+ep"),
        ("/usr/bin/newgidmap", "cap_setgid+ep"),
    ] {
        copy_in(&rootfs, Path::new(tool), Path::new(tool))?;
        let dest = rootfs.join(&tool[1..]);
        std::os::unix::fs::chown(&dest, Some(0), Some(0))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))?;
        umstage_testutil::run(Command::new("setcap").arg(caps).arg(&dest))?;
    }
    for binary in [umstage, Path::new("/usr/bin/newuidmap")] {
        for lib in libraries(binary)? {
            copy_in(&rootfs, &lib, &lib)?;
        }
    }
    let etc = rootfs.join("etc");
    fs::create_dir_all(&etc)?;
    for (name, text) in [
        ("passwd", PASSWD),
        ("group", GROUP),
        ("subuid", SUBIDS),
        ("subgid", SUBIDS),
    ] {
        fs::write(etc.join(name), text)?;
    }
    for (home, id) in [("home/builder", 1000), ("home/loner", 1001)] {
        fs::create_dir_all(rootfs.join(home))?;
        std::os::unix::fs::chown(rootfs.join(home), Some(id), Some(id))?;
    }
    fs::create_dir_all(rootfs.join("tmp"))?;
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    let tar = dir.join("rootfs.tar");
    umstage_testutil::run(
        Command::new("tar")
            .args(["--xattrs", "--xattrs-include=security.capability", "-C"])
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    )?;
    umstage_testutil::run(daemon.docker().arg("import").arg(&tar).arg(IMAGE))?;
    Ok(())
}

/// One pod profile: its name, `docker run` flags and uid.
struct Profile {
    name: &'static str,
    flags: &'static [&'static str],
    uid: u32,
}

const PROFILES: [Profile; 6] = [
    Profile {
        name: "P1",
        flags: &[
            "--user",
            "1000",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
        ],
        uid: 1000,
    },
    Profile {
        name: "P2",
        flags: &["--user", "1000"],
        uid: 1000,
    },
    Profile {
        name: "P2-systempaths",
        flags: &["--user", "1000", "--security-opt", "systempaths=unconfined"],
        uid: 1000,
    },
    Profile {
        name: "P3",
        flags: &[],
        uid: 0,
    },
    Profile {
        name: "P4",
        flags: &[
            "--user",
            "1000",
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "apparmor=unconfined",
        ],
        uid: 1000,
    },
    Profile {
        name: "P4-no-ranges",
        flags: &[
            "--user",
            "1001",
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "apparmor=unconfined",
        ],
        uid: 1001,
    },
];

/// The shared work directory (context, busybox) and this profile's state and output volumes,
/// owned by its user, as an emptyDir would be.
struct Volumes {
    work: PathBuf,
    state: PathBuf,
    out: PathBuf,
}

fn volumes(
    dir: &Path,
    work: &Path,
    profile: &Profile,
) -> Result<Volumes, Box<dyn std::error::Error>> {
    let state = dir.join(format!("{}-state", profile.name));
    let out = dir.join(format!("{}-out", profile.name));
    for d in [&state, &out] {
        fs::create_dir_all(d)?;
        std::os::unix::fs::chown(d, Some(profile.uid), Some(profile.uid))?;
    }
    Ok(Volumes {
        work: work.to_path_buf(),
        state,
        out,
    })
}

/// `umstage ARGS` in a container of this profile.
fn umstage(
    daemon: &Daemon,
    profile: &Profile,
    v: &Volumes,
    args: &[&str],
) -> Result<Output, Box<dyn std::error::Error>> {
    let mut cmd = daemon.docker();
    cmd.args(["run", "--rm", "--network", "none"])
        .args(profile.flags)
        .arg("-v")
        .arg(format!("{}:/work:ro", v.work.display()))
        .arg("-v")
        .arg(format!("{}:/state", v.state.display()))
        .arg("-v")
        .arg(format!("{}:/out", v.out.display()))
        .args([IMAGE, "/usr/local/bin/umstage", "--root", "/state"])
        .args(args);
    Ok(cmd.output()?)
}

fn build_args<'a>(dockerfile: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "build",
        "--progress",
        "plain",
        "--build-context",
        "busybox=oci-layout:///work/busybox",
        "-f",
        dockerfile,
        "-o",
        out,
        "/work/ctx",
    ]
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The tier `umstage doctor --json` names, `null` when none.
fn doctor_tier(
    daemon: &Daemon,
    profile: &Profile,
    v: &Volumes,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let out = umstage(daemon, profile, v, &["doctor", "--json"])?;
    assert!(
        out.status.success(),
        "{}: doctor failed:\n{}",
        profile.name,
        show(&out)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(report["diagnosis"].clone())
}

/// Checks the built image with tar alone: owners, modes and sizes of what the first stage made.
fn check_image(profile: &Profile, archive: &Path) -> TestResult {
    let image = apply_layers(archive, Transport::OciArchive)?;
    let f = entry(&image, "res/f").ok_or_else(|| format!("{}: res/f missing", profile.name))?;
    assert_eq!(
        (f.uid, f.gid, f.mode.as_str(), f.size),
        (1234, 55, "-rw-r-----", 5),
        "{}",
        profile.name
    );
    let sub =
        entry(&image, "res/sub").ok_or_else(|| format!("{}: res/sub missing", profile.name))?;
    assert_eq!((sub.uid, sub.gid), (7, 8), "{}", profile.name);
    Ok(())
}

#[test]
fn build_pods_use_the_best_tier_each_profile_allows() -> TestResult {
    if !umstage_testutil::is_root() {
        let why = "pods: SKIPPED: starting a private dockerd needs root";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("{why}");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let work = dir.path().join("work");
    let ctx = work.join("ctx");
    fs::create_dir_all(&ctx)?;
    fs::write(work.join("Dockerfile"), DOCKERFILE)?;
    fs::write(work.join("user.Dockerfile"), USER_DOCKERFILE)?;
    umstage_testutil::images::busybox()?.copy_to(&work.join("busybox"))?;
    umstage_testutil::run(Command::new("chmod").arg("-R").arg("a+rX").arg(&work))?;
    let daemon = Daemon::start()?;
    make_image(&daemon, dir.path())?;

    for profile in &PROFILES {
        let v = volumes(dir.path(), &work, profile)?;
        let diagnosis = doctor_tier(&daemon, profile, &v)?;
        let built = umstage(
            &daemon,
            profile,
            &v,
            &build_args("/work/Dockerfile", "/out/img.tar"),
        )?;
        let log = String::from_utf8_lossy(&built.stderr).into_owned();
        let user_built = umstage(
            &daemon,
            profile,
            &v,
            &build_args("/work/user.Dockerfile", "/out/user.tar"),
        )?;
        let user_log = String::from_utf8_lossy(&user_built.stderr).into_owned();
        let tier = match profile.name {
            "P1" | "P2" | "P2-systempaths" => "ptrace",
            "P3" => "chroot",
            "P4" => "userns",
            _ => "userns-single",
        };
        assert_eq!(
            diagnosis["tier"].as_str(),
            Some(tier),
            "{}: {diagnosis}",
            profile.name
        );
        if tier == "ptrace" {
            // Doctor still names what keeps the namespace tiers out, and its fix.
            let reason = diagnosis["reason"].as_str().unwrap_or_default();
            assert!(
                reason.contains("a seccomp filter (Seccomp: 2) refuses unshare(CLONE_NEWUSER)"),
                "{}: {reason}",
                profile.name
            );
            assert!(!reason.contains("unprivileged_userns_clone"), "{reason}");
        }
        assert!(built.status.success(), "{}: {}", profile.name, show(&built));
        assert!(
            log.contains(&format!("#0 sandbox {tier}: ")),
            "{}: {log}",
            profile.name
        );
        assert!(
            log.contains("owner 1234:55 640 /out/f"),
            "{}: {log}",
            profile.name
        );
        assert!(
            log.contains("owner 7:8 755 /out/sub"),
            "{}: {log}",
            profile.name
        );
        assert!(
            log.contains("copied 1234:55 /res/f"),
            "{}: {log}",
            profile.name
        );
        // The chroot tier has no /proc; the namespace tiers read the step's own status.
        let status_line = if tier == "chroot" {
            "status unavailable"
        } else {
            "NoNewPrivs:"
        };
        assert!(log.contains(status_line), "{}: {log}", profile.name);
        // A chroot is no boundary for a step that may chroot: the chroot tier takes that away,
        // and the ptrace tier has none to give.
        let chroot_line = if tier == "chroot" || tier == "ptrace" {
            "chroot refused"
        } else {
            "chroot allowed"
        };
        assert!(log.contains(chroot_line), "{}: {log}", profile.name);
        // Without a namespace Landlock keeps the step from signalling umstage (its parent
        // here is the sandbox helper); the runtime's default seccomp profile allows Landlock.
        if tier == "chroot" || tier == "ptrace" {
            assert!(log.contains("signal refused"), "{}: {log}", profile.name);
            assert!(!log.contains("not confined by Landlock"), "{log}");
        }
        check_image(profile, &v.out.join("img.tar"))?;
        // Every tier runs USER 1000 as 1000 (the one-id tier plays it: see identity.rs).
        assert!(
            user_built.status.success(),
            "{}: {}",
            profile.name,
            show(&user_built)
        );
        assert!(
            user_log.contains("uid 1000"),
            "{}: {user_log}",
            profile.name
        );
    }
    Ok(())
}
