//! Renders a build's progress events: a live terminal view, plain lines, raw JSON, or nothing.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use umstage_build::event::{Event, EventSink, StepId};

use crate::cli::ProgressMode;

mod rawjson;

/// An event sink that draws on standard error and can be finished (the live view stops).
pub trait Renderer: EventSink {
    /// Stops any live drawing and leaves the terminal clean. Called once, at the end.
    fn finish(&self);
}

/// The renderer for `mode`; `stderr_is_tty` decides what `auto` means.
pub fn renderer(mode: ProgressMode, stderr_is_tty: bool) -> Arc<dyn Renderer> {
    match mode {
        ProgressMode::Auto if stderr_is_tty => Live::start(),
        ProgressMode::Tty => Live::start(),
        ProgressMode::Auto | ProgressMode::Plain => Arc::new(Plain::default()),
        ProgressMode::Rawjson => Arc::new(rawjson::RawJson::default()),
        ProgressMode::Quiet => Arc::new(Quiet),
    }
}

/// BuildKit's name for a step: `[stage n/total]`, the number padded to the total's width
/// (`[stage  2/10]`), or `[stage]` for a step it does not number.
fn label(step: &StepId, number: Option<usize>, steps_in_stage: usize) -> String {
    let width = steps_in_stage.to_string().len();
    match number {
        Some(n) => format!("[{} {n:>width$}/{steps_in_stage}]", step.stage),
        None => format!("[{}]", step.stage),
    }
}

/// A build check finding, kept for the summary at the end of the build.
struct Finding {
    rule: String,
    message: String,
    line: usize,
}

/// The one-line form of a finding, as BuildKit prints it.
fn finding_line(rule: &str, message: &str, line: usize) -> String {
    format!("{rule}: {message} (line {line})")
}

/// BuildKit's summary of the build checks, printed after the build.
fn findings_summary(findings: &[Finding]) -> String {
    let mut s = format!(
        "{} warning{} found:\n",
        findings.len(),
        if findings.len() == 1 { "" } else { "s" }
    );
    for f in findings {
        s.push_str(&format!(
            " - {}\n",
            finding_line(&f.rule, &f.message, f.line)
        ));
    }
    s
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Shows nothing.
struct Quiet;

impl EventSink for Quiet {
    fn emit(&self, _: Event) {}
}
impl Renderer for Quiet {
    fn finish(&self) {}
}

/// One line per event, numbered by step as BuildKit's plain progress is.
#[derive(Default)]
struct Plain {
    state: Mutex<PlainState>,
}

#[derive(Default)]
struct PlainState {
    findings: Vec<Finding>,
    numbers: HashMap<StepId, usize>,
    started: HashMap<StepId, Instant>,
    tasks: HashMap<String, usize>,
    next: usize,
}

impl PlainState {
    fn number(&mut self, step: &StepId) -> usize {
        if let Some(&n) = self.numbers.get(step) {
            return n;
        }
        self.next += 1;
        self.numbers.insert(step.clone(), self.next);
        self.next
    }
}

impl EventSink for Plain {
    fn emit(&self, event: Event) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        let mut out = io::stderr().lock();
        let _ = match event {
            Event::BuildStarted {
                stages_needed,
                stages_total,
                target,
                ..
            } => writeln!(
                out,
                "building stage {target} ({stages_needed} of {stages_total} stages needed)"
            ),
            Event::StepStarted {
                step,
                text,
                number,
                steps_in_stage,
                ..
            } => {
                let n = st.number(&step);
                st.started.insert(step.clone(), Instant::now());
                writeln!(out, "#{n} {} {text}", label(&step, number, steps_in_stage))
            }
            Event::StepCached { step } => {
                let n = st.number(&step);
                writeln!(out, "#{n} CACHED")
            }
            Event::StepMiss { step, reason } => {
                let n = st.number(&step);
                writeln!(out, "#{n} cache miss: {reason}")
            }
            Event::StepOutput { step, line, .. } => {
                let n = st.number(&step);
                let t = st
                    .started
                    .get(&step)
                    .map(|s| s.elapsed().as_secs_f64())
                    .unwrap_or(0.0);
                writeln!(out, "#{n} {t:.3} {line}")
            }
            Event::StepDone { step, elapsed } => {
                let n = st.number(&step);
                writeln!(out, "#{n} DONE {}", secs(elapsed))
            }
            Event::StepFailed { step, message } => {
                let n = st.number(&step);
                writeln!(out, "#{n} ERROR: {message}")
            }
            Event::Warning { message } => writeln!(out, "WARNING: {message}"),
            Event::Sandbox { tier, reason } => writeln!(out, "#0 sandbox {tier}: {reason}"),
            Event::Lint {
                rule,
                message,
                line,
                ..
            } => {
                let text = finding_line(&rule, &message, line);
                st.findings.push(Finding {
                    rule,
                    message,
                    line,
                });
                writeln!(out, "WARN: {text}")
            }
            Event::TaskStarted { id, text } => {
                st.next += 1;
                let n = st.next;
                st.tasks.insert(id, n);
                writeln!(out, "#{n} {text}")
            }
            Event::TaskDone { id, elapsed } => {
                let n = st.tasks.get(&id).copied().unwrap_or(0);
                writeln!(out, "#{n} DONE {}", secs(elapsed))
            }
            Event::BuildDone { image_id, elapsed } => match image_id {
                Some(id) => writeln!(out, "built {id} in {}", secs(elapsed)),
                None => writeln!(out, "built in {}", secs(elapsed)),
            },
        };
    }
}
impl Renderer for Plain {
    fn finish(&self) {
        if let Ok(st) = self.state.lock()
            && !st.findings.is_empty()
        {
            let _ = write!(io::stderr().lock(), "\n{}", findings_summary(&st.findings));
        }
    }
}

