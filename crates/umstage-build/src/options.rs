//! What a build is asked to do: the inputs and outputs named on the command line.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use umstage_oci::compress::Compression;
use umstage_snapshot::sandbox::Network;

/// Where the Dockerfile comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerfileSource {
    /// A file on disk.
    Path(PathBuf),
    /// Bytes already read (from standard input), not yet checked to be UTF-8.
    Text(Vec<u8>),
}

impl DockerfileSource {
    /// The Dockerfile at `path`; when that is named `Dockerfile` and is not there, the
    /// lowercase `dockerfile` beside it, as BuildKit falls back to it (moby/moby#10858), so
    /// `Dockerfile` wins when both exist.
    pub fn file(path: PathBuf) -> Self {
        let lowercase = path
            .file_name()
            .filter(|n| *n == "Dockerfile")
            .map(|_| path.with_file_name("dockerfile"));
        match lowercase {
            Some(lower) if !path.exists() && lower.is_file() => Self::Path(lower),
            _ => Self::Path(path),
        }
    }
}

/// One output of a build (`-o`/`--output`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An image archive: OCI layout in a tar, with Docker's `manifest.json` too (the default for
    /// `-o FILE`), or only one of the two formats.
    Archive {
        /// Which layout(s) the archive carries.
        format: ArchiveFormat,
        /// Where to write it.
        dest: Destination,
        /// Extra image names for this output (`name=`), besides `-t`.
        names: Vec<String>,
        /// Layer compression.
        compression: Compression,
    },
    /// An OCI image layout directory (`type=oci,tar=false`).
    LayoutDir {
        /// The directory.
        dest: PathBuf,
        /// Extra image names.
        names: Vec<String>,
        /// Layer compression.
        compression: Compression,
    },
    /// The final stage's filesystem, copied into a directory (`type=local`).
    Local {
        /// The directory.
        dest: PathBuf,
    },
    /// The final stage's filesystem as a tar (`type=tar`).
    Tar {
        /// Where to write it.
        dest: Destination,
    },
    /// Nothing but the build cache (`type=cacheonly`), said explicitly.
    CacheOnly,
    /// The image pushed to a registry (`type=registry` or `--push`).
    Registry {
        /// References to push to; `-t` names when empty.
        names: Vec<String>,
        /// Layer compression.
        compression: Compression,
    },
}

impl Output {
    /// Whether this output goes to standard output (`dest=-`).
    pub fn writes_stdout(&self) -> bool {
        matches!(
            self,
            Output::Archive {
                dest: Destination::Stdout,
                ..
            } | Output::Tar {
                dest: Destination::Stdout
            }
        )
    }
}

/// Which image layouts an archive carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// OCI layout plus Docker `manifest.json`: loads in docker, podman and skopeo alike.
    Both,
    /// OCI layout only, OCI media types (`type=oci`).
    Oci,
    /// Docker media types, loadable by `docker load` (`type=docker`).
    Docker,
}

/// A file or standard output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A file path.
    File(PathBuf),
    /// Standard output (`-`).
    Stdout,
}

impl Destination {
    fn parse(s: &str) -> Self {
        if s == "-" {
            Destination::Stdout
        } else {
            Destination::File(PathBuf::from(s))
        }
    }
}

/// A command-line option value that is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {option} value {value:?}: {hint}")]
pub struct OptionError {
    option: &'static str,
    value: String,
    hint: String,
}

impl OptionError {
    fn new(option: &'static str, value: &str, hint: impl Into<String>) -> Self {
        OptionError {
            option,
            value: value.to_string(),
            hint: hint.into(),
        }
    }
}

/// Parses `--network`: the network `RUN` steps get unless their own `--network` says otherwise.
pub fn parse_network(s: &str) -> Result<Network, OptionError> {
    match s {
        "default" => Ok(Network::Default),
        "none" => Ok(Network::None),
        "host" => Ok(Network::Host),
        _ => Err(OptionError::new(
            "--network",
            s,
            "use default, none or host",
        )),
    }
}

