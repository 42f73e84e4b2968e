//! What went wrong talking to a registry, typed, and the translation of `oci-client`'s and
//! `reqwest`'s errors into it. Messages name the registry once (the reference carries it) and
//! never credentials.

use std::time::Duration;

use oci_client::errors::{OciDistributionError, OciErrorCode};

use crate::image::ImageError;
use crate::store::StoreError;

/// A registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry refused our credentials, or wants some and we have none (HTTP 401).
    #[error("{reference}: authentication required ({hint})")]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// The image reference.
        reference: String,
        /// Whether credentials were sent, or why none were (a failed credential helper).
        hint: String,
    },
    /// Authenticated but not allowed (HTTP 403 / `DENIED`).
    #[error("{reference}: access denied")]
    Denied {
        /// The registry host.
        registry: String,
        /// The image reference.
        reference: String,
    },
    /// The image, tag or blob does not exist (HTTP 404).
    #[error("{reference}: not found{}", what.as_ref().map(|w| format!(" ({w})")).unwrap_or_default())]
    NotFound {
        /// The registry host.
        registry: String,
        /// The image reference.
        reference: String,
        /// What was missing, if not the image itself.
        what: Option<String>,
    },
    /// The registry could not be reached at all (refused, no route, connect timeout).
    #[error("{registry} is unreachable ({scheme}): {detail}")]
    Unreachable {
        /// The registry host.
        registry: String,
        /// `http` or `https`.
        scheme: &'static str,
        /// The network error.
        detail: String,
    },
    /// The registry stopped sending: no byte arrived for the read timeout.
    #[error("{reference}: {what}: the registry sent nothing for {} s", after.as_secs_f32())]
    Timeout {
        /// The registry host.
        registry: String,
        /// The image reference.
        reference: String,
        /// What was being done.
        what: String,
        /// The read timeout that ran out.
        after: Duration,
    },
    /// The connection broke while a body was arriving.
    #[error("{reference}: {what}: the connection broke: {detail}")]
    Transfer {
        /// The registry host.
        registry: String,
        /// The image reference.
        reference: String,
        /// What was being done.
        what: String,
        /// The network error.
        detail: String,
    },
    /// A blob ended before its descriptor's size.
    #[error("{reference}: blob {digest} truncated: expected {expected} bytes, got {got}")]
    Truncated {
        /// The registry host.
        registry: String,
        /// The image reference.
        reference: String,
        /// The blob.
        digest: String,
        /// The size its descriptor gives.
        expected: u64,
        /// The bytes that arrived.
        got: u64,
    },
    /// A manifest, index, config or blob is larger than allowed (refused while streaming).
    #[error("{reference}: {what} is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The registry host.
        registry: String,
        /// The image reference.
        reference: String,
        /// Which content.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// The registry answered with an HTTP error other than 401, 403 and 404.
    #[error("{reference}: HTTP {status}{}", if detail.is_empty() { String::new() } else { format!(": {detail}") })]
    Http {
        /// The registry host.
        registry: String,
        /// The image reference.
        reference: String,
        /// The HTTP status.
        status: u16,
        /// The registry's message, shortened.
        detail: String,
    },
    /// The registry answered something else that went wrong.
    #[error("{reference}: {detail}")]
    Protocol {
        /// The registry host.
        registry: String,
        /// The image reference.
        reference: String,
        /// What the registry answered.
        detail: String,
    },
    /// Content from the registry did not match its digest.
    #[error("{reference}: content does not match its digest: {detail}")]
    Mismatch {
        /// The registry host.
        registry: String,
        /// The image reference.
        reference: String,
        /// Which content.
        detail: String,
    },
    /// No TLS client could be made for an HTTPS registry (no CA certificates on the machine).
    #[error("{registry}: cannot set up TLS: {source}")]
    Tls {
        /// The registry host.
        registry: String,
        /// Why.
        #[source]
        source: TransportError,
    },
    /// The pulled image is not usable.
    #[error("{reference}: {source}")]
    Image {
        /// The image reference.
        reference: String,
        /// The problem.
        source: Box<ImageError>,
    },
    /// The content store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RegistryError {
    /// Whether trying again may succeed: network trouble, timeouts, overload (429, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. }
            | Self::Timeout { .. }
            | Self::Transfer { .. }
            | Self::Truncated { .. } => true,
            Self::Http { status, .. } => *status == 429 || (500..600).contains(status),
            _ => false,
        }
    }
}

