//! The solver: from a request to a built, exported image.
//!
//! A build parses the Dockerfile, picks the stages the target needs and builds them on a
//! bounded number of threads (a stage starts when the stages it reads from are done). Each
//! step's cache key is a hash of its parent's key and of everything the step reads; a hit
//! reuses the recorded config and layers without touching a filesystem, so a warm build reads a
//! handful of small files. A miss materialises the parent as a committed snapshot (unpacking
//! layers only when no snapshot exists), runs the step in an active snapshot, turns the diff
//! into a layer and commits the snapshot under the new chain id.
//!
//! This module holds the request preparation, the stage loop (with ONBUILD) and the dispatch of
//! each instruction to its operation in `ops`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use umstage_dockerfile::{
    Base, BuildArgs, Command, Dockerfile, Dockerignore, Instruction, StageScope,
};
use umstage_oci::ContentStore;
use umstage_oci::layer::LayerOptions;
use umstage_oci::lease::Lease;
use umstage_snapshot::Cancel;

use crate::cache::explain::{self, InputLog, Inputs};
use crate::cache::local::LocalCache;
use crate::cache::registry::INLINE_KEY;
use crate::cache::set::CacheSet;
use crate::cache::spec::CacheExport;
use crate::cache::{CacheError, CacheIndex, CacheKey, KeyBuilder};
use crate::config::{self, StageConfig};
use crate::copy;
use crate::digests::ContextDigests;
use crate::error::StepError;
use crate::event::{Event, EventSink, StepId};
use crate::ops::meta::{health_config, split_command};
use crate::ops::step::{Build, ContextCopy, StageBase, StageOutput, Step, other};
use crate::options::{DockerfileSource, Output};
use crate::registry::registry_client;
use crate::request::{BuildError, BuildRequest, BuildResult};
use crate::schedule::{Finished, GraphError, run_graph};
use crate::state::{LazySnapshotter, State, Unpacker};
use crate::vertex;
use umstage_oci::compress::Compression;

impl From<GraphError> for BuildError {
    fn from(e: GraphError) -> Self {
        BuildError::Other(Box::new(e))
    }
}

/// Runs the build checks only (`--check`): reports each finding as an event and returns how
/// many there were. Nothing is built.
pub fn check(request: &BuildRequest, events: &dyn EventSink) -> Result<usize, BuildError> {
    let dockerfile = load_dockerfile(request)?;
    crate::lints::report(&dockerfile, events)
}

/// Reads and parses the request's Dockerfile; a file with no stage is an error.
fn load_dockerfile(request: &BuildRequest) -> Result<Dockerfile, BuildError> {
    let (file_name, bytes) = match &request.dockerfile {
        DockerfileSource::Path(p) => (
            p.file_name()
                .map_or_else(|| "Dockerfile".into(), |n| n.to_string_lossy().into_owned()),
            umstage_oci::regular::read(p).map_err(|e| {
                BuildError::input(format!("cannot read the Dockerfile {}", p.display()), e)
            })?,
        ),
        DockerfileSource::Text(t) => ("Dockerfile".to_string(), t.clone()),
    };
    let dockerfile = umstage_dockerfile::decode(&file_name, &bytes)
        .and_then(|text| umstage_dockerfile::parse(&file_name, text))?;
    if dockerfile.stages.is_empty() {
        return Err(BuildError::Invalid(format!(
            "{file_name}: no FROM instruction: a Dockerfile needs at least one stage"
        )));
    }
    Ok(dockerfile)
}

