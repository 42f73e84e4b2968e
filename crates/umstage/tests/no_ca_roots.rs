//! End to end: a machine without CA certificates (`SSL_CERT_FILE` naming an empty bundle).
//! Building the TLS client there used to panic in a worker thread and hang the build forever;
//! now a plain-HTTP loopback registry needs no roots at all, and an HTTPS one fails at once,
//! naming the registry. Each build runs under a deadline so a hang fails the test.

mod common;

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Env, TestResult, text};
use umstage_testutil::images;

/// Far longer than either build takes; only a hang reaches it.
const DEADLINE: Duration = Duration::from_secs(120);

/// Runs `cmd`, killing it if it is still running after `DEADLINE` (then `None`).
fn output_within_deadline(mut cmd: Command) -> Option<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Another test's fork may briefly hold the freshly copied binary open for writing.
    let mut child = (0..20)
        .find_map(|_| match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(26) => {
                std::thread::sleep(Duration::from_millis(100));
                None
            }
            spawned => Some(spawned.expect("cannot run umstage")),
        })
        .expect("cannot run umstage: its binary stayed busy");
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("cannot wait for umstage") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Some(Output {
        status,
        stdout: stdout.join().expect("the pipe reader panicked"),
        stderr: stderr.join().expect("the pipe reader panicked"),
    })
}

/// Reads `pipe` to its end on a thread, so a full pipe never blocks the child.
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// `umstage build` of a context whose Dockerfile starts `FROM base`, with no CA certificates.
fn build_without_roots(env: &Env, base: &str) -> Output {
    build_dockerfile_without_roots(env, &format!("FROM {base}\nRUN echo ok > /ok\n"))
}

/// `umstage build` of a context holding only `dockerfile`, with no CA certificates.
fn build_dockerfile_without_roots(env: &Env, dockerfile: &str) -> Output {
    let ctx = env
        .context("ctx", &[("Dockerfile", dockerfile)])
        .expect("cannot write the context");
    let empty_bundle = env.path("empty-ca-bundle.pem");
    std::fs::write(&empty_bundle, "").expect("cannot write the empty bundle");
    let mut cmd = env.dir.user().command(&env.bin);
    cmd.args([
        "build",
        "--root",
        env.path("state").to_str().unwrap_or_default(),
        "--progress",
        "plain",
        "-o",
        env.path("image.tar").to_str().unwrap_or_default(),
        ctx.to_str().unwrap_or_default(),
    ])
    .env("XDG_DATA_HOME", env.path("xdg"))
    .env("SSL_CERT_FILE", &empty_bundle)
    .env("SSL_CERT_DIR", env.path("no-such-ca-dir"));
    output_within_deadline(cmd).expect("umstage hung without CA certificates")
}

#[test]
fn a_loopback_registry_needs_no_ca_certificates() -> TestResult {
    let env = Env::new()?;
    let registry = umstage_testutil::registry::Registry::start()?;
    let base = images::busybox()?.push(&registry)?;
    let out = build_without_roots(&env, &base);
    assert!(out.status.success(), "{}", text(&out));
    Ok(())
}

#[test]
fn an_https_registry_without_ca_certificates_fails_cleanly_naming_it() -> TestResult {
    let env = Env::new()?;
    // The TLS client is made (on an unusable anchor); the registry is never reached.
    let out = build_without_roots(&env, "registry.umstage-test.invalid/app:1");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("registry.umstage-test.invalid"),
        "{}",
        text(&out)
    );
    assert!(!stderr.contains("panicked"), "{}", text(&out));
    Ok(())
}

/// ADD's URLs go through the registries' HTTP client: a plain-HTTP URL needs no roots, and an
/// HTTPS one fails cleanly, naming it.
#[test]
fn add_of_a_url_without_ca_certificates_works_over_http_and_fails_cleanly_over_https() -> TestResult
{
    use std::io::Write;
    let env = Env::new()?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(1) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nfetch\n",
            );
        }
    });
    let out = build_dockerfile_without_roots(
        &env,
        &format!("FROM scratch\nADD http://127.0.0.1:{port}/x /x\n"),
    );
    assert!(out.status.success(), "{}", text(&out));

    let out = build_dockerfile_without_roots(
        &env,
        "FROM scratch\nADD https://download.umstage-test.invalid/x /x\n",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("download.umstage-test.invalid"),
        "{}",
        text(&out)
    );
    assert!(!stderr.contains("panicked"), "{}", text(&out));
    Ok(())
}
