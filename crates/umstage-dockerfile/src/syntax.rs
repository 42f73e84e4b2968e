//! The syntax tree: directives, continuations, heredocs, flags and argument shapes, as BuildKit's parser builds them.

use crate::error::{Error, ErrorKind};
use crate::json::{JsonArgs, parse_json_args};
use crate::shell::{EmptyEnv, Lexer};
use crate::span::{Pos, Span};

/// Longest physical line BuildKit's scanner accepts.
pub const MAX_LINE_LEN: usize = 65_535;

/// How deep `ONBUILD ONBUILD …` may nest in the tree before it is a syntax error.
const MAX_ONBUILD_DEPTH: usize = 16;

/// Parser directives from the top of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directives {
    /// `# syntax=` value, if given.
    pub syntax: Option<String>,
    /// The escape token: `\` unless `# escape=`` ` `` was given.
    pub escape: char,
    /// `# check=` value, if given.
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            syntax: None,
            escape: '\\',
            check: None,
        }
    }
}

/// A here-document attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The terminator word with quotes removed, e.g. `EOF`.
    pub name: String,
    /// The body lines, each with its newline.
    pub content: String,
    /// Whether the body undergoes variable expansion (no part of the name was quoted).
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the body and the terminator.
    pub chomp: bool,
    /// The file descriptor before `<<` (`3<<EOF`), 0 if none.
    pub fd: u32,
}

impl Heredoc {
    /// The body as the command sees it: with `<<-`, leading tabs removed from every line.
    pub fn body(&self) -> String {
        if self.chomp {
            chomp_heredoc(&self.content)
        } else {
            self.content.clone()
        }
    }
}

/// Removes leading tabs from every line, as `<<-` asks.
pub fn chomp_heredoc(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

/// A non-fatal finding from the parser, such as an empty continuation line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// What was found.
    pub message: String,
    /// Where.
    pub span: Span,
}

/// One instruction as written: keyword, flags, arguments in BuildKit's node shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The keyword as written (`FROM`, `from`, …).
    pub keyword: String,
    /// The `--flag` words, quotes and escapes removed.
    pub flags: Vec<String>,
    /// The argument values (for ENV and LABEL: key, value, separator triples).
    pub args: Vec<String>,
    /// For ONBUILD: the trigger instruction.
    pub child: Option<Box<Node>>,
    /// Whether the arguments were given in JSON (exec) form.
    pub json: bool,
    /// Here-documents, in the order they appear on the line.
    pub heredocs: Vec<Heredoc>,
    /// The logical line after joining continuations.
    pub original: String,
    /// Where the instruction is: from its keyword to the end of its last line.
    pub span: Span,
    /// The comment lines right before the instruction.
    pub comments: Vec<String>,
}

/// A parsed file: directives, instructions and parser warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ast {
    /// The parser directives.
    pub directives: Directives,
    /// The instructions, in order.
    pub nodes: Vec<Node>,
    /// Non-fatal findings.
    pub warnings: Vec<Warning>,
}

impl Ast {
    /// The tree in BuildKit's dump format (no trailing newline).
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            out.push('(');
            n.dump_into(&mut out);
            out.push_str(")\n");
        }
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out
    }
}

impl Node {
    /// This node in BuildKit's dump format, e.g. `run "echo hi"`.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        self.dump_into(&mut out);
        out
    }

    fn dump_into(&self, out: &mut String) {
        out.push_str(&self.keyword.to_lowercase());
        if !self.flags.is_empty() {
            out.push_str(" [");
            for (i, f) in self.flags.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                go_quote_into(f, out);
            }
            out.push(']');
        }
        if let Some(child) = &self.child {
            out.push_str(" (");
            child.dump_into(out);
            out.push(')');
        }
        for a in &self.args {
            out.push(' ');
            go_quote_into(a, out);
        }
    }
}

