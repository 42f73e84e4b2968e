//! The unprivileged user rootless tests run as, and temp dirs that user can use.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result, io, is_root, run};

/// The user root-run tests switch to; `cargo xtask test` creates it.
pub const TEST_USER: &str = "umstage-test";

/// `PATH` for commands run as the test user.
const USER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Variables passed through from the test process, for diagnosing failures.
const PASSED_THROUGH: &[&str] = &["RUST_BACKTRACE", "RUST_LOG", "SOURCE_DATE_EPOCH"];

/// An unprivileged user: [`TEST_USER`] when the tests run as root, otherwise
/// the current user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestUser {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory from `/etc/passwd`.
    pub home: PathBuf,
    /// Whether commands must switch to this user (the tests run as root).
    switch: bool,
}

impl TestUser {
    /// The user rootless tests run as; an error with the fix when root has no
    /// [`TEST_USER`] to switch to.
    pub fn get() -> Result<Self> {
        let passwd = io(
            "reading",
            Path::new("/etc/passwd"),
            std::fs::read_to_string("/etc/passwd"),
        )?;
        if is_root() {
            let mut user = find_user(&passwd, |name, _| name == TEST_USER).ok_or_else(|| {
                Error::Setup(format!(
                    "the tests run as root and switch to the unprivileged user `{TEST_USER}`, \
                     which does not exist. Run `cargo xtask test` as root (it creates the user), \
                     or create it by hand: `useradd --create-home {TEST_USER} && \
                     echo {TEST_USER}:100000:65536 >> /etc/subuid && \
                     echo {TEST_USER}:100000:65536 >> /etc/subgid`"
                ))
            })?;
            user.switch = true;
            Ok(user)
        } else {
            // SAFETY: getuid has no preconditions and cannot fail.
            let uid = unsafe { libc::getuid() };
            find_user(&passwd, |_, id| id == uid).ok_or_else(|| {
                Error::Setup(format!(
                    "the current user (uid {uid}) has no entry in /etc/passwd"
                ))
            })
        }
    }

    /// A command that runs `program` as this user with a clean environment
    /// (`PATH`, `HOME`, `USER`, `LOGNAME`, and a few debugging variables) in `/`.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = if self.switch {
            let mut cmd = Command::new("setpriv");
            cmd.arg(format!("--reuid={}", self.uid))
                .arg(format!("--regid={}", self.gid))
                .arg("--init-groups")
                .arg("--")
                .arg(program);
            cmd
        } else {
            Command::new(program)
        };
        cmd.env_clear()
            .env("PATH", USER_PATH)
            .env("HOME", &self.home)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name)
            .current_dir("/");
        for name in PASSED_THROUGH {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        cmd
    }

    /// The user's subordinate id range from `/etc/subuid` (`start`, `count`), if any.
    pub fn subuid_range(&self) -> Result<Option<(u64, u64)>> {
        self.subid_range(Path::new("/etc/subuid"))
    }

    /// The user's subordinate group range from `/etc/subgid` (`start`, `count`), if any.
    pub fn subgid_range(&self) -> Result<Option<(u64, u64)>> {
        self.subid_range(Path::new("/etc/subgid"))
    }

    fn subid_range(&self, file: &Path) -> Result<Option<(u64, u64)>> {
        let text = match std::fs::read_to_string(file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            other => io("reading", file, other)?,
        };
        let uid = self.uid.to_string();
        Ok(text.lines().find_map(|line| {
            let mut fields = line.split(':');
            let owner = fields.next()?;
            if owner != self.name && owner != uid {
                return None;
            }
            Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
        }))
    }

    /// Gives `path` and everything under it to this user (when the tests run as root).
    pub fn chown_tree(&self, path: &Path) -> Result<()> {
        if self.switch {
            run(Command::new("chown")
                .arg("-R")
                .arg(format!("{}:{}", self.uid, self.gid))
                .arg(path))?;
        }
        Ok(())
    }
}

fn find_user(passwd: &str, wanted: impl Fn(&str, u32) -> bool) -> Option<TestUser> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        let [name, _, uid, gid, _, home, ..] = fields.as_slice() else {
            return None;
        };
        let uid = uid.parse().ok()?;
        if !wanted(name, uid) {
            return None;
        }
        Some(TestUser {
            name: (*name).to_owned(),
            uid,
            gid: gid.parse().ok()?,
            home: PathBuf::from(home),
            switch: false,
        })
    })
}

/// A temp dir that belongs to the test user and that everyone can read and
/// traverse (unlike `/root`), removed on drop even when it holds files owned
/// by the user's subordinate ids.
#[derive(Debug)]
pub struct SharedDir {
    path: PathBuf,
    user: TestUser,
}

impl SharedDir {
    /// Makes a new shared dir under the system temp dir for `user`.
    pub fn new(user: &TestUser) -> Result<Self> {
        let dir = io(
            "creating a temp dir in",
            &std::env::temp_dir(),
            tempfile::Builder::new().prefix("umstage-test-").tempdir(),
        )?;
        // Removal is ours (see Drop): the user's files may need its namespace.
        let path = dir.keep();
        let shared = SharedDir {
            path,
            user: user.clone(),
        };
        set_mode(&shared.path, 0o755)?;
        user.chown_tree(&shared.path)?;
        Ok(shared)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The user the directory belongs to.
    pub fn user(&self) -> &TestUser {
        &self.user
    }

    /// Creates the directory `relative` (and its parents) inside, owned by the user.
    pub fn mkdir(&self, relative: impl AsRef<Path>) -> Result<PathBuf> {
        let path = self.path().join(relative);
        io("creating", &path, std::fs::create_dir_all(&path))?;
        self.user.chown_tree(self.path())?;
        Ok(path)
    }

    /// Copies the executable `src` into `bin/` inside, mode 0755, so the user can run it.
    pub fn install_executable(&self, src: &Path) -> Result<PathBuf> {
        let bin = self.mkdir("bin")?;
        let name = src
            .file_name()
            .ok_or_else(|| Error::Setup(format!("{} names no file", src.display())))?;
        let dest = bin.join(name);
        io("copying an executable to", &dest, std::fs::copy(src, &dest))?;
        set_mode(&dest, 0o755)?;
        Ok(dest)
    }
}

impl Drop for SharedDir {
    fn drop(&mut self) {
        let path = &self.path;
        if std::fs::remove_dir_all(path).is_ok() {
            return;
        }
        // Rootless builds leave files owned by subordinate ids (and read-only
        // dirs) that the user can remove only from inside its user namespace.
        let _ = self
            .user
            .command("unshare")
            .args(["--map-root-user", "--map-auto", "rm", "-rf"])
            .arg(path)
            .status();
        let _ = std::fs::remove_dir_all(path);
    }
}

/// Sets the permission bits of `path`.
pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<()> {
    io(
        "setting the mode of",
        path,
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)),
    )
}

#[cfg(test)]
mod tests {
    use super::find_user;

    #[test]
    fn find_user_reads_passwd_fields() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      broken line\n\
                      umstage-test:x:1001:1002::/home/umstage-test:/bin/sh\n";
        let user = find_user(passwd, |name, _| name == "umstage-test");
        let user = user.as_ref();
        assert_eq!(user.map(|u| (u.uid, u.gid)), Some((1001, 1002)));
        assert_eq!(
            user.map(|u| u.home.as_path()),
            Some(std::path::Path::new("/home/umstage-test"))
        );
        assert!(find_user(passwd, |_, uid| uid == 7).is_none());
    }
}
