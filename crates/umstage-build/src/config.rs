//! The image config a stage builds up, and what each metadata instruction does to it, exactly
//! as BuildKit does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `PATH` of an image that has none (scratch), as BuildKit sets it.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The comment BuildKit puts on the history entries it writes; kept so tools that look for it work.
pub const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// An image config document (`application/vnd.oci.image.config.v1+json`), with Docker's
/// extensions; fields this code does not know are kept as they were.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Image {
    /// When the image was made (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// MAINTAINER.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// CPU architecture (`amd64`).
    #[serde(default)]
    pub architecture: String,
    /// Operating system (`linux`).
    #[serde(default)]
    pub os: String,
    /// Architecture variant (`v8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The runtime defaults.
    #[serde(default)]
    pub config: ContainerConfig,
    /// The layers, by uncompressed digest.
    #[serde(default)]
    pub rootfs: RootFs,
    /// One entry per instruction that made the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    /// Anything else the document had.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// The `rootfs` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Uncompressed layer digests, bottom first.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        }
    }
}

/// One history entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// When (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The instruction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Who.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// A note (`buildkit.dockerfile.v0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The step made no layer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// The `config` section: what a container of the image starts with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// USER.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// EXPOSE, as `port/proto` keys.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exposed_ports: BTreeMap<String, Empty>,
    /// ENV, as `KEY=value`, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// ENTRYPOINT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// CMD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// VOLUME paths.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, Empty>,
    /// WORKDIR.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    /// LABEL.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// STOPSIGNAL.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    /// Windows-only command line escaping flag, kept as found.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub args_escaped: bool,
    /// HEALTHCHECK (a Docker extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    /// ONBUILD triggers (a Docker extension).
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "OnBuild")]
    pub on_build: Vec<String>,
    /// SHELL (a Docker extension).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shell: Vec<String>,
    /// Anything else the section had.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// The `{}` value of `ExposedPorts` and `Volumes` entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// HEALTHCHECK as stored in the config; durations in nanoseconds, zero meaning "default".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `["NONE"]`, `["CMD", …]` or `["CMD-SHELL", "…"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    /// `--interval`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interval: u64,
    /// `--timeout`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout: u64,
    /// `--start-period`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_period: u64,
    /// `--start-interval`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_interval: u64,
    /// `--retries`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Image {
    /// The config BuildKit starts a `FROM scratch` stage with: default `PATH`, `WorkingDir` `/`.
    pub fn scratch(os: &str, architecture: &str, variant: Option<&str>) -> Image {
        Image {
            architecture: architecture.into(),
            os: os.into(),
            variant: variant.filter(|v| !v.is_empty()).map(str::to_string),
            config: ContainerConfig {
                env: vec![format!("PATH={DEFAULT_PATH}")],
                working_dir: "/".into(),
                ..ContainerConfig::default()
            },
            ..Image::default()
        }
    }

    /// The config as `KEY=value` pairs.
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        self.config
            .env
            .iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e.clone(), String::new()),
            })
            .collect()
    }
}

/// A stage's image config while its instructions are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct StageConfig {
    /// The config so far.
    pub image: Image,
    /// Whether this stage set CMD itself (an ENTRYPOINT then keeps it).
    cmd_set: bool,
}

/// A metadata instruction's value that BuildKit refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// EXPOSE with a port that is not `N`, `N/proto` or `N-M/proto`.
    #[error("invalid port {0:?} in EXPOSE: use PORT[/tcp|udp|sctp] or a range START-END[/PROTO]")]
    BadPort(String),
}

/// The default shell BuildKit uses on Linux.
pub fn default_shell() -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into()]
}

impl StageConfig {
    /// Starts from a base image's config (the stage's CMD counts as not set by it).
    pub fn new(image: Image) -> Self {
        StageConfig {
            image,
            cmd_set: false,
        }
    }

    /// The shell used for shell-form commands: SHELL if set, else `/bin/sh -c`.
    pub fn shell(&self) -> Vec<String> {
        if self.image.config.shell.is_empty() {
            default_shell()
        } else {
            self.image.config.shell.clone()
        }
    }

    /// ENV: sets or replaces `key` in place.
    pub fn set_env(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        let prefix = format!("{key}=");
        match self
            .image
            .config
            .env
            .iter_mut()
            .find(|e| e.starts_with(&prefix) || e.as_str() == key)
        {
            Some(slot) => *slot = entry,
            None => self.image.config.env.push(entry),
        }
    }

