//! The errno a traced call is answered with when the supervisor's own work for it fails.

/// The errno of `e`, EIO where it has none.
pub(super) fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}
