//! Variable scoping as BuildKit has it: build args, the meta scope before the first FROM, and a stage's scope walked instruction by instruction.

use std::collections::{BTreeMap, HashMap};

use crate::dockerfile::{Dockerfile, Instruction};
use crate::error::Error;
use crate::instructions::Command;
use crate::platform::Platform;
use crate::shell::{Env, Growth};

/// Proxy ARGs BuildKit passes to RUN without an ARG declaration (and keeps out of cache keys),
/// in pairs: the uppercase name, then the lowercase one.
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

/// The ARG BuildKit predefines in the global scope with the name of the target stage.
pub const TARGET_STAGE_ARG: &str = "TARGETSTAGE";

/// The build arg that names the hostname RUN steps get, as in BuildKit; no ARG needs it.
pub const SANDBOX_HOSTNAME_ARG: &str = "BUILDKIT_SANDBOX_HOSTNAME";

/// What the user passes to a build: `--build-arg` values, the build and target platforms and
/// the target stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildArgs {
    /// `--build-arg NAME=value` overrides.
    pub values: BTreeMap<String, String>,
    /// The platform the build runs on.
    pub build_platform: Platform,
    /// The platform the image is for.
    pub target_platform: Platform,
    /// The name of the stage the build produces (`TARGETSTAGE`); `None` when it has none,
    /// which BuildKit calls `default`.
    pub target_stage: Option<String>,
}

impl Default for BuildArgs {
    fn default() -> Self {
        BuildArgs {
            values: BTreeMap::new(),
            build_platform: Platform::host(),
            target_platform: Platform::host(),
            target_stage: None,
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

    /// The hostname `BUILDKIT_SANDBOX_HOSTNAME` gives RUN steps (unset or empty: none).
    pub fn sandbox_hostname(&self) -> Option<&str> {
        self.values
            .get(SANDBOX_HOSTNAME_ARG)
            .map(String::as_str)
            .filter(|h| !h.is_empty())
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
        let target = args.target_stage.as_deref().unwrap_or("default");
        scope.vars.set(TARGET_STAGE_ARG, Some(target.to_owned()));
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
    /// warns "One or more build-args [...] were not consumed". Predefined proxy ARGs and
    /// `BUILDKIT_SANDBOX_HOSTNAME`, which the build itself consumes, never count.
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
            .filter(|k| {
                !PROXY_ARGS.contains(&k.as_str()) && *k != SANDBOX_HOSTNAME_ARG && !declared(k)
            })
            .cloned()
            .collect()
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

    /// The environment a RUN gets: ENV, then visible ARGs, then the proxy build args (kept
    /// out of cache keys). As BuildKit's proxy env, a proxy build arg is matched ignoring case
    /// and given under both its upper- and lowercase name, each unless ENV or an ARG of the
    /// stage already sets that name.
    pub fn run_env(&self) -> Vec<(String, String)> {
        let mut out = self.env.entries.clone();
        out.extend(self.visible_args());
        for pair in PROXY_ARGS.chunks(2) {
            // Sorted, so the lowercase spelling wins over the uppercase one when both are given.
            let value = self
                .args
                .values
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(pair[0]))
                .map(|(_, v)| v)
                .next_back();
            let Some(value) = value else { continue };
            for name in pair {
                if self.get(name).is_none() {
                    out.push(((*name).to_owned(), value.clone()));
                }
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
    use crate::error::ErrorKind;
    use crate::parse;
    use crate::span::Pos;

    fn df(src: &str) -> Dockerfile {
        parse("Dockerfile", src).expect("parses")
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
    fn the_target_stage_is_a_global_arg_a_stage_declares_to_see() {
        let d = df("FROM x AS base\nRUN a\nARG TARGETSTAGE\nRUN b\nFROM base AS foo\n");
        let mut args = BuildArgs::default();
        let meta = d.meta_scope(&args).unwrap();
        assert_eq!(meta.get(TARGET_STAGE_ARG), Some("default"));
        args.target_stage = Some("foo".into());
        let meta = d.meta_scope(&args).unwrap();
        let mut scope = StageScope::new(&args, &meta, []);
        scope.step(&d.stages[0].instructions[0]).unwrap();
        assert_eq!(scope.get(TARGET_STAGE_ARG), None);
        scope.step(&d.stages[0].instructions[1]).unwrap();
        assert_eq!(scope.get(TARGET_STAGE_ARG), Some("foo"));
    }

    #[test]
    fn a_proxy_build_arg_reaches_run_under_both_spellings() {
        let d = df("FROM x\nENV no_proxy=env\nARG https_proxy=declared\nARG ftp_proxy\n");
        let args = BuildArgs::new(
            [
                ("http_proxy", "http://lower"),
                ("Https_Proxy", "http://mixed"),
                ("NO_PROXY", "cli"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        let meta = d.meta_scope(&args).unwrap();
        let mut scope = StageScope::new(&args, &meta, []);
        for i in &d.stages[0].instructions {
            scope.step(i).unwrap();
        }
        let env = scope.run_env();
        let get = |k: &str| -> Vec<&str> {
            env.iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        assert_eq!(get("HTTP_PROXY"), ["http://lower"]);
        assert_eq!(get("http_proxy"), ["http://lower"]);
        assert_eq!(get("HTTPS_PROXY"), ["http://mixed"]);
        // An ARG of the name keeps its own value; one without a value leaves the name free.
        assert_eq!(get("https_proxy"), ["declared"]);
        // ENV keeps its name; the other spelling still comes from the build arg.
        assert_eq!(get("no_proxy"), ["env"]);
        assert_eq!(get("NO_PROXY"), ["cli"]);
        assert!(get("ftp_proxy").is_empty() && get("all_proxy").is_empty());
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
    fn the_sandbox_hostname_arg_is_consumed_by_the_build() {
        let d = df("FROM x\n");
        let args = BuildArgs::new(
            [(SANDBOX_HOSTNAME_ARG, "box"), ("OTHER", "v")].map(|(k, v)| (k.into(), v.into())),
        );
        assert_eq!(args.sandbox_hostname(), Some("box"));
        assert_eq!(d.unconsumed_build_args(&args, &[0]), ["OTHER"]);
        let empty = BuildArgs::new([(SANDBOX_HOSTNAME_ARG.to_owned(), String::new())]);
        assert_eq!(empty.sandbox_hostname(), None);
    }

    #[test]
    fn unconsumed_build_args_are_reported() {
        let d = df("ARG A\nFROM x\nARG B\nFROM y\nARG C\n");
        let args = BuildArgs::new(
            ["A", "B", "C", "D", "HTTP_PROXY"].map(|k| (k.to_owned(), "v".to_owned())),
        );
        assert_eq!(d.unconsumed_build_args(&args, &[1]), ["B", "D"]);
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
