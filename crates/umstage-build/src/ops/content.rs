//! Steps that read another stage's filesystem (`COPY --from`, `RUN --mount=from=`) keyed by
//! the content of what they read, as BuildKit keys them: a stage that ran again but left the
//! read files as they were does not make the step run again.
//!
//! Hashing what a stage holds needs its filesystem, so the cheap key comes first: the step
//! keyed by the source stages' keys. That hits whenever the sources were themselves cached.
//! On a miss the step moves to its content key, and once done records the cheap key as an
//! alias of it, so both roads lead to one result and the steps after it key alike.

use crate::cache::{CacheKey, KeyBuilder, Record};
use crate::copy::{self, CopyError, CopyOptions, SourceTree};
use crate::error::StepError;
use crate::ops::step::{StageOutput, Step};
use crate::request::BuildError;
use crate::state::State;

/// What the cheap lookup found.
pub(crate) enum Probe {
    /// A result under the key of the source stages' keys.
    Hit(Box<State>),
    /// None: the step is now keyed by content; the old key is to become its alias.
    Miss(CacheKey),
}

impl Step<'_, '_> {
    /// The digest of what `paths` name in `out`'s filesystem: each entry's path, mode, owner,
    /// kind and content (not its times). `planning` says what a path that cannot be planned
    /// (a missing source) means to the step.
    pub(crate) fn stage_content(
        &self,
        out: &StageOutput,
        paths: &[String],
        options: &CopyOptions,
        planning: &dyn Fn(CopyError) -> StepError,
    ) -> Result<CacheKey, StepError> {
        let mut k = KeyBuilder::new("stage-content");
        let (view, guard) = self.view(&out.state)?;
        let result = (|| {
            let Some(guard) = &guard else {
                // An empty filesystem holds nothing to read.
                k.str("empty");
                return Ok(());
            };
            let tree = SourceTree::open(guard.path(), None, false).map_err(StepError::below)?;
            let plan = copy::plan(&tree, paths, "/", options, &|_| false).map_err(planning)?;
            self.key_plan(&mut k, &plan, false, true)
        })();
        drop(guard);
        self.build.snapshotter.remove(&view);
        result.map(|()| k.finish())
    }

    /// Looks the step up under its current key (made of the source stages' keys); on a miss
    /// moves it to the key `content` computes.
    pub(crate) fn probe_stage_key(
        &mut self,
        content: impl FnOnce(&Self) -> Result<CacheKey, StepError>,
    ) -> Result<Probe, BuildError> {
        if let Some(state) = self.cached() {
            return Ok(Probe::Hit(Box::new(state)));
        }
        let cheap = *self.key;
        self.probed.set(Some(self.inputs.borrow().len()));
        *self.key = content(self).map_err(|e| self.failed(e))?;
        Ok(Probe::Miss(cheap))
    }

    /// Records `cheap` as an alias of the key the step ended with.
    pub(crate) fn alias(&self, cheap: CacheKey) {
        if self.no_cache || cheap == *self.key {
            return;
        }
        let record = Record::Alias {
            same_as: self.key.to_hex(),
        };
        if let Err(e) = self
            .build
            .caches
            .record(self.id.stage_index, &cheap, record)
        {
            tracing::warn!("recording a cache alias: {e}");
        }
    }
}
