//! Shell patterns for `${v#p}`, `${v%p}` and `${v/p/r}`: `*`, `?` and escapes, matched without backtracking blow-ups.

use super::{ExpandError, err, too_large};

/// One element of a shell pattern as used by `${v#p}`, `${v%p}` and `${v/p/r}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Any,
    One,
    Lit(char),
}

/// A compiled shell pattern: `*`, `?` and backslash escapes.
#[derive(Debug, Clone)]
pub(super) struct Pattern {
    toks: Vec<Tok>,
}

impl Pattern {
    pub(super) fn compile(src: &str) -> Result<Pattern, ExpandError> {
        let mut toks = Vec::new();
        let mut it = src.chars().peekable();
        while let Some(c) = it.next() {
            match c {
                '*' => toks.push(Tok::Any),
                '?' => toks.push(Tok::One),
                '\\' => match it.peek() {
                    Some('}' | '/') => {}
                    Some(&n @ ('*' | '?' | '\\')) => {
                        it.next();
                        toks.push(Tok::Lit(n));
                    }
                    other => {
                        let shown = other.map(|c| c.to_string()).unwrap_or_default();
                        return err(format!(
                            "invalid pattern ({src}) in substitution: invalid escape '\\{shown}'"
                        ));
                    }
                },
                c => toks.push(Tok::Lit(c)),
            }
        }
        Ok(Pattern { toks })
    }

    fn reversed(&self) -> Pattern {
        Pattern {
            toks: self.toks.iter().rev().copied().collect(),
        }
    }

    /// Lengths (in chars) of the prefixes of `s` that the whole pattern matches, as a bitmap.
    fn prefix_matches(&self, s: &[char]) -> Vec<bool> {
        let n = self.toks.len();
        let mut states = vec![false; n + 1];
        states[0] = true;
        self.close(&mut states);
        let mut out = Vec::with_capacity(s.len() + 1);
        out.push(states[n]);
        for &c in s {
            if !states.iter().any(|&b| b) {
                out.resize(s.len() + 1, false);
                return out;
            }
            let mut next = vec![false; n + 1];
            self.advance(&states, c, &mut next);
            states = next;
            out.push(states[n]);
        }
        out
    }

    /// Moves the live `states` over the character `c` into `next`, closed under empty `*`.
    fn advance(&self, states: &[bool], c: char, next: &mut [bool]) {
        for (i, tok) in self.toks.iter().enumerate() {
            if !states[i] {
                continue;
            }
            match *tok {
                Tok::Any => next[i] = true,
                Tok::One => next[i + 1] = true,
                Tok::Lit(l) if l == c => next[i + 1] = true,
                Tok::Lit(_) => {}
            }
        }
        self.close(next);
    }

    /// Adds the states reachable by letting `*` match nothing.
    fn close(&self, states: &mut [bool]) {
        for i in 0..self.toks.len() {
            if states[i] && self.toks[i] == Tok::Any {
                states[i + 1] = true;
            }
        }
    }

    pub(super) fn trim_prefix(&self, value: &str, greedy: bool) -> String {
        let chars: Vec<char> = value.chars().collect();
        let m = self.prefix_matches(&chars);
        let k = if greedy {
            m.iter().rposition(|&b| b)
        } else {
            m.iter().position(|&b| b)
        };
        match k {
            Some(k) => chars[k..].iter().collect(),
            None => value.to_owned(),
        }
    }

    pub(super) fn trim_suffix(&self, value: &str, greedy: bool) -> String {
        let rev: String = value.chars().rev().collect();
        let trimmed = self.reversed().trim_prefix(&rev, greedy);
        trimmed.chars().rev().collect()
    }

    /// Where a match can start: runs the reversed pattern, unanchored, backwards over `s`.
    fn match_starts(&self, s: &[char]) -> Vec<bool> {
        let rev = self.reversed();
        let n = rev.toks.len();
        let mut out = vec![false; s.len() + 1];
        let mut states = vec![false; n + 1];
        states[0] = true;
        rev.close(&mut states);
        out[s.len()] = states[n];
        for (k, &c) in s.iter().enumerate().rev() {
            let mut next = vec![false; n + 1];
            next[0] = true;
            rev.advance(&states, c, &mut next);
            states = next;
            out[k] = states[n];
        }
        out
    }

    /// The longest prefix of `s` the pattern matches, spending at most `budget` state steps.
    fn longest_prefix(&self, s: &[char], budget: &mut usize) -> Result<Option<usize>, ExpandError> {
        let n = self.toks.len();
        let mut states = vec![false; n + 1];
        states[0] = true;
        self.close(&mut states);
        let mut best = states[n].then_some(0);
        for (k, &c) in s.iter().enumerate() {
            *budget = budget.checked_sub(n + 1).ok_or_else(|| ExpandError {
                message: "pattern substitution too expensive".into(),
            })?;
            let mut next = vec![false; n + 1];
            let mut alive = false;
            self.advance(&states, c, &mut next);
            for &b in &next {
                alive |= b;
            }
            if !alive {
                break;
            }
            states = next;
            if states[n] {
                best = Some(k + 1);
            }
        }
        Ok(best)
    }

    /// `value` with the first (or every) match replaced; an error once the result would pass `limit` bytes.
    pub(super) fn replace(
        &self,
        value: &str,
        replacement: &str,
        all: bool,
        limit: usize,
    ) -> Result<String, ExpandError> {
        let chars: Vec<char> = value.chars().collect();
        let starts = self.match_starts(&chars);
        let mut budget: usize = 20_000_000;
        let mut out = String::new();
        let mut i = 0;
        let mut last_match_end: Option<usize> = None;
        while i <= chars.len() {
            let end = if starts[i] {
                self.longest_prefix(&chars[i..], &mut budget)?
                    .map(|k| i + k)
            } else {
                None
            };
            match end {
                Some(e) if !(e == i && last_match_end == Some(i)) => {
                    if out.len() + replacement.len() > limit {
                        return Err(too_large());
                    }
                    out.push_str(replacement);
                    if e == i {
                        if let Some(&c) = chars.get(i) {
                            out.push(c);
                        }
                        i += 1;
                    } else {
                        i = e;
                    }
                    last_match_end = Some(e);
                    if !all {
                        out.extend(chars.get(i..).unwrap_or_default());
                        return Ok(out);
                    }
                }
                _ => {
                    if let Some(&c) = chars.get(i) {
                        out.push(c);
                    }
                    i += 1;
                }
            }
        }
        Ok(out)
    }
}
