//! The solver: from a request to a built, exported image.
//!
//! A build parses the Dockerfile, picks the stages the target needs and builds them on a
//! bounded number of threads (a stage starts when the stages it reads from are done). Each
//! step's cache key is a hash of its parent's key and of everything the step reads; a hit
//! reuses the recorded config and layers without touching a filesystem, so a warm build reads a
//! handful of small files. A miss materialises the parent as a committed snapshot (unpacking
//! layers only when no snapshot exists), runs the step in an active snapshot, turns the diff
//! into a layer and commits the snapshot under the new chain id.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use umstage_dockerfile::{
    Base, BuildArgs, Command, Dockerfile, Dockerignore, Instruction, MetaScope, MountType,
    Platform, RunScript, StageGraph, StageScope,
};
use umstage_oci::ContentStore;
use umstage_oci::inroot::Root;
use umstage_oci::layer::{LayerOptions, write_layer};
use umstage_oci::lease::Lease;
use umstage_oci::store::StoreError;
use umstage_snapshot::sandbox::{self, StepEvent, StepMount};
use umstage_snapshot::{Cancel, DriverChoice};

use crate::cache::{CacheIndex, CacheKey, KeyBuilder};
use crate::config::{self, StageConfig};
use crate::copy::{self, CopyOptions, Item, ItemKind, SourceTree};
use crate::digests::ContextDigests;
use crate::event::{Event, EventSink, StepId, Stream};
use crate::ids::unique_key;
use crate::options::{Compression, DockerfileSource, NamedContext, NetworkMode, Output};
use crate::registry::registry_client;
use crate::request::{
    BuildError, BuildRequest, BuildResult, Entitlement, SnapshotterChoice, StepFailure,
};
use crate::schedule::{Finished, GraphError, run_graph};
use crate::state::{Layer, LazySnapshotter, State, Unpacker, parse_digest};
use crate::users;

/// Lines of a failed step's output quoted in the error.
const FAILURE_TAIL: usize = 12;

fn other(e: impl std::fmt::Display) -> BuildError {
    BuildError::Other(e.to_string())
}

impl From<GraphError> for BuildError {
    fn from(e: GraphError) -> Self {
        BuildError::Other(e.to_string())
    }
}

/// What a finished stage hands to the stages that use it.
#[derive(Debug, Clone)]
struct StageOutput {
    key: CacheKey,
    state: State,
}

/// Everything a build shares between its stages.
/// The filtered copy of the context (see `context_view`), removed when the build ends.
#[derive(Default)]
struct FilteredContext {
    dir: OnceLock<Result<PathBuf, String>>,
}

impl Drop for FilteredContext {
    fn drop(&mut self) {
        if let Some(Ok(dir)) = self.dir.get()
            && let Err(e) = std::fs::remove_dir_all(dir)
        {
            tracing::warn!("removing {}: {e}", dir.display());
        }
    }
}

struct Build<'a> {
    request: &'a BuildRequest,
    events: &'a dyn EventSink,
    dockerfile: &'a Dockerfile,
    args: BuildArgs,
    meta: MetaScope,
    graph: StageGraph,
    /// What this build relies on under the state root, kept from `umstage prune`.
    lease: Arc<Lease>,
    store: ContentStore,
    snapshotter: LazySnapshotter,
    cache: CacheIndex,
    digests: ContextDigests,
    ignore: Option<Dockerignore>,
    /// The context as `.dockerignore` leaves it, made once for every step that binds it.
    filtered_context: FilteredContext,
    unpacker: Unpacker,
    /// Base images by reference and platform, each resolved once (later callers wait for it).
    images: Mutex<HashMap<String, Arc<ImageCell>>>,
    cancel: &'static Cancel,
    /// One client for every pull, so connections and the TLS setup are made once.
    registry: umstage_oci::registry::RegistryClient,
    layer_options: LayerOptions,
    /// Mixed into every base key: what changes every layer of a build (timestamps, compression).
    salt: CacheKey,
    created: String,
    ignore_chown_errors: bool,
}

