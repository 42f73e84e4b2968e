//! Hostile paths, end to end: symlinks (absolute, relative, final, intermediate, chained) and
//! `..` planted in the context, a named context, a base image's layers or an earlier RUN step,
//! used by COPY and ADD (reading and writing), WORKDIR, `--chown`, `--chmod` and the filesystem
//! exports. Canary trees outside the state root (one in a temp dir, one in the test user's home)
//! must come out byte for byte, mode and owner unchanged, and their secret must appear nowhere
//! in what the build wrote.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Env, TestResult, assert_ok, unpack};
use sha2::Digest as _;
use umstage_testutil::user::SharedDir;

type Error = Box<dyn std::error::Error>;

/// Host files a build must never read, write, chmod or chown.
struct Canary {
    dir: PathBuf,
    secret: String,
}

/// What one entry of a canary tree is: its bytes (for files), link target, mode and owner.
type Fingerprint = BTreeMap<PathBuf, (u32, u32, u32, Vec<u8>)>;

impl Canary {
    /// `dir/secret` (0640) and `dir/sub/inner` (0600), owned by the test user so that only
    /// umstage's own confinement, not file permissions, keeps a build out.
    fn plant(env: &Env, dir: PathBuf, tag: &str) -> Result<Self, Error> {
        let secret = format!("HOST-SECRET-{tag}-{}", std::process::id());
        fs::create_dir_all(dir.join("sub"))?;
        fs::write(dir.join("secret"), format!("{secret}\n"))?;
        fs::write(dir.join("sub/inner"), format!("{secret} inner\n"))?;
        set_mode(&dir.join("secret"), 0o640)?;
        set_mode(&dir.join("sub/inner"), 0o600)?;
        env.dir.user().chown_tree(&dir)?;
        Ok(Canary { dir, secret })
    }

    fn fingerprint(&self) -> Result<Fingerprint, Error> {
        let mut out = Fingerprint::new();
        let mut stack = vec![self.dir.clone()];
        while let Some(path) = stack.pop() {
            let meta = fs::symlink_metadata(&path)?;
            let content = if meta.is_file() {
                fs::read(&path)?
            } else if meta.file_type().is_symlink() {
                fs::read_link(&path)?.into_os_string().into_encoded_bytes()
            } else {
                for entry in fs::read_dir(&path)? {
                    stack.push(entry?.path());
                }
                Vec::new()
            };
            out.insert(path, (meta.mode(), meta.uid(), meta.gid(), content));
        }
        Ok(out)
    }
}

/// Removes a directory in the test user's home when the test ends, however it ends.
struct HomeDir(PathBuf);

impl Drop for HomeDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// A symlink's target that climbs far above any root and then names `to`.
fn climbing(to: &Path) -> String {
    format!("{}{}", "../".repeat(12), to.display()).replace("//", "/")
}

/// Writes `data` as a blob of the OCI layout at `dir`; returns its digest and size.
fn blob(dir: &Path, data: &[u8]) -> Result<(String, usize), Error> {
    let hex = hex::encode(sha2::Sha256::digest(data));
    fs::write(dir.join("blobs/sha256").join(&hex), data)?;
    Ok((format!("sha256:{hex}"), data.len()))
}

fn read_blob(dir: &Path, digest: &serde_json::Value) -> Result<serde_json::Value, Error> {
    let hex = digest
        .as_str()
        .and_then(|d| d.strip_prefix("sha256:"))
        .ok_or("bad digest")?;
    Ok(serde_json::from_slice(&fs::read(
        dir.join("blobs/sha256").join(hex),
    )?)?)
}