/// Splits `k=v,k=v` into pairs; a part with no `=` is an error.
fn key_values(option: &'static str, spec: &str) -> Result<BTreeMap<String, String>, OptionError> {
    let mut map = BTreeMap::new();
    for part in spec.split(',') {
        let Some((k, v)) = part.split_once('=') else {
            return Err(OptionError::new(
                option,
                spec,
                format!("{part:?} is not KEY=VALUE"),
            ));
        };
        map.insert(k.trim().to_string(), v.to_string());
    }
    Ok(map)
}

fn parse_compression(value: Option<&str>, spec: &str) -> Result<Compression, OptionError> {
    match value {
        None | Some("gzip") => Ok(Compression::GZIP),
        Some("zstd") => Ok(Compression::ZSTD),
        Some("uncompressed") => Ok(Compression::None),
        Some(other) => Err(OptionError::new(
            "--output",
            spec,
            format!("compression {other:?} is not one of gzip, zstd, uncompressed"),
        )),
    }
}

fn parse_bool(
    value: Option<&str>,
    default: bool,
    key: &str,
    spec: &str,
) -> Result<bool, OptionError> {
    match value {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(OptionError::new(
            "--output",
            spec,
            format!("{key}={other} must be true or false"),
        )),
    }
}

impl FromStr for Output {
    type Err = OptionError;

    /// Parses `-o` values: a bare path (the default image archive; an existing directory or a
    /// path ending in `/` gets the filesystem, as `type=local`), `-` (archive to standard
    /// output), or `type=…,dest=…,name=…,compression=…`.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        if spec.is_empty() {
            return Err(OptionError::new("--output", spec, "it is empty"));
        }
        if !spec.contains('=') {
            let path = PathBuf::from(spec);
            if spec != "-" && (spec.ends_with('/') || path.is_dir()) {
                return Ok(Output::Local { dest: path });
            }
            return Ok(Output::Archive {
                format: ArchiveFormat::Both,
                dest: Destination::parse(spec),
                names: Vec::new(),
                compression: Compression::GZIP,
            });
        }
        let mut kv = key_values("--output", spec)?;
        let kind = kv.remove("type").ok_or_else(|| {
            OptionError::new(
                "--output",
                spec,
                "name the type: type=oci|docker|local|tar|registry|image",
            )
        })?;
        let dest = kv.remove("dest");
        let names: Vec<String> = kv
            .remove("name")
            .map(|n| n.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        let compression = parse_compression(kv.remove("compression").as_deref(), spec)?;
        let need_dest = |dest: Option<String>| {
            dest.ok_or_else(|| {
                OptionError::new("--output", spec, format!("type={kind} needs dest=PATH"))
            })
        };
        let out = match kind.as_str() {
            "oci" | "docker" => {
                let tar = parse_bool(kv.remove("tar").as_deref(), true, "tar", spec)?;
                let oci_media = parse_bool(
                    kv.remove("oci-mediatypes").as_deref(),
                    kind == "oci",
                    "oci-mediatypes",
                    spec,
                )?;
                let dest = need_dest(dest)?;
                if tar {
                    Output::Archive {
                        format: if oci_media {
                            ArchiveFormat::Oci
                        } else {
                            ArchiveFormat::Docker
                        },
                        dest: Destination::parse(&dest),
                        names,
                        compression,
                    }
                } else {
                    Output::LayoutDir {
                        dest: PathBuf::from(dest),
                        names,
                        compression,
                    }
                }
            }
            "local" => Output::Local {
                dest: PathBuf::from(need_dest(dest)?),
            },
            "tar" => Output::Tar {
                dest: Destination::parse(&need_dest(dest)?),
            },
            "registry" => Output::Registry { names, compression },
            "image" => {
                if parse_bool(kv.remove("push").as_deref(), false, "push", spec)? {
                    Output::Registry { names, compression }
                } else {
                    return Err(OptionError::new(
                        "--output",
                        spec,
                        "there is no image store without a daemon: use type=registry to push, or -o FILE for an archive",
                    ));
                }
            }
            "cacheonly" => Output::CacheOnly,
            other => {
                return Err(OptionError::new(
                    "--output",
                    spec,
                    format!("unknown type {other:?}: use oci, docker, local, tar or registry"),
                ));
            }
        };
        // Keys every exporter accepts but that change nothing here.
        kv.remove("compression-level");
        kv.remove("force-compression");
        if let Some(key) = kv.keys().next() {
            return Err(OptionError::new(
                "--output",
                spec,
                format!("unknown key {key:?} for type={kind}"),
            ));
        }
        Ok(out)
    }
}

