//! Hostile `RUN --mount` sources and targets: symlinks planted by an earlier stage or in the
//! context (absolute, relative, final, intermediate, chained) and `..`, used to read, write,
//! chmod and chown, and to persist into a later build through a cache mount. Canary files
//! outside the state root (in a temp dir and in the test user's home) must stay untouched, and
//! nothing of theirs may reach an image.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{Env, TestResult, assert_ok, stderr, text};

const HOST_SECRET: &str = "HOST-SECRET";

/// One entry as seen from the host: path, mode, owner, group, content.
type Seen = (PathBuf, u32, u32, u32, Vec<u8>);

/// A directory outside the state root holding a secret file; remembers what it looked like.
struct Canary {
    dir: PathBuf,
    before: Vec<Seen>,
}

impl Drop for Canary {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Canary {
    fn plant(dir: PathBuf, env: &Env) -> Result<Self, Box<dyn std::error::Error>> {
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("secret"), HOST_SECRET)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        fs::set_permissions(dir.join("secret"), fs::Permissions::from_mode(0o644))?;
        env.dir.user().chown_tree(&dir)?;
        let before = Self::snapshot(&dir)?;
        Ok(Self { dir, before })
    }

    fn snapshot(dir: &Path) -> Result<Vec<Seen>, Box<dyn std::error::Error>> {
        let mut entries = vec![dir.to_path_buf()];
        for entry in fs::read_dir(dir)? {
            entries.push(entry?.path());
        }
        entries.sort();
        entries
            .into_iter()
            .map(|path| {
                let meta = fs::symlink_metadata(&path)?;
                let content = if meta.is_file() {
                    fs::read(&path)?
                } else {
                    Vec::new()
                };
                Ok((path, meta.mode(), meta.uid(), meta.gid(), content))
            })
            .collect()
    }

    fn assert_untouched(&self, when: &str) -> TestResult {
        let now = Self::snapshot(&self.dir)?;
        assert_eq!(
            now,
            self.before,
            "{when}: the canary {} changed",
            self.dir.display()
        );
        Ok(())
    }
}

/// Builds `ctx` with `-o type=local` into `out`, returning the exported tree's path.
fn build_local(env: &Env, ctx: &Path, out: &str) -> (std::process::Output, PathBuf) {
    let dest = env.path(out);
    let output = env.umstage(
        &[
            "build",
            "--root",
            &env.path("state").to_string_lossy(),
            "--progress",
            "plain",
            "--build-context",
            &format!("busybox=oci-layout://{}", env.busybox.display()),
            "-o",
            &format!("type=local,dest={}", dest.display()),
            &ctx.to_string_lossy(),
        ],
        &[],
    );
    (output, dest)
}

fn read(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name)).unwrap_or_else(|e| format!("<{name}: {e}>"))
}

/// Every file under `dir` whose content holds the host's secret.
fn leaks(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => stack.push(path),
                Ok(m)
                    if m.is_file()
                        && fs::read(&path).is_ok_and(|c| {
                            c.windows(HOST_SECRET.len())
                                .any(|w| w == HOST_SECRET.as_bytes())
                        }) =>
                {
                    found.push(path);
                }
                _ => {}
            }
        }
    }
    found
}

/// The canaries: one beside the workspace, one in the test user's home.
fn canaries(env: &Env) -> Result<Vec<Canary>, Box<dyn std::error::Error>> {
    let mut canaries = vec![Canary::plant(env.path("canary"), env)?];
    let home = env.dir.user().home.clone();
    if home.is_dir() {
        // Tests run in parallel in one process: each gets its own.
        let name = format!(
            "umstage-canary-{}-{}",
            std::process::id(),
            env.dir.path().display().to_string().replace('/', "_")
        );
        canaries.push(Canary::plant(home.join(name), env)?);
    } else {
        eprintln!(
            "note: the test user has no home directory ({}): no canary there",
            home.display()
        );
    }
    Ok(canaries)
}

