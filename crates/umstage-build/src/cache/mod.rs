//! The build cache: step keys (`key`), what a key records (`Record`), and the stores that keep
//! records behind one trait, [`CacheBackend`]: the state root's index (`local`, always
//! consulted first), and the caches a build imports and exports (`--cache-from`,
//! `--cache-to`: `layout` for a directory, `registry` for a registry or an image's inline
//! cache), all in one format (`manifest`); `travel` opens and writes them for a build (`convert` recompressing blobs as
//! `--cache-to compression=` asks). `set` is what a build asks: every backend in
//! order, lazily fetching the layer bytes of a hit only when they are needed. `spec` parses
//! the command line's cache options. `explain` says why a step missed, and `carried` is what
//! a cache takes along for that.

pub mod carried;
pub mod convert;
pub mod explain;
mod index;
mod key;
pub mod layout;
pub mod local;
pub mod manifest;
pub mod registry;
pub mod set;
pub mod spec;
pub(crate) mod travel;

use serde::{Deserialize, Serialize};
use umstage_oci::ContentStore;

pub use index::{CacheIndex, CacheWriteError};
pub use key::{CacheKey, KeyBuilder};

use crate::state::{Layer, State};

/// What a cache records under a key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Record {
    /// The step's result is the one recorded under another key: a step keyed two ways (by its
    /// source stage's key, cheap to compute, and by the content it reads) records its result
    /// under the content key and points the other at it.
    Alias {
        /// The key holding the result, in hex.
        same_as: String,
    },
    /// The step's result: the image config and layers after it.
    Result(Box<State>),
}

impl Record {
    /// The layers a record needs (none for an alias).
    pub fn needs(&self) -> &[Layer] {
        match self {
            Record::Alias { .. } => &[],
            Record::Result(state) => &state.layers,
        }
    }
}

/// A cache could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The local index could not be written.
    #[error(transparent)]
    Write(#[from] CacheWriteError),
    /// A blob could not be read, verified or stored.
    #[error("cache {cache}: {source}")]
    Store {
        /// The cache, as the user named it.
        cache: String,
        /// What went wrong.
        source: Box<umstage_oci::StoreError>,
    },
    /// A cache's files are not what they should be (a missing index, malformed JSON).
    #[error("cache {cache}: {message}")]
    Format {
        /// The cache, as the user named it.
        cache: String,
        /// What is wrong.
        message: String,
    },
    /// A file of a cache directory could not be read or written.
    #[error("cache {cache}: {}: {source}", path.display())]
    Io {
        /// The cache, as the user named it.
        cache: String,
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A registry refused or could not be reached.
    #[error("cache {cache}: {message}")]
    Registry {
        /// The cache, as the user named it.
        cache: String,
        /// What the registry said.
        message: String,
    },
    /// A cache directory could not be written.
    #[error("cache {cache}: {source}")]
    Layout {
        /// The cache, as the user named it.
        cache: String,
        /// What went wrong.
        source: Box<umstage_oci::archive::ArchiveError>,
    },
    /// A layer could not be converted to the compression a cache export asks for.
    #[error("cache {cache}: {source}")]
    Convert {
        /// The cache, as the user named it.
        cache: String,
        /// What went wrong.
        source: Box<umstage_oci::layer::LayerError>,
    },
    /// Layers of an imported cache could not be fetched, and are never used again: the build
    /// may start again without them.
    #[error(transparent)]
    Rejected(Box<CacheError>),
}

/// A store of step records: look a key up, record a result, fetch what a result needs.
///
/// The state root's index is the first implementation; a cache directory, a registry and the
/// inline cache of an image implement it too. A backend's `lookup` returns only records whose
/// layers it (or the local content store) can give, so a hit never fails for want of a blob.
pub trait CacheBackend: Send + Sync {
    /// The cache as the user named it, for messages.
    fn describe(&self) -> String;

    /// The record under `key`, if this cache has a usable one.
    fn lookup(&self, key: &CacheKey) -> Option<Record>;

    /// Records `record` under `key`.
    fn record(&self, key: &CacheKey, record: &Record) -> Result<(), CacheError>;

    /// What the result under `key` needs: its layers, bottom first (none for an alias or an
    /// unknown key).
    fn needs(&self, key: &CacheKey) -> Vec<Layer> {
        self.lookup(key)
            .map(|r| r.needs().to_vec())
            .unwrap_or_default()
    }

    /// Copies the blob of `layer`, which a record of this cache needs, into `store`, verifying
    /// its digest; `Ok(false)` when this cache does not hold it.
    fn fetch(&self, layer: &Layer, store: &ContentStore) -> Result<bool, CacheError>;

    /// The explanations this cache carries, for steps that miss (`carried`).
    fn carried(&self) -> Option<&carried::Carried> {
        None
    }

    /// Fetches several blobs of this cache, as [`CacheBackend::fetch`] each; a registry
    /// downloads them in parallel.
    fn fetch_all(&self, layers: &[Layer], store: &ContentStore) -> Result<(), CacheError> {
        for layer in layers {
            self.fetch(layer, store)?;
        }
        Ok(())
    }
}
