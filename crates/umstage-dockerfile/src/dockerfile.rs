//! The typed Dockerfile: stages of located instructions, meta ARGs, expansion and scoping.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::error::{Error, ErrorKind};
use crate::instructions::{Add, ArgDecl, Command, Copy, KeyValue, Run, type_node};
use crate::mount::parse_mount;
use crate::shell::{Env, ExpandError, Growth, Lexer};
use crate::span::{Pos, Span};
use crate::syntax::{Ast, Directives, Node, Warning, parse_ast};

/// The file a Dockerfile came from: its name, text and escape token, shared by its instructions.
#[derive(Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// The file name given to [`crate::parse`].
    pub name: String,
    /// The full text.
    pub text: String,
    /// The escape token in force.
    pub escape: char,
}

impl SourceFile {
    /// The 1-based line `n` without its newline.
    pub fn line(&self, n: usize) -> Option<&str> {
        self.text
            .strip_prefix('\u{feff}')
            .unwrap_or(&self.text)
            .split('\n')
            .nth(n.checked_sub(1)?)
            .map(|l| l.trim_end_matches('\r'))
    }
}

/// One instruction with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// The typed command.
    pub command: Command,
    /// The keyword as written.
    pub keyword: String,
    /// Where the instruction is.
    pub span: Span,
    /// The logical line after joining continuations.
    pub original: String,
    /// The file this came from.
    pub source: Arc<SourceFile>,
}

/// A build stage: from its FROM to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Position among the stages, from 0.
    pub index: usize,
    /// The stage name, lower-cased (names are case-insensitive).
    pub name: Option<String>,
    /// The stage name as written, for display.
    pub name_as_written: Option<String>,
    /// The base as written (unexpanded): image reference, `scratch` or a stage name.
    pub base: String,
    /// `--platform` as written (unexpanded).
    pub platform: Option<String>,
    /// The FROM instruction.
    pub from: Instruction,
    /// The instructions after FROM.
    pub instructions: Vec<Instruction>,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The source file.
    pub source: Arc<SourceFile>,
    /// Parser directives.
    pub directives: Directives,
    /// ARG instructions before the first FROM.
    pub meta_args: Vec<Instruction>,
    /// The stages, in order.
    pub stages: Vec<Stage>,
    /// Parser warnings (empty continuation lines).
    pub warnings: Vec<Warning>,
}

/// Parses and types a Dockerfile: every instruction checked, stages split (lint findings are
/// computed on request, by `Dockerfile::lints` in the lint module).
pub fn parse(file: &str, text: &str) -> Result<Dockerfile, Error> {
    let ast = parse_ast(file, text)?;
    let source = Arc::new(SourceFile {
        name: file.to_owned(),
        text: text.to_owned(),
        escape: ast.directives.escape,
    });
    from_ast(ast, source)
}

/// Parses one instruction's text, such as an ONBUILD trigger stored in an image config.
pub fn parse_instruction(file: &str, text: &str) -> Result<Instruction, Error> {
    let ast = parse_ast(file, text)?;
    let source = Arc::new(SourceFile {
        name: file.to_owned(),
        text: text.to_owned(),
        escape: ast.directives.escape,
    });
    let mut node = ast.nodes.into_iter().next().ok_or_else(|| {
        Error::new(
            ErrorKind::Structure,
            file,
            Span::default(),
            "no instruction",
        )
    })?;
    typed(&mut node, &source)
}

/// Types `node`, moving its text into the instruction.
fn typed(node: &mut Node, source: &Arc<SourceFile>) -> Result<Instruction, Error> {
    let command = type_node(node).map_err(|e| {
        let span = e
            .flag
            .as_deref()
            .and_then(|f| find_in_line(source, node.span.start, f))
            .unwrap_or(Span::new(
                node.span.start,
                Pos::new(
                    node.span.start.line,
                    node.span.start.col + node.keyword.chars().count(),
                ),
            ));
        let kind = if e.unknown_instruction {
            ErrorKind::UnknownInstruction
        } else if e.flag.is_some() {
            ErrorKind::Flag
        } else {
            ErrorKind::Argument
        };
        Error::new(kind, &source.name, span, e.message)
            .with_suggestion(e.suggestion)
            .with_source(&source.text)
    })?;
    Ok(Instruction {
        command,
        keyword: std::mem::take(&mut node.keyword),
        span: node.span,
        original: std::mem::take(&mut node.original),
        source: Arc::clone(source),
    })
}

