//! The registry client against registries that stall, lie or fail for a moment: a small HTTP
//! server on loopback written here, since a real registry does none of these. Every case must
//! end, with short timeouts, in a typed error that says what happened.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use umstage_oci::config::ImageConfig;
use umstage_oci::image::write_image;
use umstage_oci::registry::{Limits, RegistryClient, RegistryError, block_on};
use umstage_oci::{ContentStore, Image, ManifestFormat, Platform, reference};

/// Longest a connection of the fake registry is held open: every stall ends by then.
const HOLD: Duration = Duration::from_secs(30);
/// The most an endless body sends before giving up.
const ENDLESS_CAP: usize = 64 << 20;

/// What the fake registry answers to one request.
enum Reply {
    Ok {
        content_type: String,
        body: Vec<u8>,
    },
    Status(u16),
    /// Headers claiming `length` bytes, `body` (fewer), then closing or stalling.
    Partial {
        length: u64,
        body: Vec<u8>,
        close: bool,
    },
    /// Nothing at all; the connection stays open.
    Stall,
    /// A chunked body that never ends (until the client hangs up).
    Endless,
}

type Route = dyn Fn(&str, usize) -> Reply + Send + Sync;

/// An HTTP/1.1 server on 127.0.0.1 answering each `GET path` with `route(path, n)`, `n` counting
/// that path's requests from 0.
struct FakeRegistry {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl FakeRegistry {
    fn start(route: impl Fn(&str, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(Mutex::new(HashMap::new()));
        let route: Arc<Route> = Arc::new(route);
        let (stop2, hits2) = (stop.clone(), hits.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (route, hits) = (route.clone(), hits2.clone());
                std::thread::spawn(move || serve(conn, &*route, &hits));
            }
        });
        Self { addr, stop, hits }
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the acceptor so it sees `stop`.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(conn: TcpStream, route: &Route, hits: &Mutex<HashMap<String, usize>>) {
    conn.set_read_timeout(Some(HOLD)).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_owned();
        let n = {
            let mut hits = hits.lock().unwrap();
            let count = hits.entry(path.clone()).or_insert(0);
            *count += 1;
            *count - 1
        };
        let written = match route(&path, n) {
            Reply::Ok { content_type, body } => write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .and_then(|()| conn.write_all(&body)),
            Reply::Status(code) => write!(
                conn,
                "HTTP/1.1 {code} Oops\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
            ),
            Reply::Partial {
                length,
                body,
                close,
            } => {
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n"
                )
                .and_then(|()| conn.write_all(&body))
                .and_then(|()| conn.flush());
                if !close {
                    hold(&mut reader);
                }
                return;
            }
            Reply::Stall => {
                hold(&mut reader);
                return;
            }
            Reply::Endless => {
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nTransfer-Encoding: chunked\r\n\r\n"
                );
                let chunk = vec![b' '; 64 << 10];
                let mut sent = 0;
                while sent < ENDLESS_CAP
                    && write!(conn, "{:x}\r\n", chunk.len())
                        .and_then(|()| conn.write_all(&chunk))
                        .and_then(|()| conn.write_all(b"\r\n"))
                        .is_ok()
                {
                    sent += chunk.len();
                }
                return;
            }
        };
        if written.is_err() {
            return;
        }
    }
}

/// Keeps the connection open until the client hangs up (or `HOLD` passes).
fn hold(reader: &mut BufReader<TcpStream>) {
    let mut sink = [0u8; 512];
    while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
}

/// An image with a config and no layers, and its manifest and config bytes.
struct Content {
    _dir: tempfile::TempDir,
    image: Image,
    manifest: Vec<u8>,
    config: Vec<u8>,
}

