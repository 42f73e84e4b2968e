//! The error type: every failure names its file, line and column.

use std::fmt;

use crate::span::Span;

/// What kind of problem an [`Error`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The text does not form Dockerfile syntax (directives, continuations, heredocs, JSON).
    Syntax,
    /// An instruction keyword that does not exist.
    UnknownInstruction,
    /// A flag that is unknown, repeated, misplaced or has a bad value.
    Flag,
    /// Missing, extra or malformed instruction arguments.
    Argument,
    /// Variable expansion failed (`${V:?}`, bad substitution, unterminated quote).
    Expansion,
    /// A stage reference that cannot be resolved (unknown name, forward reference, cycle).
    Stage,
    /// A file with no instructions, or instructions before the first `FROM`.
    Structure,
}

/// A located error: file, span, one-line message, the offending source line and an optional suggestion.
///
/// Displays as `FILE:LINE:COL: message (suggestion)`, then the source line and a caret under
/// the problem. Its fields are reached through [`ErrorDetails`] (it derefs to them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.0.render())]
pub struct Error(Box<ErrorDetails>);

/// What an [`Error`] carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorDetails {
    /// What kind of problem this is.
    pub kind: ErrorKind,
    /// The file name given to the parser.
    pub file: String,
    /// Where the problem is.
    pub span: Span,
    /// What is wrong, in one line.
    pub message: String,
    /// The source line at `span.start.line`, if known.
    pub source_line: Option<String>,
    /// A hint such as `did you mean FROM?`.
    pub suggestion: Option<String>,
}

impl Error {
    /// An error of `kind` at `span` in `file` with `message` and no source line yet.
    pub fn new(kind: ErrorKind, file: &str, span: Span, message: impl Into<String>) -> Error {
        Error(Box::new(ErrorDetails {
            kind,
            file: file.to_owned(),
            span,
            message: message.into(),
            source_line: None,
            suggestion: None,
        }))
    }

    /// This error with a suggestion attached.
    pub fn with_suggestion(mut self, suggestion: Option<String>) -> Error {
        self.suggestion = suggestion;
        self
    }

    /// This error with the source line taken from `source` (the whole file text).
    pub fn with_source(mut self, source: &str) -> Error {
        if self.source_line.is_none() && self.span.start.line > 0 {
            self.source_line = source
                .split('\n')
                .nth(self.span.start.line - 1)
                .map(|l| l.trim_end_matches('\r').to_owned());
        }
        self
    }
}

impl std::ops::Deref for Error {
    type Target = ErrorDetails;
    fn deref(&self) -> &ErrorDetails {
        &self.0
    }
}

impl std::ops::DerefMut for Error {
    fn deref_mut(&mut self) -> &mut ErrorDetails {
        &mut self.0
    }
}

impl ErrorDetails {
    fn render(&self) -> String {
        // Line 0 means "about the file as a whole" (e.g. an unknown --target): no position to show.
        let mut out = if self.span.start.line == 0 {
            format!("{}: {}", self.file, self.message)
        } else {
            format!(
                "{}:{}:{}: {}",
                self.file, self.span.start.line, self.span.start.col, self.message
            )
        };
        if let Some(s) = &self.suggestion {
            out.push_str(&format!(" ({s})"));
        }
        if let Some(line) = &self.source_line {
            let number = self.span.start.line.to_string();
            let pad = " ".repeat(number.len());
            let shown: String = line
                .chars()
                .map(|c| if c == '\t' { ' ' } else { c })
                .collect();
            let col = self.span.start.col.max(1);
            let line_len = shown.chars().count();
            let width = if self.span.end.line == self.span.start.line && self.span.end.col > col {
                self.span.end.col - col
            } else {
                line_len.saturating_sub(col - 1).max(1)
            };
            let width = width.min(line_len.saturating_sub(col - 1).max(1));
            out.push_str(&format!(
                "\n{number} | {shown}\n{pad} | {}{}",
                " ".repeat(col - 1),
                "^".repeat(width)
            ));
        }
        out
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::Syntax => "syntax",
            ErrorKind::UnknownInstruction => "unknown instruction",
            ErrorKind::Flag => "flag",
            ErrorKind::Argument => "argument",
            ErrorKind::Expansion => "expansion",
            ErrorKind::Stage => "stage",
            ErrorKind::Structure => "structure",
        };
        f.write_str(s)
    }
}

/// The closest candidate to `word` by edit distance, if it is close enough to be a useful guess.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = word.to_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = edit_distance(&lower, &c.to_lowercase());
        let limit = (c.chars().count() / 3).max(1);
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// Edit distance counting an adjacent swap as one edit (optimal string alignment).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len() > 64 || b.len() > 64 {
        return usize::MAX;
    }
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, slot) in d.iter_mut().enumerate().take(w) {
        *slot = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j - 1] + cost)
                .min(d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::span::Pos;

    #[test]
    fn renders_location_source_caret_and_suggestion() {
        let e = Error::new(
            ErrorKind::UnknownInstruction,
            "Dockerfile",
            Span::new(Pos::new(2, 1), Pos::new(2, 6)),
            "unknown instruction: FROMM",
        )
        .with_suggestion(Some("did you mean FROM?".into()))
        .with_source("# x\nFROMM alpine\n");
        assert_eq!(
            e.to_string(),
            "Dockerfile:2:1: unknown instruction: FROMM (did you mean FROM?)\n2 | FROMM alpine\n  | ^^^^^"
        );
    }

    #[test]
    fn whole_file_errors_have_no_position() {
        let e = Error::new(
            ErrorKind::Stage,
            "Dockerfile",
            Span::default(),
            "target stage \"x\" could not be found",
        );
        assert_eq!(
            e.to_string(),
            "Dockerfile: target stage \"x\" could not be found"
        );
    }

    #[test]
    fn closest_finds_near_names_only() {
        assert_eq!(closest("FROMM", ["FROM", "RUN"]), Some("FROM"));
        assert_eq!(closest("xyzzy", ["FROM", "RUN"]), None);
    }
}
