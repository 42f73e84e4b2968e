//! The image source operation: a stage's base (`FROM`) or a `--from` image, resolved once per
//! reference and platform from a named context (a directory or an OCI layout) or a registry,
//! and keyed by the image's digest.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use umstage_dockerfile::{Base, Command, Platform};
use umstage_oci::layer::write_layer;

use crate::cache::KeyBuilder;
use crate::cache::registry::ImageBlobs;
use crate::config;
use crate::error::StepError;
use crate::event::Event;
use crate::ids::unique_key;
use crate::ops::step::{Build, StageOutput};
use crate::options::NamedContext;
use crate::request::BuildError;
use crate::state::{Layer, State};

impl Build<'_> {
    /// The platform a stage is for: its `FROM --platform` (expanded with the global ARGs and
    /// the predefined platform ARGs), else the build's target platform.
    pub(crate) fn stage_platform(
        &self,
        stage: &umstage_dockerfile::Stage,
    ) -> Result<Platform, BuildError> {
        let Command::From(from) = &stage.from.command else {
            return Ok(self.platform());
        };
        let Some(text) = &from.platform else {
            return Ok(self.platform());
        };
        let located = |reason: StepError| BuildError::Instruction {
            file: stage.from.source.name.clone(),
            line: stage.from.span.start.line,
            source: reason,
        };
        let expanded = stage
            .from
            .lexer()
            .expand_word(text, &self.meta)
            .map_err(|e| located(StepError::below(e)))?;
        if expanded.is_empty() {
            return Err(located(StepError::Refused(format!(
                "empty platform value from expression {text}"
            ))));
        }
        Platform::parse(&expanded).ok_or_else(|| {
            located(StepError::Refused(format!(
                "invalid platform {expanded:?}: use OS/ARCH[/VARIANT], such as linux/arm64"
            )))
        })
    }

    /// A base image by reference: a named build context, or an image from a registry.
    pub(crate) fn image(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<StageOutput, StepError> {
        let cell = {
            let mut images = self
                .images
                .lock()
                .map_err(|_| StepError::from("the image table was poisoned by a panic"))?;
            Arc::clone(images.entry(format!("{reference} {platform}")).or_default())
        };
        cell.get_or_init(|| self.resolve_image(reference, platform).map_err(Arc::new))
            .clone()
            .map_err(StepError::Shared)
    }

    /// Starts resolving the base images of `stages` in the background, as BuildKit resolves
    /// every FROM before it solves: a stage that waits for another need not wait for its own
    /// base too. A failure is kept and reported by the stage that needs the image.
    pub(crate) fn prefetch_bases<'s>(
        &'s self,
        scope: &'s std::thread::Scope<'s, '_>,
        stages: &[usize],
    ) {
        for &index in stages {
            let stage = &self.dockerfile.stages[index];
            let replaced = stage.name.as_ref().is_some_and(|name| {
                self.request
                    .build_contexts
                    .iter()
                    .any(|c| c.name.eq_ignore_ascii_case(name))
            });
            let Base::Image(reference) = &self.graph.nodes[index].base else {
                continue;
            };
            if replaced || self.graph.deps(index).is_empty() {
                // Replaced stages have no base of their own; stages with no dependency start
                // at once and resolve their base themselves.
                continue;
            }
            let Ok(platform) = self.stage_platform(stage) else {
                continue;
            };
            scope.spawn(move || {
                let _ = self.image(reference, &platform);
            });
        }
    }

    /// Resolves a base image (uncached: see [`Build::image`]).
    pub(crate) fn resolve_image(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<StageOutput, StepError> {
        let named = self
            .request
            .build_contexts
            .iter()
            .rev()
            .find(|c| c.name.eq_ignore_ascii_case(reference));
        let image = match named.map(|c| &c.source) {
            Some(NamedContext::OciLayout { path, reference: r }) => {
                let selector = umstage_oci::archive::Selector {
                    name: r.clone(),
                    platform: oci_platform(platform),
                };
                umstage_oci::archive::import_layout_dir(&self.store, path, &selector).map_err(
                    |e| StepError::during(format!("image {reference} from {}", path.display()), e),
                )?
            }
            Some(NamedContext::Dir(dir)) => return self.directory_image(reference, dir, platform),
            // From the registry directly: a context may bear the name of the image it stands
            // for (`alpine=docker-image://alpine:3.20`).
            Some(NamedContext::Image(r)) => self.pull(r, platform)?,
            None => self.pull(reference, platform)?,
        };
        // `Image::load` made sure there is one diff id per layer.
        let layers = image
            .layers()
            .iter()
            .zip(image.config.rootfs.diff_ids.iter())
            .map(|(descriptor, diff_id)| Layer {
                digest: descriptor.digest().to_string(),
                diff_id: diff_id.to_string(),
                size: descriptor.size(),
                media_type: descriptor.media_type().to_string(),
            })
            .collect();
        let mut key = KeyBuilder::new("image");
        key.key(&self.salt).str(image.digest().as_ref());
        // A base's inline cache describes the base's build, not this one's steps.
        let mut config = image.config.clone();
        config.extra.remove(crate::cache::registry::INLINE_KEY);
        let output = StageOutput {
            key: key.finish(),
            state: State { config, layers },
        };
        Ok(output)
    }

    /// A named context that is a directory, used as a base: an image with the directory's files
    /// as its one layer and a scratch config, as BuildKit makes of a local context in FROM.
    pub(crate) fn directory_image(
        &self,
        name: &str,
        dir: &Path,
        platform: &Platform,
    ) -> Result<StageOutput, StepError> {
        let dir = std::path::absolute(dir)
            .map_err(|e| StepError::during(format!("{}", dir.display()), e))?;
        let changes = crate::export::whole_tree(&dir).map_err(|e| {
            StepError::during(format!("build context {name} ({})", dir.display()), e)
        })?;
        let p = platform;
        let mut config = config::scratch(&p.os, &p.arch, Some(&p.variant));
        let mut layers = Vec::new();
        if !changes.changes.is_empty() {
            let info = write_layer(&self.store, &changes, &self.layer_options).map_err(|e| {
                StepError::during(format!("build context {name} ({})", dir.display()), e)
            })?;
            config.rootfs.diff_ids.push(info.diff_id.clone());
            layers.push(Layer {
                digest: info.blob.digest.to_string(),
                diff_id: info.diff_id.to_string(),
                size: info.blob.size,
                media_type: info.media_type.to_string(),
            });
        }
        let mut key = KeyBuilder::new("directory");
        key.key(&self.salt).str(&p.to_string());
        for l in &layers {
            key.str(&l.diff_id);
        }
        Ok(StageOutput {
            key: key.finish(),
            state: State { config, layers },
        })
    }

    pub(crate) fn pull(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<umstage_oci::Image, StepError> {
        let parsed = umstage_oci::reference::parse(reference).map_err(StepError::below)?;
        let id = unique_key("pull");
        let started = Instant::now();
        self.events.emit(Event::TaskStarted {
            id: id.clone(),
            text: format!("resolving {}", parsed.whole()),
        });
        // The manifest and config only: the layers are fetched when a step that missed or an
        // output needs them, so a build whose every step hits downloads none.
        let image = umstage_oci::registry::block_on(self.registry.pull_metadata(
            &self.store,
            &parsed,
            &oci_platform(platform),
        ))
        .map_err(StepError::below)?
        .map_err(StepError::below)?;
        let digests: Vec<umstage_oci::Digest> =
            image.layers().iter().map(|d| d.digest().clone()).collect();
        let source = ImageBlobs::new(&self.registry, parsed.clone(), image.layers());
        self.caches
            .add_blob_source(std::sync::Arc::new(source), &digests, &self.store);
        self.events.emit(Event::TaskDone {
            id,
            elapsed: started.elapsed(),
        });
        Ok(image)
    }
}

pub(crate) fn oci_platform(p: &Platform) -> umstage_oci::Platform {
    umstage_oci::Platform {
        os: p.os.clone(),
        architecture: p.arch.clone(),
        variant: (!p.variant.is_empty()).then(|| p.variant.clone()),
    }
}
