//! Why a step missed: each step's inputs are kept, named for people, beside the state root's
//! cache (`cache/inputs`), under a locator of the step (context, Dockerfile, stage, position)
//! rather than its key. When the step misses in a later build, the first input that differs
//! from the last build of the same step is the reason given.

use std::fs;
use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A step's inputs, in the order its key takes them: (name, value).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Inputs(Vec<(String, String)>);

/// The names an input may have; the wording of a difference follows the kind.
pub mod name {
    /// The key of everything before the step.
    pub const PARENT: &str = "parent step";
    /// The instruction, as written.
    pub const INSTRUCTION: &str = "instruction";
    /// A build arg the step sees: `build arg NAME`.
    pub const BUILD_ARG: &str = "build arg ";
    /// A file read from the build context: `context file PATH`.
    pub const CONTEXT_FILE: &str = "context file ";
    /// A file read from a stage, an image or a named context: `file PATH`.
    pub const FILE: &str = "file ";
}

/// The reason given when only the parent differs.
pub const PARENT_CHANGED: &str = "parent step changed";

/// Values this long or longer are not quoted in a reason.
const QUOTED: usize = 80;

/// Past this many files of one kind, a step's inputs travel with a cache as one digest of them
/// all, so a `COPY . .` of a large context keeps the cache small.
const MAX_FILES: usize = 256;

impl Inputs {
    /// Adds an input.
    pub fn add(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push((name.into(), value.into()));
    }

    /// How many inputs there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first `n` inputs.
    pub fn prefix(&self, n: usize) -> Inputs {
        Inputs(self.0.iter().take(n).cloned().collect())
    }

    /// The key of everything before the step, in hex.
    pub fn parent(&self) -> Option<&str> {
        self.get(name::PARENT)
    }

    /// How many of these inputs `other` has with the same value.
    pub fn common(&self, other: &Inputs) -> usize {
        self.0
            .iter()
            .filter(|(n, v)| other.get(n) == Some(v.as_str()))
            .count()
    }

    /// The inputs as a cache carries them: the files of a kind folded into one input (`context
    /// files`, `files`) when there are more than `MAX_FILES` of them, at the first's place.
    pub fn portable(&self) -> Inputs {
        self.folded(name::CONTEXT_FILE).folded(name::FILE)
    }

    fn folded(&self, prefix: &str) -> Inputs {
        let count = self.0.iter().filter(|(n, _)| n.starts_with(prefix)).count();
        if count <= MAX_FILES {
            return self.clone();
        }
        let mut h = Sha256::new();
        for (n, v) in self.0.iter().filter(|(n, _)| n.starts_with(prefix)) {
            for part in [n, v] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(part.as_bytes());
            }
        }
        let folded = (
            format!("{}s", prefix.trim_end()),
            format!("{count} files sha256:{}", hex::encode(h.finalize())),
        );
        let mut out = Vec::with_capacity(self.0.len() - count + 1);
        let mut folded = Some(folded);
        for (n, v) in &self.0 {
            if !n.starts_with(prefix) {
                out.push((n.clone(), v.clone()));
            } else if let Some(f) = folded.take() {
                out.push(f);
            }
        }
        Inputs(out)
    }

    /// The value of the input `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first input that differs from `before` (an earlier build of the same step), worded
    /// for people; `None` when every input that both recorded is the same. Control characters
    /// are escaped: `before` may come from a cache someone else wrote, and its text must not
    /// drive the terminal or forge lines of the progress output.
    pub fn first_difference(&self, before: &Inputs) -> Option<String> {
        self.difference(before).map(|m| printable(&m))
    }

    fn difference(&self, before: &Inputs) -> Option<String> {
        for (name, now) in &self.0 {
            match before.get(name) {
                Some(was) if was == now => {}
                Some(was) => return Some(changed(name, was, now)),
                // A file is only recorded once a step reads it; an arg is always recorded.
                None if name.starts_with(name::BUILD_ARG) => {
                    return Some(format!("{name} is new (now {now})"));
                }
                None if name.starts_with(name::CONTEXT_FILE) => {
                    return Some(format!("{name} is new"));
                }
                None => {}
            }
        }
        before.0.iter().find_map(|(name, was)| {
            if self.get(name).is_some() {
                return None;
            }
            if name.starts_with(name::BUILD_ARG) {
                Some(format!("{name} is no longer set (was {was})"))
            } else if name.starts_with(name::CONTEXT_FILE) {
                Some(format!("{name} was removed"))
            } else {
                None
            }
        })
    }
}

/// `text` with each control character written as a Rust escape (`\u{1b}`).
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn changed(name: &str, was: &str, now: &str) -> String {
    if name == name::PARENT {
        return PARENT_CHANGED.into();
    }
    if name.starts_with(name::CONTEXT_FILE) || name.starts_with(name::FILE) {
        return format!("{name} changed");
    }
    if was.len() < QUOTED && now.len() < QUOTED {
        format!("{name} changed (was {was}, now {now})")
    } else {
        format!("{name} changed")
    }
}

/// The inputs of every step built under a state root, by locator.
#[derive(Debug, Clone)]
pub struct InputLog {
    dir: PathBuf,
}