#[test]
fn mount_sources_through_symlinks_stay_inside_their_root() -> TestResult {
    let env = Env::new()?;
    let canaries = canaries(&env)?;
    let mut dockerfile = String::from("FROM busybox AS s\n");
    // Stage `s` holds, at each canary's host path, a copy of its own, and links to it of every
    // shape; resolved inside `s`, each names that copy, never the host's.
    for canary in &canaries {
        let host = canary.dir.display();
        let depth = "../".repeat(12);
        dockerfile.push_str(&format!(
            "RUN mkdir -p {host} /mid && echo stage-copy > {host}/secret && \
             ln -sfn {host} /abs && ln -sfn {depth}{rel} /rel && ln -sfn /abs /chained && \
             ln -sfn {host} /mid/link && ln -sfn {host}/secret /absfile\n",
            rel = host.to_string().trim_start_matches('/'),
        ));
    }
    dockerfile.push_str(
        "FROM busybox\n\
         RUN mkdir /results\n\
         RUN --mount=type=bind,from=s,source=/abs,target=/m cat /m/secret > /results/abs\n\
         RUN --mount=type=bind,from=s,source=rel,target=/m cat /m/secret > /results/rel\n\
         RUN --mount=type=bind,from=s,source=/chained,target=/m cat /m/secret > /results/chained\n\
         RUN --mount=type=bind,from=s,source=/mid/link/secret,target=/m cat /m > /results/intermediate\n\
         RUN --mount=type=bind,from=s,source=/absfile,target=/m cat /m > /results/final-file\n\
         RUN --mount=type=bind,from=s,source=/absfile,target=/m,rw sh -c 'echo pwned > /m' && echo ok > /results/rw-file\n\
         RUN --mount=type=bind,from=s,source=/abs,target=/m,rw sh -c 'echo pwned > /m/secret; echo pwned > /m/new; chmod 0700 /m; chown 1234:1234 /m/secret' && echo ok > /results/rw-dir\n\
         RUN --mount=type=cache,from=s,source=/chained,target=/c,id=evil,mode=0777,uid=1234,gid=1234 sh -c 'cat /c/secret > /results/cache; echo pwned > /c/secret; echo pwned > /c/new'\n\
         RUN --mount=type=tmpfs,target=/a/../tmpfs-target touch /tmpfs-target/x && echo ok > /results/target-dotdot\n",
    );
    let ctx = env.context("ctx", &[("Dockerfile", &dockerfile)])?;
    let (out, dest) = build_local(&env, &ctx, "out");
    assert_ok(&out);
    for name in [
        "abs",
        "rel",
        "chained",
        "intermediate",
        "final-file",
        "cache",
    ] {
        assert_eq!(read(&dest.join("results"), name), "stage-copy\n", "{name}");
    }
    for name in ["rw-file", "rw-dir", "target-dotdot"] {
        assert_eq!(read(&dest.join("results"), name), "ok\n", "{name}");
    }
    assert_eq!(
        leaks(&dest),
        Vec::<PathBuf>::new(),
        "host content in the image"
    );
    for canary in &canaries {
        canary.assert_untouched("after the build")?;
    }

    // The cache persists in the state root: a later build with the same seed reaches it, and
    // one naming only the id gets a cache of its own (BuildKit keys a seeded cache by both).
    let stage_s = &dockerfile[..dockerfile
        .find("FROM busybox\n")
        .unwrap_or(dockerfile.len())];
    let later_dockerfile = format!(
        "{stage_s}FROM busybox\n\
         RUN --mount=type=cache,from=s,source=/chained,target=/c,id=evil sh -c 'echo pwned > /c/again; chmod 0700 /c; cat /c/secret > /seen'\n\
         RUN --mount=type=cache,id=evil,target=/c sh -c 'echo pwned > /c/own; ls /c > /own'\n"
    );
    let later = env.context("ctx-later", &[("Dockerfile", &later_dockerfile)])?;
    let (out, dest) = build_local(&env, &later, "out-later");
    assert_ok(&out);
    assert_eq!(read(&dest, "seen"), "pwned\n");
    assert_eq!(read(&dest, "own"), "own\n");
    for canary in &canaries {
        canary.assert_untouched("after a later build of the same cache")?;
    }
    Ok(())
}

