//! Typed instructions with validated flags, built from syntax-tree nodes.
//!
//! The command types are here; `typing` builds them from nodes, with `flags`
//! checking each instruction's `--flag`s; `values` parses the value syntaxes
//! instructions share (ports, durations).

mod flags;
mod typing;
mod values;

pub(crate) use typing::type_node;
pub use values::{PortError, exposed_ports, parse_duration};

use std::time::Duration;

use crate::mount::Mount;
use crate::syntax::{Heredoc, parse_heredoc};

/// Every instruction keyword, upper-case.
pub const INSTRUCTIONS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// The SHELL a stage starts with on Linux.
pub const DEFAULT_SHELL: &[&str] = &["/bin/sh", "-c"];

/// A command line in exec (JSON) form or shell form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// `["prog", "arg"]`: run directly, no shell.
    Exec(Vec<String>),
    /// `prog arg`: run through the stage's SHELL.
    Shell(String),
}

impl CommandLine {
    /// The words as BuildKit stores them: the exec list, or the shell text as one word.
    pub fn args(&self) -> Vec<String> {
        match self {
            CommandLine::Exec(v) => v.clone(),
            CommandLine::Shell(s) => vec![s.clone()],
        }
    }

    /// The full argv given a SHELL (e.g. `["/bin/sh", "-c"]`).
    pub fn argv(&self, shell: &[String]) -> Vec<String> {
        match self {
            CommandLine::Exec(v) => v.clone(),
            CommandLine::Shell(s) => shell.iter().cloned().chain([s.clone()]).collect(),
        }
    }
}

/// A `key=value` pair from ENV or LABEL, unexpanded until [`crate::Instruction::expand`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

/// One name declared by ARG, with its default if given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    /// The argument name.
    pub name: String,
    /// The default value (unexpanded), if `NAME=value` was written.
    pub default: Option<String>,
}

/// `FROM [--platform=P] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    /// The base: image reference, `scratch` or a stage name (unexpanded).
    pub base: String,
    /// The stage name, lower-cased, if `AS name` was given.
    pub name: Option<String>,
    /// The stage name as written.
    pub name_as_written: Option<String>,
    /// The `AS` keyword as written, for casing checks.
    pub as_keyword: Option<String>,
    /// `--platform` value (unexpanded).
    pub platform: Option<String>,
}

/// `RUN --network` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    /// The default network.
    Default,
    /// No network access.
    None,
    /// The host's network.
    Host,
}

/// `RUN --security` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityMode {
    /// The default sandbox.
    Sandbox,
    /// Elevated privileges (needs an entitlement).
    Insecure,
}

/// `RUN [flags] command`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The command.
    pub command: CommandLine,
    /// `--mount` values as written.
    pub mount_flags: Vec<String>,
    /// The parsed mounts: final after [`crate::Instruction::expand`]; before it, values with `$` are raw.
    pub mounts: Vec<Mount>,
    /// `--network`.
    pub network: Option<NetworkMode>,
    /// `--security`.
    pub security: Option<SecurityMode>,
    /// `--device` values (CDI device names, optionally `,required`).
    pub devices: Vec<String>,
    /// Here-documents on the line.
    pub heredocs: Vec<Heredoc>,
}

/// What a RUN executes once its here-documents are taken into account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunScript {
    /// Run this argv directly (exec form).
    Exec(Vec<String>),
    /// Run this text with the stage's SHELL.
    Shell(String),
    /// A lone heredoc starting with `#!`: write `data` to a file named `name`, make it executable and run it.
    File {
        /// File name (the heredoc name).
        name: String,
        /// File contents.
        data: String,
    },
}

impl Run {
    /// The command to execute, as BuildKit derives it from the line and its heredocs.
    pub fn script(&self) -> RunScript {
        match &self.command {
            CommandLine::Exec(v) => RunScript::Exec(v.clone()),
            CommandLine::Shell(s) if self.heredocs.is_empty() => RunScript::Shell(s.clone()),
            CommandLine::Shell(s) => {
                let lone = parse_heredoc(s.trim()).ok().flatten();
                match (lone, self.heredocs.first()) {
                    (Some(_), Some(doc)) => {
                        let data = doc.body();
                        if doc.content.starts_with("#!") {
                            RunScript::File {
                                name: doc.name.clone(),
                                data,
                            }
                        } else {
                            RunScript::Shell(data)
                        }
                    }
                    _ => {
                        let mut full = s.clone();
                        for d in &self.heredocs {
                            full.push('\n');
                            full.push_str(&d.content);
                            full.push_str(&d.name);
                        }
                        RunScript::Shell(full)
                    }
                }
            }
        }
    }
}

