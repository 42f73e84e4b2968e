//! Lint findings as data: the cheap checks BuildKit runs on a Dockerfile.

use std::collections::HashSet;

use crate::dockerfile::Dockerfile;
use crate::instructions::{Command, CommandLine};
use crate::scope::{PLATFORM_ARGS, PROXY_ARGS, TARGET_STAGE_ARG};
use crate::shell::referenced_names;
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

impl Lint {
    /// The page documenting the rule, as BuildKit links it.
    pub fn url(&self) -> String {
        let mut slug = String::new();
        let chars: Vec<char> = self.rule.chars().collect();
        for (i, &c) in chars.iter().enumerate() {
            let prev_lower = i > 0 && chars[i - 1].is_ascii_lowercase();
            let acronym_end = i > 0
                && chars[i - 1].is_ascii_uppercase()
                && chars.get(i + 1).is_some_and(char::is_ascii_lowercase);
            if c.is_ascii_uppercase() && (prev_lower || acronym_end) {
                slug.push('-');
            }
            slug.push(c.to_ascii_lowercase());
        }
        format!("https://docs.docker.com/go/dockerfile/rule/{slug}/")
    }
}

/// The `# check=` directive: which rules to skip and whether a finding fails the build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckConfig {
    /// Rules not reported.
    pub skip: Vec<String>,
    /// `skip=all`: nothing is reported.
    pub skip_all: bool,
    /// `error=true`: any finding fails the build.
    pub error: bool,
}

/// A `# check=` directive that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckConfigError {
    /// A part with no `=`.
    #[error("invalid check option {0:?}: use skip=RULES;error=BOOL")]
    NotKeyValue(String),
    /// `error=` with no boolean.
    #[error("invalid check option error={0:?}: use true or false")]
    NotBool(String),
    /// A key other than `skip` or `error`.
    #[error("invalid check option {0:?}: use skip or error")]
    UnknownKey(String),
}

impl CheckConfig {
    /// Parses `skip=Rule1,Rule2;error=true` (either part optional, as BuildKit reads it).
    pub fn parse(text: &str) -> Result<CheckConfig, CheckConfigError> {
        let mut config = CheckConfig::default();
        let text = text.trim();
        if text.is_empty() {
            return Ok(config);
        }
        for part in text.split(';') {
            let Some((key, value)) = part.split_once('=') else {
                return Err(CheckConfigError::NotKeyValue(part.to_owned()));
            };
            match key.trim() {
                "skip" if value.trim() == "all" => config.skip_all = true,
                "skip" => config.skip = value.split(',').map(|r| r.trim().to_owned()).collect(),
                "error" => {
                    config.error = match value.trim() {
                        "true" | "1" | "t" | "T" | "TRUE" | "True" => true,
                        "false" | "0" | "f" | "F" | "FALSE" | "False" => false,
                        v => {
                            return Err(CheckConfigError::NotBool(v.to_owned()));
                        }
                    }
                }
                k => return Err(CheckConfigError::UnknownKey(k.to_owned())),
            }
        }
        Ok(config)
    }

    /// Whether findings of `rule` are reported.
    pub fn reports(&self, rule: &str) -> bool {
        !self.skip_all && !self.skip.iter().any(|s| s == rule)
    }
}

// The method lives here, not beside the type, so that the lints depend on the typed Dockerfile
// and never the other way round.
impl Dockerfile {
    /// Lint findings for BuildKit's cheap checks, computed on request.
    pub fn lints(&self) -> Vec<Lint> {
        lint(self)
    }
}

