//! The command line: every subcommand and flag, with clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use umstage_build::options::{BuildContext, Output, Secret, SshAgent};
use umstage_snapshot::DriverChoice;
use umstage_snapshot::sandbox::Network;

/// Builds container images from Dockerfiles, with no daemon and no root.
#[derive(Debug, Parser)]
#[command(
    name = "umstage",
    version,
    about,
    max_term_width = 100,
    args_override_self = true
)]
pub struct Cli {
    /// State root: cache, snapshots and blobs [default: $XDG_DATA_HOME/umstage, or ~/.local/share/umstage; /var/lib/umstage for root]
    #[arg(long, global = true, value_name = "DIR", env = "UMSTAGE_ROOT")]
    pub root: Option<PathBuf>,

    /// Diagnostic log on standard error, for debugging umstage: off, error, warn, info, debug or trace (or a RUST_LOG filter); what a build has to say comes through its progress
    #[arg(
        long,
        global = true,
        value_name = "LEVEL",
        default_value = "off",
        value_parser = parse_log_level
    )]
    pub log_level: String,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile and a context directory
    Build(Box<BuildArgs>),
    /// Show what this machine supports and the state of the store
    Info(InfoArgs),
    /// Find what restricts builds here (seccomp, capabilities, user namespaces, id ranges), say which sandbox tier a build will use and how to get a better one
    Doctor(InfoArgs),
    /// Remove build cache and unused data from the state root
    Prune(PruneArgs),
    /// Tools for looking inside
    #[command(subcommand)]
    Debug(DebugCommand),
    /// Print the shell completion script, e.g. `umstage completion bash > /etc/bash_completion.d/umstage`
    Completion {
        /// The shell: bash, zsh, fish, elvish or powershell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (umstage.1, umstage-build.1, …) into DIR, for packaging
    ManPages {
        /// Where the pages go (made if missing)
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// `tty` on a terminal, `plain` otherwise
    Auto,
    /// A live view of the running steps
    Tty,
    /// One line per event, for logs
    Plain,
    /// One JSON object per event
    Rawjson,
    /// Nothing but errors (and the image id at the end)
    Quiet,
}

/// Which sandbox tier runs the RUN steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SandboxChoice {
    /// The best one that works here (`umstage doctor` says which)
    Auto,
    /// A user namespace with subordinate id ranges (steps may own files as any user)
    Userns,
    /// A user namespace with one id: chown recorded (user.rootlesscontainers), steps run as root
    UsernsSingle,
    /// No namespace: as root, steps run chrooted in copied snapshots (no /proc, no RUN --mount)
    Chroot,
    /// No namespace, no privilege: steps run under a ptrace supervisor in linked snapshots
    /// (copied up before a change), root played and chown recorded
    Ptrace,
}

