//! Entering the sandbox tier a build asks for, or the best one that works: the namespace tiers
//! through [`crate::userns::enter`], the chroot tier by staying where the process is when the
//! kernel refuses a namespace and the diagnosis allows it.

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
    /// The user namespace tiers failed, and the chroot tier cannot run either.
    #[error(transparent)]
    Userns(#[from] UsernsError),
    /// The chroot tier was asked for and cannot run here.
    #[error("the chroot sandbox cannot run here: {0}")]
    Chroot(String),
}

/// Enters `choice` (see [`userns::enter`]: in the outer process of a namespace tier this never
/// returns `Ok`), and records the tier for [`super::active_tier`].
pub fn enter(choice: TierChoice, state_root: &Path) -> Result<Entered, EnterError> {
    if choice == TierChoice::Exactly(Tier::Chroot) {
        // No trial: nothing of a namespace is wanted, whatever it would say.
        let diagnosis = diagnose(&Facts::gather(Some(state_root), Some(Trial::NotRun)));
        let why = diagnosis.blockers_of(Tier::Chroot);
        if !why.is_empty() {
            return Err(EnterError::Chroot(why));
        }
        activate(Tier::Chroot);
        return Ok(Entered {
            tier: Tier::Chroot,
            reason: "asked for: steps run chrooted as real root in copied snapshots, without /proc, /sys or RUN --mount".into(),
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
            if diagnosis.tier != Some(Tier::Chroot) {
                return Err(UsernsError::Unshare { errno, why }.into());
            }
            activate(Tier::Chroot);
            Ok(Entered {
                tier: Tier::Chroot,
                reason: diagnosis.reason,
                warning: None,
            })
        }
        Err(e) => Err(e.into()),
    }
}
