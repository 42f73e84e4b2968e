//! Shell-word processing with BuildKit's semantics: quotes, escapes, `$V` and `${…}` forms, word splitting.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Nesting limit for `${…}` inside `${…}`, so hostile input cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

/// How many bytes substitution may add to a word (and to all the words of one instruction).
/// BuildKit has no limit but memory: ARGs that each double the last reach gigabytes in a few
/// dozen lines. No real Dockerfile comes near a mebibyte of substituted text.
pub(crate) const MAX_EXPANSION: usize = 1 << 20;

/// What substitution has added across the words of one instruction, which together may add
/// no more than [`MAX_EXPANSION`] either.
#[derive(Debug, Default)]
pub(crate) struct Growth(std::cell::Cell<usize>);

impl Growth {
    /// Counts `word` expanded to `expanded`; an error once the total passes the limit.
    pub(crate) fn add(&self, word: &str, expanded: &str) -> Result<(), ExpandError> {
        let total = self.0.get() + expanded.len().saturating_sub(word.len());
        self.0.set(total);
        if total > MAX_EXPANSION {
            return Err(too_large());
        }
        Ok(())
    }
}

/// The error for text that grew past [`MAX_EXPANSION`].
fn too_large() -> ExpandError {
    ExpandError {
        message: format!(
            "substitution adds more than {MAX_EXPANSION} bytes (1 MiB): a variable's value grows without bound"
        ),
    }
}

/// A source of variable values for expansion.
pub trait Env {
    /// The value of `name`, or `None` if it is unset.
    fn get(&self, name: &str) -> Option<&str>;
}

impl Env for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        HashMap::get(self, name).map(String::as_str)
    }
}

impl Env for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        BTreeMap::get(self, name).map(String::as_str)
    }
}

/// A list of `(name, value)` pairs; the last pair with a name wins.
impl Env for [(String, String)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Env for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<&str> {
        Env::get(self.as_slice(), name)
    }
}

/// An environment with no variables.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmptyEnv;

impl Env for EmptyEnv {
    fn get(&self, _: &str) -> Option<&str> {
        None
    }
}

/// Why a word could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExpandError {
    /// What went wrong, e.g. `syntax error: bad substitution`.
    pub message: String,
}

fn err<T>(message: impl Into<String>) -> Result<T, ExpandError> {
    Err(ExpandError {
        message: message.into(),
    })
}

/// The result of expanding a word, with the variable names it looked up.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expansion {
    /// The word as one string (no splitting).
    pub value: String,
    /// The word split into fields as a shell would.
    pub words: Vec<String>,
    /// Names that were referenced and set.
    pub matched: BTreeSet<String>,
    /// Names that were referenced but unset.
    pub unmatched: BTreeSet<String>,
}

/// A shell-word lexer: escape token plus the modes BuildKit's lexer has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    /// The escape character, `\` or `` ` ``.
    pub escape: char,
    /// Keep quote characters in the output instead of removing them.
    pub raw_quotes: bool,
    /// Keep escape characters in the output instead of removing them.
    pub raw_escapes: bool,
    /// Leave references to unset variables as written instead of expanding them to nothing.
    pub skip_unset: bool,
    /// Treat quote characters as ordinary text (used for heredoc bodies, which keep their quotes).
    pub skip_quotes: bool,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer::new('\\')
    }
}