/// Builds what `request` asks for, reporting progress to `events`.
pub fn build(request: &BuildRequest, events: &dyn EventSink) -> Result<BuildResult, BuildError> {
    let started = Instant::now();
    let dockerfile = load_dockerfile(request)?;
    crate::lints::report(&dockerfile, events)?;
    if let Some(syntax) = &dockerfile.directives.syntax {
        events.emit(Event::Warning {
            message: format!(
                "# syntax={syntax} is not fetched: umstage parses with its built-in frontend, which follows docker/dockerfile:1"
            ),
        });
    }
    let mut args = BuildArgs::new(request.build_args.iter().cloned());
    if let Some(p) = &request.platform {
        args.target_platform = p.clone();
    }
    let target = dockerfile.resolve_target(request.target.as_deref())?;
    args.target_stage = dockerfile.stages[target].name.clone();
    let meta = dockerfile.meta_scope(&args)?;
    let graph = dockerfile.graph(&meta)?;
    for name in &request.no_cache_filter {
        if dockerfile.stage_index(name).is_none() {
            return Err(BuildError::Invalid(format!(
                "--no-cache-filter: there is no stage named {name:?}"
            )));
        }
    }
    let ignore = load_dockerignore(request)?;
    let root = &request.state_root;
    // First of all: from here on a prune keeps what the build names in its lease.
    let lease = Arc::new(Lease::acquire(root).map_err(other)?);
    let store = ContentStore::open(root)
        .map_err(other)?
        .with_lease(Arc::clone(&lease));
    let snapshotter = LazySnapshotter::new(root.clone(), request.snapshotter);
    let cache = CacheIndex::open(root.join("cache/steps")).map_err(other)?;
    let registry = registry_client(request);
    let (imports, registries) =
        crate::cache::travel::open_imports(&request.cache_from, &registry, &store, events);
    let digests = ContextDigests::load(&root.join("cache/context"), &request.context);
    let layer_options = LayerOptions {
        compression: first_compression(&request.outputs),
        source_date_epoch: request.source_date_epoch,
        ..LayerOptions::default()
    };
    let created_secs = request.source_date_epoch.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    });
    // One id mapped, or none at all (the ptrace tier): owners are recorded, not set.
    let ignore_chown_errors = umstage_snapshot::userns::current()
        .is_some_and(|ns| ns.mode() == umstage_snapshot::userns::Mode::SingleId)
        || umstage_oci::owner::root_played();
    let salt_key = salt(&layer_options, ignore_chown_errors);
    let caches = CacheSet::new(LocalCache::new(cache), imports, registries, &salt_key);
    let build = Build {
        request,
        events,
        dockerfile: &dockerfile,
        args,
        meta,
        graph,
        lease: Arc::clone(&lease),
        store,
        snapshotter,
        caches,
        inputs_log: InputLog::new(root.join("cache/inputs")),
        digests,
        ignore,
        context_copy: ContextCopy::default(),
        unpacker: Unpacker::new(lease),
        images: Mutex::new(HashMap::new()),
        cancel: termination_cancel()?,
        registry,
        layer_options,
        salt: salt_key,
        created: umstage_oci::config::rfc3339(created_secs),
        ignore_chown_errors,
    };

    let needed = build.graph.required(target);
    let mut unused = dockerfile.unconsumed_build_args(&build.args, &needed);
    // The builder itself consumes this one (it asks for the inline cache).
    unused.retain(|name| name != "BUILDKIT_INLINE_CACHE");
    if !unused.is_empty() {
        events.emit(Event::Warning {
            message: format!(
                "One or more build-args [{}] were not consumed",
                unused.join(" ")
            ),
        });
    }
    let task_of: HashMap<usize, usize> = needed.iter().enumerate().map(|(t, &s)| (s, t)).collect();
    let deps: Vec<Vec<usize>> = needed
        .iter()
        .map(|&s| {
            build
                .graph
                .deps(s)
                .iter()
                .filter_map(|d| task_of.get(d).copied())
                .collect()
        })
        .collect();
    events.emit(Event::BuildStarted {
        stages_needed: needed.len(),
        stages_total: dockerfile.stages.len(),
        steps_needed: needed
            .iter()
            .map(|&s| dockerfile.stages[s].instructions.len() + 1)
            .sum(),
        target: stage_label(&dockerfile, target),
    });
    let mut outcome = run_and_export(&build, target, &needed, &deps, &task_of);
    // A layer of an imported cache that turned out unusable when it was fetched (it does not
    // match its digest, or is gone) is never used: when that is what failed the build, it runs
    // again without it, and the steps that made it run (what ran before is in the local cache
    // by now). Any other failure stands: running again would only repeat it.
    for _ in 0..MAX_REBUILDS {
        let Err(e) = &outcome else {
            break;
        };
        if !failed_by_rejected_cache(e) {
            break;
        }
        events.emit(Event::Warning {
            message: format!(
                "{e}: a layer of an imported cache is unusable; building again without it"
            ),
        });
        outcome = run_and_export(&build, target, &needed, &deps, &task_of);
    }
    if let Some(cause) = umstage_snapshot::userns::current().and_then(|ns| ns.single_id()) {
        events.emit(Event::Warning {
            message: crate::single_id::summary(cause, &build.unpacker.skipped()),
        });
    }
    let result = outcome?;
    events.emit(Event::BuildDone {
        image_id: result.config_digest.clone(),
        elapsed: started.elapsed(),
    });
    Ok(result)
}

