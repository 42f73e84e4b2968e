//! The file operation, `COPY` and `ADD` (and the owner a `WORKDIR` creates with): validates the
//! instruction, resolves `--from`, keys the step by the content of what it copies, and copies,
//! extracts or downloads into the step's root.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use umstage_dockerfile::{Command, Dockerignore};
use umstage_oci::inroot::Root;

use crate::cache::{KeyBuilder, explain};
use crate::config;
use crate::copy::{self, CopyOptions, Item, ItemKind, SourceTree};
use crate::download::Download;
use crate::error::StepError;
use crate::ops::content::Probe;
use crate::ops::layer::MountedRoot;
use crate::ops::step::{StageOutput, Step, other};
use crate::options::NamedContext;
use crate::request::BuildError;
use crate::users;

/// What a COPY reads from.
pub(crate) enum CopySource {
    /// The build context, or a directory named with `--build-context`.
    Dir { path: PathBuf, use_ignore: bool },
    /// A stage's or an image's filesystem.
    State(Box<StageOutput>, String),
}

impl Step<'_, '_> {
    /// The uid and gid for `spec` (`--chown` value or, when `None`, the stage's USER for WORKDIR),
    /// resolved in the image's own passwd and group files.
    pub(crate) fn owner_of(
        &self,
        root: &Root,
        spec: Option<&str>,
    ) -> Result<(u32, u32), StepError> {
        let spec = match spec {
            Some(s) => s.to_string(),
            None => match self.cfg.image.config.user.as_deref() {
                Some(u) if !u.is_empty() => u.to_string(),
                _ => return Ok((0, 0)),
            },
        };
        let read = |p: &str| -> Option<String> {
            let mut f = root
                .open_file(Path::new(p), umstage_oci::inroot::Escape::Clamp)
                .ok()?;
            let mut s = String::new();
            std::io::Read::read_to_string(&mut f, &mut s).ok()?;
            Some(s)
        };
        users::resolve_chown(
            &spec,
            read("/etc/passwd").as_deref(),
            read("/etc/group").as_deref(),
        )
        .map_err(StepError::below)
    }

    /// Resolves a `--from` value: a stage (name or index), a named context, or an image.
    pub(crate) fn resolve_from(&self, from: &str) -> Result<Option<CopySource>, BuildError> {
        let build = self.build;
        let stage = build.dockerfile.stage_index(from).or_else(|| {
            from.parse::<usize>()
                .ok()
                .filter(|&i| i < build.dockerfile.stages.len())
        });
        if let Some(i) = stage {
            let out =
                (self.lookup)(i).ok_or_else(|| other(format!("stage {from} was not built")))?;
            return Ok(Some(CopySource::State(
                Box::new(out),
                format!("stage {from}"),
            )));
        }
        let expanded = self
            .instruction
            .lexer()
            .expand_word(from, &build.meta)
            .map_err(|e| self.refused(e.message))?;
        if let Some(ctx) = build
            .request
            .build_contexts
            .iter()
            .rev()
            .find(|c| c.name.eq_ignore_ascii_case(&expanded))
            && let NamedContext::Dir(path) = &ctx.source
        {
            let path = std::path::absolute(path).map_err(other)?;
            return Ok(Some(CopySource::Dir {
                path,
                use_ignore: false,
            }));
        }
        let out = build
            .image(&expanded, &build.platform())
            .map_err(|e| self.failed(e))?;
        Ok(Some(CopySource::State(
            Box::new(out),
            format!("image {expanded}"),
        )))
    }

