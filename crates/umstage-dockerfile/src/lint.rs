//! Lint findings as data: the cheap checks BuildKit runs on a Dockerfile.

use crate::dockerfile::{Dockerfile, PLATFORM_ARGS};
use crate::instructions::{Command, CommandLine};
use crate::shell::{Env, Lexer};
use crate::span::Span;

/// One finding: which rule, what it says, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lint {
    /// BuildKit's rule name, e.g. `StageNameCasing`.
    pub rule: &'static str,
    /// What is wrong.
    pub message: String,
    /// Where.
    pub span: Span,
}

/// Every name is set (to a dummy value) so expansion records which names were referenced.
struct Names<'a>(&'a [String]);

impl Env for Names<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().any(|n| n == name).then_some("x")
    }
}

/// Runs the lint checks over a parsed Dockerfile.
pub(crate) fn lint(df: &Dockerfile) -> Vec<Lint> {
    let mut out = Vec::new();
    let mut push = |rule, message: String, span| {
        out.push(Lint {
            rule,
            message,
            span,
        })
    };

    let mut meta_names: Vec<String> = PLATFORM_ARGS.iter().map(|s| (*s).to_owned()).collect();
    for i in &df.meta_args {
        if let Command::Arg(d) = &i.command {
            meta_names.extend(d.iter().map(|a| a.name.clone()));
        }
    }

    let all: Vec<_> = df
        .meta_args
        .iter()
        .chain(
            df.stages
                .iter()
                .flat_map(|s| std::iter::once(&s.from).chain(&s.instructions)),
        )
        .collect();
    let upper = all
        .iter()
        .filter(|i| i.keyword.chars().all(|c| !c.is_lowercase()))
        .count();
    let lower = all
        .iter()
        .filter(|i| i.keyword.chars().all(|c| !c.is_uppercase()))
        .count();
    let majority_upper = upper >= lower;
    for i in &all {
        let ok = if majority_upper {
            i.keyword == i.keyword.to_uppercase()
        } else {
            i.keyword == i.keyword.to_lowercase()
        };
        if !ok {
            push(
                "ConsistentInstructionCasing",
                format!(
                    "Command '{}' should match the case of the command majority ({})",
                    i.keyword,
                    if majority_upper {
                        "uppercase"
                    } else {
                        "lowercase"
                    }
                ),
                i.span,
            );
        }
    }

    let mut seen_names: Vec<&str> = Vec::new();
    for stage in &df.stages {
        let Command::From(f) = &stage.from.command else {
            continue;
        };
        if let Some(written) = &f.name_as_written {
            if written != &written.to_lowercase() {
                push(
                    "StageNameCasing",
                    format!("Stage name '{written}' should be lowercase"),
                    stage.from.span,
                );
            }
            let lower = written.to_lowercase();
            if lower == "scratch" || lower == "context" {
                push(
                    "ReservedStageName",
                    format!("'{lower}' is reserved and should not be used as a stage name"),
                    stage.from.span,
                );
            }
            if seen_names.contains(&lower.as_str()) {
                push(
                    "DuplicateStageName",
                    format!("Duplicate stage name \"{lower}\", stage names should be unique"),
                    stage.from.span,
                );
            }
            if let Some(n) = stage.name.as_deref() {
                seen_names.push(n);
            }
        }
        if let Some(as_kw) = &f.as_keyword {
            let from_upper = stage.from.keyword == stage.from.keyword.to_uppercase();
            let as_upper = as_kw == &as_kw.to_uppercase();
            if from_upper != as_upper {
                push(
                    "FromAsCasing",
                    format!(
                        "'{as_kw}' and '{}' keywords' casing do not match",
                        stage.from.keyword
                    ),
                    stage.from.span,
                );
            }
        }
        let lx = Lexer::new(df.source.escape);
        let names = Names(&meta_names);
        for text in std::iter::once(&f.base).chain(f.platform.iter()) {
            if let Ok(x) = lx.process(text, &names) {
                for var in x.unmatched {
                    push(
                        "UndefinedArgInFrom",
                        format!("FROM argument '{var}' is not declared"),
                        stage.from.span,
                    );
                }
            }
        }

        let mut stage_names: Vec<String> = Vec::new();
        for i in &stage.instructions {
            match &i.command {
                Command::Cmd(CommandLine::Shell(_))
                | Command::Entrypoint(CommandLine::Shell(_)) => push(
                    "JSONArgsRecommended",
                    format!(
                        "JSON arguments recommended for {} to prevent unintended behavior related to OS signals",
                        i.command.name()
                    ),
                    i.span,
                ),
                Command::Maintainer(_) => push(
                    "MaintainerDeprecated",
                    "Maintainer instruction is deprecated in favor of using label".to_owned(),
                    i.span,
                ),
                _ => {}
            }
            undefined_vars(i, &stage_names, &lx, &mut |var| {
                push(
                    "UndefinedVar",
                    format!("Usage of undefined variable '${var}'"),
                    i.span,
                )
            });
            match &i.command {
                Command::Arg(d) => stage_names.extend(d.iter().map(|a| a.name.clone())),
                Command::Env(kv) => stage_names.extend(kv.iter().map(|k| k.key.clone())),
                _ => {}
            }
        }
    }
    out
}

