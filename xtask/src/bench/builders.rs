//! The builders compared: umstage, BuildKit (a private dockerd), Buildah rootless.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use umstage_testutil::images::ImageLayout;
use umstage_testutil::user::{SharedDir, TestUser};

use super::measure::{Measurement, timed};

/// A builder under test.
pub trait Builder {
    /// Its name in the report.
    fn name(&self) -> &'static str;
    /// Its version line(s) for the report.
    fn version(&self) -> String;
    /// Empties its store: the next build is cold (base images pulled again).
    fn reset(&mut self) -> Result<()>;
    /// Builds `context` with `--build-arg REGISTRY=…` and writes the image archive to `out`.
    fn build(&mut self, context: &Path, tag: &str, out: &Path, log: &Path) -> Result<Measurement>;
    /// Builds `context` and exports its cache to `ci`'s registry the builder's own
    /// way, with the image pushed beside it (the earlier CI run; not timed).
    fn ci_seed(&mut self, context: &Path, ci: &Ci, log: &Path) -> Result<()>;
    /// Builds `context` from the cache `ci_seed` exported, into the store as it
    /// is, and writes the image archive (`CiOutput::Archive`) or pushes the image.
    fn ci_build(
        &mut self,
        context: &Path,
        ci: &Ci,
        output: CiOutput,
        log: &Path,
    ) -> Result<Measurement>;
}

/// Where one builder's `ci` runs of one case keep their cache and images.
pub struct Ci {
    /// `127.0.0.1:PORT` of the registry as the builder reaches it (the counting relay).
    pub registry: String,
    /// The repository, e.g. `ci/c-multistage-umstage`.
    pub repo: String,
}

impl Ci {
    /// The repository with `suffix` appended to its name (e.g. a tag).
    fn image(&self, suffix: &str) -> String {
        format!("{}/{}{suffix}", self.registry, self.repo)
    }
}

/// What a `ci` run makes of the image.
#[derive(Debug, Clone, Copy)]
pub enum CiOutput<'a> {
    /// The image archive at this path.
    Archive(&'a Path),
    /// A push to `Ci::repo`, tag `ci`, in the registry the cache is in.
    Push,
}

/// Where a builder keeps its state and how it reaches the base images.
pub struct Setup<'a> {
    /// The bench's work dir (owned by the test user, readable by all).
    pub work: &'a SharedDir,
    /// The unprivileged user rootless builders run as.
    pub user: &'a TestUser,
    /// `127.0.0.1:PORT` of the registry with the base images.
    pub registry: String,
    /// The same registry through the counting relay (the `ci` mode's).
    pub ci_registry: String,
    /// The base images pushed there, as OCI layouts.
    pub images: &'a [ImageLayout],
}

fn version_of(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| format!("{program}: version unknown"))
}

/// Runs `cmd` quietly, failing with its output.
fn quiet(cmd: &mut Command) -> Result<()> {
    umstage_testutil::run(cmd)?;
    Ok(())
}

/// BuildKit as built into Debian's dockerd 20.10, started privately: no
/// bridge, no iptables or forwarding changes, its own data root and socket.
pub struct BuildKit {
    daemon: Child,
    dir: PathBuf,
    socket: String,
    registry: String,
}

