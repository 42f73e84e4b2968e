//! Plain HTTP(S) downloads (`ADD` of a URL) over the registry client's own HTTP stack: the
//! same shared client, TLS roots, connect and read timeouts and retries as a pull, so a URL can
//! no more hang or fail a build silently than a registry can. A download may be conditional
//! (`If-None-Match`, `If-Modified-Since`), so a caller that kept an earlier one revalidates it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ETAG, HeaderMap, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use sha2::{Digest as _, Sha256};

use super::RegistryClient;
use super::error::{causes, is_connect, is_timeout};
use super::limits::Transient;

/// What a server said about a download, to ask it later whether the content changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Validators {
    /// The `ETag` header.
    pub etag: Option<String>,
    /// The `Last-Modified` header, as sent.
    pub last_modified: Option<String>,
}

/// What a download gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Downloaded {
    /// The server says the content the validators describe is current; nothing was written.
    NotModified,
    /// The whole body, written to the file.
    Body {
        /// `sha256:` and the hex digest of the body.
        digest: String,
        /// Bytes written.
        size: u64,
        /// What the server said about it.
        validators: Validators,
    },
}

/// A download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The URL cannot be requested at all.
    #[error("{url}: {detail}")]
    Invalid {
        /// The URL.
        url: String,
        /// Why.
        detail: String,
    },
    /// No HTTP client could be made (no CA certificates on the machine).
    #[error("{url}: cannot set up TLS: {source}")]
    Tls {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: super::error::TransportError,
    },
    /// The server could not be reached (refused, no route, connect timeout).
    #[error("{url}: unreachable: {detail}")]
    Unreachable {
        /// The URL.
        url: String,
        /// The network error.
        detail: String,
    },
    /// The server stopped sending: no byte arrived for the read timeout.
    #[error("{url}: the server sent nothing for {} s", after.as_secs_f32())]
    Timeout {
        /// The URL.
        url: String,
        /// The read timeout that ran out.
        after: Duration,
    },
    /// The connection broke while the answer was arriving.
    #[error("{url}: the connection broke: {detail}")]
    Transfer {
        /// The URL.
        url: String,
        /// The network error.
        detail: String,
    },
    /// The server answered with an HTTP error.
    #[error("{url}: HTTP {status}")]
    Http {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The body could not be written.
    #[error("{url}: writing {}: {source}", path.display())]
    Io {
        /// The URL.
        url: String,
        /// The file written to.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl Transient for DownloadError {
    fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Timeout { .. } | Self::Transfer { .. } => true,
            Self::Http { status, .. } => *status == 429 || (500..600).contains(status),
            _ => false,
        }
    }
}

impl RegistryClient {
    /// GETs `url` into the file `into` (created or truncated), sending `previous`' validators
    /// when given: then a `304 Not Modified` writes nothing. Transient failures are tried
    /// again as a pull's are; redirects are followed; HTTPS is verified against the CA roots.
    pub fn download(
        &self,
        url: &str,
        previous: Option<&Validators>,
        into: &Path,
    ) -> Result<Downloaded, DownloadError> {
        // The verifying client serves http:// too: a redirect to HTTPS is then verified.
        let transport =
            self.clients
                .get(false, &self.limits)
                .map_err(|source| DownloadError::Tls {
                    url: url.to_string(),
                    source,
                })?;
        let http = transport.http;
        let read_timeout = self.limits.read_timeout;
        let attempts = self
            .limits
            .retry(|| attempt(&http, url, previous, into, read_timeout));
        super::block_on(attempts).map_err(|source| DownloadError::Io {
            url: url.to_string(),
            path: into.to_path_buf(),
            source,
        })?
    }
}

fn header(headers: &HeaderMap, name: reqwest::header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn transport(url: &str, error: &reqwest::Error, read_timeout: Duration) -> DownloadError {
    let url = url.to_string();
    if error.is_builder() {
        DownloadError::Invalid {
            url,
            detail: causes(error),
        }
    } else if is_connect(error) {
        DownloadError::Unreachable {
            url,
            detail: causes(error),
        }
    } else if is_timeout(error) {
        DownloadError::Timeout {
            url,
            after: read_timeout,
        }
    } else {
        DownloadError::Transfer {
            url,
            detail: causes(error),
        }
    }
}

async fn attempt(
    http: &reqwest::Client,
    url: &str,
    previous: Option<&Validators>,
    into: &Path,
    read_timeout: Duration,
) -> Result<Downloaded, DownloadError> {
    let mut request = http.get(url);
    if let Some(previous) = previous {
        if let Some(etag) = &previous.etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        if let Some(modified) = &previous.last_modified {
            request = request.header(IF_MODIFIED_SINCE, modified);
        }
    }
    let mut response = request
        .send()
        .await
        .map_err(|e| transport(url, &e, read_timeout))?;
    let status = response.status();
    if status == StatusCode::NOT_MODIFIED && previous.is_some() {
        return Ok(Downloaded::NotModified);
    }
    if !status.is_success() {
        return Err(DownloadError::Http {
            url: url.to_string(),
            status: status.as_u16(),
        });
    }
    let validators = Validators {
        etag: header(response.headers(), ETAG),
        last_modified: header(response.headers(), LAST_MODIFIED),
    };
    let io = |source| DownloadError::Io {
        url: url.to_string(),
        path: into.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::create(into).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport(url, &e, read_timeout))?
    {
        hasher.update(&chunk);
        file.write_all(&chunk).map_err(io)?;
        size += chunk.len() as u64;
    }
    file.flush().map_err(io)?;
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Downloaded::Body {
        digest: format!("sha256:{hex}"),
        size,
        validators,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Answers `304` to a request carrying `If-None-Match: "v1"`, else `200` with `ETag: "v1"`.
    fn serve(requests: usize) -> std::io::Result<u16> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(requests) {
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0u8; 4096];
                let n = stream.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                let answer: &[u8] = if head.contains("if-none-match: \"v1\"") {
                    b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nConnection: close\r\n\r\n"
                } else if head.starts_with("get /missing") {
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\nETag: \"v1\"\r\nContent-Length: 3\r\nConnection: close\r\n\r\nhi\n"
                };
                let _ = stream.write_all(answer);
            }
        });
        Ok(port)
    }

    #[test]
    fn downloads_revalidate_and_fail_typed() -> Result<(), Box<dyn std::error::Error>> {
        let port = serve(3)?;
        let dir = tempfile::tempdir()?;
        let into = dir.path().join("body");
        let client = RegistryClient::default();
        let url = format!("http://127.0.0.1:{port}/file");
        let Downloaded::Body {
            digest,
            size,
            validators,
        } = client.download(&url, None, &into)?
        else {
            panic!("the first download has a body");
        };
        assert_eq!(std::fs::read(&into)?, b"hi\n");
        assert_eq!(size, 3);
        assert_eq!(
            digest,
            "sha256:98ea6e4f216f2fb4b69fff9b3a44842c38686ca685f3f55dc48c5d3fb1107be4"
        );
        assert_eq!(validators.etag.as_deref(), Some("\"v1\""));
        assert_eq!(
            client.download(&url, Some(&validators), &into)?,
            Downloaded::NotModified
        );
        let missing = client.download(&format!("http://127.0.0.1:{port}/missing"), None, &into);
        assert!(
            matches!(missing, Err(DownloadError::Http { status: 404, .. })),
            "{missing:?}"
        );
        Ok(())
    }
}
