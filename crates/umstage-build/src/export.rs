//! Writing a built image where the request says: image archives, OCI layout directories, the
//! final filesystem as a directory or a tar.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::annotation::Level;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use umstage_oci::archive::{ArchiveOptions, TaggedImage, write_archive, write_layout_dir};
use umstage_oci::changes::{Change, ChangeKind, ChangeSet};
use umstage_oci::image::write_image;
use umstage_oci::inroot::{Escape, Root};
use umstage_oci::layer::{LayerOptions, write_tar};
use umstage_oci::{ContentStore, ManifestFormat};

use crate::copy::{self, CopyOptions, SourceTree};
use crate::error::{Source, StepError};
use crate::event::{Event, EventSink};
use crate::options::{ArchiveFormat, Destination, Output};
use crate::request::{BuildError, BuildRequest, BuildResult, Descriptor};
use crate::state::{State, Unpacker};

/// What exporting needs from the build.
pub struct ExportContext<'a> {
    /// The request (outputs, tags, labels, `SOURCE_DATE_EPOCH`).
    pub request: &'a BuildRequest,
    /// Progress.
    pub events: &'a dyn EventSink,
    /// The content store holding the layers.
    pub store: &'a ContentStore,
    /// Snapshots, for filesystem outputs.
    pub snapshotter: &'a crate::state::LazySnapshotter,
    /// Unpacks layers into snapshots when a filesystem output needs one.
    pub unpacker: &'a Unpacker,
    /// The image creation time (RFC 3339).
    pub created: &'a str,
    /// Rootless without subordinate ids.
    pub ignore_chown_errors: bool,
    /// The build's caches: layers of hits from an imported cache are fetched from there.
    pub caches: &'a crate::cache::set::CacheSet,
}

fn other(e: impl Into<Source>) -> BuildError {
    BuildError::Other(e.into())
}

