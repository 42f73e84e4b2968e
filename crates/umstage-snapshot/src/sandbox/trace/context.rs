//! What the supervisor knows while a step runs, shared by every call it answers.

use super::super::identity::Identity;
use super::paths::Root;
use super::private::CopyUp;

/// What the supervisor knows while a step runs.
pub(super) struct Context {
    /// The step's root.
    pub(super) root: Root,
    /// The step's hostname, which `uname` gives as the node name.
    pub(super) hostname: Vec<u8>,
    /// The user the step starts as, in appearance (each process then has its own: a
    /// `setuid` changes it).
    pub(super) who: Identity,
    /// What the step's root shares with its parent, copied up before a change.
    pub(super) cow: CopyUp,
}