impl Lexer {
    /// A lexer with `escape` as its escape token and every optional mode off.
    pub const fn new(escape: char) -> Lexer {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset: false,
            skip_quotes: false,
        }
    }

    /// Expands `word` to one string: quotes removed, escapes processed, variables substituted.
    pub fn expand_word(&self, word: &str, env: &dyn Env) -> Result<String, ExpandError> {
        if self.is_plain(word) {
            return Ok(word.to_owned());
        }
        Ok(self.run(word, env, false, false)?.value)
    }

    /// Expands `word` and splits the result into fields.
    pub fn expand_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, ExpandError> {
        if self.is_plain(word) && !word.contains('<') {
            return Ok(word
                .split(char::is_whitespace)
                .filter(|w| !w.is_empty())
                .map(str::to_owned)
                .collect());
        }
        Ok(self.run(word, env, true, false)?.words)
    }

    /// Whether `word` has nothing for the lexer to do: no `$`, quote or escape character.
    fn is_plain(&self, word: &str) -> bool {
        !word.contains(['$', '\'', '"', self.escape])
    }

    /// Expands `word`, returning the string, the fields and the names it referenced.
    pub fn process(&self, word: &str, env: &dyn Env) -> Result<Expansion, ExpandError> {
        self.run(word, env, true, true)
    }

    fn run(
        &self,
        word: &str,
        env: &dyn Env,
        want_words: bool,
        track: bool,
    ) -> Result<Expansion, ExpandError> {
        let mut state = State {
            want_words,
            track,
            lx: *self,
            src: word,
            pos: 0,
            env,
            depth: 0,
            limit: word.len().saturating_add(MAX_EXPANSION),
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        };
        let (value, words) = state
            .stop_on(None, self.raw_escapes)
            .map_err(|e| ExpandError {
                message: format!("failed to process \"{word}\": {}", e.message),
            })?;
        Ok(Expansion {
            value,
            words,
            matched: state.matched,
            unmatched: state.unmatched,
        })
    }
}

struct State<'a> {
    /// Whether the top level splits into fields (nested `${…}` words are never split).
    want_words: bool,
    /// Whether to record referenced names.
    track: bool,
    lx: Lexer,
    src: &'a str,
    pos: usize,
    env: &'a dyn Env,
    depth: usize,
    /// The longest any text built from `src` may get: its length plus [`MAX_EXPANSION`].
    limit: usize,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

