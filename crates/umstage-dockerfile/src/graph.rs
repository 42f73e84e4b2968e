//! The stage graph: which stages a stage needs, target pruning, dependency order.

use crate::dockerfile::{Dockerfile, Instruction, parse_instruction};
use crate::error::{Error, ErrorKind};
use crate::instructions::Command;
use crate::scope::MetaScope;
use crate::span::Span;

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// The empty filesystem.
    Scratch,
    /// An image reference (expanded).
    Image(String),
    /// An earlier stage, by index.
    Stage(usize),
}

/// Why one stage needs another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeKind {
    /// `FROM <stage>`.
    Base,
    /// `COPY --from=<stage>`.
    CopyFrom,
    /// `RUN --mount=…,from=<stage>`.
    MountFrom,
}

/// A dependency of a stage on an earlier stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    /// The stage depended on.
    pub stage: usize,
    /// How.
    pub kind: EdgeKind,
    /// Where the reference is written.
    pub span: Span,
}

/// An external image a stage reads from (`COPY --from=image`, `--mount from=image`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The image reference.
    pub reference: String,
    /// How it is used.
    pub kind: EdgeKind,
    /// Where.
    pub span: Span,
}

/// One stage's place in the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageNode {
    /// The stage's index.
    pub index: usize,
    /// What it starts from.
    pub base: Base,
    /// `--platform` after expansion.
    pub platform: Option<String>,
    /// Stages it needs, in the order referenced (duplicates kept with their spans).
    pub edges: Vec<Edge>,
    /// External images it reads files from.
    pub images: Vec<ImageRef>,
}

/// The stages and their dependencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageGraph {
    /// One node per stage, by index.
    pub nodes: Vec<StageNode>,
}