/// Where an operation happened, for building errors.
#[derive(Debug, Clone)]
pub(super) struct Origin {
    pub registry: String,
    pub reference: String,
    pub scheme: &'static str,
    pub had_credentials: bool,
    /// Why the credential helper the auth files name gave nothing, when it failed.
    pub helper_failure: Option<String>,
    pub read_timeout: Duration,
}

/// The longest registry message quoted in an error.
const QUOTED: usize = 200;

impl Origin {
    fn hint(&self) -> String {
        match &self.helper_failure {
            _ if self.had_credentials => "the credentials were rejected".into(),
            Some(failure) => format!("no credentials: {failure}"),
            None => "no credentials found for this registry".into(),
        }
    }

    pub fn unauthorized(&self) -> RegistryError {
        RegistryError::Unauthorized {
            registry: self.registry.clone(),
            reference: self.reference.clone(),
            hint: self.hint(),
        }
    }

    pub fn denied(&self) -> RegistryError {
        RegistryError::Denied {
            registry: self.registry.clone(),
            reference: self.reference.clone(),
        }
    }

    pub fn not_found(&self, what: Option<String>) -> RegistryError {
        RegistryError::NotFound {
            registry: self.registry.clone(),
            reference: self.reference.clone(),
            what: what.map(|w| quoted(&w)),
        }
    }

    pub fn protocol(&self, detail: impl Into<String>) -> RegistryError {
        RegistryError::Protocol {
            registry: self.registry.clone(),
            reference: self.reference.clone(),
            detail: quoted(&detail.into()),
        }
    }

    pub fn mismatch(&self, detail: impl Into<String>) -> RegistryError {
        RegistryError::Mismatch {
            registry: self.registry.clone(),
            reference: self.reference.clone(),
            detail: detail.into(),
        }
    }

    pub fn too_large(&self, what: impl Into<String>, limit: u64) -> RegistryError {
        RegistryError::TooLarge {
            registry: self.registry.clone(),
            reference: self.reference.clone(),
            what: what.into(),
            limit,
        }
    }

    pub fn truncated(&self, digest: impl Into<String>, expected: u64, got: u64) -> RegistryError {
        RegistryError::Truncated {
            registry: self.registry.clone(),
            reference: self.reference.clone(),
            digest: digest.into(),
            expected,
            got,
        }
    }

    /// An HTTP error status with the registry's body (an OCI error envelope or text).
    pub fn status(&self, status: u16, body: &[u8]) -> RegistryError {
        let message = envelope_message(body)
            .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
        match status {
            401 => self.unauthorized(),
            403 => self.denied(),
            404 => self.not_found(None),
            _ => RegistryError::Http {
                registry: self.registry.clone(),
                reference: self.reference.clone(),
                status,
                detail: quoted(&message.chars().take(QUOTED).collect::<String>()),
            },
        }
    }

