//! End to end, caches someone else wrote (a shared CI cache directory, a registry): what they
//! hold that is not what they should be is a warning and a rebuild of the steps it concerns,
//! never a hang, a broken image or a damaged state root.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Env, TestResult, assert_ok, ran, stderr, text};
use serde_json::Value;
use sha2::Digest as _;

const DOCKERFILE: &str = "FROM busybox\nRUN echo a > /a\nCOPY f /f\nRUN cat /f > /g\n";
const LAST_RUN: &str = "RUN cat /f > /g";

/// Builds the context `ctx` in a fresh state root `root` with `extra` arguments; a build that
/// hangs is an error (where `Env::build_in` would wait forever).
fn build_fresh(env: &Env, root: &str, ctx: &Path, extra: &[&str]) -> Result<Output, String> {
    env.dir.mkdir(root).map_err(|e| e.to_string())?;
    env.build_unless_stuck(&env.path(root), ctx, &format!("{root}.tar"), extra)
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// A cache directory (`--cache-to type=local`), read and altered as files, with no umstage
/// code.
struct CacheDir(PathBuf);

impl CacheDir {
    fn blob(&self, digest: &str) -> PathBuf {
        self.0
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    fn read(&self, digest: &str) -> Result<Value, Box<dyn std::error::Error>> {
        Ok(serde_json::from_slice(&fs::read(self.blob(digest))?)?)
    }

    fn write(&self, value: &Value) -> Result<(String, usize), Box<dyn std::error::Error>> {
        let bytes = serde_json::to_vec(value)?;
        let digest = sha256(&bytes);
        fs::write(self.blob(&digest), &bytes)?;
        Ok((digest, bytes.len()))
    }

    /// The index, the manifest and the records.
    fn parts(&self) -> Result<(Value, Value, Value), Box<dyn std::error::Error>> {
        let index: Value = serde_json::from_slice(&fs::read(self.0.join("index.json"))?)?;
        let manifest = self.read(
            index["manifests"][0]["digest"]
                .as_str()
                .ok_or("no manifest")?,
        )?;
        let config = self.read(manifest["config"]["digest"].as_str().ok_or("no config")?)?;
        Ok((index, manifest, config))
    }

    /// The layer the most records need last: the last step's.
    fn last_layer(&self) -> Result<String, Box<dyn std::error::Error>> {
        let (_, _, config) = self.parts()?;
        config["records"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["record"]["layers"].as_array())
            .max_by_key(|l| l.len())
            .and_then(|l| l.last())
            .and_then(|l| l["digest"].as_str())
            .map(str::to_string)
            .ok_or_else(|| "no record with layers".into())
    }

    /// A copy of this cache in `to`, its records changed by `change` (with the manifest and
    /// the index rewritten to match, so that only the records are wrong).
    fn altered(
        &self,
        to: PathBuf,
        change: impl Fn(&mut Value),
    ) -> Result<CacheDir, Box<dyn std::error::Error>> {
        umstage_testutil::run(Command::new("cp").arg("-a").arg(&self.0).arg(&to))?;
        let copy = CacheDir(to);
        let (mut index, mut manifest, mut config) = copy.parts()?;
        change(&mut config);
        let (digest, size) = copy.write(&config)?;
        manifest["config"]["digest"] = digest.into();
        manifest["config"]["size"] = size.into();
        let (digest, size) = copy.write(&manifest)?;
        index["manifests"][0]["digest"] = digest.into();
        index["manifests"][0]["size"] = size.into();
        fs::write(copy.0.join("index.json"), serde_json::to_vec(&index)?)?;
        Ok(copy)
    }
}

/// Calls `change` on every layer of every record that is `digest`.
fn each_layer(config: &mut Value, digest: &str, change: impl Fn(&mut Value)) {
    for record in config["records"].as_array_mut().into_iter().flatten() {
        for layer in record["record"]["layers"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            if layer["digest"] == digest {
                change(layer);
            }
        }
    }
}

/// The context and a `mode=max` cache of its build exported to `cache`.
fn exported(env: &Env) -> Result<(PathBuf, CacheDir), Box<dyn std::error::Error>> {
    let ctx = env.context("ctx", &[("Dockerfile", DOCKERFILE), ("f", "f\n")])?;
    let cache = env.path("cache");
    let to = format!("type=local,dest={},mode=max", cache.display());
    let first = env.build(&ctx, "first.tar", &["--cache-to", &to]);
    assert_ok(&first);
    Ok((ctx, CacheDir(cache)))
}

fn from(cache: &CacheDir) -> String {
    format!("type=local,src={}", cache.0.display())
}

fn mkfifo(path: &Path) -> TestResult {
    fs::remove_file(path)?;
    umstage_testutil::run(Command::new("mkfifo").arg(path))?;
    Ok(())
}

#[test]
fn a_fifo_or_a_device_in_a_cache_directory_is_refused_not_waited_on() -> TestResult {
    let env = Env::new()?;
    let (ctx, cache) = exported(&env)?;
    let last = cache.last_layer()?;

    // An index that is a FIFO: the cache is unreadable, the build goes on without it.
    let fifo_index = cache.altered(env.path("fifo-index"), |_| ())?;
    mkfifo(&fifo_index.0.join("index.json"))?;
    let out = build_fresh(
        &env,
        "root-fifo-index",
        &ctx,
        &["--cache-from", &from(&fifo_index)],
    )?;
    assert_ok(&out);
    assert!(
        stderr(&out).contains("index.json is not a regular file; building without it"),
        "{}",
        text(&out)
    );
    assert_eq!(ran(&out).len(), 3, "{}", text(&out));

    // A layer that is a FIFO, or a device that never ends: its step runs again.
    let fifo_blob = cache.altered(env.path("fifo-blob"), |_| ())?;
    mkfifo(&fifo_blob.blob(&last))?;
    let zero_blob = cache.altered(env.path("zero-blob"), |_| ())?;
    fs::remove_file(zero_blob.blob(&last))?;
    std::os::unix::fs::symlink("/dev/zero", zero_blob.blob(&last))?;
    for (root, dir) in [
        ("root-fifo-blob", &fifo_blob),
        ("root-zero-blob", &zero_blob),
    ] {
        let out = build_fresh(&env, root, &ctx, &["--cache-from", &from(dir)])?;
        assert_ok(&out);
        assert_eq!(ran(&out), [LAST_RUN], "{}", text(&out));
    }
    Ok(())
}

/// The layers of the image in an OCI archive whose size in the manifest is not the size of
/// their blob in the archive, read with `tar`.
fn misdescribed_layers(archive: &Path) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    umstage_testutil::run(
        Command::new("tar")
            .arg("-xf")
            .arg(archive)
            .arg("-C")
            .arg(dir.path()),
    )?;
    let layout = CacheDir(dir.path().to_path_buf());
    let index: Value = serde_json::from_slice(&fs::read(dir.path().join("index.json"))?)?;
    let manifest = layout.read(
        index["manifests"][0]["digest"]
            .as_str()
            .ok_or("no manifest")?,
    )?;
    let mut wrong = Vec::new();
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        let digest = layer["digest"].as_str().ok_or("no digest")?;
        let len = fs::metadata(layout.blob(digest))?.len();
        if layer["size"].as_u64() != Some(len) {
            wrong.push(format!(
                "{digest}: {} in the manifest, {len} bytes",
                layer["size"]
            ));
        }
    }
    Ok(wrong)
}

