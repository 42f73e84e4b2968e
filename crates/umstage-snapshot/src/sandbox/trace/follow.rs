//! Whether a call follows a final symlink: what both the root's resolution ([`super::paths`])
//! and the walk of the container's own `/proc` and `/dev` ([`super::shared`]) are told.

/// Whether a call follows a final symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Follow {
    /// It does (and acts on the target).
    Yes,
    /// It acts on the last component itself (or creates it).
    No,
}