/// The busybox image with extra layers on top, each the tar (made by GNU tar, owners 0:0) of
/// `members` of a staging directory, so a layer can hold a whiteout under a path that a lower
/// layer made a symlink, without a directory entry for it.
fn image_with_layers(env: &Env, name: &str, layers: &[(&Path, &[&str])]) -> Result<PathBuf, Error> {
    let dir = env.path(name);
    umstage_testutil::images::busybox()?.copy_to(&dir)?;
    let index_path = dir.join("index.json");
    let mut index: serde_json::Value = serde_json::from_slice(&fs::read(&index_path)?)?;
    let mut manifest = read_blob(&dir, &index["manifests"][0]["digest"])?;
    let mut config = read_blob(&dir, &manifest["config"]["digest"])?;
    for (staging, members) in layers {
        let tar = umstage_testutil::run(
            Command::new("tar")
                .args([
                    "--owner=0",
                    "--group=0",
                    "--numeric-owner",
                    "--no-recursion",
                ])
                .args(["-cf", "-", "-C"])
                .arg(staging)
                .args(*members),
        )?
        .stdout;
        let (digest, size) = blob(&dir, &tar)?;
        manifest["layers"]
            .as_array_mut()
            .ok_or("manifest without layers")?
            .push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": digest, "size": size,
            }));
        config["rootfs"]["diff_ids"]
            .as_array_mut()
            .ok_or("config without diff_ids")?
            .push(digest.into());
    }
    let (digest, size) = blob(&dir, config.to_string().as_bytes())?;
    manifest["config"]["digest"] = digest.into();
    manifest["config"]["size"] = size.into();
    let (digest, size) = blob(&dir, manifest.to_string().as_bytes())?;
    index["manifests"][0]["digest"] = digest.into();
    index["manifests"][0]["size"] = size.into();
    fs::write(&index_path, index.to_string())?;
    env.dir.user().chown_tree(&dir)?;
    Ok(dir)
}

/// Every regular file under `dir` that holds `needle`.
fn files_holding(dir: &Path, needle: &str) -> Result<Vec<PathBuf>, Error> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            for entry in fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        } else if meta.is_file() && contains(&fs::read(&path)?, needle) {
            found.push(path);
        }
    }
    Ok(found)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Two canaries, a hostile base image and a hostile context, shared by the tests below.
struct Arena {
    env: Env,
    _tmp: SharedDir,
    _home: HomeDir,
    tmp: Canary,
    home: Canary,
}

impl Arena {
    fn new() -> Result<Self, Error> {
        let env = Env::new()?;
        let tmp = SharedDir::new(env.dir.user())?;
        let tmp_canary = Canary::plant(&env, tmp.path().join("canary"), "tmp")?;
        let home_dir = env.dir.user().home.join(format!(
            "umstage-hostile-canary-{}-{}",
            std::process::id(),
            tmp.path()
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("x")
        ));
        let home_guard = HomeDir(home_dir.clone());
        let home = Canary::plant(&env, home_dir, "home")?;
        Ok(Arena {
            env,
            _tmp: tmp,
            _home: home_guard,
            tmp: tmp_canary,
            home,
        })
    }

    fn fingerprints(&self) -> Result<(Fingerprint, Fingerprint), Error> {
        Ok((self.tmp.fingerprint()?, self.home.fingerprint()?))
    }

    /// Checks that both canaries are as they were and that no secret is under `dir`.
    fn assert_untouched(&self, before: &(Fingerprint, Fingerprint), dir: &Path) -> TestResult {
        let after = self.fingerprints()?;
        assert_eq!(before.0, after.0, "the temp-dir canary changed");
        assert_eq!(before.1, after.1, "the home canary changed");
        for canary in [&self.tmp, &self.home] {
            let leaked = files_holding(dir, &canary.secret)?;
            assert!(leaked.is_empty(), "host secret leaked into {leaked:?}");
        }
        Ok(())
    }

