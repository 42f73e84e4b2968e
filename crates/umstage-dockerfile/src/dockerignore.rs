//! `.dockerignore` matching with Docker's semantics, and which ignore file applies.

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
    pub reason: String,
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

/// One compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// The cleaned pattern text (without `!`).
    pub text: String,
    /// Whether it is an exception (`!pattern`).
    pub exclusion: bool,
    toks: Vec<Tok>,
    /// `**literal`: matches paths ending in `literal` (Docker's suffix match).
    suffix: Option<String>,
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
            }
            let mut cleaned = if p.is_empty() {
                String::new()
            } else {
                clean_path(p)
            };
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            let (toks, suffix) = compile(&cleaned).map_err(|reason| PatternError {
                line: i + 1,
                pattern: raw.to_owned(),
                reason,
            })?;
            patterns.push(Pattern {
                text: cleaned,
                exclusion,
                toks,
                suffix,
            });
        }
        Ok(Dockerignore { patterns })
    }

    /// Whether `path` (relative to the context, `/`-separated) is excluded: the last matching
    /// pattern wins, and a pattern matching a parent directory matches the path too.
    pub fn is_excluded(&self, path: &str) -> bool {
        let file = clean_path(path.trim_start_matches('/'));
        let parent_dirs: Vec<&str> = match file.rfind('/') {
            Some(i) => file[..i].split('/').collect(),
            None => Vec::new(),
        };
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            let mut m = p.matches(&file);
            if !m {
                let mut prefix = String::new();
                for (i, d) in parent_dirs.iter().enumerate() {
                    if i > 0 {
                        prefix.push('/');
                    }
                    prefix.push_str(d);
                    if p.matches(&prefix) {
                        m = true;
                        break;
                    }
                }
            }
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
        if let Some(suffix) = &self.suffix {
            return path.ends_with(suffix.as_str())
                || (suffix.starts_with('/') && path == &suffix[1..]);
        }
        let chars: Vec<char> = path.chars().collect();
        let mut memo = vec![None; (self.toks.len() + 1) * (chars.len() + 1)];
        self.match_at(0, 0, &chars, &mut memo)
    }

    fn match_at(&self, t: usize, i: usize, s: &[char], memo: &mut Vec<Option<bool>>) -> bool {
        let key = t * (s.len() + 1) + i;
        if let Some(r) = memo[key] {
            return r;
        }
        let r = match self.toks.get(t) {
            None => i == s.len(),
            Some(Tok::Lit(c)) => s.get(i) == Some(c) && self.match_at(t + 1, i + 1, s, memo),
            Some(Tok::Question) => {
                s.get(i).is_some_and(|&c| c != '/') && self.match_at(t + 1, i + 1, s, memo)
            }
            Some(Tok::Class { negated, items }) => {
                s.get(i)
                    .is_some_and(|&c| items.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated)
                    && self.match_at(t + 1, i + 1, s, memo)
            }
            Some(Tok::Star) => {
                let mut j = i;
                loop {
                    if self.match_at(t + 1, j, s, memo) {
                        break true;
                    }
                    if j >= s.len() || s[j] == '/' {
                        break false;
                    }
                    j += 1;
                }
            }
            Some(Tok::AnyTail) => true,
            Some(Tok::DirStar) => {
                self.match_at(t + 1, i, s, memo)
                    || (i..s.len()).any(|j| s[j] == '/' && self.match_at(t + 1, j + 1, s, memo))
            }
        };
        memo[key] = Some(r);
        r
    }
}

fn compile(p: &str) -> Result<(Vec<Tok>, Option<String>), String> {
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
                        return Err("missing closing ]".into());
                    };
                    i += 1;
                    if c == ']' && !first {
                        break;
                    }
                    first = false;
                    let lo = if c == '\\' {
                        let e = *chars.get(i).ok_or("trailing backslash in class")?;
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
                            h = *chars.get(i).ok_or("trailing backslash in class")?;
                            i += 1;
                        }
                        hi = h;
                        if hi < lo {
                            return Err(format!("invalid character class range {lo}-{hi}"));
                        }
                    }
                    items.push((lo, hi));
                }
                toks.push(Tok::Class { negated, items });
            }
            ']' => return Err("unexpected ]".into()),
            c => toks.push(Tok::Lit(c)),
        }
    }
    // Docker treats `**literal` (nothing else special) as a plain suffix test.
    let suffix = match toks.first() {
        Some(Tok::DirStar)
            if p.starts_with("**") && toks[1..].iter().all(|t| matches!(t, Tok::Lit(_))) =>
        {
            Some(p[2..].replace('\\', ""))
        }
        _ => None,
    };
    Ok((toks, suffix))
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
    fn bad_patterns_and_file_choice() {
        assert!(Dockerignore::parse("[abc").is_err());
        assert_eq!(select_ignore_text(Some("a"), Some("b")), Some("a"));
        assert_eq!(select_ignore_text(None, Some("b")), Some("b"));
        assert_eq!(
            ignore_file_candidates("sub/Dockerfile")[0],
            "sub/Dockerfile.dockerignore"
        );
    }
}