/// How many times a build starts again after finding layers of an imported cache unusable.
const MAX_REBUILDS: usize = 3;

/// Whether `error` is an imported cache's layer failing to fetch (`CacheError::Rejected`),
/// looking through the errors that wrap it, transparent ones included.
fn failed_by_rejected_cache(error: &BuildError) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if matches!(e.downcast_ref(), Some(CacheError::Rejected(_))) {
            return true;
        }
        next = if let Some(step) = e.downcast_ref::<StepError>() {
            match step {
                StepError::Refused(_) => None,
                StepError::During { source, .. } | StepError::Below(source) => {
                    Some(source.as_ref())
                }
                StepError::Shared(shared) => Some(shared.as_ref()),
            }
        } else if let Some(build) = e.downcast_ref::<BuildError>() {
            match build {
                BuildError::Instruction { source, .. } => Some(source),
                BuildError::Input { source, .. } | BuildError::Other(source) => {
                    Some(source.as_ref())
                }
                BuildError::StepFailed(failure) => failure
                    .cause
                    .as_deref()
                    .map(|c| c as &(dyn std::error::Error + 'static)),
                BuildError::Dockerfile(_) | BuildError::Invalid(_) => None,
            }
        } else {
            e.source()
        };
    }
    false
}

/// Builds the needed stages (`deps`: each one's dependencies as indexes into `needed`; `task_of`
/// the reverse) and writes the outputs, then the caches `--cache-to` names.
fn run_and_export(
    build: &Build<'_>,
    target: usize,
    needed: &[usize],
    deps: &[Vec<usize>],
    task_of: &HashMap<usize, usize>,
) -> Result<BuildResult, BuildError> {
    let request = build.request;
    let outputs = std::thread::scope(|scope| {
        build.prefetch_bases(scope, needed);
        run_graph(deps, request.jobs, |task, done: &Finished<StageOutput>| {
            let index = needed[task];
            let lookup = |stage: usize| task_of.get(&stage).and_then(|&t| done.get(t)).cloned();
            build.build_stage(index, &lookup)
        })
    })?;
    if let Err(e) = build.digests.save() {
        tracing::warn!("cannot save context digests: {e}");
    }
    let mut final_state = outputs
        .last()
        .map(|o| o.state.clone())
        .ok_or_else(|| other("no stage was built"))?;
    if request.platform.is_some() {
        // An explicit --platform names the image's platform, whatever its last base was.
        let p = &build.args.target_platform;
        final_state.config.os = p.os.clone();
        final_state.config.architecture = p.arch.clone();
        final_state.config.variant = (!p.variant.is_empty()).then(|| p.variant.clone());
    }
    if request
        .outputs
        .iter()
        .any(|o| !matches!(o, Output::CacheOnly | Output::Registry { .. }))
    {
        // Layers of hits from an imported cache are fetched only now that an output needs
        // them (a push fetches only what the registry lacks).
        build
            .caches
            .fetch_missing(&final_state.layers, &build.store)
            .map_err(other)?;
    }
    // mode=min and the inline cache: the steps of the exported stage and of the stages it is
    // built FROM.
    let mut min_stages = std::collections::HashSet::from([target]);
    let mut stage = target;
    while let Base::Stage(parent) = build.graph.nodes[stage].base {
        if !min_stages.insert(parent) {
            break;
        }
        stage = parent;
    }
    if request.cache_to.contains(&CacheExport::Inline) {
        let records =
            crate::cache::travel::inline_records(&build.caches, &min_stages).map_err(other)?;
        final_state.config.extra.insert(
            INLINE_KEY.into(),
            serde_json::to_value(records).map_err(other)?,
        );
    }
    let result = crate::export::export(&build.export_context(), final_state)?;
    crate::cache::travel::export_all(
        &request.cache_to,
        &build.caches,
        &build.registry,
        &build.store,
        &min_stages,
        build.events,
    )?;
    Ok(result)
}

