//! Why the sandbox helper could not start a step, with the system error kept as its source.
//!
//! The helper reports it to the builder as text over its report descriptor (another process
//! reads it); inside the helper it stays typed.

use std::error::Error;

/// Any error from below.
pub type Source = Box<dyn Error + Send + Sync>;

/// Why a step could not be set up or started.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// Refused, with a message that says why.
    #[error("{0}")]
    Refused(String),
    /// `USER` names a user the image's `/etc/passwd` lacks.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    /// `USER` names a group the image's `/etc/group` lacks.
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
    /// A `--ulimit` the kernel refused.
    #[error(
        "--ulimit {limit}: {source} (a hard limit can only be lowered without privilege over the host)"
    )]
    Ulimit {
        /// The limit as `NAME=SOFT:HARD`.
        limit: String,
        /// Why.
        #[source]
        source: nix::errno::Errno,
    },
    /// An error from below that says all there is to say.
    #[error(transparent)]
    Below(Source),
    /// A system call or file operation failed while doing `what`.
    #[error("{what}: {source}")]
    During {
        /// What the helper was doing, such as `pivot_root`.
        what: String,
        /// The error.
        #[source]
        source: Source,
    },
}

impl HelperError {
    /// `source`, met while doing `what`.
    pub fn during(what: impl Into<String>, source: impl Into<Source>) -> Self {
        HelperError::During {
            what: what.into(),
            source: source.into(),
        }
    }
}

impl From<String> for HelperError {
    fn from(message: String) -> Self {
        HelperError::Refused(message)
    }
}

impl From<&str> for HelperError {
    fn from(message: &str) -> Self {
        HelperError::Refused(message.to_owned())
    }
}
