//! `.dockerignore` matching with Docker's semantics, and which ignore file applies.

use std::borrow::Cow;
use std::fmt;

/// The ignore files to look for, best first: `<dockerfile>.dockerignore` beside the Dockerfile,
/// then `.dockerignore` at the context root. Paths are as given (the caller does the I/O).
pub fn ignore_file_candidates(dockerfile_path: &str) -> [String; 2] {
    [
        format!("{dockerfile_path}.dockerignore"),
        ".dockerignore".to_owned(),
    ]
}

/// Picks the ignore file text that applies: the Dockerfile-specific one wins over `.dockerignore`.
pub fn select_ignore_text<'a>(
    dockerfile_specific: Option<&'a str>,
    context_root: Option<&'a str>,
) -> Option<&'a str> {
    dockerfile_specific.or(context_root)
}

/// A pattern that could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: bad .dockerignore pattern {pattern:?}: {reason}")]
pub struct PatternError {
    /// 1-based line in the ignore file.
    pub line: usize,
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong.
    #[source]
    pub reason: GlobError,
}

/// What is wrong with a pattern's glob syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    /// A `!` that excludes nothing.
    #[error("illegal exclusion pattern: \"!\"")]
    LoneBang,
    /// A `[` with no `]`.
    #[error("missing closing ]")]
    UnclosedClass,
    /// A class ending in a lone `\`.
    #[error("trailing backslash in class")]
    TrailingBackslash,
    /// A `]` with no `[`.
    #[error("unexpected ]")]
    UnexpectedClose,
    /// A range whose end comes before its start, such as `[z-a]`.
    #[error("invalid character class range {lo}-{hi}")]
    ClassRange {
        /// The range's start.
        lo: char,
        /// The range's end.
        hi: char,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `*`: any run of characters except `/`.
    Star,
    /// `?`: one character except `/`.
    Question,
    /// `**` followed by more pattern: any prefix ending in `/`, or nothing.
    DirStar,
    /// `**` at the end: anything.
    AnyTail,
    /// `[...]`.
    Class {
        negated: bool,
        items: Vec<(char, char)>,
    },
}

/// How a pattern is tested against a path, cheapest form first.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    /// No wildcard: the path equals the text.
    Literal(String),
    /// `**literal`: matches paths ending in `literal` (Docker's suffix match).
    Suffix(String),
    /// Anything else: the tokens, run as a set of states over the path's characters.
    Glob(Glob),
}

/// A pattern with wildcards: the literal text a matching path starts and ends with, and the
/// tokens between them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Glob {
    prefix: String,
    middle: Vec<Tok>,
    suffix: String,
}

impl Glob {
    fn new(mut toks: Vec<Tok>) -> Self {
        let lit = |t: &Tok| match t {
            Tok::Lit(c) => Some(*c),
            _ => None,
        };
        let prefix: String = toks.iter().map_while(lit).collect();
        let mut suffix: Vec<char> = toks.iter().rev().map_while(lit).collect();
        suffix.reverse();
        // A glob has a wildcard, so the literal ends never overlap.
        toks.truncate(toks.len() - suffix.len());
        toks.drain(..prefix.chars().count());
        Glob {
            prefix,
            middle: toks,
            suffix: suffix.into_iter().collect(),
        }
    }

    /// Each literal token consumes exactly one character, so the ends match by comparison
    /// and only the middle needs the automaton.
    fn matches(&self, path: &str) -> bool {
        path.len() >= self.prefix.len() + self.suffix.len()
            && path.starts_with(self.prefix.as_str())
            && path.ends_with(self.suffix.as_str())
            && glob_matches(
                &self.middle,
                &path[self.prefix.len()..path.len() - self.suffix.len()],
            )
    }
}

/// One compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// The cleaned pattern text (without `!`).
    pub text: String,
    /// Whether it is an exception (`!pattern`).
    pub exclusion: bool,
    matcher: Matcher,
}

/// A compiled `.dockerignore`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dockerignore {
    /// The patterns, in file order.
    pub patterns: Vec<Pattern>,
}

/// Cleans a slash path like Go's `path.Clean`.
pub fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// `clean_path` of a relative path, borrowed when it is clean already (the usual case).
fn clean_relative(p: &str) -> Cow<'_, str> {
    let clean = !p.is_empty()
        && !p.starts_with('/')
        && p.split('/').all(|seg| !matches!(seg, "" | "." | ".."));
    if clean {
        Cow::Borrowed(p)
    } else {
        Cow::Owned(clean_path(p))
    }
}

