//! The solver: turns a stage graph into steps, caches them by content, runs them and exports the result.

pub mod add;
pub mod cache;
pub mod chmod;
pub mod config;
pub mod context;
pub mod copy;
pub mod digests;
pub mod event;
pub mod export;
pub mod history;
pub mod lints;
pub mod options;
pub mod request;
pub mod schedule;
pub mod solver;
pub mod state;
pub mod users;

pub use solver::{build, check};