/// `s` quoted the way Go's `strconv.Quote` does (BuildKit's `%q`).
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    go_quote_into(s, &mut out);
    out
}

/// Appends `s` quoted the way Go's `strconv.Quote` does.
pub fn go_quote_into(s: &str, out: &mut String) {
    use std::fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            ' ' => out.push(' '),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
}

/// Go's `unicode.IsPrint` minus the ASCII space: letters, marks, numbers, punctuation, symbols.
fn is_go_printable(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_graphic();
    }
    // Not printable: other (C*) and separators (Z*). Rust's std has no general-category API;
    // whitespace, control chars and the common format/private/unassigned ranges cover them.
    if c.is_whitespace() || c.is_control() {
        return false;
    }
    let u = c as u32;
    !matches!(u,
        0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E
        | 0x2060..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB | 0xD800..=0xF8FF | 0xE0000..=0xE007F
        | 0xF0000..=0x10FFFF | 0xFFFE | 0xFFFF | 0xFDD0..=0xFDEF)
}

fn is_ascii_blank(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(raw: &str) -> bool {
    trim_newline(raw).trim_start().starts_with('#')
}

/// Recognises parser directives until the first line that is not one.
struct DirectiveParser {
    done: bool,
    lines_seen: usize,
    directives: Directives,
    seen: Vec<&'static str>,
}

impl DirectiveParser {
    fn parse_line(&mut self, line: &str, file: &str, lineno: usize) -> Result<(), Error> {
        self.lines_seen += 1;
        if self.done {
            return Ok(());
        }
        if self.lines_seen == 1 && line.starts_with("#!") {
            return Ok(());
        }
        let Some((name, value)) = split_directive(line) else {
            self.done = true;
            return Ok(());
        };
        let key: &'static str = match name.to_ascii_lowercase().as_str() {
            "syntax" => "syntax",
            "escape" => "escape",
            "check" => "check",
            _ => {
                self.done = true;
                return Ok(());
            }
        };
        let span = Span::on_line(lineno, 1, line.chars().count());
        if self.seen.contains(&key) {
            return Err(Error::new(
                ErrorKind::Syntax,
                file,
                span,
                format!("only one {key} parser directive can be used"),
            ));
        }
        self.seen.push(key);
        match key {
            "escape" => match value {
                "\\" => self.directives.escape = '\\',
                "`" => self.directives.escape = '`',
                _ => {
                    return Err(Error::new(
                        ErrorKind::Syntax,
                        file,
                        span,
                        format!("invalid escape token '{value}' does not match ` or \\"),
                    ));
                }
            },
            "syntax" => self.directives.syntax = Some(value.to_owned()),
            _ => self.directives.check = Some(value.to_owned()),
        }
        Ok(())
    }
}

/// Splits `#  name = value` into name and value (trailing blanks dropped), or `None`.
fn split_directive(line: &str) -> Option<(&str, &str)> {
    let is_re_space = |c: char| matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ');
    let rest = line.strip_prefix('#')?.trim_start_matches(is_re_space);
    let name_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(rest.len(), |(i, _)| i);
    if name_len == 0 {
        return None;
    }
    let (name, rest) = rest.split_at(name_len);
    let rest = rest.trim_start_matches(is_re_space).strip_prefix('=')?;
    let value = rest.trim_matches(is_re_space);
    if value.is_empty() {
        return None;
    }
    Some((name, value))
}

/// Strips a trailing escape token (plus blanks) that continues the line; returns the rest and whether the instruction ends here.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    let Some(before) = t.strip_suffix(escape) else {
        return (line, true);
    };
    if before.is_empty() {
        return ("", false);
    }
    if before.ends_with(escape) {
        return (line, true);
    }
    (before, false)
}

/// Parses `text` (the contents of `file`) into BuildKit's syntax tree.
pub fn parse_ast(file: &str, text: &str) -> Result<Ast, Error> {
    parse_ast_inner(file, text).map_err(|e| e.with_source(text))
}

