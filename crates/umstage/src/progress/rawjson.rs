//! `--progress rawjson`: BuildKit's `SolveStatus` JSON (`client/graph.go`), as
//! `buildx build --progress rawjson` writes it, so the tools that read buildx's stream read
//! umstage's. buildx indents each object; here each is one line, which a JSON stream reader
//! takes the same and a line reader can follow.
//!
//! Each step is a vertex named as BuildKit names it (`[stage 2/5] RUN …`), its input the step
//! before it; phases outside the steps (pulls, exports) are vertexes of their own, and the
//! build checks and warnings hang on an `[internal] load build definition` vertex, as
//! BuildKit's do. A vertex is sent whole each time it changes, as BuildKit sends it.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use umstage_build::event::{Event, EventSink, StepId, Stream};

use super::{Renderer, finding_line, label};

/// The renderer: one `SolveStatus` per event that changes anything.
#[derive(Default)]
pub(super) struct RawJson {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    steps: HashMap<StepId, Vertex>,
    tasks: HashMap<String, Vertex>,
    /// The last vertex of each stage (by index), the next step's input.
    last_in_stage: HashMap<usize, String>,
    definition: Option<Vertex>,
}

/// `client.SolveStatus`; umstage reports no byte counts, so `statuses` is always left out
/// (BuildKit omits it when empty too).
#[derive(Default, Serialize)]
struct SolveStatus {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    vertexes: Vec<Vertex>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    logs: Vec<VertexLog>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<VertexWarning>,
}

/// `client.Vertex`.
#[derive(Clone, Serialize)]
struct Vertex {
    digest: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    inputs: Vec<String>,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    started: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    cached: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
}

/// `client.VertexLog`: `data` is base64, as Go encodes bytes; stream 1 is stdout, 2 stderr.
#[derive(Serialize)]
struct VertexLog {
    vertex: String,
    stream: u8,
    data: String,
    timestamp: String,
}

/// `client.VertexWarning`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VertexWarning {
    vertex: String,
    level: u8,
    short: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    detail: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_info: Option<SourceInfo>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    range: Vec<Range>,
}

/// `pb.SourceInfo`, without the file's text (the event carries one line, not the file).
#[derive(Serialize)]
struct SourceInfo {
    filename: String,
    language: &'static str,
}

/// `pb.Range`: 1-based lines, as BuildKit's.
#[derive(Serialize)]
struct Range {
    start: Position,
    end: Position,
}

#[derive(Serialize)]
struct Position {
    line: usize,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// A vertex digest: BuildKit's are its ops' digests; umstage's name what the vertex is in
/// this build, which is what a reader uses them for (joining vertexes, logs and warnings).
fn digest(what: &str) -> String {
    umstage_oci::digest::sha256(what.as_bytes()).to_string()
}

fn step_key(step: &StepId) -> String {
    format!("step {} {}", step.stage_index, step.step_index)
}

fn vertex(digest: String, name: String) -> Vertex {
    Vertex {
        digest,
        inputs: Vec::new(),
        name,
        started: Some(now()),
        completed: None,
        cached: false,
        error: String::new(),
    }
}

/// BuildKit's level for a warning from the Dockerfile frontend.
const WARNING_LEVEL: u8 = 1;

impl State {
    /// The vertex build checks and warnings belong to; made, complete, the first time.
    fn definition(&mut self, status: &mut SolveStatus) -> String {
        let v = self.definition.get_or_insert_with(|| {
            let mut v = vertex(
                digest("definition"),
                "[internal] load build definition from Dockerfile".into(),
            );
            v.completed = v.started.clone();
            status.vertexes.push(v.clone());
            v
        });
        v.digest.clone()
    }

    fn warning(&mut self, short: String, status: &mut SolveStatus) -> VertexWarning {
        VertexWarning {
            vertex: self.definition(status),
            level: WARNING_LEVEL,
            short: STANDARD.encode(short),
            detail: Vec::new(),
            url: String::new(),
            source_info: None,
            range: Vec::new(),
        }
    }