/// An inline source given by a heredoc in COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineSource {
    /// The file name to create (the heredoc name).
    pub name: String,
    /// The contents (tabs already chomped for `<<-`).
    pub data: String,
    /// Whether variables in `data` are expanded.
    pub expand: bool,
}

/// Sources and destination shared by COPY and ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// Source paths or URLs.
    pub paths: Vec<String>,
    /// Heredoc sources.
    pub inline: Vec<InlineSource>,
    /// The destination path.
    pub dest: String,
}

/// `COPY [flags] src... dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// Sources and destination.
    pub sources: Sources,
    /// `--from`: stage name, index or image.
    pub from: Option<String>,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
}

/// `ADD [flags] src... dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Add {
    /// Sources and destination.
    pub sources: Sources,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// `--checksum` for remote sources.
    pub checksum: Option<String>,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
    /// `--unpack`: `Some(false)` turns off archive extraction, `Some(true)` forces it for URLs.
    pub unpack: Option<bool>,
    /// `--parents`.
    pub parents: bool,
}

/// HEALTHCHECK options (zero durations mean "inherit the default").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthOptions {
    /// `--interval`.
    pub interval: Duration,
    /// `--timeout`.
    pub timeout: Duration,
    /// `--start-period`.
    pub start_period: Duration,
    /// `--start-interval`.
    pub start_interval: Duration,
    /// `--retries`.
    pub retries: u32,
}

/// `HEALTHCHECK NONE` or `HEALTHCHECK [options] CMD command`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// Disable any inherited healthcheck.
    None,
    /// Run `test` (image-config form: `["CMD", …]` or `["CMD-SHELL", "…"]`).
    Cmd {
        /// The test in image-config form.
        test: Vec<String>,
        /// Timing options.
        options: HealthOptions,
    },
}

/// One typed instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// FROM.
    From(From),
    /// RUN.
    Run(Run),
    /// CMD.
    Cmd(CommandLine),
    /// ENTRYPOINT.
    Entrypoint(CommandLine),
    /// LABEL.
    Label(Vec<KeyValue>),
    /// MAINTAINER (deprecated).
    Maintainer(String),
    /// EXPOSE ports (`80`, `53/udp`, unexpanded).
    Expose(Vec<String>),
    /// ENV.
    Env(Vec<KeyValue>),
    /// ADD.
    Add(Add),
    /// COPY.
    Copy(Copy),
    /// VOLUME paths.
    Volume(Vec<String>),
    /// USER `user[:group]`.
    User(String),
    /// WORKDIR path.
    Workdir(String),
    /// ARG declarations.
    Arg(Vec<ArgDecl>),
    /// ONBUILD: the trigger instruction's text, parseable with [`crate::parse_instruction`].
    Onbuild(String),
    /// STOPSIGNAL.
    StopSignal(String),
    /// HEALTHCHECK.
    Healthcheck(Healthcheck),
    /// SHELL (always exec form).
    Shell(Vec<String>),
}

impl Command {
    /// The keyword, upper-case.
    pub fn name(&self) -> &'static str {
        match self {
            Command::From(_) => "FROM",
            Command::Run(_) => "RUN",
            Command::Cmd(_) => "CMD",
            Command::Entrypoint(_) => "ENTRYPOINT",
            Command::Label(_) => "LABEL",
            Command::Maintainer(_) => "MAINTAINER",
            Command::Expose(_) => "EXPOSE",
            Command::Env(_) => "ENV",
            Command::Add(_) => "ADD",
            Command::Copy(_) => "COPY",
            Command::Volume(_) => "VOLUME",
            Command::User(_) => "USER",
            Command::Workdir(_) => "WORKDIR",
            Command::Arg(_) => "ARG",
            Command::Onbuild(_) => "ONBUILD",
            Command::StopSignal(_) => "STOPSIGNAL",
            Command::Healthcheck(_) => "HEALTHCHECK",
            Command::Shell(_) => "SHELL",
        }
    }
}
