//! End to end, RUN as BuildKit documents it: exec and shell forms, the user and working
//! directory a step runs as, `--mount=type=ssh` with `--ssh`, and the privileges a step has.

mod common;

use common::agent::Agent;
use common::{Env, TestResult, assert_ok, build_in_tier, entry, layers, lines_with, stderr, text};

#[test]
fn ssh_mounts_forward_the_agent_socket_named_with_ssh() -> TestResult {
    let env = Env::new()?;
    let agent = Agent::start(&env)?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\n\
             RUN --mount=type=ssh [ -S \"$SSH_AUTH_SOCK\" ] && echo \"$SSH_AUTH_SOCK\" > /default.txt\n\
             RUN --mount=type=ssh,id=work,target=/agent.sock,required [ -S /agent.sock ] && echo found > /work.txt\n\
             RUN --mount=type=ssh,id=absent echo \"[$SSH_AUTH_SOCK]\" > /absent.txt\n",
        )],
    )?;
    let work = format!("work={}", agent.socket.display());
    let sock = agent.socket.to_string_lossy().into_owned();
    let out = env.build_env(
        &ctx,
        "image.tar",
        &["--ssh", "default", "--ssh", &work],
        &[("SSH_AUTH_SOCK", &sock)],
    );
    assert_ok(&out);
    let image = layers(&env, "image.tar")?;
    assert_eq!(
        image.read_to_string("/default.txt")?,
        "/run/buildkit/ssh_agent.0\n"
    );
    assert_eq!(image.read_to_string("/work.txt")?, "found\n");
    // An ssh mount that is not required and not forwarded is left out.
    assert_eq!(image.read_to_string("/absent.txt")?, "[]\n");
    // The socket never lands in a layer.
    assert!(entry(&image, "run/buildkit/ssh_agent.0").is_none());
    assert!(entry(&image, "agent.sock").is_none());

    // A required agent that was not forwarded fails the step, saying what to pass.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN --mount=type=ssh,required=true true\n",
    )?;
    let out = env.build(&ctx, "missing.tar", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("--ssh default"), "{}", text(&out));

    // --ssh default with no agent running is a usage error.
    let out = env.build(&ctx, "noagent.tar", &["--ssh", "default"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("SSH_AUTH_SOCK"), "{}", text(&out));
    Ok(())
}

#[test]
fn steps_get_dockers_default_capabilities_and_insecure_needs_an_entitlement() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\n\
             RUN grep CapBnd /proc/self/status > /default-caps\n\
             RUN --security=insecure grep CapBnd /proc/self/status > /insecure-caps\n\
             RUN --network=host true\n",
        )],
    )?;
    let out = env.build(&ctx, "denied.tar", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("Dockerfile:3") && err.contains("--allow security.insecure"),
        "{err}"
    );

    let out = env.build(&ctx, "image.tar", &["--allow", "security.insecure"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("--allow network.host"),
        "{}",
        text(&out)
    );

    let out = env.build(
        &ctx,
        "image.tar",
        &["--allow", "security.insecure,network.host"],
    );
    assert_ok(&out);
    let image = layers(&env, "image.tar")?;
    // Docker's default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
    // NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP.
    assert_eq!(
        image.read_to_string("/default-caps")?,
        "CapBnd:\t00000000a80425fb\n"
    );
    let insecure = image.read_to_string("/insecure-caps")?;
    let bits = u64::from_str_radix(insecure.trim().trim_start_matches("CapBnd:\t"), 16)?;
    // CAP_SYS_ADMIN (21) is there only with --security=insecure.
    assert!(bits & (1 << 21) != 0, "{insecure}");
    Ok(())
}

#[test]
fn exec_form_user_and_workdir_shape_what_a_step_runs_as() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\n\
             ENTRYPOINT [\"/bin/false\"]\n\
             RUN [\"/bin/sh\", \"-c\", \"echo exec-form $0 > /exec.txt\"]\n\
             RUN [\"echo\", \"$HOME\", \"not expanded\"]\n\
             USER user\n\
             WORKDIR /home/user/app\n\
             RUN id > /tmp/id.txt && touch made-by-user && pwd > /tmp/pwd.txt\n\
             USER 1234:5678\n\
             WORKDIR /numeric\n\
             RUN id -u > /tmp/numeric.txt && id -g >> /tmp/numeric.txt\n",
        )],
    )?;
    let out = env.build(&ctx, "image.tar", &[]);
    assert_ok(&out);
    // Exec form runs as written: no shell, no variable expansion, ENTRYPOINT not prepended.
    assert!(
        stderr(&out).contains("$HOME not expanded"),
        "{}",
        text(&out)
    );
    let image = layers(&env, "image.tar")?;
    assert_eq!(image.read_to_string("/exec.txt")?, "exec-form /bin/sh\n");
    let id = image.read_to_string("/tmp/id.txt")?;
    assert!(id.starts_with("uid=1000(user) gid=1000(user)"), "{id}");
    assert_eq!(image.read_to_string("/tmp/pwd.txt")?, "/home/user/app\n");
    assert_eq!(image.read_to_string("/tmp/numeric.txt")?, "1234\n5678\n");
    // WORKDIR creates the directory owned by the USER in force; a step's files are the user's.
    let app = entry(&image, "home/user/app").ok_or("app dir missing")?;
    assert_eq!((app.uid, app.gid), (1000, 1000));
    let made = entry(&image, "home/user/app/made-by-user").ok_or("file missing")?;
    assert_eq!((made.uid, made.gid), (1000, 1000));
    let numeric = entry(&image, "numeric").ok_or("numeric dir missing")?;
    assert_eq!((numeric.uid, numeric.gid), (1234, 5678));
    Ok(())
}