impl BuildKit {
    /// Starts the private dockerd and waits until it answers.
    pub fn start(setup: &Setup) -> Result<Self> {
        let dir = setup.work.path().join("dockerd");
        std::fs::create_dir_all(&dir).context("creating the dockerd dir")?;
        let socket = format!("unix://{}", dir.join("docker.sock").display());
        let log = std::fs::File::create(dir.join("dockerd.log")).context("creating dockerd.log")?;
        let daemon = Command::new("dockerd")
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--storage-driver=overlay2",
            ])
            .arg(format!("--data-root={}", dir.join("data").display()))
            .arg(format!("--exec-root={}", dir.join("exec").display()))
            .arg(format!("--pidfile={}", dir.join("dockerd.pid").display()))
            .arg(format!("--host={socket}"))
            .stdin(Stdio::null())
            .die_with_parent()
            .stdout(log.try_clone().context("duplicating dockerd.log")?)
            .stderr(log)
            .spawn()
            .context("cannot start dockerd (Debian package docker.io)")?;
        let mut buildkit = BuildKit {
            daemon,
            dir,
            socket,
            registry: setup.registry.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = buildkit.daemon.try_wait()? {
                let log =
                    std::fs::read_to_string(buildkit.dir.join("dockerd.log")).unwrap_or_default();
                bail!("dockerd exited ({status}):\n{}", tail(&log, 15));
            }
            if buildkit
                .docker()
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
            {
                return Ok(buildkit);
            }
            if Instant::now() > deadline {
                bail!("dockerd did not answer on {} within 60 s", buildkit.socket);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Debian's docker client (the newer one in /usr/local/bin refuses
    /// `DOCKER_BUILDKIT=1` without buildx) against the private daemon.
    fn docker(&self) -> Command {
        let mut cmd = Command::new("/usr/bin/docker");
        cmd.arg("--host")
            .arg(&self.socket)
            .env("DOCKER_BUILDKIT", "1");
        cmd
    }
}

impl Builder for BuildKit {
    fn name(&self) -> &'static str {
        "BuildKit"
    }

    fn version(&self) -> String {
        format!(
            "{} (built-in BuildKit, export with `docker save`)",
            version_of("dockerd", &["--version"])
        )
    }

    fn reset(&mut self) -> Result<()> {
        quiet(self.docker().args(["system", "prune", "--all", "--force"]))?;
        quiet(self.docker().args(["builder", "prune", "--all", "--force"]))
    }

    fn build(&mut self, context: &Path, tag: &str, out: &Path, log: &Path) -> Result<Measurement> {
        let registry = self.registry.clone();
        let build = self.docker_build(context, &registry, tag, &[], log)?;
        Ok(build.then(self.save(tag, out, log)?))
    }

    fn ci_seed(&mut self, context: &Path, ci: &Ci, log: &Path) -> Result<()> {
        let tag = ci.image(":seed");
        self.docker_build(context, &ci.registry, &tag, &[INLINE_CACHE], log)?;
        self.push(&tag, log)?;
        Ok(())
    }

    fn ci_build(
        &mut self,
        context: &Path,
        ci: &Ci,
        output: CiOutput,
        log: &Path,
    ) -> Result<Measurement> {
        let tag = ci.image(":ci");
        let cache_from = format!("--cache-from={}", ci.image(":seed"));
        let build = self.docker_build(
            context,
            &ci.registry,
            &tag,
            &[INLINE_CACHE, &cache_from],
            log,
        )?;
        let export = match output {
            CiOutput::Archive(out) => self.save(&tag, out, log)?,
            CiOutput::Push => self.push(&tag, log)?,
        };
        Ok(build.then(export))
    }
}

/// BuildKit's inline cache: the cache records ride in the image config.
const INLINE_CACHE: &str = "--build-arg=BUILDKIT_INLINE_CACHE=1";

impl BuildKit {
    fn docker_build(
        &self,
        context: &Path,
        registry: &str,
        tag: &str,
        extra: &[&str],
        log: &Path,
    ) -> Result<Measurement> {
        timed(
            self.docker()
                .args(["build", "--network=none", "--tag", tag])
                .arg(format!("--build-arg=REGISTRY={registry}"))
                .args(extra)
                .arg(context),
            &[self.daemon.id()],
            log,
        )
    }

    fn save(&self, tag: &str, out: &Path, log: &Path) -> Result<Measurement> {
        timed(
            self.docker().args(["save", "--output"]).arg(out).arg(tag),
            &[self.daemon.id()],
            &log.with_extension("save.log"),
        )
    }