/// A cancel flag raised by SIGINT and SIGTERM, so a running step is stopped and its snapshot
/// removed rather than the process dying mid-step. It lives for the rest of the process, as
/// the signal handler needs.
fn termination_cancel() -> Result<&'static Cancel, BuildError> {
    static CANCEL: std::sync::OnceLock<&'static Cancel> = std::sync::OnceLock::new();
    if let Some(c) = CANCEL.get() {
        return Ok(c);
    }
    let cancel: &'static Cancel = Box::leak(Box::new(Cancel::new().map_err(other)?));
    cancel.cancel_on_termination_signals().map_err(other)?;
    Ok(CANCEL.get_or_init(|| cancel))
}

fn first_compression(outputs: &[Output]) -> Compression {
    outputs
        .iter()
        .find_map(|o| match o {
            Output::Archive { compression, .. }
            | Output::LayoutDir { compression, .. }
            | Output::Registry { compression, .. } => Some(*compression),
            _ => None,
        })
        .unwrap_or_default()
}

/// The `.dockerignore` that applies: `<Dockerfile>.dockerignore` beside the Dockerfile wins over
/// the context's `.dockerignore`.
fn load_dockerignore(request: &BuildRequest) -> Result<Option<Dockerignore>, BuildError> {
    let specific_path = match &request.dockerfile {
        DockerfileSource::Path(p) => {
            let mut name = p.as_os_str().to_owned();
            name.push(".dockerignore");
            Some(PathBuf::from(name))
        }
        DockerfileSource::Text(_) => None,
    };
    let read = |path: &Path| {
        crate::input_file::read_ignore_file(path)
            .map_err(|e| BuildError::input(format!("cannot read {}", path.display()), e))
    };
    let specific = match &specific_path {
        Some(p) => read(p)?,
        None => None,
    };
    let general_path = request.context.join(".dockerignore");
    let general = read(&general_path)?;
    let Some(text) =
        umstage_dockerfile::select_ignore_text(specific.as_deref(), general.as_deref())
    else {
        return Ok(None);
    };
    // Name the file the error is in, as the Dockerfile's errors do.
    let file = match (&specific, &specific_path) {
        (Some(_), Some(p)) => p.clone(),
        _ => general_path,
    };
    Dockerignore::parse(text)
        .map(Some)
        .map_err(|e| BuildError::input(file.display().to_string(), e))
}

fn stage_label(dockerfile: &Dockerfile, index: usize) -> String {
    dockerfile.stages[index]
        .name
        .clone()
        .unwrap_or_else(|| format!("stage-{index}"))
}

