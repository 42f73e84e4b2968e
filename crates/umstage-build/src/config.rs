//! The image config a stage builds up, and what each metadata instruction does to it, exactly
//! as BuildKit does.

use umstage_oci::config::{ContainerConfig, Empty, History};

pub use umstage_oci::config::{HealthConfig, ImageConfig};

/// `PATH` of an image that has none (scratch), as BuildKit sets it.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The comment BuildKit puts on the history entries it writes; kept so tools that look for it work.
pub const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// A config for a `FROM scratch` stage, as BuildKit starts one: default `PATH`, `WorkingDir` `/`.
pub fn scratch(os: &str, architecture: &str, variant: Option<&str>) -> ImageConfig {
    ImageConfig {
        architecture: architecture.into(),
        os: os.into(),
        variant: variant.filter(|v| !v.is_empty()).map(str::to_string),
        config: ContainerConfig {
            env: Some(vec![format!("PATH={DEFAULT_PATH}")]),
            working_dir: Some("/".into()),
            ..ContainerConfig::default()
        },
        ..ImageConfig::default()
    }
}

/// A config's ENV as `KEY=value` pairs, in order.
pub fn env_pairs(image: &ImageConfig) -> Vec<(String, String)> {
    image
        .config
        .env
        .iter()
        .flatten()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e.clone(), String::new()),
        })
        .collect()
}

/// A stage's image config while its instructions are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct StageConfig {
    /// The config so far.
    pub image: ImageConfig,
    /// Whether this stage set CMD itself (an ENTRYPOINT then keeps it).
    cmd_set: bool,
}

/// A metadata instruction's value that BuildKit refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// STOPSIGNAL with something that is not a signal.
    #[error("invalid signal {0:?} in STOPSIGNAL: use a name such as SIGTERM or a number")]
    BadSignal(String),
}

/// Signal names Linux knows, without the `SIG` prefix.
const SIGNALS: &[&str] = &[
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ", "RTMIN", "RTMAX",
];

/// Whether `s` names a signal: a number from 1 to 64, or a name with or without `SIG`
/// (any case), real-time ones as `RTMIN+N` / `RTMAX-N`.
fn is_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<u32>() {
        return (1..=64).contains(&n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let offset_ok = |rest: &str| rest.parse::<u32>().is_ok_and(|n| (1..=15).contains(&n));
    SIGNALS.contains(&name)
        || name.strip_prefix("RTMIN+").is_some_and(offset_ok)
        || name.strip_prefix("RTMAX-").is_some_and(offset_ok)
}

/// The default shell BuildKit uses on Linux.
pub fn default_shell() -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into()]
}

impl StageConfig {
    /// Starts from a base image's config (the stage's CMD counts as not set by it).
    pub fn new(image: ImageConfig) -> Self {
        StageConfig {
            image,
            cmd_set: false,
        }
    }

    /// The shell used for shell-form commands: SHELL if set, else `/bin/sh -c`.
    pub fn shell(&self) -> Vec<String> {
        match &self.image.config.shell {
            Some(shell) if !shell.is_empty() => shell.clone(),
            _ => default_shell(),
        }
    }

    /// ENV: sets or replaces `key` in place.
    pub fn set_env(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        let prefix = format!("{key}=");
        let env = self.image.config.env.get_or_insert_with(Vec::new);
        match env
            .iter_mut()
            .find(|e| e.starts_with(&prefix) || e.as_str() == key)
        {
            Some(slot) => *slot = entry,
            None => env.push(entry),
        }
    }

    /// WORKDIR: a relative path is taken from the previous one; returns the directory to
    /// create, cleaned. The config holds it as BuildKit normalises it: an absolute path as
    /// written (`/go/src/app/` keeps its slash, as docker shows it), a relative one joined to
    /// the previous and cleaned.
    pub fn set_workdir(&mut self, path: &str) -> String {
        let joined = if path.starts_with('/') {
            path.to_string()
        } else {
            let base = match self.image.config.working_dir.as_deref() {
                Some(w) if !w.is_empty() => w,
                _ => "/",
            };
            clean_abs(&format!("{base}/{path}"))
        };
        let clean = clean_abs(&joined);
        self.image.config.working_dir = Some(joined);
        clean
    }

    /// The working directory steps run in (`/` when none is set).
    pub fn workdir(&self) -> String {
        match self.image.config.working_dir.as_deref() {
            Some(w) if !w.is_empty() => w.to_string(),
            _ => "/".into(),
        }
    }

    /// USER.
    pub fn set_user(&mut self, user: &str) {
        self.image.config.user = Some(user.to_string());
    }