#[test]
fn a_cache_record_that_disagrees_with_its_blob_or_its_config_is_not_used() -> TestResult {
    let env = Env::new()?;
    let (ctx, cache) = exported(&env)?;
    let last = cache.last_layer()?;

    // A size that is not the blob's would be copied into the exported manifest.
    let wrong_size = cache.altered(env.path("wrong-size"), |config| {
        each_layer(config, &last, |l| l["size"] = 1.into())
    })?;
    // A media type no layer has, and a layer list shorter than the config's diff ids.
    let wrong_type = cache.altered(env.path("wrong-type"), |config| {
        each_layer(config, &last, |l| l["media_type"] = "text/html".into())
    })?;
    let short = cache.altered(env.path("short"), |config| {
        for record in config["records"].as_array_mut().into_iter().flatten() {
            if let Some(layers) = record["record"]["layers"].as_array_mut()
                && layers.iter().any(|l| l["digest"] == last.as_str())
            {
                layers.truncate(1);
            }
        }
    })?;
    for (root, dir, warned) in [
        ("root-size", &wrong_size, false),
        ("root-type", &wrong_type, true),
        ("root-short", &short, true),
    ] {
        let out = build_fresh(&env, root, &ctx, &["--cache-from", &from(dir)])?;
        assert_ok(&out);
        assert_eq!(ran(&out), [LAST_RUN], "{root}: {}", text(&out));
        assert_eq!(
            stderr(&out).contains("records are unusable and not used"),
            warned,
            "{root}: {}",
            text(&out)
        );
        assert_eq!(
            misdescribed_layers(&env.path(&format!("{root}.tar")))?,
            Vec::<String>::new(),
            "{root}"
        );
    }
    // The state root the altered cache was offered to builds on, with the step it ran kept.
    let again = env.build_in(&env.path("root-size"), &ctx, "again.tar", &[], &[]);
    assert_ok(&again);
    assert!(
        !ran(&again).contains(&LAST_RUN.to_string()),
        "{}",
        text(&again)
    );
    Ok(())
}

