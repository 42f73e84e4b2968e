//! The Dockerfile frontend: parser, word expansion, typed instructions, stage graph, `.dockerignore` matching and lint findings.
//!
//! Text in, typed model out; no I/O. The entry points:
//! - [`decode`] checks a Dockerfile's bytes are UTF-8, naming the first invalid byte's place.
//! - [`parse`] turns a Dockerfile into [`Dockerfile`]: stages of located, typed [`Instruction`]s.
//! - [`dump`] renders BuildKit's parse-tree dump (for `umstage debug parse`).
//! - [`Dockerfile::meta_scope`], [`StageScope`] give the variables in force at each step;
//!   [`Instruction::expand`] substitutes them.
//! - [`Dockerfile::graph`] gives the [`StageGraph`]: dependencies, target pruning.
//! - [`Dockerignore`] matches context paths.
//!
//! How a solver walks a build:
//!
//! ```
//! use umstage_dockerfile::{Base, BuildArgs, Command, StageScope, parse};
//!
//! let text = "ARG V=3.20\nFROM alpine:$V AS base\nARG V\nENV APP=/srv/$V\nRUN echo $APP\n\
//!             FROM base\nCOPY --from=base /srv /srv\n";
//! let df = parse("Dockerfile", text)?;
//! let args = BuildArgs::default();
//! let meta = df.meta_scope(&args)?;
//! let graph = df.graph(&meta)?;
//! let target = df.resolve_target(None)?;
//! assert_eq!(graph.required(target), [0, 1]);
//! assert_eq!(graph.nodes[0].base, Base::Image("alpine:3.20".into()));
//!
//! // The base image's ENV would go here; each step sees the scope as it is at that point.
//! let mut scope = StageScope::new(&args, &meta, [("PATH".to_owned(), "/bin".to_owned())]);
//! for instr in &df.stages[0].instructions {
//!     match scope.step(instr)? {
//!         Command::Run(run) => {
//!             assert!(scope.run_env().contains(&("APP".into(), "/srv/3.20".into())));
//!             assert_eq!(scope.visible_args(), [("V".to_owned(), "3.20".to_owned())]);
//!             let _script = run.script();
//!         }
//!         _ => {}
//!     }
//! }
//! assert_eq!(scope.config_env().len(), 2); // PATH and APP; ARGs are never persisted
//! # Ok::<(), umstage_dockerfile::Error>(())
//! ```

mod dockerfile;
mod dockerignore;
mod encoding;
mod error;
mod graph;
mod instructions;
mod json;
mod lint;
mod mount;
mod platform;
mod scope;
mod shell;
mod span;
mod syntax;

pub use dockerfile::{Dockerfile, Instruction, SourceFile, Stage, parse, parse_instruction};
pub use dockerignore::{
    Dockerignore, GlobError, Pattern, PatternError, clean_path, ignore_file_candidates,
    select_ignore_text,
};
pub use encoding::decode;
pub use error::{Error, ErrorDetails, ErrorKind};
pub use graph::{Base, Edge, EdgeKind, ImageRef, StageGraph, StageNode};
pub use instructions::{
    Add, ArgDecl, Command, CommandLine, Copy, DEFAULT_SHELL, From, HealthOptions, Healthcheck,
    INSTRUCTIONS, InlineSource, KeyValue, NetworkMode, PortError, Run, RunScript, SecurityMode,
    Sources, exposed_ports, parse_duration,
};
pub use lint::{CheckConfig, CheckConfigError, Lint};
pub use mount::{Mount, MountType, Sharing, parse_mount};
pub use platform::Platform;
pub use scope::{
    BuildArgs, MetaScope, PLATFORM_ARGS, PROXY_ARGS, SANDBOX_HOSTNAME_ARG, StageScope,
    TARGET_STAGE_ARG,
};
pub use shell::{EmptyEnv, Env, ExpandError, Expansion, Lexer};
pub use span::{Pos, Span};
pub use syntax::{
    Ast, Directives, Heredoc, MAX_LINE_LEN, Node, SyntaxError, Warning, chomp_heredoc, go_quote,
    parse_ast, parse_heredoc,
};

/// BuildKit's dump of the parse tree for `text`, ending in a newline, as `umstage debug parse` prints it.
pub fn dump(file: &str, text: &str) -> Result<String, Error> {
    let ast = parse_ast(file, text)?;
    let mut out = ast.dump();
    out.push('\n');
    Ok(out)
}