    /// Stages a file tree for a layer: (path, what) where what is `>content`, `@target`
    /// (symlink) or `/` (directory). Returns the staging directory.
    fn stage(&self, name: &str, entries: &[(String, String)]) -> Result<PathBuf, Error> {
        let dir = self.env.path(name);
        fs::create_dir_all(&dir)?;
        for (path, what) in entries {
            let p = dir.join(path.trim_start_matches('/'));
            if let Some(parent) = p.parent() {
                fs::create_dir_all(parent)?;
            }
            if let Some(content) = what.strip_prefix('>') {
                fs::write(&p, content)?;
            } else if let Some(target) = what.strip_prefix('@') {
                symlink(target, &p)?;
            } else {
                fs::create_dir_all(&p)?;
            }
        }
        Ok(dir)
    }
}

/// The image path at which a host path's mirror sits: the same path, inside the root.
fn rel(path: &Path) -> String {
    path.display()
        .to_string()
        .trim_start_matches('/')
        .to_string()
}

#[test]
fn copy_add_workdir_chown_and_chmod_through_hostile_symlinks_stay_in_their_roots() -> TestResult {
    let arena = Arena::new()?;
    let env = &arena.env;
    let (c, h) = (arena.tmp.dir.clone(), arena.home.dir.clone());
    let before = arena.fingerprints()?;

    // Base image: symlinks to both canaries every way, and a mirror of the temp canary's path
    // inside the image, so in-root resolution has something to find.
    let l = |p: &str, w: String| (p.to_string(), w);
    let layer = arena.stage(
        "layer-links",
        &[
            l("img-abs", format!("@{}", c.display())),
            l("img-rel", format!("@{}", climbing(&c))),
            l("img-home", format!("@{}", h.display())),
            l("img-secret", format!("@{}/secret", c.display())),
            l("img-home-secret", format!("@{}/secret", h.display())),
            l("img-chain1", "@img-chain2".into()),
            l("img-chain2", "@/img-abs".into()),
            l("img-dotdot", "@../../../..".into()),
            l(&format!("{}/secret", rel(&c)), ">image mirror\n".into()),
        ],
    )?;
    let mut members: Vec<String> = ["img-abs", "img-rel", "img-home", "img-secret"]
        .into_iter()
        .chain(["img-home-secret", "img-chain1", "img-chain2", "img-dotdot"])
        .map(String::from)
        .collect();
    let mut prefix = PathBuf::new();
    for part in Path::new(&rel(&c)).components() {
        prefix.push(part);
        members.push(prefix.display().to_string());
    }
    members.push(format!("{}/secret", rel(&c)));
    let members: Vec<&str> = members.iter().map(String::as_str).collect();
    let image = image_with_layers(env, "hostile-layout", &[(&layer, &members)])?;

    // A named context and the main context, each with escaping symlinks and a mirror.
    let named = env.context(
        "named",
        &[(&format!("{}/secret", rel(&c)), "named mirror\n")],
    )?;
    symlink(format!("{}/secret", c.display()), named.join("escape"))?;
    symlink(climbing(&c.join("secret")), named.join("climb"))?;

    // An archive for ADD whose entries go through a symlink it makes.
    let payload = arena.stage(
        "archive-src",
        &[
            l("added/one.txt", ">one\n".into()),
            l("added/link", format!("@{}", c.display())),
        ],
    )?;
    let archive = umstage_testutil::run(
        Command::new("tar")
            .args(["--owner=0", "--group=0", "-cf", "-", "-C"])
            .arg(&payload)
            .arg("added"),
    )?
    .stdout;
    let dockerfile = format!(
        "FROM busybox AS planted\n\
         RUN ln -s {c} /run-abs && ln -s {crel} /run-rel && ln -s {c}/secret /run-secret \\\n\
          && ln -s /run-abs /run-chain && ln -s {h} /run-home && ln -s ../../.. /run-dotdot \\\n\
          && mkdir -p {c}/sub && echo run mirror > {c}/secret && echo run inner > {c}/sub/inner\n\
         \n\
         FROM hostile AS written\n\
         COPY payload.txt /img-abs/w-abs\n\
         COPY payload.txt /img-rel/w-rel\n\
         COPY payload.txt /img-chain1/w-chain\n\
         COPY payload.txt /img-home/w-home\n\
         COPY payload.txt /img-dotdot/w-dotdot\n\
         COPY payload.txt /img-home-secret\n\
         COPY --chown=4321:4322 --chmod=0777 payload.txt /img-secret\n\
         COPY --chown=4321:4322 --chmod=0777 dir/ /img-home/\n\
         COPY --chown=4321:4322 --chmod=0777 dir /img-abs/\n\
         ADD payload.tar /img-chain1/\n\
         WORKDIR /img-abs/wd-abs\n\
         WORKDIR /img-home/wd-home\n\
         WORKDIR /img-chain1/wd-chain\n\
         COPY payload.txt relative-to-workdir\n\
         \n\
         FROM busybox AS passwd-link\n\
         RUN mv /etc/passwd /etc/passwd.real && ln -s ../../../../../etc/passwd.real /etc/passwd\n\
         COPY --chown=user payload.txt /chowned\n\
         \n\
         FROM planted AS written-run\n\
         COPY --chown=4321:4322 payload.txt /run-home/w\n\
         COPY --chmod=0777 dir /run-rel/\n\
         WORKDIR /run-chain/wd\n\
         COPY payload.txt /run-dotdot/w-dotdot\n\
         \n\
         FROM busybox\n\
         COPY --from=written / /written/\n\
         COPY --from=written-run / /written-run/\n\
         COPY --from=passwd-link /chowned /r/chowned\n\
         COPY --from=hostile /img-secret /r/img-secret\n\
         COPY --from=hostile /img-abs/secret /r/img-abs-secret\n\
         COPY --from=hostile /img-rel/secret /r/img-rel-secret\n\
         COPY --from=hostile /img-chain1/secret /r/img-chain-secret\n\
         COPY --from=hostile /img-abs/* /r/img-wild/\n\
         COPY --from=planted /run-secret /r/run-secret\n\
         COPY --from=planted /run-rel/secret /r/run-rel-secret\n\
         COPY --from=planted /run-chain /r/run-chain/\n\
         COPY --from=planted /run-dotdot{c}/secret /r/run-dotdot-secret\n\
         COPY ctx-abs /r/ctx-abs\n\
         COPY ctx-rel /r/ctx-rel\n\
         COPY ctx-dir/secret /r/ctx-dir-secret\n\
         COPY ctx-chain/* /r/ctx-wild/\n\
         COPY links /r/links/\n\
         COPY --from=named escape /r/named-escape\n\
         COPY --from=named climb /r/named-climb\n",
        c = c.display(),
        h = h.display(),
        crel = climbing(&c),
    );
    let ctx = env.context(
        "ctx",
        &[
            ("Dockerfile", dockerfile.as_str()),
            ("payload.txt", "payload\n"),
            ("dir/d1.txt", "d1\n"),
            ("dir/sub/d2.txt", "d2\n"),
            (&format!("{}/secret", rel(&c)), "context mirror\n"),
            (&format!("{}/sub/inner", rel(&c)), "context inner\n"),
        ],
    )?;
    fs::write(ctx.join("payload.tar"), archive)?;
    symlink(format!("{}/secret", c.display()), ctx.join("ctx-abs"))?;
    symlink(climbing(&c.join("secret")), ctx.join("ctx-rel"))?;
    symlink(&c, ctx.join("ctx-dir"))?;
    symlink("ctx-dir", ctx.join("ctx-chain"))?;
    fs::create_dir_all(ctx.join("links"))?;
    symlink(&h, ctx.join("links/home"))?;
    symlink(c.join("secret"), ctx.join("links/secret"))?;
    env.dir.user().chown_tree(&ctx)?;

    let hostile = format!("hostile=oci-layout://{}", image.display());
    let named_ctx = format!("named={}", named.display());
    let out = env.build(
        &ctx,
        "image.tar",
        &["--build-context", &hostile, "--build-context", &named_ctx],
    );
    assert_ok(&out);
    arena.assert_untouched(&before, env.dir.path())?;
    let got = unpack(env, "image.tar")?;
    arena.assert_untouched(&before, got.dir())?;
    let read = |p: &str| got.read_to_string(p);
    let w = |p: &str| format!("/written/{}", p.trim_start_matches('/'));
    let wr = |p: &str| format!("/written-run/{}", p.trim_start_matches('/'));
    let cp = |p: &str| format!("{}/{p}", c.display());
    let hp = |p: &str| format!("{}/{p}", h.display());

    // Writing: through an image's absolute, climbing, chained and `..` links the file lands
    // at the link's target inside the root.
    assert_eq!(read(&w(&cp("w-abs")))?, "payload\n");
    assert_eq!(read(&w(&cp("w-rel")))?, "payload\n");
    assert_eq!(read(&w(&cp("w-chain")))?, "payload\n");
    assert_eq!(read(&w(&hp("w-home")))?, "payload\n");
    assert_eq!(read(&w("w-dotdot"))?, "payload\n");
    // A destination that is itself a symlink to a host file.
    assert_eq!(read(&w("img-home-secret"))?, "payload\n");
    let secret_dest = got.path(&w("img-secret"));
    let meta = fs::symlink_metadata(&secret_dest)?;
    assert!(meta.is_file(), "{}", secret_dest.display());
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o777, 4321, 4322)
    );
    // --chown and --chmod of directory contents through a symlinked destination.
    for d1 in [w(&hp("d1.txt")), w(&cp("d1.txt"))] {
        let meta = fs::symlink_metadata(got.path(&d1))?;
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (0o777, 4321, 4322),
            "{d1}"
        );
    }
    assert_eq!(read(&w(&hp("sub/d2.txt")))?, "d2\n");
    // ADD: the archive lands through the chain; its own symlink is a symlink.
    assert_eq!(read(&w(&cp("added/one.txt")))?, "one\n");
    assert_eq!(fs::read_link(got.path(&w(&cp("added/link"))))?, c.as_path());
    // WORKDIR through symlinks makes directories inside the root.
    for d in [cp("wd-abs"), hp("wd-home"), cp("wd-chain")] {
        assert!(got.path(&w(&d)).is_dir(), "{d}");
    }
    assert_eq!(read(&w(&cp("wd-chain/relative-to-workdir")))?, "payload\n");
    // The same through links an earlier RUN step planted.
    let meta = fs::symlink_metadata(got.path(&wr(&hp("w"))))?;
    assert_eq!((meta.uid(), meta.gid()), (4321, 4322));
    assert_eq!(read(&wr(&cp("d1.txt")))?, "d1\n");
    assert!(got.path(&wr(&cp("wd"))).is_dir());
    assert_eq!(read(&wr("w-dotdot"))?, "payload\n");

    // --chown reads the image's own /etc/passwd through its symlink, inside the root.
    let (user, uid) = umstage_testutil::images::BUSYBOX_USER;
    let meta = fs::symlink_metadata(got.path("/r/chowned"))?;
    assert_eq!(meta.uid(), uid, "--chown={user}");

    // Reading: every link resolves inside its own root, to the mirror planted there.
    for p in [
        "img-secret",
        "img-abs-secret",
        "img-rel-secret",
        "img-chain-secret",
    ] {
        assert_eq!(read(&format!("/r/{p}"))?, "image mirror\n", "{p}");
    }
    assert_eq!(read("/r/img-wild/secret")?, "image mirror\n");
    for p in [
        "run-secret",
        "run-rel-secret",
        "run-dotdot-secret",
        "run-chain/secret",
    ] {
        assert_eq!(read(&format!("/r/{p}"))?, "run mirror\n", "{p}");
    }
    assert_eq!(read("/r/run-chain/sub/inner")?, "run inner\n");
    for p in ["ctx-abs", "ctx-rel", "ctx-dir-secret", "ctx-wild/secret"] {
        assert_eq!(read(&format!("/r/{p}"))?, "context mirror\n", "{p}");
    }
    // A wildcard copies a matched directory's contents, as any COPY of a directory.
    assert_eq!(read("/r/ctx-wild/inner")?, "context inner\n");
    for p in ["named-escape", "named-climb"] {
        assert_eq!(read(&format!("/r/{p}"))?, "named mirror\n", "{p}");
    }
    // Symlinks inside a copied directory are copied as symlinks, never followed.
    assert_eq!(fs::read_link(got.path("/r/links/home"))?, h.as_path());
    assert_eq!(
        fs::read_link(got.path("/r/links/secret"))?,
        c.join("secret").as_path()
    );
    arena.assert_untouched(&before, env.dir.path())?;
    Ok(())
}

