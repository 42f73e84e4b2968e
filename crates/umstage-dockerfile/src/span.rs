//! Source positions.

use std::fmt;

/// A position in the source text: 1-based line, 1-based column counted in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    /// Line number, starting at 1.
    pub line: usize,
    /// Column number in characters, starting at 1.
    pub col: usize,
}

impl Pos {
    /// A position at `line`, `col` (both 1-based).
    pub const fn new(line: usize, col: usize) -> Pos {
        Pos { line, col }
    }
}

/// A range of source text from `start` to `end` (inclusive of the character at `end`'s column minus one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    /// Where the range starts.
    pub start: Pos,
    /// Where the range ends: one past its last character, on the last line it touches.
    pub end: Pos,
}

impl Span {
    /// A span from `start` to `end`.
    pub const fn new(start: Pos, end: Pos) -> Span {
        Span { start, end }
    }

    /// A span covering `len` characters on one line.
    pub const fn on_line(line: usize, col: usize, len: usize) -> Span {
        Span {
            start: Pos::new(line, col),
            end: Pos::new(line, col + len),
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}