struct Words {
    enabled: bool,
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn new(enabled: bool) -> Words {
        Words {
            enabled,
            word: String::new(),
            words: Vec::new(),
            in_word: false,
        }
    }
    fn add_char(&mut self, ch: char) {
        if !self.enabled {
            return;
        }
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }
    fn add_raw_char(&mut self, ch: char) {
        if !self.enabled {
            return;
        }
        self.word.push(ch);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        if !self.enabled {
            return;
        }
        for ch in s.chars() {
            self.add_char(ch);
        }
    }
    fn add_raw_string(&mut self, s: &str) {
        if !self.enabled {
            return;
        }
        self.word.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

fn is_special_param(ch: char) -> bool {
    matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

impl<'a> State<'a> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn peek2(&self) -> Option<char> {
        let mut it = self.src[self.pos..].chars();
        it.next();
        it.next()
    }

    fn next(&mut self) -> Option<char> {
        let ch = self.peek()?;
        self.pos += ch.len_utf8();
        Some(ch)
    }

    fn lookup(&mut self, name: &str) -> Option<&'a str> {
        let env: &'a dyn Env = self.env;
        if !self.track {
            return env.get(name);
        }
        match env.get(name) {
            Some(v) => {
                if !self.matched.contains(name) {
                    self.matched.insert(name.to_owned());
                }
                Some(v)
            }
            None => {
                if !self.unmatched.contains(name) {
                    self.unmatched.insert(name.to_owned());
                }
                None
            }
        }
    }

    /// Reads until `stop` (consumed) or end of input; returns the string and its fields.
    fn stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), ExpandError> {
        let mut result = String::with_capacity(self.src.len() - self.pos);
        let mut words = Words::new(self.want_words && stop.is_none());
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            match ch {
                '\'' if !self.lx.skip_quotes => {
                    let s = self.single_quote()?;
                    result.push_str(&s);
                    words.add_raw_string(&s);
                }
                '"' if !self.lx.skip_quotes => {
                    let s = self.double_quote()?;
                    result.push_str(&s);
                    words.add_raw_string(&s);
                }
                '$' => {
                    let s = self.dollar()?;
                    self.fits(result.len() + s.len())?;
                    result.push_str(&s);
                    words.add_string(&s);
                }
                '<' if stop.is_none() && self.peek2() == Some('<') => {
                    // A heredoc marker and the blanks after it stay together in one word.
                    for _ in 0..2 {
                        self.next();
                        result.push('<');
                        words.add_raw_char('<');
                    }
                    while let Some(c @ (' ' | '\t')) = self.peek() {
                        self.next();
                        result.push(c);
                        words.add_raw_char(c);
                    }
                }
                _ => {
                    self.next();
                    if ch == self.lx.escape {
                        if raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        match self.next() {
                            None => break,
                            Some(c) => {
                                words.add_raw_char(c);
                                result.push(c);
                            }
                        }
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        if let Some(stop) = stop {
            return err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        Ok((result, words.finish()))
    }

    /// Whether text of `len` bytes stays within the limit; checked before it is built.
    fn fits(&self, len: usize) -> Result<(), ExpandError> {
        if len > self.limit {
            return Err(too_large());
        }
        Ok(())
    }

    fn single_quote(&mut self) -> Result<String, ExpandError> {
        let mut result = String::new();
        let open = self.next();
        if self.lx.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => {
                    return err(
                        "unexpected end of statement while looking for matching single-quote",
                    );
                }
                Some('\'') => {
                    if self.lx.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, ExpandError> {
        let mut result = String::new();
        let open = self.next();
        if self.lx.raw_quotes {
            result.extend(open);
        }
        loop {
            let Some(ch) = self.peek() else {
                return err("unexpected end of statement while looking for matching double-quote");
            };
            match ch {
                '"' => {
                    self.next();
                    if self.lx.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                '$' => {
                    let v = self.dollar()?;
                    self.fits(result.len() + v.len())?;
                    result.push_str(&v);
                }
                _ => {
                    self.next();
                    if ch == self.lx.escape {
                        if self.lx.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.lx.escape => {
                                self.next();
                                result.push(c);
                            }
                            Some(_) => {
                                if !self.lx.raw_escapes {
                                    result.push(ch);
                                }
                            }
                        }
                    } else {
                        result.push(ch);
                    }
                }
            }
        }
    }

    /// Reads a variable name; names are plain runs of the source, so this borrows it.
    fn name(&mut self) -> &'a str {
        let src: &'a str = self.src;
        let start = self.pos;
        while let Some(ch) = self.peek() {
            let empty = self.pos == start;
            if empty && is_decimal_digit(ch) {
                while self.peek().is_some_and(is_decimal_digit) {
                    self.next();
                }
                break;
            }
            if empty && is_special_param(ch) {
                self.next();
                break;
            }
            if !ch.is_alphabetic() && !is_decimal_digit(ch) && ch != '_' {
                break;
            }
            self.next();
        }
        &src[start..self.pos]
    }

    fn dollar(&mut self) -> Result<Cow<'a, str>, ExpandError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err("substitutions nested too deeply");
        }
        let r = self.dollar_inner();
        self.depth -= 1;
        r
    }

    fn dollar_inner(&mut self) -> Result<Cow<'a, str>, ExpandError> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok(Cow::Borrowed("$"));
            }
            return Ok(match self.lookup(name) {
                Some(v) => Cow::Borrowed(v),
                None if self.lx.skip_unset => Cow::Owned(format!("${name}")),
                None => Cow::Borrowed(""),
            });
        }
        self.next();
        match self.peek() {
            None => return err("syntax error: missing '}'"),
            Some('{' | '}' | ':') => return err("syntax error: bad substitution"),
            _ => {}
        }
        let name = self.name();
        let Some(ch) = self.next() else {
            return err("syntax error: missing '}'");
        };
        if ch == '}' {
            return Ok(match self.lookup(name) {
                Some(v) => Cow::Borrowed(v),
                None if self.lx.skip_unset => Cow::Owned(format!("${{{name}}}")),
                None => Cow::Borrowed(""),
            });
        }
        self.modified(name, ch).map(Cow::Owned)
    }