    pub(crate) fn copy_step(&mut self, expanded: &Command) -> Result<bool, BuildError> {
        let build = self.build;
        let (sources, chown, chmod, excludes, parents, from, is_add, checksum, unpack) =
            match expanded {
                Command::Copy(c) => (
                    &c.sources,
                    c.chown.clone(),
                    c.chmod.clone(),
                    c.excludes.clone(),
                    c.parents,
                    c.from.clone(),
                    false,
                    None,
                    Some(false),
                ),
                Command::Add(a) => (
                    &a.sources,
                    a.chown.clone(),
                    a.chmod.clone(),
                    a.excludes.clone(),
                    a.parents,
                    None,
                    true,
                    a.checksum.clone(),
                    a.unpack,
                ),
                _ => return Ok(false),
            };
        let fail = |e: StepError| self.failed(e);
        for path in &sources.paths {
            if is_add && is_git_url(path) {
                return Err(fail(StepError::Refused(format!(
                    "ADD of a git repository ({path}) is not supported yet: clone it into the context and COPY it"
                ))));
            }
        }
        if let Some(sum) = &checksum {
            // As BuildKit: a checksum pins exactly one download.
            let problem = if sources.paths.len() + sources.inline.len() != 1 {
                Some("checksum can't be specified for multiple sources")
            } else if !sources.paths.first().is_some_and(|p| is_url(p)) {
                Some("checksum can't be specified for non-HTTP sources")
            } else if !sum.strip_prefix("sha256:").is_some_and(|h| {
                h.len() == 64
                    && h.bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            }) {
                Some("invalid checksum digest format: use sha256: and 64 lower-case hex digits")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(self.refused(problem));
            }
        }
        let chmod_parsed = chmod
            .as_deref()
            .map(str::parse::<crate::chmod::Chmod>)
            .transpose()
            .map_err(|e| self.refused(StepError::below(e)))?;
        let exclude = if excludes.is_empty() {
            None
        } else {
            Some(
                Dockerignore::parse(&excludes.join("\n"))
                    .map_err(|e| self.refused(StepError::below(e)))?,
            )
        };
        let workdir = self.cfg.workdir();
        let dest = if sources.dest.starts_with('/') {
            sources.dest.clone()
        } else {
            let mut d = format!("{}/{}", workdir.trim_end_matches('/'), sources.dest);
            if sources.dest == "." || sources.dest == "./" {
                d.push('/');
            }
            d
        };
        let source = match &from {
            Some(f) => self.resolve_from(f)?.ok_or_else(|| other("no source"))?,
            None => CopySource::Dir {
                path: build.request.context.clone(),
                use_ignore: true,
            },
        };
        let (remote, local): (Vec<&String>, Vec<&String>) =
            sources.paths.iter().partition(|p| is_add && is_url(p));
        let local: Vec<String> = local.into_iter().cloned().collect();

        self.input_parent();
        self.input("destination", dest.clone());
        let mut k = KeyBuilder::new(if is_add { "add" } else { "copy" });
        k.key(self.key).str(&dest);
        k.opt_str(chown.as_deref()).opt_str(chmod.as_deref());
        k.u64(u64::from(parents)).u64(unpack.map_or(2, u64::from));
        for e in &excludes {
            k.str(e);
        }
        for inline in &sources.inline {
            k.str(&inline.name).str(&inline.data);
        }
        let options = CopyOptions {
            chown: None,
            chmod: chmod_parsed.clone(),
            parents,
            exclude: exclude.clone(),
        };
        match &source {
            CopySource::Dir { path, use_ignore } => {
                let ignore = if *use_ignore {
                    build.ignore.as_ref()
                } else {
                    None
                };
                let tree =
                    SourceTree::open(path, ignore, true).map_err(|e| fail(StepError::below(e)))?;
                // Planned for the key only: what is read, before any filesystem is mounted (a
                // hit mounts none). On a miss `do_copy` plans again against the mounted root,
                // because where entries land and who owns them depend on that root.
                let plan = copy::plan(&tree, &local, &dest, &options, &|_| false)
                    .map_err(|e| fail(self.copy_error(e, &source)))?;
                self.key_plan(&mut k, &plan, *use_ignore, false)
                    .map_err(fail)?;
            }
            CopySource::State(..) => {}
        }
        // As BuildKit's HTTP source: a URL pinned by --checksum is keyed by it and fetched
        // only on a miss; any other is revalidated now and keyed by the content it has.
        let mut remote_files = Vec::new();
        for url in &remote {
            k.str(url).opt_str(checksum.as_deref());
            let download = match checksum {
                Some(_) => None,
                None => {
                    let d = crate::download::fetch(&build.registry, &build.request.state_root, url)
                        .map_err(|e| fail(StepError::during(format!("downloading {url}"), e)))?;
                    k.str(&d.digest).u64(d.mtime as u64);
                    Some(d)
                }
            };
            remote_files.push(((*url).clone(), download));
        }
        let cheap_key = match &source {
            CopySource::State(out, _) => {
                let mut cheap = k.clone();
                cheap.str("stage").key(&out.key);
                for p in &local {
                    cheap.str(p);
                }
                *self.key = cheap.finish();
                let content = |step: &Self| {
                    let read = step
                        .stage_content(out, &local, &options, &|e| step.copy_error(e, &source))?;
                    Ok(k.clone().str("content").key(&read).finish())
                };
                match self.probe_stage_key(content)? {
                    Probe::Hit(state) => return Ok(self.use_cached(*state)),
                    Probe::Miss(cheap) => Some(cheap),
                }
            }
            CopySource::Dir { .. } => {
                *self.key = k.finish();
                None
            }
        };
        let created_by = crate::history::created_by(expanded, &self.cfg.image, &[])
            .unwrap_or_else(|| format!("{} # buildkit", self.instruction.original));

        let cached = self.fs_step(created_by, |step, mounted| {
            step.do_copy(
                mounted,
                &source,
                &local,
                &remote_files,
                checksum.as_deref(),
                &dest,
                chown.as_deref(),
                &options,
                (is_add && unpack != Some(false), unpack == Some(true)),
                &sources.inline,
            )
        })?;
        if let Some(cheap) = cheap_key {
            self.alias(cheap);
        }
        Ok(cached)
    }

