//! `umstage doctor`'s knowledge: what restricts a build on this machine or in this pod, which
//! sandbox tier a build will use, and what would make a better one available.
//!
//! [`Facts::gather`] reads the restrictions (seccomp, no-new-privileges, capabilities, the
//! user namespace sysctls, subordinate ranges, `newuidmap`, masked `/proc`, the state root's
//! filesystem and free space) and tries a user namespace in a fresh process ([`trial`]);
//! [`diagnose`] turns them into findings, a [`Tier`] and the fixes for better tiers. The
//! binary only renders the [`Diagnosis`]; a build that meets a restriction quotes the same
//! findings in its error.

mod diagnose;
mod enter;
mod facts;
pub mod status;
mod tier;
pub mod trial;

pub use diagnose::{Diagnosis, Finding, Level, Upgrade, diagnose, keeps_out};
pub use enter::{EnterError, Entered, enter};
pub use facts::{Facts, Landlock, MapTool, StateRoot};
pub use tier::{Tier, TierChoice, activate, active_tier};
pub use trial::Trial;

#[cfg(test)]
mod tests;
