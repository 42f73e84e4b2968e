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

/// Why a credential helper gave no credential.
#[derive(Debug, thiserror::Error)]
pub enum CredentialHelperError {
    /// The name would reach outside `docker-credential-*` on `PATH`.
    #[error("{0:?} is not a credential helper name")]
    BadName(String),
    /// The program is not on `PATH`.
    #[error("{0} is not installed (not on PATH)")]
    NotInstalled(String),
    /// The program could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program could not be waited for.
    #[error("{program}: {source}")]
    Wait {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program said no.
    #[error("{program} get failed ({status}): {said}")]
    Failed {
        /// The program.
        program: String,
        /// How it exited.
        status: std::process::ExitStatus,
        /// What it printed.
        said: String,
    },
    /// The program's answer is not Docker's credential JSON.
    #[error("{program} get printed no credential JSON: {source}")]
    NotJson {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The program holds an identity token, which needs an exchange umstage does not do.
    #[error(
        "{program} holds an identity token for {server}, which umstage cannot exchange; log in with a username and password or an access token"
    )]
    IdentityToken {
        /// The program.
        program: String,
        /// The server asked about.
        server: String,
    },
}

/// Asks `docker-credential-NAME` (found on `PATH`) for `server`'s credential; `Ok(None)` when
/// it holds none. Errors (a [`CredentialHelperError`]) name the program and never carry the secret.
pub fn ask_helper(
    name: &str,
    server: &str,
) -> Result<Option<Credential>, Box<dyn std::error::Error + Send + Sync>> {
    Ok(ask(name, server)?)
}

/// [`ask_helper`], with its own error.
fn ask(name: &str, server: &str) -> Result<Option<Credential>, CredentialHelperError> {
    if name.is_empty() || name.contains(['/', '\0']) {
        return Err(CredentialHelperError::BadName(name.to_owned()));
    }
    let program = format!("docker-credential-{name}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => CredentialHelperError::NotInstalled(program.clone()),
            _ => CredentialHelperError::Spawn {
                program: program.clone(),
                source,
            },
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading is judged by its exit status below.
        let _ = stdin.write_all(server.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|source| CredentialHelperError::Wait {
            program: program.clone(),
            source,
        })?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        if said.contains("credentials not found") {
            return Ok(None);
        }
        return Err(CredentialHelperError::Failed {
            program,
            status: output.status,
            said: said.trim().to_owned(),
        });
    }
    let answer: Answer = serde_json::from_slice(&output.stdout).map_err(|source| {
        CredentialHelperError::NotJson {
            program: program.clone(),
            source,
        }
    })?;
    if answer.username == "<token>" {
        return Err(CredentialHelperError::IdentityToken {
            program,
            server: server.to_owned(),
        });
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
                .to_string()
                .contains("not a credential helper")
        );
        let err = ask_helper("umstage-no-such-helper", "r")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("docker-credential-umstage-no-such-helper is not installed"),
            "{err}"
        );
    }
}
