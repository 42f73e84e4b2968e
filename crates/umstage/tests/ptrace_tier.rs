//! End to end, the `ptrace` tier as the test user runs it (forced with `--sandbox ptrace`: on
//! this machine a user namespace would work): steps run under the supervisor in copied
//! snapshots with no namespace at all. `chown` is recorded and `stat` shows it, in the same
//! step and later ones, `COPY --from` keeps it and the layers hold it (read back with `tar`);
//! root is played, and `USER 1000:1001` too; paths stay in the step's root (`..` and `/proc`
//! links included); `/proc` is the container's own, and the step may neither chroot nor trace;
//! dynamic programs (the host's own, copied in with their libraries) and `#!` scripts run
//! through the guest's loader; a `setuid` is played per process; every `RUN --mount` kind
//! works as in the user namespace tier, read-only ones refusing writes with `EROFS`.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::agent::Agent;
use umstage_testutil::archive::Unpacked;

use common::{
    Env, TestResult, assert_ok, assert_owners_kept, build_in_tier, entry, layers, lines_with,
    stderr,
};

const OWNERS: &str = "FROM busybox AS build\n\
RUN echo hi > /x && chown 1234:5 /x && ls -ln /x && echo \"uid $(id -u)\"\n\
RUN mkdir -p /out/sub && echo hi > /out/f && chown 1234:55 /out/f && chown 7:8 /out/sub \\\n\
 && chmod 4755 /out/f && stat -c 'same %u:%g %a %n' /out/f /out/sub\n\
RUN stat -c 'later %u:%g %n' /out/f && ln -s f /out/link && chown -h 9:9 /out/link \\\n\
 && touch /out/back && chown 3:3 /out/back && chown 0:0 /out/back && stat -c 'back %u:%g' /out/back\n\
FROM busybox\n\
COPY --from=build /out /res\n\
COPY --from=build --chown=42:43 /out/f /g\n\
RUN stat -c 'copied %u:%g %n' /res/f /res/sub /g /bin/busybox\n";

#[test]
fn ptrace_tier_plays_root_and_records_owners_that_stat_copy_and_layers_keep() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context("ctx", &[("Dockerfile", OWNERS)])?;
    let out = build_in_tier(&env, &ctx, "img.tar", "ptrace");
    assert_ok(&out);
    let log = stderr(&out);
    assert!(log.contains("#0 sandbox ptrace: "), "{log}");
    assert!(
        log.contains("-rw-r--r--    1 1234     5                3 "),
        "{log}"
    );
    assert_eq!(lines_with(&log, "uid "), ["uid 0"], "{log}");
    assert_eq!(
        lines_with(&log, "copied "),
        [
            "copied 1234:55 /res/f",
            "copied 7:8 /res/sub",
            "copied 42:43 /g",
            "copied 0:0 /bin/busybox"
        ],
        "{log}"
    );
    assert_owners_kept(&env, &log, "img.tar")?;
    let image = layers(&env, "img.tar")?;
    let busybox = entry(&image, "bin/busybox").ok_or("bin/busybox missing")?;
    assert_eq!((busybox.uid, busybox.gid), (0, 0));
    Ok(())
}