impl Dockerfile {
    /// Resolves every stage reference with the global scope (for FROM and `COPY --from` names).
    pub fn graph(&self, meta: &MetaScope) -> Result<StageGraph, Error> {
        let mut nodes = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            let from = &stage.from;
            let Command::From(f) = &from.command else {
                continue;
            };
            let lx = from.lexer();
            let base_name = lx
                .expand_word(&f.base, meta)
                .map_err(|e| from.error(ErrorKind::Expansion, e.message))?;
            let platform = f
                .platform
                .as_deref()
                .map(|p| lx.expand_word(p, meta))
                .transpose()
                .map_err(|e| from.error(ErrorKind::Expansion, e.message))?;
            if base_name.is_empty() {
                return Err(from.error(
                    ErrorKind::Argument,
                    format!("base name ({}) should not be blank", f.base),
                ));
            }
            let mut edges = Vec::new();
            let base = if base_name == "scratch" {
                Base::Scratch
            } else {
                match self.lookup(&base_name, stage.index, from, false)? {
                    Some(i) => {
                        edges.push(Edge {
                            stage: i,
                            kind: EdgeKind::Base,
                            span: from.span,
                        });
                        Base::Stage(i)
                    }
                    None => Base::Image(base_name),
                }
            };
            let mut images = Vec::new();
            // A base stage's ONBUILD triggers run at the start of this stage, so what they
            // read is this stage's to wait for (written at the ONBUILD line). A trigger that
            // does not parse is reported by the solver when it runs.
            let triggers: Vec<(&Instruction, Instruction)> = match base {
                Base::Stage(b) => self.stages[b]
                    .instructions
                    .iter()
                    .filter_map(|i| match &i.command {
                        Command::Onbuild(t) => parse_instruction(&self.source.name, t)
                            .ok()
                            .map(|parsed| (i, parsed)),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let read = triggers
                .iter()
                .map(|(at, parsed)| (*at, parsed))
                .chain(stage.instructions.iter().map(|i| (i, i)));
            for (instr, command) in read {
                for (name, kind) in references(command) {
                    let name = if name.contains('$') {
                        let expanded = lx
                            .expand_word(&name, meta)
                            .map_err(|e| instr.error(ErrorKind::Expansion, e.message))?;
                        if expanded.is_empty() {
                            return Err(empty_reference(instr, &name));
                        }
                        expanded
                    } else {
                        name
                    };
                    match self.lookup(&name, stage.index, instr, true)? {
                        Some(i) => edges.push(Edge {
                            stage: i,
                            kind,
                            span: instr.span,
                        }),
                        None => images.push(ImageRef {
                            reference: name,
                            kind,
                            span: instr.span,
                        }),
                    }
                }
            }
            nodes.push(StageNode {
                index: stage.index,
                base,
                platform,
                edges,
                images,
            });
        }
        Ok(StageGraph { nodes })
    }

    /// Resolves a stage reference made from stage `current`: `Some(index)` for a stage, `None` for an image.
    fn lookup(
        &self,
        name: &str,
        current: usize,
        at: &Instruction,
        allow_index: bool,
    ) -> Result<Option<usize>, Error> {
        if allow_index && !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
            let index: usize = name.parse().unwrap_or(usize::MAX);
            return match index {
                i if i < current => Ok(Some(i)),
                i if i == current => Err(at.error(
                    ErrorKind::Stage,
                    format!("circular dependency detected on stage: stage {i} refers to itself"),
                )),
                i if i < self.stages.len() => Err(at.error(
                    ErrorKind::Stage,
                    format!("stage {i} is referenced before it is defined (forward reference)"),
                )),
                i => Err(at.error(
                    ErrorKind::Stage,
                    format!(
                        "invalid stage index {i}: there are {} stages",
                        self.stages.len()
                    ),
                )),
            };
        }
        let lower = name.to_lowercase();
        let earlier = self.stages[..current]
            .iter()
            .rposition(|s| s.name.as_deref() == Some(lower.as_str()));
        if let Some(i) = earlier {
            return Ok(Some(i));
        }
        if self.stages[current].name.as_deref() == Some(lower.as_str()) {
            return Err(at.error(
                ErrorKind::Stage,
                format!("circular dependency detected on stage: {lower}"),
            ));
        }
        if self.stages[current + 1..]
            .iter()
            .any(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            return Err(at
                .error(
                    ErrorKind::Stage,
                    format!(
                        "stage \"{lower}\" is referenced before it is defined (forward reference)"
                    ),
                )
                .with_suggestion(Some(format!(
                    "move the stage \"{lower}\" above this instruction"
                ))));
        }
        Ok(None)
    }
}

/// A `COPY --from` that expands to nothing: only the global ARGs expand there (BuildKit
/// expands none, and says so), so the variable is the stage's own or unset. (`--mount from=`
/// refuses variables when it is parsed, as BuildKit's does.)
fn empty_reference(at: &Instruction, name: &str) -> Error {
    at.error(
        ErrorKind::Expansion,
        format!(
            "variable expansion is not supported for --from={name}: only ARGs declared before the first FROM expand there, and this one is empty"
        ),
    )
    .with_suggestion(Some(
        "define a new stage with FROM using ARG from global scope".to_owned(),
    ))
}

/// The names an instruction reads files from: `COPY --from` and `RUN --mount from=`.
fn references(instr: &Instruction) -> Vec<(String, EdgeKind)> {
    match &instr.command {
        Command::Copy(c) => c
            .from
            .iter()
            .map(|f| (f.clone(), EdgeKind::CopyFrom))
            .collect(),
        Command::Run(r) => r
            .mounts
            .iter()
            .filter_map(|m| m.from.clone())
            .map(|f| (f, EdgeKind::MountFrom))
            .collect(),
        _ => Vec::new(),
    }
}

impl StageGraph {
    /// The distinct stages `index` needs directly, ascending.
    pub fn deps(&self, index: usize) -> Vec<usize> {
        let mut d: Vec<usize> = self
            .nodes
            .get(index)
            .map(|n| n.edges.iter().map(|e| e.stage).collect())
            .unwrap_or_default();
        d.sort_unstable();
        d.dedup();
        d
    }

