//! The caches one build consults: the state root's first, then each imported one in the
//! order given. A hit from an import costs its metadata only: its layers are fetched into the
//! content store when a step that missed needs the filesystem, or an output needs the bytes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use umstage_oci::ContentStore;
use umstage_oci::reference::Reference;

use super::carried::{Carried, CarriedStep, Nearby};
use super::local::LocalCache;
use super::spec::CacheMode;
use super::{CacheBackend, CacheError, CacheKey, Record};
use crate::state::{Layer, State, parse_digest};

/// Where a hit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The state root's cache.
    Local,
    /// The imported cache at this position of `--cache-from`.
    Import(usize),
}

/// A record a build resolved, kept for `--cache-to`.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The stage whose step it is.
    pub stage: usize,
    /// The step's key.
    pub key: CacheKey,
    /// What the key records.
    pub record: Record,
}

/// Where a layer not in the content store is fetched from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    /// The import at this position.
    Import(usize),
    /// The blob source at this position.
    Source(usize),
}

/// Aliases are followed this deep at most, so a malformed cache cannot loop.
const MAX_ALIASES: usize = 4;

/// The caches of one build.
pub struct CacheSet {
    local: LocalCache,
    imports: Vec<Arc<dyn CacheBackend>>,
    /// Layers of import hits (and of base images) not in the content store yet, and where
    /// each is fetched from.
    pending: Mutex<HashMap<String, Holder>>,
    /// Where base images' layers are fetched from.
    blob_sources: Mutex<Vec<Arc<dyn CacheBackend>>>,
    /// Every key the build resolved, in order.
    resolved: Mutex<Vec<Resolved>>,
    /// Blobs of imports that could not be fetched intact: records needing them are misses.
    rejected: Mutex<HashSet<String>>,
    /// The registry caches imported, by reference, for pushes to mount blobs from.
    registries: Vec<Reference>,
    /// What the imports carry to explain misses.
    nearby: Nearby,
    /// The salt of this build's keys, in hex.
    salt: String,
    /// The inputs of every step the build went through, by stage, for `--cache-to`.
    inputs: Mutex<Vec<(usize, CarriedStep)>>,
    /// The layers this build made (not pulled, not hits), by digest.
    made: Mutex<HashSet<String>>,
}

impl CacheSet {
    /// The state root's cache followed by `imports`, for a build whose keys are salted with
    /// `salt`.
    pub fn new(
        local: LocalCache,
        imports: Vec<Arc<dyn CacheBackend>>,
        registries: Vec<Reference>,
        salt: &CacheKey,
    ) -> Self {
        CacheSet {
            nearby: Nearby::new(imports.iter().filter_map(|i| i.carried())),
            salt: salt.to_hex(),
            inputs: Mutex::new(Vec::new()),
            made: Mutex::new(HashSet::new()),
            local,
            imports,
            pending: Mutex::new(HashMap::new()),
            blob_sources: Mutex::new(Vec::new()),
            rejected: Mutex::new(HashSet::new()),
            resolved: Mutex::new(Vec::new()),
            registries,
        }
    }

    /// An imported registry cache in `target`'s registry (another repository), whose blobs a
    /// push to `target` can mount instead of uploading.
    pub fn mount_source(&self, target: &Reference) -> Option<&Reference> {
        self.registries
            .iter()
            .find(|r| r.registry() == target.registry() && r.repository() != target.repository())
    }

    /// The state root's cache.
    pub fn local(&self) -> &LocalCache {
        &self.local
    }

    /// Every source, the local cache first.
    pub fn sources(&self) -> impl Iterator<Item = Source> + use<> {
        std::iter::once(Source::Local).chain((0..self.imports.len()).map(Source::Import))
    }

    fn backend(&self, source: Source) -> Option<&dyn CacheBackend> {
        match source {
            Source::Local => Some(&self.local),
            Source::Import(i) => self.imports.get(i).map(|b| b.as_ref()),
        }
    }

