//! What went wrong in an operation, with the error of the crate below kept as its source.
//!
//! An operation meets errors from the OCI crate (images, layers, the store, a registry), the
//! snapshotter and the filesystem. A [`StepError`] keeps each as a typed source (downcast it
//! to look inside) together with what the operation was doing; the solver places it at its
//! instruction ([`crate::request::BuildError::Instruction`] or a [`crate::request::StepFailure`]).

use std::error::Error;
use std::sync::Arc;

/// Any error from below, sendable between the build's threads.
pub type Source = Box<dyn Error + Send + Sync>;

/// Why an operation could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Refused as written, with a message that says why and what to change.
    #[error("{0}")]
    Refused(String),
    /// An error from below, and what was being done when it came.
    #[error("{what}: {source}")]
    During {
        /// What the operation was doing, such as `build context app (/src)`.
        what: String,
        /// The error.
        #[source]
        source: Source,
    },
    /// An error from below that says all there is to say.
    #[error(transparent)]
    Below(Source),
    /// One result shared by the steps that wait on it (a base image resolved once).
    #[error(transparent)]
    Shared(#[from] Arc<StepError>),
}

impl StepError {
    /// `source`, met while doing `what`.
    pub fn during(what: impl Into<String>, source: impl Into<Source>) -> Self {
        StepError::During {
            what: what.into(),
            source: source.into(),
        }
    }

    /// `source` as it is.
    pub fn below(source: impl Into<Source>) -> Self {
        StepError::Below(source.into())
    }
}

impl From<String> for StepError {
    fn from(message: String) -> Self {
        StepError::Refused(message)
    }
}

impl From<&str> for StepError {
    fn from(message: &str) -> Self {
        StepError::Refused(message.to_owned())
    }
}