#[test]
fn ptrace_tier_keeps_paths_in_the_root_and_plays_a_user() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN mkdir /app && ln -s / /app/up\nUSER 1000:1001\n\
             RUN echo \"ids $(id -u):$(id -g)\" && mkdir /app/data && echo x > /app/data/f && touch /etc/passwd\n\
             RUN stat -c 'later %u:%g %n' /app/data/f /etc/passwd \\\n\
              && cd /app/data && echo \"pwd $(pwd)\" && echo \"cwd $(readlink /proc/self/cwd)\" \\\n\
              && echo \"exe $(readlink /proc/self/exe)\" && echo \"up $(cd -P /../../app/up/.. && pwd -P) $(ls /app/up/../../ | grep -c '^app$')\" \\\n\
              && grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status | tr -d '\\t' | sed 's/^/status /' \\\n\
              && (chroot / true 2>/dev/null && echo 'chroot allowed' || echo 'chroot refused') \\\n\
              && grep foo /etc/hosts | tr '\\t' ' ' | sed 's/^/hosts /' \\\n\
              && echo \"node $(uname -n) $(hostname) $(cat /etc/hostname)\"\n",
        )],
    )?;
    let out = env.build(
        &ctx,
        "img.tar",
        &[
            "--sandbox",
            "ptrace",
            "--progress",
            "plain",
            "--add-host",
            "foo:1.2.3.4",
        ],
    );
    assert_ok(&out);
    let log = stderr(&out);
    assert_eq!(lines_with(&log, "ids "), ["ids 1000:1001"], "{log}");
    // The step's own /etc/hosts, which the image does not get.
    assert_eq!(lines_with(&log, "hosts "), ["hosts 1.2.3.4 foo"], "{log}");
    assert_eq!(
        lines_with(&log, "node "),
        ["node buildkitsandbox buildkitsandbox buildkitsandbox"],
        "{log}"
    );
    assert_eq!(
        lines_with(&log, "later "),
        ["later 1000:1001 /app/data/f", "later 0:0 /etc/passwd"],
        "{log}"
    );
    assert_eq!(lines_with(&log, "pwd "), ["pwd /app/data"], "{log}");
    assert_eq!(lines_with(&log, "cwd "), ["cwd /app/data"], "{log}");
    assert_eq!(lines_with(&log, "exe "), ["exe /bin/busybox"], "{log}");
    assert_eq!(lines_with(&log, "up "), ["up / 1"], "{log}");
    assert_eq!(
        lines_with(&log, "status "),
        ["status NoNewPrivs:1", "status Seccomp:2"],
        "{log}"
    );
    assert!(log.contains("chroot refused"), "{log}");
    let image = layers(&env, "img.tar")?;
    let f = entry(&image, "app/data/f").ok_or("app/data/f missing")?;
    assert_eq!((f.uid, f.gid), (1000, 1001));
    let passwd = entry(&image, "etc/passwd").ok_or("etc/passwd missing")?;
    assert_eq!((passwd.uid, passwd.gid), (0, 0));
    assert!(entry(&image, "etc/hosts").is_none());
    Ok(())
}

/// Copies the host's `programs` and the libraries `ldd` lists for them to the same paths
/// under `rootfs`; the loader's absolute symlink (`/lib64/…`) stays a symlink.
fn copy_dynamic(rootfs: &Path, programs: &[&str]) -> TestResult {
    for program in programs {
        let listed = umstage_testutil::run_stdout(Command::new("ldd").arg(program))?;
        let libraries = listed.lines().filter_map(|l| {
            let path = l.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then_some(path.to_string())
        });
        for file in std::iter::once(program.to_string()).chain(libraries) {
            let dest = rootfs.join(file.trim_start_matches('/'));
            fs::create_dir_all(dest.parent().ok_or("no parent")?)?;
            let meta = fs::symlink_metadata(&file)?;
            if meta.file_type().is_symlink() {
                let target = fs::canonicalize(&file)?;
                let copy = rootfs.join(target.strip_prefix("/")?);
                fs::create_dir_all(copy.parent().ok_or("no parent")?)?;
                fs::copy(&target, &copy)?;
                if !dest.exists() {
                    std::os::unix::fs::symlink(&target, &dest)?;
                }
            } else {
                fs::copy(&file, &dest)?;
            }
        }
    }
    Ok(())
}