/// Reports names an instruction expands that the stage never declared. The base image's ENV is
/// unknown here, so common image variables are assumed set; the solver can re-check with the image.
fn undefined_vars(
    i: &crate::Instruction,
    declared: &[String],
    lx: &Lexer,
    report: &mut dyn FnMut(&str),
) {
    const IMAGE_ENV: &[&str] = &[
        "PATH", "HOME", "HOSTNAME", "TERM", "LANG", "PWD", "USER", "SHELL",
    ];
    let texts: Vec<&String> = match &i.command {
        Command::Env(kv) | Command::Label(kv) => {
            kv.iter().flat_map(|k| [&k.key, &k.value]).collect()
        }
        Command::Copy(c) => c.sources.paths.iter().chain([&c.sources.dest]).collect(),
        Command::Add(a) => a.sources.paths.iter().chain([&a.sources.dest]).collect(),
        Command::Workdir(w) | Command::User(w) | Command::StopSignal(w) => vec![w],
        Command::Expose(v) | Command::Volume(v) => v.iter().collect(),
        _ => Vec::new(),
    };
    let mut known: Vec<String> = declared.to_vec();
    known.extend(IMAGE_ENV.iter().map(|s| (*s).to_owned()));
    known.extend(
        crate::dockerfile::PROXY_ARGS
            .iter()
            .map(|s| (*s).to_owned()),
    );
    let names = Names(&known);
    for t in texts {
        if let Ok(x) = lx.process(t, &names) {
            for var in &x.unmatched {
                report(var);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::parse;

    fn rules(src: &str) -> Vec<&'static str> {
        parse("Dockerfile", src)
            .unwrap()
            .lints
            .iter()
            .map(|l| l.rule)
            .collect()
    }

    #[test]
    fn each_rule_fires() {
        assert!(rules("FROM a AS Build\n").contains(&"StageNameCasing"));
        assert!(rules("FROM a as b\n").contains(&"FromAsCasing"));
        assert!(rules("FROM a AS b\nFROM c AS b\n").contains(&"DuplicateStageName"));
        assert!(rules("FROM a\nCMD echo hi\n").contains(&"JSONArgsRecommended"));
        assert!(rules("FROM a\nMAINTAINER me\n").contains(&"MaintainerDeprecated"));
        assert!(rules("FROM a:$V\n").contains(&"UndefinedArgInFrom"));
        assert!(rules("FROM a AS scratch\n").contains(&"ReservedStageName"));
        assert!(rules("FROM a\nrun x\nRUN y\nRUN z\n").contains(&"ConsistentInstructionCasing"));
        assert!(rules("FROM a\nENV X=$NOPE\n").contains(&"UndefinedVar"));
    }

    #[test]
    fn clean_files_have_no_findings() {
        assert!(rules("ARG V=1\nFROM a:$V AS b\nARG V\nENV X=$V\nCMD [\"x\"]\n").is_empty());
    }
}