/// Lines of output kept per running step in the live view.
const TAIL_LINES: usize = 6;

/// The live terminal view: finished steps scroll up as permanent lines; below them a block
/// that is redrawn in place shows the running steps with timers and their latest output.
struct Live {
    shared: Arc<LiveShared>,
    ticker: Mutex<Option<JoinHandle<()>>>,
}

struct LiveShared {
    state: Mutex<LiveState>,
    wake: Condvar,
}

#[derive(Default)]
struct LiveState {
    started: Option<Instant>,
    steps_needed: usize,
    steps_done: usize,
    /// Running steps, in start order.
    running: Vec<Running>,
    tasks: Vec<(String, String, Instant)>,
    /// Lines to print above the live block on the next draw.
    permanent: Vec<String>,
    /// Height of the live block last drawn, to erase it.
    drawn: usize,
    stopped: bool,
    /// Build check findings, summed up when the view stops.
    findings: Vec<Finding>,
}

struct Running {
    step: StepId,
    label: String,
    text: String,
    since: Instant,
    tail: VecDeque<String>,
}

impl Live {
    fn start() -> Arc<dyn Renderer> {
        let shared = Arc::new(LiveShared {
            state: Mutex::new(LiveState {
                started: Some(Instant::now()),
                ..LiveState::default()
            }),
            wake: Condvar::new(),
        });
        let ticker_shared = Arc::clone(&shared);
        let ticker = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                let Ok(mut st) = ticker_shared.state.lock() else {
                    return;
                };
                while !st.stopped {
                    draw(&mut st);
                    st = match ticker_shared
                        .wake
                        .wait_timeout(st, Duration::from_millis(100))
                    {
                        Ok((g, _)) => g,
                        Err(_) => return,
                    };
                }
                draw(&mut st);
            })
            .ok();
        Arc::new(Live {
            shared,
            ticker: Mutex::new(ticker),
        })
    }
}

fn terminal_size() -> (usize, usize) {
    rustix::termios::tcgetwinsize(io::stderr())
        .map(|w| (usize::from(w.ws_col.max(20)), usize::from(w.ws_row.max(5))))
        .unwrap_or((80, 24))
}

