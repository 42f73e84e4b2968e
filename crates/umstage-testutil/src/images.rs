//! The offline base images, made from Debian packages with independent tools
//! (`tar`, `umoci`, `debootstrap`) as OCI image layouts under `testdata/images/`.
//!
//! Each image is made once and reused: [`busybox`] takes a second or two the
//! first time, [`debian_build`] runs `debootstrap` (a minute or more, needs
//! root and Debian's package mirror). Concurrent callers (parallel test
//! binaries) wait for one another on a lock file.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::registry::Registry;
use crate::user::set_mode;
use crate::{Error, Result, io, is_root, run, run_stdout, workspace_root};

/// Overrides where the images live (default `testdata/images/` in the workspace).
pub const IMAGES_DIR_ENV: &str = "UMSTAGE_TEST_IMAGES";

/// Overrides the Debian mirror `debootstrap` uses.
pub const DEBIAN_MIRROR_ENV: &str = "UMSTAGE_DEBIAN_MIRROR";

/// `PATH` in the images' config.
const IMAGE_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Bumped when a recipe changes, so layouts made by an older recipe are made again.
const RECIPE_VERSION: &str = "1";

/// The non-root user in the busybox image.
pub const BUSYBOX_USER: (&str, u32) = ("user", 1000);

/// A tagged image in an OCI image layout directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLayout {
    /// The layout directory (holds `oci-layout`, `index.json`, `blobs/`).
    pub dir: PathBuf,
    /// The image's tag in the layout (`org.opencontainers.image.ref.name`).
    pub tag: String,
    /// The repository name the image is pushed as (`busybox`, `debian-build`).
    pub name: String,
}

impl ImageLayout {
    /// The image as a `skopeo`/`umoci` reference: `oci:DIR:TAG`.
    pub fn oci_reference(&self) -> String {
        format!("oci:{}:{}", self.dir.display(), self.tag)
    }

    /// `NAME:TAG`, the name this image goes by in a registry.
    pub fn name_tag(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }

    /// Pushes the image into `registry` as `NAME:TAG` with `skopeo copy` and
    /// returns its reference there (`127.0.0.1:PORT/NAME:TAG`).
    pub fn push(&self, registry: &Registry) -> Result<String> {
        let reference = registry.reference(&self.name_tag());
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some(creds) = registry.skopeo_creds() {
            cmd.arg("--dest-creds").arg(creds);
        }
        cmd.arg(self.oci_reference())
            .arg(format!("docker://{reference}"));
        run(&mut cmd)?;
        Ok(reference)
    }

    /// Copies the layout to `dest` (a new directory), e.g. into a
    /// [`SharedDir`](crate::user::SharedDir) the test user can read.
    pub fn copy_to(&self, dest: &Path) -> Result<ImageLayout> {
        run(Command::new("cp").arg("-a").arg(&self.dir).arg(dest))?;
        Ok(ImageLayout {
            dir: dest.to_owned(),
            ..self.clone()
        })
    }

    /// Writes the image as an OCI archive (`skopeo copy` to `oci-archive:`).
    pub fn save_oci_archive(&self, dest: &Path) -> Result<()> {
        run(Command::new("skopeo")
            .args(["copy", "--quiet"])
            .arg(self.oci_reference())
            .arg(format!(
                "oci-archive:{}:{}",
                dest.display(),
                self.name_tag()
            )))?;
        Ok(())
    }
}

/// Where the base images live: `$UMSTAGE_TEST_IMAGES`, or `testdata/images/` in the workspace.
pub fn images_dir() -> PathBuf {
    std::env::var_os(IMAGES_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("testdata/images"))
}

/// `busybox:latest`: one layer with the static busybox from Debian's
/// `busybox-static`, its applet links, `/etc/passwd` and `/etc/group` with
/// `root`, [`BUSYBOX_USER`] and `nobody`, and `/tmp`. Made if missing.
pub fn busybox() -> Result<ImageLayout> {
    ensure("busybox", "latest", make_busybox)
}

/// `debian-build:bookworm`: one layer made by `debootstrap --variant=minbase
/// --include=gcc,libc6-dev,make bookworm`. Made if missing, which needs root,
/// the network to Debian's mirror, and a minute or more.
pub fn debian_build() -> Result<ImageLayout> {
    ensure("debian-build", "bookworm", make_debian_build)
}

/// The image `name`, if it has been made already (never makes it).
pub fn existing(name: &str, tag: &str) -> Option<ImageLayout> {
    let dir = images_dir();
    is_done(&dir, name).then(|| ImageLayout {
        dir: dir.join(name),
        tag: tag.to_owned(),
        name: name.to_owned(),
    })
}

