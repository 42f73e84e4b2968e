//! Stopping a daemon a test or the bench started (a private dockerd): by its own pid, never by
//! a name, so nothing else on the machine is touched.

use std::process::Child;
use std::time::{Duration, Instant};

/// Sends SIGTERM to `child` and waits up to `grace` for it to exit (a dockerd takes its
/// containerd down and unmounts on the way out), then kills it; always reaps it.
pub fn stop(child: &mut Child, grace: Duration) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}
