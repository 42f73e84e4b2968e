//! A small harness for tests that need a real user namespace: it runs as an unprivileged
//! user (re-running itself as `umstage-test` through `setpriv` when started as root), runs
//! "outside" tests and scenarios in the host namespaces, then enters the user namespace and
//! runs the "inside" tests there.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use umstage_snapshot::userns;
use umstage_testutil::user::{SharedDir, TestUser};

/// Why a test did not run: printed loudly, and a failure unless `UMSTAGE_TEST_ALLOW_SKIP=1`.
#[derive(Debug)]
pub struct Skip(pub String);

/// What a test returns: `Err(Skip)` when the machine lacks what it needs; panics are failures.
pub type TestResult = Result<(), Skip>;

/// Where a test runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Inside the user namespace, as its root.
    Inside,
    /// In the host namespaces as the unprivileged user (typically spawning scenarios).
    Outside,
    /// In the host namespaces as real root (skipped when not started as root).
    AsRoot,
}

/// One test.
pub struct Test {
    pub name: &'static str,
    pub place: Place,
    pub run: fn() -> TestResult,
}

/// A scenario: a function run in a fresh copy of this binary (`--scenario NAME ARGS…`), returning its exit code.
pub struct Scenario {
    pub name: &'static str,
    pub run: fn(&[String]) -> i32,
}

const OUTER_RESULTS_ENV: &str = "UMSTAGE_TEST_OUTER_RESULTS";
const RELAUNCHED_ENV: &str = "UMSTAGE_TEST_RELAUNCHED";
const ALLOW_SKIP_ENV: &str = "UMSTAGE_TEST_ALLOW_SKIP";

#[derive(Default, Clone, Copy)]
struct Totals {
    passed: usize,
    failed: usize,
    skipped: usize,
}

impl Totals {
    fn encode(&self) -> String {
        format!("{},{},{}", self.passed, self.failed, self.skipped)
    }
    fn decode(text: &str) -> Self {
        let mut parts = text.split(',').map(|p| p.parse::<usize>().unwrap_or(0));
        Totals {
            passed: parts.next().unwrap_or(0),
            failed: parts.next().unwrap_or(0),
            skipped: parts.next().unwrap_or(0),
        }
    }
    fn add(&mut self, other: Totals) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
    }
}

/// Runs the test binary: call after `umstage_snapshot::dispatch()`.
pub fn main(tests: &[Test], scenarios: &[Scenario]) -> ExitCode {
    let started = Instant::now();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--scenario") {
        let name = args.get(2).cloned().unwrap_or_default();
        let Some(scenario) = scenarios.iter().find(|s| s.name == name) else {
            eprintln!("no scenario {name:?}");
            return ExitCode::from(2);
        };
        let code = (scenario.run)(&args[3..]);
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    // The libtest protocol cargo-nextest speaks: `--list --format terse [--ignored]`, `--exact NAME`.
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            for test in tests {
                println!("{}: test", test.name);
            }
        }
        return ExitCode::SUCCESS;
    }
    let exact = args.iter().any(|a| a == "--exact");
    let mut filter = Vec::new();
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--format" | "--test-threads" | "--skip" | "--color" | "-Z" => {
                rest.next();
            }
            flag if flag.starts_with('-') => {}
            name => filter.push(name.to_string()),
        }
    }
    let selected = |test: &Test| {
        filter.is_empty()
            || filter.iter().any(|f| {
                if exact {
                    test.name == f.as_str()
                } else {
                    test.name.contains(f.as_str())
                }
            })
    };

    let mut totals = Totals::default();
    if userns::is_inside() {
        if let Ok(text) = std::env::var(OUTER_RESULTS_ENV) {
            totals.add(Totals::decode(&text));
        }
        for test in tests
            .iter()
            .filter(|t| t.place == Place::Inside && selected(t))
        {
            run_one(test, &mut totals);
        }
        return finish(totals, started);
    }

    let real_root = nix::unistd::geteuid().is_root();
    if real_root {
        for test in tests
            .iter()
            .filter(|t| t.place == Place::AsRoot && selected(t))
        {
            run_one(test, &mut totals);
        }
        return relaunch_as_test_user(&args, totals, started);
    }
    if std::env::var_os(RELAUNCHED_ENV).is_some()
        && let Ok(text) = std::env::var(OUTER_RESULTS_ENV)
    {
        totals.add(Totals::decode(&text));
    }
    for test in tests
        .iter()
        .filter(|t| t.place == Place::Outside && selected(t))
    {
        run_one(test, &mut totals);
    }
    // SAFETY: no other thread exists in this process (tests spawn processes, not threads).
    unsafe { std::env::set_var(OUTER_RESULTS_ENV, totals.encode()) };
    match userns::enter(&userns::Options::default()) {
        Ok(_) => unreachable_inside(),
        Err(e) => {
            println!("SKIPPED inside tests: cannot enter a user namespace: {e}");
            totals.skipped += tests.iter().filter(|t| t.place == Place::Inside).count();
            finish(totals, started)
        }
    }
}

