//! End-to-end tests of the user namespace, snapshots, the RUN sandbox and the diff, run as
//! an unprivileged user in a real user namespace (see `common`).

mod common;
mod fixture;

use std::io::{BufRead, BufReader};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use common::{Place, Scenario, Skip, Test, TestResult};
use fixture::{Fixture, del, opaque, up};
use umstage_snapshot::sandbox::{ExitStatus, Network, RunStep};
use umstage_snapshot::{DriverChoice, userns};

fn main() -> ExitCode {
    umstage_snapshot::dispatch();
    common::main(TESTS, SCENARIOS)
}

const TESTS: &[Test] = &[
    Test {
        name: "sigterm_cancels_the_step_and_propagates_the_exit_status",
        place: Place::Outside,
        run: sigterm_cancels_the_step_and_propagates_the_exit_status,
    },
    Test {
        name: "root_gets_an_identity_map",
        place: Place::AsRoot,
        run: root_gets_an_identity_map,
    },
    Test {
        name: "sigkill_mid_step_leaves_no_process_or_mount",
        place: Place::Outside,
        run: sigkill_mid_step_leaves_no_process_or_mount,
    },
    Test {
        name: "single_id_mode_works_and_warns",
        place: Place::Outside,
        run: single_id_mode_works_and_warns,
    },
    Test {
        name: "subordinate_map_covers_the_callers_ranges",
        place: Place::Inside,
        run: subordinate_map_covers_the_callers_ranges,
    },
    Test {
        name: "output_is_streamed_by_line_with_exit_status",
        place: Place::Inside,
        run: output_is_streamed_by_line_with_exit_status,
    },
    Test {
        name: "overlay_change_set_is_exact",
        place: Place::Inside,
        run: overlay_change_set_is_exact,
    },
    Test {
        name: "native_change_set_matches_overlay",
        place: Place::Inside,
        run: native_change_set_matches_overlay,
    },
    Test {
        name: "whiteouts_and_opaque_dirs_round_trip",
        place: Place::Inside,
        run: whiteouts_and_opaque_dirs_round_trip,
    },
    Test {
        name: "trivial_step_leaves_an_empty_change_set",
        place: Place::Inside,
        run: trivial_step_leaves_an_empty_change_set,
    },
    Test {
        name: "background_process_is_killed_with_the_step",
        place: Place::Inside,
        run: background_process_is_killed_with_the_step,
    },
    Test {
        name: "network_none_sees_only_lo",
        place: Place::Inside,
        run: network_none_sees_only_lo,
    },
    Test {
        name: "user_home_umask_and_workdir_follow_docker",
        place: Place::Inside,
        run: user_home_umask_and_workdir_follow_docker,
    },
    Test {
        name: "run_mounts_work_and_add_nothing_to_the_layer",
        place: Place::Inside,
        run: run_mounts_work_and_add_nothing_to_the_layer,
    },
    Test {
        name: "cancel_kills_a_running_step",
        place: Place::Inside,
        run: cancel_kills_a_running_step,
    },
    Test {
        name: "two_hundred_lower_layers_mount",
        place: Place::Inside,
        run: two_hundred_lower_layers_mount,
    },
    Test {
        name: "state_root_on_overlayfs_is_detected",
        place: Place::Inside,
        run: state_root_on_overlayfs_is_detected,
    },
    Test {
        name: "concurrent_builds_commit_the_same_chain_id",
        place: Place::Inside,
        run: concurrent_builds_commit_the_same_chain_id,
    },
];

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "long-step",
        run: scenario_long_step,
    },
    Scenario {
        name: "single-id",
        run: scenario_single_id,
    },
    Scenario {
        name: "signalled-step",
        run: scenario_signalled_step,
    },
    Scenario {
        name: "identity",
        run: scenario_identity,
    },
];

fn overlay_fixture() -> Result<Fixture, Skip> {
    let fixture = Fixture::new(DriverChoice::Auto);
    if fixture.snap.driver() != umstage_snapshot::DriverKind::Overlay {
        return Err(Skip(format!(
            "overlayfs in a user namespace is unavailable: {}",
            fixture.snap.selection_reason()
        )));
    }
    Ok(fixture)
}