/// The span of `needle` on the lines of an instruction starting at `start`, if found.
fn find_in_line(source: &SourceFile, start: Pos, needle: &str) -> Option<Span> {
    for line_no in start.line..start.line + 64 {
        let line = source.line(line_no)?;
        if let Some(i) = line.find(needle) {
            let col = line[..i].chars().count() + 1;
            return Some(Span::on_line(line_no, col, needle.chars().count()));
        }
    }
    None
}

fn from_ast(ast: Ast, source: Arc<SourceFile>) -> Result<Dockerfile, Error> {
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    let last_span = ast.nodes.last().map(|n| n.span).unwrap_or_default();
    for mut node in ast.nodes {
        let instr = typed(&mut node, &source)?;
        match &instr.command {
            Command::From(f) => {
                let (base, name, platform) = (f.base.clone(), f.name.clone(), f.platform.clone());
                let name_as_written = f.name_as_written.clone();
                stages.push(Stage {
                    index: stages.len(),
                    name,
                    name_as_written,
                    base,
                    platform,
                    from: instr,
                    instructions: Vec::new(),
                });
            }
            Command::Arg(_) if stages.is_empty() => meta_args.push(instr),
            _ => match stages.last_mut() {
                Some(s) => s.instructions.push(instr),
                None => {
                    return Err(instr
                        .error(ErrorKind::Structure, format!("{} instruction before the first FROM: no build stage in current context", instr.command.name()))
                        .with_suggestion(Some("add a FROM instruction first".into())));
                }
            },
        }
    }
    if stages.is_empty() {
        return Err(Error::new(
            ErrorKind::Structure,
            &source.name,
            last_span,
            "dockerfile contains no stages to build",
        )
        .with_suggestion(Some("add a FROM instruction".into()))
        .with_source(&source.text));
    }
    let df = Dockerfile {
        source,
        directives: ast.directives,
        meta_args,
        stages,
        warnings: ast.warnings,
    };
    Ok(df)
}

impl Instruction {
    /// A located error pointing at this instruction.
    pub fn error(&self, kind: ErrorKind, message: impl Into<String>) -> Error {
        let end = Pos::new(
            self.span.start.line,
            self.span.start.col + self.keyword.chars().count(),
        );
        Error::new(
            kind,
            &self.source.name,
            Span::new(self.span.start, end),
            message,
        )
        .with_source(&self.source.text)
    }

    /// The lexer for this file's escape token.
    pub fn lexer(&self) -> Lexer {
        Lexer::new(self.source.escape)
    }