    /// WORKDIR: a relative path is taken from the previous one; returns the new absolute path.
    pub fn set_workdir(&mut self, path: &str) -> String {
        let joined = if path.starts_with('/') {
            path.to_string()
        } else {
            let base = if self.image.config.working_dir.is_empty() {
                "/"
            } else {
                &self.image.config.working_dir
            };
            format!("{base}/{path}")
        };
        let clean = clean_abs(&joined);
        self.image.config.working_dir = clean.clone();
        clean
    }

    /// The working directory steps run in (`/` when none is set).
    pub fn workdir(&self) -> String {
        if self.image.config.working_dir.is_empty() {
            "/".into()
        } else {
            self.image.config.working_dir.clone()
        }
    }

    /// USER.
    pub fn set_user(&mut self, user: &str) {
        self.image.config.user = user.to_string();
    }

    /// SHELL.
    pub fn set_shell(&mut self, shell: Vec<String>) {
        self.image.config.shell = shell;
    }

    /// CMD, given as exec words or shell text.
    pub fn set_cmd(&mut self, exec: Option<Vec<String>>, shell_text: Option<&str>) {
        self.image.config.cmd = Some(self.command(exec, shell_text));
        self.cmd_set = true;
    }

    /// ENTRYPOINT: also clears a CMD inherited from the base, as BuildKit does.
    pub fn set_entrypoint(&mut self, exec: Option<Vec<String>>, shell_text: Option<&str>) {
        self.image.config.entrypoint = Some(self.command(exec, shell_text));
        if !self.cmd_set {
            self.image.config.cmd = None;
        }
    }

    fn command(&self, exec: Option<Vec<String>>, shell_text: Option<&str>) -> Vec<String> {
        match (exec, shell_text) {
            (Some(words), _) => words,
            (None, Some(text)) => {
                let mut argv = self.shell();
                argv.push(text.to_string());
                argv
            }
            (None, None) => Vec::new(),
        }
    }

    /// LABEL.
    pub fn set_label(&mut self, key: &str, value: &str) {
        self.image
            .config
            .labels
            .insert(key.to_string(), value.to_string());
    }

    /// MAINTAINER.
    pub fn set_maintainer(&mut self, name: &str) {
        self.image.author = Some(name.to_string());
    }

    /// EXPOSE of one port spec (`80`, `53/udp`, `8000-8002/tcp`).
    pub fn expose(&mut self, spec: &str) -> Result<(), ConfigError> {
        let bad = || ConfigError::BadPort(spec.to_string());
        let (ports, proto) = match spec.split_once('/') {
            Some((p, proto)) => (p, proto.to_ascii_lowercase()),
            None => (spec, "tcp".to_string()),
        };
        if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
            return Err(bad());
        }
        let (start, end) = match ports.split_once('-') {
            Some((a, b)) => (
                a.parse::<u16>().map_err(|_| bad())?,
                b.parse::<u16>().map_err(|_| bad())?,
            ),
            None => {
                let p = ports.parse::<u16>().map_err(|_| bad())?;
                (p, p)
            }
        };
        if end < start {
            return Err(bad());
        }
        for port in start..=end {
            self.image
                .config
                .exposed_ports
                .insert(format!("{port}/{proto}"), Empty {});
        }
        Ok(())
    }

    /// VOLUME.
    pub fn add_volume(&mut self, path: &str) {
        self.image.config.volumes.insert(path.to_string(), Empty {});
    }

    /// STOPSIGNAL.
    pub fn set_stop_signal(&mut self, signal: &str) {
        self.image.config.stop_signal = signal.to_string();
    }

    /// ONBUILD: records the trigger's text.
    pub fn add_onbuild(&mut self, trigger: &str) {
        self.image.config.on_build.push(trigger.to_string());
    }

    /// Takes the base's ONBUILD triggers, to run now; they are not passed on further.
    pub fn take_onbuild(&mut self) -> Vec<String> {
        std::mem::take(&mut self.image.config.on_build)
    }

    /// HEALTHCHECK NONE (`None`) or a test with its options.
    pub fn set_healthcheck(&mut self, check: Option<HealthConfig>) {
        self.image.config.healthcheck = Some(check.unwrap_or_else(|| HealthConfig {
            test: vec!["NONE".into()],
            ..HealthConfig::default()
        }));
    }

    /// Adds a history entry for a step; `empty_layer` when it made no layer.
    pub fn add_history(&mut self, created_by: String, created: Option<String>, empty_layer: bool) {
        self.image.history.push(History {
            created,
            created_by: Some(created_by),
            author: None,
            comment: Some(HISTORY_COMMENT.into()),
            empty_layer,
        });
    }
}