/// Where a secret's value comes from (`--secret`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file's content.
    File(PathBuf),
    /// An environment variable of the umstage process.
    Env(String),
}

/// One `--secret id=…,src=…|env=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    /// The id `RUN --mount=type=secret,id=…` refers to.
    pub id: String,
    /// Where the value comes from.
    pub source: SecretSource,
}

impl FromStr for Secret {
    type Err = OptionError;

    /// Parses `id=ID[,src=PATH|source=PATH|env=VAR][,type=file|env]`, as buildx does: with
    /// neither, the value comes from the environment variable named by the id.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut kv = key_values("--secret", spec)?;
        let id = kv
            .remove("id")
            .filter(|i| !i.is_empty())
            .ok_or_else(|| OptionError::new("--secret", spec, "it needs id=ID"))?;
        let kind = kv.remove("type");
        let src = kv.remove("src").or_else(|| kv.remove("source"));
        let env = kv.remove("env");
        if let Some(key) = kv.keys().next() {
            return Err(OptionError::new(
                "--secret",
                spec,
                format!("unknown key {key:?}: use id, src, env or type"),
            ));
        }
        let source = match (kind.as_deref(), src, env) {
            (_, Some(_), Some(_)) => {
                return Err(OptionError::new(
                    "--secret",
                    spec,
                    "give src= or env=, not both",
                ));
            }
            (Some("env"), Some(var), None) | (_, None, Some(var)) => SecretSource::Env(var),
            (None | Some("file"), Some(path), None) => SecretSource::File(PathBuf::from(path)),
            (Some("file"), None, None) => SecretSource::File(PathBuf::from(&id)),
            (None | Some("env"), None, None) => SecretSource::Env(id.clone()),
            (Some(other), _, _) => {
                return Err(OptionError::new(
                    "--secret",
                    spec,
                    format!("type {other:?} is not file or env"),
                ));
            }
        };
        Ok(Secret { id, source })
    }
}

impl Secret {
    /// Checks that a file source exists, as buildx does before it builds: a missing file
    /// fails the build even when no step mounts the secret. An unset variable is not checked:
    /// buildx takes it as an empty value.
    pub fn check(&self) -> Result<(), OptionError> {
        let SecretSource::File(path) = &self.source else {
            return Ok(());
        };
        let spec = format!("id={},src={}", self.id, path.display());
        let refuse = |why: String| Err(OptionError::new("--secret", &spec, why));
        // Opened, not only looked at: a file we may not read fails here, not mid-build.
        let meta = match std::fs::File::open(path).and_then(|f| f.metadata()) {
            Ok(meta) => meta,
            Err(e) => return refuse(format!("cannot read {}: {e}", path.display())),
        };
        let limit = umstage_snapshot::sandbox::MAX_SECRET_SIZE;
        if meta.is_dir() {
            refuse(format!(
                "{} is a directory: a secret is one file",
                path.display()
            ))
        } else if meta.len() > limit {
            refuse(format!(
                "{} is {} bytes: a secret may hold at most {limit} (as in BuildKit)",
                path.display(),
                meta.len()
            ))
        } else {
            Ok(())
        }
    }
}