fn parse_ast_inner(file: &str, text: &str) -> Result<Ast, Error> {
    let body = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = body.split_inclusive('\n').collect();
    for (i, l) in lines.iter().enumerate() {
        if trim_newline(l).len() > MAX_LINE_LEN {
            return Err(Error::new(
                ErrorKind::Syntax,
                file,
                Span::on_line(i + 1, 1, 1),
                format!("dockerfile line greater than max allowed size of {MAX_LINE_LEN}"),
            ));
        }
    }
    let mut dp = DirectiveParser {
        done: false,
        lines_seen: 0,
        directives: Directives::default(),
        seen: Vec::new(),
    };
    // At most one instruction per line; sizing once avoids re-copying large node vectors.
    let mut nodes = Vec::with_capacity(lines.len().min(1 << 16));
    let mut warnings = Vec::new();
    let mut comments: Vec<String> = Vec::new();
    let mut next = 0usize;
    let mut current = 0usize;
    while next < lines.len() {
        let raw = lines[next];
        next += 1;
        let line = trim_newline(raw);
        let stripped = line.trim_start();
        if let Some(comment) = stripped.strip_prefix('#') {
            let c = comment.trim();
            if c.is_empty() {
                comments.clear();
            } else {
                comments.push(c.to_owned());
            }
        }
        dp.parse_line(stripped, file, current + 1)?;
        current += 1;
        let start_line = current;
        let start_col = line.chars().count() - stripped.chars().count() + 1;
        let escape = dp.directives.escape;
        let content = if stripped.starts_with('#') {
            ""
        } else {
            stripped
        };
        let (first, mut ended) = trim_continuation(content, escape);
        if ended && first.is_empty() {
            continue;
        }
        let mut joined = first.to_owned();
        let mut empty_continuation = false;
        let mut last_len = line.chars().count();
        while !ended && next < lines.len() {
            let raw = lines[next];
            next += 1;
            let line = trim_newline(raw);
            dp.parse_line(line, file, current + 1)?;
            current += 1;
            last_len = line.chars().count();
            if is_comment(raw) {
                continue;
            }
            if line.trim_start().is_empty() {
                empty_continuation = true;
                continue;
            }
            let (t, e) = trim_continuation(line, escape);
            ended = e;
            joined.push_str(t);
        }
        if empty_continuation {
            warnings.push(Warning {
                message: format!("Empty continuation line found in: {joined}"),
                span: Span::new(
                    Pos::new(start_line, start_col),
                    Pos::new(current, last_len + 1),
                ),
            });
        }
        let here = |end_line: usize, end_col: usize| {
            Span::new(Pos::new(start_line, start_col), Pos::new(end_line, end_col))
        };
        let at_line = |m: SyntaxError| {
            Error::new(
                ErrorKind::Syntax,
                file,
                here(current, last_len + 1),
                m.to_string(),
            )
        };
        let mut node = node_from_line(&joined, escape, 0).map_err(at_line)?;
        if can_contain_heredoc(&node) && joined.contains("<<") {
            let docs = heredocs_from_line(&joined).map_err(at_line)?;
            for mut doc in docs {
                let mut terminated = false;
                while next < lines.len() {
                    let raw = lines[next];
                    next += 1;
                    current += 1;
                    let mut candidate = trim_newline(raw);
                    last_len = candidate.chars().count();
                    if doc.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == doc.name {
                        terminated = true;
                        break;
                    }
                    doc.content.push_str(raw);
                }
                if !terminated {
                    return Err(Error::new(
                        ErrorKind::Syntax,
                        file,
                        here(current, last_len + 1),
                        "unterminated heredoc",
                    ));
                }
                node.heredocs.push(doc);
            }
        }
        node.span = here(current, last_len + 1);
        node.comments = std::mem::take(&mut comments);
        node.original = joined;
        nodes.push(node);
    }
    if nodes.is_empty() {
        return Err(Error::new(
            ErrorKind::Structure,
            file,
            Span::on_line(current.max(1), 1, 1),
            "file with no instructions",
        ));
    }
    Ok(Ast {
        directives: dp.directives,
        nodes,
        warnings,
    })
}