#[test]
fn ptrace_tier_runs_dynamic_programs_and_scripts_through_the_guests_own_loader() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM busybox\nCOPY rootfs/ /\nCOPY hello.sh /usr/local/bin/hello\n\
                 RUN [\"/usr/bin/dash\", \"-c\", \"echo dash $((6*7)) && echo x > /x && chown 1234:5 /x && /usr/bin/ls -ln /x | cut -d' ' -f3,4 | sed 's/^/ls /'\"]\n\
                 RUN hello world && /usr/bin/cat /proc/self/status | grep -c '^Seccomp:' | sed 's/^/status /'\n\
                 RUN [\"/usr/bin/setpriv\", \"--reuid\", \"55\", \"--regid\", \"66\", \"--clear-groups\", \"/usr/bin/dash\", \"-c\", \"echo dropped $(/usr/bin/id -u):$(/usr/bin/id -g) && echo x > /dropped\"]\n\
                 RUN stat -c 'made %u:%g' /dropped && echo \"back $(id -u)\"\n\
                 RUN /usr/bin/perl -e 'syscall(157, 4, 0); open(F, \"</etc/passwd\") or die; print \"undumpable \", scalar(<F>)'\n\
                 RUN /usr/bin/perl -le 'print q(exe ), readlink(q(/proc/self/exe))' && /usr/bin/perl -e 'exec q(/proc/self/exe), q(-le), q(print q(reexec ok))'\n\
                 USER 1000\nRUN /usr/bin/id -u | sed 's/^/id /'\n",
            ),
            ("hello.sh", "#!/usr/bin/dash -e\necho \"script $0 $1\"\n"),
        ],
    )?;
    copy_dynamic(
        &ctx.join("rootfs"),
        &[
            "/usr/bin/dash",
            "/usr/bin/ls",
            "/usr/bin/cat",
            "/usr/bin/id",
            "/usr/bin/setpriv",
            "/usr/bin/perl",
        ],
    )?;
    fs::set_permissions(ctx.join("hello.sh"), fs::Permissions::from_mode(0o755))?;
    env.dir.user().chown_tree(&ctx)?;
    let out = build_in_tier(&env, &ctx, "img.tar", "ptrace");
    assert_ok(&out);
    let log = stderr(&out);
    assert_eq!(lines_with(&log, "dash "), ["dash 42"], "{log}");
    assert_eq!(lines_with(&log, "ls "), ["ls 1234 5"], "{log}");
    assert_eq!(
        lines_with(&log, "script "),
        ["script /usr/local/bin/hello world"],
        "{log}"
    );
    assert_eq!(lines_with(&log, "status "), ["status 1"], "{log}");
    // A setuid is played per process: what the dropped process makes is its user's.
    assert_eq!(lines_with(&log, "dropped "), ["dropped 55:66"], "{log}");
    assert_eq!(lines_with(&log, "made "), ["made 55:66"], "{log}");
    assert_eq!(lines_with(&log, "back "), ["back 0"], "{log}");
    // A process that makes itself undumpable (prctl 157, PR_SET_DUMPABLE 4) still has its
    // paths translated.
    assert_eq!(
        lines_with(&log, "undumpable "),
        ["undumpable root:x:0:0:root:/root:/bin/sh"],
        "{log}"
    );
    // A dynamic program's /proc/self/exe is itself, not the loader that runs it.
    assert_eq!(lines_with(&log, "exe "), ["exe /usr/bin/perl"], "{log}");
    assert_eq!(lines_with(&log, "reexec "), ["reexec ok"], "{log}");
    assert_eq!(lines_with(&log, "id "), ["id 1000"], "{log}");
    Ok(())
}

#[test]
fn ptrace_tier_gives_cache_and_tmpfs_mounts() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\n\
             RUN --mount=type=cache,target=/var/cache/app mkdir -p /var/cache/app/d && echo kept > /var/cache/app/d/f\n\
             RUN --mount=type=cache,target=/var/cache/app --mount=type=tmpfs,target=/scratch \\\n\
              cd /var/cache/app/d && echo \"cache $(cat f) $(pwd)\" && echo x > /scratch/y && echo \"tmpfs $(ls /scratch)\"\n",
        )],
    )?;
    let out = build_in_tier(&env, &ctx, "img.tar", "ptrace");
    assert_ok(&out);
    let log = stderr(&out);
    assert_eq!(
        lines_with(&log, "cache "),
        ["cache kept /var/cache/app/d"],
        "{log}"
    );
    assert_eq!(lines_with(&log, "tmpfs "), ["tmpfs y"], "{log}");
    // What the mounts hold stays out of the image.
    let image = layers(&env, "img.tar")?;
    assert!(entry(&image, "var/cache/app/d/f").is_none());
    assert!(entry(&image, "scratch/y").is_none());

    Ok(())
}

