//! End to end, what the tiers without subordinate ids (`userns-single`, `ptrace`) once did
//! differently from a root build, as the test user runs them: device `mknod` recorded as the
//! device (shown by `stat` and `ls`, in the same step and later ones, kept by `COPY --from`,
//! written into the layer as the device); symlink owners (`chown -h`) recorded, shown by
//! `stat` and kept by `COPY` and the layers, as the `userns` tier gives them; dynamic musl
//! programs (Alpine's kind) started through the image's own musl loader in the `ptrace` tier,
//! with the `argv[0]` they were run as; a secret file's owner in every tier.

mod common;

use std::process::Command;

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

/// A multi-call program as busybox is one: it acts by the name it was run as, and `again`
/// re-executes `/proc/self/exe` as busybox does to run another applet.
const APPLET: &str = r#"#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
  const char *name = strrchr(argv[0], '/');
  name = name ? name + 1 : argv[0];
  char exe[256] = "";
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) exe[n] = 0;
  if (!strcmp(name, "again")) {
    execl("/proc/self/exe", "hello", "from-again", (char *)0);
    perror("exec");
    return 1;
  }
  printf("musl %s %s %s\n", name, argc > 1 ? argv[1] : "-", exe);
  return 0;
}
"#;

const MUSL: &str = "FROM busybox\n\
COPY ld-musl-x86_64.so.1 /lib/ld-musl-x86_64.so.1\n\
COPY applet /bin/applet\n\
RUN ln -s applet /bin/hello && ln -s applet /bin/again && hello x && /bin/again \\\n\
 && cd /bin && ./hello rel && sh -c 'exec -a named /bin/applet a0'\n";

#[test]
fn dynamic_musl_programs_run_with_their_argv0_through_the_images_own_loader() -> TestResult {
    for tier in ["userns", "ptrace"] {
        let env = Env::new()?;
        let ctx = env.context("ctx", &[("Dockerfile", MUSL), ("applet.c", APPLET)])?;
        // musl-gcc (Debian's musl-tools) links against musl, whose libc is its own loader.
        let built = Command::new("musl-gcc")
            .arg("-o")
            .arg(ctx.join("applet"))
            .arg(ctx.join("applet.c"))
            .status()?;
        assert!(built.success(), "musl-gcc failed");
        std::fs::copy("/lib/ld-musl-x86_64.so.1", ctx.join("ld-musl-x86_64.so.1"))?;
        env.dir.user().chown_tree(&ctx)?;
        let out = env.build(&ctx, "img.tar", &["--sandbox", tier]);
        assert_ok(&out);
        let log = stderr(&out);
        assert_eq!(
            lines_with(&log, "musl "),
            [
                "musl hello x /bin/applet",
                "musl hello from-again /bin/applet",
                "musl hello rel /bin/applet",
                "musl named a0 /bin/applet"
            ],
            "{tier}: {log}"
        );
    }
    Ok(())
}

/// A secret file's `uid`/`gid` in every tier: set where the ids are mapped, recorded where the
/// tier maps one id (the kernel refuses the others) or plays root.
#[test]
fn a_secret_file_shows_its_owner_in_every_tier() -> TestResult {
    for tier in ["userns", "userns-single", "ptrace"] {
        let env = Env::new()?;
        let ctx = env.context(
            "ctx",
            &[
                (
                    "Dockerfile",
                    "FROM busybox\n\
                     RUN --mount=type=secret,id=tok,uid=1000,gid=1001,mode=0440 \
                     stat -c 'secret %a %u:%g' /run/secrets/tok && echo \"read $(cat /run/secrets/tok)\"\n",
                ),
                ("tok", "t"),
            ],
        )?;
        let secret = format!("id=tok,src={}", ctx.join("tok").display());
        let out = env.build(
            &ctx,
            "img.tar",
            &[
                "--sandbox",
                tier,
                "--progress",
                "plain",
                "--secret",
                &secret,
            ],
        );
        assert_ok(&out);
        let log = stderr(&out);
        assert_eq!(
            lines_with(&log, "secret "),
            ["secret 440 1000:1001"],
            "{tier}: {log}"
        );
        assert_eq!(lines_with(&log, "read "), ["read t"], "{tier}: {log}");
    }
    Ok(())
}
