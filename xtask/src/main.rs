//! Project chores: `cargo xtask <task>`.

mod bench;
mod man;
mod setup;
mod test;
mod testimages;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  test [--debian] [-- ARGS…]   the whole test suite (what .ci/run runs): as root,
                               installs missing packages and the test user first
  testimages [--debian] [--serve [--port N]]
                               make the offline base images under testdata/images/
                               (busybox; --debian adds debian-build:bookworm) and
                               optionally serve them from docker-registry on 127.0.0.1
  man [DIR]                    the man pages, from umstage's clap definitions, into
                               DIR (default target/man)
  bench [--quick] [--runs N] [--case NAME]… [--builders LIST] [--modes LIST]
        [--sandbox TIER] [--umstage-as-root] [--output FILE]
                               umstage against BuildKit and Buildah; writes docs/benchmarks.md
                               (modes: cold,warm,incr,ci; --sandbox is passed to umstage)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((task, rest)) => (task.as_str(), rest),
        None => ("help", &[][..]),
    };
    let result = match task {
        "test" => test::run(rest),
        "testimages" => testimages::run(rest),
        "bench" => bench::run(rest),
        "man" => man::run(rest),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!("xtask: unknown task `{other}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
