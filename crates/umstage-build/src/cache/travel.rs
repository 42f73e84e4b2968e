//! The caches a build brings in (`--cache-from`) and sends out (`--cache-to`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use umstage_oci::ContentStore;
use umstage_oci::reference::Reference;
use umstage_oci::registry::RegistryClient;

use super::layout::{self, LayoutCache};
use super::manifest::CacheConfig;
use super::registry::RegistryCache;
use super::set::CacheSet;
use super::spec::{CacheExport, CacheImport, CacheMode};
use super::{CacheBackend, convert};
use crate::error::StepError;
use crate::event::{Event, EventSink};
use crate::request::BuildError;

/// Opens every cache `imports` names, and gives the references of those in a registry. One
/// that cannot be read is a warning and the build goes on without it, as with buildx.
pub(crate) fn open_imports(
    imports: &[CacheImport],
    client: &RegistryClient,
    store: &ContentStore,
    events: &dyn EventSink,
) -> (Vec<Arc<dyn CacheBackend>>, Vec<Reference>) {
    let mut opened: Vec<Arc<dyn CacheBackend>> = Vec::new();
    let mut registries = Vec::new();
    for import in imports {
        let result = match import {
            CacheImport::Local { src, digest } => {
                LayoutCache::open(src, digest.as_deref()).map(|c| Arc::new(c) as Arc<_>)
            }
            CacheImport::Registry { reference } => RegistryCache::open(client, reference, store)
                .map(|c| {
                    registries.push(c.reference().clone());
                    Arc::new(c) as Arc<_>
                }),
        };
        match result {
            Ok(cache) => opened.push(cache),
            Err(e) => events.emit(Event::Warning {
                message: format!("--cache-from: {e}; building without it"),
            }),
        }
    }
    (opened, registries)
}

/// The inline cache of the exported image (`--cache-to type=inline`): the records of its own
/// steps, whose blobs are its layers.
pub(crate) fn inline_records(
    caches: &CacheSet,
    min_stages: &HashSet<usize>,
) -> Result<CacheConfig, super::CacheError> {
    // In OCI's names, as the pushed image's manifest lists its layers.
    CacheConfig::from_resolved(&caches.resolved(), CacheMode::Min, min_stages)
        .carrying(caches.carried(CacheMode::Min, min_stages))
        .in_media_types("inline", true)
}

/// Writes the build's records to every cache `exports` names but the inline one (which the
/// image exporter writes); `min_stages` are the stages `mode=min` keeps.
pub(crate) fn export_all(
    exports: &[CacheExport],
    caches: &CacheSet,
    client: &RegistryClient,
    store: &ContentStore,
    min_stages: &HashSet<usize>,
    events: &dyn EventSink,
) -> Result<(), BuildError> {
    let resolved = caches.resolved();
    for export in exports {
        let (text, mode, format) = match export {
            CacheExport::Local { dest, mode, format } => {
                (dest.display().to_string(), *mode, format)
            }
            CacheExport::Registry {
                reference,
                mode,
                format,
            } => (reference.clone(), *mode, format),
            CacheExport::Inline => continue,
        };
        let started = Instant::now();
        let id = crate::ids::unique_key("cache-export");
        events.emit(Event::TaskStarted {
            id: id.clone(),
            text: format!("exporting cache to {text}"),
        });
        let config = CacheConfig::from_resolved(&resolved, mode, min_stages)
            .carrying(caches.carried(mode, min_stages));
        let failed =
            |e: super::CacheError| BuildError::Other(Box::new(StepError::during("--cache-to", e)));
        let converting = convert::to_convert(&config, format, &caches.made());
        let config = if converting.is_empty() {
            config
        } else {
            caches.fetch_missing(&converting, store).map_err(failed)?;
            convert::convert(&text, config, &converting, format, store).map_err(failed)?
        };
        let config = config
            .in_media_types(&text, format.oci_media_types)
            .map_err(failed)?;
        match export {
            CacheExport::Local { dest, .. } => {
                caches
                    .fetch_missing(&config.blobs(), store)
                    .map_err(failed)?;
                layout::export(dest, &config, store, format)
                    .map(|_| ())
                    .map_err(failed)?
            }
            CacheExport::Registry { reference, .. } => {
                // As an image push: blobs the registry has, or can mount from an imported
                // cache, are not downloaded first; only when that is not enough are they.
                let mount_from = umstage_oci::reference::parse(reference)
                    .ok()
                    .and_then(|r| caches.mount_source(&r).cloned());
                let push = || {
                    super::registry::export(
                        client,
                        reference,
                        &config,
                        store,
                        mount_from.as_ref(),
                        format,
                    )
                };
                caches
                    .push_fetching(&config.blobs(), store, push)
                    .map_err(failed)?;
            }
            CacheExport::Inline => {}
        }
        events.emit(Event::TaskDone {
            id,
            elapsed: started.elapsed(),
        });
    }
    Ok(())
}