/// How an image's root filesystem and config are made.
struct Recipe {
    /// Fills the (empty) root filesystem directory and writes the layer tar.
    make_layer: fn(rootfs: &Path, layer: &Path) -> Result<()>,
    /// `umoci config` arguments.
    config: &'static [&'static str],
    /// The history entry's `created_by`.
    created_by: &'static str,
}

fn make_busybox() -> Recipe {
    Recipe {
        make_layer: busybox_layer,
        config: &["--config.cmd=sh"],
        created_by: "umstage-testutil: busybox-static with applet links",
    }
}

fn make_debian_build() -> Recipe {
    Recipe {
        make_layer: debian_build_layer,
        config: &["--config.cmd=bash"],
        created_by: "debootstrap --variant=minbase --include=gcc,libc6-dev,make bookworm",
    }
}

fn stamp_path(images: &Path, name: &str) -> PathBuf {
    images.join(format!("{name}.done"))
}

fn is_done(images: &Path, name: &str) -> bool {
    std::fs::read_to_string(stamp_path(images, name)).is_ok_and(|v| v.trim() == RECIPE_VERSION)
        && images.join(name).join("index.json").is_file()
}

fn ensure(name: &str, tag: &str, recipe: fn() -> Recipe) -> Result<ImageLayout> {
    let images = images_dir();
    let layout = ImageLayout {
        dir: images.join(name),
        tag: tag.to_owned(),
        name: name.to_owned(),
    };
    if is_done(&images, name) {
        return Ok(layout);
    }
    io("creating", &images, std::fs::create_dir_all(&images))?;
    let _lock = lock(&images.join(".lock"))?;
    if is_done(&images, name) {
        return Ok(layout);
    }
    let work = io(
        "creating a work dir in",
        &images,
        tempfile::Builder::new()
            .prefix(&format!(".work-{name}-"))
            .tempdir_in(&images),
    )?;
    let recipe = recipe();
    let rootfs = work.path().join("rootfs");
    let layer = work.path().join("layer.tar");
    io("creating", &rootfs, std::fs::create_dir(&rootfs))?;
    (recipe.make_layer)(&rootfs, &layer)?;
    let staged = work.path().join("layout");
    write_layout(&staged, tag, &layer, &recipe)?;
    if layout.dir.exists() {
        io(
            "removing the stale",
            &layout.dir,
            std::fs::remove_dir_all(&layout.dir),
        )?;
    }
    io(
        "moving into place",
        &layout.dir,
        std::fs::rename(&staged, &layout.dir),
    )?;
    let stamp = stamp_path(&images, name);
    io("writing", &stamp, std::fs::write(&stamp, RECIPE_VERSION))?;
    Ok(layout)
}

