//! What an exported cache carries so that a build on another machine can say why a step
//! missed: the inputs of each step it holds, as `explain` names them (paths inside the
//! context, instructions, build args, digests: no host path, uid or time), and the salt of its
//! keys. A step that misses is compared with the nearest carried step: one that followed the
//! same parent, with the most inputs in common.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::explain::Inputs;

/// Why a step missed when the imported caches were made with keys of another salt.
pub const OTHER_SALT: &str = "the imported caches were made with other layer options (compression, SOURCE_DATE_EPOCH or single-id mode)";

/// Why a step missed when the imported caches hold steps after its parent, but none like it.
pub const NOT_HELD: &str = "no cache entry for this step in the imported caches";

/// The explanations a cache carries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Carried {
    /// The salt of the keys (what changes every layer: compression, `SOURCE_DATE_EPOCH`,
    /// single-id mode), in hex: no key of another salt matches.
    #[serde(default)]
    pub salt: String,
    /// Each step, sorted, each once.
    #[serde(default)]
    pub steps: Vec<CarriedStep>,
}

/// A step a cache carries the inputs of.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CarriedStep {
    /// Where it is: the stage's name (or `stage-N`) and the step's place in it.
    pub at: String,
    /// Its inputs, as `Inputs::portable` gives them.
    pub inputs: Inputs,
}

impl CarriedStep {
    /// The step at `stage`'s place `index`, with `inputs`.
    pub fn new(stage: &str, index: usize, inputs: &Inputs) -> Self {
        CarriedStep {
            at: format!("{stage}#{index}"),
            inputs: inputs.portable(),
        }
    }
}

impl Carried {
    /// `steps`, under keys salted with `salt`, in an order that depends on nothing but them
    /// (an inline cache is part of an image's config digest).
    pub fn new(salt: String, steps: impl IntoIterator<Item = CarriedStep>) -> Self {
        let steps: BTreeSet<CarriedStep> = steps.into_iter().collect();
        Carried {
            salt,
            steps: steps.into_iter().collect(),
        }
    }

    /// Whether it carries nothing.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// The explanations of every imported cache, by the parent of each step.
#[derive(Debug, Default)]
pub struct Nearby {
    by_parent: HashMap<String, Vec<CarriedStep>>,
    salts: HashSet<String>,
}

/// What the imported caches hold after a step's parent.
#[derive(Debug, PartialEq)]
pub enum Near<'a> {
    /// Nothing: the parent itself is not in them.
    Nothing,
    /// Steps, but none at the same place or with the same instruction.
    Others,
    /// The nearest step: at the same place or with the same instruction, with the most inputs
    /// in common.
    Step(&'a Inputs),
}

impl Nearby {
    /// The explanations `carried` hold, in the order of the imports.
    pub fn new<'a>(carried: impl IntoIterator<Item = &'a Carried>) -> Self {
        let mut nearby = Nearby::default();
        for c in carried {
            if c.is_empty() {
                continue;
            }
            nearby.salts.insert(c.salt.clone());
            for step in &c.steps {
                if let Some(parent) = step.inputs.parent() {
                    nearby
                        .by_parent
                        .entry(parent.to_string())
                        .or_default()
                        .push(step.clone());
                }
            }
        }
        nearby
    }

    /// Whether no import carried an explanation.
    pub fn is_empty(&self) -> bool {
        self.salts.is_empty()
    }

    /// Whether every import that carried explanations was made with keys of another salt.
    pub fn other_salt(&self, salt: &str) -> bool {
        !self.salts.is_empty() && !self.salts.contains(salt)
    }

    /// What the imports hold near `now` (a step's portable inputs, at `now.at`).
    pub fn nearest(&self, now: &CarriedStep) -> Near<'_> {
        let Some(candidates) = now.inputs.parent().and_then(|p| self.by_parent.get(p)) else {
            return Near::Nothing;
        };
        let instruction = |i: &Inputs| i.get(super::explain::name::INSTRUCTION).map(str::to_owned);
        let mut best: Option<(&Inputs, usize)> = None;
        for c in candidates {
            if c.at != now.at && instruction(&c.inputs) != instruction(&now.inputs) {
                continue;
            }
            let common = now.inputs.common(&c.inputs);
            if best.is_none_or(|(_, b)| common > b) {
                best = Some((&c.inputs, common));
            }
        }
        best.map_or(Near::Others, |(c, _)| Near::Step(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::explain::name;

    fn step(parent: &str, pairs: &[(&str, &str)]) -> Inputs {
        let mut i = Inputs::default();
        i.add(name::PARENT, parent);
        for (n, v) in pairs {
            i.add(*n, *v);
        }
        i
    }

    #[test]
    fn the_nearest_step_follows_the_same_parent_at_the_same_place_or_instruction()
    -> Result<(), serde_json::Error> {
        let copy = step(
            "p",
            &[("instruction", "COPY a /a"), ("context file a", "1")],
        );
        let run = step("p", &[("instruction", "RUN make"), ("command", "make")]);
        let at = |i: &Inputs, n| CarriedStep::new("build", n, i);
        let carried = Carried::new("s".into(), [at(&run, 2), at(&copy, 1), at(&copy, 1)]);
        assert_eq!(carried.steps.len(), 2);
        // Sorted: the order a build noted them in does not show.
        assert_eq!(
            carried,
            Carried::new("s".into(), [at(&copy, 1), at(&run, 2)])
        );
        let back: Carried = serde_json::from_str(&serde_json::to_string(&carried)?)?;
        let nearby = Nearby::new([&back]);
        let now = step(
            "p",
            &[("instruction", "COPY a /a"), ("context file a", "2")],
        );
        assert_eq!(nearby.nearest(&at(&now, 1)), Near::Step(&copy));
        assert_eq!(
            now.first_difference(&copy).as_deref(),
            Some("context file a changed")
        );
        // An edited instruction is compared with the step that was at its place.
        let edited = step("p", &[("instruction", "RUN make all")]);
        assert_eq!(nearby.nearest(&at(&edited, 2)), Near::Step(&run));
        assert_eq!(nearby.nearest(&at(&edited, 5)), Near::Others);
        assert_eq!(nearby.nearest(&at(&step("q", &[]), 1)), Near::Nothing);
        assert!(!nearby.other_salt("s"));
        assert!(nearby.other_salt("t"));
        assert!(Nearby::new([&Carried::default()]).is_empty());
        Ok(())
    }

    #[test]
    fn many_files_travel_as_one_digest() {
        let many = |changed: &str| {
            let mut i = step("p", &[("instruction", "COPY . .")]);
            for n in 0..300 {
                i.add(format!("{}f{n}", name::CONTEXT_FILE), "644 aa");
            }
            i.add(format!("{}last", name::CONTEXT_FILE), changed.to_string());
            i.add("destination", ".");
            i
        };
        let (before, now) = (many("1").portable(), many("2").portable());
        assert_eq!(before.len(), 4);
        assert_eq!(
            now.first_difference(&before).as_deref(),
            Some("context files changed")
        );
        assert_eq!(step("p", &[]).portable(), step("p", &[]));
    }
}