/// `umstage build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Context directory (files COPY and ADD can read); `-` reads a tar context or a Dockerfile from standard input
    #[arg(value_name = "CONTEXT")]
    pub context: PathBuf,

    /// Dockerfile to use; `-` reads it from standard input [default: CONTEXT/Dockerfile, else CONTEXT/dockerfile]
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// Name for the image (repeatable): goes in the archive and is the push target
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,

    /// Output: a path for the image archive, or type=oci|docker|local|tar|registry[,dest=…][,name=…][,compression=gzip|zstd|uncompressed]
    #[arg(short = 'o', long = "output", value_name = "PATH|SPEC")]
    pub outputs: Vec<Output>,

    /// Stage to build [default: the last one]
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,

    /// Build argument (repeatable); with no value, taken from the environment
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub build_args: Vec<String>,

    /// Extra named context (repeatable): NAME=DIR, NAME=docker-image://REF or NAME=oci-layout:///PATH[:TAG]
    #[arg(long = "build-context", value_name = "NAME=SOURCE")]
    pub build_contexts: Vec<BuildContext>,

    /// Target platform (OS/ARCH[/VARIANT]); RUN steps for another architecture need the kernel's binfmt emulation
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,

    /// Do not use the cache for any step
    #[arg(
        long,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value_t = false,
        default_missing_value = "true",
        hide_possible_values = true,
        value_name = "BOOL"
    )]
    pub no_cache: bool,

    /// Do not use the cache for these stages (repeatable or comma-separated)
    #[arg(long = "no-cache-filter", value_name = "STAGE", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,

    /// Read step results from a cache (repeatable): type=local,src=DIR[,digest=D], type=registry,ref=REF, or REF
    #[arg(long = "cache-from", value_name = "SPEC", value_parser = umstage_build::cache::spec::parse_import)]
    pub cache_from: Vec<umstage_build::cache::spec::CacheImport>,

    /// Write the build's step results to a cache (repeatable): type=local,dest=DIR[,mode=min|max], type=registry,ref=REF[,mode=min|max] or type=inline; local and registry take compression=, compression-level=, force-compression=, oci-mediatypes= and image-manifest= as buildx does
    #[arg(long = "cache-to", value_name = "SPEC", value_parser = umstage_build::cache::spec::parse_export)]
    pub cache_to: Vec<umstage_build::cache::spec::CacheExport>,

    /// Progress display
    #[arg(long, value_enum, default_value = "auto", value_name = "MODE")]
    pub progress: ProgressMode,

    /// Quiet: show no progress, print the image id when done
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Network for RUN steps: default, none or host
    #[arg(long, default_value = "default", value_name = "MODE", value_parser = umstage_build::options::parse_network)]
    pub network: Network,

    /// Secret for RUN --mount=type=secret (repeatable): id=ID[,src=PATH|env=VAR]
    #[arg(long = "secret", value_name = "SPEC")]
    pub secrets: Vec<Secret>,

    /// ssh-agent socket for RUN --mount=type=ssh (repeatable): default (uses $SSH_AUTH_SOCK) or ID=SOCKET
    #[arg(long = "ssh", value_name = "ID[=SOCKET]")]
    pub ssh: Vec<SshAgent>,

    /// Grant an entitlement (repeatable): security.insecure (RUN --security=insecure), network.host (RUN --network=host)
    #[arg(long = "allow", value_name = "ENTITLEMENT", value_delimiter = ',')]
    pub allow: Vec<umstage_build::request::Entitlement>,

    /// Label to set on the image (repeatable)
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,

    /// Write the image id (config digest) to this file
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,

    /// Write build results (digests, names) as JSON to this file
    #[arg(long = "metadata-file", value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,

    /// Snapshotter for the build's filesystems
    #[arg(long, default_value = "auto", value_name = "NAME", value_parser = snapshotter())]
    pub snapshotter: DriverChoice,

    /// Sandbox tier for RUN steps
    #[arg(long, value_enum, default_value = "auto", value_name = "TIER")]
    pub sandbox: SandboxChoice,

    /// Registry host to reach over plain HTTP (repeatable); loopback registries need none
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,

    /// Push the image to the registry named by -t (same as --output type=registry)
    #[arg(
        long,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value_t = false,
        default_missing_value = "true",
        hide_possible_values = true,
        value_name = "BOOL"
    )]
    pub push: bool,

    /// Run the build checks (lint rules) only, build nothing; exit 1 if any is found
    #[arg(long)]
    pub check: bool,

    /// Resolve base image tags in the registry again: umstage always does, on every build (accepted as docker and buildx take it)
    #[arg(
        long,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value_t = false,
        default_missing_value = "true",
        hide_possible_values = true,
        value_name = "BOOL"
    )]
    pub pull: bool,

    /// Add a line to RUN's /etc/hosts (repeatable): HOST:IP (or HOST=IP)
    #[arg(long = "add-host", value_name = "HOST:IP")]
    pub add_hosts: Vec<umstage_build::step_options::AddHost>,

    /// Size of RUN's /dev/shm: bytes, or a number with k, m, g [default: 64m]
    #[arg(long = "shm-size", value_name = "SIZE", value_parser = parse_shm_size)]
    pub shm_size: Option<u64>,

    /// Resource limit of RUN steps (repeatable): NAME=SOFT[:HARD], such as nofile=1024:2048 (-1 is unlimited)
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    pub ulimits: Vec<umstage_snapshot::sandbox::Ulimit>,

    /// OCI annotation (repeatable): [manifest:|index:]KEY=VALUE, on the image manifest (default) or the index
    #[arg(long = "annotation", value_name = "[LEVEL:]KEY=VALUE")]
    pub annotations: Vec<umstage_build::annotation::Annotation>,

    /// Load the image into docker (or podman, whichever is there) when the build is done
    #[arg(
        long,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value_t = false,
        default_missing_value = "true",
        hide_possible_values = true,
        value_name = "BOOL"
    )]
    pub load: bool,

    /// Stages to build at the same time [default: twice the number of cores]
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,
}

/// `umstage info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// `umstage prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove everything: cache, snapshots, blobs and pulled images
    #[arg(short = 'a', long)]
    pub all: bool,

    /// Keep the most recently used data up to this size (such as 10GB or 512MiB)
    #[arg(long = "keep-storage", value_name = "SIZE", value_parser = parse_size)]
    pub keep_storage: Option<u64>,
}

/// A level or a `RUST_LOG` filter, checked as the logger will read it. A lone word must be a
/// level: as a filter it would name a module, so a misspelt level would pass unnoticed.
fn parse_log_level(text: &str) -> Result<String, String> {
    const HINT: &str =
        "use error, warn, info, debug or trace, or a filter such as umstage_build=debug";
    if !text.contains(['=', ',', '['])
        && text
            .parse::<tracing_subscriber::filter::LevelFilter>()
            .is_err()
    {
        return Err(format!("not a level: {HINT}"));
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(text)
        .map(|_| text.to_owned())
        .map_err(|e| format!("{e}: {HINT}"))
}

/// `--snapshotter`'s names, listed with what each means, parsed once into the snapshot
/// crate's own choice.
fn snapshotter() -> impl clap::builder::TypedValueParser<Value = DriverChoice> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new([
        PossibleValue::new("auto").help("The best one that works here"),
        PossibleValue::new("overlay").help("overlayfs inside the user namespace"),
        PossibleValue::new("native")
            .help("Plain copies (reflinks where possible); works everywhere"),
    ])
    .try_map(|name| name.parse::<DriverChoice>())
}

