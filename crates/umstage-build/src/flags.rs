//! The command line's build flags, as plain parsed values, turned into a [`BuildRequest`].
//!
//! The binary parses with clap and hands a [`BuildFlags`] over; everything that checks the
//! flags against each other, reads standard input or the environment, or fills in a default
//! is here, so the binary holds no build logic. Errors are [`FlagError`]s: usage errors,
//! rendered by the binary (exit status 2).

use std::io::Read;
use std::path::{Path, PathBuf};

use umstage_dockerfile::Platform;
use umstage_oci::compress::Compression;
use umstage_snapshot::DriverChoice;
use umstage_snapshot::sandbox::{Network, Ulimit};

use crate::annotation::Annotation;
use crate::cache::spec::{CacheExport, CacheImport};
use crate::context::StdinContext;
use crate::options::{
    ArchiveFormat, BuildContext, Destination, DockerfileSource, OptionError, Output, Secret,
    SshAgent,
};
use crate::request::{BuildError, BuildRequest, Entitlement};
use crate::step_options::AddHost;

/// The flags of `umstage build` as the command line gives them, each parsed on its own.
#[derive(Debug, Clone, Default)]
pub struct BuildFlags {
    /// The context argument; `-` reads a tar context or a Dockerfile from standard input.
    pub context: PathBuf,
    /// `-f`; `-` reads the Dockerfile from standard input.
    pub file: Option<PathBuf>,
    /// `-t`.
    pub tags: Vec<String>,
    /// `-o`.
    pub outputs: Vec<Output>,
    /// `--target`.
    pub target: Option<String>,
    /// `--build-arg`, as written: `KEY=VALUE`, or `KEY` to take the environment's value.
    pub build_args: Vec<String>,
    /// `--build-context`.
    pub build_contexts: Vec<BuildContext>,
    /// `--platform`, as written (a comma-separated list).
    pub platform: Option<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--no-cache-filter`.
    pub no_cache_filter: Vec<String>,
    /// `--cache-from`.
    pub cache_from: Vec<CacheImport>,
    /// `--cache-to`.
    pub cache_to: Vec<CacheExport>,
    /// `--network`.
    pub network: Network,
    /// `--secret`, not yet checked.
    pub secrets: Vec<Secret>,
    /// `--ssh`, not yet resolved.
    pub ssh: Vec<SshAgent>,
    /// `--allow`.
    pub allow: Vec<Entitlement>,
    /// `--label`, as written (`KEY=VALUE`).
    pub labels: Vec<String>,
    /// `--snapshotter`.
    pub snapshotter: DriverChoice,
    /// `--insecure-registry`.
    pub insecure_registries: Vec<String>,
    /// `--push`.
    pub push: bool,
    /// `-j`; `None` for the default.
    pub jobs: Option<u16>,
    /// `--add-host`.
    pub add_hosts: Vec<AddHost>,
    /// `--shm-size` in bytes; `None` for Docker's 64 MiB.
    pub shm_size: Option<u64>,
    /// `--ulimit`.
    pub ulimits: Vec<Ulimit>,
    /// `--annotation`.
    pub annotations: Vec<Annotation>,
    /// `--load`.
    pub load: bool,
}

/// A build request that the flags describe, and what it borrows for the build's life.
#[derive(Debug)]
pub struct Prepared {
    /// The request.
    pub request: BuildRequest,
    /// The temporary directory holding a context read from standard input: the build reads
    /// it, and it is removed when this is dropped.
    pub stdin_context: Option<tempfile::TempDir>,
    /// `--load`: the archive to load once the build is done (an `-o` archive file, else one
    /// in `load_dir`).
    pub load: Option<PathBuf>,
    /// The temporary directory of an archive written only to be loaded; removed when dropped.
    pub load_dir: Option<tempfile::TempDir>,
}

/// Flags that cannot make a build; nothing has run.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    /// `-f -` and `-`.
    #[error("the context and the Dockerfile cannot both come from standard input (-f - and -)")]
    BothFromStdin,
    /// Standard input could not be read.
    #[error("reading the {what} from standard input")]
    Stdin {
        /// `context` or `Dockerfile`.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No directory could be made for a context read from standard input.
    #[error("making a directory for the context from standard input")]
    StdinDir(#[source] std::io::Error),
    /// The context on standard input is neither a Dockerfile nor a readable archive.
    #[error(transparent)]
    StdinContext(BuildError),
    /// A git or http(s) context.
    #[error(
        "context {0:?}: git and http(s) contexts are not supported yet: clone or download it and give the directory"
    )]
    RemoteContext(String),
    /// The context path cannot be made absolute.
    #[error("context {}", .path.display())]
    ContextPath {
        /// The context as given.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The context is not a directory.
    #[error(
        "context {} is not a directory: give the directory holding the files COPY and ADD read (often .)",
        .0.display()
    )]
    ContextNotDirectory(PathBuf),
    /// The Dockerfile does not exist.
    #[error(
        "Dockerfile {} not found: name it with -f FILE (or -f - to read standard input)",
        .0.display()
    )]
    DockerfileNotFound(PathBuf),
    /// `--build-arg =VALUE`.
    #[error("--build-arg {0:?}: the name is empty: use KEY=VALUE")]
    BuildArgName(String),
    /// `--label` without `KEY=`.
    #[error("--label {0:?}: use KEY=VALUE")]
    Label(String),
    /// A `-t` that is no image name.
    #[error("-t: {0}")]
    Tag(umstage_oci::reference::ReferenceError),
    /// A `--secret` or `--ssh` that cannot be used.
    #[error(transparent)]
    Option(#[from] OptionError),
    /// `--platform` that is not `os/arch[/variant]`.
    #[error("--platform {0}: use OS/ARCH[/VARIANT], such as linux/arm64")]
    Platform(String),
    /// `--platform` naming several platforms.
    #[error("--platform {0}: one build makes one platform's image: run a build per platform")]
    Platforms(String),
    /// `--push` with no `-t`.
    #[error("--push needs a name to push to: add -t REGISTRY/NAME:TAG")]
    PushWithoutTag,
    /// Two outputs to standard output.
    #[error("only one output can be written to standard output (-)")]
    StdoutTwice,
    /// A registry output with no name.
    #[error("--output type=registry needs a name: add name=REF or -t REF")]
    RegistryWithoutName,
    /// No temporary directory could be made for the archive `--load` loads.
    #[error("--load: making a directory for the archive to load")]
    LoadDir(#[source] std::io::Error),
    /// `SOURCE_DATE_EPOCH` is set and not a number.
    #[error("SOURCE_DATE_EPOCH={0:?} is not a number of seconds since 1970")]
    SourceDateEpoch(String),
}

impl BuildFlags {
    /// The request these flags describe, building in `state_root`. `stdin` is read for a
    /// context or Dockerfile of `-`; `env` looks up the environment (bare `--build-arg NAME`,
    /// `SOURCE_DATE_EPOCH`).
    pub fn into_request(
        self,
        state_root: PathBuf,
        stdin: &mut dyn Read,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Prepared, FlagError> {
        let (stdin_context, stdin_dockerfile) = self.read_stdin_context(stdin)?;
        let context_arg = match &stdin_context {
            Some(dir) => dir.path().to_path_buf(),
            None => self.context.clone(),
        };
        let context = self.context_dir(&context_arg)?;
        let dockerfile = match (stdin_dockerfile, self.file.as_deref()) {
            (Some(bytes), _) => DockerfileSource::Text(bytes),
            (None, Some(p)) if p.as_os_str() == "-" => {
                let mut bytes = Vec::new();
                stdin
                    .read_to_end(&mut bytes)
                    .map_err(|source| FlagError::Stdin {
                        what: "Dockerfile",
                        source,
                    })?;
                DockerfileSource::Text(bytes)
            }
            // In a context archive from standard input, -f names a file in the archive.
            (None, Some(p)) if stdin_context.is_some() && p.is_relative() => {
                DockerfileSource::file(context.join(p))
            }
            (None, Some(p)) => DockerfileSource::file(p.to_path_buf()),
            (None, None) => DockerfileSource::file(context.join("Dockerfile")),
        };
        if let DockerfileSource::Path(p) = &dockerfile
            && !p.is_file()
        {
            return Err(FlagError::DockerfileNotFound(p.clone()));
        }
        let build_args = build_args(&self.build_args, env)?;
        let mut cache_to = self.cache_to;
        // As with docker, this build arg asks for the inline cache; buildx reads it with Go's
        // `strconv.ParseBool` and takes a value that is not a boolean as false.
        if build_args
            .iter()
            .any(|(k, v)| k == "BUILDKIT_INLINE_CACHE" && go_parse_bool_true(v))
            && !cache_to.contains(&CacheExport::Inline)
        {
            cache_to.push(CacheExport::Inline);
        }
        for secret in &self.secrets {
            secret.check()?;
        }
        let ssh = self
            .ssh
            .into_iter()
            .map(SshAgent::resolve)
            .collect::<Result<Vec<_>, _>>()?;
        let labels = self
            .labels
            .iter()
            .map(|l| match l.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                _ => Err(FlagError::Label(l.clone())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let platform = self.platform.as_deref().map(one_platform).transpose()?;
        // Checked before the build, as buildx does, rather than when the image is named.
        for tag in &self.tags {
            umstage_oci::reference::parse(tag).map_err(FlagError::Tag)?;
        }
        let mut outputs = outputs(self.outputs, self.push, &self.tags)?;
        let (load, load_dir) = if self.load {
            load_archive(&mut outputs)?
        } else {
            (None, None)
        };
        let source_date_epoch = match env("SOURCE_DATE_EPOCH") {
            Some(v) if !v.is_empty() => Some(
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| FlagError::SourceDateEpoch(v.clone()))?,
            ),
            _ => None,
        };
        let jobs = match self.jobs {
            Some(j) => usize::from(j),
            // Twice the cores: CPU-bound stages of similar length finish soonest when they all
            // run and the kernel shares the cores (three 2 s stages on two cores: 3 s, against 4 s
            // when the third waits), and a stage waiting on a pull or an export holds no core.
            None => 2 * std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let request = BuildRequest {
            context,
            dockerfile,
            tags: self.tags,
            outputs,
            target: self.target,
            build_args,
            build_contexts: self.build_contexts,
            platform,
            no_cache: self.no_cache,
            no_cache_filter: self.no_cache_filter,
            cache_from: self.cache_from,
            cache_to,
            network: self.network,
            secrets: self.secrets,
            ssh,
            allow: self.allow,
            labels,
            state_root,
            snapshotter: self.snapshotter,
            insecure_registries: self.insecure_registries,
            jobs,
            source_date_epoch,
            add_hosts: self.add_hosts,
            shm_size: self
                .shm_size
                .unwrap_or(umstage_snapshot::sandbox::DEFAULT_SHM_SIZE),
            ulimits: self.ulimits,
            annotations: self.annotations,
        };
        Ok(Prepared {
            request,
            stdin_context,
            load,
            load_dir,
        })
    }

    /// For a context of `-`: the directory standard input's archive was unpacked into, or
    /// the Dockerfile it held.
    fn read_stdin_context(
        &self,
        stdin: &mut dyn Read,
    ) -> Result<(Option<tempfile::TempDir>, Option<Vec<u8>>), FlagError> {
        if self.context.as_os_str() != "-" {
            return Ok((None, None));
        }
        if self.file.as_deref().is_some_and(|f| f.as_os_str() == "-") {
            return Err(FlagError::BothFromStdin);
        }
        let mut data = Vec::new();
        stdin
            .read_to_end(&mut data)
            .map_err(|source| FlagError::Stdin {
                what: "context",
                source,
            })?;
        let dir = tempfile::Builder::new()
            .prefix("umstage-context-")
            .tempdir()
            .map_err(FlagError::StdinDir)?;
        let dockerfile =
            match crate::context::from_stdin(data, dir.path()).map_err(FlagError::StdinContext)? {
                StdinContext::Dockerfile(bytes) => Some(bytes),
                StdinContext::Archive => None,
            };
        Ok((Some(dir), dockerfile))
    }

    /// The context directory, absolute; `context_arg` is where the context is (a temporary
    /// directory for one from standard input).
    fn context_dir(&self, context_arg: &Path) -> Result<PathBuf, FlagError> {
        let ctx = context_arg.to_string_lossy();
        if ctx.contains("://") || ctx.starts_with("git@") {
            return Err(FlagError::RemoteContext(ctx.into_owned()));
        }
        let context =
            std::path::absolute(context_arg).map_err(|source| FlagError::ContextPath {
                path: self.context.clone(),
                source,
            })?;
        if !context.is_dir() {
            return Err(FlagError::ContextNotDirectory(self.context.clone()));
        }
        Ok(context)
    }
}

/// `--build-arg` values as pairs; as buildx, a bare name takes the environment's value and
/// is dropped if unset.
fn build_args(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, FlagError> {
    let mut out = Vec::new();
    for arg in args {
        match arg.split_once('=') {
            Some((k, v)) if !k.is_empty() => out.push((k.to_string(), v.to_string())),
            Some(_) => return Err(FlagError::BuildArgName(arg.clone())),
            None => {
                if let Some(v) = env(arg) {
                    out.push((arg.clone(), v));
                }
            }
        }
    }
    Ok(out)
}

/// The archive `--load` loads: an archive file among the outputs, or else one added in a
/// temporary directory.
fn load_archive(
    outputs: &mut Vec<Output>,
) -> Result<(Option<PathBuf>, Option<tempfile::TempDir>), FlagError> {
    let written = outputs.iter().find_map(|o| match o {
        Output::Archive {
            format: ArchiveFormat::Both | ArchiveFormat::Docker,
            dest: Destination::File(path),
            ..
        } => Some(path.clone()),
        _ => None,
    });
    if let Some(path) = written {
        return Ok((Some(path), None));
    }
    let dir = tempfile::Builder::new()
        .prefix("umstage-load-")
        .tempdir()
        .map_err(FlagError::LoadDir)?;
    let path = dir.path().join("image.tar");
    outputs.push(Output::Archive {
        format: ArchiveFormat::Both,
        dest: Destination::File(path.clone()),
        names: Vec::new(),
        compression: Compression::GZIP,
    });
    Ok((Some(path), Some(dir)))
}

/// The one platform `--platform` names (a repeated name counts once).
fn one_platform(flag: &str) -> Result<Platform, FlagError> {
    let mut wanted: Vec<&str> = flag.split(',').map(str::trim).collect();
    wanted.dedup();
    match wanted.as_slice() {
        [one] => Platform::parse(one).ok_or_else(|| FlagError::Platform((*one).to_string())),
        _ => Err(FlagError::Platforms(flag.to_string())),
    }
}

/// The outputs: `-o` and `--push`, checked against each other and the tags.
fn outputs(
    mut outputs: Vec<Output>,
    push: bool,
    tags: &[String],
) -> Result<Vec<Output>, FlagError> {
    if push {
        if tags.is_empty() {
            return Err(FlagError::PushWithoutTag);
        }
        outputs.push(Output::Registry {
            names: Vec::new(),
            compression: Compression::GZIP,
        });
    }
    if outputs.iter().filter(|o| o.writes_stdout()).count() > 1 {
        return Err(FlagError::StdoutTwice);
    }
    if outputs
        .iter()
        .any(|o| matches!(o, Output::Registry { names, .. } if names.is_empty()))
        && tags.is_empty()
    {
        return Err(FlagError::RegistryWithoutName);
    }
    Ok(outputs)
}

/// Whether Go's `strconv.ParseBool` reads `v` as true.
fn go_parse_bool_true(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "TRUE" | "true" | "True")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    /// Flags for a context directory holding a Dockerfile.
    fn flags(dir: &Path) -> BuildFlags {
        std::fs::write(dir.join("Dockerfile"), "FROM scratch\n").unwrap();
        BuildFlags {
            context: dir.to_path_buf(),
            ..BuildFlags::default()
        }
    }

    fn refused(f: BuildFlags, env: &dyn Fn(&str) -> Option<String>) -> String {
        match f.into_request(PathBuf::from("/state"), &mut std::io::empty(), env) {
            Ok(p) => panic!("accepted: {:?}", p.request),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn plain_flags_make_the_request() {
        let dir = tempfile::tempdir().unwrap();
        let f = BuildFlags {
            build_args: vec!["A=1".into(), "FROM_ENV".into(), "UNSET".into()],
            labels: vec!["k=v=w".into()],
            platform: Some("linux/arm64,linux/arm64".into()),
            jobs: Some(3),
            ..flags(dir.path())
        };
        let env = |k: &str| (k == "FROM_ENV").then(|| "e".to_string());
        let p = f
            .into_request(PathBuf::from("/state"), &mut std::io::empty(), &env)
            .unwrap();
        let r = p.request;
        assert_eq!(
            r.build_args,
            [("A".into(), "1".into()), ("FROM_ENV".into(), "e".into())]
        );
        assert_eq!(r.labels, [("k".into(), "v=w".into())]);
        assert_eq!(
            r.platform.map(|p| p.to_string()).as_deref(),
            Some("linux/arm64")
        );
        assert_eq!(r.jobs, 3);
        assert_eq!(
            r.dockerfile,
            DockerfileSource::Path(dir.path().join("Dockerfile"))
        );
        assert!(p.stdin_context.is_none());
    }

    #[test]
    fn a_tag_that_is_no_image_name_is_refused_before_the_build() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["bad tag", "UPPER/x", "a\u{1b}[31m", ""] {
            let message = refused(
                BuildFlags {
                    tags: vec![bad.into()],
                    ..flags(dir.path())
                },
                &no_env,
            );
            assert!(
                message.starts_with("-t: invalid image reference"),
                "{bad}: {message}"
            );
        }
    }

    #[test]
    fn inline_cache_build_arg_takes_go_booleans() {
        let dir = tempfile::tempdir().unwrap();
        let inline = |value: &str| {
            BuildFlags {
                build_args: vec![format!("BUILDKIT_INLINE_CACHE={value}")],
                ..flags(dir.path())
            }
            .into_request(PathBuf::from("/state"), &mut std::io::empty(), &no_env)
            .unwrap()
            .request
            .cache_to
            .contains(&CacheExport::Inline)
        };
        for yes in ["1", "t", "T", "TRUE", "true", "True"] {
            assert!(inline(yes), "{yes}");
        }
        for no in ["0", "f", "false", "FALSE", "yes", "tRuE", ""] {
            assert!(!inline(no), "{no}");
        }
    }

    #[test]
    fn load_uses_the_archive_written_or_adds_one() {
        let dir = tempfile::tempdir().unwrap();
        let prepare = |outputs: Vec<Output>| {
            BuildFlags {
                outputs,
                load: true,
                ..flags(dir.path())
            }
            .into_request(PathBuf::from("/state"), &mut std::io::empty(), &no_env)
            .unwrap()
        };
        let p = prepare(vec!["out.tar".parse().unwrap()]);
        assert_eq!(p.load.as_deref(), Some(Path::new("out.tar")));
        assert!(p.load_dir.is_none());
        assert_eq!(p.request.outputs.len(), 1);
        // An OCI-only archive or another kind of output: a temporary archive to load.
        let p = prepare(vec!["type=oci,dest=oci.tar".parse().unwrap()]);
        let (Some(archive), Some(tmp)) = (&p.load, &p.load_dir) else {
            panic!("no archive to load: {p:?}");
        };
        assert!(archive.starts_with(tmp.path()));
        assert_eq!(p.request.outputs.len(), 2);
        // Without --load nothing is added.
        let p = BuildFlags {
            ..flags(dir.path())
        }
        .into_request(PathBuf::from("/state"), &mut std::io::empty(), &no_env)
        .unwrap();
        assert!(p.load.is_none() && p.request.outputs.is_empty());
    }

    #[test]
    fn conflicting_flags_are_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let cases: [(BuildFlags, &str); 6] = [
            (
                BuildFlags {
                    push: true,
                    ..flags(d)
                },
                "--push needs a name to push to: add -t REGISTRY/NAME:TAG",
            ),
            (
                BuildFlags {
                    build_args: vec!["=v".into()],
                    ..flags(d)
                },
                "--build-arg \"=v\": the name is empty: use KEY=VALUE",
            ),
            (
                BuildFlags {
                    labels: vec!["k".into()],
                    ..flags(d)
                },
                "--label \"k\": use KEY=VALUE",
            ),
            (
                BuildFlags {
                    platform: Some("linux/amd64,linux/arm64".into()),
                    ..flags(d)
                },
                "--platform linux/amd64,linux/arm64: one build makes one platform's image: run a build per platform",
            ),
            (
                BuildFlags {
                    context: "-".into(),
                    file: Some("-".into()),
                    ..flags(d)
                },
                "the context and the Dockerfile cannot both come from standard input (-f - and -)",
            ),
            (
                BuildFlags {
                    context: "git@example.com:x.git".into(),
                    ..flags(d)
                },
                "context \"git@example.com:x.git\": git and http(s) contexts are not supported yet: clone or download it and give the directory",
            ),
        ];
        for (f, message) in cases {
            assert_eq!(refused(f, &no_env), message);
        }
        let epoch = |k: &str| (k == "SOURCE_DATE_EPOCH").then(|| "soon".to_string());
        assert_eq!(
            refused(flags(d), &epoch),
            "SOURCE_DATE_EPOCH=\"soon\" is not a number of seconds since 1970"
        );
    }

    #[test]
    fn a_dockerfile_on_standard_input_needs_no_file_in_the_context() {
        let dir = tempfile::tempdir().unwrap();
        let f = BuildFlags {
            context: dir.path().to_path_buf(),
            file: Some("-".into()),
            ..BuildFlags::default()
        };
        let p = f
            .into_request(
                PathBuf::from("/state"),
                &mut &b"FROM scratch\n"[..],
                &no_env,
            )
            .unwrap();
        assert_eq!(
            p.request.dockerfile,
            DockerfileSource::Text(b"FROM scratch\n".to_vec())
        );
    }
}
