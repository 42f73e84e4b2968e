//! Content digests of build context files, remembered across builds by each file's identity
//! (device, inode, size, mtime, ctime), so an unchanged file is never read twice.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, BufRead, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stat {
    fn of(meta: &fs::Metadata) -> Self {
        Stat {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }
}

/// A file changed this recently may change again within the same timestamp tick without its
/// stat changing, so its digest is used for this build but not remembered (as git does with
/// "racily clean" index entries).
const RACY_WINDOW_NS: i128 = 1_000_000_000;

/// Digests of the regular files of one build context, kept in a file under the state root.
pub struct ContextDigests {
    file: PathBuf,
    racy_window_ns: i128,
    known: Mutex<Known>,
}

#[derive(Default)]
struct Known {
    entries: HashMap<PathBuf, (Stat, [u8; 32])>,
    changed: bool,
}

impl ContextDigests {
    /// Loads what is remembered for the context at `context_dir`, from the directory `dir`
    /// (under the state root). A missing or damaged file just means nothing is remembered.
    pub fn load(dir: &Path, context_dir: &Path) -> Self {
        let id = hex::encode(Sha256::digest(context_dir.as_os_str().as_encoded_bytes()));
        let file = dir.join(format!("{id}.digests"));
        let entries = umstage_oci::regular::open(&file)
            .ok()
            .map(|f| parse(io::BufReader::new(f)))
            .unwrap_or_default();
        ContextDigests {
            file,
            racy_window_ns: RACY_WINDOW_NS,
            known: Mutex::new(Known {
                entries,
                changed: false,
            }),
        }
    }

    /// The sha256 of the content of the regular file `path` (named `rel` inside the context),
    /// whose metadata is `meta`: remembered if the file's stat is unchanged, else read.
    pub fn digest(&self, rel: &Path, path: &Path, meta: &fs::Metadata) -> io::Result<[u8; 32]> {
        let stat = Stat::of(meta);
        if let Ok(known) = self.known.lock()
            && let Some((s, d)) = known.entries.get(rel)
            && *s == stat
        {
            return Ok(*d);
        }
        let digest = hash_file(path)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        let racy = now - stat.mtime_ns.max(stat.ctime_ns) < self.racy_window_ns;
        if let Ok(mut known) = self.known.lock() {
            if racy {
                known.entries.remove(rel);
            } else {
                known.entries.insert(rel.to_path_buf(), (stat, digest));
            }
            known.changed = true;
        }
        Ok(digest)
    }

    /// Writes what is remembered back, if anything changed, atomically.
    pub fn save(&self) -> io::Result<()> {
        let Ok(known) = self.known.lock() else {
            return Ok(());
        };
        if !known.changed {
            return Ok(());
        }
        if let Some(dir) = self.file.parent() {
            fs::create_dir_all(dir)?;
        }
        let tmp = self
            .file
            .with_extension(format!("{}.tmp", crate::ids::unique_key("digests")));
        let result = (|| {
            let mut out = io::BufWriter::new(fs::File::create_new(&tmp)?);
            let mut entries: Vec<_> = known.entries.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            for (rel, (s, d)) in entries {
                // The path goes last, hex-encoded, so any byte in a name is safe.
                writeln!(
                    out,
                    "{} {} {} {} {} {} {}",
                    s.dev,
                    s.ino,
                    s.size,
                    s.mtime_ns,
                    s.ctime_ns,
                    hex::encode(d),
                    hex::encode(rel.as_os_str().as_bytes())
                )?;
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_data()?;
            fs::rename(&tmp, &self.file)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

fn parse(reader: impl BufRead) -> HashMap<PathBuf, (Stat, [u8; 32])> {
    let mut out = HashMap::new();
    for line in reader.lines() {
        let Ok(line) = line else { break };
        let f: Vec<&str> = line.split(' ').collect();
        let [dev, ino, size, mtime, ctime, digest, path] = f[..] else {
            continue;
        };
        let parsed = (|| {
            let stat = Stat {
                dev: dev.parse().ok()?,
                ino: ino.parse().ok()?,
                size: size.parse().ok()?,
                mtime_ns: mtime.parse().ok()?,
                ctime_ns: ctime.parse().ok()?,
            };
            let mut d = [0u8; 32];
            hex::decode_to_slice(digest, &mut d).ok()?;
            let path = PathBuf::from(OsString::from_vec(hex::decode(path).ok()?));
            Some((path, (stat, d)))
        })();
        if let Some((p, v)) = parsed {
            out.insert(p, v);
        }
    }
    out
}

/// The sha256 of a source file's content, read in large chunks (never through a final symlink).
pub fn hash_file(path: &Path) -> io::Result<[u8; 32]> {
    let mut f = crate::copy::open_source(path)?;
    let mut hasher = Sha256::new();
    io::copy(&mut f, &mut hasher)?;
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_files_are_not_reread_and_changed_ones_are() -> io::Result<()> {
        let state = tempfile::tempdir()?;
        let ctx = tempfile::tempdir()?;
        let file = ctx.path().join("a.txt");
        fs::write(&file, b"one")?;
        let rel = Path::new("a.txt");

        // The file was just written; treat it as old enough to be remembered.
        let mut first = ContextDigests::load(state.path(), ctx.path());
        first.racy_window_ns = 0;
        let d1 = first.digest(rel, &file, &fs::metadata(&file)?)?;
        assert_eq!(d1, <[u8; 32]>::from(Sha256::digest(b"one")));
        first.save()?;

        // A remembered digest is returned without reading: prove it by handing a path that
        // cannot be read, with the original file's metadata.
        let second = ContextDigests::load(state.path(), ctx.path());
        let meta = fs::metadata(&file)?;
        assert_eq!(second.digest(rel, Path::new("/nonexistent"), &meta)?, d1);

        // Same size, new content: the stat changes (ctime at least), so it is read again.
        fs::write(&file, b"two")?;
        let d2 = second.digest(rel, &file, &fs::metadata(&file)?)?;
        assert_eq!(d2, <[u8; 32]>::from(Sha256::digest(b"two")));
        Ok(())
    }

    #[test]
    fn recently_changed_files_are_not_remembered() -> io::Result<()> {
        let state = tempfile::tempdir()?;
        let ctx = tempfile::tempdir()?;
        let file = ctx.path().join("fresh");
        fs::write(&file, b"x")?;
        let digests = ContextDigests::load(state.path(), ctx.path());
        digests.digest(Path::new("fresh"), &file, &fs::metadata(&file)?)?;
        digests.save()?;
        let again = ContextDigests::load(state.path(), ctx.path());
        assert!(
            again
                .digest(
                    Path::new("fresh"),
                    Path::new("/nonexistent"),
                    &fs::metadata(&file)?
                )
                .is_err()
        );
        Ok(())
    }
}
