//! `cargo xtask bench`: umstage side by side with BuildKit and Buildah on the
//! cases in `../shared/bench/cases`, written to `docs/benchmarks.md`.

mod builders;
mod measure;
mod relay;
mod report;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use umstage_testutil::registry::Registry;
use umstage_testutil::user::{SharedDir, TestUser};
use umstage_testutil::{is_root, shared_dir, workspace_root};

use crate::setup::{TEST_PACKAGES, ensure_test_user, install_packages, run as run_cmd};
use builders::{BuildKit, Buildah, Builder, Ci, CiOutput, Setup, Umstage, UmstageOptions};
use measure::{Measurement, timed};
use relay::Relay;

/// What the bench needs beyond the test suite's packages.
const BENCH_PACKAGES: &[&str] = &["buildah", "runc", "docker.io", "python3"];

/// The cases `--quick` runs.
const QUICK_CASES: &[&str] = &[
    "c-multistage",
    "unused-stage",
    "run-steps-1",
    "run-steps-20",
];

/// The builders, in report order.
pub const BUILDERS: [&str; 3] = ["umstage", "BuildKit", "Buildah"];

/// The `ci` mode's reference: downloading umstage's final image alone.
pub const REFERENCE: &str = "skopeo copy";

/// A timed build's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    /// Store emptied, base images pulled again.
    Cold,
    /// Nothing changed since the last build.
    Warm,
    /// After the case's one-file change.
    Incr,
    /// Store emptied, cache from the registry (exported there by an earlier
    /// build), image archive written.
    Ci,
    /// The same, the image pushed to that registry instead.
    CiPush,
}

impl Mode {
    /// Its name in the report.
    pub fn label(self) -> &'static str {
        match self {
            Mode::Cold => "cold",
            Mode::Warm => "warm",
            Mode::Incr => "incr",
            Mode::Ci => "ci",
            Mode::CiPush => "ci-push",
        }
    }
}

/// One benchmark case: a build context and the file its incremental run changes.
#[derive(Debug, Clone)]
pub struct Case {
    /// Directory name under `cases/`.
    pub name: String,
    /// The working copy of the context.
    pub context: PathBuf,
    /// `INCR_FILE` from `bench.conf`, relative to the context, if any.
    pub incr_file: Option<String>,
}

impl Case {
    /// The modes of the main table (the `ci` modes have their own).
    fn modes(&self) -> &'static [Mode] {
        if self.incr_file.is_some() {
            &[Mode::Cold, Mode::Warm, Mode::Incr]
        } else {
            &[Mode::Cold, Mode::Warm]
        }
    }
}

/// Options of `cargo xtask bench`.
#[derive(Debug)]
struct Options {
    quick: bool,
    runs: usize,
    cases: Vec<String>,
    builders: Vec<String>,
    output: PathBuf,
    /// Which modes run: `ci` stands for both `ci` and `ci-push`.
    modes: Vec<Mode>,
    /// `--sandbox` for umstage, passed through as given.
    sandbox: Option<String>,
    /// Run umstage as root (the `chroot` tier needs it).
    umstage_as_root: bool,
}

const ALL_MODES: [Mode; 5] = [Mode::Cold, Mode::Warm, Mode::Incr, Mode::Ci, Mode::CiPush];

fn parse_modes(list: &str) -> Result<Vec<Mode>> {
    let mut modes = Vec::new();
    for name in list.split(',').map(str::trim) {
        match name {
            "ci" => modes.extend([Mode::Ci, Mode::CiPush]),
            _ => modes.push(
                *ALL_MODES
                    .iter()
                    .find(|m| m.label() == name)
                    .with_context(|| format!("unknown mode `{name}` (cold, warm, incr, ci)"))?,
            ),
        }
    }
    Ok(modes)
}

fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options {
        quick: false,
        runs: 3,
        cases: Vec::new(),
        builders: BUILDERS.iter().map(|b| b.to_lowercase()).collect(),
        output: workspace_root().join("docs/benchmarks.md"),
        modes: ALL_MODES.to_vec(),
        sandbox: None,
        umstage_as_root: false,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().with_context(|| format!("{flag} needs a value"));
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--runs" => {
                let runs = value("--runs")?;
                options.runs = runs
                    .parse()
                    .with_context(|| format!("bad --runs `{runs}`"))?;
            }
            "--case" => options.cases.push(value("--case")?.clone()),
            "--builders" => {
                options.builders = value("--builders")?
                    .split(',')
                    .map(|b| b.trim().to_lowercase())
                    .collect();
            }
            "--output" => options.output = PathBuf::from(value("--output")?),
            "--modes" => options.modes = parse_modes(value("--modes")?)?,
            "--sandbox" => options.sandbox = Some(value("--sandbox")?.clone()),
            "--umstage-as-root" => options.umstage_as_root = true,
            other => bail!("unknown argument `{other}` (try `cargo xtask help`)"),
        }
    }
    if options.runs == 0 {
        bail!("--runs must be at least 1");
    }
    Ok(options)
}