#[test]
fn a_cache_left_as_a_symlink_in_the_state_root_is_replaced_not_followed() -> TestResult {
    let env = Env::new()?;
    let canaries = canaries(&env)?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN --mount=type=cache,id=kept,target=/c sh -c 'echo pwned > /c/new; chmod 0700 /c; ls /c > /listed'\n",
        )],
    )?;
    let (out, _) = build_local(&env, &ctx, "first");
    assert_ok(&out);
    // What an older umstage left after a hostile seed: the cache instance is a host symlink.
    let mut replaced = 0;
    for entry in fs::read_dir(env.path("state/cache-mounts"))? {
        let instance = entry?.path().join("0");
        if instance.is_dir() {
            fs::remove_dir_all(&instance)?;
            std::os::unix::fs::symlink(&canaries[0].dir, &instance)?;
            std::os::unix::fs::lchown(
                &instance,
                Some(env.dir.user().uid),
                Some(env.dir.user().gid),
            )?;
            replaced += 1;
        }
    }
    assert_eq!(replaced, 1, "one cache instance expected");
    let ctx = env.context(
        "ctx2",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN --mount=type=cache,id=kept,target=/c sh -c 'echo pwned > /c/new; chmod 0700 /c; ls /c > /listed'\n",
        )],
    )?;
    let (out, dest) = build_local(&env, &ctx, "second");
    assert_ok(&out);
    assert_eq!(read(&dest, "listed"), "new\n");
    for canary in &canaries {
        canary.assert_untouched("after using the planted cache")?;
    }
    Ok(())
}

#[test]
fn the_bound_context_is_the_filtered_one_and_its_links_stay_inside() -> TestResult {
    let env = Env::new()?;
    let canaries = canaries(&env)?;
    let host = canaries[0].dir.clone();
    let ctx = env.context(
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM busybox\n\
                 RUN --mount=type=bind,target=/ctx ls -a /ctx > /listing\n\
                 RUN --mount=type=bind,target=/ctx,source=link cat /ctx/secret > /through-link\n\
                 RUN --mount=type=bind,target=/ctx,rw sh -c 'echo pwned > /ctx/link/secret; echo pwned > /ctx/kept.txt'; echo ok > /rw\n",
            ),
            (".dockerignore", "ignored.txt\nhidden/\n"),
            ("kept.txt", "kept"),
            ("ignored.txt", "must not be seen"),
            ("hidden/inner.txt", "must not be seen"),
        ],
    )?;
    // The context's own copy at the canary's path, and a link to it.
    let inside = ctx.join(host.strip_prefix("/")?);
    fs::create_dir_all(&inside)?;
    fs::write(inside.join("secret"), "context-copy\n")?;
    std::os::unix::fs::symlink(&host, ctx.join("link"))?;
    env.dir.user().chown_tree(&ctx)?;
    let (out, dest) = build_local(&env, &ctx, "out");
    assert_ok(&out);
    let listing = read(&dest, "listing");
    assert!(listing.contains("kept.txt"), "{listing}");
    assert!(!listing.contains("ignored.txt"), "{listing}");
    assert!(!listing.contains("hidden"), "{listing}");
    assert_eq!(read(&dest, "through-link"), "context-copy\n");
    // The filtered copy lives as long as the build.
    let left: Vec<_> = fs::read_dir(env.path("state/run"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("context-"))
        .collect();
    assert!(left.is_empty(), "left in the state root: {left:?}");
    assert_eq!(read(&dest, "rw"), "ok\n");
    assert_eq!(fs::read_to_string(inside.join("secret"))?, "context-copy\n");
    assert_eq!(fs::read_to_string(ctx.join("kept.txt"))?, "kept");
    for canary in &canaries {
        canary.assert_untouched("after binding the context")?;
    }

    // An ignored file is not there to mount, and the message says why it may be missing.
    let ctx = env.context(
        "ctx-ignored",
        &[
            (
                "Dockerfile",
                "FROM busybox\nRUN --mount=type=bind,target=/x,source=ignored.txt cat /x\n",
            ),
            (".dockerignore", "ignored.txt\n"),
            ("ignored.txt", "must not be seen"),
        ],
    )?;
    let (out, _) = build_local(&env, &ctx, "out-ignored");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(stderr(&out).contains(".dockerignore"), "{}", text(&out));
    Ok(())
}

#[test]
fn a_writable_bind_of_a_fifo_is_refused_not_waited_on() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox AS s\nRUN mkfifo /fifo\n\
             FROM busybox\nRUN --mount=type=bind,from=s,source=/fifo,target=/f,rw true\n",
        )],
    )?;
    let (out, _) = build_local(&env, &ctx, "out");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(stderr(&out).contains("regular file"), "{}", text(&out));
    Ok(())
}
