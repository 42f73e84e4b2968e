//! The build cache index: step cache keys mapped to what the step produced, stored under the
//! state root so that a reader never sees a partial entry, whatever happens to the writer.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

/// A content-addressed cache key: the sha256 of everything a step's result depends on.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// The key as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits back into a key.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(CacheKey(bytes))
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.to_hex())
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Builds a cache key from typed, length-prefixed fields, so that no two different field
/// sequences hash alike (`"ab","c"` differs from `"a","bc"`).
#[derive(Clone)]
pub struct KeyBuilder(Sha256);

impl KeyBuilder {
    /// Starts a key for a kind of step (`"run"`, `"copy"`, …), versioned with the cache format.
    pub fn new(kind: &str) -> Self {
        let mut b = KeyBuilder(Sha256::new());
        b.str("umstage-cache-v1");
        b.str(kind);
        b
    }

    /// Adds a string field.
    pub fn str(&mut self, value: &str) -> &mut Self {
        self.bytes(value.as_bytes())
    }

    /// Adds a byte-string field.
    pub fn bytes(&mut self, value: &[u8]) -> &mut Self {
        self.0.update((value.len() as u64).to_le_bytes());
        self.0.update(value);
        self
    }

    /// Adds a number field.
    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.0.update([8u8]);
        self.0.update(value.to_le_bytes());
        self
    }

    /// Adds another key (a parent step, a source stage).
    pub fn key(&mut self, key: &CacheKey) -> &mut Self {
        self.bytes(&key.0)
    }

    /// Adds an optional string field; `None` and `Some("")` differ.
    pub fn opt_str(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            None => self.u64(0),
            Some(v) => self.u64(1).str(v),
        }
    }

    /// The finished key.
    pub fn finish(&self) -> CacheKey {
        CacheKey(self.0.clone().finalize().into())
    }
}

/// The cache index under a state root: one small file per key, written to a temporary name and
/// renamed into place, so an entry is either wholly there or absent. An entry that cannot be
/// read back (say, truncated by a power loss before the file system flushed it) is a miss, and
/// is removed.
#[derive(Debug, Clone)]
pub struct CacheIndex {
    dir: PathBuf,
}

/// The cache index could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the build cache entry {path}: {source}")]
pub struct CacheWriteError {
    path: PathBuf,
    #[source]
    source: io::Error,
}

impl CacheIndex {
    /// Opens (creating if needed) the index kept in `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("creating the build cache {}: {e}", dir.display()),
            )
        })?;
        Ok(CacheIndex { dir })
    }

    /// The directory holding the entries.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(format!("{}.json", key.to_hex()))
    }

    /// The entry stored under `key`, if there is a readable one.
    pub fn get<T: DeserializeOwned>(&self, key: &CacheKey) -> Option<T> {
        let path = self.path(key);
        let bytes = fs::read(&path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "dropping unreadable cache entry");
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// Marks the entry as just used, for `prune`'s least-recently-used order. Best effort.
    pub fn touch(&self, key: &CacheKey) {
        if let Ok(f) = fs::File::options().write(true).open(self.path(key)) {
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// Stores `value` under `key`, replacing any entry there.
    pub fn put<T: Serialize>(&self, key: &CacheKey, value: &T) -> Result<(), CacheWriteError> {
        let path = self.path(key);
        let err = |source| CacheWriteError {
            path: path.clone(),
            source,
        };
        let bytes = serde_json::to_vec(value).map_err(|e| err(io::Error::other(e)))?;
        let tmp = self.dir.join(format!(
            ".{}.{}.tmp",
            key.to_hex(),
            crate::ids::unique_key("entry")
        ));
        let written = (|| {
            let mut f = fs::File::create_new(&tmp)?;
            f.write_all(&bytes)?;
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(err(e));
        }
        Ok(())
    }

    /// Removes the entry under `key`, if any.
    pub fn remove(&self, key: &CacheKey) -> io::Result<()> {
        match fs::remove_file(self.path(key)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every key in the index, with when it was last used.
    pub fn entries(&self) -> io::Result<Vec<(CacheKey, SystemTime)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            let Some(key) = CacheKey::from_hex(hex) else {
                continue;
            };
            let used = entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            out.push((key, used));
        }
        Ok(out)
    }

    /// Removes temporary files left by writers that were killed mid-write: those older than
    /// `age` (a writer still running renames its file within moments).
    pub fn remove_leftovers(&self, age: Duration) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let old = || {
                entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|e| e > age))
            };
            if name
                .to_str()
                .is_some_and(|n| n.starts_with('.') && n.ends_with(".tmp"))
                && old()
                && fs::remove_file(entry.path()).is_ok()
            {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_length_prefixed() {
        let a = KeyBuilder::new("t").str("ab").str("c").finish();
        let b = KeyBuilder::new("t").str("a").str("bc").finish();
        assert_ne!(a, b);
        let c = KeyBuilder::new("t").opt_str(None).finish();
        let d = KeyBuilder::new("t").opt_str(Some("")).finish();
        assert_ne!(c, d);
        assert_eq!(a, KeyBuilder::new("t").str("ab").str("c").finish());
        assert_eq!(CacheKey::from_hex(&a.to_hex()), Some(a));
    }

    #[test]
    fn an_index_that_cannot_be_made_names_its_directory() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        fs::write(dir.path().join("file"), b"")?;
        let wanted = dir.path().join("file/steps");
        let err = CacheIndex::open(&wanted)
            .err()
            .ok_or("opened under a file")?;
        assert!(
            err.to_string().contains(&wanted.display().to_string()),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn put_get_and_unreadable_entries_are_misses() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let index = CacheIndex::open(dir.path().join("idx"))?;
        let key = KeyBuilder::new("t").str("x").finish();
        assert_eq!(index.get::<Vec<u32>>(&key), None);
        index.put(&key, &vec![1u32, 2, 3])?;
        assert_eq!(index.get::<Vec<u32>>(&key), Some(vec![1, 2, 3]));
        assert_eq!(index.entries()?.len(), 1);

        // A truncated entry, as a power loss could leave it, is a miss and goes away.
        fs::write(index.dir().join(format!("{key}.json")), b"[1, 2")?;
        assert_eq!(index.get::<Vec<u32>>(&key), None);
        assert!(index.entries()?.is_empty());

        // A writer killed before its rename leaves only a temporary file, never an entry.
        let leftover = index.dir().join(format!(".{key}.1.0.tmp"));
        fs::write(&leftover, b"[1")?;
        assert!(index.entries()?.is_empty());
        // A young one may belong to a writer still running; an old one is collected.
        assert_eq!(index.remove_leftovers(Duration::from_secs(600))?, 0);
        fs::File::options()
            .write(true)
            .open(&leftover)?
            .set_modified(SystemTime::now() - Duration::from_secs(3600))?;
        assert_eq!(index.remove_leftovers(Duration::from_secs(600))?, 1);
        Ok(())
    }
}