fn subordinate_map_covers_the_callers_ranges() -> TestResult {
    let ns = userns::current().expect("inside");
    let map = std::fs::read_to_string("/proc/self/uid_map").expect("uid_map");
    match ns.mode() {
        userns::Mode::Subordinate => {
            assert!(ns.warning().is_none());
            assert!(ns.uid_map().len() >= 2, "{:?}", ns.uid_map());
            assert_eq!(ns.uid_map()[0].outside, ns.uid_map()[0].outside);
            assert!(map.lines().count() >= 2, "uid_map: {map}");
            assert_eq!(nix::unistd::getuid().as_raw(), 0);
            Ok(())
        }
        other => Err(Skip(format!(
            "no subordinate ranges for this user ({other:?}: {})",
            ns.warning().unwrap_or("")
        ))),
    }
}

fn output_is_streamed_by_line_with_exit_status() -> TestResult {
    let f = Fixture::new(DriverChoice::Auto);
    f.snap.prepare("s", Some("base")).expect("prepare");
    let ran = f.sh(
        "s",
        "echo one; echo two >&2; echo three; printf partial; exit 3",
    );
    assert_eq!(ran.status, ExitStatus::Code(3));
    assert_eq!(ran.stdout, ["one", "three", "partial"]);
    assert_eq!(ran.stderr, ["two"]);
    assert_eq!(f.sh("s", "exit 0").status, ExitStatus::Code(0));
    Ok(())
}

const CHANGE_SCRIPT: &str = "set -e; echo new > /data/new; echo changed > /data/edit; rm /data/gone; chown 1000:1000 /data/own; chmod 600 /data/mode; mkdir -p /data/dir/sub; touch /data/dir/sub/f";

fn expected_change_set() -> Vec<(String, umstage_oci::changes::ChangeKind)> {
    vec![
        up("data"),
        up("data/dir"),
        up("data/dir/sub"),
        up("data/dir/sub/f"),
        up("data/edit"),
        del("data/gone"),
        up("data/mode"),
        up("data/new"),
        up("data/own"),
    ]
}

fn overlay_change_set_is_exact() -> TestResult {
    let f = overlay_fixture()?;
    f.snap.prepare("s", Some("base")).expect("prepare");
    let ran = f.sh("s", CHANGE_SCRIPT);
    assert_eq!(ran.status, ExitStatus::Code(0), "{ran:?}");
    assert_eq!(f.changes("s"), expected_change_set());
    Ok(())
}

fn native_change_set_matches_overlay() -> TestResult {
    let f = Fixture::new(DriverChoice::Native);
    f.snap.prepare("s", Some("base")).expect("prepare");
    let ran = f.sh("s", CHANGE_SCRIPT);
    assert_eq!(ran.status, ExitStatus::Code(0), "{ran:?}");
    assert_eq!(f.changes("s"), expected_change_set());
    Ok(())
}

fn whiteouts_and_opaque_dirs_round_trip() -> TestResult {
    let f = overlay_fixture()?;
    f.snap.prepare("s", Some("base")).expect("prepare");
    let ran = f.sh(
        "s",
        "set -e; rm -rf /data/old; mkdir /data/old; echo n > /data/old/n; rm /etc/motd",
    );
    assert_eq!(ran.status, ExitStatus::Code(0), "{ran:?}");
    assert_eq!(
        f.changes("s"),
        vec![
            up("data"),
            opaque("data/old"),
            up("data/old"),
            up("data/old/n"),
            up("etc"),
            del("etc/motd"),
        ]
    );
    f.snap.commit("layer1", "s").expect("commit");
    f.snap
        .prepare("s2", Some("layer1"))
        .expect("prepare on layer1");
    let ran = f.sh(
        "s2",
        "ls /data/old; test -e /etc/motd && echo motd-still-there; cat /data/keep/a",
    );
    assert_eq!(ran.stdout, ["n", "a"], "{ran:?}");
    Ok(())
}

fn trivial_step_leaves_an_empty_change_set() -> TestResult {
    for choice in [DriverChoice::Auto, DriverChoice::Native] {
        let f = Fixture::new(choice);
        f.snap.prepare("s", Some("base")).expect("prepare");
        let ran = f.sh("s", "cat /etc/hosts /etc/hostname >/dev/null; ls /proc/self/fd /dev/null /sys/kernel >/dev/null");
        assert_eq!(ran.status, ExitStatus::Code(0), "{ran:?}");
        assert_eq!(f.changes("s"), vec![], "driver {}", f.snap.driver());
    }
    Ok(())
}