#[test]
fn exports_of_hostile_images_stay_in_their_destination_and_apply_whiteouts_inside_the_root()
-> TestResult {
    exports_stay_in_their_destination("overlay")
}

#[test]
fn the_same_exports_with_the_native_snapshotter() -> TestResult {
    exports_stay_in_their_destination("native")
}

/// A base image whose upper layer whites out entries through its lower layer's symlinks
/// (overlay lays each layer in its own directory, native applies layers onto a copy: both must
/// end with the same filesystem), exported to a directory and a tar.
fn exports_stay_in_their_destination(snapshotter: &str) -> TestResult {
    let arena = Arena::new()?;
    let env = &arena.env;
    let (c, h) = (arena.tmp.dir.clone(), arena.home.dir.clone());
    let before = arena.fingerprints()?;
    let l = |p: &str, w: String| (p.to_string(), w);
    let lower = arena.stage(
        "layer-lower",
        &[
            l("img-abs", format!("@{}", c.display())),
            l("img-home", format!("@{}", h.display())),
            l("img-rel", format!("@{}", climbing(&c))),
            l("wa", "@/wb".into()),
            l("wc", "@wb".into()),
            l("wb/x/f", ">f\n".into()),
            l("wb/y/g", ">g\n".into()),
            l("wb/keep", ">keep\n".into()),
            l("oc", "@od".into()),
            l("od/old", ">old\n".into()),
        ],
    )?;
    // Whiteouts through an absolute and a relative symlink of the lower layer, one that names
    // nothing, one through a symlink to the host canary (inside the root: nothing there), and an
    // opaque marker through a symlink.
    let upper = arena.stage(
        "layer-upper",
        &[
            l("wa/.wh.x", ">".into()),
            l("wc/.wh.y", ">".into()),
            l("nothing/.wh.z", ">".into()),
            l("img-abs/.wh.secret", ">".into()),
            l("oc/.wh..wh..opq", ">".into()),
        ],
    )?;
    let image = image_with_layers(
        env,
        "whiteout-layout",
        &[
            (
                &lower,
                &[
                    "img-abs", "img-home", "img-rel", "wa", "wc", "wb", "wb/x", "wb/x/f", "wb/y",
                    "wb/y/g", "wb/keep", "oc", "od", "od/old",
                ],
            ),
            (
                &upper,
                &[
                    "wa/.wh.x",
                    "wc/.wh.y",
                    "nothing/.wh.z",
                    "img-abs/.wh.secret",
                    "oc/.wh..wh..opq",
                ],
            ),
        ],
    )?;
    let dockerfile = format!(
        "FROM hostile\n\
         RUN ln -s {h} /run-home && ln -s {climb} /run-rel && ls -A /wa/ /wb/ > /listing\n",
        h = h.display(),
        climb = climbing(&c.join("secret")),
    );
    let ctx = env.context("ctx", &[("Dockerfile", dockerfile.as_str())])?;
    let hostile = format!("hostile=oci-layout://{}", image.display());
    let local = env.path("rootfs");
    let tarball = env.path("rootfs.tar");
    let out = env.build(
        &ctx,
        "image.tar",
        &[
            "--snapshotter",
            snapshotter,
            "--build-context",
            &hostile,
            "-o",
            &format!("type=local,dest={}", local.display()),
            "-o",
            &format!("type=tar,dest={}", tarball.display()),
        ],
    );
    assert_ok(&out);
    arena.assert_untouched(&before, env.dir.path())?;

    // What a RUN step saw: the whiteouts applied where the symlinks lead.
    assert_eq!(
        fs::read_to_string(local.join("listing"))?,
        "/wa/:\nkeep\n\n/wb/:\nkeep\n"
    );
    // The directory export: symlinks are written as symlinks, never followed.
    for (link, target) in [
        ("img-abs", c.clone()),
        ("img-home", h.clone()),
        ("run-home", h.clone()),
        ("wa", PathBuf::from("/wb")),
        ("oc", PathBuf::from("od")),
    ] {
        assert_eq!(fs::read_link(local.join(link))?, target, "{link}");
    }
    assert_eq!(fs::read_to_string(local.join("wb/keep"))?, "keep\n");
    for gone in ["wb/x", "wb/y", "nothing", "od/old"] {
        assert!(!local.join(gone).exists(), "{gone} survived its whiteout");
    }
    assert!(local.join("od").is_dir());
    // The tar export holds the same.
    let entries = umstage_testutil::archive::list_layer(&tarball)?;
    let find = |p: &str| entries.iter().find(|e| e.path == p);
    assert_eq!(find("wb/keep").map(|e| e.kind()), Some('-'));
    assert_eq!(
        find("img-abs").and_then(|e| e.link.clone()),
        Some(c.display().to_string())
    );
    for gone in ["wb/x", "wb/x/f", "wb/y", "nothing", "nothing/z", "od/old"] {
        assert!(find(gone).is_none(), "{gone} is in the tar");
    }
    assert!(entries.iter().all(|e| !e.is_whiteout()));
    Ok(())
}