fn can_contain_heredoc(node: &Node) -> bool {
    let n = match &node.child {
        Some(c) if node.keyword.eq_ignore_ascii_case("onbuild") => c,
        _ => node,
    };
    let mut buf = [0u8; 16];
    matches!(keyword_lower(&n.keyword, &mut buf), "run" | "copy" | "add") && !n.json
}

/// A line that cannot be read as an instruction, as BuildKit's parser words it; the
/// parser places it at its line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SyntaxError(String);

impl From<String> for SyntaxError {
    fn from(message: String) -> Self {
        SyntaxError(message)
    }
}

impl From<&str> for SyntaxError {
    fn from(message: &str) -> Self {
        SyntaxError(message.to_owned())
    }
}

/// Finds the heredoc words on an instruction line.
fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, SyntaxError> {
    let lexer = Lexer {
        raw_quotes: true,
        raw_escapes: true,
        ..Lexer::new('\\')
    };
    let Ok(words) = lexer.expand_words(line, &EmptyEnv) else {
        return Ok(Vec::new());
    };
    let mut docs = Vec::new();
    for w in words {
        if let Some(d) = parse_heredoc(&w)? {
            docs.push(d);
        }
    }
    Ok(docs)
}

/// Reads a word of the form `[fd]<<[-]NAME` as a heredoc (with an empty body), or `None`.
pub fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, SyntaxError> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let Some(rest) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let fd = word[..digits].parse::<u32>().unwrap_or(0);
    let lexer = Lexer {
        skip_unset: true,
        ..Lexer::new('\\')
    };
    let words = lexer.expand_words(rest, &EmptyEnv).map_err(|e| e.message)?;
    if words.len() != 1 {
        return Ok(None);
    }
    let raw = Lexer {
        raw_quotes: true,
        ..lexer
    }
    .expand_words(rest, &EmptyEnv)
    .map_err(|e| e.message)?;
    if raw.len() != 1 {
        return Err(SyntaxError::from(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        )));
    }
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    let name = words.into_iter().next().unwrap_or_default();
    let expand = quotes(&name) == quotes(&raw[0]);
    Ok(Some(Heredoc {
        name,
        content: String::new(),
        expand,
        chomp,
        fd,
    }))
}

/// Splits a logical line into a node: keyword, flags, and arguments shaped per keyword.
/// The caller fills in `original`, `span` and `comments`.
pub(crate) fn node_from_line(line: &str, escape: char, depth: usize) -> Result<Node, SyntaxError> {
    let trimmed = line.trim();
    let (keyword, rest) = match trimmed.find(is_ascii_blank) {
        Some(i) => (
            &trimmed[..i],
            trimmed[i..].trim_start_matches(is_ascii_blank),
        ),
        None => (trimmed, ""),
    };
    let (args, flags) = extract_flags(rest, escape);
    let args = args.trim();
    let mut node = Node {
        keyword: keyword.to_owned(),
        flags,
        args: Vec::new(),
        child: None,
        json: false,
        heredocs: Vec::new(),
        original: String::new(),
        span: Span::default(),
        comments: Vec::new(),
    };
    let mut buf = [0u8; 16];
    match keyword_lower(keyword, &mut buf) {
        "from" | "expose" => node.args = split_blank(args),
        "add" | "copy" | "volume" => match json_or(args)? {
            Some(v) => {
                node.args = v;
                node.json = true;
            }
            None => node.args = split_blank(args),
        },
        "run" | "cmd" | "entrypoint" | "shell" => {
            if !args.is_empty() {
                match json_or(args)? {
                    Some(v) => {
                        node.args = v;
                        node.json = true;
                    }
                    None => node.args = vec![args.to_owned()],
                }
            }
        }
        "env" | "label" => node.args = name_values(args, keyword, escape)?,
        "arg" => node.args = words(args, escape).into_iter().map(str::to_owned).collect(),
        "maintainer" | "user" | "workdir" | "stopsignal" => {
            if !args.is_empty() {
                node.args = vec![args.to_owned()];
            }
        }
        "healthcheck" => {
            let sep = args.find(char::is_whitespace).unwrap_or(args.len());
            if sep > 0 {
                let cmd = args[sep..].trim_start();
                node.args.push(args[..sep].to_owned());
                if !cmd.is_empty() {
                    match json_or(cmd)? {
                        Some(v) => {
                            node.args.extend(v);
                            node.json = true;
                        }
                        None => node.args.push(cmd.to_owned()),
                    }
                }
            }
        }
        "onbuild" => {
            if !args.is_empty() {
                if depth >= MAX_ONBUILD_DEPTH {
                    return Err("ONBUILD triggers nested too deeply".into());
                }
                let mut child = node_from_line(args, escape, depth + 1)?;
                child.original = args.to_owned();
                node.child = Some(Box::new(child));
            }
        }
        _ => node.args = vec![String::new()],
    }
    Ok(node)
}

