//! What every operation works on: the build (what its stages share), the step being applied
//! (the stage's config, layers and rolling cache key), and what a finished stage hands on.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use umstage_dockerfile::{
    BuildArgs, Dockerfile, Dockerignore, Instruction, MetaScope, Platform, StageGraph, StageScope,
};
use umstage_oci::ContentStore;
use umstage_oci::layer::LayerOptions;
use umstage_oci::lease::Lease;
use umstage_snapshot::Cancel;

use crate::cache::carried::{self, CarriedStep, Near};
use crate::cache::explain::{self, InputLog, Inputs};
use crate::cache::set::CacheSet;
use crate::cache::{CacheKey, KeyBuilder};
use crate::config::StageConfig;
use crate::digests::ContextDigests;
use crate::error::{Source, StepError};
use crate::event::{Event, EventSink, StepId};
use crate::request::{BuildError, BuildRequest, StepFailure};
use crate::state::{Layer, LazySnapshotter, State, Unpacker};

pub(crate) fn other(e: impl Into<Source>) -> BuildError {
    BuildError::Other(e.into())
}

/// What a finished stage hands to the stages that use it.
#[derive(Debug, Clone)]
pub(crate) struct StageOutput {
    pub(crate) key: CacheKey,
    pub(crate) state: State,
}

/// The copies of the context and of directory contexts that steps bind (see `context_view`),
/// by the directory copied and whether a `.dockerignore` applies, each made once; removed when
/// the build ends.
#[derive(Default)]
pub(crate) struct ContextCopy {
    pub(crate) dirs: Mutex<HashMap<(PathBuf, bool), Arc<CopiedDir>>>,
}

/// One copy of [`ContextCopy`], made by the first step that needs it.
pub(crate) type CopiedDir = OnceLock<Result<PathBuf, Arc<StepError>>>;

impl Drop for ContextCopy {
    fn drop(&mut self) {
        let dirs = self.dirs.get_mut().unwrap_or_else(|p| p.into_inner());
        for made in dirs.values() {
            if let Some(Ok(dir)) = made.get()
                && let Err(e) = std::fs::remove_dir_all(dir)
            {
                tracing::warn!("removing {}: {e}", dir.display());
            }
        }
    }
}

/// Everything a build shares between its stages.
pub(crate) struct Build<'a> {
    pub(crate) request: &'a BuildRequest,
    pub(crate) events: &'a dyn EventSink,
    pub(crate) dockerfile: &'a Dockerfile,
    pub(crate) args: BuildArgs,
    pub(crate) meta: MetaScope,
    pub(crate) graph: StageGraph,
    /// What this build relies on under the state root, kept from `umstage prune`.
    pub(crate) lease: Arc<Lease>,
    pub(crate) store: ContentStore,
    pub(crate) snapshotter: LazySnapshotter,
    /// The caches steps are looked up in and recorded to.
    pub(crate) caches: CacheSet,
    /// The inputs of earlier builds' steps, to say why a step missed.
    pub(crate) inputs_log: InputLog,
    pub(crate) digests: ContextDigests,
    pub(crate) ignore: Option<Dockerignore>,
    /// The context as `.dockerignore` leaves it, made once for every step that binds it.
    pub(crate) context_copy: ContextCopy,
    pub(crate) unpacker: Unpacker,
    /// Base images by reference and platform, each resolved once (later callers wait for it).
    pub(crate) images: Mutex<HashMap<String, Arc<ImageCell>>>,
    pub(crate) cancel: &'static Cancel,
    /// One client for every pull, so connections and the TLS setup are made once.
    pub(crate) registry: umstage_oci::registry::RegistryClient,
    pub(crate) layer_options: LayerOptions,
    /// Mixed into every base key: what changes every layer of a build (timestamps, compression).
    pub(crate) salt: CacheKey,
    pub(crate) created: String,
    pub(crate) ignore_chown_errors: bool,
}

/// A base image being resolved, or its outcome.
pub(crate) type ImageCell = OnceLock<Result<StageOutput, Arc<StepError>>>;