    /// `${name<op>…}` after `name` and the first operator character `ch` have been read.
    fn modified(&mut self, name: &'a str, mut ch: char) -> Result<String, ExpandError> {
        let mut modifier = String::from(ch);
        match ch {
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let null_is_unset = ch == ':';
                if null_is_unset {
                    match self.next() {
                        Some(c) => {
                            ch = c;
                            modifier.push(c);
                        }
                        None => return err("syntax error: missing '}'"),
                    }
                }
                let raw = ch == '#' || ch == '%';
                if null_is_unset && raw {
                    return err(format!("unsupported modifier ({modifier}) in substitution"));
                }
                let (word, _) = self.stop_on(Some('}'), raw).map_err(|e| {
                    if self.peek().is_none() {
                        ExpandError {
                            message: "syntax error: missing '}'".into(),
                        }
                    } else {
                        e
                    }
                })?;
                let value = self.lookup(name);
                if value.is_none() && self.lx.skip_unset {
                    return Ok(format!("${{{name}{modifier}{word}}}"));
                }
                let empty = value.is_none_or(|v| null_is_unset && v.is_empty());
                match ch {
                    '-' => Ok(if empty {
                        word
                    } else {
                        value.unwrap_or_default().to_owned()
                    }),
                    '+' => Ok(if empty { String::new() } else { word }),
                    '?' => match value {
                        None => err(format!(
                            "{name}: {}",
                            if word.is_empty() {
                                "is not allowed to be unset"
                            } else {
                                &word
                            }
                        )),
                        Some(v) if null_is_unset && v.is_empty() => err(format!(
                            "{name}: {}",
                            if word.is_empty() {
                                "is not allowed to be empty"
                            } else {
                                &word
                            }
                        )),
                        Some(v) => Ok(v.to_owned()),
                    },
                    '#' | '%' => {
                        let value = value.unwrap_or_default();
                        let (greedy, pattern) = match word.strip_prefix(ch) {
                            Some(rest) => (true, rest),
                            None => (false, word.as_str()),
                        };
                        let pat = Pattern::compile(pattern)?;
                        Ok(if ch == '#' {
                            pat.trim_prefix(value, greedy)
                        } else {
                            pat.trim_suffix(value, greedy)
                        })
                    }
                    _ => err(format!("unsupported modifier ({modifier}) in substitution")),
                }
            }
            '/' => {
                let all = self.peek() == Some('/');
                if all {
                    self.next();
                }
                let (pattern, _) = self.stop_on(Some('/'), true).map_err(|e| {
                    if self.peek().is_none() {
                        ExpandError {
                            message: "syntax error: missing '/' in ${}".into(),
                        }
                    } else {
                        e
                    }
                })?;
                let (replacement, _) = self.stop_on(Some('}'), true).map_err(|e| {
                    if self.peek().is_none() {
                        ExpandError {
                            message: "syntax error: missing '}'".into(),
                        }
                    } else {
                        e
                    }
                })?;
                let value = self.lookup(name);
                let Some(value) = value else {
                    if self.lx.skip_unset {
                        return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                    }
                    return Ok(String::new());
                };
                let pat = Pattern::compile(&pattern)?;
                pat.replace(value, &replacement, all, self.limit)
            }
            _ => err(format!("unsupported modifier ({modifier}) in substitution")),
        }
    }
}

/// The variable names `text` references (`$NAME`, `${NAME…}`), found by a quick scan that skips
/// escaped characters and single-quoted text; used by lint checks, not for expansion.
pub(crate) fn referenced_names(text: &str, escape: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut it = text.char_indices().peekable();
    let mut in_single = false;
    while let Some((i, c)) = it.next() {
        if in_single {
            in_single = c != '\'';
            continue;
        }
        match c {
            '\'' => in_single = true,
            c if c == escape => {
                it.next();
            }
            '$' => {
                let start = match it.peek() {
                    Some(&(j, '{')) => {
                        it.next();
                        j + 1
                    }
                    _ => i + 1,
                };
                let len = text[start..]
                    .find(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
                    .unwrap_or(text.len() - start);
                if len > 0 {
                    out.push(&text[start..start + len]);
                }
            }
            _ => {}
        }
    }
    out
}

/// Decimal digits of any script; names are made of letters, these digits and `_`.
fn is_decimal_digit(ch: char) -> bool {
    ch.is_ascii_digit() || (!ch.is_ascii() && ch.is_numeric())
}

/// One element of a shell pattern as used by `${v#p}`, `${v%p}` and `${v/p/r}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Any,
    One,
    Lit(char),
}

/// A compiled shell pattern: `*`, `?` and backslash escapes.
#[derive(Debug, Clone)]
struct Pattern {
    toks: Vec<Tok>,
}

