//! End to end: a build that is interrupted ends as a shell expects and leaves nothing running;
//! a state root that was damaged is repaired by the next build.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Env, TestResult, assert_ok, last_layer_path, stderr, unpack};

/// Pids of the processes for which `matches(pid)` holds.
fn processes(matches: impl Fn(&Path) -> bool) -> Vec<String> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| matches(&e.path()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Whether the process at `/proc/PID` runs `argv`.
fn runs(proc_dir: &Path, argv: &[&str]) -> bool {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    fs::read(proc_dir.join("cmdline")).is_ok_and(|c| c == want)
}

/// Waits up to `limit` for `done`; whether it came.
fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done()
}

#[test]
fn sigint_and_sigterm_stop_a_running_step_and_exit_128_plus_the_signal() -> TestResult {
    for (signal, code, seconds) in [("INT", 130, "3607"), ("TERM", 143, "3608")] {
        let env = Env::new()?;
        let ctx = env.context(
            "ctx",
            &[(
                "Dockerfile",
                &format!("FROM busybox\nRUN sleep {seconds}\n"),
            )],
        )?;
        let mut args = env.build_args("image.tar");
        args.push(ctx.to_string_lossy().into_owned());
        let mut cmd = env.dir.user().command(&env.bin);
        cmd.args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn()?;
        let step = |p: &Path| runs(p, &["sleep", seconds]);
        let started = wait_for(Duration::from_secs(120), || !processes(step).is_empty());
        // The child is umstage itself (the test user's command execs it), not yet reaped.
        umstage_testutil::run(
            std::process::Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(child.id().to_string()),
        )?;
        let mut status = None;
        let ended = wait_for(Duration::from_secs(60), || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if !ended {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert!(started, "the RUN step never started");
        assert!(ended, "umstage did not end within 60 s of SIG{signal}");
        assert_eq!(status.and_then(|s| s.code()), Some(code), "{status:?}");

        let bin = env.bin.clone();
        let ours = |p: &Path| step(p) || fs::read_link(p.join("exe")).is_ok_and(|e| e == bin);
        let left = processes(ours);
        assert!(left.is_empty(), "processes left running: {left:?}");
    }
    Ok(())
}

#[test]
fn a_corrupt_layer_a_step_made_is_made_again() -> TestResult {
    let env = Env::new()?;
    let dockerfile = "FROM busybox\nRUN echo made-$((6*7)) > /made\n";
    let ctx = env.context("ctx", &[("Dockerfile", dockerfile)])?;
    assert_ok(&env.build(&ctx, "first.tar", &[]));
    let layer = last_layer_path(&env, "first.tar")?;
    // The archive names blobs as the state root's content store does: blobs/sha256/HEX.
    let blob = env.path("state").join(&layer);
    assert!(blob.is_file(), "{} is not in the store", blob.display());
    let mut corrupt = env.dir.user().command("sh");
    corrupt
        .arg("-c")
        .arg(r#"chmod u+w "$1" && printf 'not a layer' | dd of="$1" bs=1 seek=20 conv=notrunc 2>/dev/null"#)
        .arg("sh")
        .arg(&blob);
    umstage_testutil::run(&mut corrupt)?;

    let out = env.build(&ctx, "second.tar", &[]);
    assert_ok(&out);
    let log = stderr(&out);
    assert!(
        log.contains("Dockerfile:2: the cached layer is unusable, so the step runs again"),
        "{log}"
    );
    assert_eq!(
        unpack(&env, "second.tar")?.read_to_string("/made")?,
        "made-42\n"
    );
    Ok(())
}