impl Build<'_> {
    pub(crate) fn platform(&self) -> Platform {
        self.args.target_platform.clone()
    }

    /// A failed step, as the user sees it.
    pub(crate) fn fail(
        &self,
        id: &StepId,
        instruction: &Instruction,
        cause: impl Into<StepError>,
        exit_code: Option<i32>,
        output_tail: Vec<String>,
    ) -> BuildError {
        let cause = cause.into();
        let reason = cause.to_string();
        self.events.emit(Event::StepFailed {
            step: id.clone(),
            message: reason.clone(),
        });
        BuildError::StepFailed(Box::new(StepFailure {
            stage: id.stage.clone(),
            file: instruction.source.name.clone(),
            line: instruction.span.start.line,
            end_line: last_line(instruction),
            instruction: instruction.original.clone(),
            exit_code,
            reason,
            output_tail,
            cause: Some(Arc::new(cause)),
        }))
    }

    /// Records a step's `inputs` under `locator` and notes `carried` (what a cache takes along
    /// of them) for `--cache-to`; returns how they differ from the last build of the step here,
    /// or else from the nearest step an imported cache carries.
    pub(crate) fn record_inputs(
        &self,
        id: &StepId,
        locator: &str,
        inputs: &Inputs,
        carried: &Inputs,
        base: &StageBase,
    ) -> Option<String> {
        let step = CarriedStep::new(&id.stage, id.step_index, carried);
        self.caches.note_inputs(id.stage_index, step);
        match self.inputs_log.record(locator, inputs) {
            Some(before) => inputs.first_difference(&before),
            None => self.imported_difference(id, inputs, base),
        }
    }

    /// How `inputs` differ from the nearest step the imported caches carry: `None` when they
    /// carry none, or the nearest has the same inputs.
    pub(crate) fn imported_difference(
        &self,
        id: &StepId,
        inputs: &Inputs,
        base: &StageBase,
    ) -> Option<String> {
        let nearby = self.caches.nearby();
        if nearby.is_empty() {
            return None;
        }
        let now = CarriedStep::new(&id.stage, id.step_index, inputs);
        match nearby.nearest(&now) {
            Near::Step(before) => now.inputs.first_difference(before),
            Near::Others => Some(carried::NOT_HELD.into()),
            Near::Nothing if nearby.other_salt(self.caches.salt()) => {
                Some(carried::OTHER_SALT.into())
            }
            Near::Nothing if now.inputs.parent() == Some(base.key.to_hex().as_str()) => {
                Some(base.unknown.clone())
            }
            Near::Nothing => Some(explain::PARENT_CHANGED.into()),
        }
    }

    pub(crate) fn export_context(&self) -> crate::export::ExportContext<'_> {
        crate::export::ExportContext {
            request: self.request,
            events: self.events,
            store: &self.store,
            snapshotter: &self.snapshotter,
            unpacker: &self.unpacker,
            created: &self.created,
            ignore_chown_errors: self.ignore_chown_errors,
            caches: &self.caches,
        }
    }
}

/// The last line an instruction covers: its span ends one past its last character, which is
/// the start of the next line when it ends with the newline.
fn last_line(instruction: &Instruction) -> usize {
    let span = instruction.span;
    if span.end.line > span.start.line && span.end.col <= 1 {
        span.end.line - 1
    } else {
        span.end.line.max(span.start.line)
    }
}

/// One instruction being applied to a stage.
pub(crate) struct Step<'s, 'b> {
    pub(crate) build: &'s Build<'b>,
    pub(crate) id: &'s StepId,
    pub(crate) instruction: &'s Instruction,
    pub(crate) cfg: &'s mut StageConfig,
    pub(crate) layers: &'s mut Vec<Layer>,
    pub(crate) key: &'s mut CacheKey,
    pub(crate) no_cache: bool,
    pub(crate) lookup: &'s dyn Fn(usize) -> Option<StageOutput>,
    pub(crate) scope: &'s StageScope<'s>,
    /// What the step reads, named, to say why it missed (`cache::explain`).
    pub(crate) inputs: std::cell::RefCell<Inputs>,
    /// The latest change upstream in this stage ("line 3: build arg V changed …"), to say what
    /// a changed parent means.
    pub(crate) upstream: Option<String>,
    /// What the stage starts from.
    pub(crate) base: &'s StageBase,
    /// How many inputs the step had when its lookup by its source stages' keys missed: those
    /// after depend on that miss, so a cache carries only these (`cache::carried`).
    pub(crate) probed: std::cell::Cell<Option<usize>>,
}