/// One `--ssh ID[=SOCKET]`: an ssh-agent socket `RUN --mount=type=ssh,id=ID` can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshAgent {
    /// The id mounts refer to (`default` when they name none).
    pub id: String,
    /// The agent's socket; `None` until [`SshAgent::resolve`] takes `$SSH_AUTH_SOCK`.
    pub socket: Option<PathBuf>,
}

impl FromStr for SshAgent {
    type Err = OptionError;

    /// Parses `default`, `ID=/path/to/agent.sock` (buildx's syntax).
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let (id, path) = match spec.split_once('=') {
            Some((id, path)) => (id, Some(path)),
            None => (spec, None),
        };
        if id.is_empty() {
            return Err(OptionError::new(
                "--ssh",
                spec,
                "use ID[=SOCKET], such as default",
            ));
        }
        let mut paths = path.map(|p| p.split(',').filter(|p| !p.is_empty()).collect::<Vec<_>>());
        let socket = match paths.as_deref_mut() {
            None | Some([]) => None,
            Some([one]) => Some(PathBuf::from(*one)),
            Some(_) => {
                return Err(OptionError::new(
                    "--ssh",
                    spec,
                    "give one agent socket; to forward keys, load them into an ssh-agent with ssh-add",
                ));
            }
        };
        Ok(SshAgent {
            id: id.to_string(),
            socket,
        })
    }
}

impl SshAgent {
    /// Fills in `$SSH_AUTH_SOCK` when no socket was given, and checks that the socket is one:
    /// umstage forwards agents, not key files.
    pub fn resolve(self) -> Result<SshAgent, OptionError> {
        let spec = match &self.socket {
            Some(p) => format!("{}={}", self.id, p.display()),
            None => self.id.clone(),
        };
        let socket = match self.socket {
            Some(p) => p,
            None => match std::env::var_os("SSH_AUTH_SOCK") {
                Some(s) if !s.is_empty() => PathBuf::from(s),
                _ => {
                    return Err(OptionError::new(
                        "--ssh",
                        &spec,
                        "SSH_AUTH_SOCK is not set: start an ssh-agent, or name its socket (ID=SOCKET)",
                    ));
                }
            },
        };
        let socket = std::path::absolute(&socket).unwrap_or(socket);
        match std::fs::metadata(&socket) {
            Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => Ok(SshAgent {
                id: self.id,
                socket: Some(socket),
            }),
            Ok(_) => Err(OptionError::new(
                "--ssh",
                &spec,
                format!(
                    "{} is not an agent socket: load key files into an ssh-agent (ssh-add KEY) and pass its socket",
                    socket.display()
                ),
            )),
            Err(e) => Err(OptionError::new(
                "--ssh",
                &spec,
                format!("{}: {e}", socket.display()),
            )),
        }
    }
}

/// What a named build context (`--build-context NAME=…`) stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// A local directory: usable with `COPY --from=NAME` and `FROM NAME`… as a plain tree.
    Dir(PathBuf),
    /// An image in a registry (`docker-image://REF`).
    Image(String),
    /// An image in a local OCI layout (`oci-layout:///path[:tag]` or `@sha256:…`).
    OciLayout {
        /// The layout directory.
        path: PathBuf,
        /// The tag or digest to pick; `latest` when none.
        reference: Option<String>,
    },
}

/// One `--build-context NAME=SOURCE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildContext {
    /// The name FROM and `--from` use (compared case-insensitively with stage names).
    pub name: String,
    /// What it stands for.
    pub source: NamedContext,
}