/// Cuts `s` to at most `width` characters.
fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(width.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Splits `text` into lines of at most `width` characters, at spaces where it can.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word = word.to_string();
        while word.chars().count() > width {
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            let rest = word.chars().skip(width).collect();
            lines.push(word.chars().take(width).collect());
            word = rest;
        }
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    lines.push(line);
    lines
}

/// Replaces control characters so a step's output cannot move the cursor under the view.
fn sanitize(line: &str) -> String {
    line.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                '�'
            } else {
                c
            }
        })
        .collect::<String>()
        .replace('\t', "    ")
}

fn draw(st: &mut LiveState) {
    let (cols, rows) = terminal_size();
    let mut out = String::new();
    if st.drawn > 0 {
        out.push_str(&format!("\x1b[{}A\r\x1b[J", st.drawn));
    }
    for line in st.permanent.drain(..) {
        out.push_str(&fit(&line, cols));
        out.push('\n');
    }
    let mut block = Vec::new();
    let elapsed = st.started.map(|s| s.elapsed()).unwrap_or_default();
    if !st.stopped {
        block.push(format!(
            "\x1b[1m[+] Building {} ({}/{})\x1b[0m",
            secs(elapsed),
            st.steps_done,
            st.steps_needed
        ));
        for (_, text, since) in &st.tasks {
            block.push(format!(" => {text}  {}", secs(since.elapsed())));
        }
        // Leave room for the header and one line per running step before any output tail.
        let budget = rows.saturating_sub(2 + st.running.len() + st.tasks.len());
        let per_step = if st.running.is_empty() {
            0
        } else {
            (budget / st.running.len()).min(TAIL_LINES)
        };
        for r in &st.running {
            let timer = secs(r.since.elapsed());
            let head = format!(" => {} {}", r.label, r.text);
            let head = fit(&head, cols.saturating_sub(timer.len() + 2));
            let pad = cols.saturating_sub(head.chars().count() + timer.len() + 1);
            block.push(format!("{head}{}\x1b[36m{timer}\x1b[0m", " ".repeat(pad)));
            let skip = r.tail.len().saturating_sub(per_step);
            for line in r.tail.iter().skip(skip) {
                block.push(format!(
                    "\x1b[2m    {}\x1b[0m",
                    fit(line, cols.saturating_sub(5))
                ));
            }
        }
    }
    for line in &block {
        out.push_str(line);
        out.push('\n');
    }
    st.drawn = block.len();
    let mut err = io::stderr().lock();
    let _ = err.write_all(out.as_bytes());
    let _ = err.flush();
}