/// Cleans an absolute path lexically: `//`, `.` and `..` resolved, no trailing slash.
pub fn clean_abs(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage() -> StageConfig {
        StageConfig::new(Image::scratch("linux", "amd64", None))
    }

    #[test]
    fn workdir_is_relative_to_the_previous_one_and_cleaned() {
        let mut s = stage();
        assert_eq!(s.set_workdir("/a"), "/a");
        assert_eq!(s.set_workdir("b/"), "/a/b");
        assert_eq!(s.set_workdir("../c/./d"), "/a/c/d");
        assert_eq!(s.set_workdir("/x//y/"), "/x/y");
    }

    #[test]
    fn env_replaces_in_place() {
        let mut s = stage();
        s.set_env("A", "1");
        s.set_env("B", "2");
        s.set_env("A", "3");
        assert_eq!(
            s.image.config.env,
            [format!("PATH={DEFAULT_PATH}"), "A=3".into(), "B=2".into()]
        );
    }

    #[test]
    fn entrypoint_clears_an_inherited_cmd_but_not_one_set_here() {
        let mut base = stage();
        base.set_cmd(Some(vec!["sh".into()]), None);
        let mut child = StageConfig::new(base.image.clone());
        child.set_entrypoint(Some(vec!["/app".into()]), None);
        assert_eq!(child.image.config.cmd, None);

        let mut same = stage();
        same.set_cmd(None, Some("echo hi"));
        same.set_entrypoint(None, Some("run"));
        assert_eq!(
            same.image.config.cmd,
            Some(vec!["/bin/sh".into(), "-c".into(), "echo hi".into()])
        );
        assert_eq!(
            same.image.config.entrypoint,
            Some(vec!["/bin/sh".into(), "-c".into(), "run".into()])
        );
    }

    #[test]
    fn shell_applies_to_later_shell_forms() {
        let mut s = stage();
        s.set_shell(vec!["/bin/bash".into(), "-eu".into(), "-c".into()]);
        s.set_cmd(None, Some("echo $0"));
        assert_eq!(
            s.image.config.cmd,
            Some(vec![
                "/bin/bash".into(),
                "-eu".into(),
                "-c".into(),
                "echo $0".into()
            ])
        );
    }

    #[test]
    fn expose_normalises_and_expands_ranges() {
        let mut s = stage();
        s.expose("80").ok();
        s.expose("53/UDP").ok();
        s.expose("8000-8002/tcp").ok();
        let ports: Vec<_> = s.image.config.exposed_ports.keys().cloned().collect();
        assert_eq!(
            ports,
            ["53/udp", "80/tcp", "8000/tcp", "8001/tcp", "8002/tcp"]
        );
        assert!(s.expose("http").is_err());
        assert!(s.expose("80/icmp").is_err());
        assert!(s.expose("90-80").is_err());
    }

    #[test]
    fn config_json_uses_docker_names_and_keeps_unknown_fields() -> Result<(), serde_json::Error> {
        let text = r#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1"],"Cmd":["sh"],
            "Healthcheck":{"Test":["CMD","true"],"Interval":1000},"OnBuild":["RUN x"],"Shell":["/bin/ash","-c"],
            "Custom":1},"rootfs":{"type":"layers","diff_ids":[]},"moby.extra":true}"#;
        let img: Image = serde_json::from_str(text)?;
        assert_eq!(img.config.on_build, ["RUN x"]);
        assert_eq!(img.config.shell, ["/bin/ash", "-c"]);
        let back = serde_json::to_value(&img)?;
        assert_eq!(back["config"]["Custom"], 1);
        assert_eq!(back["moby.extra"], true);
        assert_eq!(back["config"]["Healthcheck"]["Interval"], 1000);
        assert!(back["config"].get("User").is_none());
        Ok(())
    }

    #[test]
    fn onbuild_triggers_are_taken_once() {
        let mut s = stage();
        s.add_onbuild("RUN echo hi");
        let mut child = StageConfig::new(s.image.clone());
        assert_eq!(child.take_onbuild(), ["RUN echo hi"]);
        assert!(child.image.config.on_build.is_empty());
    }
}
