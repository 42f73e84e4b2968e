//! Cancelling running steps, from any thread or from a signal handler.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal};

/// A cancellation flag that wakes every step waiting on it; cheap to share by reference.
#[derive(Debug)]
pub struct Cancel {
    event: EventFd,
}

/// The eventfd the termination-signal handler writes to (-1: none installed).
static SIGNAL_TARGET: AtomicI32 = AtomicI32::new(-1);

/// The termination signal the handler received first (0: none yet).
static RECEIVED: AtomicI32 = AtomicI32::new(0);

impl Cancel {
    /// A new flag, not cancelled.
    pub fn new() -> std::io::Result<Self> {
        let event =
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Self { event })
    }

    /// Cancels: every step running under this flag is killed and its run returns `Cancelled`.
    pub fn cancel(&self) {
        signal_fd(self.event.as_fd().as_raw_fd());
    }

    /// Whether [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut fds = [PollFd::new(self.event.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }

    /// Cancels this flag when the process gets SIGINT or SIGTERM; the flag must live for the rest of the process.
    pub fn cancel_on_termination_signals(&'static self) -> std::io::Result<()> {
        SIGNAL_TARGET.store(self.event.as_fd().as_raw_fd(), Ordering::SeqCst);
        let action = SigAction::new(
            SigHandler::Handler(on_termination_signal),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        for signal in [Signal::SIGINT, Signal::SIGTERM] {
            // SAFETY: the handler only loads an atomic and calls write(2), both async-signal-safe.
            unsafe { nix::sys::signal::sigaction(signal, &action) }?;
        }
        Ok(())
    }

    /// The first termination signal that cancelled the flag installed with
    /// [`Cancel::cancel_on_termination_signals`], if one arrived: a process stopped by it exits
    /// with 128 + its number, as shells and Docker report it.
    pub fn received_signal() -> Option<Signal> {
        Signal::try_from(RECEIVED.load(Ordering::SeqCst)).ok()
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.event.as_fd()
    }
}

extern "C" fn on_termination_signal(signal: libc::c_int) {
    let _ = RECEIVED.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
    let fd = SIGNAL_TARGET.load(Ordering::SeqCst);
    if fd >= 0 {
        signal_fd(fd);
    }
}

/// Adds 1 to an eventfd; async-signal-safe.
fn signal_fd(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live local to an fd; a failure (full counter) is harmless.
    unsafe {
        libc::write(fd, (&one as *const u64).cast(), std::mem::size_of::<u64>());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_is_seen_and_stays() {
        let cancel = Cancel::new().expect("eventfd");
        assert!(!cancel.is_cancelled());
        cancel.cancel();
        assert!(cancel.is_cancelled());
        assert!(cancel.is_cancelled());
    }
}
