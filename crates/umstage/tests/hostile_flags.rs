//! End to end, flag values at the edge of what the kernel takes: the id 4294967295, which is
//! -1 to `chown` and `setresuid` ("leave it as it is"), in `COPY --chown`, `RUN --mount`'s
//! `uid=` and `USER`, in either sandbox tier. Each is an image or a clear error, never a
//! panic, and never a step that runs as root instead.

mod common;

use common::{Env, TestResult, assert_ok, entry, layers, stderr, text};

const TIERS: [&str; 2] = ["userns", "userns-single"];

#[test]
fn copy_chown_to_the_id_minus_one_writes_that_owner_into_the_layer() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM busybox\nCOPY --chown=4294967295:4294967295 f /f\nADD --chown=4294967295 f /g\n",
            ),
            ("f", "f\n"),
        ],
    )?;
    for tier in TIERS {
        let out_name = format!("{tier}.tar");
        let out = env.build(&ctx, &out_name, &["--sandbox", tier, "--no-cache"]);
        assert_ok(&out);
        let image = layers(&env, &out_name)?;
        for path in ["f", "g"] {
            let e = entry(&image, path).ok_or(format!("{tier}: no {path} in the image"))?;
            assert_eq!(
                (e.uid, e.gid),
                (4294967295, 4294967295),
                "{tier} {path}: {}",
                text(&out)
            );
        }
    }
    Ok(())
}

#[test]
fn a_mount_uid_or_a_user_of_minus_one_is_refused_at_its_instruction() -> TestResult {
    let env = Env::new()?;
    let mount = env.context(
        "mount",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN --mount=type=cache,target=/c,uid=4294967295 true\n",
        )],
    )?;
    let user = env.context(
        "user",
        &[(
            "Dockerfile",
            "FROM busybox\nUSER 4294967295\nRUN id -u > /id\n",
        )],
    )?;
    for tier in TIERS {
        let out = env.build(&mount, "mount.tar", &["--sandbox", tier]);
        assert!(!out.status.success(), "{tier}: {}", text(&out));
        assert!(
            stderr(&out).contains("Dockerfile:2:5: --mount: invalid value 4294967295 for uid"),
            "{tier}: {}",
            text(&out)
        );
        let out = env.build(&user, "user.tar", &["--sandbox", tier]);
        assert_eq!(out.status.code(), Some(1), "{tier}: {}", text(&out));
        assert!(
            stderr(&out).contains("USER 4294967295: user id 4294967295 is -1 to the kernel"),
            "{tier}: {}",
            text(&out)
        );
    }
    Ok(())
}

#[test]
fn doctor_names_a_state_root_no_build_can_use() -> TestResult {
    let env = Env::new()?;
    let file = env.path("a-file");
    std::fs::write(&file, "")?;
    let loop_link = env.path("loop");
    std::os::unix::fs::symlink(&loop_link, &loop_link)?;
    for (root, why) in [
        (&file, "is not a directory"),
        (&loop_link, "Too many levels of symbolic links"),
    ] {
        let root = root.display().to_string();
        let out = env.umstage(&["doctor", "--root", &root], &[]);
        let all = text(&out);
        assert!(
            all.lines().any(|l| l.contains("state root")
                && l.contains("no build can keep its state there")
                && l.contains(why)),
            "{all}"
        );
    }
    Ok(())
}
