//! End to end, the sandbox tiers as the test user runs them: the tier a build says it uses,
//! `--sandbox` forcing one, and the one-id tier (`userns-single`) making ownership right:
//! `chown` recorded instead of failing, `stat` showing the recorded owner in the same step
//! and later ones, `COPY --from` and `COPY --chown` keeping it, and the layers written with it
//! (read back with `tar`, independently of umstage). Also `umstage doctor` on this machine.

mod common;

use common::{
    Env, TestResult, assert_ok, assert_owners_kept, build_in_tier, entry, layers, lines_with,
    stderr, text,
};

const OWNERS: &str = "FROM busybox AS build\n\
RUN mkdir -p /out/sub && echo hi > /out/f && chown 1234:55 /out/f && chown 7:8 /out/sub \\\n\
 && chmod 4755 /out/f && stat -c 'same %u:%g %a %n' /out/f /out/sub\n\
RUN stat -c 'later %u:%g %n' /out/f && ln -s f /out/link && chown -h 9:9 /out/link \\\n\
 && touch /out/back && chown 3:3 /out/back && chown 0:0 /out/back && stat -c 'back %u:%g' /out/back\n\
FROM busybox\n\
COPY --from=build /out /res\n\
COPY --from=build --chown=42:43 /out/f /g\n\
RUN stat -c 'copied %u:%g %n' /res/f /res/sub /g\n";

#[test]
fn single_id_tier_records_owners_that_stat_copy_and_layers_keep() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context("ctx", &[("Dockerfile", OWNERS)])?;
    let out = build_in_tier(&env, &ctx, "img.tar", "userns-single");
    assert_ok(&out);
    let log = stderr(&out);
    assert!(log.contains("#0 sandbox userns-single: "), "{log}");
    // The chown sets set-user-id aside, as the kernel does, so chmod comes after it.
    assert_owners_kept(&env, &log, "img.tar")?;
    assert_eq!(
        lines_with(&log, "copied "),
        [
            "copied 1234:55 /res/f",
            "copied 7:8 /res/sub",
            "copied 42:43 /g"
        ],
        "{log}"
    );
    Ok(())
}

#[test]
fn the_tier_is_said_once_and_can_be_forced() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN chown 1234 /tmp && stat -c %u /tmp\n",
        )],
    )?;
    // The test user has subordinate ranges: the best tier maps them.
    let out = env.build(&ctx, "img.tar", &["--progress", "plain"]);
    assert_ok(&out);
    let log = stderr(&out);
    assert_eq!(log.matches("#0 sandbox ").count(), 1, "{log}");
    assert!(
        log.contains("#0 sandbox userns: a user namespace with "),
        "{log}"
    );
    let out = env.build(
        &ctx,
        "img2.tar",
        &["--progress", "rawjson", "--sandbox", "userns-single"],
    );
    assert_ok(&out);
    assert!(
        stderr(&out).contains("[internal] sandbox userns-single: "),
        "{}",
        text(&out)
    );
    Ok(())
}

#[test]
fn doctor_names_what_it_checked_and_the_tier() -> TestResult {
    let env = Env::new()?;
    let out = env.umstage(&["doctor"], &[]);
    assert_ok(&out);
    let report = String::from_utf8_lossy(&out.stdout);
    for topic in [
        "seccomp",
        "capabilities",
        "user namespaces",
        "subordinate ids",
        "newuidmap/newgidmap",
        "/proc",
        "state root",
        "free space",
    ] {
        assert!(report.contains(topic), "{topic} missing:\n{report}");
    }
    assert!(report.contains("sandbox tier: userns: "), "{report}");
    let out = env.umstage(&["doctor", "--json"], &[]);
    assert_ok(&out);
    let value: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(value["diagnosis"]["tier"], "userns");
    assert_eq!(value["facts"]["trial"], "Works");
    Ok(())
}

#[test]
fn single_id_tier_plays_a_non_root_user_and_its_files_are_its_own() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN mkdir /app\nUSER 1000:1001\n\
             RUN echo \"ids $(id -u):$(id -g)\" && mkdir /app/data && echo x > /app/data/f && touch /etc/passwd\n\
             RUN stat -c 'later %u:%g %n' /app/data/f /etc/passwd\n",
        )],
    )?;
    let out = build_in_tier(&env, &ctx, "img.tar", "userns-single");
    assert_ok(&out);
    let log = stderr(&out);
    assert_eq!(lines_with(&log, "ids "), ["ids 1000:1001"], "{log}");
    // What the user made is its own; what it only touched keeps its owner.
    assert_eq!(
        lines_with(&log, "later "),
        ["later 1000:1001 /app/data/f", "later 0:0 /etc/passwd"],
        "{log}"
    );
    let image = layers(&env, "img.tar")?;
    let f = entry(&image, "app/data/f").ok_or("app/data/f missing")?;
    assert_eq!((f.uid, f.gid), (1000, 1001));
    let data = entry(&image, "app/data").ok_or("app/data missing")?;
    assert_eq!((data.uid, data.gid), (1000, 1001));
    let passwd = entry(&image, "etc/passwd").ok_or("etc/passwd missing")?;
    assert_eq!((passwd.uid, passwd.gid), (0, 0));
    Ok(())
}