impl Content {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path().join("store")).unwrap();
        let config = ImageConfig {
            architecture: Platform::default().architecture,
            os: "linux".into(),
            ..Default::default()
        };
        let image = write_image(
            &store,
            &config,
            &[],
            ManifestFormat::Oci,
            &Default::default(),
        )
        .unwrap();
        let manifest = store.read(image.digest(), 1 << 20).unwrap();
        let config = store
            .read(image.manifest.config().digest(), 1 << 20)
            .unwrap();
        Self {
            _dir: dir,
            image,
            manifest,
            config,
        }
    }

    fn config_path(&self) -> String {
        format!("/v2/app/blobs/{}", self.image.manifest.config().digest())
    }

    /// The honest answer to `path`.
    fn reply(&self, path: &str) -> Reply {
        if path == "/v2/" {
            Reply::Ok {
                content_type: "application/json".into(),
                body: b"{}".to_vec(),
            }
        } else if path == "/v2/app/manifests/1" {
            Reply::Ok {
                content_type: "application/vnd.oci.image.manifest.v1+json".into(),
                body: self.manifest.clone(),
            }
        } else if path == self.config_path() {
            Reply::Ok {
                content_type: "application/octet-stream".into(),
                body: self.config.clone(),
            }
        } else {
            Reply::Status(404)
        }
    }
}

fn short_limits() -> Limits {
    Limits {
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(2),
        backoff: Duration::from_millis(20),
        ..Default::default()
    }
}

/// Pulls `host/app:1` with short timeouts.
fn pull(host: &str) -> Result<Image, RegistryError> {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path().join("store")).unwrap();
    let client = RegistryClient::default().with_limits(short_limits());
    let target = reference::parse(&format!("{host}/app:1")).unwrap();
    block_on(client.pull(&store, &target, &Platform::default())).unwrap()
}

