//! An `ssh-agent` for the tests of `RUN --mount=type=ssh`.

use std::process::Stdio;

use super::Env;

/// An `ssh-agent` run by the test user on a socket in the test's directory; killed on drop.
pub struct Agent {
    child: std::process::Child,
    pub socket: std::path::PathBuf,
}

impl Agent {
    pub fn start(env: &Env) -> Result<Agent, Box<dyn std::error::Error>> {
        let socket = env.path("agent.sock");
        let child = env
            .dir
            .user()
            .command("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("ssh-agent (openssh-client) is needed for this test: {e}"))?;
        for _ in 0..100 {
            if socket.exists() {
                return Ok(Agent { child, socket });
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Err("ssh-agent did not make its socket".into())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