impl Build<'_> {
    fn step_id(&self, stage: usize, step: usize) -> StepId {
        StepId {
            stage_index: stage,
            stage: stage_label(self.dockerfile, stage),
            step_index: step,
        }
    }

    fn build_stage(
        &self,
        index: usize,
        lookup: &dyn Fn(usize) -> Option<StageOutput>,
    ) -> Result<StageOutput, BuildError> {
        let stage = &self.dockerfile.stages[index];
        let base_of = &self.graph.nodes[index].base;
        let from_id = self.step_id(index, 0);
        let from_started = Instant::now();
        // The total counts the base's ONBUILD triggers too, which are only known once it is
        // resolved: the FROM shows the count of the Dockerfile's own steps.
        let own_steps = usize::from(vertex::from_numbered(base_of))
            + stage
                .instructions
                .iter()
                .filter(|i| vertex::numbered(&i.command))
                .count();
        let mut number = usize::from(vertex::from_numbered(base_of));
        self.events.emit(Event::StepStarted {
            step: from_id.clone(),
            line: stage.from.span.start.line,
            text: vertex::from_text(base_of, &stage.from.original),
            number: (number > 0).then_some(number),
            steps_in_stage: own_steps,
        });
        let platform = self.stage_platform(stage)?;
        // A named context called like the stage replaces the whole stage, as in BuildKit.
        if let Some(name) = &stage.name
            && self
                .request
                .build_contexts
                .iter()
                .any(|c| c.name.eq_ignore_ascii_case(name))
        {
            let output = self
                .image(name, &platform)
                .map_err(|e| self.fail(&from_id, &stage.from, e, None, Vec::new()))?;
            self.events.emit(Event::StepDone {
                step: from_id,
                elapsed: from_started.elapsed(),
            });
            return Ok(output);
        }
        let base = match &self.graph.nodes[index].base {
            Base::Scratch => {
                let p = &platform;
                let mut key = KeyBuilder::new("scratch");
                key.key(&self.salt).str(&p.to_string());
                StageOutput {
                    key: key.finish(),
                    state: State {
                        config: config::scratch(&p.os, &p.arch, Some(&p.variant)),
                        layers: Vec::new(),
                    },
                }
            }
            Base::Stage(i) => {
                lookup(*i).ok_or_else(|| other(format!("stage {i} was not built")))?
            }
            Base::Image(reference) => self
                .image(reference, &platform)
                .map_err(|e| self.fail(&from_id, &stage.from, e, None, Vec::new()))?,
        };
        self.events.emit(Event::StepDone {
            step: from_id,
            elapsed: from_started.elapsed(),
        });

        let stage_base = StageBase {
            key: base.key,
            unknown: match base_of {
                Base::Stage(i) => format!(
                    "no cache entry after its base stage {}",
                    stage_label(self.dockerfile, *i)
                ),
                Base::Image(_) => "no cache entry for this base image".into(),
                Base::Scratch => "no cache entry for this base".into(),
            },
        };
        let mut cfg = StageConfig::new(base.state.config.clone());
        let mut layers = base.state.layers.clone();
        let mut key = base.key;
        let no_cache = self.request.no_cache
            || self
                .request
                .no_cache_filter
                .iter()
                .any(|n| self.dockerfile.stage_index(n) == Some(index));

        // ONBUILD triggers of the base run first, and are not passed on.
        let mut instructions: Vec<Instruction> = Vec::new();
        for trigger in cfg.take_onbuild() {
            let parsed = umstage_dockerfile::parse_instruction("ONBUILD", &trigger)
                .map_err(|e| BuildError::input("ONBUILD trigger of the base image", e))?;
            instructions.push(parsed);
        }
        instructions.extend(stage.instructions.iter().cloned());
        let trigger_count = instructions.len() - stage.instructions.len();
        let steps = usize::from(vertex::from_numbered(base_of))
            + instructions
                .iter()
                .filter(|i| vertex::numbered(&i.command))
                .count();

        let mut upstream: Option<String> = None;
        let base_env = config::env_pairs(&cfg.image);
        let mut scope = StageScope::new(&self.args, &self.meta, base_env);
        for (n, instruction) in instructions.iter().enumerate() {
            if self.cancel.is_cancelled() {
                return Err(other("interrupted: the build was stopped by a signal"));
            }
            let step_index = if n < trigger_count {
                0
            } else {
                n - trigger_count + 1
            };
            let id = self.step_id(index, step_index);
            let line = if n < trigger_count {
                0
            } else {
                instruction.span.start.line
            };
            let started = Instant::now();
            let numbered = vertex::numbered(&instruction.command);
            number += usize::from(numbered);
            self.events.emit(Event::StepStarted {
                step: id.clone(),
                line,
                // BuildKit marks the base's triggers so.
                text: if n < trigger_count {
                    format!("ONBUILD {}", instruction.original)
                } else {
                    instruction.original.clone()
                },
                number: numbered.then_some(number),
                steps_in_stage: steps,
            });
            let expanded = scope.expand(instruction)?;
            let mut step = Step {
                build: self,
                id: &id,
                instruction,
                cfg: &mut cfg,
                layers: &mut layers,
                key: &mut key,
                no_cache,
                lookup,
                scope: &scope,
                inputs: Default::default(),
                upstream: upstream.clone(),
                base: &stage_base,
                probed: Default::default(),
            };
            let cached = step.run(&expanded)?;
            let mut change = step.record_inputs();
            scope.apply(instruction, &expanded)?;
            if let Command::Arg(decls) = &expanded {
                // BuildKit records each ARG with the value it resolved to.
                let values: Vec<(String, Option<String>)> = decls
                    .iter()
                    .map(|d| {
                        let v = scope.arg_value(&d.name).flatten().map(str::to_owned);
                        (d.name.clone(), v)
                    })
                    .collect();
                change = self.arg_inputs(&id, instruction, &key, &values, &stage_base);
                if let Some(text) = crate::history::created_by(&expanded, &cfg.image, &values) {
                    let mut k = KeyBuilder::new("arg");
                    k.key(&key).str(&text);
                    key = k.finish();
                    cfg.add_history(text, None, true);
                }
            }
            // What a later step that misses because its parent changed names as the cause.
            if let Some(reason) = change.filter(|r| r != explain::PARENT_CHANGED) {
                upstream = Some(format!("line {line}: {reason}"));
            }
            if cached {
                self.events.emit(Event::StepCached { step: id });
            } else {
                self.events.emit(Event::StepDone {
                    step: id,
                    elapsed: started.elapsed(),
                });
            }
        }
        Ok(StageOutput {
            key,
            state: State {
                config: cfg.image,
                layers,
            },
        })
    }
}

