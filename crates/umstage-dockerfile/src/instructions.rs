//! Typed instructions with validated flags, built from syntax-tree nodes.

use std::time::Duration;

use crate::mount::{Mount, parse_mount};
use crate::syntax::{Heredoc, Node, chomp_heredoc, keyword_lower, parse_heredoc};

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

/// Normalizes EXPOSE words into image-config port keys (`80/tcp`), expanding ranges
/// (`8000-8002/udp`) and accepting Docker's `[ip:][hostport:]port[/proto]` forms.
pub fn exposed_ports(words: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for w in words {
        let (spec, proto) = match w.rsplit_once('/') {
            Some((p, proto)) => (p, proto.to_ascii_lowercase()),
            None => (w.as_str(), "tcp".to_owned()),
        };
        if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
            return Err(format!("invalid proto: {proto} in EXPOSE {w}"));
        }
        let container = spec.rsplit(':').next().unwrap_or(spec);
        let (lo, hi) = match container.split_once('-') {
            Some((a, b)) => (a, b),
            None => (container, container),
        };
        let parse = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| format!("invalid containerPort: {container} in EXPOSE {w}"))
        };
        let (lo, hi) = (parse(lo)?, parse(hi)?);
        if hi < lo {
            return Err(format!(
                "invalid range specified for container port: {container}"
            ));
        }
        for p in lo..=hi {
            let key = format!("{p}/{proto}");
            if !out.contains(&key) {
                out.push(key);
            }
        }
    }
    Ok(out)
}

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

/// A problem found while typing a node: message, the flag it concerns, and a suggestion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TypeError {
    pub(crate) message: String,
    pub(crate) flag: Option<String>,
    pub(crate) suggestion: Option<String>,
    pub(crate) unknown_instruction: bool,
}