    /// What `event` changes, as a `SolveStatus` (empty when it changes nothing a reader sees).
    fn status(&mut self, event: Event) -> SolveStatus {
        let mut status = SolveStatus::default();
        match event {
            Event::BuildStarted { .. } | Event::BuildDone { .. } => {}
            Event::StepStarted {
                step,
                text,
                number,
                steps_in_stage,
                ..
            } => {
                let mut v = vertex(
                    digest(&step_key(&step)),
                    format!("{} {text}", label(&step, number, steps_in_stage)),
                );
                if step.step_index > 0
                    && let Some(input) = self.last_in_stage.get(&step.stage_index)
                {
                    v.inputs.push(input.clone());
                }
                self.last_in_stage
                    .insert(step.stage_index, v.digest.clone());
                status.vertexes.push(v.clone());
                self.steps.insert(step, v);
            }
            Event::StepCached { step, .. } => {
                if let Some(v) = self.steps.get_mut(&step) {
                    v.cached = true;
                    v.completed = Some(now());
                    status.vertexes.push(v.clone());
                }
            }
            Event::StepOutput {
                step, stream, line, ..
            } => {
                if let Some(v) = self.steps.get(&step) {
                    status.logs.push(VertexLog {
                        vertex: v.digest.clone(),
                        stream: match stream {
                            Stream::Stdout => 1,
                            Stream::Stderr => 2,
                        },
                        data: STANDARD.encode(format!("{line}\n")),
                        timestamp: now(),
                    });
                }
            }
            // SolveStatus has no field for it: a line of the step's log, as plain shows it.
            Event::StepMiss { step, reason } => {
                if let Some(v) = self.steps.get(&step) {
                    status.logs.push(VertexLog {
                        vertex: v.digest.clone(),
                        stream: 2,
                        data: STANDARD.encode(format!("cache miss: {reason}\n")),
                        timestamp: now(),
                    });
                }
            }
            Event::StepDone { step, .. } => {
                if let Some(v) = self.steps.get_mut(&step) {
                    v.completed = Some(now());
                    status.vertexes.push(v.clone());
                }
            }
            Event::StepFailed { step, message, .. } => {
                if let Some(v) = self.steps.get_mut(&step) {
                    v.completed = Some(now());
                    v.error = message;
                    status.vertexes.push(v.clone());
                }
            }
            Event::Warning { message, .. } => {
                let w = self.warning(message, &mut status);
                status.warnings.push(w);
            }
            Event::Lint {
                rule,
                message,
                url,
                file,
                line,
                ..
            } => {
                let mut w = self.warning(finding_line(&rule, &message, line), &mut status);
                w.detail.push(STANDARD.encode(&message));
                w.url = url;
                w.source_info = Some(SourceInfo {
                    filename: file,
                    language: "Dockerfile",
                });
                w.range.push(Range {
                    start: Position { line },
                    end: Position { line },
                });
                status.warnings.push(w);
            }
            // BuildKit has no such vertex; an internal one, done at once, says it the same way.
            Event::Sandbox { tier, reason } => {
                let mut v = vertex(
                    digest("sandbox"),
                    format!("[internal] sandbox {tier}: {reason}"),
                );
                v.completed = Some(now());
                status.vertexes.push(v);
            }
            Event::TaskStarted { id, text, .. } => {
                let v = vertex(digest(&format!("task {id}")), text);
                status.vertexes.push(v.clone());
                self.tasks.insert(id, v);
            }
            Event::TaskDone { id, .. } => {
                if let Some(mut v) = self.tasks.remove(&id) {
                    v.completed = Some(now());
                    status.vertexes.push(v);
                }
            }
        }
        status
    }
}

impl EventSink for RawJson {
    fn emit(&self, event: Event) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let status = state.status(event);
        if status.vertexes.is_empty() && status.logs.is_empty() && status.warnings.is_empty() {
            return;
        }
        if let Ok(line) = serde_json::to_string(&status) {
            let _ = writeln!(io::stderr().lock(), "{line}");
        }
    }
}

impl Renderer for RawJson {
    fn finish(&self) {}
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::Value;

    use super::*;

    fn json(state: &mut State, event: Event) -> Value {
        serde_json::to_value(state.status(event)).unwrap_or_default()
    }

    #[test]
    fn a_step_is_a_vertex_with_its_logs_and_its_input() {
        let mut st = State::default();
        let step = |i| StepId {
            stage_index: 0,
            stage: "build".into(),
            step_index: i,
        };
        let from = json(
            &mut st,
            Event::StepStarted {
                step: step(0),
                line: 1,
                text: "FROM busybox".into(),
                number: Some(1),
                steps_in_stage: 2,
            },
        );
        assert_eq!(from["vertexes"][0]["name"], "[build 1/2] FROM busybox");
        let run = json(
            &mut st,
            Event::StepStarted {
                step: step(1),
                line: 2,
                text: "RUN echo hi".into(),
                number: Some(2),
                steps_in_stage: 2,
            },
        );
        let digest = &run["vertexes"][0]["digest"];
        assert!(digest.as_str().is_some_and(|d| d.starts_with("sha256:")));
        assert_eq!(
            run["vertexes"][0]["inputs"][0],
            from["vertexes"][0]["digest"]
        );
        assert!(run["vertexes"][0]["completed"].is_null());
        let log = json(
            &mut st,
            Event::StepOutput {
                step: step(1),
                stream: Stream::Stderr,
                line: "hi".into(),
            },
        );
        assert_eq!(log["logs"][0]["vertex"], *digest);
        assert_eq!(log["logs"][0]["stream"], 2);
        assert_eq!(log["logs"][0]["data"], STANDARD.encode("hi\n"));
        let done = json(
            &mut st,
            Event::StepDone {
                step: step(1),
                elapsed: Duration::from_secs(1),
            },
        );
        assert_eq!(done["vertexes"][0]["digest"], *digest);
        assert!(done["vertexes"][0]["started"].is_string());
        assert!(done["vertexes"][0]["completed"].is_string());
        assert!(done.get("statuses").is_none() && done.get("logs").is_none());
    }

    #[test]
    fn a_build_check_is_a_warning_on_the_definition_vertex() {
        let mut st = State::default();
        let out = json(
            &mut st,
            Event::Lint {
                rule: "JSONArgsRecommended".into(),
                message: "JSON arguments recommended".into(),
                url: "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/".into(),
                file: "Dockerfile".into(),
                line: 3,
                source: "CMD x".into(),
            },
        );
        assert_eq!(out["vertexes"][0]["digest"], out["warnings"][0]["vertex"]);
        assert_eq!(out["warnings"][0]["level"], 1);
        assert_eq!(out["warnings"][0]["sourceInfo"]["filename"], "Dockerfile");
        assert_eq!(out["warnings"][0]["range"][0]["start"]["line"], 3);
        assert_eq!(
            out["warnings"][0]["short"],
            STANDARD.encode("JSONArgsRecommended: JSON arguments recommended (line 3)")
        );
        // The definition vertex is sent once.
        let again = json(
            &mut st,
            Event::Warning {
                message: "w".into(),
            },
        );
        assert!(again.get("vertexes").is_none());
        assert_eq!(again["warnings"][0]["vertex"], out["warnings"][0]["vertex"]);
    }
}