/// Docker's Go and Python guides' mounts, a read-only cache, a writable bind, a secret file:
/// `RUN --mount` steps as `docker init` writes them.
const MOUNTS: &str = "FROM busybox AS tools\n\
RUN mkdir /t && echo tool > /t/note\n\
FROM busybox\n\
WORKDIR /src\n\
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=bind,source=go.sum,target=go.sum \\\n\
 --mount=type=bind,source=go.mod,target=go.mod echo \"gomod $(cat go.mod) $(cat go.sum)\" \\\n\
 && echo \"ls $(ls | tr '\\n' ' ')\" && echo x > /go/pkg/mod/m && echo \"cache $(ls /go/pkg/mod)\"\n\
RUN --mount=type=cache,target=/go/pkg/mod,ro echo \"rocache $(ls /go/pkg/mod)\" \\\n\
 && { rm /go/pkg/mod/m || true; } 2>&1 | sed 's/^/ro /'\n\
RUN --mount=type=bind,source=requirements.txt,target=/tmp/requirements.txt echo \"req $(cat /tmp/requirements.txt)\"\n\
RUN --mount=type=bind,target=. echo \"ctx $(cat go.mod) $(ls sub)\" \\\n\
 && { echo x > new || true; } 2>&1 | sed 's/^/ro /' && { mkdir sub/d || true; } 2>&1 | sed 's/^/ro /' \\\n\
 && { rm go.mod || true; } 2>&1 | sed 's/^/ro /' && { mv go.mod x || true; } 2>&1 | sed 's/^/ro /' \\\n\
 && { chmod 600 go.mod || true; } 2>&1 | sed 's/^/ro /' && { touch sub/f || true; } 2>&1 | sed 's/^/ro /'\n\
RUN --mount=type=bind,from=tools,source=/t,target=/tools echo \"from $(cat /tools/note)\"\n\
RUN --mount=type=bind,from=extra,source=n.txt,target=/etc/n.txt echo \"named $(cat /etc/n.txt)\"\n\
RUN --mount=type=bind,source=go.mod,target=/m,rw echo y >> /m && echo \"rwfile $(cat /m)\"\n\
RUN --mount=type=bind,target=/ctx,rw echo changed > /ctx/go.mod && rm /ctx/sub/f && echo new > /ctx/new \\\n\
 && echo \"rw $(cat /ctx/go.mod) $(ls /ctx/sub | wc -l)\"\n\
RUN --mount=type=bind,target=/ctx echo \"after $(cat /ctx/go.mod) $(ls /ctx/sub)\" && ls /ctx/new 2>/dev/null || echo 'after none'\n\
RUN --mount=type=secret,id=npmrc echo \"secret $(cat /run/secrets/npmrc)\" \\\n\
 && { echo x > /run/secrets/npmrc || true; } 2>&1 | sed 's/^/ro /'\n\
RUN --mount=type=secret,id=npmrc,target=/root/.npmrc,mode=0400 echo \"target $(cat /root/.npmrc) $(stat -c %a /root/.npmrc)\"\n\
RUN echo \"left $(ls /run/secrets /root/.npmrc /tools /ctx /src 2>&1 | tr '\\n' ' ')\"\n";

/// What the steps of `MOUNTS` print, in `tier`.
fn mounts_in(tier: &str) -> Result<(Vec<String>, Unpacked), Box<dyn std::error::Error>> {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[
            ("Dockerfile", MOUNTS),
            ("go.mod", "module x"),
            ("go.sum", "sums"),
            ("requirements.txt", "flask"),
            ("sub/f", ""),
            ("npmrc", "token=s3cr3t"),
        ],
    )?;
    let extra = env.context("extra", &[("n.txt", "named")])?;
    // A second name for go.mod: a file with links is what a copy-up would replace.
    fs::hard_link(ctx.join("go.mod"), ctx.join("go.mod.link"))?;
    let mode = fs::metadata(ctx.join("go.mod"))?.permissions().mode();
    let secret = format!("id=npmrc,src={}", ctx.join("npmrc").display());
    let named = format!("extra={}", extra.display());
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
            "--build-context",
            &named,
        ],
    );
    assert_ok(&out);
    // The read-only context is as it was: nothing written, removed, renamed or chmodded.
    assert_eq!(fs::read_to_string(ctx.join("go.mod"))?, "module x");
    assert_eq!(fs::metadata(ctx.join("go.mod"))?.permissions().mode(), mode);
    assert!(ctx.join("sub/f").exists() && !ctx.join("new").exists());
    assert_eq!(fs::read_to_string(ctx.join("go.mod.link"))?, "module x");
    let log = stderr(&out);
    let printed = [
        "gomod ", "ls ", "cache ", "rocache ", "ro ", "req ", "ctx ", "from ", "rw ", "after ",
        "secret ", "target ", "named ", "rwfile ", "left ",
    ]
    .iter()
    .flat_map(|p| lines_with(&log, p))
    .map(str::to_string)
    .collect();
    Ok((printed, layers(&env, "img.tar")?))
}

