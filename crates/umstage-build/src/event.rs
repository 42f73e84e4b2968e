//! Progress events: what a build reports while it runs, for the CLI to render.

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// Which output stream a line of step output came from (the sandbox's own type).
pub use umstage_snapshot::sandbox::Stream;

/// Identifies one step of one build: the stage it belongs to and its place in that stage.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct StepId {
    /// Index of the stage in the Dockerfile (0-based).
    pub stage_index: usize,
    /// Stage name (`AS name`), or the stage index as text when it has none.
    pub stage: String,
    /// Index of the step inside its stage (0 is the `FROM`).
    pub step_index: usize,
}

/// One thing that happened during a build.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The build begins: how many stages the target needs, out of how many.
    BuildStarted {
        /// Stages that will be built.
        stages_needed: usize,
        /// Stages in the Dockerfile.
        stages_total: usize,
        /// Steps in the stages that will be built, `FROM`s included.
        steps_needed: usize,
        /// The stage being built.
        target: String,
    },
    /// Which sandbox tier runs the build's `RUN` steps and why; said once, before the steps.
    Sandbox {
        /// The tier's name, as `--sandbox` takes it.
        tier: String,
        /// Why this tier, one line (what is mapped, or what kept a better tier out of reach).
        reason: String,
    },
    /// A step starts: its Dockerfile line and instruction text.
    StepStarted {
        /// Which step.
        step: StepId,
        /// 1-based line of the instruction in the Dockerfile (0 for steps with no line, such as
        /// ONBUILD triggers coming from a base image).
        line: usize,
        /// The instruction on one line: as written, but a FROM of an image names the reference
        /// the build uses.
        text: String,
        /// The step's number in its stage as BuildKit counts (1-based), for "step 2 of 5";
        /// `None` for a step that makes no vertex there (ARG, ENV, a FROM of scratch…).
        number: Option<usize>,
        /// How many numbered steps the stage has.
        steps_in_stage: usize,
    },
    /// A step was found in the cache and will not run.
    StepCached {
        /// Which step.
        step: StepId,
    },
    /// A step was not found in any cache and will run: the first of its inputs that differs
    /// from the last build of the same step.
    StepMiss {
        /// Which step.
        step: StepId,
        /// Why, for people: "context file src/main.c changed".
        reason: String,
    },
    /// One line of a running step's output.
    StepOutput {
        /// Which step.
        step: StepId,
        /// Which stream.
        stream: Stream,
        /// The line, without its newline.
        line: String,
    },
    /// A step finished successfully.
    StepDone {
        /// Which step.
        step: StepId,
        /// How long it ran.
        #[serde(serialize_with = "as_secs_f64")]
        elapsed: Duration,
    },
    /// A step failed; the build stops.
    StepFailed {
        /// Which step.
        step: StepId,
        /// What went wrong, one line.
        message: String,
    },
    /// Something the user should know that does not stop the build.
    Warning {
        /// The warning, one line.
        message: String,
    },
    /// A build check (lint rule) found something in the Dockerfile; the build goes on.
    Lint {
        /// BuildKit's rule name, e.g. `JSONArgsRecommended`.
        rule: String,
        /// What is wrong.
        message: String,
        /// The page documenting the rule.
        url: String,
        /// The Dockerfile's name.
        file: String,
        /// 1-based line.
        line: usize,
        /// That line's text.
        source: String,
    },
    /// A phase outside the steps (pulling a base image, exporting) starts.
    TaskStarted {
        /// Identifies the task in later events.
        id: String,
        /// What is being done.
        text: String,
    },
    /// A phase outside the steps finished.
    TaskDone {
        /// The task's id, as in `TaskStarted`.
        id: String,
        /// How long it took.
        #[serde(serialize_with = "as_secs_f64")]
        elapsed: Duration,
    },
    /// The build finished and every output was written.
    BuildDone {
        /// The image's config digest (its image id), when an image was made.
        image_id: Option<String>,
        /// How long the whole build took.
        #[serde(serialize_with = "as_secs_f64")]
        elapsed: Duration,
    },
}

fn as_secs_f64<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Receives the events of a build; called from any of the build's threads.
pub trait EventSink: Send + Sync {
    /// Handles one event.
    fn emit(&self, event: Event);
}

/// An event sink that drops everything.
#[derive(Debug, Default)]
pub struct Discard;

impl EventSink for Discard {
    fn emit(&self, _event: Event) {}
}

/// An event sink that keeps every event in memory, in order.
#[derive(Debug, Default)]
pub struct Collect {
    events: Mutex<Vec<Event>>,
}

impl Collect {
    /// The events received so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl EventSink for Collect {
    fn emit(&self, event: Event) {
        if let Ok(mut events) = self.events.lock() {
            events.push(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_with_a_tag_and_seconds() {
        let step = StepId {
            stage_index: 1,
            stage: "build".into(),
            step_index: 2,
        };
        let json = serde_json::to_value(Event::StepDone {
            step,
            elapsed: Duration::from_millis(1500),
        })
        .unwrap_or_default();
        assert_eq!(json["event"], "step_done");
        assert_eq!(json["step"]["stage"], "build");
        assert_eq!(json["elapsed"], 1.5);
    }
}
