//! Test fixtures for umstage's integration and end-to-end tests.
//!
//! Everything here drives real, independent tools, never umstage's own crates,
//! so a test that checks umstage's output with these helpers cannot share a bug
//! with the code under test:
//!
//! - [`registry::Registry`]: Debian's `docker-registry` on 127.0.0.1 at a free
//!   port, optionally with htpasswd basic auth; stopped and removed on drop.
//! - [`user::TestUser`] and [`user::SharedDir`]: the unprivileged user the
//!   rootless tests run as, and temp dirs that user can use.
//! - [`images`]: the offline base images (`busybox`, `debian-build`) as OCI
//!   layouts under `testdata/images/`, made on demand and pushable to a
//!   fixture registry.
//! - [`archive`]: reading an image archive back with `skopeo`, `umoci` and
//!   plain `tar`.
//! - [`process::stop`]: stopping a daemon a test started, by its pid.
//!
//! Missing tools or users are errors that say how to fix them: a test never
//! passes because its fixture could not run.

pub mod archive;
pub mod images;
pub mod process;
pub mod registry;
pub mod user;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// What can go wrong while setting up or reading a fixture.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A program could not be started at all.
    #[error(
        "cannot run `{program}`: {source} (install it: `cargo xtask test` as root installs every tool the tests use)"
    )]
    Spawn {
        /// The program that was started.
        program: String,
        /// Why starting it failed.
        source: std::io::Error,
    },
    /// A program ran and failed.
    #[error("`{command}` failed ({status}):\n{stderr}")]
    Failed {
        /// The command line, for the reader.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr (and stdout, when stderr was empty).
        stderr: String,
    },
    /// A file or directory operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON document did not have the expected shape.
    #[error("{}: {message}", path.display())]
    BadJson {
        /// The file (or source) the document came from.
        path: PathBuf,
        /// What was wrong with it.
        message: String,
    },
    /// The environment cannot run the fixture; the message says how to fix it.
    #[error("{0}")]
    Setup(String),
}

/// Result of a fixture operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Root of the umstage workspace (the directory holding `Cargo.toml`, `crates/`, `testdata/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The team's shared data (`../shared` beside the workspace): conformance data and bench cases.
pub fn shared_dir() -> PathBuf {
    workspace_root().join("../shared")
}

/// Whether this process runs as (real) root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `cmd` to completion, capturing its output; a non-zero exit is an [`Error::Failed`].
pub fn run(cmd: &mut Command) -> Result<Output> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            program: cmd.get_program().to_string_lossy().into_owned(),
            source,
        })?;
    if output.status.success() {
        Ok(output)
    } else {
        let mut stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if stderr.trim().is_empty() {
            stderr = String::from_utf8_lossy(&output.stdout).into_owned();
        }
        Err(Error::Failed {
            command: command_line(cmd),
            status: output.status,
            stderr,
        })
    }
}

/// Runs `cmd` and returns its stdout as text.
pub fn run_stdout(cmd: &mut Command) -> Result<String> {
    let output = run(cmd)?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The command line of `cmd`, quoted loosely, for error messages.
pub fn command_line(cmd: &Command) -> String {
    let mut words: Vec<OsString> = vec![cmd.get_program().to_owned()];
    words.extend(cmd.get_args().map(OsString::from));
    words
        .iter()
        .map(|w| {
            let w = w.to_string_lossy();
            if w.is_empty() || w.contains(char::is_whitespace) {
                format!("'{w}'")
            } else {
                w.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads and parses a JSON file.
pub fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read(path).map_err(|source| Error::Io {
        action: "reading",
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|e| Error::BadJson {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Wraps an I/O result with the action and path, for [`Error::Io`].
pub(crate) fn io<T>(action: &'static str, path: &Path, result: std::io::Result<T>) -> Result<T> {
    result.map_err(|source| Error::Io {
        action,
        path: path.to_owned(),
        source,
    })
}
