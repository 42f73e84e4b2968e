//! The state root's cache: the index under `cache/steps` over the state root's content store.

use umstage_oci::ContentStore;

use super::{CacheBackend, CacheError, CacheIndex, CacheKey, Record};
use crate::state::{Layer, parse_digest};

/// The cache of the state root: records in its index, blobs in its content store.
#[derive(Debug, Clone)]
pub struct LocalCache {
    index: CacheIndex,
}

impl LocalCache {
    /// The cache kept by `index`.
    pub fn new(index: CacheIndex) -> Self {
        LocalCache { index }
    }

    /// Marks the entry as just used, for `prune`'s least-recently-used order.
    pub fn touch(&self, key: &CacheKey) {
        self.index.touch(key);
    }
}

impl CacheBackend for LocalCache {
    fn describe(&self) -> String {
        "the state root's cache".into()
    }

    fn lookup(&self, key: &CacheKey) -> Option<Record> {
        self.index.get(key)
    }

    fn record(&self, key: &CacheKey, record: &Record) -> Result<(), CacheError> {
        Ok(self.index.put(key, record)?)
    }

    fn fetch(&self, layer: &Layer, store: &ContentStore) -> Result<bool, CacheError> {
        // The local cache's blobs are the store's own.
        Ok(parse_digest(&layer.digest).is_ok_and(|d| store.contains(&d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::KeyBuilder;
    use crate::state::State;

    #[test]
    fn records_and_aliases_round_trip_and_old_entries_still_read()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let cache = LocalCache::new(CacheIndex::open(dir.path().join("steps"))?);
        let key = KeyBuilder::new("t").str("a").finish();
        let alias = KeyBuilder::new("t").str("b").finish();
        let state = State {
            config: crate::config::scratch("linux", "amd64", None),
            layers: vec![Layer {
                digest: format!("sha256:{}", "0".repeat(64)),
                diff_id: format!("sha256:{}", "1".repeat(64)),
                size: 3,
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            }],
        };
        cache.record(&key, &Record::Result(Box::new(state.clone())))?;
        cache.record(
            &alias,
            &Record::Alias {
                same_as: key.to_hex(),
            },
        )?;
        assert_eq!(cache.needs(&key), state.layers);
        assert!(cache.needs(&alias).is_empty());
        assert_eq!(
            cache.lookup(&alias),
            Some(Record::Alias {
                same_as: key.to_hex()
            })
        );
        // An entry written before records existed is a plain state, and still a result.
        let plain = KeyBuilder::new("t").str("c").finish();
        CacheIndex::open(dir.path().join("steps"))?.put(&plain, &state)?;
        assert_eq!(cache.lookup(&plain), Some(Record::Result(Box::new(state))));
        Ok(())
    }
}
