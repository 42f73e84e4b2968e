//! Shared by the end-to-end test files: a workspace per test (a directory the unprivileged test
//! user owns, the binary, the busybox base image), running `umstage` as that user, and readers
//! of what it wrote that share no code with umstage.

#![allow(dead_code)]

pub mod dockerd;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;
use umstage_testutil::archive::{self, Transport, Unpacked};
use umstage_testutil::images;
use umstage_testutil::user::{SharedDir, TestUser};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A workspace for one test: a directory the test user owns, the binary, the busybox base image.
pub struct Env {
    pub dir: SharedDir,
    pub bin: PathBuf,
    pub busybox: PathBuf,
}

impl Env {
    pub fn new() -> Result<Self, Box<dyn std::error::Error>> {
        let user = TestUser::get()?;
        let dir = SharedDir::new(&user)?;
        let bin = dir.install_executable(Path::new(env!("CARGO_BIN_EXE_umstage")))?;
        let busybox = dir.path().join("busybox-layout");
        images::busybox()?.copy_to(&busybox)?;
        dir.mkdir("state")?;
        Ok(Env { dir, bin, busybox })
    }

    /// Writes a context directory `name` with these files (path, content); returns its path.
    pub fn context(
        &self,
        name: &str,
        files: &[(&str, &str)],
    ) -> Result<PathBuf, Box<dyn std::error::Error>> {
        let ctx = self.dir.path().join(name);
        for (path, content) in files {
            let p = ctx.join(path);
            if let Some(parent) = p.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::write(&p, content)?;
        }
        fs::create_dir_all(&ctx)?;
        self.dir.user().chown_tree(self.dir.path())?;
        Ok(ctx)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Runs `umstage ARGS` as the test user, with busybox as a named context.
    pub fn umstage(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let mut cmd = self.dir.user().command(&self.bin);
        cmd.args(args);
        cmd.env("XDG_DATA_HOME", self.path("xdg"));
        for (k, v) in envs {
            cmd.env(k, v);
        }
        // Another test's fork may briefly hold the freshly copied binary open for writing.
        for _ in 0..20 {
            match cmd.output() {
                Ok(out) if String::from_utf8_lossy(&out.stderr).contains("Text file busy") => {}
                Ok(out) => return out,
                Err(e) if e.raw_os_error() == Some(26) => {}
                Err(e) => panic!("cannot run umstage: {e}"),
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("cannot run umstage: its binary stayed busy");
    }

    /// Runs `umstage ARGS` as the test user with `input` on its standard input.
    pub fn umstage_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        use std::process::Stdio;
        let mut cmd = self.dir.user().command(&self.bin);
        cmd.args(args)
            .env("XDG_DATA_HOME", self.path("xdg"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("cannot run umstage");
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input)
                .expect("cannot write umstage's stdin");
        }
        child.wait_with_output().expect("cannot wait for umstage")
    }

    /// The arguments `build_in` passes before the extra ones: state root, plain progress,
    /// busybox as a named context, output.
    pub fn build_args(&self, out: &str) -> Vec<String> {
        vec![
            "build".into(),
            "--root".into(),
            self.path("state").to_string_lossy().into_owned(),
            "--progress".into(),
            "plain".into(),
            "--build-context".into(),
            format!("busybox=oci-layout://{}", self.busybox.display()),
            "-o".into(),
            self.path(out).to_string_lossy().into_owned(),
        ]
    }

    /// `umstage build` of `ctx` into `out` with the plain progress; extra args before the context.
    pub fn build(&self, ctx: &Path, out: &str, extra: &[&str]) -> Output {
        self.build_env(ctx, out, extra, &[])
    }

    pub fn build_env(
        &self,
        ctx: &Path,
        out: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Output {
        self.build_in(&self.path("state"), ctx, out, extra, envs)
    }

    pub fn build_in(
        &self,
        root: &Path,
        ctx: &Path,
        out: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Output {
        let bb = format!("busybox=oci-layout://{}", self.busybox.display());
        let out = self.path(out);
        let mut args: Vec<&str> = vec![
            "build",
            "--root",
            root.to_str().unwrap_or_default(),
            "--progress",
            "plain",
            "--build-context",
            &bb,
            "-o",
            out.to_str().unwrap_or_default(),
        ];
        args.extend_from_slice(extra);
        let ctx = ctx.to_string_lossy().into_owned();
        args.push(&ctx);
        self.umstage(&args, envs)
    }

    /// `build_in` for a build that may hang: one that has not ended after [`STUCK`] is sent
    /// SIGTERM, then killed if that does not end it within a minute, and is an error saying so.
    pub fn build_unless_stuck(
        &self,
        root: &Path,
        ctx: &Path,
        out: &str,
        extra: &[&str],
    ) -> Result<Output, String> {
        let mut args = self.build_args(out);
        args[2] = root.display().to_string();
        args.extend(extra.iter().map(|a| a.to_string()));
        args.push(ctx.display().to_string());
        let mut cmd = self.dir.user().command(&self.bin);
        cmd.args(&args)
            .env("XDG_DATA_HOME", self.path("xdg"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| e.to_string())?;
        let ended = |child: &mut std::process::Child, limit: Duration| {
            let started = Instant::now();
            while started.elapsed() < limit {
                if !matches!(child.try_wait(), Ok(None)) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        };
        if ended(&mut child, STUCK) {
            return child.wait_with_output().map_err(|e| e.to_string());
        }
        // The child is umstage itself (the test user's command execs it).
        let _ = umstage_testutil::run(
            std::process::Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string()),
        );
        let what = if ended(&mut child, Duration::from_secs(60)) {
            "the build hung until SIGTERM"
        } else {
            let _ = child.kill();
            "the build hung, and SIGTERM did not end it"
        };
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        Err(format!("{what}:\n{}", text(&out)))
    }
}

/// A build that has not ended after this long is stuck.
pub const STUCK: Duration = Duration::from_secs(180);

pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn assert_ok(out: &Output) {
    assert!(out.status.success(), "umstage failed:\n{}", text(out));
}

pub fn unpack(env: &Env, archive: &str) -> Result<Unpacked, Box<dyn std::error::Error>> {
    Ok(archive::umoci_unpack(
        &env.path(archive),
        Transport::OciArchive,
    )?)
}

pub fn layers(env: &Env, archive: &str) -> Result<Unpacked, Box<dyn std::error::Error>> {
    Ok(archive::apply_layers(
        &env.path(archive),
        Transport::OciArchive,
    )?)
}

/// The image config exactly as stored in the archive, read with `tar` and `jq`-free JSON
/// parsing (skopeo drops Docker's extensions such as `Shell` and `OnBuild` when it parses).
pub fn config(env: &Env, archive: &str) -> Result<Value, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    umstage_testutil::run(
        std::process::Command::new("tar")
            .arg("-xf")
            .arg(env.path(archive))
            .arg("-C")
            .arg(dir.path()),
    )?;
    let blob = |digest: &Value| -> Result<Value, Box<dyn std::error::Error>> {
        let hex = digest
            .as_str()
            .and_then(|d| d.strip_prefix("sha256:"))
            .ok_or("bad digest")?;
        Ok(serde_json::from_slice(&fs::read(
            dir.path().join("blobs/sha256").join(hex),
        )?)?)
    };
    let index: Value = serde_json::from_slice(&fs::read(dir.path().join("index.json"))?)?;
    let manifest = blob(&index["manifests"][0]["digest"])?;
    blob(&manifest["config"]["digest"])
}

/// The last entry for `path` (no leading `/`) in any layer: what the image holds there.
pub fn entry(image: &Unpacked, path: &str) -> Option<archive::TarEntry> {
    image
        .layers
        .iter()
        .rev()
        .flat_map(|l| l.entries.iter())
        .find(|e| e.path.trim_end_matches('/') == path)
        .cloned()
}

/// The `created_by` of every history entry, in order.
pub fn history(config: &Value) -> Vec<String> {
    config["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|e| e["created_by"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Standard error as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs an image archive's `manifest.json` through `tar`: Docker's view of the archive.
pub fn docker_manifest(env: &Env, archive: &str) -> Result<Value, Box<dyn std::error::Error>> {
    let text = umstage_testutil::run_stdout(
        std::process::Command::new("tar")
            .arg("-xOf")
            .arg(env.path(archive))
            .arg("manifest.json"),
    )?;
    Ok(serde_json::from_str(&text)?)
}

/// The words after the step prefix (`#N 0.012 `) of each output line that starts with `prefix`.
pub fn lines_with<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
    out.lines()
        .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest))
        .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest))
        .filter(|l| l.starts_with(prefix))
        .collect()
}

/// The RUN and COPY steps the plain progress shows as run rather than cached, by their text.
pub fn ran(out: &Output) -> Vec<String> {
    let err = stderr(out);
    let mut texts = std::collections::HashMap::new();
    let mut ran = Vec::new();
    for line in err.lines() {
        let Some((n, rest)) = line.split_once(' ') else {
            continue;
        };
        if let Some((_, text)) = rest.split_once("] ")
            && (text.starts_with("RUN ") || text.starts_with("COPY "))
        {
            texts.insert(n.to_string(), text.to_string());
        } else if rest.starts_with("DONE ")
            && let Some(text) = texts.get(n)
        {
            ran.push(text.clone());
        }
    }
    ran
}

/// `umstage build` of `ctx` into `out` in the sandbox tier `tier`, with the plain progress.
pub fn build_in_tier(env: &Env, ctx: &Path, out: &str, tier: &str) -> Output {
    env.build(ctx, out, &["--sandbox", tier, "--progress", "plain"])
}

/// What a tier that records owners must show of the owners the build stage of the tiers'
/// `OWNERS` Dockerfile sets: in its own `stat`s (`log`) and in the image (`archive`).
pub fn assert_owners_kept(env: &Env, log: &str, archive: &str) -> TestResult {
    assert_eq!(
        lines_with(log, "same "),
        ["same 1234:55 4755 /out/f", "same 7:8 755 /out/sub"],
        "{log}"
    );
    assert_eq!(lines_with(log, "later "), ["later 1234:55 /out/f"], "{log}");
    assert_eq!(lines_with(log, "back "), ["back 0:0"], "{log}");
    let image = layers(env, archive)?;
    let f = entry(&image, "res/f").ok_or("res/f missing")?;
    assert_eq!((f.uid, f.gid, f.mode.as_str()), (1234, 55, "-rwsr-xr-x"));
    let sub = entry(&image, "res/sub").ok_or("res/sub missing")?;
    assert_eq!((sub.uid, sub.gid), (7, 8));
    let g = entry(&image, "g").ok_or("g missing")?;
    assert_eq!((g.uid, g.gid), (42, 43));
    let back = entry(&image, "res/back").ok_or("res/back missing")?;
    assert_eq!((back.uid, back.gid), (0, 0));
    Ok(())
}

/// The last layer of the image in `archive` as Docker's `manifest.json` names it:
/// `blobs/sha256/HEX`, where the state root's content store keeps it too.
pub fn last_layer_path(env: &Env, archive: &str) -> Result<String, Box<dyn std::error::Error>> {
    let manifest = docker_manifest(env, archive)?;
    Ok(manifest[0]["Layers"]
        .as_array()
        .and_then(|l| l.last())
        .and_then(|l| l.as_str())
        .ok_or("no layers in manifest.json")?
        .to_owned())
}

/// A registry serving busybox, a context `name` building `FROM` it, and a first build (in the
/// default state root, into `first.tar`) that exported its cache with `mode=max` to the
/// registry as `NAME-cache:1`.
pub fn registry_with_cache(
    env: &Env,
    name: &str,
) -> Result<RegistryCache, Box<dyn std::error::Error>> {
    let registry = umstage_testutil::registry::Registry::start()?;
    let base = images::busybox()?.push(&registry)?;
    let ctx = env.context(
        name,
        &[(
            "Dockerfile",
            &format!("FROM {base}\nRUN echo made > /made\n"),
        )],
    )?;
    let cache = format!(
        "type=registry,ref={}",
        registry.reference(&format!("{name}-cache:1"))
    );
    let first = env.build(
        &ctx,
        "first.tar",
        &["--cache-to", &format!("{cache},mode=max")],
    );
    assert_ok(&first);
    Ok(RegistryCache {
        registry,
        base,
        ctx,
        cache,
    })
}

/// What [`registry_with_cache`] made.
pub struct RegistryCache {
    pub registry: umstage_testutil::registry::Registry,
    /// The busybox reference in the registry.
    pub base: String,
    pub ctx: PathBuf,
    /// The cache's `type=registry,ref=` value.
    pub cache: String,
}
