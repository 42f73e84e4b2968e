//! `--load`: hands the image archive to `docker load` or, when no Docker daemon answers,
//! `podman load`, saying which. It runs inside umstage's user namespace, where the caller's
//! uid is 0: docker's CLI only talks to its daemon's socket, which the kernel checks against
//! the real ids; rootless podman is told it already runs in its user namespace (ours maps ids
//! as podman's own would), so it uses the caller's storage and not root's.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::event::{Event, EventSink};

/// The tool that loads the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loader {
    /// `docker load`.
    Docker,
    /// `podman load`.
    Podman,
}

impl Loader {
    fn program(self) -> &'static str {
        match self {
            Loader::Docker => "docker",
            Loader::Podman => "podman",
        }
    }
}

/// Why the image was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Neither tool is usable.
    #[error(
        "--load: no Docker daemon answers `docker version` and podman is not installed: load {archive} yourself, or drop --load"
    )]
    NoLoader {
        /// The archive that was written.
        archive: String,
    },
    /// The tool could not be run.
    #[error("--load: running {program} load: {source}")]
    Spawn {
        /// `docker` or `podman`.
        program: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The tool refused the archive.
    #[error("--load: {program} load failed ({status}): {stderr}")]
    Failed {
        /// `docker` or `podman`.
        program: &'static str,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it said.
        stderr: String,
    },
}

/// Docker when its daemon answers, else podman when it is installed.
pub fn find(archive: &Path) -> Result<Loader, LoadError> {
    let answers = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if answers("docker", &["version", "--format", "{{.Server.Version}}"]) {
        Ok(Loader::Docker)
    } else if answers("podman", &["--version"]) {
        Ok(Loader::Podman)
    } else {
        Err(LoadError::NoLoader {
            archive: archive.display().to_string(),
        })
    }
}

/// Loads `archive` with `loader`, as a task of the build's progress; returns what the tool
/// printed (such as `Loaded image: name:tag`).
pub fn load(loader: Loader, archive: &Path, events: &dyn EventSink) -> Result<String, LoadError> {
    let program = loader.program();
    let id = crate::ids::unique_key("load");
    let started = Instant::now();
    events.emit(Event::TaskStarted {
        id: id.clone(),
        text: format!("loading the image into {program} ({program} load)"),
    });
    let mut command = Command::new(program);
    command
        .arg("load")
        .arg("-i")
        .arg(archive)
        .stdin(Stdio::null());
    if loader == Loader::Podman
        && let Some(ns) = umstage_snapshot::userns::current()
        && ns.mode() != umstage_snapshot::userns::Mode::Root
    {
        let outside = |map: &[umstage_snapshot::userns::IdRange]| {
            map.first()
                .map(|r| r.outside.to_string())
                .unwrap_or_default()
        };
        command
            .env("_CONTAINERS_USERNS_CONFIGURED", "1")
            .env("_CONTAINERS_ROOTLESS_UID", outside(ns.uid_map()))
            .env("_CONTAINERS_ROOTLESS_GID", outside(ns.gid_map()));
    }
    let out = command
        .output()
        .map_err(|source| LoadError::Spawn { program, source })?;
    if !out.status.success() {
        return Err(LoadError::Failed {
            program,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    events.emit(Event::TaskDone {
        id,
        elapsed: started.elapsed(),
    });
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
