//! The solver: turns a stage graph into steps, caches them by content, runs them and exports the result.