#[test]
fn a_registry_that_accepts_and_never_answers_times_out() {
    let registry = FakeRegistry::start(|_, _| Reply::Stall);
    let err = pull(&registry.host()).unwrap_err();
    assert!(matches!(err, RegistryError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("sent nothing for 2 s"), "{err}");
    // A stall is transient: tried as often as the limits say.
    assert_eq!(registry.hits("/v2/"), short_limits().attempts as usize);
}

#[test]
fn a_body_that_stalls_halfway_times_out() {
    let content = Arc::new(Content::new());
    let served = content.clone();
    let registry = FakeRegistry::start(move |path, _| {
        if path == served.config_path() {
            Reply::Partial {
                length: served.config.len() as u64,
                body: served.config[..served.config.len() / 2].to_vec(),
                close: false,
            }
        } else {
            served.reply(path)
        }
    });
    let err = pull(&registry.host()).unwrap_err();
    assert!(matches!(err, RegistryError::Timeout { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&content.image.manifest.config().digest().to_string()),
        "{message}"
    );
}

#[test]
fn a_manifest_claiming_a_gigabyte_is_refused_before_it_is_read() {
    let registry = FakeRegistry::start(|path, _| match path {
        "/v2/" => Reply::Ok {
            content_type: "application/json".into(),
            body: b"{}".to_vec(),
        },
        _ => Reply::Partial {
            length: 1 << 30,
            body: vec![b' '; 1 << 20],
            close: false,
        },
    });
    let err = pull(&registry.host()).unwrap_err();
    assert!(
        matches!(err, RegistryError::TooLarge { limit, .. } if limit == Limits::default().max_manifest),
        "{err}"
    );
    assert!(err.to_string().contains("manifest"), "{err}");
    assert_eq!(registry.hits("/v2/app/manifests/1"), 1, "not retried");
}

#[test]
fn an_endless_manifest_is_refused_once_it_passes_the_limit() {
    let registry = FakeRegistry::start(|path, _| match path {
        "/v2/" => Reply::Ok {
            content_type: "application/json".into(),
            body: b"{}".to_vec(),
        },
        _ => Reply::Endless,
    });
    let err = pull(&registry.host()).unwrap_err();
    assert!(matches!(err, RegistryError::TooLarge { .. }), "{err}");
}

#[test]
fn a_truncated_blob_says_how_much_arrived() {
    let content = Arc::new(Content::new());
    let served = content.clone();
    let registry = FakeRegistry::start(move |path, _| {
        if path == served.config_path() {
            Reply::Partial {
                length: served.config.len() as u64,
                body: served.config[..10].to_vec(),
                close: true,
            }
        } else {
            served.reply(path)
        }
    });
    let err = pull(&registry.host()).unwrap_err();
    match &err {
        RegistryError::Truncated { expected, got, .. } => {
            assert_eq!((*expected, *got), (content.config.len() as u64, 10));
        }
        other => panic!("not a truncation: {other}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(&format!("expected {} bytes, got 10", content.config.len())),
        "{message}"
    );
    assert_eq!(
        message.matches(&registry.host()).count(),
        1,
        "the registry is named once: {message}"
    );
    assert_eq!(
        registry.hits(&content.config_path()),
        short_limits().attempts as usize
    );
}

#[test]
fn a_blob_that_does_not_match_its_digest_is_refused() {
    let content = Arc::new(Content::new());
    let served = content.clone();
    let registry = FakeRegistry::start(move |path, _| {
        if path == served.config_path() {
            let mut body = served.config.clone();
            body[0] ^= 0x20;
            Reply::Ok {
                content_type: "application/octet-stream".into(),
                body,
            }
        } else {
            served.reply(path)
        }
    });
    let err = pull(&registry.host()).unwrap_err();
    assert!(matches!(err, RegistryError::Mismatch { .. }), "{err}");
}

#[test]
fn a_moment_of_failure_is_tried_again() {
    let content = Arc::new(Content::new());
    let served = content.clone();
    let registry = FakeRegistry::start(move |path, n| match (path, n) {
        ("/v2/app/manifests/1", 0) => Reply::Status(503),
        (p, 0) if p == served.config_path() => Reply::Status(429),
        _ => served.reply(path),
    });
    let image = pull(&registry.host()).unwrap();
    assert_eq!(image.digest(), content.image.digest());
    assert_eq!(registry.hits("/v2/app/manifests/1"), 2);
    assert_eq!(registry.hits(&content.config_path()), 2);
}

#[test]
fn a_lasting_server_error_is_reported_with_its_status() {
    let registry = FakeRegistry::start(|path, _| match path {
        "/v2/" => Reply::Ok {
            content_type: "application/json".into(),
            body: b"{}".to_vec(),
        },
        _ => Reply::Status(502),
    });
    let err = pull(&registry.host()).unwrap_err();
    assert!(
        matches!(err, RegistryError::Http { status: 502, .. }),
        "{err}"
    );
    assert_eq!(
        registry.hits("/v2/app/manifests/1"),
        short_limits().attempts as usize
    );
}

#[test]
fn pulls_from_one_repository_sign_in_once_and_another_repository_again() {
    let content = Arc::new(Content::new());
    let served = content.clone();
    let registry = FakeRegistry::start(move |path, _| {
        served.reply(&path.replacen("/v2/other/", "/v2/app/", 1))
    });
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path().join("store")).unwrap();
    let client = RegistryClient::default().with_limits(short_limits());
    let pull = |repository: &str| {
        let target = reference::parse(&format!("{}/{repository}:1", registry.host())).unwrap();
        let image = block_on(client.pull(&store, &target, &Platform::default()))
            .unwrap()
            .unwrap();
        assert_eq!(image.digest(), content.image.digest());
        registry.hits("/v2/")
    };
    let first = pull("app");
    assert!(first >= 1);
    // The first sign-in's answer (no token needed) holds for the next pulls of `app` (whose
    // blobs are all in the store by then); `other` is another repository, signed in to again.
    assert_eq!(pull("app"), first);
    assert_eq!(pull("app"), first);
    assert_eq!(pull("other"), first + 1);
}
