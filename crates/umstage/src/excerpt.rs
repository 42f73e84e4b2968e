//! The Dockerfile around a failed step, as BuildKit prints it after a failure: the file and
//! line, then the lines numbered between rules, `>>>` marking the step's own.

use std::fmt::Write as _;

use umstage_build::options::DockerfileSource;
use umstage_build::request::{BuildError, StepFailure};

/// The excerpt for `error`, when it is a failed step of the Dockerfile `source` and its lines
/// can be read.
pub fn for_error(error: &BuildError, source: &DockerfileSource) -> Option<String> {
    let BuildError::StepFailed(failure) = error else {
        return None;
    };
    // The build names the Dockerfile by its file name; a step from a base image's ONBUILD is
    // named otherwise and has no lines here.
    let (name, bytes) = match source {
        DockerfileSource::Path(path) => (
            path.file_name()?.to_string_lossy().into_owned(),
            std::fs::read(path).ok()?,
        ),
        DockerfileSource::Text(bytes) => ("Dockerfile".to_owned(), bytes.clone()),
    };
    if failure.file != name {
        return None;
    }
    render(failure, std::str::from_utf8(&bytes).ok()?)
}

/// Renders the excerpt of `text` for `failure`; `None` when its lines are not in `text`.
fn render(failure: &StepFailure, text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let (first, last) = (failure.line, failure.end_line.max(failure.line));
    if first == 0 || last > lines.len() {
        return None;
    }
    // BuildKit shows more around a one-line step: two lines each side, else one.
    let around = if first == last { 2 } else { 1 };
    let start = first.saturating_sub(around).max(1);
    let end = (last + around).min(lines.len());
    let mut out = format!("{}:{}\n", failure.file, first);
    let rule = "--------------------\n";
    out.push_str(rule);
    for n in start..=end {
        let mark = if (first..=last).contains(&n) {
            ">>>"
        } else {
            "   "
        };
        let _ = writeln!(
            out,
            " {n:>3} | {mark} {}",
            lines[n - 1].trim_end_matches('\r')
        );
    }
    out.push_str(rule);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(line: usize, end_line: usize) -> StepFailure {
        StepFailure {
            stage: "stage-0".into(),
            file: "Dockerfile".into(),
            line,
            end_line,
            instruction: String::new(),
            exit_code: Some(1),
            reason: String::new(),
            output_tail: Vec::new(),
            cause: None,
        }
    }

    #[test]
    fn a_step_of_another_file_has_no_excerpt() {
        let source = DockerfileSource::Text(TEXT.as_bytes().to_vec());
        let ours = BuildError::StepFailed(Box::new(failure(3, 3)));
        assert!(for_error(&ours, &source).is_some());
        let mut trigger = failure(1, 1);
        trigger.file = "ONBUILD".into();
        let theirs = BuildError::StepFailed(Box::new(trigger));
        assert_eq!(for_error(&theirs, &source), None);
    }

    const TEXT: &str = "FROM a\nENV X=1\nRUN one \\\n  two\nCMD x\nUSER 1\nLABEL y=z\n";

    #[test]
    fn a_multi_line_step_shows_one_line_each_side() {
        let got = render(&failure(3, 4), TEXT);
        let want = "Dockerfile:3\n--------------------\n   2 |     ENV X=1\n   3 | >>> RUN one \\\n   4 | >>>   two\n   5 |     CMD x\n--------------------\n";
        assert_eq!(got.as_deref(), Some(want));
    }

    #[test]
    fn a_one_line_step_shows_two_lines_each_side_within_the_file() {
        let got = render(&failure(2, 2), TEXT).unwrap_or_default();
        assert!(
            got.contains("   1 |     FROM a\n   2 | >>> ENV X=1\n"),
            "{got}"
        );
        assert!(got.contains("   4 |       two\n----"), "{got}");
        assert_eq!(render(&failure(0, 0), TEXT), None);
        assert_eq!(render(&failure(9, 9), TEXT), None);
    }
}