impl EventSink for Live {
    fn emit(&self, event: Event) {
        let Ok(mut st) = self.shared.state.lock() else {
            return;
        };
        match event {
            Event::BuildStarted { steps_needed, .. } => st.steps_needed = steps_needed,
            Event::StepStarted {
                step,
                text,
                number,
                steps_in_stage,
                ..
            } => st.running.push(Running {
                label: label(&step, number, steps_in_stage),
                step,
                text,
                since: Instant::now(),
                tail: VecDeque::new(),
            }),
            Event::StepCached { step } => {
                if let Some(r) = take_running(&mut st, &step) {
                    st.steps_done += 1;
                    st.permanent.push(format!(
                        " \x1b[34m✔\x1b[0m {} {}  \x1b[33mCACHED\x1b[0m",
                        r.label, r.text
                    ));
                }
            }
            // The live view has no room for it; plain and rawjson show it.
            Event::StepMiss { .. } => {}
            Event::StepOutput { step, line, .. } => {
                if let Some(r) = st.running.iter_mut().find(|r| r.step == step) {
                    if r.tail.len() == TAIL_LINES {
                        r.tail.pop_front();
                    }
                    r.tail.push_back(sanitize(&line));
                }
            }
            Event::StepDone { step, elapsed } => {
                if let Some(r) = take_running(&mut st, &step) {
                    st.steps_done += 1;
                    st.permanent.push(format!(
                        " \x1b[32m✔\x1b[0m {} {}  {}",
                        r.label,
                        r.text,
                        secs(elapsed)
                    ));
                }
            }
            Event::StepFailed { step, message } => {
                if let Some(r) = take_running(&mut st, &step) {
                    st.permanent.push(format!(
                        " \x1b[31m✘\x1b[0m {} {}  {message}",
                        r.label, r.text
                    ));
                    for line in r.tail {
                        st.permanent.push(format!("    {line}"));
                    }
                }
            }
            Event::Warning { message } => {
                // Wrapped, not cut to the terminal as other lines are: a warning's end is
                // often its fix. The budget leaves room for the prefix and its colour codes.
                let width = terminal_size().0.saturating_sub(18).max(20);
                for (i, part) in wrap(&message, width).into_iter().enumerate() {
                    st.permanent.push(if i == 0 {
                        format!("\x1b[33mWARNING:\x1b[0m {part}")
                    } else {
                        format!("         {part}")
                    });
                }
            }
            Event::Sandbox { tier, reason } => {
                st.permanent
                    .push(format!("\x1b[2msandbox {tier}: {reason}\x1b[0m"));
            }
            Event::Lint {
                rule,
                message,
                line,
                ..
            } => st.findings.push(Finding {
                rule,
                message,
                line,
            }),
            Event::TaskStarted { id, text } => st.tasks.push((id, text, Instant::now())),
            Event::TaskDone { id, elapsed } => {
                if let Some(pos) = st.tasks.iter().position(|t| t.0 == id) {
                    let (_, text, _) = st.tasks.remove(pos);
                    st.permanent
                        .push(format!(" \x1b[32m✔\x1b[0m {text}  {}", secs(elapsed)));
                }
            }
            Event::BuildDone { image_id, elapsed } => {
                st.permanent.push(match image_id {
                    Some(id) => format!("built {id} in {}", secs(elapsed)),
                    None => format!("built in {}", secs(elapsed)),
                });
            }
        }
        self.shared.wake.notify_all();
    }
}

fn take_running(st: &mut LiveState, step: &StepId) -> Option<Running> {
    let pos = st.running.iter().position(|r| &r.step == step)?;
    Some(st.running.remove(pos))
}

impl Renderer for Live {
    fn finish(&self) {
        if let Ok(mut st) = self.shared.state.lock() {
            st.stopped = true;
        }
        self.shared.wake.notify_all();
        if let Some(t) = self.ticker.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
        if let Ok(st) = self.shared.state.lock()
            && !st.findings.is_empty()
        {
            let _ = write!(
                io::stderr().lock(),
                "\n\x1b[33m{}\x1b[0m",
                findings_summary(&st.findings)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_number_as_buildkit_pads() {
        let step = StepId {
            stage_index: 0,
            stage: "builder".into(),
            step_index: 3,
        };
        assert_eq!(label(&step, Some(2), 10), "[builder  2/10]");
        assert_eq!(label(&step, Some(2), 9), "[builder 2/9]");
        assert_eq!(label(&step, None, 9), "[builder]");
    }

    #[test]
    fn step_output_cannot_inject_terminal_controls() {
        assert_eq!(sanitize("a\x1b[2Jb\tc"), "a�[2Jb    c");
    }

    #[test]
    fn warnings_wrap_at_spaces_and_keep_every_word() {
        assert_eq!(wrap("aa bb cc", 5), ["aa bb", "cc"]);
        assert_eq!(wrap("abcdefgh ij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrap("short", 80), ["short"]);
        let long = "single-id mode (no range): only your id. Fix: sudo usermod --add-subuids 165536-231071 bob";
        let lines = wrap(long, 30);
        assert!(lines.iter().all(|l| l.chars().count() <= 30), "{lines:?}");
        assert_eq!(lines.join(" "), long);
    }

    #[test]
    fn long_lines_are_cut_to_the_terminal() {
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("abc", 4), "abc");
    }
}