    /// Every stage `target` needs, itself included, in dependency order (dependencies first).
    pub fn required(&self, target: usize) -> Vec<usize> {
        let mut needed = vec![false; self.nodes.len()];
        let mut stack = vec![target];
        while let Some(i) = stack.pop() {
            if i >= needed.len() || needed[i] {
                continue;
            }
            needed[i] = true;
            stack.extend(self.deps(i));
        }
        // Edges only point to earlier stages, so index order is a dependency order.
        (0..needed.len()).filter(|&i| needed[i]).collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::{BuildArgs, parse};

    use super::*;

    fn graph(src: &str) -> Result<StageGraph, Error> {
        let d = parse("Dockerfile", src)?;
        let meta = d.meta_scope(&BuildArgs::default())?;
        d.graph(&meta)
    }

    #[test]
    fn edges_and_pruning() {
        let src = "FROM alpine AS a\nFROM busybox AS b\nFROM a AS c\nCOPY --from=b /x /x\nRUN --mount=from=0,target=/m true\nFROM scratch AS unused\nFROM c\nCOPY --from=nginx:latest /y /y\n";
        let g = graph(src).unwrap();
        assert_eq!(g.nodes[2].base, Base::Stage(0));
        assert_eq!(g.nodes[0].base, Base::Image("alpine".into()));
        assert_eq!(g.nodes[3].base, Base::Scratch);
        assert_eq!(g.nodes[4].images[0].reference, "nginx:latest");
        assert_eq!(g.required(4), vec![0, 1, 2, 4]);
        // 0 and 1 need nothing of each other; 2 needs 0.
        assert!(!g.required(0).contains(&1) && !g.required(1).contains(&0));
        assert!(g.required(2).contains(&0));
    }

    #[test]
    fn copy_from_uses_meta_args() {
        let d = parse(
            "Dockerfile",
            "ARG SRC=builder\nFROM a AS builder\nFROM b\nCOPY --from=$SRC /x /y\n",
        )
        .unwrap();
        let meta = d.meta_scope(&BuildArgs::default()).unwrap();
        let g = d.graph(&meta).unwrap();
        assert_eq!(g.deps(1), vec![0]);
    }

    #[test]
    fn a_stage_needs_what_its_base_stages_onbuild_triggers_read() {
        let g = graph(
            "FROM a AS src\nFROM b AS tool\nFROM c AS base\nONBUILD COPY --from=src /in /out\nONBUILD RUN --mount=from=tool,target=/t true\nFROM base AS mid\nFROM scratch\nCOPY --from=mid /x /y\n",
        )
        .unwrap();
        // The stage defining the triggers does not run them.
        assert_eq!(g.deps(2), Vec::<usize>::new());
        assert_eq!(g.deps(3), vec![0, 1, 2]);
        let copy = g.nodes[3].edges[1];
        assert_eq!((copy.stage, copy.kind), (0, EdgeKind::CopyFrom));
        assert_eq!(copy.span.start.line, 4);
        assert_eq!(g.required(4), vec![0, 1, 2, 3, 4]);
        // A trigger naming a stage defined after the child is a forward reference there.
        let e =
            graph("FROM a AS base\nONBUILD COPY --from=late /a /b\nFROM base\nFROM c AS late\n")
                .unwrap_err();
        assert_eq!(e.span.start.line, 2);
    }

    #[test]
    fn a_from_that_expands_to_nothing_says_why() {
        // A stage's own ARG does not expand in --from; only the global ones do.
        let e = graph("FROM a\nARG SRC=x\nCOPY --from=$SRC /a /b\n").unwrap_err();
        assert_eq!((e.kind, e.span.start.line), (ErrorKind::Expansion, 3));
        assert!(
            e.message
                .starts_with("variable expansion is not supported for --from=$SRC"),
            "{}",
            e.message
        );
        assert!(e.to_string().contains("ARG from global scope"), "{e}");
    }

    #[test]
    fn bad_references_are_located_errors() {
        let e = graph("FROM a AS x\nCOPY --from=y /a /b\nFROM b AS y\n").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Stage);
        assert_eq!(e.span.start.line, 2);
        let e = graph("FROM a AS x\nCOPY --from=x /a /b\n").unwrap_err();
        assert!(e.message.contains("circular"));
        assert!(graph("FROM a\nCOPY --from=5 /a /b\n").is_err());
        assert!(graph("FROM a\nCOPY --from=1 /a /b\nFROM b\n").is_err());
        let d = parse("Dockerfile", "FROM a AS x\nFROM x\n").unwrap();
        assert!(d.resolve_target(Some("y")).is_err());
        assert_eq!(d.resolve_target(Some("X")).unwrap(), 0);
    }
}