    /// This instruction's command with every argument BuildKit expands substituted from `env`.
    ///
    /// Expanded: FROM base and platform; ENV and LABEL keys and values; ARG names (defaults are
    /// expanded one by one by [`StageScope::apply`]); ADD/COPY sources, destination, `--chown`,
    /// `--chmod`, `--checksum`, `--exclude` and heredoc bodies marked `expand`; EXPOSE; VOLUME;
    /// USER; WORKDIR; STOPSIGNAL; RUN `--mount` option values (mounts fully typed afterwards).
    /// Never expanded: RUN/CMD/ENTRYPOINT/HEALTHCHECK command text, SHELL, MAINTAINER, ONBUILD,
    /// COPY `--from` (resolved by [`crate::StageGraph`] with the meta ARGs).
    pub fn expand(&self, env: &dyn Env) -> Result<Command, Error> {
        let lx = self.lexer();
        let growth = Growth::default();
        let grown = |w: &str, expanded: String| -> Result<String, Error> {
            growth.add(w, &expanded).map_err(|e| self.expand_error(e))?;
            Ok(expanded)
        };
        let word = |w: &str| -> Result<String, Error> {
            grown(w, lx.expand_word(w, env).map_err(|e| self.expand_error(e))?)
        };
        let opt = |w: &Option<String>| -> Result<Option<String>, Error> {
            w.as_deref().map(word).transpose()
        };
        let list =
            |v: &[String]| -> Result<Vec<String>, Error> { v.iter().map(|w| word(w)).collect() };
        let kvs = |v: &[KeyValue]| -> Result<Vec<KeyValue>, Error> {
            v.iter()
                .map(|kv| {
                    Ok(KeyValue {
                        key: word(&kv.key)?,
                        value: word(&kv.value)?,
                    })
                })
                .collect()
        };
        let heredoc_lx = Lexer {
            skip_quotes: true,
            ..lx
        };
        let sources =
            |s: &crate::instructions::Sources| -> Result<crate::instructions::Sources, Error> {
                let mut inline = s.inline.clone();
                for src in &mut inline {
                    if src.expand {
                        let expanded = heredoc_lx
                            .expand_word(&src.data, env)
                            .map_err(|e| self.expand_error(e))?;
                        src.data = grown(&src.data, expanded)?;
                    }
                }
                Ok(crate::instructions::Sources {
                    paths: list(&s.paths)?,
                    inline,
                    dest: word(&s.dest)?,
                })
            };
        let command = match &self.command {
            Command::From(f) => {
                let mut f = f.clone();
                f.base = word(&f.base)?;
                f.platform = opt(&f.platform)?;
                Command::From(f)
            }
            Command::Env(v) => Command::Env(kvs(v)?),
            Command::Label(v) => Command::Label(kvs(v)?),
            Command::Arg(v) => Command::Arg(
                v.iter()
                    .map(|a| {
                        Ok(ArgDecl {
                            name: word(&a.name)?,
                            default: a.default.clone(),
                        })
                    })
                    .collect::<Result<_, Error>>()?,
            ),
            Command::Copy(c) => Command::Copy(Copy {
                sources: sources(&c.sources)?,
                chown: opt(&c.chown)?,
                chmod: opt(&c.chmod)?,
                excludes: list(&c.excludes)?,
                from: c.from.clone(),
                link: c.link,
                parents: c.parents,
            }),
            Command::Add(a) => Command::Add(Add {
                sources: sources(&a.sources)?,
                chown: opt(&a.chown)?,
                chmod: opt(&a.chmod)?,
                checksum: opt(&a.checksum)?,
                excludes: list(&a.excludes)?,
                link: a.link,
                keep_git_dir: a.keep_git_dir,
                unpack: a.unpack,
                parents: a.parents,
            }),
            Command::Expose(v) => {
                // BuildKit splits EXPOSE words after expansion: `EXPOSE $PORTS` may give several.
                let mut ports = Vec::new();
                for w in v {
                    let words = lx.expand_words(w, env).map_err(|e| self.expand_error(e))?;
                    grown(w, words.concat())?;
                    ports.extend(words);
                }
                crate::instructions::exposed_ports(&ports)
                    .map_err(|m| self.error(ErrorKind::Argument, m))?;
                Command::Expose(ports)
            }
            Command::Volume(v) => Command::Volume(list(v)?),
            Command::User(u) => Command::User(word(u)?),
            Command::Workdir(w) => Command::Workdir(word(w)?),
            Command::StopSignal(s) => Command::StopSignal(word(s)?),
            Command::Run(r) => Command::Run(Run {
                mounts: self.expand_mounts(r, env)?,
                command: r.command.clone(),
                mount_flags: r.mount_flags.clone(),
                network: r.network,
                security: r.security,
                devices: r.devices.clone(),
                heredocs: r.heredocs.clone(),
            }),
            other => other.clone(),
        };
        Ok(command)
    }

    /// The RUN's mounts with option values expanded from `env` and fully validated.
    pub fn expand_mounts(&self, run: &Run, env: &dyn Env) -> Result<Vec<crate::Mount>, Error> {
        let lx = self.lexer();
        let plain = |m: &String| !m.contains(['$', '\'', '"', lx.escape]);
        if run.mount_flags.iter().all(plain) {
            // Expansion would change nothing: the mounts parsed with the instruction are final.
            return Ok(run.mounts.clone());
        }
        let growth = Growth::default();
        let f = |v: &str| {
            let expanded = lx.expand_word(v, env).map_err(|e| e.message)?;
            growth.add(v, &expanded).map_err(|e| e.message)?;
            Ok(expanded)
        };
        run.mount_flags
            .iter()
            .map(|m| {
                parse_mount(m, Some(&f)).map_err(|msg| {
                    let span =
                        find_in_line(&self.source, self.span.start, "--mount").unwrap_or(self.span);
                    Error::new(ErrorKind::Flag, &self.source.name, span, msg)
                        .with_source(&self.source.text)
                })
            })
            .collect()
    }