    fn push(&self, tag: &str, log: &Path) -> Result<Measurement> {
        timed(
            self.docker().args(["push", tag]),
            &[self.daemon.id()],
            &log.with_extension("push.log"),
        )
    }
}

impl Drop for BuildKit {
    fn drop(&mut self) {
        umstage_testutil::process::stop(&mut self.daemon, Duration::from_secs(30));
        unmount_under(&self.dir);
    }
}

/// Unmounts whatever is still mounted below `dir` (deepest first).
fn unmount_under(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = Command::new("umount").arg("-l").arg(point).status();
    }
}

/// Makes a spawned daemon stop when the bench dies, even by a signal that
/// skips its cleanup (the daemon is spawned from the main thread).
trait DieWithParent {
    fn die_with_parent(&mut self) -> &mut Self;
}

impl DieWithParent for Command {
    fn die_with_parent(&mut self) -> &mut Self {
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            self.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            })
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Buildah rootless as the test user, with runc (crun fails on this hybrid
/// cgroup layout) and no network (slirp4netns cannot open /dev/net/tun as a user).
pub struct Buildah {
    user: TestUser,
    home: PathBuf,
    registry: String,
}

impl Buildah {
    /// Prepares a private home (storage, config, runtime dir) for the test user.
    pub fn new(setup: &Setup) -> Result<Self> {
        let home = setup.work.mkdir("buildah-home")?;
        let config = home.join(".config/containers");
        std::fs::create_dir_all(&config)?;
        let registries: String = [&setup.registry, &setup.ci_registry]
            .iter()
            .map(|r| format!("[[registry]]\nlocation = \"{r}\"\ninsecure = true\n"))
            .collect();
        std::fs::write(config.join("registries.conf"), registries)?;
        std::fs::create_dir_all(home.join("run"))?;
        setup.user.chown_tree(&home)?;
        std::fs::set_permissions(home.join("run"), std::fs::Permissions::from_mode(0o700))?;
        let buildah = Buildah {
            user: setup.user.clone(),
            home,
            registry: setup.registry.clone(),
        };
        quiet(&mut buildah.buildah(&["info"])).context("`buildah info` fails as the test user")?;
        Ok(buildah)
    }

    fn buildah(&self, args: &[&str]) -> Command {
        let mut cmd = self.user.command("buildah");
        cmd.args(args)
            .env("HOME", &self.home)
            .env("XDG_RUNTIME_DIR", self.home.join("run"))
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("XDG_DATA_HOME", self.home.join(".local/share"));
        cmd
    }
}

impl Builder for Buildah {
    fn name(&self) -> &'static str {
        "Buildah"
    }

    fn version(&self) -> String {
        format!(
            "{} rootless, {}, overlay, export with `buildah push oci-archive:`",
            version_of("buildah", &["--version"]),
            version_of("runc", &["--version"])
        )
    }

    fn reset(&mut self) -> Result<()> {
        quiet(&mut self.buildah(&["rm", "--all"]))?;
        quiet(&mut self.buildah(&["rmi", "--all", "--force"]))
    }

    fn build(&mut self, context: &Path, tag: &str, out: &Path, log: &Path) -> Result<Measurement> {
        let registry = self.registry.clone();
        let build = self.buildah_build(context, &registry, tag, &[], log)?;
        Ok(build.then(self.push(tag, &format!("oci-archive:{}", out.display()), log)?))
    }

    fn ci_seed(&mut self, context: &Path, ci: &Ci, log: &Path) -> Result<()> {
        let tag = ci.image(":seed");
        let cache_to = format!("--cache-to={}", ci.image("-cache"));
        self.buildah_build(context, &ci.registry, &tag, &[&cache_to], log)?;
        self.push(&tag, &format!("docker://{tag}"), log)?;
        Ok(())
    }

    fn ci_build(
        &mut self,
        context: &Path,
        ci: &Ci,
        output: CiOutput,
        log: &Path,
    ) -> Result<Measurement> {
        let tag = ci.image(":ci");
        let cache_from = format!("--cache-from={}", ci.image("-cache"));
        let build = self.buildah_build(context, &ci.registry, &tag, &[&cache_from], log)?;
        let dest = match output {
            CiOutput::Archive(out) => format!("oci-archive:{}", out.display()),
            CiOutput::Push => format!("docker://{tag}"),
        };
        Ok(build.then(self.push(&tag, &dest, log)?))
    }
}