fn background_process_is_killed_with_the_step() -> TestResult {
    let f = Fixture::new(DriverChoice::Auto);
    f.snap.prepare("s", Some("base")).expect("prepare");
    let marker = format!("{}", 700_000 + std::process::id() % 100_000);
    let started = Instant::now();
    let ran = f.sh("s", &format!("sleep {marker} & echo started"));
    assert_eq!(ran.stdout, ["started"]);
    assert_eq!(ran.status, ExitStatus::Code(0));
    assert!(started.elapsed() < Duration::from_secs(60));
    let left = common::processes_with(&format!("sleep {marker}"));
    assert!(left.is_empty(), "left behind: {left:?}");
    Ok(())
}

fn network_none_sees_only_lo() -> TestResult {
    let f = Fixture::new(DriverChoice::Auto);
    f.snap.prepare("s", Some("base")).expect("prepare");
    let step = RunStep {
        args: fixture::sh_args(
            "cat /proc/net/dev | sed 1,2d | sed 's/:.*//;s/ //g'; ip link show lo",
        ),
        network: Network::None,
        ..RunStep::default()
    };
    let ran = f.run("s", &step);
    assert_eq!(ran.status, ExitStatus::Code(0), "{ran:?}");
    assert_eq!(ran.stdout[0], "lo", "{ran:?}");
    assert!(
        ran.stdout[1..].iter().all(|l| !l
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
            || l.contains("lo")),
        "{ran:?}"
    );
    assert!(
        ran.stdout.iter().any(|l| l.contains("UP")),
        "lo not up: {ran:?}"
    );
    let host = f.sh("s", "sed 1,2d /proc/net/dev | wc -l");
    assert!(host.stdout[0].trim().parse::<u32>().expect("count") >= 1);
    Ok(())
}

fn user_home_umask_and_workdir_follow_docker() -> TestResult {
    let f = Fixture::new(DriverChoice::Auto);
    f.snap.prepare("s", Some("base")).expect("prepare");
    let step = RunStep {
        args: fixture::sh_args("id -u; id -g; id -G; echo $HOME; umask; pwd; hostname"),
        user: "app".into(),
        cwd: "/work/dir".into(),
        hostname: "buildhost".into(),
        ..RunStep::default()
    };
    let ran = f.run("s", &step);
    assert_eq!(ran.status, ExitStatus::Code(0), "{ran:?}");
    assert_eq!(
        ran.stdout,
        [
            "1000",
            "1000",
            "1000 10 29",
            "/home/app",
            "0022",
            "/work/dir",
            "buildhost"
        ]
    );
    let root = f.sh("s", "id -u; echo $HOME; id -G");
    assert_eq!(root.stdout, ["0", "/root", "0 10"]);
    let missing = umstage_snapshot::sandbox::run_step(
        &f.snap,
        "s",
        &RunStep {
            args: vec!["true".into()],
            user: "nobody".into(),
            ..RunStep::default()
        },
        &f.cancel,
        &mut |_| {},
    );
    let message = missing.expect_err("unknown user").to_string();
    assert!(message.contains("unable to find user nobody"), "{message}");
    let changes = f.changes("s");
    assert_eq!(changes, vec![up("work"), up("work/dir")]);
    Ok(())
}

