//! The metadata operation: instructions that change only the image config (ENV, LABEL, CMD,
//! ...), keyed by their history text, with no filesystem and no cache lookup.

use umstage_dockerfile::Command;

use crate::config;
use crate::ops::step::Step;
use crate::request::BuildError;

impl Step<'_, '_> {
    /// A step that changes only the config: no filesystem, no cache lookup. `expanded` words
    /// the history entry (none for ONBUILD, as BuildKit); the key rolls over the instruction.
    pub(crate) fn metadata(&mut self, expanded: &Command) -> Result<bool, BuildError> {
        // Each word's expansion is bounded, but many instructions could still add up to a
        // config no store or registry would take: refused at the instruction that does it.
        let limit = umstage_oci::image::MAX_JSON_SIZE;
        let size = serde_json::to_vec(&self.cfg.image).map_or(0, |b| b.len() as u64);
        if size > limit {
            return Err(self.refused(format!(
                "the image config would grow to {size} bytes, past the {limit} an image config may hold"
            )));
        }
        let created_by = crate::history::created_by(expanded, &self.cfg.image, &[]);
        self.input_parent();
        if let Some(text) = &created_by {
            self.input("effect", text.clone());
        }
        self.roll_key(
            "meta",
            created_by.as_deref().unwrap_or(&self.instruction.original),
        );
        // No time of its own: the exporter gives it the time of the step before, so an
        // unchanged rebuild gives the same image.
        if let Some(text) = created_by {
            self.cfg.add_history(text, None, true);
        }
        Ok(false)
    }
}

pub(crate) fn split_command(
    line: &umstage_dockerfile::CommandLine,
) -> (Option<Vec<String>>, Option<String>) {
    match line {
        umstage_dockerfile::CommandLine::Exec(v) => (Some(v.clone()), None),
        umstage_dockerfile::CommandLine::Shell(s) => (None, Some(s.clone())),
    }
}

pub(crate) fn health_config(
    check: &umstage_dockerfile::Healthcheck,
) -> Option<config::HealthConfig> {
    match check {
        umstage_dockerfile::Healthcheck::None => None,
        umstage_dockerfile::Healthcheck::Cmd { test, options } => {
            let ns = |d: std::time::Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
            Some(config::HealthConfig {
                test: test.clone(),
                interval: ns(options.interval),
                timeout: ns(options.timeout),
                start_period: ns(options.start_period),
                start_interval: ns(options.start_interval),
                retries: i64::from(options.retries),
            })
        }
    }
}
