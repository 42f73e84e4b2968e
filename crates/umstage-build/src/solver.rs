//! The solver: from a request to a built, exported image.

use crate::event::EventSink;
use crate::request::{BuildError, BuildRequest, BuildResult};

/// Builds what `request` asks for, reporting progress to `events`.
pub fn build(request: &BuildRequest, events: &dyn EventSink) -> Result<BuildResult, BuildError> {
    let _ = (request, events);
    Err(BuildError::Other(
        "the build engine is not wired to the frontend, snapshotter and OCI crates yet".into(),
    ))
}