/// What a stage starts from, for the explanation of a miss right after it.
pub(crate) struct StageBase {
    /// Its key.
    pub(crate) key: CacheKey,
    /// Why a step right after it missed when no imported cache has a step after it.
    pub(crate) unknown: String,
}

impl Step<'_, '_> {
    /// The instruction cannot be carried out as written, for `reason`.
    pub(crate) fn refused(&self, reason: impl Into<StepError>) -> BuildError {
        BuildError::Instruction {
            file: self.instruction.source.name.clone(),
            line: self.instruction.span.start.line,
            source: reason.into(),
        }
    }

    /// The step failed with `cause`, before any process of it ran.
    pub(crate) fn failed(&self, cause: impl Into<StepError>) -> BuildError {
        self.build
            .fail(self.id, self.instruction, cause, None, Vec::new())
    }

    /// Notes an input of the step, for the explanation of a miss.
    pub(crate) fn input(&self, name: impl Into<String>, value: impl Into<String>) {
        self.inputs.borrow_mut().add(name, value);
    }

    /// Starts the step's inputs with what every step reads: its parent and its instruction.
    pub(crate) fn input_parent(&self) {
        self.input(explain::name::PARENT, self.key.to_hex());
        self.input(
            explain::name::INSTRUCTION,
            self.instruction.original.clone(),
        );
    }

    /// Where the step's inputs are recorded: its context, Dockerfile, stage and position.
    pub(crate) fn locator(&self) -> String {
        InputLog::locator(
            &self.build.request.context.to_string_lossy(),
            &self.instruction.source.name,
            &self.id.stage,
            self.id.step_index,
        )
    }

    /// Says why the step missed: the first input that differs from its last build here, or
    /// else from the nearest step an imported cache carries.
    pub(crate) fn explain_miss(&self) {
        let inputs = self.inputs.borrow();
        let difference = match self.build.inputs_log.load(&self.locator()) {
            Some(before) => inputs.first_difference(&before),
            None if self.build.caches.nearby().is_empty() => {
                Some("no earlier build of this step in this state root".to_string())
            }
            None => self
                .build
                .imported_difference(self.id, &inputs, self.base)
                .or_else(|| {
                    // The carried inputs end before what it read from the stage, so that is it.
                    self.probed
                        .get()
                        .map(|_| "the files it reads from another stage changed".to_string())
                }),
        };
        let reason = match difference {
            Some(r) if r == explain::PARENT_CHANGED => match &self.upstream {
                Some(cause) => format!("{r} ({cause})"),
                None => r,
            },
            Some(r) => r,
            None if self.no_cache => "the cache is not used for this step (--no-cache)".into(),
            None => "its inputs are unchanged, but no cache holds its result (pruned?)".into(),
        };
        self.build.events.emit(Event::StepMiss {
            step: self.id.clone(),
            reason,
        });
    }

    /// Records the step's inputs for the next build's explanations (written only when they
    /// changed, so a warm build writes nothing) and for `--cache-to` to carry, and returns how
    /// they differ from the last build of the step here, or from an imported cache's.
    pub(crate) fn record_inputs(&self) -> Option<String> {
        let inputs = self.inputs.borrow();
        if inputs.is_empty() {
            return None;
        }
        let carried = match self.probed.get() {
            Some(n) => inputs.prefix(n),
            None => inputs.clone(),
        };
        self.build
            .record_inputs(self.id, &self.locator(), &inputs, &carried, self.base)
    }

    pub(crate) fn roll_key(&mut self, kind: &str, text: &str) {
        let mut k = KeyBuilder::new(kind);
        k.key(self.key).str(text);
        *self.key = k.finish();
    }
}