/// Writes every output of the request for the image `state`.
pub fn export(ctx: &ExportContext<'_>, state: State) -> Result<BuildResult, BuildError> {
    let request = ctx.request;
    let mut config = state.config;
    for (k, v) in &request.labels {
        config
            .config
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(k.clone(), v.clone());
    }
    config.created = Some(stamp_history(&mut config, ctx.created));
    let mut descriptors = Vec::with_capacity(state.layers.len());
    for layer in &state.layers {
        descriptors.push(layer.descriptor().map_err(other)?);
    }
    let store = ctx.store;
    let at = |level| -> BTreeMap<String, String> {
        request
            .annotations
            .iter()
            .filter(|a| a.level == level)
            .map(|a| (a.key.clone(), a.value.clone()))
            .collect()
    };
    let image = write_image(
        store,
        &config,
        &descriptors,
        ManifestFormat::Oci,
        &at(Level::Manifest),
    )
    .map_err(other)?;
    let mut names: Vec<String> = request.tags.clone();
    if request.outputs.is_empty() {
        ctx.events.emit(Event::Warning {
            message: "no output given: the result stays in the build cache only; add -o image.tar to get an image archive".into(),
        });
    }
    for output in &request.outputs {
        let started = Instant::now();
        let id = crate::ids::unique_key("export");
        ctx.events.emit(Event::TaskStarted {
            id: id.clone(),
            text: describe(output),
        });
        match output {
            Output::CacheOnly => {}
            Output::Archive {
                format,
                dest,
                names: extra,
                ..
            } => {
                let tags = references(request.tags.iter().chain(extra))?;
                names.extend(extra.iter().cloned());
                let docker_image;
                let chosen = if *format == ArchiveFormat::Docker {
                    docker_image = write_image(
                        store,
                        &config,
                        &descriptors,
                        ManifestFormat::Docker,
                        &BTreeMap::new(),
                    )
                    .map_err(other)?;
                    &docker_image
                } else {
                    &image
                };
                let options = ArchiveOptions {
                    mtime: request.source_date_epoch.unwrap_or(0),
                    index_annotations: at(Level::Index),
                };
                let tagged = [TaggedImage {
                    image: chosen,
                    tags,
                }];
                write_to(dest, |out| {
                    write_archive(store, &tagged, out, options.clone()).map_err(other)
                })?;
            }
            Output::LayoutDir {
                dest, names: extra, ..
            } => {
                let tags = references(request.tags.iter().chain(extra))?;
                names.extend(extra.iter().cloned());
                write_layout_dir(
                    store,
                    &[TaggedImage {
                        image: &image,
                        tags,
                    }],
                    dest,
                    &at(Level::Index),
                )
                .map_err(other)?;
            }
            Output::Local { dest } => with_rootfs(ctx, &state.layers, |rootfs| {
                fs::create_dir_all(dest).map_err(|e| {
                    other(StepError::during(format!("creating {}", dest.display()), e))
                })?;
                let tree = SourceTree::open(rootfs, None, false).map_err(other)?;
                let target = Root::open(dest).map_err(other)?;
                let plan = copy::plan(
                    &tree,
                    &[".".to_string()],
                    "/",
                    &CopyOptions::default(),
                    &|p| copy::is_dir_in(&target, p),
                )
                .map_err(other)?;
                copy::execute(&target, &plan, (0, 0)).map_err(other)
            })?,
            Output::Tar { dest } => with_rootfs(ctx, &state.layers, |rootfs| {
                let changes = whole_tree(rootfs).map_err(other)?;
                let options = LayerOptions {
                    source_date_epoch: request.source_date_epoch,
                    ..LayerOptions::default()
                };
                write_to(dest, |out| {
                    write_tar(out, &changes, &options)
                        .map(|_| ())
                        .map_err(other)
                })
            })?,
            Output::Registry { names: extra, .. } => {
                if request.annotations.iter().any(|a| a.level == Level::Index) {
                    ctx.events.emit(Event::Warning {
                        message: "--annotation index: is not pushed: a push of one platform's image has no index (it goes into the index.json of archive and layout outputs)".into(),
                    });
                }
                let targets: Vec<&String> = if extra.is_empty() {
                    request.tags.iter().collect()
                } else {
                    extra.iter().collect()
                };
                names.extend(extra.iter().cloned());
                let client = crate::registry::registry_client(request);
                for name in targets {
                    let reference = umstage_oci::reference::parse(name)
                        .map_err(|e| BuildError::input(format!("push target {name}"), e))?;
                    push(ctx, &client, &image, &state.layers, &reference).map_err(|e| {
                        BuildError::Other(Box::new(StepError::during(format!("pushing {name}"), e)))
                    })?;
                }
            }
        }
        ctx.events.emit(Event::TaskDone {
            id,
            elapsed: started.elapsed(),
        });
    }
    Ok(BuildResult {
        config_digest: Some(image.manifest.config().digest().to_string()),
        manifest: Some(Descriptor {
            media_type: image.descriptor.media_type().to_string(),
            digest: image.descriptor.digest().to_string(),
            size: image.descriptor.size(),
        }),
        names,
    })
}