    /// The result recorded under `key` in `source`, following aliases within it, with the key
    /// that holds it.
    pub fn resolve(&self, source: Source, key: &CacheKey) -> Option<(CacheKey, State)> {
        let backend = self.backend(source)?;
        let mut key = *key;
        for _ in 0..=MAX_ALIASES {
            match backend.lookup(&key)? {
                Record::Result(state) if source != Source::Local && self.needs_rejected(&state) => {
                    return None;
                }
                Record::Result(state) => return Some((key, *state)),
                Record::Alias { same_as } => key = CacheKey::from_hex(&same_as)?,
            }
        }
        None
    }

    /// Takes a hit from an import: its layers missing from `store` are fetched from there when
    /// they are needed.
    pub fn adopt(&self, source: Source, state: &State, store: &ContentStore) {
        let Source::Import(i) = source else {
            return;
        };
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        for layer in &state.layers {
            if !parse_digest(&layer.digest).is_ok_and(|d| store.contains(&d)) {
                pending
                    .entry(layer.digest.clone())
                    .or_insert(Holder::Import(i));
            }
        }
    }

    /// Notes that `source` (a base image's registry) can give the blobs `digests`, fetched
    /// when needed.
    pub fn add_blob_source(
        &self,
        source: Arc<dyn CacheBackend>,
        digests: &[umstage_oci::Digest],
        store: &ContentStore,
    ) {
        let (Ok(mut sources), Ok(mut pending)) = (self.blob_sources.lock(), self.pending.lock())
        else {
            return;
        };
        let index = sources.len();
        sources.push(source);
        for digest in digests {
            if !store.contains(digest) {
                pending
                    .entry(digest.to_string())
                    .or_insert(Holder::Source(index));
            }
        }
    }

    fn holder(&self, holder: Holder) -> Option<Arc<dyn CacheBackend>> {
        match holder {
            Holder::Import(i) => self.imports.get(i).cloned(),
            Holder::Source(i) => self.blob_sources.lock().ok()?.get(i).cloned(),
        }
    }

    /// Whether the blob `digest`, not in the content store, is known to be fetchable.
    pub fn can_fetch(&self, digest: &str) -> bool {
        self.pending.lock().is_ok_and(|p| p.contains_key(digest))
    }

    /// Makes sure every blob of `layers` is in `store`, fetching those an import hit left
    /// behind.
    pub fn fetch_missing(&self, layers: &[Layer], store: &ContentStore) -> Result<(), CacheError> {
        // Grouped by where they come from, so a registry sends each group in parallel.
        let mut groups: Vec<(Holder, Vec<Layer>)> = Vec::new();
        for layer in layers {
            if parse_digest(&layer.digest).is_ok_and(|d| store.contains(&d)) {
                continue;
            }
            let holder = self
                .pending
                .lock()
                .ok()
                .and_then(|p| p.get(&layer.digest).copied());
            let Some(holder) = holder else {
                continue;
            };
            match groups.iter_mut().find(|(h, _)| *h == holder) {
                Some((_, group)) => group.push(layer.clone()),
                None => groups.push((holder, vec![layer.clone()])),
            }
        }
        let sources: Vec<_> = groups
            .into_iter()
            .filter_map(|(holder, group)| Some((holder, self.holder(holder)?, group)))
            .collect();
        let fetch = |backend: &Arc<dyn CacheBackend>, group: &[Layer]| {
            tracing::debug!(layers = group.len(), cache = %backend.describe(), "fetching layers");
            backend.fetch_all(group, store)
        };
        // Each source on its own thread: an output that needs a base image's layers and a
        // cache's waits for the slower of the two registries, not for both in turn.
        let outcomes: Vec<Result<(), CacheError>> = match sources.as_slice() {
            [(_, backend, group)] => vec![fetch(backend, group)],
            _ => std::thread::scope(|scope| {
                let running: Vec<_> = sources
                    .iter()
                    .map(|(_, backend, group)| scope.spawn(|| fetch(backend, group)))
                    .collect();
                running
                    .into_iter()
                    .map(|r| r.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect()
            }),
        };
        for ((holder, backend, group), outcome) in sources.into_iter().zip(outcomes) {
            let Err(e) = outcome else {
                continue;
            };
            let mut rejected = false;
            if let Holder::Import(_) = holder {
                // Which ones: each is tried alone, and those that fail are never used again.
                for layer in &group {
                    if backend.fetch(layer, store).is_err() {
                        self.reject(&layer.digest);
                        rejected = true;
                    }
                }
            }
            return Err(if rejected {
                CacheError::Rejected(Box::new(e))
            } else {
                e
            });
        }
        Ok(())
    }

    /// Runs `push`, which sends `layers` (among others) where the target's blobs and those it
    /// can mount need not be here; when that fails while some of `layers` are not in `store`
    /// (an import's, left where it is), fetches them and runs `push` once more.
    pub fn push_fetching<E: From<CacheError> + std::fmt::Display>(
        &self,
        layers: &[Layer],
        store: &ContentStore,
        push: impl Fn() -> Result<(), E>,
    ) -> Result<(), E> {
        let all_here = layers
            .iter()
            .all(|l| parse_digest(&l.digest).is_ok_and(|d| store.contains(&d)));
        match push() {
            Err(e) if !all_here => {
                tracing::debug!("pushing without the imported layers failed ({e}); fetching them");
                self.fetch_missing(layers, store)?;
                push()
            }
            done => done,
        }
    }

    /// Marks a blob of an import as unusable: records needing it are misses from now on.
    fn reject(&self, digest: &str) {
        if let Ok(mut rejected) = self.rejected.lock() {
            rejected.insert(digest.to_string());
        }
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(digest);
        }
    }

