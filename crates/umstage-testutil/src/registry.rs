//! A real OCI registry on loopback: Debian's `docker-registry` (distribution v2).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, Result, io, run_stdout};

/// How long a registry may take to answer `/v2/` after it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Starts with a port that another process grabbed in between are retried this often.
const START_ATTEMPTS: usize = 5;

/// User name and password of a registry with basic auth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
}

/// A running `docker-registry` serving plain HTTP on 127.0.0.1, with its storage
/// in a temp dir; the process is stopped and the storage removed on drop.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    port: u16,
    credentials: Option<Credentials>,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry that needs no authentication.
    pub fn start() -> Result<Self> {
        Self::start_inner(None, None)
    }

    /// Starts a registry without authentication on a given port of 127.0.0.1
    /// (for serving images at a well-known address such as `127.0.0.1:5000`).
    pub fn start_on_port(port: u16) -> Result<Self> {
        Self::start_inner(None, Some(port))
    }

    /// Starts a registry that requires basic auth with `user` and `password`
    /// (an htpasswd file with a bcrypt entry made by `htpasswd -B`).
    pub fn start_with_basic_auth(user: &str, password: &str) -> Result<Self> {
        let credentials = Credentials {
            user: user.to_owned(),
            password: password.to_owned(),
        };
        Self::start_inner(Some(credentials), None)
    }

    fn start_inner(credentials: Option<Credentials>, fixed_port: Option<u16>) -> Result<Self> {
        let dir = io(
            "creating a temp dir for",
            Path::new("registry"),
            tempfile::Builder::new()
                .prefix("umstage-registry-")
                .tempdir(),
        )?;
        let htpasswd = match &credentials {
            Some(c) => Some(write_htpasswd(dir.path(), c)?),
            None => None,
        };
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let port = match fixed_port {
                Some(port) => port,
                None => free_port()?,
            };
            let config = write_config(dir.path(), port, htpasswd.as_deref())?;
            let log_path = dir.path().join("registry.log");
            let log = io("creating", &log_path, std::fs::File::create(&log_path))?;
            let stderr = io("duplicating", &log_path, log.try_clone())?;
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(stderr)
                .spawn()
                .map_err(|source| Error::Spawn {
                    program: "docker-registry".into(),
                    source,
                })?;
            match wait_ready(&mut child, port) {
                Ok(()) => {
                    return Ok(Registry {
                        child,
                        port,
                        credentials,
                        dir,
                    });
                }
                Err(reason) => {
                    stop(&mut child);
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    let error = Error::Setup(format!("{reason}; its log:\n{log}"));
                    // Another process can take the free port before the registry binds it.
                    if fixed_port.is_some() || !log.contains("address already in use") {
                        return Err(error);
                    }
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Setup("docker-registry did not start".into())))
    }

    /// `127.0.0.1:PORT`, the registry's host for image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port the registry listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A reference to `name_tag` (e.g. `busybox:latest`) in this registry.
    pub fn reference(&self, name_tag: &str) -> String {
        format!("{}/{name_tag}", self.host())
    }

    /// The credentials basic auth needs, if the registry was started with them.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// Where the registry keeps its blobs and repositories.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// `skopeo`'s `--dest-creds`/`--src-creds` value, if auth is on.
    pub fn skopeo_creds(&self) -> Option<String> {
        self.credentials
            .as_ref()
            .map(|c| format!("{}:{}", c.user, c.password))
    }

    /// Fetches `path` (e.g. `/v2/`) without credentials and returns the HTTP status code.
    pub fn http_status(&self, path: &str) -> Result<u16> {
        http_get_status(self.port, path).map_err(|source| Error::Io {
            action: "requesting",
            path: PathBuf::from(format!("http://{}{path}", self.host())),
            source,
        })
    }

    /// The tags of repository `name`, listed by `skopeo list-tags`.
    pub fn tags(&self, name: &str) -> Result<Vec<String>> {
        let mut cmd = Command::new("skopeo");
        cmd.args(["list-tags", "--tls-verify=false"]);
        if let Some(creds) = self.skopeo_creds() {
            cmd.arg("--creds").arg(creds);
        }
        cmd.arg(format!("docker://{}", self.reference(name)));
        let text = run_stdout(&mut cmd)?;
        let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::BadJson {
            path: PathBuf::from(format!("skopeo list-tags {name}")),
            message: e.to_string(),
        })?;
        Ok(doc["Tags"]
            .as_array()
            .map(|tags| {
                tags.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Why a started registry never answered.
#[derive(Debug, thiserror::Error)]
enum NotReady {
    /// It exited.
    #[error("docker-registry exited ({0})")]
    Exited(std::process::ExitStatus),
    /// It did not answer in time.
    #[error("docker-registry did not answer on 127.0.0.1:{port} within {READY_TIMEOUT:?}")]
    Silent {
        /// Its port.
        port: u16,
    },
}

fn wait_ready(child: &mut Child, port: u16) -> Result<(), NotReady> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(NotReady::Exited(status));
        }
        // 401 means up with auth on: the registry answers before checking credentials.
        if let Ok(200 | 401) = http_get_status(port, "/v2/") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(NotReady::Silent { port });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop(child: &mut Child) {
    // The registry is a single process: killing it by pid stops it all.
    let _ = child.kill();
    let _ = child.wait();
}

/// A TCP port on 127.0.0.1 that is free right now.
pub fn free_port() -> Result<u16> {
    let listener = io(
        "binding",
        Path::new("127.0.0.1:0"),
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)),
    )?;
    let addr = io(
        "reading the address of",
        Path::new("127.0.0.1:0"),
        listener.local_addr(),
    )?;
    Ok(addr.port())
}

fn write_htpasswd(dir: &Path, credentials: &Credentials) -> Result<PathBuf> {
    let line = run_stdout(
        Command::new("htpasswd")
            .args(["-B", "-b", "-n"])
            .arg(&credentials.user)
            .arg(&credentials.password),
    )?;
    let path = dir.join("htpasswd");
    io("writing", &path, std::fs::write(&path, line.trim_end()))?;
    Ok(path)
}

fn write_config(dir: &Path, port: u16, htpasswd: Option<&Path>) -> Result<PathBuf> {
    let storage = dir.join("storage");
    let mut config = format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: umstage-test-fixture\n",
        storage.display()
    );
    if let Some(htpasswd) = htpasswd {
        config.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: umstage-test\n    path: {}\n",
            htpasswd.display()
        ));
    }
    let path = dir.join("config.yml");
    io("writing", &path, std::fs::write(&path, config))?;
    Ok(path)
}

fn http_get_status(port: u16, path: &str) -> std::io::Result<u16> {
    let mut stream =
        TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    // "HTTP/1.1 200"
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP response"))
}