impl InputLog {
    /// The log kept in `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        InputLog { dir: dir.into() }
    }

    /// The locator of a step: where it is, not what it reads.
    pub fn locator(context: &str, dockerfile: &str, stage: &str, step: usize) -> String {
        let mut h = Sha256::new();
        for part in [context, dockerfile, stage, &step.to_string()] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    }

    /// The inputs recorded for `locator`, if any.
    pub fn load(&self, locator: &str) -> Option<Inputs> {
        let bytes = umstage_oci::regular::read(&self.dir.join(format!("{locator}.json"))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Records `inputs` as the step's latest and returns the ones recorded before. An unchanged
    /// record is only touched: its time says when the step was last built, which `prune` goes by.
    pub fn record(&self, locator: &str, inputs: &Inputs) -> Option<Inputs> {
        let before = self.load(locator);
        if before.as_ref() == Some(inputs) {
            let path = self.dir.join(format!("{locator}.json"));
            let touched = umstage_oci::regular::open_with(fs::File::options().write(true), &path)
                .and_then(|f| f.set_modified(SystemTime::now()));
            if let Err(e) = touched {
                tracing::debug!("touching {}: {e}", path.display());
            }
        } else {
            self.save(locator, inputs);
        }
        before
    }

    /// Removes the records of steps last built before `cutoff` (every record for `None`), and
    /// temporary files a killed writer left.
    pub fn remove_older_than(&self, cutoff: Option<SystemTime>) -> std::io::Result<usize> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry?;
            let modified = entry.metadata()?.modified()?;
            if cutoff.is_none_or(|c| modified < c) {
                match fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(removed)
    }

    /// Records `inputs` for `locator`; best effort (a lost record only loses an explanation).
    pub fn save(&self, locator: &str, inputs: &Inputs) {
        let written = (|| -> std::io::Result<()> {
            fs::create_dir_all(&self.dir)?;
            let mut temp = tempfile::NamedTempFile::new_in(&self.dir)?;
            serde_json::to_writer(temp.as_file_mut(), inputs)?;
            temp.persist(self.dir.join(format!("{locator}.json")))
                .map_err(|e| e.error)?;
            Ok(())
        })();
        if let Err(e) = written {
            tracing::debug!("recording a step's inputs: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(pairs: &[(&str, &str)]) -> Inputs {
        let mut i = Inputs::default();
        for (n, v) in pairs {
            i.add(*n, *v);
        }
        i
    }

    #[test]
    fn the_first_difference_is_worded_by_its_kind() {
        let before = inputs(&[
            ("parent step", "a"),
            ("build arg VERSION", "1.2"),
            ("context file src/main.c", "d1"),
        ]);
        let arg = inputs(&[
            ("parent step", "a"),
            ("build arg VERSION", "1.3"),
            ("context file src/main.c", "d2"),
        ]);
        assert_eq!(
            arg.first_difference(&before).as_deref(),
            Some("build arg VERSION changed (was 1.2, now 1.3)")
        );
        let file = inputs(&[
            ("parent step", "a"),
            ("build arg VERSION", "1.2"),
            ("context file src/main.c", "d2"),
        ]);
        assert_eq!(
            file.first_difference(&before).as_deref(),
            Some("context file src/main.c changed")
        );
        let parent = inputs(&[("parent step", "b")]);
        assert_eq!(
            parent.first_difference(&before).as_deref(),
            Some("parent step changed")
        );
        let gone = inputs(&[("parent step", "a"), ("build arg VERSION", "1.2")]);
        assert_eq!(
            gone.first_difference(&before).as_deref(),
            Some("context file src/main.c was removed")
        );
        assert_eq!(before.first_difference(&before), None);
    }

    #[test]
    fn control_characters_of_an_earlier_build_are_escaped() {
        let before = inputs(&[("command", "x\x1b]0;title\x07\n#9 DONE")]);
        let now = inputs(&[("command", "y")]);
        assert_eq!(
            now.first_difference(&before).as_deref(),
            Some("command changed (was x\\u{1b}]0;title\\u{7}\\n#9 DONE, now y)")
        );
    }

    #[test]
    fn the_log_reads_back_what_it_saved() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let log = InputLog::new(dir.path().join("inputs"));
        let at = InputLog::locator("/ctx", "Dockerfile", "build", 2);
        assert_ne!(at, InputLog::locator("/ctx", "Dockerfile", "build", 3));
        assert_eq!(log.load(&at), None);
        let i = inputs(&[("instruction", "RUN true")]);
        log.save(&at, &i);
        assert_eq!(log.load(&at), Some(i));
        Ok(())
    }

    #[test]
    fn records_of_steps_not_built_since_the_cutoff_are_removed()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let log = InputLog::new(dir.path().join("inputs"));
        assert_eq!(log.remove_older_than(None)?, 0);
        let (old, new) = (
            InputLog::locator("/ctx", "Dockerfile", "build", 1),
            InputLog::locator("/ctx", "Dockerfile", "build", 2),
        );
        let i = inputs(&[("instruction", "RUN true")]);
        log.save(&old, &i);
        log.save(&new, &i);
        let past = SystemTime::now() - std::time::Duration::from_secs(3600);
        for locator in [&old, &new] {
            fs::File::options()
                .write(true)
                .open(dir.path().join(format!("inputs/{locator}.json")))?
                .set_modified(past)?;
        }
        // Built again unchanged: touched, so it stays.
        assert_eq!(log.record(&new, &i), Some(i.clone()));
        let cutoff = SystemTime::now() - std::time::Duration::from_secs(60);
        assert_eq!(log.remove_older_than(Some(cutoff))?, 1);
        assert_eq!(log.load(&old), None);
        assert_eq!(log.load(&new), Some(i));
        assert_eq!(log.remove_older_than(None)?, 1);
        Ok(())
    }
}