    fn expand_error(&self, e: ExpandError) -> Error {
        self.error(ErrorKind::Expansion, e.message)
    }
}

/// A platform such as `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// Architecture, e.g. `amd64`.
    pub arch: String,
    /// Variant, e.g. `v8`; empty if none.
    pub variant: String,
}

impl Platform {
    /// The platform this program runs on, in OCI terms.
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", ""),
            "aarch64" => ("arm64", ""),
            "arm" => ("arm", "v7"),
            "x86" => ("386", ""),
            "powerpc64" => ("ppc64le", ""),
            "s390x" => ("s390x", ""),
            "riscv64" => ("riscv64", ""),
            other => (other, ""),
        };
        Platform {
            os: std::env::consts::OS.to_owned(),
            arch: arch.to_owned(),
            variant: variant.to_owned(),
        }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Option<Platform> {
        let mut parts = s.split('/');
        let os = parts.next().filter(|p| !p.is_empty())?;
        let arch = parts.next().filter(|p| !p.is_empty())?;
        let variant = parts.next().unwrap_or("");
        if parts.next().is_some() {
            return None;
        }
        Some(Platform {
            os: os.to_ascii_lowercase(),
            arch: arch.to_ascii_lowercase(),
            variant: variant.to_ascii_lowercase(),
        })
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// Proxy ARGs BuildKit passes to RUN without an ARG declaration (and keeps out of cache keys).
pub const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// The platform ARGs BuildKit predefines in the global scope.
pub const PLATFORM_ARGS: &[&str] = &[
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
];

/// What the user passes to a build: `--build-arg` values and the build and target platforms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildArgs {
    /// `--build-arg NAME=value` overrides.
    pub values: BTreeMap<String, String>,
    /// The platform the build runs on.
    pub build_platform: Platform,
    /// The platform the image is for.
    pub target_platform: Platform,
}

impl Default for BuildArgs {
    fn default() -> Self {
        BuildArgs {
            values: BTreeMap::new(),
            build_platform: Platform::host(),
            target_platform: Platform::host(),
        }
    }
}

impl BuildArgs {
    /// Build args with these overrides, building for the host platform.
    pub fn new(values: impl IntoIterator<Item = (String, String)>) -> BuildArgs {
        BuildArgs {
            values: values.into_iter().collect(),
            ..BuildArgs::default()
        }
    }