impl FromStr for BuildContext {
    type Err = OptionError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let Some((name, value)) = spec.split_once('=') else {
            return Err(OptionError::new("--build-context", spec, "use NAME=SOURCE"));
        };
        if name.is_empty() || value.is_empty() {
            return Err(OptionError::new("--build-context", spec, "use NAME=SOURCE"));
        }
        let source = if let Some(r) = value.strip_prefix("docker-image://") {
            if r.is_empty() {
                return Err(OptionError::new(
                    "--build-context",
                    spec,
                    "docker-image:// needs a reference",
                ));
            }
            NamedContext::Image(r.to_string())
        } else if let Some(rest) = value.strip_prefix("oci-layout://") {
            let (path, reference) = split_layout_reference(rest);
            if path.is_empty() {
                return Err(OptionError::new(
                    "--build-context",
                    spec,
                    "oci-layout:// needs a path",
                ));
            }
            NamedContext::OciLayout {
                path: PathBuf::from(path),
                reference,
            }
        } else if value.contains("://") || value.starts_with("git@") {
            return Err(OptionError::new(
                "--build-context",
                spec,
                "git and http(s) contexts are not supported yet: use a directory, docker-image:// or oci-layout://",
            ));
        } else {
            NamedContext::Dir(PathBuf::from(value))
        };
        Ok(BuildContext {
            name: name.to_string(),
            source,
        })
    }
}

/// Splits `/path/to/layout:tag` or `/path@sha256:…` into the path and the reference.
fn split_layout_reference(rest: &str) -> (&str, Option<String>) {
    if let Some((path, digest)) = rest.rsplit_once('@') {
        return (path, Some(digest.to_string()));
    }
    match rest.rsplit_once(':') {
        // A colon inside a directory name is unlikely; one after the last `/` is a tag.
        Some((path, tag)) if !tag.contains('/') && !tag.is_empty() => (path, Some(tag.to_string())),
        _ => (rest, None),
    }
}

