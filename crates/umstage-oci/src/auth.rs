//! Registry credentials from Docker's `config.json` and the containers `auth.json`. Secrets are
//! never printed: [`Credential`]'s `Debug` hides them.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Credential {
    /// No credentials: anonymous access (bearer tokens are still fetched when offered).
    #[default]
    Anonymous,
    /// Username and password (or token) for basic auth or a token exchange.
    Basic {
        /// The username.
        username: String,
        /// The password; never printed.
        password: String,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Anonymous => write!(f, "Anonymous"),
            Self::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
        }
    }
}

#[derive(Deserialize, Default)]
struct AuthFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Credentials loaded from auth files, looked up by registry and repository.
#[derive(Debug, Clone, Default)]
pub struct AuthStore {
    /// (normalised key, credential), in file priority order.
    entries: Vec<(String, Credential)>,
    /// (normalised registry key, or `*` for `credsStore`; helper name), in file priority order.
    helpers: Vec<(String, String)>,
}

/// `docker.io` under all its spellings; other keys lose their scheme and trailing `/`.
fn normalise_key(key: &str) -> String {
    let key = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let key = key.trim_end_matches('/');
    let key = key
        .strip_suffix("/v1")
        .or_else(|| key.strip_suffix("/v2"))
        .unwrap_or(key);
    match key.split_once('/') {
        Some((host, rest)) => format!("{}/{rest}", normalise_host(host)),
        None => normalise_host(key),
    }
}

fn normalise_host(host: &str) -> String {
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        other => other.to_owned(),
    }
}

fn decode(entry: &AuthEntry) -> Option<Credential> {
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (username, password) = text.split_once(':')?;
        return Some(Credential::Basic {
            username: username.into(),
            password: password.into(),
        });
    }
    match (&entry.username, &entry.password) {
        (Some(u), Some(p)) => Some(Credential::Basic {
            username: u.clone(),
            password: p.clone(),
        }),
        _ => None,
    }
}

impl AuthStore {
    /// The auth files umstage reads, most important first: `$REGISTRY_AUTH_FILE`,
    /// `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.config/containers/auth.json`,
    /// `$DOCKER_CONFIG/config.json` (else `~/.docker/config.json`).
    pub fn default_files() -> Vec<PathBuf> {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let mut files = Vec::new();
        files.extend(env("REGISTRY_AUTH_FILE"));
        files.extend(env("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")));
        let home = env("HOME");
        files.extend(
            env("XDG_CONFIG_HOME")
                .or_else(|| home.as_ref().map(|h| h.join(".config")))
                .map(|d| d.join("containers/auth.json")),
        );
        files.extend(
            env("DOCKER_CONFIG")
                .or_else(|| home.as_ref().map(|h| h.join(".docker")))
                .map(|d| d.join("config.json")),
        );
        files
    }

    /// Loads the default files (missing files are skipped; unreadable ones are warned about).
    pub fn from_environment() -> Self {
        Self::from_files(&Self::default_files())
    }

    /// Loads `files`, the first having priority.
    pub fn from_files(files: &[PathBuf]) -> Self {
        let mut store = Self::default();
        for file in files {
            store.load(file);
        }
        store
    }

    fn load(&mut self, path: &Path) {
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!("cannot read registry auth file {}: {e}", path.display());
                return;
            }
        };
        let file: AuthFile = match serde_json::from_slice(&text) {
            Ok(file) => file,
            Err(e) => {
                // serde_json's message names the position, never the secret values.
                tracing::warn!(
                    "ignoring malformed registry auth file {}: {e}",
                    path.display()
                );
                return;
            }
        };
        for (key, entry) in &file.auths {
            if let Some(credential) = decode(entry) {
                self.entries.push((normalise_key(key), credential));
            }
        }
        self.helpers.extend(
            file.cred_helpers
                .iter()
                .map(|(k, helper)| (normalise_key(k), helper.clone())),
        );
        if let Some(store) = file.creds_store.filter(|s| !s.is_empty()) {
            self.helpers.push(("*".into(), store));
        }
    }

    /// Adds an explicit credential for `registry` (highest priority).
    pub fn insert(&mut self, registry: &str, credential: Credential) {
        self.entries
            .insert(0, (normalise_key(registry), credential));
    }

    /// The credential for `repository` on `registry`: the most specific key wins
    /// (`reg/ns/repo`, then `reg/ns`, then `reg`).
    pub fn lookup(&self, registry: &str, repository: &str) -> Credential {
        let registry = normalise_host(registry);
        let mut scope = format!("{registry}/{repository}");
        loop {
            if let Some((_, credential)) = self.entries.iter().find(|(k, _)| *k == scope) {
                return credential.clone();
            }
            match scope.rsplit_once('/') {
                Some((parent, _)) if parent.len() >= registry.len() => scope = parent.to_owned(),
                _ => break,
            }
        }
        Credential::Anonymous
    }

    /// The credential helper (`docker-credential-NAME`) said to hold `registry`'s credentials:
    /// its `credHelpers` entry, else the `credsStore`, as Docker picks them.
    pub fn helper(&self, registry: &str) -> Option<&str> {
        let registry = normalise_host(registry);
        self.helpers
            .iter()
            .find(|(key, _)| *key == registry)
            .or_else(|| self.helpers.iter().find(|(key, _)| key == "*"))
            .map(|(_, helper)| helper.as_str())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn docker_and_containers_files_are_merged_with_priority_and_scopes() {
        let dir = tempfile::tempdir().unwrap();
        let containers = dir.path().join("auth.json");
        let docker = dir.path().join("config.json");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        std::fs::write(
            &containers,
            format!(
                r#"{{"auths":{{"reg.example:5000/team":{{"auth":"{}"}}}}}}"#,
                b64("team:t-secret")
            ),
        )
        .unwrap();
        std::fs::write(
            &docker,
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}},"reg.example:5000":{{"username":"all","password":"a-secret"}}}}}}"#,
                b64("hub:h-secret")
            ),
        )
        .unwrap();
        let store = AuthStore::from_files(&[containers, docker]);
        assert_eq!(
            store.lookup("docker.io", "library/busybox"),
            Credential::Basic {
                username: "hub".into(),
                password: "h-secret".into()
            }
        );
        assert_eq!(
            store.lookup("reg.example:5000", "team/app"),
            Credential::Basic {
                username: "team".into(),
                password: "t-secret".into()
            }
        );
        assert_eq!(
            store.lookup("reg.example:5000", "other/app"),
            Credential::Basic {
                username: "all".into(),
                password: "a-secret".into()
            }
        );
        assert_eq!(store.lookup("elsewhere", "x"), Credential::Anonymous);
        assert!(!format!("{store:?}").contains("secret"));
    }

    #[test]
    fn a_registry_s_own_helper_wins_over_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("config.json");
        std::fs::write(
            &docker,
            r#"{"credsStore":"desktop","credHelpers":{"https://gcr.io":"gcloud"}}"#,
        )
        .unwrap();
        let store = AuthStore::from_files(&[docker]);
        assert_eq!(store.helper("gcr.io"), Some("gcloud"));
        assert_eq!(store.helper("index.docker.io"), Some("desktop"));
        assert_eq!(AuthStore::default().helper("gcr.io"), None);
    }
}