    /// SHELL.
    pub fn set_shell(&mut self, shell: Vec<String>) {
        self.image.config.shell = Some(shell);
    }

    /// CMD, given as exec words or shell text.
    pub fn set_cmd(&mut self, exec: Option<Vec<String>>, shell_text: Option<&str>) {
        self.image.config.cmd = Some(self.command(exec, shell_text));
        // BuildKit marks every CMD so, for Docker's image spec (Windows reads it).
        self.image.config.args_escaped = true;
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
            .get_or_insert_with(Default::default)
            .insert(key.to_string(), value.to_string());
    }

    /// MAINTAINER.
    pub fn set_maintainer(&mut self, name: &str) {
        self.image.author = Some(name.to_string());
    }

    /// EXPOSE: adds ports given as image-config keys (`80/tcp`, from
    /// [`umstage_dockerfile::exposed_ports`]).
    pub fn expose(&mut self, ports: impl IntoIterator<Item = String>) {
        let exposed = self
            .image
            .config
            .exposed_ports
            .get_or_insert_with(Default::default);
        for port in ports {
            exposed.insert(port, Empty {});
        }
    }

    /// VOLUME.
    pub fn add_volume(&mut self, path: &str) {
        self.image
            .config
            .volumes
            .get_or_insert_with(Default::default)
            .insert(path.to_string(), Empty {});
    }

    /// STOPSIGNAL: a signal name (`SIGTERM`, `term`, `RTMIN+3`) or number, as Docker accepts.
    pub fn set_stop_signal(&mut self, signal: &str) -> Result<(), ConfigError> {
        if !is_signal(signal) {
            return Err(ConfigError::BadSignal(signal.to_string()));
        }
        self.image.config.stop_signal = Some(signal.to_string());
        Ok(())
    }

    /// ONBUILD: records the trigger's text.
    pub fn add_onbuild(&mut self, trigger: &str) {
        self.image
            .config
            .on_build
            .get_or_insert_with(Vec::new)
            .push(trigger.to_string());
    }

    /// Takes the base's ONBUILD triggers, to run now; they are not passed on further.
    pub fn take_onbuild(&mut self) -> Vec<String> {
        self.image.config.on_build.take().unwrap_or_default()
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

pub use umstage_oci::inroot::clean_abs;

#[cfg(test)]
mod tests {
    use super::*;

    fn stage() -> StageConfig {
        StageConfig::new(scratch("linux", "amd64", None))
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
    fn an_absolute_workdir_is_kept_as_written_in_the_config() {
        let mut s = stage();
        assert_eq!(s.set_workdir("/go/src/app/"), "/go/src/app");
        assert_eq!(s.workdir(), "/go/src/app/");
        assert_eq!(s.set_workdir("sub/"), "/go/src/app/sub");
        assert_eq!(s.workdir(), "/go/src/app/sub");
        s.set_workdir("/x//y/../z");
        assert_eq!(s.workdir(), "/x//y/../z");
    }

    #[test]
    fn env_replaces_in_place() {
        let mut s = stage();
        s.set_env("A", "1");
        s.set_env("B", "2");
        s.set_env("A", "3");
        assert_eq!(
            s.image.config.env,
            Some(vec![
                format!("PATH={DEFAULT_PATH}"),
                "A=3".into(),
                "B=2".into()
            ])
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
    fn expose_adds_to_the_inherited_ports() {
        let mut s = stage();
        s.expose(["80/tcp".to_string()]);
        let mut child = StageConfig::new(s.image.clone());
        child.expose(["53/udp".to_string(), "80/tcp".to_string()]);
        let ports: Vec<_> = child
            .image
            .config
            .exposed_ports
            .iter()
            .flatten()
            .map(|p| p.0.clone())
            .collect();
        assert_eq!(ports, ["53/udp", "80/tcp"]);
    }

    #[test]
    fn stop_signals_are_checked() {
        let mut s = stage();
        for ok in ["SIGTERM", "term", "9", "SIGRTMIN+3", "RTMAX-1", "sigkill"] {
            assert!(s.set_stop_signal(ok).is_ok(), "{ok}");
        }
        for bad in ["FOO", "0", "65", "SIG", "RTMIN+99", ""] {
            assert!(s.set_stop_signal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn onbuild_triggers_are_taken_once() {
        let mut s = stage();
        s.add_onbuild("RUN echo hi");
        let mut child = StageConfig::new(s.image.clone());
        assert_eq!(child.take_onbuild(), ["RUN echo hi"]);
        assert_eq!(child.image.config.on_build, None);
    }
}
