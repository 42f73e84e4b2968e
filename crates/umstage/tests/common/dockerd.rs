//! A private Docker daemon (Debian's `docker.io`) for end-to-end tests: its own data root,
//! exec root and socket in a temporary directory, no bridge, iptables or forwarding changes,
//! stopped by its pid when dropped. Starting one needs root.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A private Docker daemon on a socket in a temporary directory; stopped on drop.
pub struct Daemon {
    child: Child,
    /// The daemon's socket.
    pub socket: PathBuf,
    /// The directory holding its data root, exec root, socket and client config.
    pub _dir: tempfile::TempDir,
}

impl Daemon {
    pub fn start() -> Result<Daemon, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("docker.sock");
        let log = std::fs::File::create(dir.path().join("dockerd.log"))?;
        let child = Command::new("/usr/sbin/dockerd")
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--storage-driver=vfs",
            ])
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start dockerd (Debian package docker.io): {e}"))?;
        let daemon = Daemon {
            child,
            socket,
            _dir: dir,
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if daemon
                .docker()
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
            {
                return Ok(daemon);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let log =
            std::fs::read_to_string(daemon._dir.path().join("dockerd.log")).unwrap_or_default();
        Err(format!("dockerd did not answer within 60 s:\n{log}").into())
    }

    /// Debian's client, talking to this daemon only.
    pub fn docker(&self) -> Command {
        let mut cmd = Command::new("/usr/bin/docker");
        cmd.arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self._dir.path().join("client"));
        cmd
    }

    pub fn load(&self, archive: &Path) -> Result<String, Box<dyn std::error::Error>> {
        Ok(umstage_testutil::run_stdout(
            self.docker().arg("load").arg("-i").arg(archive),
        )?)
    }

    pub fn inspect(&self, image: &str) -> Result<Value, Box<dyn std::error::Error>> {
        let text = umstage_testutil::run_stdout(self.docker().args(["image", "inspect", image]))?;
        let all: Value = serde_json::from_str(&text)?;
        Ok(all[0].clone())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        umstage_testutil::process::stop(&mut self.child, Duration::from_secs(20));
    }
}