/// Everything measured in one bench run.
#[derive(Debug, Default)]
pub struct Results {
    /// Runs per (case, mode, builder).
    pub runs: BTreeMap<(String, Mode, &'static str), Vec<Measurement>>,
    /// Why a builder produced nothing for a case (or at all, under case `*`).
    pub failures: BTreeMap<(String, &'static str), String>,
    /// Version line per builder.
    pub versions: BTreeMap<&'static str, String>,
    /// The cases, in the order run.
    pub cases: Vec<Case>,
    /// Runs per mode asked for.
    pub runs_asked: usize,
    /// Whether `--quick` chose the cases.
    pub quick: bool,
    /// The 1-minute load average when the bench started (other work on the machine skews times).
    pub load_at_start: String,
    /// Connections whose HTTP the counting relay could not follow (their bytes count as layers).
    pub lost_streams: u64,
}

pub fn run(args: &[String]) -> Result<()> {
    let options = parse(args)?;
    let load_at_start = report::load_average();
    if !is_root() {
        bail!("the bench starts a private dockerd and switches to the test user: run it as root");
    }
    let mut packages = TEST_PACKAGES.to_vec();
    packages.extend_from_slice(BENCH_PACKAGES);
    install_packages_without_starting_services(&packages)?;
    ensure_test_user()?;

    let cases_dir = shared_dir().join("bench/cases");
    let names = case_names(&cases_dir, &options)?;
    let needs_debian = names.iter().any(|n| {
        std::fs::read_to_string(cases_dir.join(n).join("Dockerfile"))
            .is_ok_and(|d| d.contains("debian-build"))
    });
    let images = crate::testimages::make(needs_debian)?;

    let user = TestUser::get()?;
    let work = SharedDir::new(&user)?;
    let registry = Registry::start().context("starting the local registry")?;
    for image in &images {
        image.push(&registry)?;
    }
    let relay = Relay::start(SocketAddr::from((Ipv4Addr::LOCALHOST, registry.port())))?;
    let cases = names
        .iter()
        .map(|name| copy_case(&cases_dir, name, &work, &user))
        .collect::<Result<Vec<_>>>()?;

    let setup = Setup {
        work: &work,
        user: &user,
        registry: registry.host(),
        ci_registry: relay.host(),
        images: &images,
    };
    let mut results = Results {
        cases: cases.clone(),
        runs_asked: options.runs,
        quick: options.quick,
        load_at_start,
        ..Results::default()
    };
    let mut builders: Vec<Box<dyn Builder>> = Vec::new();
    for name in BUILDERS {
        if !options.builders.contains(&name.to_lowercase()) {
            continue;
        }
        eprintln!("bench: preparing {name}");
        match start_builder(name, &setup, &options) {
            Ok(builder) => {
                results.versions.insert(name, builder.version());
                builders.push(builder);
            }
            Err(e) => {
                eprintln!("bench: {name} cannot run: {e:#}");
                results
                    .failures
                    .insert(("*".into(), name), format!("{e:#}"));
            }
        }
    }
    let logs = work.mkdir("logs")?;
    let bench = Bench {
        runs: options.runs,
        logs: &logs,
        modes: &options.modes,
        relay: &relay,
    };
    for case in &cases {
        bench_case(case, &mut builders, &bench, &mut results);
        results.lost_streams = relay.lost_streams();
        // Written after every case, so a run cut short still leaves what it measured; a
        // failure here (a full disk) does not stop the cases still to come.
        if let Err(e) = report::write(&options.output, &results) {
            eprintln!("bench: {e:#}");
        }
    }
    // Stop dockerd (and everything else) before writing.
    drop(builders);
    drop(relay);
    drop(registry);
    report::write(&options.output, &results)?;
    eprintln!("bench: wrote {}", options.output.display());
    Ok(())
}

fn start_builder(name: &str, setup: &Setup, options: &Options) -> Result<Box<dyn Builder>> {
    Ok(match name {
        "BuildKit" => Box::new(BuildKit::start(setup)?),
        "Buildah" => Box::new(Buildah::new(setup)?),
        _ => Box::new(Umstage::new(
            setup,
            UmstageOptions {
                exe: &build_umstage()?,
                sandbox: options.sandbox.clone(),
                as_root: options.umstage_as_root,
            },
        )?),
    })
}

/// Builds the release `umstage` binary and returns its path.
fn build_umstage() -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run_cmd(Command::new(cargo).args(["build", "--release", "--quiet", "--package", "umstage"]))
        .context("building umstage")?;
    Ok(workspace_root().join("target/release/umstage"))
}

fn case_names(cases_dir: &Path, options: &Options) -> Result<Vec<String>> {
    if !options.cases.is_empty() {
        return Ok(options.cases.clone());
    }
    if options.quick {
        return Ok(QUICK_CASES.iter().map(|c| (*c).to_owned()).collect());
    }
    let mut names: Vec<String> = std::fs::read_dir(cases_dir)
        .with_context(|| {
            format!(
                "reading {} (is ../shared beside the workspace?)",
                cases_dir.display()
            )
        })?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Dockerfile").is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

/// Copies a case's context where the test user can read it, writable for the
/// incremental change, and runs its data generator.
fn copy_case(cases_dir: &Path, name: &str, work: &SharedDir, user: &TestUser) -> Result<Case> {
    let source = cases_dir.join(name);
    let conf = std::fs::read_to_string(source.join("bench.conf"))
        .with_context(|| format!("reading {name}/bench.conf"))?;
    let incr_file = conf
        .lines()
        .find_map(|l| l.strip_prefix("INCR_FILE="))
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(str::to_owned);
    let context = work.mkdir("cases")?.join(name);
    run_cmd(Command::new("cp").arg("-r").arg(&source).arg(&context))?;
    run_cmd(Command::new("chmod").args(["-R", "u+w,a+rX"]).arg(&context))?;
    if context.join("prepare.sh").is_file() {
        eprintln!("bench: generating {name}'s data");
        run_cmd(
            Command::new("sh")
                .arg(context.join("prepare.sh"))
                .arg(&context),
        )?;
    }
    user.chown_tree(&context)?;
    Ok(Case {
        name: name.to_owned(),
        context,
        incr_file,
    })
}

/// What every round of every case shares.
struct Bench<'a> {
    runs: usize,
    logs: &'a Path,
    modes: &'a [Mode],
    relay: &'a Relay,
}

/// Runs every mode of `case` `runs` times per builder, builders alternated run by run.
fn bench_case(
    case: &Case,
    builders: &mut [Box<dyn Builder>],
    bench: &Bench,
    results: &mut Results,
) {
    for round in 0..bench.runs {
        for i in 0..builders.len() {
            let builder = &mut builders[(i + round) % builders.len()];
            let name = builder.name();
            if results.failures.contains_key(&(case.name.clone(), name)) {
                continue;
            }
            eprintln!("bench: {} round {} {name}", case.name, round + 1);
            if let Err(e) = bench_round(case, builder.as_mut(), round, bench, results) {
                eprintln!("bench: {} failed for {name}: {e:#}", case.name);
                results
                    .failures
                    .insert((case.name.clone(), name), format!("{e:#}"));
            }
        }
        let seeded = builders.iter().any(|b| b.name() == "umstage")
            && !results
                .failures
                .contains_key(&(case.name.clone(), "umstage"));
        if bench.modes.contains(&Mode::Ci)
            && seeded
            && let Err(e) = reference_round(case, round, bench, results)
        {
            eprintln!("bench: {} reference failed: {e:#}", case.name);
            results
                .failures
                .insert((case.name.clone(), REFERENCE), format!("{e:#}"));
        }
    }
}

/// Cold, warm, incremental and `ci` builds of `case` by one builder.
fn bench_round(
    case: &Case,
    builder: &mut dyn Builder,
    round: usize,
    bench: &Bench,
    results: &mut Results,
) -> Result<()> {
    let name = builder.name();
    let tag = format!("bench/{}:latest", case.name);
    let out = bench.logs.join(format!("{}-{}.tar", case.name, name));
    builder.reset()?;
    for &mode in case.modes().iter().filter(|m| bench.modes.contains(m)) {
        let change = match (mode, &case.incr_file) {
            (Mode::Incr, Some(file)) => Some(IncrChange::apply(&case.context.join(file))?),
            _ => None,
        };
        let log = log_path(bench, case, name, mode.label(), round);
        let measured = builder.build(&case.context, &tag, &out, &log);
        if let Some(change) = change {
            change.revert()?;
        }
        let measured = measured?;
        eprintln!("bench:   {} {:.2} s", mode.label(), measured.seconds);
        let _ = std::fs::remove_file(&out);
        results
            .runs
            .entry((case.name.clone(), mode, name))
            .or_default()
            .push(measured);
    }
    if !bench.modes.contains(&Mode::Ci) {
        return Ok(());
    }
    let ci = Ci {
        registry: bench.relay.host(),
        repo: format!("ci/{}-{}", case.name, name.to_lowercase()),
    };
    if round == 0 {
        builder.reset()?;
        let log = log_path(bench, case, name, "ci-seed", round);
        builder.ci_seed(&case.context, &ci, &log)?;
    }
    for (mode, output) in [
        (Mode::Ci, CiOutput::Archive(&out)),
        (Mode::CiPush, CiOutput::Push),
    ] {
        builder.reset()?;
        let log = log_path(bench, case, name, mode.label(), round);
        bench.relay.take();
        let mut measured = builder.ci_build(&case.context, &ci, output, &log)?;
        measured.traffic = Some(bench.relay.take());
        eprintln!("bench:   {} {:.2} s", mode.label(), measured.seconds);
        let _ = std::fs::remove_file(&out);
        results
            .runs
            .entry((case.name.clone(), mode, name))
            .or_default()
            .push(measured);
    }
    Ok(())
}

/// The floor of the `ci` archive run: `skopeo copy` of umstage's final image
/// (its seed push) from the registry to an OCI archive, through the relay.
fn reference_round(case: &Case, round: usize, bench: &Bench, results: &mut Results) -> Result<()> {
    let image = format!("{}/ci/{}-umstage:seed", bench.relay.host(), case.name);
    let out = bench.logs.join(format!("{}-reference.tar", case.name));
    let _ = std::fs::remove_file(&out);
    let log = log_path(bench, case, "reference", "ci", round);
    bench.relay.take();
    let mut measured = timed(
        Command::new("skopeo")
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{image}"))
            .arg(format!("oci-archive:{}", out.display())),
        &[],
        &log,
    )?;
    measured.traffic = Some(bench.relay.take());
    let _ = std::fs::remove_file(&out);
    results
        .runs
        .entry((case.name.clone(), Mode::Ci, REFERENCE))
        .or_default()
        .push(measured);
    Ok(())
}

fn log_path(bench: &Bench, case: &Case, builder: &str, what: &str, round: usize) -> PathBuf {
    bench
        .logs
        .join(format!("{}-{builder}-{what}-{round}.log", case.name))
}

/// The one-line change of an incremental run, undone afterwards.
struct IncrChange {
    path: PathBuf,
    original: Vec<u8>,
}

impl IncrChange {
    fn apply(path: &Path) -> Result<Self> {
        let original =
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let line: &[u8] = match path.extension().and_then(|e| e.to_str()) {
            Some("c" | "h") => b"/* incremental change */\n",
            _ => b"# incremental change\n",
        };
        let mut changed = original.clone();
        if !changed.ends_with(b"\n") && !changed.is_empty() {
            changed.push(b'\n');
        }
        changed.extend_from_slice(line);
        std::fs::write(path, changed).with_context(|| format!("changing {}", path.display()))?;
        Ok(IncrChange {
            path: path.to_owned(),
            original,
        })
    }

    fn revert(self) -> Result<()> {
        std::fs::write(&self.path, &self.original)
            .with_context(|| format!("restoring {}", self.path.display()))
    }
}

/// Installs `packages` with no service started by a package script: Debian's
/// docker.io would otherwise start a system dockerd that changes the host's
/// network (bridge, iptables).
fn install_packages_without_starting_services(packages: &[&str]) -> Result<()> {
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let placed = !policy.exists();
    if placed {
        std::fs::write(
            policy,
            "#!/bin/sh\n# cargo xtask bench: start no service while installing\nexit 101\n",
        )
        .context("writing /usr/sbin/policy-rc.d")?;
        run_cmd(Command::new("chmod").arg("755").arg(policy))?;
    }
    let installed = install_packages(packages);
    if placed {
        let _ = std::fs::remove_file(policy);
    }
    installed
}
