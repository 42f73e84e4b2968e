//! Shell-word processing with BuildKit's semantics: quotes, escapes, `$V` and `${…}` forms, word splitting.

use std::collections::{BTreeMap, BTreeSet, HashMap};

mod pattern;
mod state;

use state::State;

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
