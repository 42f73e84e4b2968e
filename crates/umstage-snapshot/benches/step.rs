//! Per-step overhead of a `RUN true` step: prepare on the previous step's snapshot, run in the
//! sandbox, diff, commit the (empty) change; each step on top of the last, as a Dockerfile of
//! `RUN true` lines with the cache off. Runs as an unprivileged user in a real user namespace
//! (relaunched as umstage-test when started as root).
#![allow(missing_docs)]

#[path = "../tests/fixture/mod.rs"]
mod fixture;

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::Criterion;
use umstage_snapshot::sandbox::{ExitStatus, RunStep, run_step};
use umstage_snapshot::{DriverChoice, userns};
use umstage_testutil::user::{SharedDir, TestUser};

fn main() {
    umstage_snapshot::dispatch();
    let args: Vec<String> = std::env::args().collect();
    if nix::unistd::geteuid().is_root() && !userns::is_inside() {
        let user = TestUser::get().expect("test user");
        let dir = SharedDir::new(&user).expect("shared dir");
        let binary = dir
            .install_executable(Path::new("/proc/self/exe"))
            .expect("install bench binary");
        let status = user
            .command(&binary)
            .args(&args[1..])
            .status()
            .expect("run bench as the test user");
        std::process::exit(status.code().unwrap_or(1));
    }
    let ns = userns::enter(&userns::Options::default()).expect("enter the user namespace");
    for choice in [DriverChoice::Overlay, DriverChoice::Native] {
        let f = fixture::Fixture::new(choice);
        println!(
            "driver {} ({}), id map {:?}",
            f.snap.driver(),
            f.snap.selection_reason(),
            ns.mode()
        );
        let step = RunStep {
            args: vec!["true".into()],
            ..RunStep::default()
        };
        let mut parent = "base".to_string();
        let mut counter = 0u64;
        let mut one_step = |parent: &mut String| {
            counter += 1;
            let key = format!("active-{counter}");
            let name = format!("sha256:{counter:064x}");
            f.snap.prepare(&key, Some(parent)).expect("prepare");
            let status = run_step(&f.snap, &key, &step, &f.cancel, &mut |_| {}).expect("run");
            assert_eq!(status, ExitStatus::Code(0));
            let changes = f.snap.diff(&key).expect("diff");
            assert!(changes.changes.is_empty(), "{:?}", changes.changes);
            f.snap.commit(&name, &key).expect("commit");
            *parent = name;
        };
        // The measure: 20 RUN true steps in a row; CPU time too, which the
        // other load on a shared machine does not inflate.
        let cpu_before = cpu_time();
        let started = Instant::now();
        for _ in 0..20 {
            one_step(&mut parent);
        }
        let twenty = started.elapsed();
        let cpu = cpu_time() - cpu_before;
        println!(
            "20 x RUN true ({}): {:.1} ms total, {:.2} ms per step wall, {:.2} ms CPU per step (all processes)",
            f.snap.driver(),
            twenty.as_secs_f64() * 1e3,
            twenty.as_secs_f64() * 1e3 / 20.0,
            cpu.as_secs_f64() * 1e3 / 20.0
        );
        let mut criterion = Criterion::default()
            .output_directory(&std::env::temp_dir().join("umstage-criterion"))
            .configure_from_args()
            .sample_size(30)
            .measurement_time(Duration::from_secs(5));
        criterion.bench_function(&format!("run_true_step/{}", f.snap.driver()), |b| {
            b.iter_custom(|iterations| {
                let started = Instant::now();
                // Always on the base image, so the chain depth does not grow with the sample count.
                for _ in 0..iterations {
                    one_step(&mut "base".to_string());
                }
                started.elapsed()
            })
        });
        criterion.final_summary();
    }
}

/// User + system CPU time of this process and its waited-for children.
fn cpu_time() -> Duration {
    let mut total = Duration::ZERO;
    for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
        // SAFETY: rusage is plain data; getrusage fills it.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a valid `who` and a live rusage.
        unsafe { libc::getrusage(who, &mut usage) };
        for tv in [usage.ru_utime, usage.ru_stime] {
            total +=
                Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64);
        }
    }
    total
}
