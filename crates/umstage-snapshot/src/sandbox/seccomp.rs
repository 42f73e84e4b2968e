//! Loading a seccomp BPF program on the calling thread, which must have no-new-privileges:
//! the one-id tier's ownership recorder and the `ptrace` tier's filter both do.

use std::io;

/// Loads `filter` with `flags` (`SECCOMP_FILTER_FLAG_*`); the kernel's answer, which is the
/// listener's descriptor with `SECCOMP_FILTER_FLAG_NEW_LISTENER` and 0 otherwise.
pub(crate) fn load(filter: &mut [libc::sock_filter], flags: libc::c_ulong) -> io::Result<i64> {
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: `prog` points at `filter`, which outlives the call; the kernel copies it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}