    /// Adds what a step reads from a directory to `k`: each planned entry's path, destination,
    /// mode and kind (and owner, with `owners`: a stage's files keep theirs when copied), and a
    /// file's content digest (remembered across builds for the build context, whose
    /// `.dockerignore` applies).
    pub(crate) fn key_plan(
        &self,
        k: &mut KeyBuilder,
        plan: &copy::Plan,
        context: bool,
        owners: bool,
    ) -> Result<(), StepError> {
        let prefix = if context {
            explain::name::CONTEXT_FILE
        } else {
            explain::name::FILE
        };
        for item in &plan.items {
            k.str(&item.src_rel.to_string_lossy());
            k.str(&item.dest.to_string_lossy());
            k.u64(u64::from(item.mode));
            if owners {
                k.u64(u64::from(item.uid)).u64(u64::from(item.gid));
            }
            let name = format!("{prefix}{}", item.src_rel.display());
            match &item.kind {
                ItemKind::File => {
                    let meta = match &item.stat {
                        Some(m) => m.clone(),
                        None => std::fs::symlink_metadata(&item.src)
                            .map_err(|e| StepError::during(format!("{}", item.src.display()), e))?,
                    };
                    let digest = if context {
                        self.build.digests.digest(&item.src_rel, &item.src, &meta)
                    } else {
                        crate::digests::hash_file(&item.src)
                    }
                    .map_err(|e| StepError::during(format!("{}", item.src_rel.display()), e))?;
                    k.bytes(&digest);
                    self.input(name, format!("{:o} {}", item.mode, hex::encode(digest)));
                }
                ItemKind::Symlink(t) => {
                    k.str("symlink").str(&t.to_string_lossy());
                    self.input(name, format!("symlink to {}", t.display()));
                }
                ItemKind::Dir => {
                    k.str("dir");
                }
                ItemKind::Device(device) => {
                    k.str("device").bytes(&device.encode());
                }
                ItemKind::Fifo | ItemKind::Inline(_) => {
                    k.str("other");
                }
            }
        }
        Ok(())
    }