impl TypeError {
    fn arg(message: impl Into<String>) -> TypeError {
        TypeError {
            message: message.into(),
            flag: None,
            suggestion: None,
            unknown_instruction: false,
        }
    }
    fn flag(flag: &str, message: impl Into<String>) -> TypeError {
        TypeError {
            message: message.into(),
            flag: Some(flag.to_owned()),
            suggestion: None,
            unknown_instruction: false,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FlagType {
    Bool,
    String,
    Strings,
}

/// Parsed `--flag` values for one instruction, checked against what it accepts.
struct Flags {
    values: Vec<(&'static str, Vec<String>)>,
}

impl Flags {
    fn parse(
        keyword: &str,
        raw: &[String],
        allowed: &[(&'static str, FlagType)],
    ) -> Result<Flags, TypeError> {
        let mut values: Vec<(&'static str, Vec<String>)> = Vec::new();
        for arg in raw {
            let Some(body) = arg.strip_prefix("--") else {
                return Err(TypeError::flag(
                    arg,
                    format!("arg should start with -- : {arg}"),
                ));
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(key, ty)) = allowed.iter().find(|(n, _)| *n == name) else {
                let mut e = TypeError::flag(
                    &format!("--{name}"),
                    if allowed.is_empty() {
                        format!("unknown flag: --{name} ({keyword} takes no flags)")
                    } else {
                        format!("unknown flag: --{name}")
                    },
                );
                e.suggestion = crate::error::closest(name, allowed.iter().map(|(n, _)| *n))
                    .map(|s| format!("did you mean --{s}?"));
                return Err(e);
            };
            let seen = values.iter().position(|(n, _)| *n == key);
            if seen.is_some() && ty != FlagType::Strings {
                return Err(TypeError::flag(
                    &format!("--{name}"),
                    format!("duplicate flag specified: --{name}"),
                ));
            }
            let v = match ty {
                FlagType::Bool => {
                    if value == Some("") {
                        return Err(TypeError::flag(
                            &format!("--{name}"),
                            format!("missing a value on flag: --{name}"),
                        ));
                    }
                    match value.map(str::to_ascii_lowercase).as_deref() {
                        None | Some("true") => "true".to_owned(),
                        Some("false") => "false".to_owned(),
                        Some(other) => {
                            return Err(TypeError::flag(
                                &format!("--{name}"),
                                format!("expecting boolean value for flag --{name}, not: {other}"),
                            ));
                        }
                    }
                }
                FlagType::String | FlagType::Strings => match value {
                    Some(v) => v.to_owned(),
                    None => {
                        return Err(TypeError::flag(
                            &format!("--{name}"),
                            format!("missing a value on flag: --{name}"),
                        ));
                    }
                },
            };
            match seen {
                Some(i) => values[i].1.push(v),
                None => values.push((key, vec![v])),
            }
        }
        Ok(Flags { values })
    }

    fn string(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.last().cloned())
    }

    fn strings(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    fn bool(&self, name: &str) -> Option<bool> {
        self.string(name).map(|v| v == "true")
    }
}

/// The node's arguments as a command line, taken out of the node.
fn command_line(node: &mut Node) -> CommandLine {
    let args = std::mem::take(&mut node.args);
    if node.json {
        CommandLine::Exec(args)
    } else if args.len() == 1 {
        CommandLine::Shell(args.into_iter().next().unwrap_or_default())
    } else {
        CommandLine::Shell(args.join(" "))
    }
}

fn exactly_one(node: &mut Node, name: &str) -> Result<String, TypeError> {
    match node.args.as_mut_slice() {
        [one] => Ok(std::mem::take(one)),
        _ => Err(TypeError::arg(format!(
            "{name} requires exactly one argument"
        ))),
    }
}

fn no_flags(node: &Node, name: &str) -> Result<(), TypeError> {
    Flags::parse(name, &node.flags, &[]).map(|_| ())
}

fn key_values(node: &mut Node, name: &str) -> Result<Vec<KeyValue>, TypeError> {
    if node.args.is_empty() {
        return Err(TypeError::arg(format!(
            "{name} requires at least one argument"
        )));
    }
    if !node.args.len().is_multiple_of(3) {
        return Err(TypeError::arg(format!(
            "Bad input to {name}, too many arguments"
        )));
    }
    node.args
        .chunks_mut(3)
        .map(|c| {
            if c[0].is_empty() {
                Err(TypeError::arg(format!("{name} names can not be blank")))
            } else {
                Ok(KeyValue {
                    key: std::mem::take(&mut c[0]),
                    value: std::mem::take(&mut c[1]),
                })
            }
        })
        .collect()
}

fn sources(node: &mut Node, name: &str) -> Result<Sources, TypeError> {
    if node.args.len() < 2 {
        return Err(TypeError::arg(format!(
            "{name} requires at least two arguments, but only one was provided. Destination could not be determined"
        )));
    }
    let mut srcs = std::mem::take(&mut node.args);
    let dest = srcs.pop().unwrap_or_default();
    if !node.json && matches!(parse_heredoc(&dest), Ok(Some(_))) {
        return Err(TypeError::arg(format!(
            "{name} cannot accept a heredoc as a destination"
        )));
    }
    let mut paths = Vec::new();
    let mut inline = Vec::new();
    for src in srcs {
        match (!node.json)
            .then(|| parse_heredoc(&src).ok().flatten())
            .flatten()
        {
            Some(h) => {
                let doc = node.heredocs.iter().find(|d| d.name == h.name);
                let content = doc.map(|d| d.content.clone()).unwrap_or_default();
                inline.push(InlineSource {
                    name: h.name,
                    data: if h.chomp {
                        chomp_heredoc(&content)
                    } else {
                        content
                    },
                    expand: h.expand,
                });
            }
            None => paths.push(src),
        }
    }
    Ok(Sources {
        paths,
        inline,
        dest,
    })
}

/// Parses a Go duration (`1m30s`, `500ms`, `1.5h`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if n == 0 {
            return None;
        }
        let num: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[u..];
        total += num * unit;
    }
    (total.is_finite() && total < 1e10).then(|| Duration::from_secs_f64(total))
}

fn health_duration(flags: &Flags, name: &str) -> Result<Duration, TypeError> {
    let Some(v) = flags.string(name) else {
        return Ok(Duration::ZERO);
    };
    if v.is_empty() {
        return Ok(Duration::ZERO);
    }
    let d = parse_duration(&v).ok_or_else(|| {
        TypeError::flag(
            &format!("--{name}"),
            format!("time: invalid duration \"{v}\" for --{name}"),
        )
    })?;
    if !d.is_zero() && d < Duration::from_millis(1) {
        return Err(TypeError::flag(
            &format!("--{name}"),
            format!("--{name}: interval cannot be less than 1ms"),
        ));
    }
    Ok(d)
}

/// Builds the typed command for one syntax node, taking its arguments and heredocs.
pub(crate) fn type_node(node: &mut Node) -> Result<Command, TypeError> {
    use FlagType::{Bool, String as Str, Strings};
    let mut buf = [0u8; 16];
    let lower = keyword_lower(&node.keyword, &mut buf);
    let k = match INSTRUCTIONS.iter().find(|i| i.eq_ignore_ascii_case(lower)) {
        Some(k) => *k,
        None => "",
    };
    Ok(match k {
        "FROM" => {
            let flags = Flags::parse(k, &node.flags, &[("platform", Str)])?;
            let (name, as_keyword) = match node.args.as_slice() {
                [_] => (None, None),
                [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
                    let lower = name.to_lowercase();
                    let mut chars = lower.chars();
                    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
                        && chars.all(|c| {
                            c.is_ascii_lowercase()
                                || c.is_ascii_digit()
                                || matches!(c, '-' | '_' | '.')
                        });
                    if !valid {
                        return Err(TypeError::arg(format!(
                            "invalid name for build stage: \"{name}\", name can't start with a number or contain symbols"
                        )));
                    }
                    (Some(name.clone()), Some(as_kw.clone()))
                }
                _ => {
                    return Err(TypeError::arg(
                        "FROM requires either one or three arguments",
                    ));
                }
            };
            Command::From(From {
                base: node.args[0].clone(),
                name: name.as_ref().map(|n| n.to_lowercase()),
                name_as_written: name,
                as_keyword,
                platform: flags.string("platform"),
            })
        }
        "RUN" => {
            let flags = Flags::parse(
                k,
                &node.flags,
                &[
                    ("mount", Strings),
                    ("network", Str),
                    ("security", Str),
                    ("device", Strings),
                ],
            )?;
            if node.args.is_empty() && !node.json {
                return Err(TypeError::arg("RUN requires at least one argument"));
            }
            let network = match flags.string("network").as_deref() {
                None => None,
                Some("default") => Some(NetworkMode::Default),
                Some("none") => Some(NetworkMode::None),
                Some("host") => Some(NetworkMode::Host),
                Some(other) => {
                    return Err(TypeError::flag(
                        "--network",
                        format!(
                            "--network: unsupported network mode \"{other}\" (expected default, none or host)"
                        ),
                    ));
                }
            };
            let security = match flags.string("security").as_deref() {
                None => None,
                Some("sandbox") => Some(SecurityMode::Sandbox),
                Some("insecure") => Some(SecurityMode::Insecure),
                Some(other) => {
                    return Err(TypeError::flag(
                        "--security",
                        format!(
                            "--security: unsupported security mode \"{other}\" (expected sandbox or insecure)"
                        ),
                    ));
                }
            };
            let mount_flags = flags.strings("mount");
            let mounts = mount_flags
                .iter()
                .map(|m| {
                    parse_mount(m, None)
                        .map_err(|e| TypeError::flag("--mount", format!("--mount: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Command::Run(Run {
                command: command_line(node),
                mount_flags,
                mounts,
                network,
                security,
                devices: flags.strings("device"),
                heredocs: std::mem::take(&mut node.heredocs),
            })
        }
        "CMD" => {
            no_flags(node, k)?;
            Command::Cmd(command_line(node))
        }
        "ENTRYPOINT" => {
            no_flags(node, k)?;
            Command::Entrypoint(command_line(node))
        }
        "LABEL" => {
            no_flags(node, k)?;
            Command::Label(key_values(node, k)?)
        }
        "ENV" => {
            no_flags(node, k)?;
            Command::Env(key_values(node, k)?)
        }
        "MAINTAINER" => {
            no_flags(node, k)?;
            Command::Maintainer(exactly_one(node, k)?)
        }
        "EXPOSE" => {
            no_flags(node, k)?;
            if node.args.is_empty() {
                return Err(TypeError::arg("EXPOSE requires at least one argument"));
            }
            Command::Expose(std::mem::take(&mut node.args))
        }
        "ADD" => {
            let flags = Flags::parse(
                k,
                &node.flags,
                &[
                    ("chown", Str),
                    ("chmod", Str),
                    ("link", Bool),
                    ("keep-git-dir", Bool),
                    ("checksum", Str),
                    ("exclude", Strings),
                    ("unpack", Bool),
                    ("parents", Bool),
                ],
            )?;
            Command::Add(Add {
                sources: sources(node, k)?,
                chown: flags.string("chown"),
                chmod: flags.string("chmod"),
                link: flags.bool("link").unwrap_or(false),
                keep_git_dir: flags.bool("keep-git-dir").unwrap_or(false),
                checksum: flags.string("checksum"),
                excludes: flags.strings("exclude"),
                unpack: flags.bool("unpack"),
                parents: flags.bool("parents").unwrap_or(false),
            })
        }
        "COPY" => {
            let flags = Flags::parse(
                k,
                &node.flags,
                &[
                    ("from", Str),
                    ("chown", Str),
                    ("chmod", Str),
                    ("link", Bool),
                    ("parents", Bool),
                    ("exclude", Strings),
                ],
            )?;
            if flags.string("from").is_some_and(|f| f.is_empty()) {
                return Err(TypeError::flag("--from", "missing a value on flag: --from"));
            }
            Command::Copy(Copy {
                sources: sources(node, k)?,
                from: flags.string("from"),
                chown: flags.string("chown"),
                chmod: flags.string("chmod"),
                link: flags.bool("link").unwrap_or(false),
                parents: flags.bool("parents").unwrap_or(false),
                excludes: flags.strings("exclude"),
            })
        }
        "VOLUME" => {
            no_flags(node, k)?;
            if node.args.is_empty() {
                return Err(TypeError::arg("VOLUME requires at least one argument"));
            }
            let mut v = Vec::new();
            for a in &node.args {
                let t = a.trim();
                if t.is_empty() {
                    return Err(TypeError::arg(
                        "VOLUME specified can not be an empty string",
                    ));
                }
                v.push(t.to_owned());
            }
            Command::Volume(v)
        }
        "USER" => {
            no_flags(node, k)?;
            Command::User(exactly_one(node, k)?)
        }
        "WORKDIR" => {
            no_flags(node, k)?;
            Command::Workdir(exactly_one(node, k)?)
        }
        "ARG" => {
            no_flags(node, k)?;
            if node.args.is_empty() {
                return Err(TypeError::arg("ARG requires at least one argument"));
            }
            let mut decls = Vec::new();
            for a in &node.args {
                let decl = match a.split_once('=') {
                    Some(("", _)) => return Err(TypeError::arg("ARG names can not be blank")),
                    Some((n, v)) => ArgDecl {
                        name: n.to_owned(),
                        default: Some(v.to_owned()),
                    },
                    None => ArgDecl {
                        name: a.clone(),
                        default: None,
                    },
                };
                decls.push(decl);
            }
            Command::Arg(decls)
        }
        "ONBUILD" => {
            no_flags(node, k)?;
            let Some(child) = &node.child else {
                return Err(TypeError::arg("ONBUILD requires at least one argument"));
            };
            let trigger = child.keyword.to_ascii_uppercase();
            match trigger.as_str() {
                "ONBUILD" => {
                    return Err(TypeError::arg(
                        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                    ));
                }
                "MAINTAINER" | "FROM" => {
                    return Err(TypeError::arg(format!(
                        "{trigger} isn't allowed as an ONBUILD trigger"
                    )));
                }
                _ => {}
            }
            type_node(&mut child.as_ref().clone())?;
            let mut expression = strip_onbuild(&node.original).to_owned();
            for d in &node.heredocs {
                expression.push('\n');
                expression.push_str(&d.content);
                expression.push_str(&d.name);
            }
            Command::Onbuild(expression)
        }
        "STOPSIGNAL" => {
            no_flags(node, k)?;
            Command::StopSignal(exactly_one(node, k)?)
        }
        "HEALTHCHECK" => {
            let Some(typ) = node.args.first() else {
                return Err(TypeError::arg("HEALTHCHECK requires at least one argument"));
            };
            let typ = typ.to_ascii_uppercase();
            let rest = &node.args[1..];
            if typ == "NONE" {
                if !rest.is_empty() || !node.flags.is_empty() {
                    return Err(TypeError::arg("HEALTHCHECK NONE takes no arguments"));
                }
                Command::Healthcheck(Healthcheck::None)
            } else {
                let flags = Flags::parse(
                    k,
                    &node.flags,
                    &[
                        ("interval", Str),
                        ("timeout", Str),
                        ("start-period", Str),
                        ("start-interval", Str),
                        ("retries", Str),
                    ],
                )?;
                if typ != "CMD" {
                    return Err(TypeError::arg(format!(
                        "Unknown type \"{typ}\" in HEALTHCHECK (try CMD)"
                    )));
                }
                if rest.is_empty() {
                    return Err(TypeError::arg("Missing command after HEALTHCHECK CMD"));
                }
                let test = if node.json {
                    std::iter::once("CMD".to_owned())
                        .chain(rest.iter().cloned())
                        .collect()
                } else {
                    vec!["CMD-SHELL".to_owned(), rest.join(" ")]
                };
                let retries = match flags.string("retries") {
                    None => 0,
                    Some(v) if v.is_empty() => 0,
                    Some(v) => match v.parse::<i64>() {
                        Ok(n) if n < 0 => {
                            return Err(TypeError::flag(
                                "--retries",
                                format!("--retries cannot be negative ({n})"),
                            ));
                        }
                        Ok(n) => u32::try_from(n).map_err(|_| {
                            TypeError::flag(
                                "--retries",
                                format!("--retries value out of range: {v}"),
                            )
                        })?,
                        Err(_) => {
                            return Err(TypeError::flag(
                                "--retries",
                                format!("invalid value for --retries: {v}"),
                            ));
                        }
                    },
                };
                Command::Healthcheck(Healthcheck::Cmd {
                    test,
                    options: HealthOptions {
                        interval: health_duration(&flags, "interval")?,
                        timeout: health_duration(&flags, "timeout")?,
                        start_period: health_duration(&flags, "start-period")?,
                        start_interval: health_duration(&flags, "start-interval")?,
                        retries,
                    },
                })
            }
        }
        "SHELL" => {
            no_flags(node, k)?;
            if node.args.is_empty() {
                return Err(TypeError::arg("SHELL requires at least one argument"));
            }
            if !node.json {
                let mut e = TypeError::arg("SHELL requires the arguments to be in JSON form");
                e.suggestion = Some(format!("write SHELL [\"{}\"]", node.args.join("\", \"")));
                return Err(e);
            }
            Command::Shell(std::mem::take(&mut node.args))
        }
        _ => {
            let mut e = TypeError::arg(format!("unknown instruction \"{}\"", node.keyword));
            e.unknown_instruction = true;
            e.suggestion = crate::error::closest(&node.keyword, INSTRUCTIONS.iter().copied())
                .map(|s| format!("did you mean {s}?"));
            return Err(e);
        }
    })
}

fn strip_onbuild(original: &str) -> &str {
    let t = original.trim_start();
    match t.get(..7) {
        Some(k) if k.eq_ignore_ascii_case("onbuild") => t[7..].trim_start(),
        _ => t,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn port_specs() {
        let w = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            exposed_ports(&w(&["80", "53/UDP"])).unwrap(),
            ["80/tcp", "53/udp"]
        );
        assert_eq!(
            exposed_ports(&w(&["8000-8002/udp"])).unwrap(),
            ["8000/udp", "8001/udp", "8002/udp"]
        );
        assert_eq!(
            exposed_ports(&w(&["127.0.0.1:8080:80"])).unwrap(),
            ["80/tcp"]
        );
        assert!(exposed_ports(&w(&["http"])).is_err());
        assert!(exposed_ports(&w(&["80/xyz"])).is_err());
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("x"), None);
    }
}
