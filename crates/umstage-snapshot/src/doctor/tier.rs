//! The sandbox tiers, best first: what a `RUN` step runs in, and how a build is told which.

use serde::Serialize;

/// A way of running `RUN` steps, from the most faithful down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    /// A user namespace mapping the caller's subordinate ranges (or every id, as real root):
    /// steps own files as any user.
    Userns,
    /// A user namespace mapping one id: steps run as root; a chown to another owner is
    /// recorded in an xattr, shown to `stat` and written into the layers.
    UsernsSingle,
}

impl Tier {
    /// Every tier, best first.
    pub const ALL: [Tier; 2] = [Tier::Userns, Tier::UsernsSingle];

    /// The name the `--sandbox` flag and `umstage doctor` use.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Userns => "userns",
            Tier::UsernsSingle => "userns-single",
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which tier a build asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TierChoice {
    /// The best one that works here.
    #[default]
    Auto,
    /// This one, or fail saying why not.
    Exactly(Tier),
}
