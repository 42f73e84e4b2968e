//! Registry credentials kept by Docker credential helpers: `docker-credential-NAME get`, the
//! server address on its standard input, a JSON answer on its standard output.

use std::io::Write;
use std::process::{Command, Stdio};

use umstage_oci::auth::Credential;

/// What a helper answers to `get`.
#[derive(serde::Deserialize)]
struct Answer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// Asks `docker-credential-NAME` (found on `PATH`) for `server`'s credential; `Ok(None)` when
/// it holds none. Errors name the program and never carry the secret.
pub fn ask_helper(name: &str, server: &str) -> Result<Option<Credential>, String> {
    if name.is_empty() || name.contains(['/', '\0']) {
        return Err(format!("{name:?} is not a credential helper name"));
    }
    let program = format!("docker-credential-{name}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("{program} is not installed (not on PATH)"),
            _ => format!("cannot run {program}: {e}"),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading is judged by its exit status below.
        let _ = stdin.write_all(server.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        if said.contains("credentials not found") {
            return Ok(None);
        }
        return Err(format!(
            "{program} get failed ({}): {}",
            output.status,
            said.trim()
        ));
    }
    let answer: Answer = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("{program} get printed no credential JSON: {e}"))?;
    if answer.username == "<token>" {
        return Err(format!(
            "{program} holds an identity token for {server}, which umstage cannot exchange; \
             log in with a username and password or an access token"
        ));
    }
    Ok(Some(Credential::Basic {
        username: answer.username,
        password: answer.secret,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn helper_names_cannot_be_paths_and_missing_helpers_say_so() {
        assert!(
            ask_helper("../evil", "r")
                .unwrap_err()
                .contains("not a credential helper")
        );
        let err = ask_helper("umstage-no-such-helper", "r").unwrap_err();
        assert!(
            err.contains("docker-credential-umstage-no-such-helper is not installed"),
            "{err}"
        );
    }
}
