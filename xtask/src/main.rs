//! Project chores: `cargo xtask <task>`.

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => run_tests(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask test [ARGS…]");
            ExitCode::from(2)
        }
    }
}

/// Runs the whole test suite.
fn run_tests(extra: &[String]) -> ExitCode {
    let status = Command::new(env!("CARGO"))
        .args(["test", "--workspace"])
        .args(extra)
        .status();
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask: cannot run cargo: {e}");
            ExitCode::FAILURE
        }
    }
}