    /// The predefined platform ARGs and their values.
    pub fn platform_args(&self) -> Vec<(String, String)> {
        let b = &self.build_platform;
        let t = &self.target_platform;
        [
            ("BUILDPLATFORM", b.to_string()),
            ("BUILDOS", b.os.clone()),
            ("BUILDARCH", b.arch.clone()),
            ("BUILDVARIANT", b.variant.clone()),
            ("TARGETPLATFORM", t.to_string()),
            ("TARGETOS", t.os.clone()),
            ("TARGETARCH", t.arch.clone()),
            ("TARGETVARIANT", t.variant.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// Variables in first-set order with a name index, so scopes with thousands of names stay linear.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Vars<V> {
    entries: Vec<(String, V)>,
    index: HashMap<String, usize>,
}

impl<V> Default for Vars<V> {
    fn default() -> Self {
        Vars {
            entries: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<V> Vars<V> {
    fn get(&self, name: &str) -> Option<&V> {
        self.index.get(name).map(|&i| &self.entries[i].1)
    }

    /// Sets `name`, replacing an earlier value in place.
    fn set(&mut self, name: &str, value: V) {
        match self.index.get(name) {
            Some(&i) => self.entries[i].1 = value,
            None => {
                self.index.insert(name.to_owned(), self.entries.len());
                self.entries.push((name.to_owned(), value));
            }
        }
    }
}

/// The global scope: the meta ARGs (before the first FROM) and the predefined platform ARGs.
/// It is the environment for FROM lines and `COPY --from` names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetaScope {
    vars: Vars<Option<String>>,
}

impl Env for MetaScope {
    fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).and_then(|v| v.as_deref())
    }
}

impl MetaScope {
    /// Every global name with its value (`None`: declared without a value), in declaration order.
    pub fn vars(&self) -> &[(String, Option<String>)] {
        &self.vars.entries
    }

    /// Whether `name` is declared globally (with or without a value).
    pub fn declares(&self, name: &str) -> bool {
        self.vars.get(name).is_some()
    }

    fn value(&self, name: &str) -> Option<Option<&str>> {
        self.vars.get(name).map(|v| v.as_deref())
    }
}

impl Dockerfile {
    /// The global scope for this file given the user's build args.
    pub fn meta_scope(&self, args: &BuildArgs) -> Result<MetaScope, Error> {
        let mut scope = MetaScope::default();
        for (k, v) in args.platform_args() {
            scope.vars.set(&k, Some(v));
        }
        for instr in &self.meta_args {
            let Command::Arg(decls) = &instr.command else {
                continue;
            };
            let growth = Growth::default();
            let expand = |word: &str, scope: &MetaScope| -> Result<String, Error> {
                let expanded = instr
                    .lexer()
                    .expand_word(word, scope)
                    .map_err(|e| instr.expand_error(e))?;
                growth
                    .add(word, &expanded)
                    .map_err(|e| instr.expand_error(e))?;
                Ok(expanded)
            };
            for d in decls {
                let name = expand(&d.name, &scope)?;
                let value = match (args.values.get(&name), &d.default) {
                    (Some(v), _) => Some(v.clone()),
                    (None, Some(def)) => Some(expand(def, &scope)?),
                    (None, None) => None,
                };
                scope.vars.set(&name, value);
            }
        }
        Ok(scope)
    }

    /// `--build-arg` names that no ARG in the meta scope or in `stages` declares, sorted: BuildKit
    /// warns "One or more build-args [...] were not consumed". Predefined proxy ARGs never count.
    pub fn unconsumed_build_args(&self, args: &BuildArgs, stages: &[usize]) -> Vec<String> {
        let declared = |name: &str| {
            let declares = |i: &Instruction| matches!(&i.command, Command::Arg(d) if d.iter().any(|a| a.name == name));
            self.meta_args.iter().any(declares)
                || stages
                    .iter()
                    .filter_map(|&s| self.stages.get(s))
                    .any(|s| s.instructions.iter().any(declares))
        };
        args.values
            .keys()
            .filter(|k| !PROXY_ARGS.contains(&k.as_str()) && !declared(k))
            .cloned()
            .collect()
    }

    /// The index of the stage called `name` (case-insensitive), if any.
    pub fn stage_index(&self, name: &str) -> Option<usize> {
        let lower = name.to_lowercase();
        self.stages
            .iter()
            .position(|s| s.name.as_deref() == Some(&lower))
    }

    /// The stage a build of `target` (default: the last stage) produces.
    pub fn resolve_target(&self, target: Option<&str>) -> Result<usize, Error> {
        let Some(t) = target else {
            return Ok(self.stages.len() - 1);
        };
        self.stage_index(t).ok_or_else(|| {
            let names = self.stages.iter().filter_map(|s| s.name.as_deref());
            let hint = crate::error::closest(t, names).map(|n| format!("did you mean {n}?"));
            Error::new(
                ErrorKind::Stage,
                &self.source.name,
                Span::default(),
                format!("target stage \"{t}\" could not be found"),
            )
            .with_suggestion(hint)
        })
    }
}

/// A stage's variables while it is walked: ENV (from the base image and ENV instructions) and declared ARGs.
///
/// ENV values win over ARGs of the same name, as BuildKit documents. Walk a stage with
/// [`StageScope::step`]: it expands each instruction with the scope as it is at that point,
/// then applies the instruction's effect (ARG, ENV).
#[derive(Debug, Clone)]
pub struct StageScope<'a> {
    args: &'a BuildArgs,
    meta: &'a MetaScope,
    env: Vars<String>,
    declared: Vars<Option<String>>,
}

impl Env for StageScope<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        if let Some(v) = self.env.get(name) {
            return Some(v);
        }
        self.declared.get(name).and_then(|v| v.as_deref())
    }
}

