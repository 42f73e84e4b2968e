//! The solver: turns a stage graph into steps, caches them by content, runs them and exports the result.
//!
//! The only crate that sees the frontend, the snapshotter and the OCI crate together. The
//! entry points:
//! - [`build`]: a [`request::BuildRequest`] (everything the command line says, with the
//!   values in [`options`]) becomes outputs, reporting progress as [`event::Event`]s to an
//!   [`event::EventSink`]; failures are [`request::BuildError`]s with their exit codes.
//! - [`flags::BuildFlags`]: the command line's build flags, plain, become a request.
//! - [`check`]: the build checks only (`--check`).
//! - [`cache::CacheBackend`] and [`state::State`]: the step cache, under the state root
//!   ([`cache::CacheIndex`], which [`prune`] frees) and imported or exported
//!   (`--cache-from`, `--cache-to`).
//! - [`context::from_stdin`]: a context or Dockerfile given on standard input.

pub mod add;
pub mod annotation;
pub mod cache;
pub mod chmod;
pub mod config;
pub mod context;
pub mod copy;
pub mod credentials;
pub mod digests;
mod download;
pub mod error;
pub mod event;
pub mod export;
pub mod flags;
pub mod history;
mod ids;
mod input_file;
pub mod lints;
pub mod load;
mod ops;
pub mod options;
pub mod prune;
mod registry;
pub mod request;
pub mod schedule;
mod single_id;
pub mod solver;
pub mod state;
pub mod step_options;
pub mod tarhead;
pub mod users;
mod vertex;

pub use solver::{build, check};
