//! The operations a stage's instructions become, one module each, as BuildKit's ops: each
//! computes its step's cache key from what it reads, then executes on a miss. The stage loop
//! that dispatches to them is in `solver`.

pub(crate) mod content;
pub(crate) mod file;
pub(crate) mod layer;
pub(crate) mod meta;
pub(crate) mod mounts;
pub(crate) mod run;
pub(crate) mod source;
pub(crate) mod step;