fn unreachable_inside() -> ExitCode {
    // `enter` returns Ok only inside, where `main` took the other branch.
    eprintln!("entered the user namespace without re-executing");
    ExitCode::FAILURE
}

fn run_one(test: &Test, totals: &mut Totals) {
    let started = Instant::now();
    let outcome = std::panic::catch_unwind(test.run);
    let took = started.elapsed().as_millis();
    match outcome {
        Ok(Ok(())) => {
            println!("test {} ... ok ({took} ms)", test.name);
            totals.passed += 1;
        }
        Ok(Err(Skip(reason))) => {
            println!("test {} ... SKIPPED: {reason}", test.name);
            totals.skipped += 1;
        }
        Err(_) => {
            println!("test {} ... FAILED", test.name);
            totals.failed += 1;
        }
    }
}

fn finish(totals: Totals, started: Instant) -> ExitCode {
    let skips_allowed = std::env::var(ALLOW_SKIP_ENV).as_deref() == Ok("1");
    let ok = totals.failed == 0 && (totals.skipped == 0 || skips_allowed);
    if totals.skipped > 0 && !skips_allowed {
        println!(
            "{} test(s) could not run on this machine (see SKIPPED above); set UMSTAGE_TEST_ALLOW_SKIP=1 to accept that",
            totals.skipped
        );
    }
    println!(
        "\ntest result: {}. {} passed; {} failed; {} ignored; 0 measured; 0 filtered out; finished in {:.2}s\n",
        if ok { "ok" } else { "FAILED" },
        totals.passed,
        totals.failed,
        totals.skipped,
        started.elapsed().as_secs_f64()
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Copies this binary where the test user can run it and re-runs it as that user.
fn relaunch_as_test_user(args: &[String], totals: Totals, started: Instant) -> ExitCode {
    let user = match TestUser::get() {
        Ok(user) => user,
        Err(e) => {
            println!("SKIPPED unprivileged tests: {e}");
            let mut totals = totals;
            totals.skipped += 1;
            return finish(totals, started);
        }
    };
    let dir = SharedDir::new(&user).expect("shared dir for the test binary");
    let binary = dir
        .install_executable(Path::new("/proc/self/exe"))
        .expect("install the test binary");
    let mut command = user.command(&binary);
    command
        .args(&args[1..])
        .env(RELAUNCHED_ENV, "1")
        .env(OUTER_RESULTS_ENV, totals.encode());
    if let Some(allow) = std::env::var_os(ALLOW_SKIP_ENV) {
        command.env(ALLOW_SKIP_ENV, allow);
    }
    let status = command.status().expect("run the tests as the test user");
    if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A temporary directory of the (unprivileged) current user, removed even when it holds
/// files owned by subordinate ids.
pub fn shared_dir() -> SharedDir {
    let user = TestUser::get().expect("test user");
    SharedDir::new(&user).expect("shared dir")
}

/// Runs this binary's scenario `name` with `args`, returning the child.
pub fn spawn_scenario(name: &str, args: &[&str]) -> std::process::Child {
    Command::new("/proc/self/exe")
        .arg("--scenario")
        .arg(name)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn scenario")
}

/// Runs a scenario to its end: exit code, stdout, stderr.
pub fn run_scenario(name: &str, args: &[&str]) -> (i32, String, String) {
    let output = spawn_scenario(name, args)
        .wait_with_output()
        .expect("wait scenario");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Processes whose command line or environment contains `marker`.
pub fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) || name == std::process::id().to_string() {
            continue;
        }
        for file in ["cmdline", "environ"] {
            let path: PathBuf = Path::new("/proc").join(&name).join(file);
            if let Ok(bytes) = std::fs::read(&path)
                && String::from_utf8_lossy(&bytes)
                    .replace('\0', " ")
                    .contains(marker)
            {
                let cmdline = std::fs::read(Path::new("/proc").join(&name).join("cmdline"))
                    .unwrap_or_default();
                found.push(format!(
                    "{name}: {}",
                    String::from_utf8_lossy(&cmdline).replace('\0', " ")
                ));
                break;
            }
        }
    }
    found
}