/// Runs the lint checks over a parsed Dockerfile.
fn lint(df: &Dockerfile) -> Vec<Lint> {
    let mut out = Vec::new();
    let mut push = |rule, message: String, span| {
        out.push(Lint {
            rule,
            message,
            span,
        })
    };

    let mut meta_names: HashSet<&str> = PLATFORM_ARGS.iter().copied().collect();
    meta_names.insert(TARGET_STAGE_ARG);
    for i in &df.meta_args {
        if let Command::Arg(d) = &i.command {
            meta_names.extend(d.iter().map(|a| a.name.as_str()));
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
    let is_upper = |k: &str| !k.chars().any(char::is_lowercase);
    let is_lower = |k: &str| !k.chars().any(char::is_uppercase);
    let upper = all.iter().filter(|i| is_upper(&i.keyword)).count();
    let lower = all.iter().filter(|i| is_lower(&i.keyword)).count();
    let majority_upper = upper >= lower;
    for i in &all {
        let ok = if majority_upper {
            is_upper(&i.keyword)
        } else {
            is_lower(&i.keyword)
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
        let escape = df.source.escape;
        for text in std::iter::once(&f.base).chain(f.platform.iter()) {
            for var in referenced_names(text, escape) {
                if !meta_names.contains(var) {
                    push(
                        "UndefinedArgInFrom",
                        format!("FROM argument '{var}' is not declared"),
                        stage.from.span,
                    );
                }
            }
        }

        let mut stage_names: HashSet<&str> = IMAGE_ENV.iter().chain(PROXY_ARGS).copied().collect();
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
            undefined_vars(i, &stage_names, escape, &mut |var| {
                push(
                    "UndefinedVar",
                    format!("Usage of undefined variable '${var}'"),
                    i.span,
                )
            });
            match &i.command {
                Command::Arg(d) => stage_names.extend(d.iter().map(|a| a.name.as_str())),
                Command::Env(kv) => stage_names.extend(kv.iter().map(|k| k.key.as_str())),
                _ => {}
            }
        }
        stage_rules(stage, &mut push);
    }
    for w in &df.warnings {
        push(
            "NoEmptyContinuation",
            "Empty continuation line".to_owned(),
            w.span,
        );
    }
    for i in &df.meta_args {
        secrets(i, &mut push);
    }
    out
}

/// Whether an ARG or ENV name looks like it holds a secret (BuildKit's word list).
fn looks_secret(name: &str) -> bool {
    const WORDS: &[&str] = &[
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    let lower = name.to_ascii_lowercase();
    !lower.contains("public") && lower.split('_').any(|part| WORDS.contains(&part))
}

fn secrets(i: &crate::Instruction, push: &mut dyn FnMut(&'static str, String, Span)) {
    let names: Vec<&str> = match &i.command {
        Command::Arg(d) => d.iter().map(|a| a.name.as_str()).collect(),
        Command::Env(kv) => kv.iter().map(|k| k.key.as_str()).collect(),
        _ => Vec::new(),
    };
    for n in names {
        if looks_secret(n) {
            push(
                "SecretsUsedInArgOrEnv",
                format!(
                    "Do not use ARG or ENV instructions for sensitive data ({} \"{n}\")",
                    i.command.name()
                ),
                i.span,
            );
        }
    }
}

/// Rules that look at one stage's instructions.
fn stage_rules(stage: &crate::Stage, push: &mut dyn FnMut(&'static str, String, Span)) {
    if let Command::From(f) = &stage.from.command
        && let Some(p) = &f.platform
    {
        if p == "$TARGETPLATFORM" || p == "${TARGETPLATFORM}" {
            push(
                "RedundantTargetPlatform",
                format!(
                    "Setting platform to predefined {p} in FROM is redundant as this is the default behavior"
                ),
                stage.from.span,
            );
        } else if !p.contains('$') {
            push(
                "FromPlatformFlagConstDisallowed",
                format!("FROM --platform flag should not use constant value \"{p}\""),
                stage.from.span,
            );
        }
    }
    for kind in ["CMD", "ENTRYPOINT", "HEALTHCHECK"] {
        let spans: Vec<Span> = stage
            .instructions
            .iter()
            .filter(|i| i.command.name() == kind)
            .map(|i| i.span)
            .collect();
        for span in spans.iter().take(spans.len().saturating_sub(1)) {
            push(
                "MultipleInstructionsDisallowed",
                format!(
                    "Multiple {kind} instructions should not be used in the same stage because only the last one will be used"
                ),
                *span,
            );
        }
    }
    let mut absolute_workdir = false;
    for i in &stage.instructions {
        secrets(i, push);
        match &i.command {
            Command::Workdir(p) => {
                if p.starts_with('/') || p.starts_with('$') {
                    absolute_workdir = true;
                } else if !absolute_workdir {
                    push(
                        "WorkdirRelativePath",
                        format!(
                            "Relative workdir \"{p}\" can have unexpected results if the base image changes"
                        ),
                        i.span,
                    );
                }
            }
            Command::Env(_) | Command::Label(_) => {
                let rest = i
                    .original
                    .trim_start()
                    .strip_prefix(i.keyword.as_str())
                    .unwrap_or("")
                    .trim_start();
                let first = rest.split(char::is_whitespace).next().unwrap_or("");
                if !first.contains('=') {
                    let k = i.command.name();
                    push(
                        "LegacyKeyValueFormat",
                        format!(
                            "\"{k} key=value\" should be used instead of legacy \"{k} key value\" format"
                        ),
                        i.span,
                    );
                }
            }
            Command::Expose(ports) => {
                for p in ports {
                    if p.contains(':') {
                        push(
                            "ExposeInvalidFormat",
                            format!(
                                "EXPOSE instruction should not define an IP address or host-port mapping, found '{p}'"
                            ),
                            i.span,
                        );
                    }
                    if let Some((_, proto)) = p.rsplit_once('/')
                        && proto != proto.to_ascii_lowercase()
                    {
                        push(
                            "ExposeProtoCasing",
                            format!(
                                "Defined protocol '{p}' in EXPOSE instruction should be lowercase"
                            ),
                            i.span,
                        );
                    }
                }
            }
            _ => {}
        }
    }
}

/// Variables base images commonly set; the parser cannot see the image, so it assumes these.
const IMAGE_ENV: &[&str] = &[
    "PATH", "HOME", "HOSTNAME", "TERM", "LANG", "PWD", "USER", "SHELL",
];

/// Reports names an instruction expands that the stage never declared. The base image's ENV is
/// unknown here, so common image variables are assumed set; the solver can re-check with the image.
fn undefined_vars(
    i: &crate::Instruction,
    declared: &HashSet<&str>,
    escape: char,
    report: &mut dyn FnMut(&str),
) {
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
    for t in texts {
        for var in referenced_names(t, escape) {
            if !declared.contains(var) {
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
            .lints()
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
    fn more_buildkit_rules() {
        assert!(
            rules("FROM a\nCMD [\"a\"]\nCMD [\"b\"]\n").contains(&"MultipleInstructionsDisallowed")
        );
        assert!(rules("FROM a\nWORKDIR app\n").contains(&"WorkdirRelativePath"));
        assert!(!rules("FROM a\nWORKDIR /srv\nWORKDIR app\n").contains(&"WorkdirRelativePath"));
        assert!(rules("FROM a\nENV k v\n").contains(&"LegacyKeyValueFormat"));
        assert!(rules("FROM a\nARG DB_PASSWORD\n").contains(&"SecretsUsedInArgOrEnv"));
        assert!(!rules("FROM a\nARG PUBLIC_KEY\n").contains(&"SecretsUsedInArgOrEnv"));
        assert!(
            rules("FROM --platform=linux/amd64 a\n").contains(&"FromPlatformFlagConstDisallowed")
        );
        assert!(rules("FROM --platform=$TARGETPLATFORM a\n").contains(&"RedundantTargetPlatform"));
        assert!(rules("FROM a\nEXPOSE 80/TCP\n").contains(&"ExposeProtoCasing"));
        assert!(rules("FROM a\nEXPOSE 8080:80\n").contains(&"ExposeInvalidFormat"));
        assert!(rules("FROM a\nRUN a \\\n\n b\n").contains(&"NoEmptyContinuation"));
    }

    #[test]
    fn rule_urls_and_the_check_directive() {
        let lint = |rule| super::Lint {
            rule,
            message: String::new(),
            span: crate::Span::default(),
        };
        assert_eq!(
            lint("JSONArgsRecommended").url(),
            "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/"
        );
        assert_eq!(
            lint("UndefinedArgInFrom").url(),
            "https://docs.docker.com/go/dockerfile/rule/undefined-arg-in-from/"
        );
        let c =
            super::CheckConfig::parse("skip=JSONArgsRecommended, FromAsCasing;error=true").unwrap();
        assert!(c.error && !c.reports("FromAsCasing") && c.reports("StageNameCasing"));
        assert!(!super::CheckConfig::parse("skip=all").unwrap().reports("X"));
        assert!(super::CheckConfig::parse("error=maybe").is_err());
        assert!(super::CheckConfig::parse("nonsense").is_err());
    }

    #[test]
    fn clean_files_have_no_findings() {
        assert!(rules("ARG V=1\nFROM a:$V AS b\nARG V\nENV X=$V\nCMD [\"x\"]\n").is_empty());
    }
}