/// BuildKit extracts such an archive with the destination as its root (issue 15.2): the climb
/// stops at the destination, and nothing outside the image is touched.
#[test]
fn an_added_archive_that_climbs_out_through_its_own_symlink_stays_in_the_destination() -> TestResult
{
    let arena = Arena::new()?;
    let env = &arena.env;
    let before = arena.fingerprints()?;
    let staging = arena.stage(
        "evil-src",
        &[
            ("up".into(), "@../../../../../../../..".into()),
            ("pwned".into(), ">pwned\n".into()),
        ],
    )?;
    let target = format!("up{}/pwned", arena.tmp.dir.display());
    // GNU tar writes the entry under the name given by --transform, through no real path.
    let archive = umstage_testutil::run(
        Command::new("tar")
            .args(["--owner=0", "--group=0", "-cf", "-", "-C"])
            .arg(&staging)
            .arg("up")
            .arg(format!("--transform=s|^pwned$|{target}|"))
            .arg("pwned"),
    )?
    .stdout;
    let ctx = env.context(
        "ctx",
        &[("Dockerfile", "FROM busybox\nADD evil.tar /opt/\n")],
    )?;
    fs::write(ctx.join("evil.tar"), archive)?;
    env.dir.user().chown_tree(&ctx)?;
    let out = env.build(&ctx, "image.tar", &[]);
    common::assert_ok(&out);
    arena.assert_untouched(&before, env.dir.path())?;
    let image = common::layers(env, "image.tar")?;
    let landed = format!("/opt{}/pwned", arena.tmp.dir.display());
    assert_eq!(image.read_to_string(&landed)?, "pwned\n");
    assert_eq!(
        fs::read_link(image.path("/opt/up"))?,
        std::path::Path::new("../../../../../../../..")
    );
    Ok(())
}
