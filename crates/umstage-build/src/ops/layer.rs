//! The life of a step that changes the filesystem: the cache lookup under the step's key, an
//! active snapshot over the parent's layers, the diff committed as a layer and recorded in the
//! cache; and read-only views of a state that other operations read from.

use umstage_oci::inroot::Root;
use umstage_oci::layer::write_layer;
use umstage_oci::store::StoreError;

use crate::cache::Record;
use crate::cache::set::Source;
use crate::error::StepError;
use crate::event::Event;
use crate::ids::unique_key;
use crate::ops::step::Step;
use crate::request::BuildError;
use crate::state::{Layer, State, parse_digest};

/// A rootfs mounted for a COPY or WORKDIR step.
pub(crate) struct MountedRoot {
    pub(crate) root: Root,
}

impl Step<'_, '_> {
    /// The cached result for the current key, if a cache holds a usable one: the state root's
    /// first, then each imported cache. A hit through an alias moves the key to the one that
    /// holds the result, so the steps after it are keyed alike however this one was found.
    pub(crate) fn cached(&mut self) -> Option<State> {
        if self.no_cache {
            return None;
        }
        let caches = &self.build.caches;
        for source in caches.sources() {
            let Some((key, state)) = caches.resolve(source, self.key) else {
                continue;
            };
            if source == Source::Local && !self.local_hit_usable(&state) {
                continue;
            }
            caches.adopt(source, &state, &self.build.store);
            if source == Source::Local {
                caches.local().touch(&key);
            }
            if key != *self.key {
                caches.note(
                    self.id.stage_index,
                    self.key,
                    Record::Alias {
                        same_as: key.to_hex(),
                    },
                );
            }
            caches.note(
                self.id.stage_index,
                &key,
                Record::Result(Box::new(state.clone())),
            );
            *self.key = key;
            return Some(state);
        }
        None
    }

    /// Whether a hit of the state root's cache has all its layers, intact (a base image's
    /// layers may still be in its registry, fetched when needed).
    fn local_hit_usable(&self, state: &State) -> bool {
        let complete = state.layers.iter().all(|l| {
            parse_digest(&l.digest).is_ok_and(|d| self.build.store.contains(&d))
                || self.build.caches.can_fetch(&l.digest)
        });
        if !complete {
            return false;
        }
        // The layers this step added were made here, not pulled: one that no longer matches
        // its digest (verify removes it) makes the entry a miss, so the step runs and remakes
        // it. A stamp spares the hashing while the blob is unchanged.
        let made = state.layers.get(self.layers.len()..).unwrap_or_default();
        for layer in made {
            let reason = match parse_digest(&layer.digest) {
                Err(e) => e.to_string(),
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
            return false;
        }
        true
    }

    pub(crate) fn use_cached(&mut self, state: State) -> bool {
        self.cfg.image = state.config;
        *self.layers = state.layers;
        true
    }

    /// Runs `work` in an active snapshot over the current state (mounted at a root), then turns
    /// what it changed into a layer; consults and fills the cache under the current key.
    pub(crate) fn fs_step(
        &mut self,
        created_by: String,
        work: impl FnOnce(&Self, &MountedRoot) -> Result<(), StepError>,
    ) -> Result<bool, BuildError> {
        if let Some(state) = self.cached() {
            return Ok(self.use_cached(state));
        }
        self.explain_miss();
        let active = self.prepare()?;
        let outcome = (|| {
            let guard = self
                .build
                .snapshotter
                .get()?
                .mount(&active)
                .map_err(StepError::below)?;
            let root = MountedRoot {
                root: Root::open(guard.path()).map_err(StepError::below)?,
            };
            work(self, &root)
        })();
        if let Err(e) = outcome {
            self.build.snapshotter.remove(&active);
            return Err(self.failed(e));
        }
        self.commit(&active, created_by)?;
        Ok(false)
    }

    /// Makes an active snapshot on top of the current layers.
    pub(crate) fn prepare(&self) -> Result<String, BuildError> {
        self.build
            .caches
            .fetch_missing(self.layers, &self.build.store)
            .map_err(|e| self.failed(StepError::below(e)))?;
        let parent = self
            .build
            .unpacker
            .ensure(
                self.build.snapshotter.get().map_err(|e| self.failed(e))?,
                &self.build.store,
                self.layers,
                self.build.ignore_chown_errors,
            )
            .map_err(|e| self.failed(e))?;
        let active = unique_key("step");
        self.build
            .snapshotter
            .get()
            .map_err(|e| self.failed(e))?
            .prepare(&active, parent.as_deref())
            .map_err(|e| self.failed(StepError::below(e)))?;
        Ok(active)
    }

    /// Diffs the active snapshot into a layer (none if nothing changed), commits it, records the
    /// history entry and stores the result under the current key.
    pub(crate) fn commit(&mut self, active: &str, created_by: String) -> Result<(), BuildError> {
        let build = self.build;
        let (id, instruction) = (self.id, self.instruction);
        let fail = |e: StepError| build.fail(id, instruction, e, None, Vec::new());
        let snapshotter = build.snapshotter.get().map_err(&fail)?;
        let changes = snapshotter
            .diff(active)
            .map_err(|e| fail(StepError::below(e)))?;
        if changes.changes.is_empty() {
            build.snapshotter.remove(active);
            self.cfg
                .add_history(created_by, Some(build.created.clone()), true);
        } else {
            let info = write_layer(&build.store, &changes, &build.layer_options)
                .map_err(|e| fail(StepError::during("writing the layer", e)))?;
            let layer = Layer {
                digest: info.blob.digest.to_string(),
                diff_id: info.diff_id.to_string(),
                size: info.blob.size,
                media_type: info.media_type.to_string(),
            };
            build.caches.note_made(&layer.digest);
            self.layers.push(layer);
            self.cfg.image.rootfs.diff_ids.push(info.diff_id.clone());
            let chain = crate::state::snapshot_names(self.layers, build.ignore_chown_errors)
                .pop()
                .unwrap_or_default();
            build
                .lease
                .hold_snapshots([chain.as_str()])
                .map_err(|e| fail(StepError::below(e)))?;
            snapshotter
                .commit(&chain, active)
                .map_err(|e| fail(StepError::below(e)))?;
            self.cfg
                .add_history(created_by, Some(build.created.clone()), false);
        }
        let state = State {
            config: self.cfg.image.clone(),
            layers: self.layers.clone(),
        };
        let record = Record::Result(Box::new(state));
        if let Err(e) = build.caches.record(self.id.stage_index, self.key, record) {
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

    /// A read-only view of a state's filesystem, mounted; `None` for an empty filesystem.
    pub(crate) fn view(
        &self,
        state: &State,
    ) -> Result<(String, Option<umstage_snapshot::snapshot::MountGuard>), StepError> {
        let build = self.build;
        build
            .caches
            .fetch_missing(&state.layers, &build.store)
            .map_err(StepError::below)?;
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
        snapshotter.view(&key, &chain).map_err(StepError::below)?;
        match snapshotter.mount(&key) {
            Ok(guard) => Ok((key, Some(guard))),
            Err(e) => {
                build.snapshotter.remove(&key);
                Err(StepError::below(e))
            }
        }
    }
}
