//! A build request (everything the command line says) and what a build gives back.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use umstage_dockerfile::Platform;
use umstage_snapshot::DriverChoice;
use umstage_snapshot::sandbox::Network;

use umstage_snapshot::sandbox::Ulimit;

use crate::annotation::Annotation;
use crate::cache::spec::{CacheExport, CacheImport};
use crate::error::{Source, StepError};
use crate::options::{BuildContext, DockerfileSource, Output, Secret, SshAgent};
use crate::step_options::AddHost;

/// Everything one build needs to know.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The context directory.
    pub context: PathBuf,
    /// The Dockerfile.
    pub dockerfile: DockerfileSource,
    /// Image names (`-t`).
    pub tags: Vec<String>,
    /// Outputs; none means the build only fills the cache.
    pub outputs: Vec<Output>,
    /// Stage to build; the last one when `None`.
    pub target: Option<String>,
    /// `--build-arg` values, in order (a later one for the same name wins).
    pub build_args: Vec<(String, String)>,
    /// Named contexts.
    pub build_contexts: Vec<BuildContext>,
    /// Requested platform, `None` for this machine's.
    pub platform: Option<Platform>,
    /// Ignore the cache for every step.
    pub no_cache: bool,
    /// Ignore the cache for these stages (names compared case-insensitively).
    pub no_cache_filter: Vec<String>,
    /// Caches to read step results from (`--cache-from`), after the state root's.
    pub cache_from: Vec<CacheImport>,
    /// Caches to write the build's step results to (`--cache-to`).
    pub cache_to: Vec<CacheExport>,
    /// Network for RUN steps.
    pub network: Network,
    /// Secrets for `RUN --mount=type=secret`.
    pub secrets: Vec<Secret>,
    /// ssh-agent sockets for `RUN --mount=type=ssh` (`--ssh`), resolved.
    pub ssh: Vec<SshAgent>,
    /// Entitlements granted with `--allow`.
    pub allow: Vec<Entitlement>,
    /// Labels added to the image (`--label`).
    pub labels: Vec<(String, String)>,
    /// The state root.
    pub state_root: PathBuf,
    /// The snapshotter wanted.
    pub snapshotter: DriverChoice,
    /// Registries reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Stages built at the same time, at most.
    pub jobs: usize,
    /// `SOURCE_DATE_EPOCH`: fixed timestamps for a reproducible image.
    pub source_date_epoch: Option<i64>,
    /// Extra lines of every RUN step's `/etc/hosts` (`--add-host`).
    pub add_hosts: Vec<AddHost>,
    /// Size of every RUN step's `/dev/shm` in bytes (`--shm-size`).
    pub shm_size: u64,
    /// Resource limits of every RUN step (`--ulimit`).
    pub ulimits: Vec<Ulimit>,
    /// Annotations on the manifest or the index (`--annotation`).
    pub annotations: Vec<Annotation>,
}

/// A privilege a Dockerfile may only use when the command line grants it (`--allow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entitlement {
    /// `security.insecure`: `RUN --security=insecure` runs with every capability.
    SecurityInsecure,
    /// `network.host`: `RUN --network=host`.
    NetworkHost,
}

impl std::str::FromStr for Entitlement {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "security.insecure" => Ok(Entitlement::SecurityInsecure),
            "network.host" => Ok(Entitlement::NetworkHost),
            other => Err(format!(
                "unknown entitlement {other:?}: use security.insecure or network.host"
            )),
        }
    }
}

/// What a finished build made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BuildResult {
    /// The image config digest (the image id); `None` when no image was exported.
    pub config_digest: Option<String>,
    /// The manifest's digest, media type and size, when an image was exported.
    pub manifest: Option<Descriptor>,
    /// Names the image was given.
    pub names: Vec<String>,
}

/// A content descriptor as in the OCI image spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Descriptor {
    /// The media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// `sha256:…`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
}

