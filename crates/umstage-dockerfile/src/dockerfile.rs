//! The typed Dockerfile: stages of located instructions, meta ARGs and their expansion.

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
                    .map_err(|m| self.error(ErrorKind::Argument, m.to_string()))?;
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
            let expanded = lx.expand_word(v, env)?;
            growth.add(v, &expanded)?;
            Ok(expanded)
        };
        run.mount_flags
            .iter()
            .map(|m| {
                parse_mount(m, Some(&f)).map_err(|msg| {
                    let span =
                        find_in_line(&self.source, self.span.start, "--mount").unwrap_or(self.span);
                    Error::new(ErrorKind::Flag, &self.source.name, span, msg.to_string())
                        .with_source(&self.source.text)
                })
            })
            .collect()
    }

    pub(crate) fn expand_error(&self, e: ExpandError) -> Error {
        self.error(ErrorKind::Expansion, e.message)
    }
}

impl Dockerfile {
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
    fn onbuild_triggers_are_parseable() {
        let d = df("FROM a\nONBUILD RUN echo hi\n");
        let Command::Onbuild(t) = &d.stages[0].instructions[0].command else {
            panic!()
        };
        let i = parse_instruction("ONBUILD", t).unwrap();
        assert_eq!(i.command.name(), "RUN");
    }
}
