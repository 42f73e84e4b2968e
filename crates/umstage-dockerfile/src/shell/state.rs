//! The expansion state machine: one pass over a word, quotes, `$` forms and field splitting.

use std::borrow::Cow;
use std::collections::BTreeSet;

use super::pattern::Pattern;
use super::{Env, ExpandError, Lexer, err, too_large};

/// Nesting limit for `${…}` inside `${…}`, so hostile input cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

pub(super) struct State<'a> {
    /// Whether the top level splits into fields (nested `${…}` words are never split).
    pub(super) want_words: bool,
    /// Whether to record referenced names.
    pub(super) track: bool,
    pub(super) lx: Lexer,
    pub(super) src: &'a str,
    pub(super) pos: usize,
    pub(super) env: &'a dyn Env,
    pub(super) depth: usize,
    /// The longest any text built from `src` may get: its length plus [`MAX_EXPANSION`].
    pub(super) limit: usize,
    pub(super) matched: BTreeSet<String>,
    pub(super) unmatched: BTreeSet<String>,
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
    pub(super) fn stop_on(
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

/// Decimal digits of any script; names are made of letters, these digits and `_`.
fn is_decimal_digit(ch: char) -> bool {
    ch.is_ascii_digit() || (!ch.is_ascii() && ch.is_numeric())
}