fn parse_shm_size(text: &str) -> Result<u64, String> {
    umstage_build::step_options::parse_shm_size(text).map_err(|e| e.to_string())
}

fn parse_size(text: &str) -> Result<u64, String> {
    umstage_build::options::parse_size(text).map_err(|e| e.to_string())
}

/// `umstage debug …`.
#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Print the Dockerfile's parse tree in BuildKit's dump format
    Parse {
        /// The Dockerfile; `-` reads standard input
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn log_levels_and_filters_are_checked() {
        for good in ["warn", "DEBUG", "umstage_build=debug,info", "off"] {
            let cli = Cli::try_parse_from(["umstage", "--log-level", good, "info"]);
            assert!(cli.is_ok_and(|c| c.log_level == good), "{good}");
        }
        for bad in ["((((", "loud", "umstage=[", "x=verbose"] {
            let err = Cli::try_parse_from(["umstage", "info", "--log-level", bad])
                .err()
                .unwrap_or_else(|| panic!("{bad} was accepted"));
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains(&format!("'{bad}'")), "{err}");
        }
    }

    #[test]
    fn a_full_build_command_parses() {
        let cli = Cli::try_parse_from([
            "umstage",
            "build",
            "-f",
            "-",
            "-t",
            "a:1",
            "-t",
            "b",
            "-o",
            "image.tar",
            "--target",
            "app",
            "--build-arg",
            "X=1",
            "--build-arg",
            "Y",
            "--build-context",
            "base=oci-layout:///l:t",
            "--platform",
            "linux/amd64",
            "--no-cache",
            "--no-cache-filter",
            "a,b",
            "--progress",
            "plain",
            "--network",
            "none",
            "--secret",
            "id=s,src=/f",
            "--label",
            "k=v",
            "--iidfile",
            "iid",
            "--metadata-file",
            "m.json",
            "--root",
            "/state",
            "--snapshotter",
            "native",
            "--insecure-registry",
            "h:5000",
            "--push",
            "-j",
            "2",
            "--pull",
            "--add-host",
            "db:10.0.0.1",
            "--shm-size",
            "1g",
            "--ulimit",
            "nofile=10:20",
            "--annotation",
            "index:k=v",
            "--load",
            ".",
        ]);
        let Ok(Cli {
            command: Command::Build(b),
            root,
            ..
        }) = cli
        else {
            panic!("did not parse: {cli:?}");
        };
        assert_eq!(root, Some(PathBuf::from("/state")));
        assert_eq!(b.tags, ["a:1", "b"]);
        assert_eq!(b.no_cache_filter, ["a", "b"]);
        assert_eq!(b.network, Network::None);
        assert_eq!(b.jobs, Some(2));
        assert!(b.pull && b.load);
        assert_eq!(b.add_hosts.len(), 1);
        assert_eq!(b.shm_size, Some(1 << 30));
        assert_eq!((b.ulimits.len(), b.annotations.len()), (1, 1));
    }

    #[test]
    fn docker_boolean_flags_take_an_optional_value_as_pflag_does() {
        let build = |args: &[&str]| match Cli::try_parse_from(args) {
            Ok(Cli {
                command: Command::Build(b),
                ..
            }) => Some((b.pull, b.no_cache, b.push, b.load)),
            _ => None,
        };
        let base = ["umstage", "build"];
        let with = |extra: &[&'static str]| {
            let mut a: Vec<&str> = base.to_vec();
            a.extend_from_slice(extra);
            a.push(".");
            build(&a)
        };
        assert_eq!(
            with(&["--pull", "--no-cache"]),
            Some((true, true, false, false))
        );
        assert_eq!(
            with(&["--pull=true", "--no-cache=false", "--load=true"]),
            Some((true, false, false, true))
        );
        assert_eq!(with(&[]), Some((false, false, false, false)));
        // The value needs its `=`: a bare word after the flag is still the context.
        assert_eq!(with(&["--pull=maybe"]), None);
    }

    #[test]
    fn bad_usage_is_a_clap_error_with_exit_code_2() {
        for args in [
            vec!["umstage", "build"],
            vec!["umstage", "build", "--bogus", "."],
            vec!["umstage", "build", "--network", "wifi", "."],
            vec!["umstage", "build", "-o", "type=floppy,dest=x", "."],
            vec!["umstage", "build", "-j", "0", "."],
            vec!["umstage", "prune", "--keep-storage", "lots"],
        ] {
            let err = Cli::try_parse_from(&args).err();
            assert_eq!(err.map(|e| e.exit_code()), Some(2), "{args:?}");
        }
    }
}
