//! The exec operation, `RUN`: the command line, environment, user, network and the
//! entitlements it needs, keyed by all of them and by what its mounts read; it runs in the
//! sandbox over an active snapshot, with its `--mount`s translated by `mounts`.

use umstage_dockerfile::{Command, MountType, RunScript};
use umstage_snapshot::sandbox::{self, StepEvent, StepMount};

use crate::cache::{KeyBuilder, explain};
use crate::copy::CopyOptions;
use crate::error::StepError;
use crate::event::Event;
use crate::ids::unique_key;
use crate::ops::content::Probe;
use crate::ops::file::CopySource;
use crate::ops::step::{StageOutput, Step};
use crate::request::{BuildError, Entitlement};

/// Lines of a failed step's output quoted in the error.
pub(crate) const FAILURE_TAIL: usize = 12;

impl Step<'_, '_> {
    pub(crate) fn run_step(&mut self, expanded: &Command) -> Result<bool, BuildError> {
        let Command::Run(run) = expanded else {
            return Ok(false);
        };
        let build = self.build;
        let shell = self.cfg.shell();
        let mut mounts = Vec::new();
        let mut script_file = None;
        let argv = match run.script() {
            RunScript::Exec(v) => v,
            RunScript::Shell(text) => {
                let mut argv = shell.clone();
                argv.push(text);
                argv
            }
            RunScript::File { name, data } => {
                let dir = build
                    .request
                    .state_root
                    .join("run")
                    .join(unique_key("heredoc"));
                let file = dir.join("script");
                let written = std::fs::create_dir_all(&dir)
                    .and_then(|()| std::fs::write(&file, data.as_bytes()))
                    .and_then(|()| {
                        use std::os::unix::fs::PermissionsExt;
                        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))
                    });
                written.map_err(|e| self.failed(StepError::below(e)))?;
                let target = format!("/dev/pipes/{name}");
                mounts.push(StepMount::Bind(sandbox::BindMount {
                    source: sandbox::BindSource::Host(file),
                    target: target.clone(),
                    read_write: false,
                }));
                script_file = Some(dir);
                // BuildKit runs the script through the shell too: `/bin/sh -c /dev/pipes/EOF`.
                let mut argv = shell.clone();
                argv.push(target);
                argv
            }
        };
        let mut env: Vec<String> = self
            .scope
            .run_env()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let visible_args = self.scope.visible_args();
        let user = self.cfg.image.config.user.clone().unwrap_or_default();
        let cwd = self.cfg.workdir();
        let entitled = |e: Entitlement, what: &str, flag: &str| {
            if build.request.allow.contains(&e) {
                Ok(())
            } else {
                Err(self.failed(format!(
                    "{what} is not allowed: grant it with --allow {flag}"
                )))
            }
        };
        let privileged = run.security == Some(umstage_dockerfile::SecurityMode::Insecure);
        if privileged {
            entitled(
                Entitlement::SecurityInsecure,
                "RUN --security=insecure",
                "security.insecure",
            )?;
        }
        if run.network == Some(umstage_dockerfile::NetworkMode::Host) {
            entitled(
                Entitlement::NetworkHost,
                "RUN --network=host",
                "network.host",
            )?;
        }
        let network = match run.network {
            Some(umstage_dockerfile::NetworkMode::None) => sandbox::Network::None,
            Some(umstage_dockerfile::NetworkMode::Host) => sandbox::Network::Host,
            Some(umstage_dockerfile::NetworkMode::Default) | None => build.request.network,
        };

        self.input_parent();
        let mut k = KeyBuilder::new("run");
        k.key(self.key);
        for a in &argv {
            k.str(a);
        }
        self.input("command", argv.join(" "));
        // The config's ENV is part of the parent key; the build args it can see are not.
        for (name, value) in &visible_args {
            k.str(name).str(value);
            self.input(format!("{}{name}", explain::name::BUILD_ARG), value.clone());
        }
        k.str(&user).str(&cwd).str(&format!("{network:?}"));
        self.input("user", user.clone());
        self.input("working directory", cwd.clone());
        self.input("network", format!("{network:?}"));
        // What the command line gives every step is part of what it runs in, as in
        // BuildKit's ExecOp (extra hosts, /dev/shm, rlimits); the defaults add nothing, so
        // keys made without these flags stay as they were.
        let request = build.request;
        for host in &request.add_hosts {
            k.str("add-host")
                .str(&host.name)
                .str(&host.address.to_string());
        }
        if request.shm_size != sandbox::DEFAULT_SHM_SIZE {
            k.str("shm-size").str(&request.shm_size.to_string());
        }
        for u in &request.ulimits {
            k.str("ulimit").str(&format!("{u:?}"));
        }
        if privileged {
            k.str("insecure");
        }
        let hostname = build.args.sandbox_hostname();
        if let Some(h) = hostname {
            k.str("hostname").str(h);
        }
        let mut mount_sources = Vec::new();
        for m in &run.mounts {
            k.str(&format!("{m:?}"));
            let source = match &m.from {
                Some(from) => self.resolve_from(from)?,
                None => None,
            };
            self.key_mount_source(&mut k, m, source.as_ref())?;
            mount_sources.push(source);
        }
        let created_by = run_history(&argv, &self.scope.history_args());
        // A bind of another stage's (or an image's) filesystem is keyed by the content it
        // binds; a cache mount seeded from one by its key, as BuildKit keys the seed.
        let stage_binds: Vec<(&StageOutput, String)> = run
            .mounts
            .iter()
            .zip(&mount_sources)
            .filter_map(|(m, source)| match source {
                Some(CopySource::State(out, _)) if m.kind == MountType::Bind => Some((
                    out.as_ref(),
                    m.source
                        .clone()
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| ".".into()),
                )),
                _ => None,
            })
            .collect();
        for (m, source) in run.mounts.iter().zip(&mount_sources) {
            if let Some(CopySource::State(out, _)) = source
                && m.kind != MountType::Bind
            {
                k.key(&out.key);
            }
        }
        let cheap_key = if stage_binds.is_empty() {
            *self.key = k.finish();
            None
        } else {
            let mut cheap = k.clone();
            for (out, _) in &stage_binds {
                cheap.str("stage").key(&out.key);
            }
            *self.key = cheap.finish();
            let content = |step: &Self| {
                let mut by_content = k.clone();
                for (out, path) in &stage_binds {
                    let read = step.stage_content(
                        out,
                        std::slice::from_ref(path),
                        &CopyOptions::default(),
                        &StepError::below,
                    )?;
                    by_content.str("content").key(&read);
                }
                Ok(by_content.finish())
            };
            match self.probe_stage_key(content)? {
                Probe::Hit(state) => {
                    if let Some(dir) = script_file {
                        let _ = std::fs::remove_dir_all(dir);
                    }
                    return Ok(self.use_cached(*state));
                }
                Probe::Miss(cheap) => Some(cheap),
            }
        };
        if let Some(state) = self.cached() {
            if let Some(cheap) = cheap_key {
                self.alias(cheap);
            }
            if let Some(dir) = script_file {
                let _ = std::fs::remove_dir_all(dir);
            }
            return Ok(self.use_cached(state));
        }
        self.explain_miss();

        let mut views = Vec::new();
        let mut secret_files = Vec::new();
        let prepared = (|| -> Result<(), StepError> {
            let mut ssh_index = 0;
            for (m, source) in run.mounts.iter().zip(mount_sources) {
                let mounted =
                    self.step_mount(m, source, &mut views, &mut secret_files, ssh_index)?;
                if m.kind == MountType::Ssh {
                    // The first agent is the step's SSH_AUTH_SOCK, as in BuildKit.
                    if let Some(StepMount::Bind(b)) = &mounted
                        && !env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK="))
                    {
                        env.push(format!("SSH_AUTH_SOCK={}", b.target));
                    }
                    ssh_index += 1;
                }
                mounts.extend(mounted);
            }
            Ok(())
        })();
        // Unmounts the views (dropping their guards) before removing them; secrets held in
        // memory go with their descriptors.
        let cleanup =
            |views: &mut Vec<(String, Option<umstage_snapshot::snapshot::MountGuard>)>,
             secret_files: &mut Vec<std::os::fd::OwnedFd>| {
                for (key, guard) in views.drain(..) {
                    drop(guard);
                    build.snapshotter.remove(&key);
                }
                secret_files.clear();
            };
        if let Err(e) = prepared {
            cleanup(&mut views, &mut secret_files);
            return Err(self.failed(e));
        }

        let active = self.prepare()?;
        let process = argv.join(" ");
        let step = sandbox::RunStep {
            args: argv,
            env,
            cwd,
            user,
            network,
            extra_hosts: request
                .add_hosts
                .iter()
                .map(|h| (h.name.clone(), h.address.to_string()))
                .collect(),
            shm_size: request.shm_size,
            ulimits: request.ulimits.clone(),
            mounts,
            privileged,
            hostname: hostname.unwrap_or(sandbox::DEFAULT_HOSTNAME).to_owned(),
        };
        let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        let id = self.id.clone();
        let snapshotter = build.snapshotter.get().map_err(|e| self.failed(e))?;
        let status = sandbox::run_step(snapshotter, &active, &step, build.cancel, &mut |event| {
            let StepEvent::Output { stream, line } = event;
            let line = String::from_utf8_lossy(&line).into_owned();
            if tail.len() == FAILURE_TAIL {
                tail.pop_front();
            }
            tail.push_back(line.clone());
            build.events.emit(Event::StepOutput {
                step: id.clone(),
                stream,
                line,
            });
        });
        cleanup(&mut views, &mut secret_files);
        if let Some(dir) = script_file {
            let _ = std::fs::remove_dir_all(dir);
        }
        let tail: Vec<String> = tail.into_iter().collect();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => {
                build.snapshotter.remove(&active);
                let code = match s {
                    sandbox::ExitStatus::Code(c) => Some(c),
                    sandbox::ExitStatus::Signal(_) => None,
                };
                return Err(build.fail(
                    self.id,
                    self.instruction,
                    // BuildKit's words, naming the process by its arguments.
                    format!(
                        "process {process:?} did not complete successfully: {}",
                        failure(s)
                    ),
                    code,
                    tail,
                ));
            }
            Err(e) => {
                build.snapshotter.remove(&active);
                return Err(build.fail(self.id, self.instruction, StepError::below(e), None, tail));
            }
        }
        self.commit(&active, created_by)?;
        if let Some(cheap) = cheap_key {
            self.alias(cheap);
        }
        Ok(false)
    }
}

/// How a process failed, in BuildKit's words (`exit code: 1`).
fn failure(status: sandbox::ExitStatus) -> String {
    match status {
        sandbox::ExitStatus::Code(code) => format!("exit code: {code}"),
        sandbox::ExitStatus::Signal(signal) => format!("killed by signal {signal}"),
    }
}

/// BuildKit's history text for a RUN: the build args it saw, then the command.
pub(crate) fn run_history(argv: &[String], args: &[(String, String)]) -> String {
    let mut s = String::from("RUN ");
    if !args.is_empty() {
        s.push_str(&format!("|{} ", args.len()));
        for (k, v) in args {
            s.push_str(&format!("{k}={v} "));
        }
    }
    s.push_str(&argv.join(" "));
    s.push_str(" # buildkit");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_history_names_the_args_it_saw() {
        assert_eq!(
            run_history(&["/bin/sh".into(), "-c".into(), "make".into()], &[]),
            "RUN /bin/sh -c make # buildkit"
        );
        assert_eq!(
            run_history(&["true".into()], &[("A".into(), "1".into())]),
            "RUN |1 A=1 true # buildkit"
        );
    }
}