#[test]
fn a_registry_cache_record_whose_layer_size_is_not_the_manifests_is_not_used() -> TestResult {
    let env = Env::new()?;
    let registry = umstage_testutil::registry::Registry::start()?;
    let (ctx, cache) = exported(&env)?;
    let last = cache.last_layer()?;
    // The manifest lists the blob as it is (the registry checks that); the record does not.
    let wrong_size = cache.altered(env.path("wrong-size"), |config| {
        each_layer(config, &last, |l| l["size"] = 1.into())
    })?;
    let reference = registry.reference("wrong-size:1");
    umstage_testutil::run(
        Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                "--preserve-digests",
            ])
            .arg(format!("oci:{}:latest", wrong_size.0.display()))
            .arg(format!("docker://{reference}")),
    )?;
    let from = format!("type=registry,ref={reference}");
    let out = build_fresh(&env, "root-registry", &ctx, &["--cache-from", &from])?;
    assert_ok(&out);
    assert_eq!(ran(&out), [LAST_RUN], "{}", text(&out));
    assert_eq!(
        misdescribed_layers(&env.path("root-registry.tar"))?,
        Vec::<String>::new()
    );
    Ok(())
}

#[test]
fn text_a_cache_carries_cannot_drive_the_terminal_or_forge_progress_lines() -> TestResult {
    let env = Env::new()?;
    let (ctx, cache) = exported(&env)?;
    let last = cache.last_layer()?;
    // The last step's record is gone and its carried command is hostile: the miss is
    // explained against it.
    let hostile = cache.altered(env.path("hostile"), |config| {
        if let Some(records) = config["records"].as_array_mut() {
            records.retain(|r| {
                !r["record"]["layers"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|l| l["digest"] == last.as_str()))
            });
        }
        for step in config["explain"]["steps"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            for input in step["inputs"].as_array_mut().into_iter().flatten() {
                if input[0] == "command" && input[1] == "/bin/sh -c cat /f > /g" {
                    input[1] = "x\u{1b}]0;owned\u{7}\n#9 DONE 0.0s\nWARNING: forged".into();
                }
            }
        }
    })?;
    let out = build_fresh(
        &env,
        "root-hostile",
        &ctx,
        &["--cache-from", &from(&hostile)],
    )?;
    assert_ok(&out);
    assert_eq!(ran(&out), [LAST_RUN], "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains(r"cache miss: command changed (was x\u{1b}]0;owned\u{7}\n#9 DONE"),
        "{err}"
    );
    assert!(!err.contains('\u{1b}'), "{err:?}");
    assert!(
        !err.lines().any(|l| l.starts_with("WARNING: forged")),
        "{err}"
    );
    Ok(())
}
