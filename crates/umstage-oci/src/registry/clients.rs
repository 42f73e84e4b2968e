//! The HTTP clients a registry is talked to with, built once per protocol and shared: building
//! one loads the system's TLS roots, which costs more than the rest of a warm build's pull.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol};

use super::error::TransportError;
use super::limits::Limits;

/// `oci-client` for the token handshake, blobs and pushes; plain `reqwest` for manifests, which
/// `oci-client` would read whole whatever their size.
#[derive(Clone)]
pub(super) struct Transport {
    pub oci: oci_client::Client,
    pub http: reqwest::Client,
}

impl Transport {
    /// Clients with `limits`' timeouts; `plain_http` for registries reached without TLS.
    ///
    /// Those verify no certificates (Docker's meaning of an insecure registry, loopback
    /// included): so they need no CA roots, and a redirect to HTTPS is no less safe than the
    /// plain HTTP already accepted. `oci_client::Client::try_from` also builds a default
    /// `reqwest` client, which panics when the machine has no CA certificate at all; a
    /// program using this crate makes sure there is one (umstage's binary: `ca_roots`).
    fn new(plain_http: bool, limits: &Limits) -> Result<Self, TransportError> {
        let protocol = if plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let oci = oci_client::Client::try_from(ClientConfig {
            protocol,
            accept_invalid_certificates: plain_http,
            connect_timeout: Some(limits.connect_timeout),
            read_timeout: Some(limits.read_timeout),
            ..Default::default()
        })
        .map_err(|e| TransportError(e.into()))?;
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(plain_http)
            .connect_timeout(limits.connect_timeout)
            .read_timeout(limits.read_timeout)
            .user_agent(concat!("umstage/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TransportError(e.into()))?;
        Ok(Self { oci, http })
    }
}

/// How long a registry's answer to the sign-in is reused: below the 60 seconds the token
/// specification gives a token that says nothing of its lifetime (and the least a registry
/// may give), with room for the requests made with it.
const TOKEN_REUSE: Duration = Duration::from_secs(45);

/// What a sign-in was for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct SignIn {
    pub plain_http: bool,
    pub registry: String,
    pub repository: String,
    pub push: bool,
    /// The credential it used (its `Authorization` header), if any.
    pub credential: Option<String>,
}

/// What a sign-in got, and when it was asked for.
#[derive(Debug, Clone)]
struct Kept {
    asked: Instant,
    token: Option<String>,
}

/// The plain-HTTP and the HTTPS transport, each made on first use, and the sign-ins made
/// with them: a build fetches many blobs of one repository, and each fetch would otherwise
/// probe `/v2/` and ask for a token again.
#[derive(Clone, Default)]
pub(super) struct SharedClients {
    http: Arc<OnceLock<Transport>>,
    https: Arc<OnceLock<Transport>>,
    tokens: Arc<Mutex<HashMap<SignIn, Kept>>>,
}

impl std::fmt::Debug for SharedClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedClients")
            .field("http", &self.http.get().is_some())
            .field("https", &self.https.get().is_some())
            .finish()
    }
}

impl SharedClients {
    /// The transport for plain HTTP or HTTPS; an error (not cached) when it cannot be made.
    pub fn get(&self, plain_http: bool, limits: &Limits) -> Result<Transport, TransportError> {
        let cell = if plain_http { &self.http } else { &self.https };
        if let Some(made) = cell.get() {
            return Ok(made.clone());
        }
        let made = Transport::new(plain_http, limits)?;
        Ok(cell.get_or_init(|| made).clone())
    }

    /// The token (or its absence: a registry that wants none) a sign-in got less than
    /// [`TOKEN_REUSE`] ago.
    pub fn token(&self, sign_in: &SignIn) -> Option<Option<String>> {
        let tokens = self.tokens.lock().ok()?;
        let kept = tokens.get(sign_in)?;
        (kept.asked.elapsed() < TOKEN_REUSE).then(|| kept.token.clone())
    }

    /// Keeps what `sign_in` got when asked at `asked`.
    pub fn keep_token(&self, sign_in: SignIn, asked: Instant, token: Option<String>) {
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.retain(|_, kept| kept.asked.elapsed() < TOKEN_REUSE);
            tokens.insert(sign_in, Kept { asked, token });
        }
    }
}