/// Gives each history entry without a time (a step that changed only the config) the time of
/// the entry before it, or `build_time` when none has one, and returns the image's creation
/// time: that of its last entry. So, as with BuildKit, a build whose every step hit gives the
/// image the build that recorded those steps gave, byte for byte. Under `SOURCE_DATE_EPOCH`
/// every time is the epoch anyway.
fn stamp_history(config: &mut umstage_oci::ImageConfig, build_time: &str) -> String {
    let mut last: Option<String> = None;
    for entry in &mut config.history {
        match &entry.created {
            Some(t) => last = Some(t.clone()),
            None => entry.created = Some(last.clone().unwrap_or_else(|| build_time.to_string())),
        }
    }
    last.unwrap_or_else(|| build_time.to_string())
}

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
enum PushError {
    /// The registry client's runtime could not run the push.
    #[error(transparent)]
    Runtime(#[from] std::io::Error),
    /// The registry refused or could not be reached.
    #[error(transparent)]
    Registry(#[from] umstage_oci::registry::RegistryError),
    /// Layers an imported cache holds could not be fetched. Not transparent: the solver looks
    /// for a rejected layer among the sources.
    #[error("{0}")]
    Fetch(#[from] crate::cache::CacheError),
}

/// Pushes `image` to `reference`. Layers an imported cache left in the registry are not
/// downloaded first: blobs the target has are skipped, and those in a cache of the same
/// registry are mounted from it. Only when that is not enough are the missing layers fetched
/// and the push made again.
fn push(
    ctx: &ExportContext<'_>,
    client: &umstage_oci::registry::RegistryClient,
    image: &umstage_oci::Image,
    layers: &[crate::state::Layer],
    reference: &umstage_oci::reference::Reference,
) -> Result<(), PushError> {
    let mount_from = ctx.caches.mount_source(reference);
    ctx.caches
        .push_fetching(layers, ctx.store, || -> Result<(), PushError> {
            umstage_oci::registry::block_on(client.push(ctx.store, image, reference, mount_from))??;
            Ok(())
        })
}

fn describe(output: &Output) -> String {
    let dest = |d: &Destination| match d {
        Destination::File(p) => p.display().to_string(),
        Destination::Stdout => "standard output".into(),
    };
    match output {
        Output::Archive { dest: d, .. } => format!("exporting image archive to {}", dest(d)),
        Output::LayoutDir { dest, .. } => format!("exporting OCI layout to {}", dest.display()),
        Output::Local { dest } => format!("copying the filesystem to {}", dest.display()),
        Output::Tar { dest: d } => format!("writing the filesystem tar to {}", dest(d)),
        Output::Registry { .. } => "pushing the image".into(),
        Output::CacheOnly => "keeping the result in the build cache".into(),
    }
}

fn references<'a>(
    names: impl Iterator<Item = &'a String>,
) -> Result<Vec<umstage_oci::reference::Reference>, BuildError> {
    names
        .map(|n| {
            umstage_oci::reference::parse(n).map_err(|e| BuildError::input(format!("-t {n}"), e))
        })
        .collect()
}

/// Writes through `write` to a file (atomically: a temporary name renamed into place) or to
/// standard output.
fn write_to(
    dest: &Destination,
    write: impl FnOnce(Box<dyn Write + Send>) -> Result<(), BuildError>,
) -> Result<(), BuildError> {
    match dest {
        Destination::Stdout => write(Box::new(io::stdout())),
        Destination::File(path) => {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
            let file = fs::File::create(&tmp).map_err(|e| {
                other(format!(
                    "cannot write {}: {e} (does the directory exist and can you write to it?)",
                    path.display()
                ))
            })?;
            let result = write(Box::new(file)).and_then(|()| {
                fs::rename(&tmp, path).map_err(|e| {
                    other(StepError::during(
                        format!("cannot write {}", path.display()),
                        e,
                    ))
                })
            });
            if result.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            result
        }
    }
}

/// Runs `work` with the image's filesystem mounted read-only (an empty directory for none).
fn with_rootfs(
    ctx: &ExportContext<'_>,
    layers: &[crate::state::Layer],
    work: impl FnOnce(&Path) -> Result<(), BuildError>,
) -> Result<(), BuildError> {
    let snapshotter = ctx.snapshotter.get().map_err(other)?;
    let chain = ctx
        .unpacker
        .ensure(snapshotter, ctx.store, layers, ctx.ignore_chown_errors)
        .map_err(other)?;
    let Some(chain) = chain else {
        let empty = tempfile::tempdir().map_err(other)?;
        return work(empty.path());
    };
    let key = crate::ids::unique_key("export");
    snapshotter.view(&key, &chain).map_err(other)?;
    let result = match snapshotter.mount(&key) {
        Ok(guard) => {
            let r = work(guard.path());
            drop(guard);
            r
        }
        Err(e) => Err(other(e)),
    };
    ctx.snapshotter.remove(&key);
    result
}

/// A change set adding every entry of `root`, for writing a whole filesystem as one tar.
/// Every path under `root` as an upsert: a whole tree as one layer. Directories are listed
/// through descriptors resolved inside `root`, so a symlink is listed, never entered.
pub(crate) fn whole_tree(root: &Path) -> io::Result<ChangeSet> {
    let tree = Root::open(root)?;
    let mut changes = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let at = tree
            .resolve_dir(&rel, Escape::Refuse, false)
            .map_err(io::Error::other)?;
        let dir = rfs::openat(
            &at,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        for entry in rfs::Dir::read_from(&dir)? {
            let entry = entry?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            let path = rel.join(name);
            let stat = rfs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
            if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
                stack.push(path.clone());
            }
            changes.push(Change {
                path,
                kind: ChangeKind::Upsert,
            });
        }
    }
    Ok(ChangeSet {
        source: root.to_path_buf(),
        changes,
    })
}