impl Dockerignore {
    /// Compiles the text of an ignore file.
    pub fn parse(text: &str) -> Result<Dockerignore, PatternError> {
        let mut patterns = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            if raw.starts_with('#') {
                continue;
            }
            let mut p = raw.trim();
            if p.is_empty() {
                continue;
            }
            let exclusion = p.starts_with('!');
            if exclusion {
                p = p[1..].trim();
                // As BuildKit's pattern matcher: an exception must name something.
                if p.is_empty() {
                    return Err(PatternError {
                        line: i + 1,
                        pattern: raw.to_owned(),
                        reason: GlobError::LoneBang,
                    });
                }
            }
            let mut cleaned = if p.is_empty() {
                String::new()
            } else {
                clean_path(p)
            };
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            let matcher = compile(&cleaned).map_err(|reason| PatternError {
                line: i + 1,
                pattern: raw.to_owned(),
                reason,
            })?;
            patterns.push(Pattern {
                text: cleaned,
                exclusion,
                matcher,
            });
        }
        Ok(Dockerignore { patterns })
    }

    /// Whether `path` (relative to the context, `/`-separated) is excluded: the last matching
    /// pattern wins, and a pattern matching a parent directory matches the path too.
    pub fn is_excluded(&self, path: &str) -> bool {
        let file = clean_relative(path.trim_start_matches('/'));
        let file = file.as_ref();
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            let m = p.matches(file)
                || file
                    .match_indices('/')
                    .any(|(slash, _)| p.matches(&file[..slash]));
            if m {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// Whether some exception pattern could re-include something below the excluded directory `dir`,
    /// so a walker must descend into it rather than skip it whole.
    pub fn may_include_below(&self, dir: &str) -> bool {
        let dir = clean_path(dir.trim_start_matches('/'));
        let under = format!("{dir}/");
        self.patterns.iter().filter(|p| p.exclusion).any(|p| {
            let literal_end = p.text.find(['*', '?', '[', '\\']).unwrap_or(p.text.len());
            let prefix = &p.text[..literal_end];
            // The pattern's fixed start must be inside `dir`, or `dir` inside what it can reach.
            prefix.starts_with(&under) || under.starts_with(prefix)
        })
    }
}

impl Pattern {
    /// Whether this pattern matches `path` exactly (parents are not considered).
    pub fn matches(&self, path: &str) -> bool {
        match &self.matcher {
            Matcher::Literal(text) => path == text,
            Matcher::Suffix(suffix) => {
                path.ends_with(suffix.as_str()) || (suffix.starts_with('/') && path == &suffix[1..])
            }
            Matcher::Glob(glob) => glob.matches(path),
        }
    }
}

/// Words of state bits kept on the stack; longer patterns use the heap.
const STACK_WORDS: usize = 8;

/// Runs `toks` over `path` as a nondeterministic automaton: one bit per token position that
/// is reached, plus one per `**` whose `/`-ended prefix is being consumed. Linear in the
/// path for a given pattern, whatever its wildcards.
fn glob_matches(toks: &[Tok], path: &str) -> bool {
    let words = (toks.len() + 1).div_ceil(64);
    let mut stack = [0u64; STACK_WORDS];
    let mut heap = Vec::new();
    let bits: &mut [u64] = if 4 * words <= STACK_WORDS {
        &mut stack[..4 * words]
    } else {
        heap.resize(4 * words, 0);
        &mut heap
    };
    let (now, next) = bits.split_at_mut(2 * words);
    let (mut at, mut inside) = now.split_at_mut(words);
    let (mut next_at, mut next_inside) = next.split_at_mut(words);
    set(at, 0);
    close(toks, at, inside);
    for c in path.chars() {
        next_at.fill(0);
        next_inside.fill(0);
        let mut t = next_set(at, 0);
        while let Some(from) = t {
            let to = match toks.get(from) {
                Some(Tok::Lit(l)) => (*l == c).then_some(from + 1),
                Some(Tok::Question) => (c != '/').then_some(from + 1),
                Some(Tok::Class { negated, items }) => {
                    (items.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated)
                        .then_some(from + 1)
                }
                Some(Tok::Star) => (c != '/').then_some(from),
                Some(Tok::AnyTail) => Some(from),
                Some(Tok::DirStar) | None => None,
            };
            if let Some(to) = to {
                set(next_at, to);
            }
            t = next_set(at, from + 1);
        }
        let mut t = next_set(inside, 0);
        while let Some(dir_star) = t {
            set(next_inside, dir_star);
            if c == '/' {
                set(next_at, dir_star + 1);
            }
            t = next_set(inside, dir_star + 1);
        }
        if next_at.iter().chain(next_inside.iter()).all(|w| *w == 0) {
            return false;
        }
        std::mem::swap(&mut at, &mut next_at);
        std::mem::swap(&mut inside, &mut next_inside);
        close(toks, at, inside);
    }
    get(at, toks.len())
}

/// Follows the moves that consume nothing: past `*`, `**` and a trailing `**`, and into a `**`'s prefix.
fn close(toks: &[Tok], at: &mut [u64], inside: &mut [u64]) {
    let mut t = next_set(at, 0);
    while let Some(from) = t {
        match toks.get(from) {
            Some(Tok::Star | Tok::AnyTail) => set(at, from + 1),
            Some(Tok::DirStar) => {
                set(at, from + 1);
                set(inside, from);
            }
            _ => {}
        }
        t = next_set(at, from + 1);
    }
}

/// The first set bit at or after `from`.
fn next_set(bits: &[u64], from: usize) -> Option<usize> {
    let mut word = from / 64;
    let mut rest = bits.get(word)? & (u64::MAX << (from % 64));
    loop {
        if rest != 0 {
            return Some(word * 64 + rest.trailing_zeros() as usize);
        }
        word += 1;
        rest = *bits.get(word)?;
    }
}

fn get(bits: &[u64], i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

fn set(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

fn compile(p: &str) -> Result<Matcher, GlobError> {
    let toks = tokenize(p)?;
    // Docker treats `**literal` (nothing else special) as a plain suffix test.
    if let Some(Tok::DirStar) = toks.first()
        && p.starts_with("**")
        && toks[1..].iter().all(|t| matches!(t, Tok::Lit(_)))
    {
        return Ok(Matcher::Suffix(p[2..].replace('\\', "")));
    }
    let literal: Option<String> = toks
        .iter()
        .map(|t| match t {
            Tok::Lit(c) => Some(*c),
            _ => None,
        })
        .collect();
    Ok(match literal {
        Some(text) => Matcher::Literal(text),
        None => Matcher::Glob(Glob::new(toks)),
    })
}

fn tokenize(p: &str) -> Result<Vec<Tok>, GlobError> {
    let chars: Vec<char> = p.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                toks.push(if i >= chars.len() {
                    Tok::AnyTail
                } else {
                    Tok::DirStar
                });
            }
            '*' => toks.push(Tok::Star),
            '?' => toks.push(Tok::Question),
            '\\' => match chars.get(i) {
                Some(&n) => {
                    i += 1;
                    toks.push(Tok::Lit(n));
                }
                None => toks.push(Tok::Lit('\\')),
            },
            '[' => {
                let mut negated = false;
                if chars.get(i) == Some(&'^') {
                    negated = true;
                    i += 1;
                }
                let mut items = Vec::new();
                let mut first = true;
                loop {
                    let Some(&c) = chars.get(i) else {
                        return Err(GlobError::UnclosedClass);
                    };
                    i += 1;
                    if c == ']' && !first {
                        break;
                    }
                    first = false;
                    let lo = if c == '\\' {
                        let e = *chars.get(i).ok_or(GlobError::TrailingBackslash)?;
                        i += 1;
                        e
                    } else {
                        c
                    };
                    let mut hi = lo;
                    if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&n| n != ']') {
                        i += 1;
                        let mut h = chars[i];
                        i += 1;
                        if h == '\\' {
                            h = *chars.get(i).ok_or(GlobError::TrailingBackslash)?;
                            i += 1;
                        }
                        hi = h;
                        if hi < lo {
                            return Err(GlobError::ClassRange { lo, hi });
                        }
                    }
                    items.push((lo, hi));
                }
                toks.push(Tok::Class { negated, items });
            }
            ']' => return Err(GlobError::UnexpectedClose),
            c => toks.push(Tok::Lit(c)),
        }
    }
    Ok(toks)
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.exclusion {
            f.write_str("!")?;
        }
        f.write_str(&self.text)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ex(rules: &str, path: &str) -> bool {
        Dockerignore::parse(rules).unwrap().is_excluded(path)
    }

    #[test]
    fn globs_and_parents() {
        assert!(ex("*.md", "README.md"));
        assert!(!ex("*.md", "docs/README.md"));
        assert!(ex("**/*.md", "docs/a/README.md"));
        assert!(ex("**/*.md", "README.md"));
        assert!(ex("docs", "docs/a/b.txt"));
        assert!(ex("docs/**", "docs/a/b.txt"));
        assert!(ex("?.txt", "a.txt"));
        assert!(!ex("?.txt", "ab.txt"));
        assert!(ex("[a-c].txt", "b.txt"));
        assert!(!ex("[^a-c].txt", "b.txt"));
        assert!(ex("**", "anything/at/all"));
        assert!(ex("a/**/b", "a/b"));
        assert!(ex("a/**/b", "a/x/y/b"));
    }

    #[test]
    fn exceptions_last_match_wins() {
        let rules = "*.md\n!README.md\n";
        assert!(ex(rules, "CHANGES.md"));
        assert!(!ex(rules, "README.md"));
        assert!(ex("!README.md\n*.md\n", "README.md"));
        assert!(!ex(
            "node_modules\n!node_modules/keep\n",
            "node_modules/keep"
        ));
        assert!(ex(
            "node_modules\n!node_modules/keep\n",
            "node_modules/other"
        ));
    }

    #[test]
    fn cleaning_comments_and_roots() {
        assert!(ex("/foo", "foo"));
        assert!(ex("./foo/../bar", "bar"));
        assert!(ex("  foo  ", "foo"));
        assert!(!ex("# foo", "# foo"));
        assert!(ex("foo//bar/", "foo/bar"));
        assert!(ex("foo", "./foo"));
    }

    #[test]
    fn which_excluded_dirs_need_a_walk() {
        let d =
            Dockerignore::parse("node_modules\n!node_modules/keep\nbuild\n!src/*.rs\n").unwrap();
        assert!(d.may_include_below("node_modules"));
        assert!(!d.may_include_below("build"));
        assert!(d.may_include_below("src"));
        let any = Dockerignore::parse("*\n!**/*.go\n").unwrap();
        assert!(any.may_include_below("vendor"));
    }

    #[test]
    fn long_and_pathological_patterns() {
        // More tokens than the stack holds state bits for.
        let long = "a*".repeat(150);
        assert!(ex(&long, &"a".repeat(150)));
        assert!(!ex(&long, &"a".repeat(149)));
        // Many stars against a near miss: linear, not exponential.
        let stars = format!("{}b", "*a".repeat(30));
        assert!(!ex(&stars, &"a".repeat(5000)));
        assert!(ex(&stars, &format!("{}b", "a".repeat(5000))));
        assert!(ex("**/x/**/y", "a/x/b/c/y"));
        assert!(!ex("**/x/**/y", "a/xb/c/y"));
    }

    /// The matching rules written as plain backtracking over the tokens, to check the
    /// automaton against.
    fn reference(toks: &[Tok], s: &[char]) -> bool {
        match toks.split_first() {
            None => s.is_empty(),
            Some((Tok::Lit(c), rest)) => s.first() == Some(c) && reference(rest, &s[1..]),
            Some((Tok::Question, rest)) => {
                s.first().is_some_and(|&c| c != '/') && reference(rest, &s[1..])
            }
            Some((Tok::Class { negated, items }, rest)) => {
                s.first()
                    .is_some_and(|&c| items.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated)
                    && reference(rest, &s[1..])
            }
            Some((Tok::Star, rest)) => {
                let run = s.iter().take_while(|&&c| c != '/').count();
                (0..=run).any(|j| reference(rest, &s[j..]))
            }
            Some((Tok::AnyTail, _)) => true,
            Some((Tok::DirStar, rest)) => {
                reference(rest, s)
                    || (0..s.len()).any(|j| s[j] == '/' && reference(rest, &s[j + 1..]))
            }
        }
    }

    #[test]
    fn the_automaton_agrees_with_backtracking() {
        let pattern_parts = ["a", "b", "/", "*", "?", "**", "**/", "[a-b]", "[^a]", "\\*"];
        let path_parts = ["a", "b", "/", "*", "c"];
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..4000 {
            let pattern: String = (0..1 + next(6))
                .map(|_| pattern_parts[next(pattern_parts.len())])
                .collect();
            let Ok(toks) = tokenize(&pattern) else {
                continue;
            };
            let Ok(matcher @ (Matcher::Glob(_) | Matcher::Literal(_))) = compile(&pattern) else {
                continue;
            };
            let pattern = Pattern {
                text: pattern,
                exclusion: false,
                matcher,
            };
            for _ in 0..8 {
                let path: String = (0..next(9))
                    .map(|_| path_parts[next(path_parts.len())])
                    .collect();
                let chars: Vec<char> = path.chars().collect();
                assert_eq!(
                    pattern.matches(&path),
                    reference(&toks, &chars),
                    "pattern {:?} path {path:?}",
                    pattern.text
                );
            }
        }
    }

    #[test]
    fn bad_patterns_and_file_choice() {
        assert!(Dockerignore::parse("[abc").is_err());
        let bare = Dockerignore::parse("*.md\n  !  \n").unwrap_err();
        assert_eq!(bare.line, 2, "{bare}");
        assert!(
            bare.to_string().contains("illegal exclusion pattern"),
            "{bare}"
        );
        assert_eq!(select_ignore_text(Some("a"), Some("b")), Some("a"));
        assert_eq!(select_ignore_text(None, Some("b")), Some("b"));
        assert_eq!(
            ignore_file_candidates("sub/Dockerfile")[0],
            "sub/Dockerfile.dockerignore"
        );
    }
}