impl Build<'_> {
    /// Records the values an ARG step resolved, as its inputs; returns how they differ from
    /// the last build of the same step (or an imported cache's).
    fn arg_inputs(
        &self,
        id: &StepId,
        instruction: &Instruction,
        parent: &crate::cache::CacheKey,
        values: &[(String, Option<String>)],
        base: &StageBase,
    ) -> Option<String> {
        let mut inputs = Inputs::default();
        inputs.add(explain::name::PARENT, parent.to_hex());
        for (name, value) in values {
            let value = value.clone().unwrap_or_else(|| "(unset)".into());
            inputs.add(format!("{}{name}", explain::name::BUILD_ARG), value);
        }
        let locator = InputLog::locator(
            &self.request.context.to_string_lossy(),
            &instruction.source.name,
            &id.stage,
            id.step_index,
        );
        self.record_inputs(id, &locator, &inputs, &inputs, base)
    }
}

impl Step<'_, '_> {
    /// Applies the instruction; returns whether the result came from the cache.
    fn run(&mut self, expanded: &Command) -> Result<bool, BuildError> {
        match expanded {
            Command::Run(_) => self.run_step(expanded),
            Command::Copy(_) | Command::Add(_) => self.copy_step(expanded),
            Command::Workdir(path) => {
                let dir = self.cfg.set_workdir(path);
                // Keyed and recorded as the config holds it (BuildKit's history shows that).
                let workdir = self.cfg.workdir();
                self.input_parent();
                self.roll_key("workdir", &workdir);
                self.fs_step(format!("WORKDIR {workdir}"), |step, root| {
                    let owner = step.owner_of(&root.root, None)?;
                    copy::make_dirs(&root.root, Path::new(&dir), owner).map_err(StepError::below)
                })
            }
            Command::Env(kvs) => {
                for kv in kvs {
                    self.cfg.set_env(&kv.key, &kv.value);
                }
                self.metadata(expanded)
            }
            Command::Label(kvs) => {
                for kv in kvs {
                    self.cfg.set_label(&kv.key, &kv.value);
                }
                self.metadata(expanded)
            }
            Command::Maintainer(name) => {
                self.cfg.set_maintainer(name);
                self.metadata(expanded)
            }
            Command::Expose(ports) => {
                let ports = umstage_dockerfile::exposed_ports(ports)
                    .map_err(|e| self.refused(StepError::below(e)))?;
                self.cfg.expose(ports);
                self.metadata(expanded)
            }
            Command::Volume(paths) => {
                for p in paths {
                    self.cfg.add_volume(p);
                }
                self.metadata(expanded)
            }
            Command::User(u) => {
                self.cfg.set_user(u);
                self.metadata(expanded)
            }
            Command::StopSignal(s) => {
                self.cfg
                    .set_stop_signal(s)
                    .map_err(|e| self.refused(StepError::below(e)))?;
                self.metadata(expanded)
            }
            Command::Shell(words) => {
                self.cfg.set_shell(words.clone());
                self.metadata(expanded)
            }
            Command::Cmd(line) => {
                let (exec, shell) = split_command(line);
                self.cfg.set_cmd(exec, shell.as_deref());
                self.metadata(expanded)
            }
            Command::Entrypoint(line) => {
                let (exec, shell) = split_command(line);
                self.cfg.set_entrypoint(exec, shell.as_deref());
                self.metadata(expanded)
            }
            Command::Onbuild(trigger) => {
                self.cfg.add_onbuild(trigger);
                self.metadata(expanded)
            }
            Command::Healthcheck(check) => {
                self.cfg.set_healthcheck(health_config(check));
                self.metadata(expanded)
            }
            // ARG is recorded once the scope has resolved its values (in `build_stage`).
            Command::Arg(_) => Ok(false),
            Command::From(_) => Err(self.refused("FROM cannot be an ONBUILD trigger")),
        }
    }
}

