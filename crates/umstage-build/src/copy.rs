//! COPY and ADD as file operations: which source entries an instruction selects (wildcards,
//! `.dockerignore`, `--exclude`, directory contents, `--parents`), where each one lands (trailing
//! slashes, existing directories), and copying them into a rootfs (`write`). Every path is
//! resolved inside its root: a symlink in the context, a stage or the destination never reaches a host file.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, OFlags};
use umstage_dockerfile::Dockerignore;
use umstage_oci::inroot::{
    Escape, InRootError, Root, lstat_no_symlinks, open_no_symlinks, read_dir_no_symlinks,
    read_link_no_symlinks,
};
use umstage_oci::owner;

use crate::chmod::Chmod;

mod write;

pub(crate) use write::open_source;
pub use write::{execute, execute_linked, is_dir_in, make_dirs, make_dirs_mode};

/// Why a COPY or ADD could not be planned or done.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A named (non-wildcard) source does not exist, or is excluded.
    #[error("source {0:?} does not exist")]
    NotFound(String),
    /// Several sources were given but the destination is not a directory.
    #[error("with more than one source the destination {0:?} must be a directory: end it with a /")]
    DestNotDir(String),
    /// A file would replace a non-empty directory.
    #[error("cannot copy {src:?} over the directory {dest:?}")]
    FileOverDir {
        /// The source entry.
        src: String,
        /// The destination path.
        dest: String,
    },
    /// A source pattern cannot be compiled.
    #[error("invalid source pattern {0:?}")]
    BadPattern(String),
    /// A path could not be resolved inside its root.
    #[error(transparent)]
    InRoot(#[from] InRootError),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path in its root.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CopyError + '_ {
    move |source| CopyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn errno(path: &Path) -> impl FnOnce(rustix::io::Errno) -> CopyError + '_ {
    move |e| CopyError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// The kind of one entry to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemKind {
    /// A regular file with content read from `Item::src`.
    File,
    /// A regular file with this content (a heredoc source).
    Inline(Vec<u8>),
    /// A directory.
    Dir,
    /// A symlink with this target.
    Symlink(PathBuf),
    /// A named pipe.
    Fifo,
    /// A character or block device (from a stage: the build context sends none).
    Device(umstage_oci::device::Device),
}

/// One entry a COPY creates.
#[derive(Debug, Clone)]
pub struct Item {
    /// Where the content is read from on the host (empty for inline content).
    pub src: PathBuf,
    /// The entry's path relative to its source root, for digest lookups.
    pub src_rel: PathBuf,
    /// Absolute path inside the destination root.
    pub dest: PathBuf,
    /// What to create.
    pub kind: ItemKind,
    /// Permission bits (`0o7777` part).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes, for regular files.
    pub size: u64,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// Whether the entry is the top of a copied directory onto an existing directory: only its
    /// children are created, the existing directory keeps its metadata.
    pub merge_only: bool,
    /// The source's metadata as planned, so a digest lookup needs no second `stat`.
    pub stat: Option<fs::Metadata>,
    /// Whether the entry is a source the instruction names (or a wildcard matched), not an
    /// entry found inside a copied directory: ADD extracts only such an archive.
    pub named: bool,
}

/// A tree COPY reads from: the build context (with its `.dockerignore`), a stage's rootfs, or
/// an image's.
pub struct SourceTree<'a> {
    root: Root,
    host: PathBuf,
    ignore: Option<&'a Dockerignore>,
    reset_owner: bool,
}

impl<'a> SourceTree<'a> {
    /// Opens `dir` as a source. `ignore` hides matching paths (the context's `.dockerignore`);
    /// `reset_owner` gives every copied entry uid and gid 0 (context files belong to the user
    /// running the build, not to anyone in the image).
    pub fn open(
        dir: &Path,
        ignore: Option<&'a Dockerignore>,
        reset_owner: bool,
    ) -> Result<Self, CopyError> {
        let host = fs::canonicalize(dir).map_err(io_err(dir))?;
        let root = Root::open(&host).map_err(io_err(dir))?;
        Ok(SourceTree {
            root,
            host,
            ignore,
            reset_owner,
        })
    }

    fn ignored(&self, rel: &Path) -> bool {
        self.ignore
            .is_some_and(|i| !rel.as_os_str().is_empty() && i.is_excluded(&rel.to_string_lossy()))
    }