    /// A failure of the transport (connecting, or a body that stopped or broke) while `what`.
    pub fn transport(
        &self,
        error: &(dyn std::error::Error + 'static),
        what: &str,
    ) -> RegistryError {
        let detail = causes(error);
        if is_connect(error) {
            RegistryError::Unreachable {
                registry: self.registry.clone(),
                scheme: self.scheme,
                detail,
            }
        } else if is_timeout(error) {
            RegistryError::Timeout {
                registry: self.registry.clone(),
                reference: self.reference.clone(),
                what: what.to_owned(),
                after: self.read_timeout,
            }
        } else {
            RegistryError::Transfer {
                registry: self.registry.clone(),
                reference: self.reference.clone(),
                what: what.to_owned(),
                detail,
            }
        }
    }

    /// `oci-client`'s error for `what`, typed.
    pub fn oci(&self, e: OciDistributionError, what: &str) -> RegistryError {
        match e {
            OciDistributionError::AuthenticationFailure(_)
            | OciDistributionError::UnauthorizedError { .. } => self.unauthorized(),
            OciDistributionError::ImageManifestNotFoundError(_) => self.not_found(None),
            OciDistributionError::RegistryError { envelope, .. } => match envelope.errors.first() {
                Some(first) => match first.code {
                    OciErrorCode::Unauthorized => self.unauthorized(),
                    OciErrorCode::Denied => self.denied(),
                    OciErrorCode::ManifestUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::NotFound => self.not_found(None),
                    OciErrorCode::BlobUnknown => self.not_found(Some(first.message.clone())),
                    _ => self.protocol(first.message.clone()),
                },
                None => self.protocol("empty error response"),
            },
            OciDistributionError::ServerError { code, message, .. } => {
                self.status(code, message.as_bytes())
            }
            OciDistributionError::RequestError(e) => match e.status() {
                Some(s) if s.as_u16() == 404 => {
                    self.not_found(e.url().map(|u| u.path().to_owned()))
                }
                Some(s) => self.status(s.as_u16(), &[]),
                None => self.transport(&e, what),
            },
            OciDistributionError::DigestError(e) => self.mismatch(e.to_string()),
            other => self.protocol(format!("{what}: {other}")),
        }
    }
}

/// A registry's text as an error quotes it, its control characters escaped: a hostile
/// registry's message must not drive the terminal or forge lines of the output.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The first message of an OCI error envelope (`{"errors":[{"code":…,"message":…}]}`).
fn envelope_message(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: String,
        #[serde(default)]
        message: String,
    }
    let envelope: Envelope = serde_json::from_slice(body).ok()?;
    let first = envelope.errors.into_iter().next()?;
    Some(format!("{}: {}", first.code, first.message))
}

/// `error` and its causes. An `io::Error` wrapping another error is seen through: its `source`
/// skips the wrapped error itself (streams hand `reqwest`'s errors over wrapped that way).
pub(super) fn chain<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| {
        match e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        }
    })
}

pub(super) fn is_connect(error: &(dyn std::error::Error + 'static)) -> bool {
    chain(error).any(|e| {
        e.downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_connect)
    })
}

pub(super) fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    chain(error).any(|e| {
        e.downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_timeout)
            || e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    })
}

/// No client could be made for a transport: as a rule, the machine has no CA certificate.
#[derive(Debug)]
pub struct TransportError(pub(super) Box<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (install the CA certificates, e.g. Debian's ca-certificates, or name a bundle with SSL_CERT_FILE)",
            causes(self.0.as_ref())
        )
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

/// The causes of `error`, without `reqwest`'s outer "error sending request for url (…)" (the URL
/// repeats the registry) and without repeats.
pub(super) fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in chain(error) {
        if e.is::<reqwest::Error>() && e.source().is_some() {
            continue;
        }
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin {
            registry: "r.example:5000".into(),
            reference: "r.example:5000/app:1".into(),
            scheme: "https",
            had_credentials: false,
            helper_failure: None,
            read_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn statuses_are_typed_and_registry_messages_quoted() {
        let o = origin();
        assert!(matches!(
            o.status(401, b""),
            RegistryError::Unauthorized { .. }
        ));
        assert!(matches!(o.status(404, b""), RegistryError::NotFound { .. }));
        let e = o.status(
            503,
            br#"{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}"#,
        );
        assert!(e.is_transient());
        assert_eq!(
            e.to_string(),
            "r.example:5000/app:1: HTTP 503: UNAVAILABLE: try later"
        );
        assert!(o.status(429, b"slow down").is_transient());
        assert_eq!(
            o.status(400, b"\x1b]0;owned\x07\nWARNING: forged")
                .to_string(),
            r"r.example:5000/app:1: HTTP 400: \u{1b}]0;owned\u{7}\nWARNING: forged"
        );
        assert!(!o.status(400, b"bad").is_transient());
    }

    #[test]
    fn the_registry_is_named_once() {
        let e = origin().truncated("sha256:ab", 10, 4);
        assert_eq!(
            e.to_string(),
            "r.example:5000/app:1: blob sha256:ab truncated: expected 10 bytes, got 4"
        );
        assert!(e.is_transient());
    }

    #[test]
    fn an_io_timeout_is_a_timeout() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "read timed out");
        let e = origin().transport(&io, "downloading blob sha256:ab");
        assert!(matches!(e, RegistryError::Timeout { .. }), "{e}");
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let e = origin().transport(&reset, "downloading blob sha256:ab");
        assert!(matches!(e, RegistryError::Transfer { .. }), "{e}");
    }
}