    fn needs_rejected(&self, state: &State) -> bool {
        self.rejected
            .lock()
            .is_ok_and(|r| state.layers.iter().any(|l| r.contains(&l.digest)))
    }

    /// Records a step's result in the local cache, and notes it for `--cache-to`.
    pub fn record(&self, stage: usize, key: &CacheKey, record: Record) -> Result<(), CacheError> {
        let written = self.local.record(key, &record);
        self.note(stage, key, record);
        written
    }

    /// Notes a key the build resolved (a hit, an alias), for `--cache-to`.
    pub fn note(&self, stage: usize, key: &CacheKey, record: Record) {
        if let Ok(mut resolved) = self.resolved.lock() {
            resolved.push(Resolved {
                stage,
                key: *key,
                record,
            });
        }
    }

    /// What the imported caches carry to explain a miss.
    pub fn nearby(&self) -> &Nearby {
        &self.nearby
    }

    /// The salt of this build's keys, in hex.
    pub fn salt(&self) -> &str {
        &self.salt
    }

    /// Notes the inputs of a step of `stage`, for `--cache-to` to carry.
    pub fn note_inputs(&self, stage: usize, step: CarriedStep) {
        if let Ok(mut all) = self.inputs.lock() {
            all.push((stage, step));
        }
    }

    /// The explanations an export in `mode` carries: with `Min`, those of `min_stages` only.
    pub fn carried(&self, mode: CacheMode, min_stages: &HashSet<usize>) -> Carried {
        let all = self.inputs.lock().map(|a| a.clone()).unwrap_or_default();
        let kept = all
            .into_iter()
            .filter(|(stage, _)| mode == CacheMode::Max || min_stages.contains(stage))
            .map(|(_, step)| step);
        Carried::new(self.salt.clone(), kept)
    }

    /// Notes a layer this build made, for `--cache-to compression=`.
    pub fn note_made(&self, digest: &str) {
        if let Ok(mut made) = self.made.lock() {
            made.insert(digest.to_string());
        }
    }

    /// The layers this build made, by digest.
    pub fn made(&self) -> HashSet<String> {
        self.made.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// What the build resolved, in order.
    pub fn resolved(&self) -> Vec<Resolved> {
        self.resolved.lock().map(|r| r.clone()).unwrap_or_default()
    }
}
