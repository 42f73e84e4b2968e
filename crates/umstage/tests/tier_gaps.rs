//! End to end, what the tiers without subordinate ids (`userns-single`, `ptrace`) once did
//! differently from a root build, as the test user runs them: device `mknod` recorded as the
//! device (shown by `stat` and `ls`, in the same step and later ones, kept by `COPY --from`,
//! written into the layer as the device); symlink owners (`chown -h`) recorded, shown by
//! `stat` and kept by `COPY` and the layers, as the `userns` tier gives them.

mod common;

use common::{Env, TestResult, assert_ok, build_in_tier, entry, layers, lines_with, stderr};

const DEVICES: &str = "FROM busybox AS build\n\
RUN mkdir /out && mknod /out/null c 1 3 && mknod -m 640 /out/sda b 8 16 && chown 5:6 /out/sda \\\n\
 && mknod /out/pipe p && stat -c 'same %A %t:%T %u:%g %n' /out/null /out/sda /out/pipe \\\n\
 && echo \"ls $(ls -l /out/null | cut -c1)\" && if mknod /out/null c 1 3; then echo again; fi\n\
RUN stat -c 'later %A %t:%T %u:%g %n' /out/null /out/sda\n\
FROM busybox\n\
COPY --from=build /out /res\n\
RUN stat -c 'copied %A %t:%T %u:%g %n' /res/null /res/sda\n";

#[test]
fn device_nodes_are_recorded_and_written_as_devices_in_the_single_id_tiers() -> TestResult {
    for tier in ["userns-single", "ptrace"] {
        let env = Env::new()?;
        let ctx = env.context("ctx", &[("Dockerfile", DEVICES)])?;
        let out = build_in_tier(&env, &ctx, "img.tar", tier);
        assert_ok(&out);
        let log = stderr(&out);
        assert_eq!(
            lines_with(&log, "same "),
            [
                "same crw-r--r-- 1:3 0:0 /out/null",
                "same brw-r----- 8:10 5:6 /out/sda",
                "same prw-r--r-- 0:0 0:0 /out/pipe"
            ],
            "{tier}: {log}"
        );
        assert_eq!(lines_with(&log, "ls "), ["ls c"], "{tier}: {log}");
        assert!(lines_with(&log, "again").is_empty(), "{tier}: {log}");
        assert_eq!(
            lines_with(&log, "later "),
            [
                "later crw-r--r-- 1:3 0:0 /out/null",
                "later brw-r----- 8:10 5:6 /out/sda"
            ],
            "{tier}: {log}"
        );
        assert_eq!(
            lines_with(&log, "copied "),
            [
                "copied crw-r--r-- 1:3 0:0 /res/null",
                "copied brw-r----- 8:10 5:6 /res/sda"
            ],
            "{tier}: {log}"
        );
        let image = layers(&env, "img.tar")?;
        for (path, mode, owner, device) in [
            ("res/null", "crw-r--r--", (0, 0), (1, 3)),
            ("res/sda", "brw-r-----", (5, 6), (8, 16)),
        ] {
            let e = entry(&image, path).ok_or(format!("{tier}: {path} missing"))?;
            assert_eq!(
                (e.mode.as_str(), (e.uid, e.gid), e.device),
                (mode, owner, Some(device)),
                "{tier}: {path}"
            );
        }
        let pipe = entry(&image, "res/pipe").ok_or(format!("{tier}: res/pipe missing"))?;
        assert_eq!(pipe.kind(), 'p', "{tier}");
    }
    Ok(())
}

const LINKS: &str = "FROM busybox AS build\n\
RUN mkdir /out && ln -s target /out/link && chown -h 9:8 /out/link && ln -s /etc /out/l2 \\\n\
 && ln -s x /out/back && chown -h 3:3 /out/back && chown -h 0:0 /out/back \\\n\
 && stat -c 'same %u:%g %n' /out/link /out/l2 /out/back\n\
RUN chown -h 7:6 /out/l2 && stat -c 'later %u:%g %n' /out/link /out/l2 /out/back\n\
FROM busybox\n\
COPY --from=build /out /res\n\
COPY --from=build --chown=42:43 /out /h\n\
RUN stat -c 'copied %u:%g %n' /res/link /res/l2 /h/link\n";

#[test]
fn symlink_owners_are_recorded_as_the_userns_tier_sets_them() -> TestResult {
    for tier in ["userns", "userns-single", "ptrace"] {
        let env = Env::new()?;
        let ctx = env.context("ctx", &[("Dockerfile", LINKS)])?;
        let out = build_in_tier(&env, &ctx, "img.tar", tier);
        assert_ok(&out);
        let log = stderr(&out);
        assert_eq!(
            lines_with(&log, "same "),
            [
                "same 9:8 /out/link",
                "same 0:0 /out/l2",
                "same 0:0 /out/back"
            ],
            "{tier}: {log}"
        );
        assert_eq!(
            lines_with(&log, "later "),
            [
                "later 9:8 /out/link",
                "later 7:6 /out/l2",
                "later 0:0 /out/back"
            ],
            "{tier}: {log}"
        );
        assert_eq!(
            lines_with(&log, "copied "),
            [
                "copied 9:8 /res/link",
                "copied 7:6 /res/l2",
                "copied 42:43 /h/link"
            ],
            "{tier}: {log}"
        );
        let image = layers(&env, "img.tar")?;
        for (path, owner) in [
            ("res/link", (9, 8)),
            ("res/l2", (7, 6)),
            ("h/link", (42, 43)),
        ] {
            let e = entry(&image, path).ok_or(format!("{tier}: {path} missing"))?;
            assert_eq!(
                (e.kind(), e.uid, e.gid),
                ('l', owner.0, owner.1),
                "{tier}: {path}"
            );
        }
    }
    Ok(())
}