impl Buildah {
    fn buildah_build(
        &self,
        context: &Path,
        registry: &str,
        tag: &str,
        extra: &[&str],
        log: &Path,
    ) -> Result<Measurement> {
        let registry_arg = format!("--build-arg=REGISTRY={registry}");
        timed(
            self.buildah(&[
                "build",
                "--layers",
                "--runtime=runc",
                "--network=none",
                "--tls-verify=false",
                "--tag",
                tag,
                &registry_arg,
            ])
            .args(extra)
            .arg(context),
            &[],
            log,
        )
    }

    fn push(&self, tag: &str, dest: &str, log: &Path) -> Result<Measurement> {
        timed(
            &mut self.buildah(&["push", "--tls-verify=false", tag, dest]),
            &[],
            &log.with_extension("push.log"),
        )
    }
}

/// umstage itself, with a private state root: rootless as the test user, or
/// as root when asked (the `chroot` sandbox tier needs it).
pub struct Umstage {
    user: TestUser,
    exe: PathBuf,
    root: PathBuf,
    registry: String,
    /// `--sandbox` to pass, if any.
    sandbox: Option<String>,
    /// Run as root rather than as the test user.
    as_root: bool,
    /// Base images as OCI layouts (`name:tag`, layout dir, tag) for
    /// `--build-context`, when umstage cannot pull them from the registry.
    base_layouts: Vec<(String, PathBuf, String)>,
    /// Why the base images come from layouts, for the report.
    note: Option<String>,
}

/// How umstage is run in the bench.
pub struct UmstageOptions<'a> {
    /// The binary.
    pub exe: &'a Path,
    /// `--sandbox TIER`, passed through as given.
    pub sandbox: Option<String>,
    /// Run as root rather than as the test user.
    pub as_root: bool,
}

impl Umstage {
    /// Uses the `umstage` binary at `options.exe` (copied where the test user can run it).
    /// When it cannot pull the base images from the registry, it gets them as
    /// OCI layouts through `--build-context`, and the report says so.
    pub fn new(setup: &Setup, options: UmstageOptions) -> Result<Self> {
        let exe = setup.work.install_executable(options.exe)?;
        let root = setup.work.path().join("umstage-root");
        let mut umstage = Umstage {
            user: setup.user.clone(),
            exe,
            root,
            registry: setup.registry.clone(),
            sandbox: options.sandbox,
            as_root: options.as_root,
            base_layouts: Vec::new(),
            note: None,
        };
        quiet(umstage.command().args(["build", "--help"]))
            .context("this umstage has no working `build` command yet")?;
        let probe = setup.work.mkdir("umstage-probe")?;
        std::fs::write(
            probe.join("Dockerfile"),
            "ARG REGISTRY\nFROM ${REGISTRY}/busybox:latest\nRUN true\n",
        )?;
        let log = probe.join("build.log");
        if let Err(pull) = umstage.build(&probe, "bench/probe", &probe.join("out.tar"), &log) {
            let layouts = setup.work.mkdir("layouts")?;
            for image in setup.images {
                let copy = image.copy_to(&layouts.join(&image.name))?;
                umstage
                    .base_layouts
                    .push((image.name_tag(), copy.dir, copy.tag));
            }
            umstage
                .build(&probe, "bench/probe", &probe.join("out.tar"), &log)
                .context("umstage builds neither from the registry nor from OCI layouts")?;
            let reason = format!("{pull:#}");
            let reason = reason
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            umstage.note = Some(format!(
                "base images given as OCI layouts with `--build-context`, not pulled from \
                 the registry, so its cold runs skip the pull the peers do (pulling failed: {})",
                reason.trim()
            ));
        }
        Ok(umstage)
    }