#[test]
fn ptrace_tier_gives_bind_secret_and_read_only_mounts_as_the_user_namespace_tier_does() -> TestResult
{
    let (printed, image) = mounts_in("ptrace")?;
    let read_only = |what: &str| format!("ro {what}: Read-only file system");
    let expected = [
        "gomod module x sums".to_string(),
        "ls go.mod go.sum ".into(),
        "cache m".into(),
        "rocache m".into(),
        read_only("rm: can't remove '/go/pkg/mod/m'"),
        read_only("/bin/sh: can't create new"),
        read_only("mkdir: can't create directory 'sub/d'"),
        read_only("rm: can't remove 'go.mod'"),
        read_only("mv: can't rename 'go.mod'"),
        read_only("chmod: go.mod"),
        read_only("touch: sub/f"),
        read_only("/bin/sh: can't create /run/secrets/npmrc"),
        "req flask".into(),
        "ctx module x f".into(),
        "from tool".into(),
        "named named".into(),
        "rwfile module xy".into(),
        "rw changed 0".into(),
        "after module x f".into(),
        "after none".into(),
        "secret token=s3cr3t".into(),
        "target token=s3cr3t 400".into(),
    ];
    let mut got: Vec<&str> = printed.iter().map(String::as_str).collect();
    let left = got.pop().ok_or("no left line")?;
    let mut want: Vec<&str> = expected.iter().map(String::as_str).collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want, "{printed:#?}");
    // The mount points were made for the step only, as mounts in the other tiers.
    assert!(left.starts_with("left "), "{left}");
    for gone in ["/run/secrets", "/root/.npmrc", "/tools", "/ctx"] {
        assert!(left.contains(&format!("{gone}: No such file")), "{left}");
    }
    for path in [
        "src/go.mod",
        "src/go.sum",
        "src/new",
        "tools",
        "ctx",
        "run/secrets/npmrc",
        "etc/n.txt",
        "m",
    ] {
        assert!(entry(&image, path).is_none(), "{path} in the image");
    }
    // The same Dockerfile prints the same in the user namespace tier.
    let (userns, _) = mounts_in("userns-single")?;
    assert_eq!(printed, userns);
    Ok(())
}

#[test]
fn ptrace_tier_keeps_files_unreadable_to_their_owner_as_real_root_does() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox AS build\n\
             RUN echo secret > /locked && chmod 000 /locked\n\
             RUN stat -c 'later %a %s' /locked\n\
             FROM busybox\n\
             COPY --from=build /locked /copied\n",
        )],
    )?;
    let out = build_in_tier(&env, &ctx, "img.tar", "ptrace");
    assert_ok(&out);
    let log = stderr(&out);
    // The next step's copy of the snapshot, the layer writer and COPY --from all read it.
    assert_eq!(lines_with(&log, "later "), ["later 0 7"], "{log}");
    let image = layers(&env, "img.tar")?;
    let copied = entry(&image, "copied").ok_or("copied missing")?;
    assert_eq!((copied.mode.as_str(), copied.size), ("----------", 7));
    Ok(())
}

#[test]
fn ptrace_tier_forwards_the_ssh_agent_socket_and_gives_a_secret_its_owner() -> TestResult {
    let env = Env::new()?;
    let agent = Agent::start(&env)?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\nCOPY rootfs/ /\n\
             RUN --mount=type=ssh echo \"sock $SSH_AUTH_SOCK\" && /usr/bin/ssh-add -l 2>&1 | sed 's/^/agent /'\n\
             RUN echo \"left $(ls /run/buildkit 2>&1)\"\n\
             RUN --mount=type=secret,id=tok,uid=1000,gid=1001,mode=0440 stat -c 'secret %a %u:%g' /run/secrets/tok\n",
        ),
        ("tok", "t")],
    )?;
    copy_dynamic(&ctx.join("rootfs"), &["/usr/bin/ssh-add"])?;
    env.dir.user().chown_tree(&ctx)?;
    let sock = agent.socket.to_string_lossy().into_owned();
    let out = env.build_env(
        &ctx,
        "img.tar",
        &[
            "--sandbox",
            "ptrace",
            "--progress",
            "plain",
            "--ssh",
            "default",
            "--secret",
            &format!("id=tok,src={}", ctx.join("tok").display()),
        ],
        &[("SSH_AUTH_SOCK", &sock)],
    );
    assert_ok(&out);
    let log = stderr(&out);
    assert_eq!(
        lines_with(&log, "sock "),
        ["sock /run/buildkit/ssh_agent.0"],
        "{log}"
    );
    // The step reached the agent through the socket given for its guest path.
    assert_eq!(
        lines_with(&log, "agent "),
        ["agent The agent has no identities."],
        "{log}"
    );
    assert_eq!(
        lines_with(&log, "left "),
        ["left ls: /run/buildkit: No such file or directory"],
        "{log}"
    );
    // Its owner is recorded, as root is played; it cannot be chowned.
    assert_eq!(
        lines_with(&log, "secret "),
        ["secret 440 1000:1001"],
        "{log}"
    );
    Ok(())
}