/// A base image being resolved, or its outcome.
type ImageCell = OnceLock<Result<StageOutput, String>>;

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
            std::fs::read(p).map_err(|e| {
                BuildError::Invalid(format!("cannot read the Dockerfile {}: {e}", p.display()))
            })?,
        ),
        DockerfileSource::Text(t) => ("Dockerfile".to_string(), t.clone()),
    };
    let dockerfile = umstage_dockerfile::decode(&file_name, &bytes)
        .and_then(|text| umstage_dockerfile::parse(&file_name, text))
        .map_err(|e| BuildError::Invalid(e.to_string()))?;
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
        args.target_platform = Platform::parse(p).ok_or_else(|| {
            BuildError::Invalid(format!(
                "--platform {p}: use OS/ARCH[/VARIANT], such as linux/arm64"
            ))
        })?;
    }
    let meta = dockerfile
        .meta_scope(&args)
        .map_err(|e| BuildError::Invalid(e.to_string()))?;
    let graph = dockerfile
        .graph(&meta)
        .map_err(|e| BuildError::Invalid(e.to_string()))?;
    let target = dockerfile
        .resolve_target(request.target.as_deref())
        .map_err(|e| BuildError::Invalid(e.to_string()))?;
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
    let choice = match request.snapshotter {
        SnapshotterChoice::Auto => DriverChoice::Auto,
        SnapshotterChoice::Overlay => DriverChoice::Overlay,
        SnapshotterChoice::Native => DriverChoice::Native,
    };
    let snapshotter = LazySnapshotter::new(root.clone(), choice);
    let cache = CacheIndex::open(root.join("cache/steps")).map_err(other)?;
    let digests = ContextDigests::load(&root.join("cache/context"), &request.context);
    let compression = first_compression(&request.outputs);
    let layer_options = LayerOptions {
        compression: match compression {
            Compression::Gzip => umstage_oci::compress::Compression::GZIP,
            Compression::Zstd => umstage_oci::compress::Compression::ZSTD,
            Compression::Uncompressed => umstage_oci::compress::Compression::None,
        },
        source_date_epoch: request.source_date_epoch,
        ..LayerOptions::default()
    };
    let mut salt = KeyBuilder::new("salt");
    salt.str(&format!("{:?}", layer_options.compression));
    salt.opt_str(request.source_date_epoch.map(|e| e.to_string()).as_deref());
    let created_secs = request.source_date_epoch.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    });
    let ignore_chown_errors = umstage_snapshot::userns::current()
        .is_some_and(|ns| ns.mode() == umstage_snapshot::userns::Mode::SingleId);
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
        cache,
        digests,
        ignore,
        filtered_context: FilteredContext::default(),
        unpacker: Unpacker::new(lease),
        images: Mutex::new(HashMap::new()),
        cancel: termination_cancel()?,
        registry: registry_client(request),
        layer_options,
        salt: salt.finish(),
        created: umstage_oci::config::rfc3339(created_secs),
        ignore_chown_errors,
    };

    let needed = build.graph.required(target);
    let unused = dockerfile.unconsumed_build_args(&build.args, &needed);
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
    let outputs = std::thread::scope(|scope| {
        build.prefetch_bases(scope, &needed);
        run_graph(&deps, request.jobs, |task, done: &Finished<StageOutput>| {
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
    let result = crate::export::export(&build.export_context(), final_state)?;
    events.emit(Event::BuildDone {
        image_id: result.config_digest.clone(),
        elapsed: started.elapsed(),
    });
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
    let specific = match &request.dockerfile {
        DockerfileSource::Path(p) => {
            let mut name = p.as_os_str().to_owned();
            name.push(".dockerignore");
            std::fs::read_to_string(PathBuf::from(name)).ok()
        }
        DockerfileSource::Text(_) => None,
    };
    let general = std::fs::read_to_string(request.context.join(".dockerignore")).ok();
    let Some(text) =
        umstage_dockerfile::select_ignore_text(specific.as_deref(), general.as_deref())
    else {
        return Ok(None);
    };
    Dockerignore::parse(text)
        .map(Some)
        .map_err(|e| BuildError::Invalid(format!(".dockerignore: {e}")))
}

fn stage_label(dockerfile: &Dockerfile, index: usize) -> String {
    dockerfile.stages[index]
        .name
        .clone()
        .unwrap_or_else(|| format!("stage-{index}"))
}

/// What a COPY reads from.
enum CopySource {
    /// The build context, or a directory named with `--build-context`.
    Dir { path: PathBuf, use_ignore: bool },
    /// A stage's or an image's filesystem.
    State(Box<StageOutput>, String),
}

impl Build<'_> {
    fn step_id(&self, stage: usize, step: usize) -> StepId {
        StepId {
            stage_index: stage,
            stage: stage_label(self.dockerfile, stage),
            step_index: step,
        }
    }

    fn platform(&self) -> Platform {
        self.args.target_platform.clone()
    }

    /// The platform a stage is for: its `FROM --platform` (expanded with the global ARGs and
    /// the predefined platform ARGs), else the build's target platform.
    fn stage_platform(&self, stage: &umstage_dockerfile::Stage) -> Result<Platform, String> {
        let Command::From(from) = &stage.from.command else {
            return Ok(self.platform());
        };
        let Some(text) = &from.platform else {
            return Ok(self.platform());
        };
        let located = |m: String| {
            format!(
                "{}:{}: {m}",
                stage.from.source.name, stage.from.span.start.line
            )
        };
        let expanded = stage
            .from
            .lexer()
            .expand_word(text, &self.meta)
            .map_err(|e| located(e.message))?;
        if expanded.is_empty() {
            return Err(located(format!(
                "empty platform value from expression {text}"
            )));
        }
        Platform::parse(&expanded).ok_or_else(|| {
            located(format!(
                "invalid platform {expanded:?}: use OS/ARCH[/VARIANT], such as linux/arm64"
            ))
        })
    }

    fn build_stage(
        &self,
        index: usize,
        lookup: &dyn Fn(usize) -> Option<StageOutput>,
    ) -> Result<StageOutput, BuildError> {
        let stage = &self.dockerfile.stages[index];
        let steps = stage.instructions.len() + 1;
        let from_id = self.step_id(index, 0);
        let from_started = Instant::now();
        self.events.emit(Event::StepStarted {
            step: from_id.clone(),
            line: stage.from.span.start.line,
            text: stage.from.original.clone(),
            steps_in_stage: steps,
        });
        let platform = self.stage_platform(stage).map_err(BuildError::Invalid)?;
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
            let parsed =
                umstage_dockerfile::parse_instruction("ONBUILD", &trigger).map_err(|e| {
                    BuildError::Invalid(format!("ONBUILD trigger of the base image: {e}"))
                })?;
            instructions.push(parsed);
        }
        instructions.extend(stage.instructions.iter().cloned());
        let trigger_count = instructions.len() - stage.instructions.len();

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
            self.events.emit(Event::StepStarted {
                step: id.clone(),
                line,
                text: instruction.original.clone(),
                steps_in_stage: steps,
            });
            let expanded = scope
                .expand(instruction)
                .map_err(|e| BuildError::Invalid(e.to_string()))?;
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
            };
            let cached = step.run(&expanded)?;
            scope
                .apply(instruction, &expanded)
                .map_err(|e| BuildError::Invalid(e.to_string()))?;
            if let Command::Arg(decls) = &expanded {
                // BuildKit records each ARG with the value it resolved to.
                let values: Vec<(String, Option<String>)> = decls
                    .iter()
                    .map(|d| {
                        let v = scope.arg_value(&d.name).flatten().map(str::to_owned);
                        (d.name.clone(), v)
                    })
                    .collect();
                if let Some(text) = crate::history::created_by(&expanded, &cfg.image, &values) {
                    let mut k = KeyBuilder::new("arg");
                    k.key(&key).str(&text);
                    key = k.finish();
                    cfg.add_history(text, Some(self.created.clone()), true);
                }
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

    /// A base image by reference: a named build context, or an image from a registry.
    fn image(&self, reference: &str, platform: &Platform) -> Result<StageOutput, String> {
        let cell = {
            let mut images = self
                .images
                .lock()
                .map_err(|_| "the image table was poisoned by a panic".to_string())?;
            Arc::clone(images.entry(format!("{reference} {platform}")).or_default())
        };
        cell.get_or_init(|| self.resolve_image(reference, platform))
            .clone()
    }

    /// Starts resolving the base images of `stages` in the background, as BuildKit resolves
    /// every FROM before it solves: a stage that waits for another need not wait for its own
    /// base too. A failure is kept and reported by the stage that needs the image.
    fn prefetch_bases<'s>(&'s self, scope: &'s std::thread::Scope<'s, '_>, stages: &[usize]) {
        for &index in stages {
            let stage = &self.dockerfile.stages[index];
            let replaced = stage.name.as_ref().is_some_and(|name| {
                self.request
                    .build_contexts
                    .iter()
                    .any(|c| c.name.eq_ignore_ascii_case(name))
            });
            let Base::Image(reference) = &self.graph.nodes[index].base else {
                continue;
            };
            if replaced || self.graph.deps(index).is_empty() {
                // Replaced stages have no base of their own; stages with no dependency start
                // at once and resolve their base themselves.
                continue;
            }
            let Ok(platform) = self.stage_platform(stage) else {
                continue;
            };
            scope.spawn(move || {
                let _ = self.image(reference, &platform);
            });
        }
    }

    /// Resolves a base image (uncached: see [`Build::image`]).
    fn resolve_image(&self, reference: &str, platform: &Platform) -> Result<StageOutput, String> {
        let named = self
            .request
            .build_contexts
            .iter()
            .rev()
            .find(|c| c.name.eq_ignore_ascii_case(reference));
        let image = match named.map(|c| &c.source) {
            Some(NamedContext::OciLayout { path, reference: r }) => {
                let selector = umstage_oci::archive::Selector {
                    name: r.clone(),
                    platform: oci_platform(platform),
                };
                umstage_oci::archive::import_layout_dir(&self.store, path, &selector)
                    .map_err(|e| format!("image {reference} from {}: {e}", path.display()))?
            }
            Some(NamedContext::Dir(dir)) => return self.directory_image(reference, dir, platform),
            // From the registry directly: a context may bear the name of the image it stands
            // for (`alpine=docker-image://alpine:3.20`).
            Some(NamedContext::Image(r)) => self.pull(r, platform)?,
            None => self.pull(reference, platform)?,
        };
        // `Image::load` made sure there is one diff id per layer.
        let layers = image
            .layers()
            .iter()
            .zip(image.config.rootfs.diff_ids.iter())
            .map(|(descriptor, diff_id)| Layer {
                digest: descriptor.digest().to_string(),
                diff_id: diff_id.to_string(),
                size: descriptor.size(),
                media_type: descriptor.media_type().to_string(),
            })
            .collect();
        let mut key = KeyBuilder::new("image");
        key.key(&self.salt).str(image.digest().as_ref());
        let output = StageOutput {
            key: key.finish(),
            state: State {
                config: image.config.clone(),
                layers,
            },
        };
        Ok(output)
    }

    /// A named context that is a directory, used as a base: an image with the directory's files
    /// as its one layer and a scratch config, as BuildKit makes of a local context in FROM.
    fn directory_image(
        &self,
        name: &str,
        dir: &Path,
        platform: &Platform,
    ) -> Result<StageOutput, String> {
        let dir = std::path::absolute(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let changes = crate::export::whole_tree(&dir)
            .map_err(|e| format!("build context {name} ({}): {e}", dir.display()))?;
        let p = platform;
        let mut config = config::scratch(&p.os, &p.arch, Some(&p.variant));
        let mut layers = Vec::new();
        if !changes.changes.is_empty() {
            let info = write_layer(&self.store, &changes, &self.layer_options)
                .map_err(|e| format!("build context {name} ({}): {e}", dir.display()))?;
            config.rootfs.diff_ids.push(info.diff_id.clone());
            layers.push(Layer {
                digest: info.blob.digest.to_string(),
                diff_id: info.diff_id.to_string(),
                size: info.blob.size,
                media_type: info.media_type.to_string(),
            });
        }
        let mut key = KeyBuilder::new("directory");
        key.key(&self.salt).str(&p.to_string());
        for l in &layers {
            key.str(&l.diff_id);
        }
        Ok(StageOutput {
            key: key.finish(),
            state: State { config, layers },
        })
    }

    fn pull(&self, reference: &str, platform: &Platform) -> Result<umstage_oci::Image, String> {
        let parsed = umstage_oci::reference::parse(reference).map_err(|e| e.to_string())?;
        let id = unique_key("pull");
        let started = Instant::now();
        self.events.emit(Event::TaskStarted {
            id: id.clone(),
            text: format!("resolving {}", parsed.whole()),
        });
        let image = umstage_oci::registry::block_on(self.registry.pull(
            &self.store,
            &parsed,
            &oci_platform(platform),
        ))
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        self.events.emit(Event::TaskDone {
            id,
            elapsed: started.elapsed(),
        });
        Ok(image)
    }

    /// A failed step, as the user sees it.
    fn fail(
        &self,
        id: &StepId,
        instruction: &Instruction,
        reason: impl std::fmt::Display,
        exit_code: Option<i32>,
        output_tail: Vec<String>,
    ) -> BuildError {
        let reason = reason.to_string();
        self.events.emit(Event::StepFailed {
            step: id.clone(),
            message: reason.clone(),
        });
        BuildError::StepFailed(Box::new(StepFailure {
            stage: id.stage.clone(),
            file: instruction.source.name.clone(),
            line: instruction.span.start.line,
            instruction: instruction.original.clone(),
            exit_code,
            reason,
            output_tail,
        }))
    }

    fn export_context(&self) -> crate::export::ExportContext<'_> {
        crate::export::ExportContext {
            request: self.request,
            events: self.events,
            store: &self.store,
            snapshotter: &self.snapshotter,
            unpacker: &self.unpacker,
            created: &self.created,
            ignore_chown_errors: self.ignore_chown_errors,
        }
    }
}

fn oci_platform(p: &Platform) -> umstage_oci::Platform {
    umstage_oci::Platform {
        os: p.os.clone(),
        architecture: p.arch.clone(),
        variant: (!p.variant.is_empty()).then(|| p.variant.clone()),
    }
}

/// One instruction being applied to a stage.
struct Step<'s, 'b> {
    build: &'s Build<'b>,
    id: &'s StepId,
    instruction: &'s Instruction,
    cfg: &'s mut StageConfig,
    layers: &'s mut Vec<Layer>,
    key: &'s mut CacheKey,
    no_cache: bool,
    lookup: &'s dyn Fn(usize) -> Option<StageOutput>,
    scope: &'s StageScope<'s>,
}

impl Step<'_, '_> {
    /// Applies the instruction; returns whether the result came from the cache.
    fn run(&mut self, expanded: &Command) -> Result<bool, BuildError> {
        match expanded {
            Command::Run(_) => self.run_step(expanded),
            Command::Copy(_) | Command::Add(_) => self.copy_step(expanded),
            Command::Workdir(path) => {
                let path = self.cfg.set_workdir(path);
                self.roll_key("workdir", &path);
                self.fs_step(format!("WORKDIR {path}"), |step, root| {
                    let owner = step.owner_of(&root.root, None)?;
                    copy::make_dirs(&root.root, Path::new(&path), owner).map_err(|e| e.to_string())
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
                    .map_err(|e| BuildError::Invalid(self.located(e)))?;
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
                    .map_err(|e| BuildError::Invalid(self.located(e)))?;
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
            Command::From(_) => Err(BuildError::Invalid(
                self.located("FROM cannot be an ONBUILD trigger"),
            )),
        }
    }

    fn located(&self, message: impl std::fmt::Display) -> String {
        format!(
            "{}:{}: {message}",
            self.instruction.source.name, self.instruction.span.start.line
        )
    }

    fn roll_key(&mut self, kind: &str, text: &str) {
        let mut k = KeyBuilder::new(kind);
        k.key(self.key).str(text);
        *self.key = k.finish();
    }

    /// A step that changes only the config: no filesystem, no cache lookup. `expanded` words
    /// the history entry (none for ONBUILD, as BuildKit); the key rolls over the instruction.
    fn metadata(&mut self, expanded: &Command) -> Result<bool, BuildError> {
        // Each word's expansion is bounded, but many instructions could still add up to a
        // config no store or registry would take: refused at the instruction that does it.
        let limit = umstage_oci::image::MAX_JSON_SIZE;
        let size = serde_json::to_vec(&self.cfg.image).map_or(0, |b| b.len() as u64);
        if size > limit {
            return Err(BuildError::Invalid(self.located(format!(
                "the image config would grow to {size} bytes, past the {limit} an image config may hold"
            ))));
        }
        let created_by = crate::history::created_by(expanded, &self.cfg.image, &[]);
        self.roll_key(
            "meta",
            created_by.as_deref().unwrap_or(&self.instruction.original),
        );
        if let Some(text) = created_by {
            self.cfg
                .add_history(text, Some(self.build.created.clone()), true);
        }
        Ok(false)
    }

    /// The cached result for the current key, if it is complete.
    fn cached(&self) -> Option<State> {
        if self.no_cache {
            return None;
        }
        let state: State = self.build.cache.get(self.key)?;
        let complete = state
            .layers
            .iter()
            .all(|l| parse_digest(&l.digest).is_ok_and(|d| self.build.store.contains(&d)));
        if !complete {
            return None;
        }
        // The layers this step added were made here, not pulled: one that no longer matches
        // its digest (verify removes it) makes the entry a miss, so the step runs and remakes
        // it. A stamp spares the hashing while the blob is unchanged.
        let made = state.layers.get(self.layers.len()..).unwrap_or_default();
        for layer in made {
            let reason = match parse_digest(&layer.digest) {
                Err(e) => e,
                Ok(d) => match self.build.store.verify(&d) {
                    Ok(()) => continue,
                    Err(StoreError::Corrupt(_)) => {
                        format!("its blob {d} does not match its digest (removed)")
                    }
                    Err(e) => e.to_string(),
                },
            };
            self.build.events.emit(Event::Warning {
                message: format!(
                    "{}:{}: the cached layer is unusable, so the step runs again: {reason}",
                    self.instruction.source.name, self.instruction.span.start.line
                ),
            });
            return None;
        }
        self.build.cache.touch(self.key);
        Some(state)
    }

    fn use_cached(&mut self, state: State) -> bool {
        self.cfg.image = state.config;
        *self.layers = state.layers;
        true
    }

    /// Runs `work` in an active snapshot over the current state (mounted at a root), then turns
    /// what it changed into a layer; consults and fills the cache under the current key.
    fn fs_step(
        &mut self,
        created_by: String,
        work: impl FnOnce(&Self, &MountedRoot) -> Result<(), String>,
    ) -> Result<bool, BuildError> {
        if let Some(state) = self.cached() {
            return Ok(self.use_cached(state));
        }
        let active = self.prepare()?;
        let outcome = (|| {
            let guard = self
                .build
                .snapshotter
                .get()?
                .mount(&active)
                .map_err(|e| e.to_string())?;
            let root = MountedRoot {
                root: Root::open(guard.path()).map_err(|e| e.to_string())?,
            };
            work(self, &root)
        })();
        if let Err(e) = outcome {
            self.build.snapshotter.remove(&active);
            return Err(self
                .build
                .fail(self.id, self.instruction, e, None, Vec::new()));
        }
        self.commit(&active, created_by)?;
        Ok(false)
    }

    /// Makes an active snapshot on top of the current layers.
    fn prepare(&self) -> Result<String, BuildError> {
        let parent = self
            .build
            .unpacker
            .ensure(
                self.build.snapshotter.get().map_err(|e| {
                    self.build
                        .fail(self.id, self.instruction, e, None, Vec::new())
                })?,
                &self.build.store,
                self.layers,
                self.build.ignore_chown_errors,
            )
            .map_err(|e| {
                self.build
                    .fail(self.id, self.instruction, e, None, Vec::new())
            })?;
        let active = unique_key("step");
        self.build
            .snapshotter
            .get()
            .map_err(|e| {
                self.build
                    .fail(self.id, self.instruction, e, None, Vec::new())
            })?
            .prepare(&active, parent.as_deref())
            .map_err(|e| {
                self.build
                    .fail(self.id, self.instruction, e, None, Vec::new())
            })?;
        Ok(active)
    }

    /// Diffs the active snapshot into a layer (none if nothing changed), commits it, records the
    /// history entry and stores the result under the current key.
    fn commit(&mut self, active: &str, created_by: String) -> Result<(), BuildError> {
        let build = self.build;
        let fail = |e: String| build.fail(self.id, self.instruction, e, None, Vec::new());
        let snapshotter = build.snapshotter.get().map_err(&fail)?;
        let changes = snapshotter.diff(active).map_err(|e| fail(e.to_string()))?;
        if changes.changes.is_empty() {
            build.snapshotter.remove(active);
            self.cfg
                .add_history(created_by, Some(build.created.clone()), true);
        } else {
            let info = write_layer(&build.store, &changes, &build.layer_options)
                .map_err(|e| fail(format!("writing the layer: {e}")))?;
            let layer = Layer {
                digest: info.blob.digest.to_string(),
                diff_id: info.diff_id.to_string(),
                size: info.blob.size,
                media_type: info.media_type.to_string(),
            };
            self.layers.push(layer);
            self.cfg.image.rootfs.diff_ids.push(info.diff_id.clone());
            let chain = crate::state::chain_ids(self.layers)
                .pop()
                .unwrap_or_default();
            build
                .lease
                .hold_snapshots([chain.as_str()])
                .map_err(|e| fail(e.to_string()))?;
            snapshotter
                .commit(&chain, active)
                .map_err(|e| fail(e.to_string()))?;
            self.cfg
                .add_history(created_by, Some(build.created.clone()), false);
        }
        let state = State {
            config: self.cfg.image.clone(),
            layers: self.layers.clone(),
        };
        if let Err(e) = build.cache.put(self.key, &state) {
            build.events.emit(Event::Warning {
                message: e.to_string(),
            });
        }
        if self.no_cache {
            // A step run despite its cache entry may have made something new: what follows
            // (here and in stages that read this one) must be keyed by what it made.
            let made: Vec<&str> = self.layers.iter().map(|l| l.diff_id.as_str()).collect();
            self.roll_key("rerun", &made.join(" "));
        }
        Ok(())
    }

    /// The uid and gid for `spec` (`--chown` value or, when `None`, the stage's USER for WORKDIR),
    /// resolved in the image's own passwd and group files.
    fn owner_of(&self, root: &Root, spec: Option<&str>) -> Result<(u32, u32), String> {
        let spec = match spec {
            Some(s) => s.to_string(),
            None => match self.cfg.image.config.user.as_deref() {
                Some(u) if !u.is_empty() => u.to_string(),
                _ => return Ok((0, 0)),
            },
        };
        let read = |p: &str| -> Option<String> {
            let mut f = root
                .open_file(Path::new(p), umstage_oci::inroot::Escape::Clamp)
                .ok()?;
            let mut s = String::new();
            std::io::Read::read_to_string(&mut f, &mut s).ok()?;
            Some(s)
        };
        users::resolve_chown(
            &spec,
            read("/etc/passwd").as_deref(),
            read("/etc/group").as_deref(),
        )
        .map_err(|e| e.to_string())
    }

    fn run_step(&mut self, expanded: &Command) -> Result<bool, BuildError> {
        let Command::Run(run) = expanded else {
            return Ok(false);
        };
        let build = self.build;
        let shell = self.cfg.shell();
        let mut mounts = Vec::new();
        let mut script_file = None;
        let argv = match run.script() {
            RunScript::Exec(v) => v,
            RunScript::Shell(text) => {
                let mut argv = shell.clone();
                argv.push(text);
                argv
            }
            RunScript::File { name, data } => {
                let dir = build
                    .request
                    .state_root
                    .join("run")
                    .join(unique_key("heredoc"));
                let file = dir.join("script");
                let written = std::fs::create_dir_all(&dir)
                    .and_then(|()| std::fs::write(&file, data.as_bytes()))
                    .and_then(|()| {
                        use std::os::unix::fs::PermissionsExt;
                        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))
                    });
                written.map_err(|e| build.fail(self.id, self.instruction, e, None, Vec::new()))?;
                let target = format!("/dev/pipes/{name}");
                mounts.push(StepMount::Bind(sandbox::BindMount {
                    source: sandbox::BindSource::Host(file),
                    target: target.clone(),
                    read_write: false,
                }));
                script_file = Some(dir);
                // BuildKit runs the script through the shell too: `/bin/sh -c /dev/pipes/EOF`.
                let mut argv = shell.clone();
                argv.push(target);
                argv
            }
        };
        let mut env: Vec<String> = self
            .scope
            .run_env()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let visible_args = self.scope.visible_args();
        let user = self.cfg.image.config.user.clone().unwrap_or_default();
        let cwd = self.cfg.workdir();
        let entitled = |e: Entitlement, what: &str, flag: &str| {
            if build.request.allow.contains(&e) {
                Ok(())
            } else {
                Err(build.fail(
                    self.id,
                    self.instruction,
                    format!("{what} is not allowed: grant it with --allow {flag}"),
                    None,
                    Vec::new(),
                ))
            }
        };
        let privileged = run.security == Some(umstage_dockerfile::SecurityMode::Insecure);
        if privileged {
            entitled(
                Entitlement::SecurityInsecure,
                "RUN --security=insecure",
                "security.insecure",
            )?;
        }
        if run.network == Some(umstage_dockerfile::NetworkMode::Host) {
            entitled(
                Entitlement::NetworkHost,
                "RUN --network=host",
                "network.host",
            )?;
        }
        let network = match run.network {
            Some(umstage_dockerfile::NetworkMode::None) => sandbox::Network::None,
            Some(umstage_dockerfile::NetworkMode::Host) => sandbox::Network::Host,
            Some(umstage_dockerfile::NetworkMode::Default) | None => match build.request.network {
                NetworkMode::Default => sandbox::Network::Default,
                NetworkMode::None => sandbox::Network::None,
                NetworkMode::Host => sandbox::Network::Host,
            },
        };

        let mut k = KeyBuilder::new("run");
        k.key(self.key);
        for a in &argv {
            k.str(a);
        }
        // The config's ENV is part of the parent key; the build args it can see are not.
        for (name, value) in &visible_args {
            k.str(name).str(value);
        }
        k.str(&user).str(&cwd).str(&format!("{network:?}"));
        if privileged {
            k.str("insecure");
        }
        let mut mount_sources = Vec::new();
        for m in &run.mounts {
            k.str(&format!("{m:?}"));
            let source = match &m.from {
                Some(from) => self.resolve_from(from)?,
                None => None,
            };
            if let Some(CopySource::State(out, _)) = &source {
                k.key(&out.key);
            }
            self.key_mount_source(&mut k, m, source.as_ref())?;
            mount_sources.push(source);
        }
        *self.key = k.finish();
        let created_by = run_history(&argv, &self.scope.history_args());
        if let Some(state) = self.cached() {
            if let Some(dir) = script_file {
                let _ = std::fs::remove_dir_all(dir);
            }
            return Ok(self.use_cached(state));
        }

        let mut views = Vec::new();
        let mut secret_files = Vec::new();
        let prepared = (|| -> Result<(), String> {
            let mut ssh_index = 0;
            for (m, source) in run.mounts.iter().zip(mount_sources) {
                let mounted =
                    self.step_mount(m, source, &mut views, &mut secret_files, ssh_index)?;
                if m.kind == MountType::Ssh {
                    // The first agent is the step's SSH_AUTH_SOCK, as in BuildKit.
                    if let Some(StepMount::Bind(b)) = &mounted
                        && !env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK="))
                    {
                        env.push(format!("SSH_AUTH_SOCK={}", b.target));
                    }
                    ssh_index += 1;
                }
                mounts.extend(mounted);
            }
            Ok(())
        })();
        // Unmounts the views (dropping their guards) before removing them; secrets held in
        // memory go with their descriptors.
        let cleanup =
            |views: &mut Vec<(String, Option<umstage_snapshot::snapshot::MountGuard>)>,
             secret_files: &mut Vec<std::os::fd::OwnedFd>| {
                for (key, guard) in views.drain(..) {
                    drop(guard);
                    build.snapshotter.remove(&key);
                }
                secret_files.clear();
            };
        if let Err(e) = prepared {
            cleanup(&mut views, &mut secret_files);
            return Err(build.fail(self.id, self.instruction, e, None, Vec::new()));
        }

        let active = self.prepare()?;
        let step = sandbox::Step {
            args: argv,
            env,
            cwd,
            user,
            network,
            mounts,
            privileged,
            ..sandbox::Step::default()
        };
        let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        let id = self.id.clone();
        let snapshotter = build
            .snapshotter
            .get()
            .map_err(|e| build.fail(self.id, self.instruction, e, None, Vec::new()))?;
        let status = sandbox::run_step(snapshotter, &active, &step, build.cancel, &mut |event| {
            let StepEvent::Output { stream, line } = event;
            let line = String::from_utf8_lossy(&line).into_owned();
            if tail.len() == FAILURE_TAIL {
                tail.pop_front();
            }
            tail.push_back(line.clone());
            build.events.emit(Event::StepOutput {
                step: id.clone(),
                stream: match stream {
                    sandbox::Stream::Stdout => Stream::Stdout,
                    sandbox::Stream::Stderr => Stream::Stderr,
                },
                line,
            });
        });
        cleanup(&mut views, &mut secret_files);
        if let Some(dir) = script_file {
            let _ = std::fs::remove_dir_all(dir);
        }
        let tail: Vec<String> = tail.into_iter().collect();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => {
                build.snapshotter.remove(&active);
                let code = match s {
                    sandbox::ExitStatus::Code(c) => Some(c),
                    sandbox::ExitStatus::Signal(_) => None,
                };
                return Err(build.fail(
                    self.id,
                    self.instruction,
                    format!("the command failed: {s}"),
                    code,
                    tail,
                ));
            }
            Err(e) => {
                build.snapshotter.remove(&active);
                return Err(build.fail(self.id, self.instruction, e, None, tail));
            }
        }
        self.commit(&active, created_by)?;
        Ok(false)
    }

    /// Turns a `RUN --mount` into what the sandbox mounts.
    fn step_mount(
        &self,
        m: &umstage_dockerfile::Mount,
        source: Option<CopySource>,
        views: &mut Vec<(String, Option<umstage_snapshot::snapshot::MountGuard>)>,
        secret_files: &mut Vec<std::os::fd::OwnedFd>,
        ssh_index: usize,
    ) -> Result<Option<StepMount>, String> {
        let build = self.build;
        let target = m.target.clone().unwrap_or_default();
        let target = if target.starts_with('/') {
            target
        } else {
            format!("{}/{target}", self.cfg.workdir())
        };
        // The directory a `from=` (or the context) provides, and the `source=` path inside it,
        // which the sandbox resolves inside that directory, never on the host's terms.
        let mut in_root = |source: Option<CopySource>| -> Result<sandbox::InRoot, String> {
            let root = match source {
                None => self.context_view()?,
                Some(CopySource::Dir { path, .. }) => path,
                Some(CopySource::State(out, _)) => {
                    let (key, guard) = self.view(&out.state)?;
                    let path = guard.as_ref().map_or_else(
                        || build.request.state_root.join("empty"),
                        |g| g.path().to_path_buf(),
                    );
                    views.push((key, guard));
                    path
                }
            };
            Ok(sandbox::InRoot {
                root,
                path: PathBuf::from(m.source.as_deref().unwrap_or_default()),
            })
        };
        Ok(Some(match m.kind {
            MountType::Bind => StepMount::Bind(sandbox::BindMount {
                source: sandbox::BindSource::InRoot(in_root(source)?),
                target,
                read_write: !m.readonly,
            }),
            MountType::Cache => {
                let mut cache = sandbox::CacheMount::new(
                    m.id.clone().unwrap_or_else(|| target.clone()),
                    target,
                );
                cache.sharing = match m.sharing {
                    Some(umstage_dockerfile::Sharing::Private) => sandbox::Sharing::Private,
                    Some(umstage_dockerfile::Sharing::Locked) => sandbox::Sharing::Locked,
                    _ => sandbox::Sharing::Shared,
                };
                cache.read_only = m.readonly;
                if let Some(mode) = m.mode {
                    cache.mode = mode;
                }
                cache.uid = m.uid.unwrap_or(0);
                cache.gid = m.gid.unwrap_or(0);
                if m.from.is_some() {
                    let from = match &source {
                        Some(CopySource::State(out, _)) => out.key.to_hex(),
                        Some(CopySource::Dir { path, .. }) => path.display().to_string(),
                        None => "context".into(),
                    };
                    let identity = format!("{from}:{}", m.source.as_deref().unwrap_or("/"));
                    cache.seed = Some(sandbox::CacheSeed {
                        dir: in_root(source)?,
                        identity,
                    });
                }
                StepMount::Cache(cache)
            }
            MountType::Tmpfs => StepMount::Tmpfs(sandbox::TmpfsMount {
                target,
                size: m.size,
            }),
            MountType::Secret => {
                let id =
                    m.id.clone()
                        .or_else(|| {
                            m.target
                                .as_deref()
                                .and_then(|t| Path::new(t).file_name())
                                .map(|n| n.to_string_lossy().into_owned())
                        })
                        .unwrap_or_default();
                let provided = build.request.secrets.iter().rev().find(|s| s.id == id);
                let file = match provided.map(|s| &s.source) {
                    Some(crate::options::SecretSource::File(p)) => Some(p.clone()),
                    Some(crate::options::SecretSource::Env(var)) => match std::env::var(var) {
                        Ok(value) => {
                            // Kept in memory only: nothing on disk even if umstage is killed.
                            let fd =
                                secret_in_memory(value.as_bytes()).map_err(|e| e.to_string())?;
                            let path = PathBuf::from(format!(
                                "/proc/{}/fd/{}",
                                std::process::id(),
                                std::os::fd::AsRawFd::as_raw_fd(&fd)
                            ));
                            secret_files.push(fd);
                            Some(path)
                        }
                        Err(_) => None,
                    },
                    None => None,
                };
                let mut secret = sandbox::SecretMount::new(id, file);
                secret.target = m.target.clone();
                secret.env = m.env.clone();
                secret.required = m.required;
                if let Some(mode) = m.mode {
                    secret.mode = mode;
                }
                secret.uid = m.uid.unwrap_or(0);
                secret.gid = m.gid.unwrap_or(0);
                StepMount::Secret(secret)
            }
            MountType::Ssh => {
                let id = m.id.clone().unwrap_or_else(|| "default".into());
                let agent = build
                    .request
                    .ssh
                    .iter()
                    .rev()
                    .find(|a| a.id == id)
                    .and_then(|a| a.socket.clone());
                match agent {
                    Some(socket) => StepMount::Bind(sandbox::BindMount {
                        source: sandbox::BindSource::Host(socket),
                        target: if m.target.is_some() {
                            target
                        } else {
                            ssh_target(ssh_index)
                        },
                        read_write: false,
                    }),
                    None if m.required => {
                        return Err(format!(
                            "no ssh agent {id:?} forwarded: pass --ssh {id} (its socket from $SSH_AUTH_SOCK) or --ssh {id}=SOCKET"
                        ));
                    }
                    None => return Ok(None),
                }
            }
        }))
    }

    /// The build context as a step may see it: what `.dockerignore` leaves, exactly as
    /// `COPY .` sees it. Without a `.dockerignore` that is the context directory itself; with
    /// one, a copy of what it keeps, made under the state root on first use and shared by the
    /// build's steps (a writable bind is an overlay over it, so none changes it).
    fn context_view(&self) -> Result<PathBuf, String> {
        let build = self.build;
        let Some(ignore) = build.ignore.as_ref() else {
            return Ok(build.request.context.clone());
        };
        let made = build.filtered_context.dir.get_or_init(|| {
            let dir = build
                .request
                .state_root
                .join("run")
                .join(unique_key("context"));
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let context = CopySource::Dir {
                path: build.request.context.clone(),
                use_ignore: true,
            };
            let copied = (|| -> Result<(), String> {
                let tree = SourceTree::open(&build.request.context, Some(ignore), true)
                    .map_err(|e| self.copy_error(e, &context))?;
                let plan = copy::plan(&tree, &[".".into()], "/", &CopyOptions::default(), &|_| {
                    true
                })
                .map_err(|e| self.copy_error(e, &context))?;
                let root = Root::open(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                copy::execute(&root, &plan, (0, 0)).map_err(|e| self.copy_error(e, &context))
            })();
            match copied {
                Ok(()) => Ok(dir),
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    Err(e)
                }
            }
        });
        made.clone()
    }

    /// A read-only view of a state's filesystem, mounted; `None` for an empty filesystem.
    fn view(
        &self,
        state: &State,
    ) -> Result<(String, Option<umstage_snapshot::snapshot::MountGuard>), String> {
        let build = self.build;
        let snapshotter = build.snapshotter.get()?;
        let chain = build.unpacker.ensure(
            snapshotter,
            &build.store,
            &state.layers,
            build.ignore_chown_errors,
        )?;
        let key = unique_key("view");
        let Some(chain) = chain else {
            return Ok((key, None));
        };
        snapshotter.view(&key, &chain).map_err(|e| e.to_string())?;
        match snapshotter.mount(&key) {
            Ok(guard) => Ok((key, Some(guard))),
            Err(e) => {
                build.snapshotter.remove(&key);
                Err(e.to_string())
            }
        }
    }

    /// Resolves a `--from` value: a stage (name or index), a named context, or an image.
    fn resolve_from(&self, from: &str) -> Result<Option<CopySource>, BuildError> {
        let build = self.build;
        let stage = build.dockerfile.stage_index(from).or_else(|| {
            from.parse::<usize>()
                .ok()
                .filter(|&i| i < build.dockerfile.stages.len())
        });
        if let Some(i) = stage {
            let out =
                (self.lookup)(i).ok_or_else(|| other(format!("stage {from} was not built")))?;
            return Ok(Some(CopySource::State(
                Box::new(out),
                format!("stage {from}"),
            )));
        }
        let expanded = self
            .instruction
            .lexer()
            .expand_word(from, &build.meta)
            .map_err(|e| BuildError::Invalid(self.located(e.message)))?;
        if let Some(ctx) = build
            .request
            .build_contexts
            .iter()
            .rev()
            .find(|c| c.name.eq_ignore_ascii_case(&expanded))
            && let NamedContext::Dir(path) = &ctx.source
        {
            let path = std::path::absolute(path).map_err(other)?;
            return Ok(Some(CopySource::Dir {
                path,
                use_ignore: false,
            }));
        }
        let out = build
            .image(&expanded, &build.platform())
            .map_err(|e| build.fail(self.id, self.instruction, e, None, Vec::new()))?;
        Ok(Some(CopySource::State(
            Box::new(out),
            format!("image {expanded}"),
        )))
    }

    fn copy_step(&mut self, expanded: &Command) -> Result<bool, BuildError> {
        let build = self.build;
        let (sources, chown, chmod, excludes, parents, from, is_add, checksum, unpack) =
            match expanded {
                Command::Copy(c) => (
                    &c.sources,
                    c.chown.clone(),
                    c.chmod.clone(),
                    c.excludes.clone(),
                    c.parents,
                    c.from.clone(),
                    false,
                    None,
                    Some(false),
                ),
                Command::Add(a) => (
                    &a.sources,
                    a.chown.clone(),
                    a.chmod.clone(),
                    a.excludes.clone(),
                    a.parents,
                    None,
                    true,
                    a.checksum.clone(),
                    a.unpack,
                ),
                _ => return Ok(false),
            };
        let fail = |e: String| build.fail(self.id, self.instruction, e, None, Vec::new());
        for path in &sources.paths {
            if is_add && is_git_url(path) {
                return Err(fail(format!(
                    "ADD of a git repository ({path}) is not supported yet: clone it into the context and COPY it"
                )));
            }
        }
        if let Some(sum) = &checksum {
            // As BuildKit: a checksum pins exactly one download.
            let problem = if sources.paths.len() + sources.inline.len() != 1 {
                Some("checksum can't be specified for multiple sources")
            } else if !sources.paths.first().is_some_and(|p| is_url(p)) {
                Some("checksum can't be specified for non-HTTP sources")
            } else if !sum.strip_prefix("sha256:").is_some_and(|h| {
                h.len() == 64
                    && h.bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            }) {
                Some("invalid checksum digest format: use sha256: and 64 lower-case hex digits")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(BuildError::Invalid(self.located(problem)));
            }
        }
        let chmod_parsed = chmod
            .as_deref()
            .map(str::parse::<crate::chmod::Chmod>)
            .transpose()
            .map_err(|e| BuildError::Invalid(self.located(e)))?;
        let exclude = if excludes.is_empty() {
            None
        } else {
            Some(
                Dockerignore::parse(&excludes.join("\n"))
                    .map_err(|e| BuildError::Invalid(self.located(e)))?,
            )
        };
        let workdir = self.cfg.workdir();
        let dest = if sources.dest.starts_with('/') {
            sources.dest.clone()
        } else {
            let mut d = format!("{}/{}", workdir.trim_end_matches('/'), sources.dest);
            if sources.dest == "." || sources.dest == "./" {
                d.push('/');
            }
            d
        };
        let source = match &from {
            Some(f) => self.resolve_from(f)?.ok_or_else(|| other("no source"))?,
            None => CopySource::Dir {
                path: build.request.context.clone(),
                use_ignore: true,
            },
        };
        let (remote, local): (Vec<&String>, Vec<&String>) =
            sources.paths.iter().partition(|p| is_add && is_url(p));
        let local: Vec<String> = local.into_iter().cloned().collect();

        let mut k = KeyBuilder::new(if is_add { "add" } else { "copy" });
        k.key(self.key).str(&dest);
        k.opt_str(chown.as_deref()).opt_str(chmod.as_deref());
        k.u64(u64::from(parents)).u64(unpack.map_or(2, u64::from));
        for e in &excludes {
            k.str(e);
        }
        for inline in &sources.inline {
            k.str(&inline.name).str(&inline.data);
        }
        let options = CopyOptions {
            chown: None,
            chmod: chmod_parsed.clone(),
            parents,
            exclude: exclude.clone(),
        };
        match &source {
            CopySource::Dir { path, use_ignore } => {
                let ignore = if *use_ignore {
                    build.ignore.as_ref()
                } else {
                    None
                };
                let tree = SourceTree::open(path, ignore, true).map_err(|e| fail(e.to_string()))?;
                let plan = copy::plan(&tree, &local, &dest, &options, &|_| false)
                    .map_err(|e| fail(self.copy_error(e, &source)))?;
                self.key_plan(&mut k, &plan, *use_ignore).map_err(fail)?;
            }
            CopySource::State(out, _) => {
                k.key(&out.key);
                for p in &local {
                    k.str(p);
                }
            }
        }
        for url in &remote {
            k.str(url).opt_str(checksum.as_deref());
        }
        *self.key = k.finish();
        let created_by = crate::history::created_by(expanded, &self.cfg.image, &[])
            .unwrap_or_else(|| format!("{} # buildkit", self.instruction.original));

        let remote_files: Vec<String> = remote.iter().map(|s| s.to_string()).collect();
        self.fs_step(created_by, |step, mounted| {
            step.do_copy(
                mounted,
                &source,
                &local,
                &remote_files,
                checksum.as_deref(),
                &dest,
                chown.as_deref(),
                &options,
                is_add && unpack != Some(false),
                &sources.inline,
            )
        })
    }

    /// Adds what a step reads from a directory to `k`: each planned entry's path, destination,
    /// mode and kind, and a file's content digest (remembered across builds for the build
    /// context, whose `.dockerignore` applies).
    fn key_plan(&self, k: &mut KeyBuilder, plan: &copy::Plan, context: bool) -> Result<(), String> {
        for item in &plan.items {
            k.str(&item.src_rel.to_string_lossy());
            k.str(&item.dest.to_string_lossy());
            k.u64(u64::from(item.mode));
            match &item.kind {
                ItemKind::File => {
                    let meta = match &item.stat {
                        Some(m) => m.clone(),
                        None => std::fs::symlink_metadata(&item.src)
                            .map_err(|e| format!("{}: {e}", item.src.display()))?,
                    };
                    let digest = if context {
                        self.build.digests.digest(&item.src_rel, &item.src, &meta)
                    } else {
                        crate::digests::hash_file(&item.src)
                    }
                    .map_err(|e| format!("{}: {e}", item.src_rel.display()))?;
                    k.bytes(&digest);
                }
                ItemKind::Symlink(t) => {
                    k.str("symlink").str(&t.to_string_lossy());
                }
                ItemKind::Dir => {
                    k.str("dir");
                }
                ItemKind::Fifo | ItemKind::Inline(_) => {
                    k.str("other");
                }
            }
        }
        Ok(())
    }

    /// Adds to `k` the content a `RUN --mount` reads from the build context or a directory
    /// context (`bind`, or a `cache` seeded `from=` one), so a changed file reruns the step.
    fn key_mount_source(
        &self,
        k: &mut KeyBuilder,
        m: &umstage_dockerfile::Mount,
        source: Option<&CopySource>,
    ) -> Result<(), BuildError> {
        let build = self.build;
        let (dir, context) = match (m.kind, source) {
            (MountType::Bind, None) => (build.request.context.clone(), true),
            (MountType::Bind | MountType::Cache, Some(CopySource::Dir { path, .. })) => {
                (path.clone(), false)
            }
            _ => return Ok(()),
        };
        let fail = |e: String| build.fail(self.id, self.instruction, e, None, Vec::new());
        let ignore = if context { build.ignore.as_ref() } else { None };
        let tree = SourceTree::open(&dir, ignore, true).map_err(|e| fail(e.to_string()))?;
        let wanted = m
            .source
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| ".".into());
        let source_dir = CopySource::Dir {
            path: dir.clone(),
            use_ignore: context,
        };
        let plan = copy::plan(&tree, &[wanted], "/", &CopyOptions::default(), &|_| false)
            .map_err(|e| fail(self.copy_error(e, &source_dir)))?;
        self.key_plan(k, &plan, context).map_err(fail)
    }

    fn copy_error(&self, e: copy::CopyError, source: &CopySource) -> String {
        match (e, source) {
            (
                copy::CopyError::NotFound(p),
                CopySource::Dir {
                    use_ignore: true, ..
                },
            ) => format!(
                "{p:?} not found in the build context{}: check the path, or the .dockerignore",
                if self.build.ignore.is_some() {
                    " (or it is excluded by .dockerignore)"
                } else {
                    ""
                }
            ),
            (copy::CopyError::NotFound(p), CopySource::Dir { path, .. }) => {
                format!("{p:?} not found in {}", path.display())
            }
            (copy::CopyError::NotFound(p), CopySource::State(_, what)) => {
                format!("{p:?} not found in {what}")
            }
            (e, _) => e.to_string(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn do_copy(
        &self,
        mounted: &MountedRoot,
        source: &CopySource,
        local: &[String],
        remote: &[String],
        checksum: Option<&str>,
        dest: &str,
        chown: Option<&str>,
        options: &CopyOptions,
        extract_archives: bool,
        inline: &[umstage_dockerfile::InlineSource],
    ) -> Result<(), String> {
        let root = &mounted.root;
        let owner = match chown {
            Some(spec) => Some(self.owner_of(root, Some(spec))?),
            None => None,
        };
        let options = CopyOptions {
            chown: owner,
            ..options.clone()
        };
        let new_dirs_owner = owner.unwrap_or((0, 0));
        let dest_is_dir = |p: &Path| copy::is_dir_in(root, p);
        let mut guards = Vec::new();
        let (tree_dir, ignore, reset_owner) = match source {
            CopySource::Dir { path, use_ignore } => (
                Some(path.clone()),
                if *use_ignore {
                    self.build.ignore.as_ref()
                } else {
                    None
                },
                true,
            ),
            CopySource::State(out, _) => {
                let (key, guard) = self.view(&out.state)?;
                let dir = guard.as_ref().map(|g| g.path().to_path_buf());
                guards.push((key, guard));
                (dir, None, false)
            }
        };
        let result = (|| -> Result<(), String> {
            if !local.is_empty() {
                let empty;
                let dir = match &tree_dir {
                    Some(d) => d.clone(),
                    None => {
                        empty = tempfile::tempdir().map_err(|e| e.to_string())?;
                        empty.path().to_path_buf()
                    }
                };
                let tree =
                    SourceTree::open(&dir, ignore, reset_owner).map_err(|e| e.to_string())?;
                let plan = copy::plan(&tree, local, dest, &options, &dest_is_dir)
                    .map_err(|e| self.copy_error(e, source))?;
                let (archives, plain): (Vec<Item>, Vec<Item>) =
                    plan.items.into_iter().partition(|i| {
                        extract_archives
                            && i.kind == ItemKind::File
                            && crate::add::is_archive(&i.src)
                    });
                let plan = copy::Plan {
                    items: plain,
                    dest_dir: plan.dest_dir,
                };
                copy::execute(root, &plan, new_dirs_owner).map_err(|e| e.to_string())?;
                for archive in archives {
                    let target = PathBuf::from(config::clean_abs(dest));
                    copy::make_dirs(root, &target, new_dirs_owner).map_err(|e| e.to_string())?;
                    crate::add::extract(root, &archive.src, &target, owner)?;
                }
            }
            for url in remote {
                crate::add::fetch_into(root, url, checksum, dest, &options, new_dirs_owner)?;
            }
            if !inline.is_empty() {
                let into_dir =
                    dest.ends_with('/') || inline.len() > 1 || dest_is_dir(Path::new(dest));
                let (uid, gid) = owner.unwrap_or((0, 0));
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                let items = inline
                    .iter()
                    .map(|doc| {
                        let dest_path = if into_dir {
                            PathBuf::from(config::clean_abs(dest)).join(&doc.name)
                        } else {
                            PathBuf::from(config::clean_abs(dest))
                        };
                        let mode = options
                            .chmod
                            .as_ref()
                            .map_or(0o644, |c| c.apply(0o644, false));
                        Item {
                            src: PathBuf::new(),
                            src_rel: PathBuf::from(&doc.name),
                            dest: dest_path,
                            kind: ItemKind::Inline(doc.data.clone().into_bytes()),
                            mode,
                            uid,
                            gid,
                            size: doc.data.len() as u64,
                            mtime: (now, 0),
                            merge_only: false,
                            stat: None,
                        }
                    })
                    .collect();
                let dest_dir = if into_dir {
                    PathBuf::from(config::clean_abs(dest))
                } else {
                    PathBuf::from(config::clean_abs(dest))
                        .parent()
                        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
                };
                copy::execute(root, &copy::Plan { items, dest_dir }, new_dirs_owner)
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        })();
        for (key, guard) in guards {
            drop(guard);
            self.build.snapshotter.remove(&key);
        }
        result
    }
}

/// A rootfs mounted for a COPY or WORKDIR step.
struct MountedRoot {
    root: Root,
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

fn is_git_url(s: &str) -> bool {
    s.starts_with("git@")
        || s.starts_with("git://")
        || (is_url(s) && (s.ends_with(".git") || s.contains(".git#")))
}

/// Where an ssh mount with no `target` puts the socket, as BuildKit does:
/// `/run/buildkit/ssh_agent.N`, N counting the step's ssh mounts.
fn ssh_target(index: usize) -> String {
    format!("/run/buildkit/ssh_agent.{index}")
}

/// A memory-only file holding `data`, readable through `/proc/PID/fd/N` by the step's helper.
fn secret_in_memory(data: &[u8]) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::io::Write;
    let fd = rustix::fs::memfd_create("umstage-secret", rustix::fs::MemfdFlags::CLOEXEC)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(data)?;
    Ok(file.into())
}

fn split_command(line: &umstage_dockerfile::CommandLine) -> (Option<Vec<String>>, Option<String>) {
    match line {
        umstage_dockerfile::CommandLine::Exec(v) => (Some(v.clone()), None),
        umstage_dockerfile::CommandLine::Shell(s) => (None, Some(s.clone())),
    }
}

fn health_config(check: &umstage_dockerfile::Healthcheck) -> Option<config::HealthConfig> {
    match check {
        umstage_dockerfile::Healthcheck::None => None,
        umstage_dockerfile::Healthcheck::Cmd { test, options } => {
            let ns = |d: std::time::Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
            Some(config::HealthConfig {
                test: test.clone(),
                interval: ns(options.interval),
                timeout: ns(options.timeout),
                start_period: ns(options.start_period),
                start_interval: ns(options.start_interval),
                retries: i64::from(options.retries),
            })
        }
    }
}

/// BuildKit's history text for a RUN: the build args it saw, then the command.
fn run_history(argv: &[String], args: &[(String, String)]) -> String {
    let mut s = String::from("RUN ");
    if !args.is_empty() {
        s.push_str(&format!("|{} ", args.len()));
        for (k, v) in args {
            s.push_str(&format!("{k}={v} "));
        }
    }
    s.push_str(&argv.join(" "));
    s.push_str(" # buildkit");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_history_names_the_args_it_saw() {
        assert_eq!(
            run_history(&["/bin/sh".into(), "-c".into(), "make".into()], &[]),
            "RUN /bin/sh -c make # buildkit"
        );
        assert_eq!(
            run_history(&["true".into()], &[("A".into(), "1".into())]),
            "RUN |1 A=1 true # buildkit"
        );
    }

    #[test]
    fn git_urls_are_recognised() {
        assert!(is_git_url("git@example.invalid:x/y.git"));
        assert!(is_git_url("https://example.invalid/x/y.git"));
        assert!(!is_git_url("https://example.invalid/file.tar.gz"));
    }
}
