//! The build cache index: step cache keys mapped to what the step produced, stored under the
//! state root so that a reader never sees a partial entry, whatever happens to the writer.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::key::CacheKey;

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
        let bytes = match umstage_oci::regular::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if umstage_oci::regular::is_not_regular(&e) => {
                tracing::warn!(path = %path.display(), "dropping unreadable cache entry: {e}");
                let _ = fs::remove_file(&path);
                return None;
            }
            Err(_) => return None,
        };
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
        if let Ok(f) =
            umstage_oci::regular::open_with(fs::File::options().write(true), &self.path(key))
        {
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
    use crate::cache::KeyBuilder;

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