fn sigkill_mid_step_leaves_no_process_or_mount() -> TestResult {
    let state = common::shared_dir();
    let marker = format!("{}", 600_000 + std::process::id() % 100_000);
    let mut child =
        common::spawn_scenario("long-step", &[&state.path().display().to_string(), &marker]);
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(first, "ready", "scenario did not start its step");
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::processes_with(&format!("sleep {marker}")).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the step's processes are not running"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = common::processes_with(&marker);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind after SIGKILL: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let state_path = state.path().display().to_string();
    assert!(
        !mountinfo.contains(&state_path),
        "mount left on the host: {mountinfo}"
    );
    // The next snapshotter on the same root collects the killed build's active snapshot.
    let (code, out, err) = common::run_scenario("long-step", &[&state_path, "collect"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "collected", "{out}{err}");
    Ok(())
}

fn scenario_long_step(args: &[String]) -> i32 {
    let state = std::path::PathBuf::from(&args[0]);
    let marker = &args[1];
    let _ns = userns::enter(&userns::Options::default()).expect("enter");
    let snap =
        umstage_snapshot::Snapshotter::open(&state.join("root"), DriverChoice::Auto).expect("open");
    if marker == "collect" {
        let gone = matches!(
            snap.stat("active"),
            Err(umstage_snapshot::snapshot::SnapshotError::NotFound(_))
        );
        println!("{}", if gone { "collected" } else { "still there" });
        return 0;
    }
    fixture::commit_base(&snap, &state.join("base"));
    snap.prepare("active", Some("base")).expect("prepare");
    let cancel = umstage_snapshot::Cancel::new().expect("cancel");
    let step = RunStep {
        args: fixture::sh_args(format!("echo ready; sleep {marker} & exec sleep {marker}")),
        env: vec![format!("MARKER={marker}")],
        ..RunStep::default()
    };
    let result =
        umstage_snapshot::sandbox::run_step(&snap, "active", &step, &cancel, &mut |event| {
            let umstage_snapshot::sandbox::StepEvent::Output { line, .. } = event;
            println!("{}", String::from_utf8_lossy(&line));
        });
    println!("step ended: {result:?}");
    1
}

fn single_id_mode_works_and_warns() -> TestResult {
    let (code, out, err) = common::run_scenario("single-id", &[]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains("warning: running with a single-id map"),
        "{out}"
    );
    assert!(out.contains("uid_map: 0 "), "{out}");
    assert!(out.contains("step uid: 0"), "{out}");
    // The one-id tier records the owner instead of failing, and stat shows it.
    assert!(out.contains("owner: 1000"), "{out}");
    Ok(())
}

fn scenario_single_id(_: &[String]) -> i32 {
    let ns = match userns::enter(&userns::Options {
        tier: umstage_snapshot::doctor::TierChoice::Exactly(
            umstage_snapshot::doctor::Tier::UsernsSingle,
        ),
    }) {
        Ok(ns) => ns,
        Err(e) => {
            println!("enter failed: {e}");
            return 1;
        }
    };
    println!("warning: {}", ns.warning().unwrap_or("none"));
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    println!(
        "uid_map: {}",
        map.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    if ns.mode() != userns::Mode::SingleId || map.lines().count() != 1 {
        return 1;
    }
    let f = Fixture::new(DriverChoice::Auto);
    f.snap.prepare("s", Some("base")).expect("prepare");
    let ran = f.sh(
        "s",
        "echo step uid: $(id -u); chown 1000 /data/own && echo owner: $(stat -c %u /data/own)",
    );
    for line in &ran.stdout {
        println!("{line}");
    }
    i32::from(ran.status != ExitStatus::Code(0))
}

fn root_gets_an_identity_map() -> TestResult {
    let (code, out, err) = common::run_scenario("identity", &[]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert_eq!(out.lines().next(), Some("0 0 4294967295"), "{out}");
    assert!(out.contains("step ran as 0"), "{out}");
    Ok(())
}

fn scenario_identity(_: &[String]) -> i32 {
    let ns = userns::enter(&userns::Options::default()).expect("enter as root");
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    println!("{}", map.split_whitespace().collect::<Vec<_>>().join(" "));
    if ns.mode() != userns::Mode::Root {
        return 1;
    }
    let f = Fixture::new(DriverChoice::Auto);
    f.snap.prepare("s", Some("base")).expect("prepare");
    let ran = f.sh("s", "echo step ran as $(id -u)");
    for line in &ran.stdout {
        println!("{line}");
    }
    i32::from(ran.status != ExitStatus::Code(0))
}

fn run_mounts_work_and_add_nothing_to_the_layer() -> TestResult {
    use umstage_snapshot::sandbox::{
        BindMount, BindSource, CacheMount, InRoot, SecretMount, StepMount, TmpfsMount,
    };
    for choice in [DriverChoice::Auto, DriverChoice::Native] {
        let f = Fixture::new(choice);
        let src = f.scratch("bind-src");
        std::fs::write(src.join("a"), "from the context\n").expect("write");
        let secret = f.scratch("secrets").join("token");
        std::fs::write(&secret, "s3cret").expect("write secret");
        let mounts = vec![
            StepMount::Cache(CacheMount::new("cache-one", "/cache")),
            StepMount::Bind(BindMount {
                source: BindSource::Host(src.clone()),
                target: "/src".into(),
                read_write: false,
            }),
            StepMount::Bind(BindMount {
                source: BindSource::InRoot(InRoot {
                    root: src.clone(),
                    path: "/".into(),
                }),
                target: "/rw".into(),
                read_write: true,
            }),
            StepMount::Tmpfs(TmpfsMount {
                target: "/scratch/tmp".into(),
                size: Some(1 << 20),
            }),
            StepMount::Secret(SecretMount::new("token", Some(secret.clone()))),
            StepMount::Secret(SecretMount {
                env: Some("TOKEN".into()),
                ..SecretMount::new("token-env", Some(secret.clone()))
            }),
        ];
        let script = "set -e; echo cached > /cache/f; cat /src/a; (touch /src/x 2>/dev/null && echo writable) || echo read-only; \
            echo new > /rw/new; cat /rw/new; echo t > /scratch/tmp/t; cat /run/secrets/token; echo; stat -c %a /run/secrets/token; echo $TOKEN";
        f.snap.prepare("s", Some("base")).expect("prepare");
        let step = RunStep {
            args: fixture::sh_args(script),
            mounts: mounts.clone(),
            ..RunStep::default()
        };
        let ran = f.run("s", &step);
        assert_eq!(ran.status, ExitStatus::Code(0), "{ran:?}");
        assert_eq!(
            ran.stdout,
            [
                "from the context",
                "read-only",
                "new",
                "s3cret",
                "400",
                "s3cret"
            ],
            "driver {}",
            f.snap.driver()
        );
        assert_eq!(
            f.changes("s"),
            vec![],
            "driver {}: mounts leaked into the layer",
            f.snap.driver()
        );
        assert!(
            !src.join("new").exists(),
            "a rw bind wrote through to its source"
        );
        f.snap.prepare("s2", Some("base")).expect("prepare");
        let step = RunStep {
            args: vec!["cat".into(), "/cache/f".into()],
            mounts,
            ..RunStep::default()
        };
        assert_eq!(
            f.run("s2", &step).stdout,
            ["cached"],
            "the cache did not persist"
        );
        let required = RunStep {
            args: vec!["true".into()],
            mounts: vec![StepMount::Secret(SecretMount {
                required: true,
                ..SecretMount::new("absent", None)
            })],
            ..RunStep::default()
        };
        let error =
            umstage_snapshot::sandbox::run_step(&f.snap, "s2", &required, &f.cancel, &mut |_| {});
        assert!(
            error
                .expect_err("required secret")
                .to_string()
                .contains("secret absent is required")
        );
    }
    Ok(())
}

fn cancel_kills_a_running_step() -> TestResult {
    let f = Fixture::new(DriverChoice::Auto);
    f.snap.prepare("s", Some("base")).expect("prepare");
    let step = RunStep {
        args: fixture::sh_args("echo ready; sleep 555444"),
        ..RunStep::default()
    };
    let started = Instant::now();
    let result = umstage_snapshot::sandbox::run_step(&f.snap, "s", &step, &f.cancel, &mut |_| {
        f.cancel.cancel()
    });
    assert!(
        matches!(
            result,
            Err(umstage_snapshot::sandbox::SandboxError::Cancelled)
        ),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(common::processes_with("sleep 555444").is_empty());
    Ok(())
}

fn two_hundred_lower_layers_mount() -> TestResult {
    let f = overlay_fixture()?;
    let mut parent = "base".to_string();
    for index in 0..200 {
        let key = format!("unpack-{index}");
        f.snap.prepare(&key, Some(&parent)).expect("prepare");
        let (umstage_snapshot::LayerTarget::Diff(dir) | umstage_snapshot::LayerTarget::Apply(dir)) =
            f.snap.layer_target(&key).expect("target");
        std::fs::create_dir_all(dir.join("layers")).expect("mkdir");
        std::fs::write(dir.join("layers").join(index.to_string()), "x").expect("write");
        let name = format!("sha256:layer-{index}");
        f.snap.commit(&name, &key).expect("commit");
        parent = name;
    }
    f.snap.prepare("top", Some(&parent)).expect("prepare top");
    let ran = f.sh("top", "ls /layers | wc -l; cat /data/keep/a");
    assert_eq!(
        ran.stdout.iter().map(|l| l.trim()).collect::<Vec<_>>(),
        ["200", "a"],
        "{ran:?}"
    );
    Ok(())
}

fn state_root_on_overlayfs_is_detected() -> TestResult {
    let dir = tempfile::tempdir().expect("tempdir");
    for sub in ["lower", "upper", "work", "merged"] {
        std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
    }
    let options = format!(
        "userxattr,lowerdir={},upperdir={},workdir={}",
        dir.path().join("lower").display(),
        dir.path().join("upper").display(),
        dir.path().join("work").display()
    );
    let merged = dir.path().join("merged");
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(options.as_str()),
    )
    .expect("mount an overlay to stand for a container's root");
    let state = merged.join("state");
    let error = umstage_snapshot::Snapshotter::open(&state, DriverChoice::Overlay)
        .expect_err("overlay on overlay");
    assert!(error.to_string().contains("is on overlayfs"), "{error}");
    let auto = umstage_snapshot::Snapshotter::open(&state, DriverChoice::Auto).expect("auto");
    assert_eq!(auto.driver(), umstage_snapshot::DriverKind::Native);
    assert!(
        auto.selection_reason().contains("overlayfs"),
        "{}",
        auto.selection_reason()
    );
    drop(auto);
    nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH).expect("umount");
    Ok(())
}

fn concurrent_builds_commit_the_same_chain_id() -> TestResult {
    let f = Fixture::new(DriverChoice::Auto);
    let outcomes: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|worker| {
                let root = f.dir.path().to_path_buf();
                scope.spawn(move || {
                    let snap = umstage_snapshot::Snapshotter::open(&root, DriverChoice::Auto)
                        .expect("open");
                    let key = format!("build-{worker}");
                    snap.prepare(&key, Some("base")).expect("prepare");
                    let ran = Fixture::run_with(&snap, &key, "echo same > /same");
                    assert_eq!(ran, ExitStatus::Code(0));
                    snap.commit("sha256:shared", &key).expect("commit")
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker"))
            .collect()
    });
    let committed = outcomes
        .iter()
        .filter(|o| **o == umstage_snapshot::CommitOutcome::Committed)
        .count();
    assert_eq!(committed, 1, "{outcomes:?}");
    f.snap
        .prepare("after", Some("sha256:shared"))
        .expect("prepare on the shared snapshot");
    assert_eq!(f.sh("after", "cat /same").stdout, ["same"]);
    Ok(())
}

fn sigterm_cancels_the_step_and_propagates_the_exit_status() -> TestResult {
    let state = common::shared_dir();
    let marker = format!("{}", 500_000 + std::process::id() % 100_000);
    let mut child = common::spawn_scenario(
        "signalled-step",
        &[&state.path().display().to_string(), &marker],
    );
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("ready"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("wait");
    assert_eq!(rest, ["cancelled"], "the step was not cancelled");
    assert_eq!(
        status.code(),
        Some(42),
        "the child's exit status was not propagated"
    );
    assert!(common::processes_with(&format!("sleep {marker}")).is_empty());
    Ok(())
}

fn scenario_signalled_step(args: &[String]) -> i32 {
    let state = std::path::PathBuf::from(&args[0]);
    let marker = &args[1];
    let _ns = userns::enter(&userns::Options::default()).expect("enter");
    let cancel: &'static umstage_snapshot::Cancel =
        Box::leak(Box::new(umstage_snapshot::Cancel::new().expect("cancel")));
    cancel
        .cancel_on_termination_signals()
        .expect("signal handlers");
    let snap =
        umstage_snapshot::Snapshotter::open(&state.join("root"), DriverChoice::Auto).expect("open");
    fixture::commit_base(&snap, &state.join("base"));
    snap.prepare("active", Some("base")).expect("prepare");
    let step = RunStep {
        args: fixture::sh_args(format!("echo ready; exec sleep {marker}")),
        ..RunStep::default()
    };
    let result =
        umstage_snapshot::sandbox::run_step(&snap, "active", &step, cancel, &mut |event| {
            let umstage_snapshot::sandbox::StepEvent::Output { line, .. } = event;
            println!("{}", String::from_utf8_lossy(&line));
        });
    match result {
        Err(umstage_snapshot::sandbox::SandboxError::Cancelled) => {
            println!("cancelled");
            42
        }
        other => {
            println!("{other:?}");
            1
        }
    }
}
