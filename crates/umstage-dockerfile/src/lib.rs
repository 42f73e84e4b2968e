//! The Dockerfile frontend: parser, word expansion, typed instructions, stage graph, `.dockerignore` matching and lint findings.
//!
//! Text in, typed model out; no I/O. The entry points:
//! - [`parse`] turns a Dockerfile into [`Dockerfile`]: stages of located, typed [`Instruction`]s.
//! - [`dump`] renders BuildKit's parse-tree dump (for `umstage debug parse`).
//! - [`Dockerfile::meta_scope`], [`StageScope`] give the variables in force at each step;
//!   [`Instruction::expand`] substitutes them.
//! - [`Dockerfile::graph`] gives the [`StageGraph`]: dependencies, target pruning, parallel waves.
//! - [`Dockerignore`] matches context paths.

mod dockerfile;
mod dockerignore;
mod error;
mod graph;
mod instructions;
mod json;
mod lint;
mod mount;
mod shell;
mod span;
mod syntax;

pub use dockerfile::{
    BuildArgs, Dockerfile, Instruction, MetaScope, PLATFORM_ARGS, PROXY_ARGS, Platform, SourceFile,
    Stage, StageScope, parse, parse_instruction,
};
pub use dockerignore::{
    Dockerignore, Pattern, PatternError, clean_path, ignore_file_candidates, select_ignore_text,
};
pub use error::{Error, ErrorDetails, ErrorKind};
pub use graph::{Base, Edge, EdgeKind, ImageRef, StageGraph, StageNode};
pub use instructions::{
    Add, ArgDecl, Command, CommandLine, Copy, DEFAULT_SHELL, From, HealthOptions, Healthcheck,
    INSTRUCTIONS, InlineSource, KeyValue, NetworkMode, Run, RunScript, SecurityMode, Sources,
    exposed_ports, parse_duration,
};
pub use lint::Lint;
pub use mount::{Mount, MountType, Sharing, parse_mount};
pub use shell::{EmptyEnv, Env, ExpandError, Expansion, Lexer};
pub use span::{Pos, Span};
pub use syntax::{
    Ast, Directives, Heredoc, MAX_LINE_LEN, Node, Warning, chomp_heredoc, parse_ast, parse_heredoc,
};

/// BuildKit's dump of the parse tree for `text`, ending in a newline, as `umstage debug parse` prints it.
pub fn dump(file: &str, text: &str) -> Result<String, Error> {
    let ast = parse_ast(file, text)?;
    let mut out = ast.dump();
    out.push('\n');
    Ok(out)
}
