//! The caches a build brings in (`--cache-from`) and sends out (`--cache-to`).

use std::collections::HashSet;
use std::time::Instant;

use umstage_oci::ContentStore;

use super::CacheBackend;
use super::layout::{self, LayoutCache};
use super::manifest::CacheConfig;
use super::set::CacheSet;
use super::spec::{CacheExport, CacheImport};
use crate::event::{Event, EventSink};
use crate::request::BuildError;

/// Opens every cache `imports` names. One that cannot be read is a warning and the build goes
/// on without it, as with buildx.
pub(crate) fn open_imports(
    imports: &[CacheImport],
    events: &dyn EventSink,
) -> Vec<Box<dyn CacheBackend>> {
    let mut opened: Vec<Box<dyn CacheBackend>> = Vec::new();
    for import in imports {
        let result = match import {
            CacheImport::Local { src, digest } => {
                LayoutCache::open(src, digest.as_deref()).map(|c| Box::new(c) as Box<_>)
            }
            CacheImport::Registry { reference } => Err(super::CacheError::Registry {
                cache: reference.clone(),
                message: "registry caches are not read yet".into(),
            }),
        };
        match result {
            Ok(cache) => opened.push(cache),
            Err(e) => events.emit(Event::Warning {
                message: format!("--cache-from: {e}; building without it"),
            }),
        }
    }
    opened
}

/// Refuses, before anything is built, a `--cache-to` this build cannot write.
pub(crate) fn check_exports(exports: &[CacheExport]) -> Result<(), BuildError> {
    match exports
        .iter()
        .find(|e| !matches!(e, CacheExport::Local { .. }))
    {
        Some(e) => Err(BuildError::Invalid(format!(
            "--cache-to {e:?}: only type=local is written yet"
        ))),
        None => Ok(()),
    }
}

/// Writes the build's records to every cache `exports` names; `min_stages` are the stages
/// `mode=min` keeps.
pub(crate) fn export_all(
    exports: &[CacheExport],
    caches: &CacheSet,
    store: &ContentStore,
    min_stages: &HashSet<usize>,
    events: &dyn EventSink,
) -> Result<(), BuildError> {
    let resolved = caches.resolved();
    for export in exports {
        let CacheExport::Local { dest, mode } = export else {
            continue;
        };
        let started = Instant::now();
        let id = crate::ids::unique_key("cache-export");
        events.emit(Event::TaskStarted {
            id: id.clone(),
            text: format!("exporting cache to {}", dest.display()),
        });
        let config = CacheConfig::from_resolved(&resolved, *mode, min_stages);
        let failed = |e: super::CacheError| BuildError::Other(format!("--cache-to: {e}"));
        caches
            .fetch_missing(&config.blobs(), store)
            .map_err(failed)?;
        layout::export(dest, &config, store).map_err(failed)?;
        events.emit(Event::TaskDone {
            id,
            elapsed: started.elapsed(),
        });
    }
    Ok(())
}