#[test]
fn a_step_keeps_its_primary_group_among_its_supplementary_groups() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\n\
             RUN echo 'wheel:x:10:root,user' >> /etc/group\n\
             RUN id > /root.txt\n\
             USER user\n\
             RUN id > /tmp/user.txt\n\
             USER 1234\n\
             RUN id > /tmp/uid.txt\n\
             USER 1234:1234\n\
             RUN id > /tmp/uid-gid.txt\n",
        )],
    )?;
    let out = env.build(&ctx, "image.tar", &[]);
    assert_ok(&out);
    let image = layers(&env, "image.tar")?;
    // What BuildKit shows since CVE-2023-25173: the primary group among /etc/group's (the
    // kernel keeps the list sorted).
    assert_eq!(
        image.read_to_string("/root.txt")?,
        "uid=0(root) gid=0(root) groups=0(root),10(wheel)\n"
    );
    assert_eq!(
        image.read_to_string("/tmp/user.txt")?,
        "uid=1000(user) gid=1000(user) groups=10(wheel),1000(user)\n"
    );
    assert_eq!(
        image.read_to_string("/tmp/uid.txt")?,
        "uid=1234 gid=0(root) groups=0(root)\n"
    );
    assert_eq!(
        image.read_to_string("/tmp/uid-gid.txt")?,
        "uid=1234 gid=1234 groups=1234\n"
    );
    Ok(())
}

#[test]
fn cache_mounts_with_other_owners_or_modes_are_other_caches() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\n\
             RUN --mount=type=cache,target=/c,uid=1000 touch /c/by-1000 && ls /c > /one\n\
             RUN --mount=type=cache,target=/c,uid=1001 stat -c '%u %a' /c > /two && ls /c >> /two\n\
             RUN --mount=type=cache,target=/c,mode=0700 stat -c '%u %a' /c > /three && ls /c >> /three\n\
             RUN --mount=type=cache,target=/c touch /c/plain\n\
             RUN --mount=type=cache,target=/c,uid=1000 ls /c > /four\n",
        )],
    )?;
    assert_ok(&env.build(&ctx, "image.tar", &[]));
    let image = layers(&env, "image.tar")?;
    assert_eq!(image.read_to_string("/one")?, "by-1000\n");
    assert_eq!(image.read_to_string("/two")?, "1001 755\n");
    assert_eq!(image.read_to_string("/three")?, "0 700\n");
    assert_eq!(image.read_to_string("/four")?, "by-1000\n");
    Ok(())
}

/// In the namespace tier and in the `ptrace` tier, which mounts nothing and makes the
/// targets in the snapshot for the step.
#[test]
fn mount_targets_made_for_a_step_leave_the_image_as_current_buildkit_leaves_them() -> TestResult {
    for tier in ["userns", "ptrace"] {
        let env = Env::new()?;
        let ctx = env.context(
            "ctx",
            &[(
                "Dockerfile",
                "FROM busybox\n\
                 RUN mkdir -p /test/qux\n\
                 RUN --mount=type=cache,target=/test/foo \
                     --mount=type=cache,target=/test/bar/x/y \
                     --mount=type=cache,target=/test/baz/x \
                     --mount=type=tmpfs,target=/test/qux \
                     touch /test/baz/keep && ls /test | tr '\\n' ' ' | sed 's/^/during /'\n",
            )],
        )?;
        let out = build_in_tier(&env, &ctx, "image.tar", tier);
        assert_ok(&out);
        let log = stderr(&out);
        // The targets' parents are there while the step runs, as mount points are.
        assert_eq!(
            lines_with(&log, "during "),
            ["during bar baz foo qux "],
            "{tier}: {log}"
        );
        let image = layers(&env, "image.tar")?;
        // Current BuildKit removes the empty stubs it made for mount targets, with the parents
        // made for them (docker 20.10's BuildKit left them); a stub that got content stays,
        // and a target that was there before stays (its testMountStubsDirectory).
        assert!(image.path("/test/baz/keep").is_file(), "{tier}");
        assert!(image.path("/test/qux").is_dir(), "{tier}");
        for gone in ["/test/foo", "/test/bar", "/test/baz/x"] {
            assert!(
                !image.path(gone).exists(),
                "{tier}: {gone} left in the image"
            );
        }
    }
    Ok(())
}