    fn command(&self) -> Command {
        let mut cmd = if self.as_root {
            Command::new(&self.exe)
        } else {
            self.user.command(&self.exe)
        };
        cmd.env("HOME", self.root.with_extension("home"));
        cmd
    }

    /// `umstage build` with the bench's options, base images from `registry`.
    fn umstage_build(
        &self,
        context: &Path,
        registry: &str,
        extra: &[String],
        log: &Path,
    ) -> Result<Measurement> {
        let mut cmd = self.command();
        cmd.arg("build")
            .arg("--root")
            .arg(&self.root)
            .arg("--progress=plain")
            .arg(format!("--build-arg=REGISTRY={registry}"))
            .arg(format!("--insecure-registry={registry}"));
        if let Some(tier) = &self.sandbox {
            cmd.arg(format!("--sandbox={tier}"));
        }
        for (name_tag, dir, tag) in &self.base_layouts {
            cmd.arg(format!(
                "--build-context={registry}/{name_tag}=oci-layout://{}:{tag}",
                dir.display()
            ));
        }
        timed(cmd.args(extra).arg(context), &[], log)
    }
}

impl Builder for Umstage {
    fn name(&self) -> &'static str {
        "umstage"
    }

    fn version(&self) -> String {
        let version = Command::new(&self.exe).arg("--version").output().ok();
        let version = version
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let mut line = format!(
            "{version} {}, gzip layers",
            if self.as_root {
                "as root"
            } else {
                "rootless (the test user)"
            }
        );
        if let Some(tier) = &self.sandbox {
            line.push_str(&format!(", `--sandbox {tier}`"));
        }
        if let Some(note) = &self.note {
            line.push_str(&format!("; {note}"));
        }
        line
    }

    fn reset(&mut self) -> Result<()> {
        if !self.root.exists() {
            return Ok(());
        }
        if self.as_root {
            return quiet(Command::new("rm").arg("-rf").arg(&self.root));
        }
        // Files owned by subordinate ids go only from inside the user's namespace.
        quiet(
            self.user
                .command("unshare")
                .args(["--map-root-user", "--map-auto", "rm", "-rf"])
                .arg(&self.root),
        )
    }

    fn build(&mut self, context: &Path, tag: &str, out: &Path, log: &Path) -> Result<Measurement> {
        let extra = [
            format!("--tag={tag}"),
            format!("--output={}", out.display()),
        ];
        self.umstage_build(context, &self.registry, &extra, log)
    }

    fn ci_seed(&mut self, context: &Path, ci: &Ci, log: &Path) -> Result<()> {
        let extra = [
            format!(
                "--cache-to=type=registry,ref={},mode=max",
                ci.image(":cache")
            ),
            format!("--tag={}", ci.image(":seed")),
            "--push".to_owned(),
        ];
        self.umstage_build(context, &ci.registry, &extra, log)?;
        Ok(())
    }

    fn ci_build(
        &mut self,
        context: &Path,
        ci: &Ci,
        output: CiOutput,
        log: &Path,
    ) -> Result<Measurement> {
        let cache_from = format!("--cache-from=type=registry,ref={}", ci.image(":cache"));
        let extra = match output {
            CiOutput::Archive(out) => vec![cache_from, format!("--output={}", out.display())],
            CiOutput::Push => vec![
                cache_from,
                format!("--tag={}", ci.image(":ci")),
                "--push".to_owned(),
            ],
        };
        self.umstage_build(context, &ci.registry, &extra, log)
    }
}