/// What changes every layer a build makes, mixed into every base key: the compression, the
/// timestamps, and single-id mode, whose layers lose the owners of files it cannot chown
/// (their results must not be hits for a build with ranges, here after a `usermod` or on
/// another machine through `--cache-to`). Without single-id mode the salt is what it was
/// before that mode entered it, so existing entries still hit.
fn salt(layer_options: &LayerOptions, single_id: bool) -> CacheKey {
    let mut salt = KeyBuilder::new("salt");
    salt.str(&format!("{:?}", layer_options.compression));
    salt.opt_str(
        layer_options
            .source_date_epoch
            .map(|e| e.to_string())
            .as_deref(),
    );
    if single_id {
        salt.str("single-id");
    }
    salt.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::StepFailure;

    #[test]
    fn single_id_layers_are_keyed_apart_and_other_keys_stay() {
        let options = LayerOptions::default();
        let mut before = KeyBuilder::new("salt");
        before
            .str(&format!("{:?}", options.compression))
            .opt_str(None);
        assert_eq!(salt(&options, false), before.finish());
        assert_ne!(salt(&options, true), salt(&options, false));
    }

    fn step_failed(cause: StepError) -> BuildError {
        BuildError::StepFailed(Box::new(StepFailure {
            stage: "0".into(),
            file: "Dockerfile".into(),
            line: 2,
            end_line: 2,
            instruction: "RUN false".into(),
            exit_code: None,
            reason: cause.to_string(),
            output_tail: Vec::new(),
            cause: Some(Arc::new(cause)),
        }))
    }

    fn rejected() -> CacheError {
        CacheError::Rejected(Box::new(CacheError::Registry {
            cache: "r/cache".into(),
            message: "digest mismatch".into(),
        }))
    }

    #[test]
    fn only_a_rejected_cache_layer_starts_the_build_again() {
        // Through the wrappers a fetch error reaches the solver in.
        assert!(failed_by_rejected_cache(&step_failed(StepError::below(
            rejected()
        ))));
        assert!(failed_by_rejected_cache(&step_failed(StepError::Shared(
            Arc::new(StepError::during("fetching", rejected()))
        ))));
        assert!(failed_by_rejected_cache(&BuildError::Other(Box::new(
            rejected()
        ))));
        // A RUN that failed, or a cache error that rejected nothing, is the build's failure.
        assert!(!failed_by_rejected_cache(&step_failed(StepError::Refused(
            "exit code 1".into()
        ))));
        assert!(!failed_by_rejected_cache(&BuildError::Other(Box::new(
            CacheError::Registry {
                cache: "r/cache".into(),
                message: "unreachable".into(),
            }
        ))));
    }
}