/// An exclusive `flock` on `path`, released when the file is closed.
fn lock(path: &Path) -> Result<File> {
    let file = io("opening", path, File::create(path))?;
    // SAFETY: the descriptor is open for the duration of the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    if rc != 0 {
        return Err(Error::Io {
            action: "locking",
            path: path.to_owned(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(file)
}

fn write_layout(dir: &Path, tag: &str, layer: &Path, recipe: &Recipe) -> Result<()> {
    let image = format!("{}:{tag}", dir.display());
    run(Command::new("umoci").args(["init", "--layout"]).arg(dir))?;
    run(Command::new("umoci").args(["new", "--image"]).arg(&image))?;
    run(Command::new("umoci")
        .args(["raw", "add-layer", "--image"])
        .arg(&image)
        .arg("--history.created=1970-01-01T00:00:00Z")
        .arg(format!("--history.created_by={}", recipe.created_by))
        .arg(layer))?;
    run(Command::new("umoci")
        .args(["config", "--image"])
        .arg(&image)
        .args([
            "--os=linux",
            "--architecture=amd64",
            "--created=1970-01-01T00:00:00Z",
            "--no-history",
        ])
        .arg(format!("--config.env={IMAGE_PATH}"))
        .args(recipe.config))?;
    run(Command::new("umoci").args(["gc", "--layout"]).arg(dir))?;
    // umoci writes index.json 0600; the test user reads layouts too.
    run(Command::new("chmod").args(["-R", "a+rX"]).arg(dir))?;
    Ok(())
}

fn busybox_layer(rootfs: &Path, layer: &Path) -> Result<()> {
    let busybox = Path::new("/bin/busybox");
    let applets = run_stdout(Command::new(busybox).arg("--list-full"))?;
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "var",
    ] {
        let path = rootfs.join(dir);
        io("creating", &path, std::fs::create_dir_all(&path))?;
    }
    let target = rootfs.join("bin/busybox");
    io(
        "copying busybox to",
        &target,
        std::fs::copy(busybox, &target),
    )?;
    set_mode(&target, 0o755)?;
    for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty()) {
        if applet == "bin/busybox" {
            continue;
        }
        let link = rootfs.join(applet);
        if let Some(parent) = link.parent() {
            io("creating", parent, std::fs::create_dir_all(parent))?;
        }
        io("linking", &link, symlink("/bin/busybox", &link))?;
    }
    let (user, id) = BUSYBOX_USER;
    write(
        &rootfs.join("etc/passwd"),
        &format!(
            "root:x:0:0:root:/root:/bin/sh\n\
             {user}:x:{id}:{id}:{user}:/home/{user}:/bin/sh\n\
             nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
        ),
    )?;
    write(
        &rootfs.join("etc/group"),
        &format!("root:x:0:\n{user}:x:{id}:\nnogroup:x:65534:\n"),
    )?;
    for (dir, mode) in [("tmp", 0o1777), ("root", 0o700)] {
        let path = rootfs.join(dir);
        io("creating", &path, std::fs::create_dir(&path))?;
        set_mode(&path, mode)?;
    }
    let home = rootfs.join("home").join(user);
    io("creating", &home, std::fs::create_dir_all(&home))?;
    // Everything belongs to root except the user's home, appended with its owner,
    // so the image is the same whoever makes it.
    let home_entry = format!("./home/{user}");
    run(tar_create(rootfs, layer)
        .args(["--owner=0", "--group=0"])
        .arg(format!("--exclude={home_entry}"))
        .arg("."))?;
    run(Command::new("tar")
        .args([
            "--append",
            "--numeric-owner",
            "--mtime=@0",
            "--no-recursion",
        ])
        .arg(format!("--owner={id}"))
        .arg(format!("--group={id}"))
        .arg("--file")
        .arg(layer)
        .arg("--directory")
        .arg(rootfs)
        .arg(home_entry))?;
    Ok(())
}

fn debian_build_layer(rootfs: &Path, layer: &Path) -> Result<()> {
    if !is_root() {
        return Err(Error::Setup(
            "making debian-build runs debootstrap, which needs root: \
             run `cargo xtask testimages --debian` as root"
                .into(),
        ));
    }
    run(Command::new("debootstrap")
        .args([
            "--variant=minbase",
            "--include=gcc,libc6-dev,make",
            "bookworm",
        ])
        .arg(rootfs)
        .arg(debian_mirror()))?;
    // What a container image does not carry: device nodes (runtimes make
    // /dev), downloaded packages, and debootstrap's log.
    for dir in ["dev", "var/cache/apt/archives", "var/lib/apt/lists"] {
        empty_dir(&rootfs.join(dir))?;
    }
    let log = rootfs.join("var/log/bootstrap.log");
    if log.exists() {
        io("removing", &log, std::fs::remove_file(&log))?;
    }
    run(tar_create(rootfs, layer).arg("."))?;
    Ok(())
}

/// `tar` writing `layer` from `rootfs` in a reproducible order with numeric owners.
fn tar_create(rootfs: &Path, layer: &Path) -> Command {
    let mut cmd = Command::new("tar");
    cmd.args(["--create", "--sort=name", "--numeric-owner", "--mtime=@0"])
        .arg("--file")
        .arg(layer)
        .arg("--directory")
        .arg(rootfs);
    cmd
}

/// Removes what `dir` holds (files and subdirectories), keeping `dir`.
fn empty_dir(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = io("listing", dir, entry)?.path();
        let removed = if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        io("removing", &path, removed)?;
    }
    Ok(())
}

/// The mirror for `debootstrap`: `$UMSTAGE_DEBIAN_MIRROR`, else the first
/// `URIs:` of the machine's own Debian sources, else deb.debian.org.
fn debian_mirror() -> String {
    if let Ok(mirror) = std::env::var(DEBIAN_MIRROR_ENV) {
        return mirror;
    }
    std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("URIs:"))
                .and_then(|uris| uris.split_whitespace().next().map(str::to_owned))
        })
        .unwrap_or_else(|| "http://deb.debian.org/debian".to_owned())
}

fn write(path: &Path, text: &str) -> Result<()> {
    io("writing", path, std::fs::write(path, text))
}
