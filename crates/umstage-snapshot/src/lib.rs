//! Rootless execution: the user-namespace bootstrap, snapshots over overlayfs or copies, the `RUN` sandbox and diffing.
