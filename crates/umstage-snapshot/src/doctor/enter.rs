//! Entering the sandbox tier a build asks for, or the best one that works: the namespace tiers
//! through [`crate::userns::enter`], the chroot and ptrace tiers by staying where the process
//! is when the kernel refuses a namespace and the diagnosis allows one of them.

use std::path::Path;

use super::{Facts, Tier, TierChoice, Trial, activate, diagnose};
use crate::userns::{self, UsernsError};

/// The tier this process now runs its steps in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entered {
    /// The tier.
    pub tier: Tier,
    /// Why this tier, one line.
    pub reason: String,
    /// What the user should fix for ids to be right, when anything (said once).
    pub warning: Option<String>,
}

/// Why no tier could be entered.
#[derive(Debug, thiserror::Error)]
pub enum EnterError {
    /// The user namespace tiers failed, and no tier without one can run either.
    #[error(transparent)]
    Userns(#[from] UsernsError),
    /// A tier without namespaces was asked for and cannot run here.
    #[error("the {tier} sandbox cannot run here: {why}")]
    NoNamespace {
        /// The tier asked for.
        tier: Tier,
        /// The findings in its way, with their fixes.
        why: String,
    },
}

/// Enters `choice` (see [`userns::enter`]: in the outer process of a namespace tier this never
/// returns `Ok`), and records the tier for [`super::active_tier`].
pub fn enter(choice: TierChoice, state_root: &Path) -> Result<Entered, EnterError> {
    if let TierChoice::Exactly(tier @ (Tier::Chroot | Tier::Ptrace)) = choice {
        // No trial: nothing of a namespace is wanted, whatever it would say.
        let diagnosis = diagnose(&Facts::gather(Some(state_root), Some(Trial::NotRun)));
        let why = diagnosis.blockers_of(tier);
        if !why.is_empty() {
            return Err(EnterError::NoNamespace { tier, why });
        }
        activate(tier);
        let mut reason = format!("asked for: {}", super::diagnose::what_it_is(tier));
        if let Some(unconfined) = diagnosis.unconfined() {
            reason.push_str("; ");
            reason.push_str(unconfined);
        }
        return Ok(Entered {
            tier,
            reason,
            warning: None,
        });
    }
    match userns::enter(&userns::Options { tier: choice }) {
        Ok(ns) => {
            activate(ns.tier());
            Ok(Entered {
                tier: ns.tier(),
                reason: ns.reason(),
                warning: ns.warning().map(str::to_string),
            })
        }
        Err(UsernsError::Unshare { errno, why }) if choice == TierChoice::Auto => {
            let diagnosis = diagnose(&Facts::gather(
                Some(state_root),
                Some(Trial::Unshare(errno)),
            ));
            let Some(tier) = diagnosis.tier.filter(|t| t.mounts_nothing()) else {
                return Err(UsernsError::Unshare { errno, why }.into());
            };
            activate(tier);
            Ok(Entered {
                tier,
                reason: diagnosis.reason,
                warning: None,
            })
        }
        Err(e) => Err(e.into()),
    }
}