    pub(crate) fn copy_error(&self, e: copy::CopyError, source: &CopySource) -> StepError {
        match (e, source) {
            (
                copy::CopyError::NotFound(p),
                CopySource::Dir {
                    use_ignore: true, ..
                },
            ) => StepError::Refused(format!(
                "{p:?} not found in the build context{}: check the path, or the .dockerignore",
                if self.build.ignore.is_some() {
                    " (or it is excluded by .dockerignore)"
                } else {
                    ""
                }
            )),
            (copy::CopyError::NotFound(p), CopySource::Dir { path, .. }) => {
                StepError::Refused(format!("{p:?} not found in {}", path.display()))
            }
            (copy::CopyError::NotFound(p), CopySource::State(_, what)) => {
                StepError::Refused(format!("{p:?} not found in {what}"))
            }
            (e, _) => StepError::below(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn do_copy(
        &self,
        mounted: &MountedRoot,
        source: &CopySource,
        local: &[String],
        remote: &[(String, Option<Download>)],
        checksum: Option<&str>,
        dest: &str,
        chown: Option<&str>,
        options: &CopyOptions,
        (extract_archives, extract_downloads): (bool, bool),
        inline: &[umstage_dockerfile::InlineSource],
    ) -> Result<(), StepError> {
        let root = &mounted.root;
        let owner = match chown {
            Some(spec) => Some(self.owner_of(root, Some(spec))?),
            None => None,
        };
        let options = CopyOptions {
            chown: owner,
            ..options.clone()
        };
        let new_dirs_owner = owner.unwrap_or((0, 0));
        let dest_is_dir = |p: &Path| copy::is_dir_in(root, p);
        let mut guards = Vec::new();
        let (tree_dir, ignore, reset_owner) = match source {
            CopySource::Dir { path, use_ignore } => (
                Some(path.clone()),
                if *use_ignore {
                    self.build.ignore.as_ref()
                } else {
                    None
                },
                true,
            ),
            CopySource::State(out, _) => {
                let (key, guard) = self.view(&out.state)?;
                let dir = guard.as_ref().map(|g| g.path().to_path_buf());
                guards.push((key, guard));
                (dir, None, false)
            }
        };
        let result = (|| -> Result<(), StepError> {
            if !local.is_empty() {
                let empty;
                let dir = match &tree_dir {
                    Some(d) => d.clone(),
                    None => {
                        empty = tempfile::tempdir().map_err(StepError::below)?;
                        empty.path().to_path_buf()
                    }
                };
                let tree = SourceTree::open(&dir, ignore, reset_owner).map_err(StepError::below)?;
                // The second plan of this COPY (the first made its key, in `copy_step`): only
                // now is there a root to ask whether the destination is an existing directory
                // (into it or as it, merged or not) and a passwd file to resolve `--chown` with;
                // a source that is a stage or an image exists only as the view mounted above.
                let plan = copy::plan(&tree, local, dest, &options, &dest_is_dir)
                    .map_err(|e| self.copy_error(e, source))?;
                let (archives, plain): (Vec<Item>, Vec<Item>) =
                    plan.items.into_iter().partition(|i| {
                        // Only a source that is itself an archive: one inside a copied
                        // directory is copied as it is, as BuildKit does.
                        extract_archives
                            && i.named
                            && i.kind == ItemKind::File
                            && crate::add::is_archive(&i.src)
                    });
                let plan = copy::Plan {
                    items: plain,
                    ..plan
                };
                copy::execute(root, &plan, new_dirs_owner).map_err(StepError::below)?;
                for archive in archives {
                    let target = PathBuf::from(config::clean_abs(dest));
                    copy::make_dirs(root, &target, new_dirs_owner).map_err(StepError::below)?;
                    crate::add::extract(root, &archive.src, &target, owner)?;
                }
            }
            for (url, fetched) in remote {
                let fetched_now;
                let download = match fetched {
                    Some(d) => d,
                    None => {
                        fetched_now = crate::download::fetch(
                            &self.build.registry,
                            &self.build.request.state_root,
                            url,
                        )
                        .map_err(|e| StepError::during(format!("downloading {url}"), e))?;
                        &fetched_now
                    }
                };
                if let Some(want) = checksum
                    && want != download.digest
                {
                    return Err(StepError::Refused(format!(
                        "the download of {url} has digest {}, but --checksum wants {want}",
                        download.digest
                    )));
                }
                // A URL's content is extracted only with --unpack=true, as BuildKit.
                if extract_downloads && crate::add::is_archive(&download.file) {
                    let target = PathBuf::from(config::clean_abs(dest));
                    copy::make_dirs(root, &target, new_dirs_owner).map_err(StepError::below)?;
                    crate::add::extract(root, &download.file, &target, owner)?;
                } else {
                    let name = crate::download::file_name(url);
                    crate::add::place_download(
                        root,
                        download,
                        &name,
                        dest,
                        &options,
                        new_dirs_owner,
                    )?;
                }
            }
            if !inline.is_empty() {
                let into_dir =
                    dest.ends_with('/') || inline.len() > 1 || dest_is_dir(Path::new(dest));
                let (uid, gid) = owner.unwrap_or((0, 0));
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                let items = inline
                    .iter()
                    .map(|doc| {
                        let dest_path = if into_dir {
                            PathBuf::from(config::clean_abs(dest)).join(&doc.name)
                        } else {
                            PathBuf::from(config::clean_abs(dest))
                        };
                        let mode = options
                            .chmod
                            .as_ref()
                            .map_or(0o644, |c| c.apply(0o644, false));
                        Item {
                            src: PathBuf::new(),
                            src_rel: PathBuf::from(&doc.name),
                            dest: dest_path,
                            kind: ItemKind::Inline(doc.data.clone().into_bytes()),
                            mode,
                            uid,
                            gid,
                            size: doc.data.len() as u64,
                            mtime: (now, 0),
                            merge_only: false,
                            stat: None,
                            named: true,
                        }
                    })
                    .collect();
                let dest_dir = if into_dir {
                    PathBuf::from(config::clean_abs(dest))
                } else {
                    PathBuf::from(config::clean_abs(dest))
                        .parent()
                        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
                };
                let plan = copy::Plan {
                    items,
                    dest_dir,
                    make_dest: false,
                    new_dirs_mode: copy::new_dirs_mode(&options),
                };
                copy::execute(root, &plan, new_dirs_owner).map_err(StepError::below)?;
            }
            Ok(())
        })();
        for (key, guard) in guards {
            drop(guard);
            self.build.snapshotter.remove(&key);
        }
        result
    }
}

pub(crate) fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

pub(crate) fn is_git_url(s: &str) -> bool {
    s.starts_with("git@")
        || s.starts_with("git://")
        || (is_url(s) && (s.ends_with(".git") || s.contains(".git#")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_urls_are_recognised() {
        assert!(is_git_url("git@example.invalid:x/y.git"));
        assert!(is_git_url("https://example.invalid/x/y.git"));
        assert!(!is_git_url("https://example.invalid/file.tar.gz"));
    }
}