/// `keyword` in ASCII lower case, written into `buf`; empty if it is too long to be a known keyword.
pub(crate) fn keyword_lower<'a>(keyword: &str, buf: &'a mut [u8; 16]) -> &'a str {
    let n = keyword.len();
    if n > buf.len() || !keyword.is_ascii() {
        return "";
    }
    for (d, s) in buf.iter_mut().zip(keyword.bytes()) {
        *d = s.to_ascii_lowercase();
    }
    std::str::from_utf8(&buf[..n]).unwrap_or("")
}

fn json_or(args: &str) -> Result<Option<Vec<String>>, SyntaxError> {
    match parse_json_args(args.trim_start()) {
        JsonArgs::Strings(v) => Ok(Some(v)),
        JsonArgs::NotStringArray => {
            Err("dockerfile: JSON arguments must be an array of strings".into())
        }
        JsonArgs::NotJson => Ok(None),
    }
}

fn split_blank(s: &str) -> Vec<String> {
    s.split(is_ascii_blank)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Pulls the leading `--flag` words off `line`; returns the remaining text and the flags.
fn extract_flags(line: &str, escape: char) -> (&str, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let mut flags = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut blank_ok = false;
    let mut it = line.char_indices().peekable();
    while let Some((pos, ch)) = it.next() {
        match phase {
            Phase::Spaces => {
                if ch.is_whitespace() {
                    continue;
                }
                if !line[pos..].starts_with("--") {
                    return (&line[pos..], flags);
                }
                phase = Phase::Word;
                word.push(ch);
            }
            Phase::Word => {
                if ch.is_whitespace() {
                    phase = Phase::Spaces;
                    if word == "--" {
                        return (&line[pos..], flags);
                    }
                    if blank_ok || !word.is_empty() {
                        flags.push(std::mem::take(&mut word));
                    }
                    word.clear();
                    blank_ok = false;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    phase = Phase::Quote(ch);
                    blank_ok = true;
                    continue;
                }
                if ch == escape {
                    match it.next() {
                        Some((_, c)) => word.push(c),
                        None => continue,
                    }
                    continue;
                }
                word.push(ch);
            }
            Phase::Quote(q) => {
                if ch == q {
                    phase = Phase::Word;
                    continue;
                }
                if ch == escape {
                    match it.next() {
                        Some((_, c)) => word.push(c),
                        None => {
                            phase = Phase::Word;
                            continue;
                        }
                    }
                    continue;
                }
                word.push(ch);
            }
        }
    }
    if phase != Phase::Spaces && word != "--" && (blank_ok || !word.is_empty()) {
        flags.push(word);
    }
    ("", flags)
}

/// Cuts `rest` at unquoted whitespace, keeping quotes and escapes in the words (ENV, LABEL, ARG).
/// Words are runs of the source (only a dangling escape token at the very end is left out).
pub(crate) fn words(rest: &str, escape: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut blank_ok = false;
    let mut quote: Option<char> = None;
    let mut end = rest.len();
    let mut it = rest.char_indices();
    while let Some((i, ch)) = it.next() {
        let Some(word_start) = start else {
            if ch.is_whitespace() {
                continue;
            }
            start = Some(i);
            if ch == '\'' || ch == '"' {
                quote = Some(ch);
                blank_ok = true;
            } else if ch == escape && it.next().is_none() {
                end = i;
            }
            continue;
        };
        match quote {
            None => {
                if ch.is_whitespace() {
                    if blank_ok || i > word_start {
                        out.push(&rest[word_start..i]);
                    }
                    start = None;
                    blank_ok = false;
                } else if ch == '\'' || ch == '"' {
                    quote = Some(ch);
                    blank_ok = true;
                } else if ch == escape && it.next().is_none() {
                    end = i;
                }
            }
            Some(q) => {
                if ch == q {
                    quote = None;
                } else if ch == escape && q != '\'' && it.next().is_none() {
                    end = i;
                }
            }
        }
    }
    if let Some(word_start) = start
        && (blank_ok || end > word_start)
    {
        out.push(&rest[word_start..end]);
    }
    out
}

fn name_values(rest: &str, keyword: &str, escape: char) -> Result<Vec<String>, SyntaxError> {
    let ws = words(rest, escape);
    let Some(first) = ws.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let Some(i) = rest.find(is_ascii_blank) else {
            return Err(SyntaxError::from(format!(
                "{} must have two arguments",
                keyword.to_uppercase()
            )));
        };
        let value = rest[i..].trim_start_matches(is_ascii_blank);
        return Ok(vec![rest[..i].to_owned(), value.to_owned(), String::new()]);
    }
    let mut out = Vec::with_capacity(ws.len() * 3);
    for w in ws {
        let Some((k, v)) = w.split_once('=') else {
            return Err(SyntaxError::from(format!(
                "Syntax error - can't find = in \"{w}\". Must be of the form: name=value"
            )));
        };
        out.push(k.to_owned());
        out.push(v.to_owned());
        out.push("=".to_owned());
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ast(src: &str) -> Ast {
        parse_ast("Dockerfile", src).expect("parses")
    }

    #[test]
    fn words_keep_quotes_and_escapes() {
        assert_eq!(words("foo bar", '\\'), ["foo", "bar"]);
        assert_eq!(words("foo\\ bar", '\\'), ["foo\\ bar"]);
        assert_eq!(
            words("foo bar 'abc xyz'", '\\'),
            ["foo", "bar", "'abc xyz'"]
        );
        assert_eq!(
            words("foo bar \"abc xyz\"", '\\'),
            ["foo", "bar", "\"abc xyz\""]
        );
        assert_eq!(words("àöû", '\\'), ["àöû"]);
        assert_eq!(words("a\\", '\\'), ["a"]);
        assert_eq!(words("\"ab\\", '\\'), ["\"ab"]);
        assert_eq!(words("x \\", '\\'), ["x"]);
        assert_eq!(words("'' \"\"", '\\'), ["''", "\"\""]);
        assert_eq!(words("a='b \\' c'", '\\'), ["a='b \\'", "c'"]);
        assert_eq!(words("k=\"v \\\" w\" z", '\\'), ["k=\"v \\\" w\"", "z"]);
    }

    #[test]
    fn empty_continuation_warnings() {
        let a = ast(
            "FROM x\nRUN something \\\n\n    following \\\n\n    more\nRUN another \\\n\n    thing\nRUN non-indented \\\n# comment\n\\\n  done\n",
        );
        assert_eq!(a.warnings.len(), 2);
        assert!(
            a.warnings[0].message.starts_with(
                "Empty continuation line found in: RUN something     following     more"
            )
        );
    }

    #[test]
    fn heredoc_extraction() {
        let a = ast(
            "FROM x\nRUN <<EOF\nEOF\nRUN 3<<EOF2\nhi\nEOF2\nRUN \"<<NOHEREDOC\"\nUSER <<X\nCOPY <<FILE1 <<FILE2 /dest\ncontent 1\nFILE1\n#content 2\nFILE2\nRUN <<-'EOF'\n\tx\n\tEOF\nRUN [\"<<EOF\"]\nRUN << EOF > foo\nbody\nEOF\n",
        );
        let n = &a.nodes;
        assert_eq!(n[1].heredocs[0].content, "");
        assert!(n[1].heredocs[0].expand);
        assert_eq!(n[2].heredocs[0].fd, 3);
        assert!(n[3].heredocs.is_empty());
        assert!(n[4].heredocs.is_empty());
        assert_eq!(n[5].heredocs.len(), 2);
        assert_eq!(n[5].heredocs[1].content, "#content 2\n");
        assert!(n[6].heredocs[0].chomp && !n[6].heredocs[0].expand);
        assert_eq!(n[6].heredocs[0].content, "\tx\n");
        assert!(n[7].heredocs.is_empty());
        assert_eq!(n[8].heredocs[0].name, "EOF");
    }

    #[test]
    fn heredoc_names() {
        let name = |w: &str| parse_heredoc(w).ok().flatten().map(|h| (h.name, h.expand));
        assert_eq!(name("<<eo'f'"), Some(("eof".into(), false)));
        assert_eq!(name("<<'e'o\\'f"), Some(("eo'f".into(), false)));
        assert_eq!(name("<<'one two'"), Some(("one two".into(), false)));
        assert_eq!(name("<<eo\\'f"), Some(("eo'f".into(), true)));
        assert_eq!(name("<<$EOF"), Some(("$EOF".into(), true)));
        assert_eq!(name("<<EO\"F\""), Some(("EOF".into(), false)));
        assert_eq!(name("<<- EOF"), Some(("EOF".into(), true)));
        for bad in ["<<'EOF", "<<\"EOF", "<<EOF'", "<<EOF\""] {
            assert!(parse_heredoc(bad).is_err(), "{bad}");
        }
        for not in ["", "EOF", "<<", "<<-", "<EOF", "<<<EOF", "<<EOF sh"] {
            assert_eq!(parse_heredoc(not), Ok(None), "{not}");
        }
    }

    #[test]
    fn unterminated_heredoc_is_an_error() {
        let e = parse_ast("Dockerfile", "FROM x\nRUN <<EOF\nbody\n").unwrap_err();
        assert_eq!(e.message, "unterminated heredoc");
        assert_eq!(e.span.start.line, 2);
    }

    #[test]
    fn directives() {
        let a = ast("#!/bin/sh\n# syntax = ref // opts\n#check = skip=all\n# escape=`\nFROM x\n");
        assert_eq!(a.directives.syntax.as_deref(), Some("ref // opts"));
        assert_eq!(a.directives.check.as_deref(), Some("skip=all"));
        assert_eq!(a.directives.escape, '`');
        assert!(parse_ast("D", "# escape=x\nFROM a\n").is_err());
        assert!(parse_ast("D", "# escape=`\n# escape=`\nFROM a\n").is_err());
    }

    #[test]
    fn go_quoting() {
        let mut s = String::new();
        go_quote_into("a\"\\\t\0\u{a0}\u{7f}é☃", &mut s);
        assert_eq!(s, "\"a\\\"\\\\\\t\\x00\\u00a0\\x7fé☃\"");
    }
}