impl Pattern {
    fn compile(src: &str) -> Result<Pattern, ExpandError> {
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

    fn trim_prefix(&self, value: &str, greedy: bool) -> String {
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

    fn trim_suffix(&self, value: &str, greedy: bool) -> String {
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
    fn replace(
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn word(src: &str, e: &[(&str, &str)]) -> Result<String, ExpandError> {
        Lexer::new('\\').expand_word(src, &env(e))
    }

    #[test]
    fn prefix_and_suffix_removal() {
        assert_eq!(word("${FOO#*x*y}", &[("FOO", "xxyy")]).as_deref(), Ok("y"));
        assert_eq!(word("${FOO##*x*y}", &[("FOO", "xxyy")]).as_deref(), Ok(""));
        assert_eq!(
            word("${FOO%%\\**}", &[("FOO", "xx**")]).as_deref(),
            Ok("xx")
        );
        assert_eq!(word("${FOO%.*}", &[("FOO", "a.b.c")]).as_deref(), Ok("a.b"));
        assert_eq!(word("${FOO%%.*}", &[("FOO", "a.b.c")]).as_deref(), Ok("a"));
        assert!(word("${FOO:#x}", &[("FOO", "a")]).is_err());
        assert!(word("${FOO#\\x}", &[("FOO", "a")]).is_err());
    }

    #[test]
    fn replacement_forms() {
        assert_eq!(word("${FOO/a/b}", &[("FOO", "aaa")]).as_deref(), Ok("baa"));
        assert_eq!(word("${FOO//a/b}", &[("FOO", "aaa")]).as_deref(), Ok("bbb"));
        assert_eq!(
            word("${FOO/$NEEDLE/.}", &[("FOO", "a*/b"), ("NEEDLE", "\\*/")]).as_deref(),
            Ok("a.b")
        );
        assert_eq!(
            word("${FOO//\\//\\/}", &[("FOO", "a/b/c")]).as_deref(),
            Ok("a\\/b\\/c")
        );
        assert!(word("${FOO=aaa}", &[]).is_err());
        assert!(word("${FOO//}", &[]).is_err());
        assert!(word("${FOO//ww}", &[]).is_err());
    }

    #[test]
    fn costly_replacements_are_bounded() {
        let long = "ab".to_owned() + &"a".repeat(60_000);
        let r = word("${V//a*b/x}", &[("V", &long)]).unwrap();
        assert_eq!(&r[..2], "xa");
        assert_eq!(
            word("${V//*c/x}", &[("V", &long)]).unwrap().len(),
            long.len()
        );
    }

    #[test]
    fn error_message_form() {
        let e = word("${X:?message here$ARG}", &[("ARG", "x")]).unwrap_err();
        assert!(e.message.ends_with("X: message herex"), "{}", e.message);
    }

    #[test]
    fn records_matched_and_unmatched_names() {
        let x = Lexer::default()
            .process("$A ${B:-c}", &env(&[("A", "1")]))
            .unwrap();
        assert!(x.matched.contains("A"));
        assert!(x.unmatched.contains("B"));
    }

    #[test]
    fn substitution_may_add_at_most_max_expansion_bytes() {
        let half = "x".repeat(MAX_EXPANSION / 2);
        assert_eq!(word("$H$H", &[("H", &half)]).unwrap().len(), MAX_EXPANSION);
        let e = word("a$H$H", &[("H", &half)]).unwrap();
        assert_eq!(
            e.len(),
            MAX_EXPANSION + 1,
            "the word's own text does not count"
        );
        for src in ["$H$H$H", "\"$H$H$H\"", "${U:-$H$H$H}"] {
            let e = word(src, &[("H", &half)]).unwrap_err();
            assert!(
                e.message.contains("more than 1048576 bytes"),
                "{src}: {}",
                e.message
            );
        }
        let e = word("${S//?/$H}", &[("S", "abc"), ("H", &half)]).unwrap_err();
        assert!(
            e.message.contains("more than 1048576 bytes"),
            "{}",
            e.message
        );
        // Text that is long to begin with is not refused for its own length.
        let long = "y".repeat(2 * MAX_EXPANSION);
        assert_eq!(
            word(&format!("{long}$V"), &[("V", "z")]).unwrap().len(),
            long.len() + 1
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let src = "${a:-".repeat(10_000);
        assert!(word(&src, &[]).is_err());
    }
}