impl<'a> StageScope<'a> {
    /// A scope starting from the base image's environment (`KEY=value` pairs, in order).
    pub fn new(
        args: &'a BuildArgs,
        meta: &'a MetaScope,
        base_env: impl IntoIterator<Item = (String, String)>,
    ) -> StageScope<'a> {
        let mut env = Vars::default();
        for (k, v) in base_env {
            env.set(&k, v);
        }
        StageScope {
            args,
            meta,
            env,
            declared: Vars::default(),
        }
    }

    /// Expands `instr` with the current scope.
    pub fn expand(&self, instr: &Instruction) -> Result<Command, Error> {
        instr.expand(self)
    }

    /// Applies the effect of `expanded` (the expansion of `instr`): ARG and ENV change the scope.
    pub fn apply(&mut self, instr: &Instruction, expanded: &Command) -> Result<(), Error> {
        match expanded {
            Command::Env(kvs) => {
                for kv in kvs {
                    self.set_env(&kv.key, &kv.value);
                }
            }
            Command::Arg(decls) => {
                let growth = Growth::default();
                for d in decls {
                    let value = if let Some(v) = self.args.values.get(&d.name) {
                        Some(v.clone())
                    } else if let Some(def) = &d.default {
                        let expanded = instr
                            .lexer()
                            .expand_word(def, &*self)
                            .map_err(|e| instr.expand_error(e))?;
                        growth
                            .add(def, &expanded)
                            .map_err(|e| instr.expand_error(e))?;
                        Some(expanded)
                    } else {
                        self.meta.value(&d.name).flatten().map(str::to_owned)
                    };
                    self.declared.set(&d.name, value);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Expands `instr`, then applies its effect; returns the expanded command.
    pub fn step(&mut self, instr: &Instruction) -> Result<Command, Error> {
        let expanded = self.expand(instr)?;
        self.apply(instr, &expanded)?;
        Ok(expanded)
    }

    /// Sets an ENV variable (replacing an earlier value in place, as image configs do).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.set(key, value.to_owned());
    }

    /// The value an ARG declared in this stage has (`None` inside: declared without one).
    pub fn arg_value(&self, name: &str) -> Option<Option<&str>> {
        self.declared.get(name).map(|v| v.as_deref())
    }

    /// The environment to persist in the image config: ENV only, never ARGs.
    pub fn config_env(&self) -> &[(String, String)] {
        &self.env.entries
    }

    /// The build args this point of the stage can see, with values: these belong in a RUN's cache key.
    pub fn visible_args(&self) -> Vec<(String, String)> {
        self.declared
            .entries
            .iter()
            .filter(|(k, _)| self.env.get(k).is_none())
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .collect()
    }

    /// The build args as a RUN's history entry names them (BuildKit's `|N K=V …`): every ARG
    /// declared so far in the stage, in order, valued from ENV when ENV shadows it, else its own
    /// value (empty when it has none).
    pub fn history_args(&self) -> Vec<(String, String)> {
        self.declared
            .entries
            .iter()
            .map(|(k, v)| {
                let value = self.env.get(k).or(v.as_ref()).cloned().unwrap_or_default();
                (k.clone(), value)
            })
            .collect()
    }

    /// The environment a RUN gets: ENV, then visible ARGs, then proxy build args not declared (kept out of cache keys).
    pub fn run_env(&self) -> Vec<(String, String)> {
        let mut out = self.env.entries.clone();
        out.extend(self.visible_args());
        for p in PROXY_ARGS {
            if let Some(v) = self.args.values.get(*p)
                && self.get(p).is_none()
            {
                out.push(((*p).to_owned(), v.clone()));
            }
        }
        out
    }

    /// The stage's ENV and ARG names that are set, for undefined-variable checks.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.env
            .entries
            .iter()
            .map(|(k, _)| k.as_str())
            .chain(self.declared.entries.iter().map(|(k, _)| k.as_str()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn df(src: &str) -> Dockerfile {
        parse("Dockerfile", src).expect("parses")
    }

    #[test]
    fn stages_meta_args_and_instructions() {
        let d = df(
            "ARG V=1\nFROM alpine:$V AS Build\nRUN make\nFROM scratch\nCOPY --from=build /a /b\n",
        );
        assert_eq!(d.meta_args.len(), 1);
        assert_eq!(d.stages.len(), 2);
        assert_eq!(d.stages[0].name.as_deref(), Some("build"));
        assert_eq!(d.stages[1].instructions[0].span.start, Pos::new(5, 1));
    }

    #[test]
    fn arg_scoping_follows_buildkit() {
        let d = df("ARG A=meta\nARG B\nFROM x\nARG A\nARG B\nARG C=$A-c\nENV E=$C\nRUN true\n");
        let args = BuildArgs::new([("B".to_owned(), "user".to_owned())]);
        let meta = d.meta_scope(&args).unwrap();
        assert_eq!(meta.get("A"), Some("meta"));
        assert_eq!(meta.get("B"), Some("user"));
        assert!(meta.get("TARGETARCH").is_some());
        let mut scope = StageScope::new(&args, &meta, [("PATH".to_owned(), "/bin".to_owned())]);
        for i in &d.stages[0].instructions {
            scope.step(i).unwrap();
        }
        assert_eq!(scope.get("C"), Some("meta-c"));
        assert_eq!(scope.get("E"), Some("meta-c"));
        assert_eq!(scope.config_env().len(), 2);
        let vis = scope.visible_args();
        assert!(vis.contains(&("B".into(), "user".into())));
        assert!(!scope.run_env().iter().any(|(k, _)| k == "TARGETARCH"));
    }

    #[test]
    fn meta_args_need_redeclaring_in_a_stage() {
        let d = df("ARG V=1\nFROM x\nENV X=${V:-unset}\n");
        let args = BuildArgs::default();
        let meta = d.meta_scope(&args).unwrap();
        let mut scope = StageScope::new(&args, &meta, []);
        let e = scope.step(&d.stages[0].instructions[0]).unwrap();
        let Command::Env(kv) = &e else { panic!() };
        assert_eq!(kv[0].value, "unset");
    }

    #[test]
    fn env_pairs_expand_against_the_previous_state() {
        let d = df("FROM x\nENV abc=hello\nENV abc=bye def=$abc\n");
        let args = BuildArgs::default();
        let meta = d.meta_scope(&args).unwrap();
        let mut scope = StageScope::new(&args, &meta, []);
        for i in &d.stages[0].instructions {
            scope.step(i).unwrap();
        }
        assert_eq!(scope.get("def"), Some("hello"));
    }

    #[test]
    fn env_wins_over_arg_and_proxies_reach_run() {
        let d = df("FROM x\nARG X=arg\nENV X=env\nARG X=arg2\n");
        let args = BuildArgs::new([("HTTP_PROXY".to_owned(), "http://p".to_owned())]);
        let meta = d.meta_scope(&args).unwrap();
        let mut scope = StageScope::new(&args, &meta, []);
        for i in &d.stages[0].instructions {
            scope.step(i).unwrap();
        }
        assert_eq!(scope.get("X"), Some("env"));
        assert!(
            scope
                .run_env()
                .contains(&("HTTP_PROXY".into(), "http://p".into()))
        );
        assert!(scope.visible_args().is_empty());
    }

    #[test]
    fn copy_heredoc_expansion_keeps_quotes() {
        let d =
            df("FROM x\nARG a=1\nCOPY <<EOF /f\nv=\"$a\" '$a'\nEOF\nCOPY <<'EOF' /g\n$a\nEOF\n");
        let args = BuildArgs::default();
        let meta = d.meta_scope(&args).unwrap();
        let mut scope = StageScope::new(&args, &meta, []);
        let mut out = Vec::new();
        for i in &d.stages[0].instructions {
            out.push(scope.step(i).unwrap());
        }
        let Command::Copy(c) = &out[1] else { panic!() };
        assert_eq!(c.sources.inline[0].data, "v=\"1\" '1'\n");
        let Command::Copy(c) = &out[2] else { panic!() };
        assert_eq!(c.sources.inline[0].data, "$a\n");
    }

    #[test]
    fn mounts_expand_at_step_time() {
        let d = df("FROM x\nARG D=/cache\nRUN --mount=type=cache,target=$D,uid=${U:-5} make\n");
        let args = BuildArgs::default();
        let meta = d.meta_scope(&args).unwrap();
        let mut scope = StageScope::new(&args, &meta, []);
        scope.step(&d.stages[0].instructions[0]).unwrap();
        let e = scope.step(&d.stages[0].instructions[1]).unwrap();
        let Command::Run(r) = &e else { panic!() };
        assert_eq!(r.mounts[0].target.as_deref(), Some("/cache"));
        assert_eq!(r.mounts[0].uid, Some(5));
    }

    #[test]
    fn typed_errors_are_located() {
        let e = parse("Dockerfile", "FROM a\nCOPY --form=x a b\n").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Flag);
        assert_eq!((e.span.start.line, e.span.start.col), (2, 6));
        assert_eq!(e.suggestion.as_deref(), Some("did you mean --from?"));
        let e = parse("Dockerfile", "FROMM a\n").unwrap_err();
        assert_eq!(e.kind, ErrorKind::UnknownInstruction);
        assert_eq!(
            e.to_string(),
            "Dockerfile:1:1: unknown instruction \"FROMM\" (did you mean FROM?)\n1 | FROMM a\n  | ^^^^^"
        );
        assert!(parse("D", "RUN x\n").is_err());
        assert!(parse("D", "ARG x\n").is_err());
        assert!(parse("D", "FROM a\nHEALTHCHECK --interval=1us CMD x\n").is_err());
        assert!(parse("D", "FROM a\nCMD --x y\n").is_err());
    }

    #[test]
    fn unconsumed_build_args_are_reported() {
        let d = df("ARG A\nFROM x\nARG B\nFROM y\nARG C\n");
        let args = BuildArgs::new(
            ["A", "B", "C", "D", "HTTP_PROXY"].map(|k| (k.to_owned(), "v".to_owned())),
        );
        assert_eq!(d.unconsumed_build_args(&args, &[1]), ["B", "D"]);
    }

    #[test]
    fn onbuild_triggers_are_parseable() {
        let d = df("FROM a\nONBUILD RUN echo hi\n");
        let Command::Onbuild(t) = &d.stages[0].instructions[0].command else {
            panic!()
        };
        let i = parse_instruction("ONBUILD", t).unwrap();
        assert_eq!(i.command.name(), "RUN");
    }

    /// The first error walking every instruction of the only stage, and the meta scope.
    fn first_expansion_error(src: &str) -> Option<Error> {
        let d = df(src);
        let args = BuildArgs::default();
        let meta = match d.meta_scope(&args) {
            Ok(m) => m,
            Err(e) => return Some(e),
        };
        let mut scope = StageScope::new(&args, &meta, []);
        d.stages[0]
            .instructions
            .iter()
            .find_map(|i| scope.step(i).err())
    }

    #[test]
    fn args_that_double_their_value_stop_at_one_mebibyte_with_a_located_error() {
        // 16 bytes doubled 16 times is 1 MiB; the 17th doubling is refused on its line.
        let mut src = String::from("FROM x\nARG A0=0123456789abcdef\n");
        for n in 1..=20 {
            src.push_str(&format!("ARG A{n}=$A{m}$A{m}\n", m = n - 1));
        }
        let e = first_expansion_error(&src).expect("refused");
        assert_eq!(e.kind, ErrorKind::Expansion);
        assert_eq!(e.span.start, Pos::new(19, 1));
        assert!(e.message.contains("more than 1048576 bytes"), "{e}");
        assert!(e.to_string().starts_with("Dockerfile:19:1: "), "{e}");

        // The same chain before the first FROM.
        let meta = src.replacen("FROM x\n", "", 1) + "FROM x\n";
        let e = first_expansion_error(&meta).expect("refused");
        assert_eq!(e.span.start, Pos::new(18, 1));
    }

    #[test]
    fn the_words_of_one_instruction_share_the_limit() {
        let mut src = String::from("FROM x\nARG H=0123456789abcdef\n");
        for _ in 0..15 {
            src.push_str("ARG H=$H$H\n");
        }
        // H is now 512 KiB: two labels of it fit, three do not.
        let two = format!("{src}LABEL a=$H b=$H\n");
        assert!(first_expansion_error(&two).is_none());
        let three = format!("{src}LABEL a=$H b=$H c=$H\n");
        let e = first_expansion_error(&three).expect("refused");
        assert_eq!(e.span.start, Pos::new(18, 1));
        let copy = format!("{src}COPY $H $H $H /dest/\n");
        assert!(first_expansion_error(&copy).is_some());
        let defaults = format!("{src}ARG a=$H b=$H c=$H\n");
        assert!(first_expansion_error(&defaults).is_some());
    }
}