/// Why a build did not finish.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile is wrong where it says (file, line and column); nothing ran.
    #[error(transparent)]
    Dockerfile(#[from] umstage_dockerfile::Error),
    /// An instruction cannot be carried out as written; nothing of it ran.
    #[error("{file}:{line}: {source}")]
    Instruction {
        /// The Dockerfile's name, as the user gave it.
        file: String,
        /// 1-based line of the instruction.
        line: usize,
        /// Why.
        #[source]
        source: StepError,
    },
    /// An input (the Dockerfile, its `.dockerignore`, a name to push to) cannot be read or
    /// used; nothing ran. `what` names it.
    #[error("{what}: {source}")]
    Input {
        /// The input, as the user knows it, such as `-t NAME` or `.dockerignore`.
        what: String,
        /// Why.
        #[source]
        source: Source,
    },
    /// The request or the Dockerfile is wrong; nothing ran. The message says what to change.
    #[error("{0}")]
    Invalid(String),
    /// A step failed.
    #[error("{0}")]
    StepFailed(#[source] Box<StepFailure>),
    /// Anything else that stopped the build (I/O, registry, sandbox), as its own error.
    #[error(transparent)]
    Other(Source),
}

impl BuildError {
    /// `source`, met reading or using the input `what`.
    pub fn input(what: impl Into<String>, source: impl Into<Source>) -> Self {
        BuildError::Input {
            what: what.into(),
            source: source.into(),
        }
    }

    /// The process exit code for this error: 2 for bad usage or a bad Dockerfile, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            BuildError::Dockerfile(_)
            | BuildError::Instruction { .. }
            | BuildError::Input { .. }
            | BuildError::Invalid(_) => 2,
            BuildError::StepFailed(_) | BuildError::Other(_) => 1,
        }
    }
}

/// A failed step, described for the user: where it is and what it printed last.
#[derive(Debug, Clone)]
pub struct StepFailure {
    /// The stage's name (or index).
    pub stage: String,
    /// The Dockerfile's name, as the user gave it.
    pub file: String,
    /// 1-based line of the instruction.
    pub line: usize,
    /// 1-based last line of the instruction (after its continuation lines and heredocs).
    pub end_line: usize,
    /// The instruction as written.
    pub instruction: String,
    /// The process exit code, for RUN steps that ran (`reason` says it too).
    pub exit_code: Option<i32>,
    /// What went wrong, one line.
    pub reason: String,
    /// The last lines the step printed.
    pub output_tail: Vec<String>,
    /// Why, as the error of the operation (`reason` is its message).
    pub cause: Option<Arc<StepError>>,
}

impl std::error::Error for StepFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl std::fmt::Display for StepFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stage {}, {}:{}: {}: {}",
            self.stage, self.file, self.line, self.instruction, self.reason
        )?;
        if !self.output_tail.is_empty() {
            write!(f, "\nlast lines of output:")?;
            for line in &self.output_tail {
                write!(f, "\n  | {line}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::error::Error as _;
    use std::path::PathBuf;

    use super::BuildError;
    use crate::flags::BuildFlags;

    /// The error `check` gives for `dockerfile`, which must fail.
    fn refusal(dockerfile: &str) -> BuildError {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
        let flags = BuildFlags {
            context: dir.path().to_path_buf(),
            ..BuildFlags::default()
        };
        let prepared = flags
            .into_request(
                PathBuf::from("/nonexistent"),
                &mut std::io::empty(),
                &|_| None,
            )
            .unwrap();
        let events = crate::event::Collect::default();
        crate::check(&prepared.request, &events).unwrap_err()
    }

    #[test]
    fn a_dockerfile_error_reaches_the_caller_with_its_place() {
        let BuildError::Dockerfile(e) = refusal("FROM a\nCOPY --form=x a b\n") else {
            panic!("not the frontend's error");
        };
        assert_eq!((e.span.start.line, e.span.start.col), (2, 6));
    }

    #[test]
    fn an_unusable_input_keeps_its_error_as_source() {
        let e = refusal("# check=error=maybe\nFROM a\n");
        assert_eq!(e.exit_code(), 2);
        assert!(matches!(e, BuildError::Input { .. }), "{e:?}");
        let source = e.source().unwrap();
        assert!(
            source.is::<umstage_dockerfile::CheckConfigError>(),
            "{source:?}"
        );
        assert_eq!(
            e.to_string(),
            "Dockerfile: # check: invalid check option error=\"maybe\": use true or false"
        );
    }
}