    /// Whether `rel` is in the context as BuildKit sends it: not ignored, or an ignored
    /// directory holding something a `!` pattern brings back (which brings its parents).
    fn visible(&self, rel: &Path) -> bool {
        if !self.ignored(rel) {
            return true;
        }
        let may = self
            .ignore
            .is_some_and(|i| i.may_include_below(&rel.to_string_lossy()));
        if !may {
            return false;
        }
        let Ok(real) = self.follow(rel) else {
            return false;
        };
        let Ok(entries) = read_dir_no_symlinks(&self.host.join(real)) else {
            return false;
        };
        // Links are entries, not directories to enter (the walk below does not follow them
        // either): following one back up would search the same tree again and again.
        entries.flatten().any(|e| {
            let child = rel.join(e.file_name());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                self.visible(&child)
            } else {
                !self.ignored(&child)
            }
        })
    }

    /// Resolves `rel` inside the root, following symlinks (also the last one) there; returns
    /// the real path relative to the root.
    fn follow(&self, rel: &Path) -> Result<PathBuf, CopyError> {
        Ok(self.root.resolve(rel, Escape::Clamp)?.1)
    }

    /// Every path (relative to the root) that `pattern` names: the path itself when it has no
    /// wildcard (an error if it does not exist or is ignored), else every existing, not ignored
    /// path it matches (possibly none). As BuildKit, a wildcard matches within one path
    /// component (`**` as `*`, Go's `filepath.Match`), except with `--parents` after the `/./`
    /// pivot (or everywhere without one), where the pattern is an include pattern of BuildKit's
    /// pattern matcher and `**` matches any number of directories.
    pub fn expand(&self, pattern: &str, parents: bool) -> Result<Vec<PathBuf>, CopyError> {
        let source = if parents {
            pattern.to_string()
        } else {
            one_component_stars(pattern)
        };
        let clean = match (parents, pivot(pattern)) {
            (true, Some((before, after))) => {
                umstage_dockerfile::clean_path(&format!("{}/{after}", one_component_stars(before)))
            }
            _ => umstage_dockerfile::clean_path(&source),
        };
        let clean = clean.trim_start_matches('/').to_string();
        let rel = if clean == "." {
            PathBuf::new()
        } else {
            PathBuf::from(&clean)
        };
        if !has_wildcard(&clean) {
            if !self.visible(&rel) {
                return Err(CopyError::NotFound(pattern.to_string()));
            }
            return match self.root.resolve(&rel, Escape::Clamp) {
                Ok((at, _))
                    if rfs::statat(&at.parent, &at.name, AtFlags::SYMLINK_NOFOLLOW).is_ok() =>
                {
                    Ok(vec![rel])
                }
                Ok(_) => Err(CopyError::NotFound(pattern.to_string())),
                Err(e) if e.is_not_found() || matches!(e, InRootError::NotADirectory { .. }) => {
                    Err(CopyError::NotFound(pattern.to_string()))
                }
                Err(e) => Err(e.into()),
            };
        }
        // Walk from the longest directory prefix without wildcards.
        let parts: Vec<&str> = clean.split('/').collect();
        let fixed = parts.iter().take_while(|p| !has_wildcard(p)).count();
        let prefix: PathBuf = parts[..fixed].iter().collect();
        let rest = parts[fixed..].join("/");
        let matcher = Dockerignore::parse(&rest)
            .ok()
            .and_then(|d| d.patterns.into_iter().next())
            .ok_or_else(|| CopyError::BadPattern(pattern.to_string()))?;
        let depth = if rest.contains("**") {
            usize::MAX
        } else {
            parts.len() - fixed
        };
        let start = match self.follow(&prefix) {
            Ok(real) => real,
            Err(e) if is_not_found(&e) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        let mut stack = vec![(PathBuf::new(), 0usize)];
        while let Some((below, level)) = stack.pop() {
            let dir = self.host.join(&start).join(&below);
            let Ok(entries) = read_dir_no_symlinks(&dir) else {
                continue;
            };
            // The entry's type from the directory itself (no stat); a symlink is never a
            // directory here, as with lstat.
            let mut names: Vec<(OsString, bool)> = entries
                .flatten()
                .map(|e| (e.file_name(), e.file_type().is_ok_and(|t| t.is_dir())))
                .collect();
            names.sort();
            for (name, is_dir) in names.into_iter().rev() {
                let sub = below.join(&name);
                let rel_path = prefix.join(&sub);
                if !self.visible(&rel_path) {
                    continue;
                }
                let matched = matcher.matches(&sub.to_string_lossy());
                if matched {
                    out.push(rel_path.clone());
                }
                // A matched directory is copied whole: nothing below it is matched again.
                if is_dir && !matched && level + 1 < depth {
                    stack.push((sub, level + 1));
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

fn is_not_found(e: &CopyError) -> bool {
    match e {
        CopyError::InRoot(e) => e.is_not_found() || matches!(e, InRootError::NotADirectory { .. }),
        CopyError::Io { source, .. } => source.kind() == io::ErrorKind::NotFound,
        _ => false,
    }
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// `pattern` with every run of unescaped `*` made one `*`: Go's `filepath.Match`, which
/// BuildKit matches COPY sources with, reads `**` as two `*`s within one component.
fn one_component_stars(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut escaped = false;
    for c in pattern.chars() {
        if c == '*' && !escaped && out.ends_with('*') && !out.ends_with("\\*") {
            continue;
        }
        escaped = c == '\\' && !escaped;
        out.push(c);
    }
    out
}

/// A `--parents` source split at its first `/./`: the part whose path is dropped, and the
/// part kept below the destination.
fn pivot(pattern: &str) -> Option<(&str, &str)> {
    pattern
        .trim_start_matches("./")
        .trim_start_matches('/')
        .split_once("/./")
}

/// How a COPY treats what it copies.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// `--chown`, resolved to ids.
    pub chown: Option<(u32, u32)>,
    /// `--chmod`.
    pub chmod: Option<Chmod>,
    /// `--parents`: keep each source's path below the destination.
    pub parents: bool,
    /// `--exclude` patterns, compiled.
    pub exclude: Option<Dockerignore>,
}

/// Where a set of sources lands, once every source pattern is expanded.
pub struct Plan {
    /// The entries to create, parents before children.
    pub items: Vec<Item>,
    /// The destination directory whose missing parents are created (owned like the items).
    pub dest_dir: PathBuf,
    /// The mode of the directories the copy creates that no source gives one: 0755, or
    /// `--chmod`'s, as BuildKit.
    pub new_dirs_mode: u32,
    /// Whether `dest_dir` is made even when nothing is copied: a `--parents` source copies
    /// from a directory that exists (the root, or a pivot without wildcards), as BuildKit.
    pub make_dest: bool,
}

/// Plans a COPY of `sources` (patterns relative to the source root) to `dest` (absolute inside
/// the destination root; a trailing `/` marks a directory). `dest_is_dir` tells whether a path
/// is an existing directory in the destination root.
pub fn plan(
    tree: &SourceTree<'_>,
    sources: &[String],
    dest: &str,
    options: &CopyOptions,
    dest_is_dir: &dyn Fn(&Path) -> bool,
) -> Result<Plan, CopyError> {
    let mut matched = Vec::new();
    for pattern in sources {
        for rel in tree.expand(pattern, options.parents)? {
            matched.push((pattern.as_str(), rel));
        }
    }
    let dest_path = PathBuf::from(crate::config::clean_abs(dest));
    let marked_dir = dest.ends_with('/') || dest.ends_with("/.") || dest_path == Path::new("/");
    if sources.len() > 1 && !marked_dir && !dest_is_dir(&dest_path) {
        return Err(CopyError::DestNotDir(dest.to_string()));
    }
    let into_dir = marked_dir || matched.len() > 1 || dest_is_dir(&dest_path);
    let mut items = Vec::new();
    for (pattern, rel) in matched {
        let real = tree.follow(&rel)?;
        let host = tree.host.join(&real);
        let meta = lstat_no_symlinks(&host).map_err(io_err(&rel))?;
        let base = if options.parents {
            dest_path.join(parents_part(pattern, &rel))
        } else if meta.is_dir() {
            dest_path.clone()
        } else if into_dir {
            dest_path.join(rel.file_name().unwrap_or(real.as_os_str()))
        } else {
            dest_path.clone()
        };
        if meta.is_dir() {
            let top = base.clone();
            let merge_only = dest_is_dir(&top);
            let mut top_item = item(tree, &host, &real, top.clone(), &meta, options, true)?;
            top_item.merge_only = merge_only;
            if !options.parents {
                // BuildKit makes the destination of a directory's contents as it makes
                // missing parents (0755 or --chmod's mode, --chown's owner or root) and does
                // not give it the source directory's mode or owner.
                top_item.mode = new_dirs_mode(options);
                (top_item.uid, top_item.gid) = options.chown.unwrap_or((0, 0));
            }
            items.push(top_item);
            walk_dir(tree, &host, &real, &real, &top, options, &mut items)?;
        } else {
            if excluded(options, &real, rel.file_name()) {
                continue;
            }
            let mut named = item(tree, &host, &real, base, &meta, options, false)?;
            named.named = true;
            items.push(named);
        }
    }
    let dest_dir = if into_dir || options.parents {
        dest_path
    } else {
        dest_path
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
    };
    let make_dest = options.parents
        && sources
            .iter()
            .any(|p| pivot(p).is_none_or(|(before, _)| !has_wildcard(before)));
    Ok(Plan {
        items,
        dest_dir,
        make_dest,
        new_dirs_mode: new_dirs_mode(options),
    })
}

/// The mode of a directory a copy creates that no source gives one.
pub fn new_dirs_mode(options: &CopyOptions) -> u32 {
    options
        .chmod
        .as_ref()
        .map_or(0o755, |c| c.apply(0o755, true))
}

/// With `--parents`, the part of a source path kept below the destination: all of it, or what
/// follows a `/./` pivot in the pattern.
fn parents_part(pattern: &str, rel: &Path) -> PathBuf {
    match pivot(pattern) {
        // The part before the pivot matches one component per component, wildcards or not.
        Some((before, _)) => {
            let before = umstage_dockerfile::clean_path(before);
            let depth = if before == "." {
                0
            } else {
                before.split('/').count()
            };
            rel.components().skip(depth).collect()
        }
        None => rel.to_path_buf(),
    }
}

fn excluded(options: &CopyOptions, rel: &Path, name: Option<&OsStr>) -> bool {
    let Some(ex) = &options.exclude else {
        return false;
    };
    ex.is_excluded(&rel.to_string_lossy())
        || name.is_some_and(|n| ex.is_excluded(&n.to_string_lossy()))
}

/// Adds the entries below a copied directory; `top` is the copied directory (relative to the
/// source root), which `--exclude` patterns are also matched from.
fn walk_dir(
    tree: &SourceTree<'_>,
    host_dir: &Path,
    top: &Path,
    rel_dir: &Path,
    dest_dir: &Path,
    options: &CopyOptions,
    items: &mut Vec<Item>,
) -> Result<(), CopyError> {
    let mut names: Vec<OsString> = read_dir_no_symlinks(host_dir)
        .map_err(io_err(rel_dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_err(rel_dir))?;
    names.sort();
    for name in names {
        let rel = rel_dir.join(&name);
        let host = host_dir.join(&name);
        let ignored = tree.ignored(&rel);
        // An ignored directory may still hold re-included files.
        if ignored
            && !tree
                .ignore
                .is_some_and(|i| i.may_include_below(&rel.to_string_lossy()))
        {
            continue;
        }
        let meta = lstat_no_symlinks(&host);
        if ignored && !meta.as_ref().is_ok_and(|m| m.is_dir()) {
            continue;
        }
        let meta = meta.map_err(io_err(&rel))?;
        let below_top = rel.strip_prefix(top).ok();
        if excluded(options, &rel, None) || below_top.is_some_and(|b| excluded(options, b, None)) {
            continue;
        }
        let dest = dest_dir.join(&name);
        if meta.is_dir() {
            let start = items.len();
            items.push(item(tree, &host, &rel, dest.clone(), &meta, options, true)?);
            walk_dir(tree, &host, top, &rel, &dest, options, items)?;
            // A directory entered only for re-included children is dropped if none was.
            if ignored && items.len() == start + 1 {
                items.pop();
            }
        } else if !ignored {
            items.push(item(tree, &host, &rel, dest, &meta, options, false)?);
        }
    }
    Ok(())
}

/// The owner a stage records for the symlink at `host` (on its directory: see
/// `umstage_oci::owner::link`).
fn link_recorded(tree: &SourceTree<'_>, host: &Path, ft: fs::FileType) -> Option<owner::Owner> {
    if tree.reset_owner || !ft.is_symlink() {
        return None;
    }
    let dir = open_no_symlinks(host.parent()?, OFlags::PATH | OFlags::DIRECTORY).ok()?;
    owner::link::link_recorded(&dir, host.file_name()?)
}

fn item(
    tree: &SourceTree<'_>,
    host: &Path,
    rel: &Path,
    dest: PathBuf,
    meta: &fs::Metadata,
    options: &CopyOptions,
    is_dir: bool,
) -> Result<Item, CopyError> {
    let ft = meta.file_type();
    // A stage's records (owners, devices: see `umstage_oci::owner`), read from the entry
    // itself (a symlink's /proc link must not be followed to its target); the context has none.
    let records = (!tree.reset_owner && !ft.is_symlink())
        .then(|| open_no_symlinks(host, OFlags::PATH | OFlags::NOFOLLOW).ok())
        .flatten();
    let device = records.as_ref().and_then(umstage_oci::device::recorded);
    let kind = if is_dir {
        ItemKind::Dir
    } else if ft.is_symlink() {
        ItemKind::Symlink(read_link_no_symlinks(host).map_err(io_err(rel))?)
    } else if let Some(device) = device.filter(|_| ft.is_file()) {
        ItemKind::Device(device)
    } else if ft.is_file() {
        ItemKind::File
    } else if (ft.is_char_device() || ft.is_block_device()) && !tree.reset_owner {
        ItemKind::Device(umstage_oci::device::Device {
            block: ft.is_block_device(),
            major: rustix::fs::major(meta.rdev()),
            minor: rustix::fs::minor(meta.rdev()),
        })
    } else if ft.is_fifo() {
        ItemKind::Fifo
    } else if ft.is_socket() && tree.reset_owner {
        // A directory on the host (the context) is read as BuildKit's context transfer sends
        // it: a socket arrives as an empty regular file.
        ItemKind::Inline(Vec::new())
    } else {
        return Err(CopyError::Io {
            path: rel.to_path_buf(),
            source: io::Error::other("device nodes and sockets cannot be copied"),
        });
    };
    let mut mode = meta.mode() & 0o7777;
    if let Some(chmod) = &options.chmod
        && !matches!(kind, ItemKind::Symlink(_))
    {
        mode = chmod.apply(mode, is_dir);
    }
    let (uid, gid) = match options.chown {
        Some(ids) => ids,
        None if tree.reset_owner => (0, 0),
        // A stage built with one id mapped keeps its owners in a record.
        None => records
            .as_ref()
            .and_then(owner::recorded)
            .or_else(|| link_recorded(tree, host, ft))
            .map_or_else(
                || {
                    let o = owner::in_image(meta.uid(), meta.gid());
                    (o.uid, o.gid)
                },
                |o| (o.uid, o.gid),
            ),
    };
    Ok(Item {
        src: host.to_path_buf(),
        src_rel: rel.to_path_buf(),
        dest,
        kind,
        mode,
        uid,
        gid,
        size: if ft.is_file() { meta.len() } else { 0 },
        mtime: (meta.mtime(), meta.mtime_nsec()),
        merge_only: false,
        stat: Some(meta.clone()),
        named: false,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    struct Fixture {
        _ctx: tempfile::TempDir,
        _dst: tempfile::TempDir,
        ctx: PathBuf,
        dst: PathBuf,
    }

    fn fixture() -> Fixture {
        let ctx = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let c = ctx.path().to_path_buf();
        fs::create_dir_all(c.join("src/sub")).unwrap();
        fs::write(c.join("src/a.txt"), "a").unwrap();
        fs::write(c.join("src/b.log"), "b").unwrap();
        fs::write(c.join("src/sub/c.txt"), "c").unwrap();
        fs::write(c.join("top.txt"), "top").unwrap();
        fs::set_permissions(c.join("top.txt"), fs::Permissions::from_mode(0o750)).unwrap();
        Fixture {
            ctx: c,
            dst: dst.path().to_path_buf(),
            _ctx: ctx,
            _dst: dst,
        }
    }

    fn me() -> (u32, u32) {
        (
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        )
    }

    fn copy(
        f: &Fixture,
        ignore: Option<&Dockerignore>,
        sources: &[&str],
        dest: &str,
        options: &CopyOptions,
    ) -> Result<(), CopyError> {
        let tree = SourceTree::open(&f.ctx, ignore, false)?;
        let root = Root::open(&f.dst).unwrap();
        let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
        let p = plan(&tree, &sources, dest, options, &|p| is_dir_in(&root, p))?;
        execute(&root, &p, me())
    }

    fn opts() -> CopyOptions {
        CopyOptions {
            chown: Some(me()),
            ..CopyOptions::default()
        }
    }

    #[test]
    fn directory_contents_and_trailing_slash_rules() {
        let f = fixture();
        copy(&f, None, &["src"], "/app", &opts()).unwrap();
        assert_eq!(fs::read_to_string(f.dst.join("app/a.txt")).unwrap(), "a");
        assert_eq!(
            fs::read_to_string(f.dst.join("app/sub/c.txt")).unwrap(),
            "c"
        );
        assert!(!f.dst.join("app/src").exists());

        copy(&f, None, &["top.txt"], "/file", &opts()).unwrap();
        assert!(f.dst.join("file").is_file());
        copy(&f, None, &["top.txt"], "/dir/", &opts()).unwrap();
        assert!(f.dst.join("dir/top.txt").is_file());
        // An existing directory receives the file.
        copy(&f, None, &["top.txt"], "/app", &opts()).unwrap();
        assert!(f.dst.join("app/top.txt").is_file());
        let mode = fs::metadata(f.dst.join("dir/top.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o750);
    }

    #[test]
    fn wildcards_match_or_copy_nothing_and_named_sources_must_exist() {
        let f = fixture();
        copy(&f, None, &["src/*.txt"], "/w/", &opts()).unwrap();
        assert!(f.dst.join("w/a.txt").is_file());
        assert!(!f.dst.join("w/b.log").exists());
        copy(&f, None, &["nothing*"], "/none/", &opts()).unwrap();
        let err = copy(&f, None, &["missing.txt"], "/x", &opts()).unwrap_err();
        assert!(
            matches!(err, CopyError::NotFound(ref s) if s == "missing.txt"),
            "{err}"
        );
        let err = copy(&f, None, &["top.txt", "src/a.txt"], "/multi", &opts()).unwrap_err();
        assert!(matches!(err, CopyError::DestNotDir(_)), "{err}");
    }

    #[test]
    fn dockerignore_hides_files_and_exceptions_bring_them_back() {
        let f = fixture();
        let ignore = Dockerignore::parse("src\n!src/sub/c.txt\n").unwrap();
        copy(&f, Some(&ignore), &["."], "/ctx/", &opts()).unwrap();
        assert!(f.dst.join("ctx/top.txt").is_file());
        assert!(!f.dst.join("ctx/src/a.txt").exists());
        assert!(f.dst.join("ctx/src/sub/c.txt").is_file());
        let err = copy(&f, Some(&ignore), &["src/a.txt"], "/x", &opts()).unwrap_err();
        assert!(matches!(err, CopyError::NotFound(_)));
    }

    #[test]
    fn an_ignored_directory_is_searched_for_exceptions_without_following_symlinks() {
        // Links back up inside an ignored directory once made that search follow them, 40
        // deep (the symlink limit) and branching at every level: in effect endless. The
        // context is walked as BuildKit sends it, links as links.
        let f = fixture();
        std::os::unix::fs::symlink("..", f.ctx.join("src/loop")).unwrap();
        std::os::unix::fs::symlink("..", f.ctx.join("src/loop2")).unwrap();
        std::os::unix::fs::symlink("..", f.ctx.join("src/loop3")).unwrap();
        let ignore = Dockerignore::parse("**\n!**/keep.txt\n").unwrap();
        let err = copy(&f, Some(&ignore), &["src"], "/x", &opts()).unwrap_err();
        assert!(matches!(err, CopyError::NotFound(_)), "{err}");
        fs::write(f.ctx.join("src/sub/keep.txt"), "k").unwrap();
        copy(&f, Some(&ignore), &["src"], "/y", &opts()).unwrap();
        assert!(f.dst.join("y/sub/keep.txt").is_file());
        assert!(!f.dst.join("y/a.txt").exists());
    }

    #[test]
    fn chmod_exclude_and_parents() {
        let f = fixture();
        let options = CopyOptions {
            chmod: Some("0640".parse().unwrap()),
            exclude: Some(Dockerignore::parse("*.log").unwrap()),
            parents: false,
            ..opts()
        };
        copy(&f, None, &["src"], "/m", &options).unwrap();
        assert!(!f.dst.join("m/b.log").exists());
        let mode = fs::metadata(f.dst.join("m/a.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);

        let parents = CopyOptions {
            parents: true,
            ..opts()
        };
        copy(&f, None, &["src/sub/c.txt", "top.txt"], "/p/", &parents).unwrap();
        assert!(f.dst.join("p/src/sub/c.txt").is_file());
        assert!(f.dst.join("p/top.txt").is_file());
        copy(&f, None, &["./src/./sub/c.txt"], "/q/", &parents).unwrap();
        assert!(f.dst.join("q/sub/c.txt").is_file());
    }

    #[test]
    fn stars_collapse_within_a_component_and_pivots_split() {
        assert_eq!(one_component_stars("a/**/b***c"), "a/*/b*c");
        assert_eq!(one_component_stars("a\\**"), "a\\**");
        assert_eq!(pivot("./x/y*/./z/**"), Some(("x/y*", "z/**")));
        assert_eq!(pivot("/x/y/."), None);
        assert_eq!(
            parents_part("/t/a*/./c/**/e", Path::new("t/ab/c/d/e")),
            Path::new("c/d/e")
        );
    }

    #[test]
    fn symlinks_never_reach_host_files() {
        let f = fixture();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), "host secret").unwrap();
        // A context symlink pointing outside resolves inside the context instead.
        symlink(outside.path().join("secret"), f.ctx.join("escape")).unwrap();
        let err = copy(&f, None, &["escape"], "/got", &opts()).unwrap_err();
        assert!(matches!(err, CopyError::NotFound(_)), "{err}");
        // A symlink in the destination pointing at a host directory lands inside the root.
        symlink(outside.path(), f.dst.join("link")).unwrap();
        copy(&f, None, &["top.txt"], "/link/", &opts()).unwrap();
        assert!(!outside.path().join("top.txt").exists());
        let inside = f
            .dst
            .join(outside.path().strip_prefix("/").unwrap())
            .join("top.txt");
        assert!(inside.is_file(), "{}", inside.display());
        // Symlinks inside a copied directory are copied as symlinks.
        symlink("a.txt", f.ctx.join("src/alias")).unwrap();
        copy(&f, None, &["src"], "/s", &opts()).unwrap();
        assert_eq!(
            fs::read_link(f.dst.join("s/alias")).unwrap(),
            Path::new("a.txt")
        );
    }

    #[test]
    fn directories_a_copy_makes_take_the_newest_copied_time_not_the_clock() {
        use std::os::unix::fs::MetadataExt;
        let f = fixture();
        let mtime = |p: &str| fs::symlink_metadata(f.dst.join(p)).unwrap().mtime();
        let set = |p: &str, secs: i64| {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
            fs::File::open(f.ctx.join(p))
                .unwrap()
                .set_modified(t)
                .unwrap();
        };
        set("top.txt", 1_000_000);
        set("src/a.txt", 2_000_000);
        set("src/sub/c.txt", 3_000_000);
        set("src/b.log", 1_500_000);
        set("src/sub", 500_000);
        set("src", 400_000);
        // Missing parents of a file.
        copy(&f, None, &["top.txt"], "/new/deep/top.txt", &opts()).unwrap();
        assert_eq!((mtime("new"), mtime("new/deep")), (1_000_000, 1_000_000));
        // A directory's contents below a missing parent: the newest entry; a copied directory
        // keeps its own time.
        copy(&f, None, &["src"], "/made/here/", &opts()).unwrap();
        assert_eq!(mtime("made"), 3_000_000);
        assert_eq!(mtime("made/here/sub"), 500_000);
        // A directory that was there is left alone.
        let before = mtime("new");
        copy(&f, None, &["src/a.txt"], "/new/", &opts()).unwrap();
        assert_ne!(mtime("new"), 2_000_000);
        assert!(mtime("new") >= before);
        // Nothing copied, the destination made all the same: the Unix epoch.
        let parents = CopyOptions {
            parents: true,
            ..opts()
        };
        copy(&f, None, &["nothing*"], "/empty/", &parents).unwrap();
        if f.dst.join("empty").exists() {
            assert_eq!(mtime("empty"), 0);
        }
    }
}