#[test]
fn the_sandbox_hostname_build_arg_names_the_host_a_step_sees() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\n\
             RUN hostname > /name && cat /etc/hostname >> /name && grep -c \"localhost $(hostname)\" /etc/hosts >> /name\n",
        )],
    )?;
    assert_ok(&env.build(&ctx, "default.tar", &[]));
    assert_eq!(
        layers(&env, "default.tar")?.read_to_string("/name")?,
        "buildkitsandbox\nbuildkitsandbox\n1\n"
    );
    let out = env.build(
        &ctx,
        "named.tar",
        &["--build-arg", "BUILDKIT_SANDBOX_HOSTNAME=builder-box"],
    );
    assert_ok(&out);
    // Consumed by the build: no "not consumed" warning, and the step ran again.
    assert!(!stderr(&out).contains("not consumed"), "{}", text(&out));
    assert_eq!(
        layers(&env, "named.tar")?.read_to_string("/name")?,
        "builder-box\nbuilder-box\n1\n"
    );
    Ok(())
}

/// BuildKit's writable bind is a copy whose changes are thrown away, of a context whose files
/// are all root's: a step may chown and chmod them. Here the context's files belong to a
/// group (the host's root group) that the build's user namespace does not map.
#[test]
fn a_writable_bind_of_the_context_may_chown_and_chmod_what_it_binds() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM busybox\n\
                 RUN --mount=type=bind,target=/ctx,rw \
                 chown 1234:5678 /ctx/a.txt /ctx/sub && chmod 600 /ctx/a.txt && \
                 chmod 700 /ctx/sub && stat -c '%u:%g %a' /ctx/a.txt /ctx/sub > /seen && \
                 echo changed > /ctx/a.txt && echo new > /ctx/sub/new\n\
                 RUN --mount=type=bind,target=/ctx ls /ctx/sub > /after && cat /ctx/a.txt >> /after\n",
            ),
            ("a.txt", "original\n"),
            ("sub/kept", "kept\n"),
        ],
    )?;
    let mode_of = |p: &std::path::Path| -> std::io::Result<String> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(p)?;
        Ok(format!("{}:{} {:o}", m.uid(), m.gid(), m.mode() & 0o7777))
    };
    for path in [ctx.join("a.txt"), ctx.join("sub")] {
        std::os::unix::fs::chown(&path, None, Some(0))?;
    }
    let before = [mode_of(&ctx.join("a.txt"))?, mode_of(&ctx.join("sub"))?];

    let out = env.build(&ctx, "image.tar", &[]);
    assert_ok(&out);
    let image = layers(&env, "image.tar")?;
    assert_eq!(
        image.read_to_string("/seen")?,
        "1234:5678 600\n1234:5678 700\n"
    );
    assert_eq!(image.read_to_string("/after")?, "kept\noriginal\n");
    assert_eq!(std::fs::read_to_string(ctx.join("a.txt"))?, "original\n");
    assert!(!ctx.join("sub/new").exists());
    let after = [mode_of(&ctx.join("a.txt"))?, mode_of(&ctx.join("sub"))?];
    assert_eq!(before, after, "the context itself changed");
    Ok(())
}

/// The same for a directory given as a named context (`--build-context NAME=DIR`), which
/// BuildKit transfers as it does the context.
#[test]
fn a_writable_bind_of_a_directory_context_may_chown_and_chmod_what_it_binds() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\n\
             RUN --mount=type=bind,from=extra,target=/x,rw \
             chown 1234:5678 /x/a.txt && chmod 600 /x/a.txt && \
             stat -c '%u:%g %a' /x/a.txt > /seen && echo changed > /x/a.txt\n",
        )],
    )?;
    let extra = env.context("extra", &[("a.txt", "original\n")])?;
    std::os::unix::fs::chown(extra.join("a.txt"), None, Some(0))?;
    let named = format!("extra={}", extra.display());
    let out = env.build(&ctx, "image.tar", &["--build-context", &named]);
    assert_ok(&out);
    let image = layers(&env, "image.tar")?;
    assert_eq!(image.read_to_string("/seen")?, "1234:5678 600\n");
    assert_eq!(std::fs::read_to_string(extra.join("a.txt"))?, "original\n");
    Ok(())
}