/// Parses a size such as `10GB`, `512MiB`, `1.5g` or `1000` (bytes), as `--keep-storage` takes.
pub fn parse_size(text: &str) -> Result<u64, OptionError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| {
        OptionError::new(
            "size",
            text,
            "use a number with an optional unit: 500MB, 10GB, 2GiB",
        )
    })?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "ti" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(OptionError::new(
                "size",
                text,
                "unknown unit: use B, KB, MB, GB, TB or KiB, MiB, GiB, TiB",
            ));
        }
    };
    Ok((value * mult) as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ssh_agents_parse_as_buildx_writes_them() {
        let d: SshAgent = "default".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((d.id.as_str(), d.socket), ("default", None));
        let s: SshAgent = "work=/run/agent.sock"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.socket, Some(PathBuf::from("/run/agent.sock")));
        assert!("=x".parse::<SshAgent>().is_err());
        assert!("a=/k1,/k2".parse::<SshAgent>().is_err());
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let key = dir.path().join("id_ed25519");
        std::fs::write(&key, "key").unwrap_or_else(|e| panic!("{e}"));
        let err = SshAgent {
            id: "k".into(),
            socket: Some(key),
        }
        .resolve()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("not an agent socket"), "{err}");
    }

    use super::*;

    #[test]
    fn a_lowercase_dockerfile_is_read_only_when_dockerfile_is_missing()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let named = dir.path().join("Dockerfile");
        let lower = dir.path().join("dockerfile");
        assert_eq!(
            DockerfileSource::file(named.clone()),
            DockerfileSource::Path(named.clone())
        );
        std::fs::write(&lower, "FROM scratch\n")?;
        assert_eq!(
            DockerfileSource::file(named.clone()),
            DockerfileSource::Path(lower.clone())
        );
        std::fs::write(&named, "FROM scratch\n")?;
        assert_eq!(
            DockerfileSource::file(named.clone()),
            DockerfileSource::Path(named)
        );
        // Only the name `Dockerfile` falls back.
        let other = dir.path().join("Other");
        assert_eq!(
            DockerfileSource::file(other.clone()),
            DockerfileSource::Path(other)
        );
        Ok(())
    }

    #[test]
    fn bare_paths_are_archives_and_typed_outputs_parse() {
        assert_eq!(
            "image.tar".parse(),
            Ok(Output::Archive {
                format: ArchiveFormat::Both,
                dest: Destination::File("image.tar".into()),
                names: vec![],
                compression: Compression::GZIP
            })
        );
        assert_eq!(
            "out/".parse(),
            Ok(Output::Local {
                dest: "out/".into()
            })
        );
        assert_eq!(
            "type=oci,dest=-,compression=zstd".parse(),
            Ok(Output::Archive {
                format: ArchiveFormat::Oci,
                dest: Destination::Stdout,
                names: vec![],
                compression: Compression::ZSTD
            })
        );
        assert_eq!(
            "type=oci,dest=d,tar=false".parse(),
            Ok(Output::LayoutDir {
                dest: "d".into(),
                names: vec![],
                compression: Compression::GZIP
            })
        );
        assert_eq!(
            "type=tar,dest=fs.tar".parse(),
            Ok(Output::Tar {
                dest: Destination::File("fs.tar".into())
            })
        );
        assert_eq!(
            "type=registry,name=127.0.0.1:5000/x:1".parse(),
            Ok(Output::Registry {
                names: vec!["127.0.0.1:5000/x:1".into()],
                compression: Compression::GZIP
            })
        );
    }

    #[test]
    fn bad_outputs_say_what_is_wrong() {
        for bad in [
            "",
            "type=oci",
            "type=floppy,dest=x",
            "type=oci,dest=x,compression=lz4",
            "type=local,dest=x,bogus=1",
            "dest=x",
            "type=image,name=x",
        ] {
            assert!(bad.parse::<Output>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_secret_file_that_cannot_be_read_is_refused_up_front()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("token");
        std::fs::write(&file, "t0k3n")?;
        let secret =
            |src: &std::path::Path| format!("id=x,src={}", src.display()).parse::<Secret>();
        secret(&file)?.check()?;
        "id=TOKEN,env=UMSTAGE_TEST_UNSET_VARIABLE"
            .parse::<Secret>()?
            .check()?;
        let missing = dir.path().join("missing");
        let err = secret(&missing)?.check().map_err(|e| e.to_string());
        assert_eq!(
            err,
            Err(format!(
                "invalid --secret value \"id=x,src={0}\": cannot read {0}: No such file or directory (os error 2)",
                missing.display()
            ))
        );
        let err = secret(dir.path())?.check().map_err(|e| e.to_string());
        assert!(err.is_err_and(|e| e.contains("is a directory")));
        Ok(())
    }

    #[test]
    fn secrets_and_contexts_parse_as_buildx_does() {
        assert_eq!(
            "id=tok,src=/run/tok".parse(),
            Ok(Secret {
                id: "tok".into(),
                source: SecretSource::File("/run/tok".into())
            })
        );
        assert_eq!(
            "id=tok,env=TOKEN".parse(),
            Ok(Secret {
                id: "tok".into(),
                source: SecretSource::Env("TOKEN".into())
            })
        );
        assert_eq!(
            "id=TOKEN".parse(),
            Ok(Secret {
                id: "TOKEN".into(),
                source: SecretSource::Env("TOKEN".into())
            })
        );
        assert!("src=/x".parse::<Secret>().is_err());
        assert_eq!(
            "base=oci-layout:///srv/layout:v1".parse(),
            Ok(BuildContext {
                name: "base".into(),
                source: NamedContext::OciLayout {
                    path: "/srv/layout".into(),
                    reference: Some("v1".into())
                }
            })
        );
        assert_eq!(
            "b=docker-image://busybox:1".parse(),
            Ok(BuildContext {
                name: "b".into(),
                source: NamedContext::Image("busybox:1".into())
            })
        );
        assert_eq!(
            "src=../lib".parse(),
            Ok(BuildContext {
                name: "src".into(),
                source: NamedContext::Dir("../lib".into())
            })
        );
        assert!(
            "x=https://example.invalid/repo.git"
                .parse::<BuildContext>()
                .is_err()
        );
        assert!("noequals".parse::<BuildContext>().is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("10GB"), Ok(10_000_000_000));
        assert_eq!(parse_size("2MiB"), Ok(2 * 1024 * 1024));
        assert_eq!(parse_size("1.5g"), Ok(1_500_000_000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }
}
