//! The registry client: pull and push images between a registry and the content store, on top
//! of the `oci-client` crate (transport, token handshake, chunked uploads).

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use futures_util::{StreamExt, TryStreamExt, stream};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};
use oci_spec::image::Descriptor;

use crate::auth::{AuthStore, Credential};
use crate::digest::{self, Digest};
use crate::image::{Image, ImageError, Manifest, Platform, media, parse_manifest, select_platform};
use crate::reference::{Reference, repository_name};
use crate::store::{ContentStore, StoreError};

/// Layers downloaded or uploaded at once.
const PARALLEL_TRANSFERS: usize = 3;
/// Size of the pieces a blob is uploaded in.
const UPLOAD_PIECE: usize = 4 << 20;

/// A registry operation failed. Messages name the registry and reference, never credentials.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry refused our credentials, or wants some and we have none (HTTP 401).
    #[error("{registry}: authentication required for {reference} ({hint})")]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// The image reference.
        reference: String,
        /// Whether credentials were sent.
        hint: &'static str,
    },
    /// Authenticated but not allowed (HTTP 403 / `DENIED`).
    #[error("{registry}: access to {reference} denied")]
    Denied {
        /// The registry host.
        registry: String,
        /// The image reference.
        reference: String,
    },
    /// The image, tag or blob does not exist (HTTP 404).
    #[error("{registry}: {reference} not found{}", what.as_ref().map(|w| format!(" ({w})")).unwrap_or_default())]
    NotFound {
        /// The registry host.
        registry: String,
        /// The image reference.
        reference: String,
        /// What was missing, if not the image itself.
        what: Option<String>,
    },
    /// The registry could not be reached at all.
    #[error("{registry} is unreachable ({scheme}): {detail}")]
    Unreachable {
        /// The registry host.
        registry: String,
        /// `http` or `https`.
        scheme: &'static str,
        /// The network error.
        detail: String,
    },
    /// The registry answered something else that went wrong.
    #[error("{registry}: {reference}: {detail}")]
    Protocol {
        /// The registry host.
        registry: String,
        /// The image reference.
        reference: String,
        /// What the registry answered.
        detail: String,
    },
    /// Content from the registry did not match its digest.
    #[error("{registry}: {reference}: content does not match its digest: {detail}")]
    Mismatch {
        /// The registry host.
        registry: String,
        /// The image reference.
        reference: String,
        /// Which content.
        detail: String,
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

type Result<T> = std::result::Result<T, RegistryError>;

/// How to talk to registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Registries (`host[:port]`) reached over plain HTTP although not on loopback.
    pub insecure_registries: Vec<String>,
    /// Where credentials come from.
    pub auth: AuthStore,
    /// Asks a credential helper the auth files name; without one such registries are anonymous.
    pub credential_helper: Option<HelperRunner>,
}

/// Asks credential helper `name` for the credential of `server` (Docker's server address):
/// `Ok(None)` when it holds none. Running the helper program is the caller's business, since
/// this crate runs no processes.
#[derive(Clone)]
pub struct HelperRunner(pub Arc<AskHelper>);

/// The function behind a [`HelperRunner`]: (helper name, server) to its answer.
pub type AskHelper =
    dyn Fn(&str, &str) -> std::result::Result<Option<Credential>, String> + Send + Sync;

impl std::fmt::Debug for HelperRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HelperRunner")
    }
}

/// The address Docker gives a credential helper for `registry`.
fn helper_server(registry: &str) -> String {
    if registry == "docker.io" {
        "https://index.docker.io/v1/".into()
    } else {
        registry.into()
    }
}

/// Whether `registry` (`host[:port]`) is a loopback address, reached over plain HTTP as Docker does.
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else if registry.parse::<IpAddr>().is_ok() {
        registry
    } else {
        registry
            .rsplit_once(':')
            .map_or(registry, |(host, _port)| host)
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A client for pulling and pushing images.
#[derive(Debug, Clone, Default)]
pub struct RegistryClient {
    options: RegistryOptions,
    clients: SharedClients,
}

/// The HTTP and HTTPS clients, each built on first use and shared by every session: building
/// one loads the system's TLS roots, which costs more than the rest of a warm build's pull.
#[derive(Clone, Default)]
struct SharedClients {
    http: Arc<OnceLock<Client>>,
    https: Arc<OnceLock<Client>>,
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
    fn get(&self, protocol: ClientProtocol) -> Client {
        let cell = match protocol {
            ClientProtocol::Http => &self.http,
            _ => &self.https,
        };
        cell.get_or_init(|| {
            Client::new(ClientConfig {
                protocol,
                ..Default::default()
            })
        })
        .clone()
    }
}

struct Session {
    client: Client,
    auth: RegistryAuth,
    had_credentials: bool,
    registry: String,
    scheme: &'static str,
    reference: String,
}

impl Session {
    /// Uploads manifest or index bytes as they are (so the digest is kept) under `reference`.
    async fn put_manifest(
        &self,
        reference: &Reference,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> Result<()> {
        let content_type = media_type.parse().map_err(|_| RegistryError::Protocol {
            registry: self.registry.clone(),
            reference: self.reference.clone(),
            detail: format!("invalid media type {media_type:?}"),
        })?;
        self.client
            .push_manifest_raw(reference, bytes, content_type)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    fn error(&self, e: OciDistributionError) -> RegistryError {
        let registry = self.registry.clone();
        let reference = self.reference.clone();
        let hint = if self.had_credentials {
            "the credentials were rejected"
        } else {
            "no credentials found for this registry"
        };
        let code_error = |code: &OciErrorCode, message: String| match code {
            OciErrorCode::Unauthorized => RegistryError::Unauthorized {
                registry: registry.clone(),
                reference: reference.clone(),
                hint,
            },
            OciErrorCode::Denied => RegistryError::Denied {
                registry: registry.clone(),
                reference: reference.clone(),
            },
            OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::NotFound => {
                RegistryError::NotFound {
                    registry: registry.clone(),
                    reference: reference.clone(),
                    what: None,
                }
            }
            OciErrorCode::BlobUnknown => RegistryError::NotFound {
                registry: registry.clone(),
                reference: reference.clone(),
                what: Some(message),
            },
            _ => RegistryError::Protocol {
                registry: registry.clone(),
                reference: reference.clone(),
                detail: message,
            },
        };
        match e {
            OciDistributionError::AuthenticationFailure(_)
            | OciDistributionError::UnauthorizedError { .. } => RegistryError::Unauthorized {
                registry,
                reference,
                hint,
            },
            OciDistributionError::ImageManifestNotFoundError(_) => RegistryError::NotFound {
                registry,
                reference,
                what: None,
            },
            OciDistributionError::RegistryError { envelope, .. } => match envelope.errors.first() {
                Some(first) => code_error(&first.code, first.message.clone()),
                None => RegistryError::Protocol {
                    registry,
                    reference,
                    detail: "empty error response".into(),
                },
            },
            OciDistributionError::ServerError { code: 401, .. } => RegistryError::Unauthorized {
                registry,
                reference,
                hint,
            },
            OciDistributionError::ServerError { code: 403, .. } => RegistryError::Denied {
                registry,
                reference,
            },
            OciDistributionError::ServerError { code: 404, .. } => RegistryError::NotFound {
                registry,
                reference,
                what: None,
            },
            OciDistributionError::ServerError { code, message, .. } => RegistryError::Protocol {
                registry,
                reference,
                detail: format!(
                    "HTTP {code}: {}",
                    message.chars().take(200).collect::<String>()
                ),
            },
            OciDistributionError::RequestError(e)
                if e.status().is_some_and(|s| s.as_u16() == 401) =>
            {
                RegistryError::Unauthorized {
                    registry,
                    reference,
                    hint,
                }
            }
            OciDistributionError::RequestError(e)
                if e.status().is_some_and(|s| s.as_u16() == 403) =>
            {
                RegistryError::Denied {
                    registry,
                    reference,
                }
            }
            OciDistributionError::RequestError(e)
                if e.status().is_some_and(|s| s.as_u16() == 404) =>
            {
                RegistryError::NotFound {
                    registry,
                    reference,
                    what: e.url().map(|u| u.path().to_owned()),
                }
            }
            OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
                let mut detail = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    detail = format!("{detail}: {s}");
                    source = s.source();
                }
                RegistryError::Unreachable {
                    registry,
                    scheme: self.scheme,
                    detail,
                }
            }
            OciDistributionError::DigestError(e) => RegistryError::Mismatch {
                registry,
                reference,
                detail: e.to_string(),
            },
            other => RegistryError::Protocol {
                registry,
                reference,
                detail: other.to_string(),
            },
        }
    }
}

fn oci_descriptor(d: &Descriptor) -> OciDescriptor {
    OciDescriptor {
        media_type: d.media_type().to_string(),
        digest: d.digest().to_string(),
        size: i64::try_from(d.size()).unwrap_or(i64::MAX),
        ..Default::default()
    }
}

impl RegistryClient {
    /// A client with `options`.
    pub fn new(options: RegistryOptions) -> Self {
        Self {
            options,
            clients: SharedClients::default(),
        }
    }

    /// A session for `reference`'s registry, authenticated for `operation`.
    async fn session(
        &self,
        reference: &Reference,
        operation: RegistryOperation,
    ) -> Result<Session> {
        let registry = reference.registry().to_owned();
        let plain_http =
            is_loopback(&registry) || self.options.insecure_registries.contains(&registry);
        let protocol = if plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let client = self.clients.get(protocol);
        let mut credential = self.options.auth.lookup(&registry, reference.repository());
        if credential == Credential::Anonymous
            && let Some(helper) = self.options.auth.helper(&registry)
        {
            credential = match &self.options.credential_helper {
                Some(run) => match (run.0)(helper, &helper_server(&registry)) {
                    Ok(found) => found.unwrap_or_default(),
                    Err(e) => {
                        tracing::warn!(
                            "credential helper docker-credential-{helper} for {registry}: {e}; using anonymous access"
                        );
                        Credential::Anonymous
                    }
                },
                None => Credential::Anonymous,
            };
        }
        let had_credentials = credential != Credential::Anonymous;
        let auth = match credential {
            Credential::Anonymous => RegistryAuth::Anonymous,
            Credential::Basic { username, password } => RegistryAuth::Basic(username, password),
        };
        let session = Session {
            client,
            auth,
            had_credentials,
            registry,
            scheme: if plain_http { "http" } else { "https" },
            reference: reference.whole(),
        };
        session
            .client
            .auth(reference, &session.auth, operation)
            .await
            .map_err(|e| session.error(e))?;
        Ok(session)
    }

    /// Pulls `reference` for `platform` into `store` (blobs already present are not fetched again)
    /// and returns the image.
    pub async fn pull(
        &self,
        store: &ContentStore,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<Image> {
        let session = self.session(reference, RegistryOperation::Pull).await?;
        let mut manifest_digest = self
            .fetch_manifest(&session, store, reference, reference.digest())
            .await?;
        let image_error = |e: ImageError| RegistryError::Image {
            reference: reference.whole(),
            source: Box::new(e),
        };
        let bytes = store.read(&manifest_digest, crate::image::MAX_JSON_SIZE)?;
        if let Manifest::Index(index) =
            parse_manifest(&bytes, &manifest_digest).map_err(image_error)?
        {
            let chosen = select_platform(&index, &manifest_digest, platform)
                .map_err(image_error)?
                .digest()
                .to_string();
            manifest_digest = self
                .fetch_manifest(&session, store, reference, Some(&chosen))
                .await?;
        }
        let bytes = store.read(&manifest_digest, crate::image::MAX_JSON_SIZE)?;
        let Manifest::Image(manifest) =
            parse_manifest(&bytes, &manifest_digest).map_err(image_error)?
        else {
            return Err(image_error(ImageError::Unsupported {
                digest: manifest_digest,
                reason: "an index inside an index".into(),
            }));
        };
        let mut blobs = vec![manifest.config().clone()];
        blobs.extend(manifest.layers().iter().cloned());
        let session = &session;
        stream::iter(
            blobs
                .into_iter()
                .map(|d| async move { self.fetch_blob(session, store, reference, &d).await }),
        )
        .buffer_unordered(PARALLEL_TRANSFERS)
        .try_collect::<Vec<()>>()
        .await?;
        Image::load(store, &manifest_digest, platform).map_err(image_error)
    }

    async fn fetch_manifest(
        &self,
        session: &Session,
        store: &ContentStore,
        reference: &Reference,
        digest: Option<&str>,
    ) -> Result<Digest> {
        let target = match digest {
            Some(d) => Reference::with_digest(
                reference.registry().to_owned(),
                reference.repository().to_owned(),
                d.to_owned(),
            ),
            None => reference.clone(),
        };
        let (bytes, _) = session
            .client
            .pull_manifest_raw(&target, &session.auth, &media::MANIFEST_TYPES)
            .await
            .map_err(|e| session.error(e))?;
        if bytes.len() as u64 > crate::image::MAX_JSON_SIZE {
            return Err(RegistryError::Protocol {
                registry: session.registry.clone(),
                reference: session.reference.clone(),
                detail: "manifest too large".into(),
            });
        }
        let actual = digest::sha256(&bytes);
        if let Some(expected) = digest
            && expected != actual.to_string()
        {
            return Err(RegistryError::Mismatch {
                registry: session.registry.clone(),
                reference: session.reference.clone(),
                detail: format!("manifest {expected} arrived as {actual}"),
            });
        }
        Ok(store.put(&bytes)?.digest)
    }

    async fn fetch_blob(
        &self,
        session: &Session,
        store: &ContentStore,
        reference: &Reference,
        descriptor: &Descriptor,
    ) -> Result<()> {
        let digest = descriptor.digest();
        if store.size(digest) == Some(descriptor.size()) {
            // Present: use it only if it still matches its digest (a corrupt one is removed by
            // `verify` and fetched again below).
            match store.verify(digest) {
                Ok(()) => return Ok(()),
                Err(StoreError::Corrupt(_)) => {
                    tracing::warn!("stored blob {digest} was corrupt; fetching it again")
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut stream = session
            .client
            .pull_blob_stream(reference, &oci_descriptor(descriptor))
            .await
            .map_err(|e| session.error(e))?;
        let mut writer = store.writer_for(digest)?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| RegistryError::Protocol {
                registry: session.registry.clone(),
                reference: session.reference.clone(),
                detail: format!("downloading {digest}: {e}"),
            })?;
            std::io::Write::write_all(&mut writer, &chunk).map_err(StoreError::Source)?;
        }
        writer.commit().map_err(|e| match e {
            StoreError::Mismatch {
                expected, actual, ..
            } => RegistryError::Mismatch {
                registry: session.registry.clone(),
                reference: session.reference.clone(),
                detail: format!("blob {expected} arrived as {actual}"),
            },
            other => other.into(),
        })?;
        Ok(())
    }

    /// Pushes `image` (its blobs from `store`) to `reference`: blobs the registry has are skipped,
    /// blobs in `mount_from` (same registry) are mounted, others uploaded; then the manifest is
    /// tagged. Returns the manifest digest.
    pub async fn push(
        &self,
        store: &ContentStore,
        image: &Image,
        reference: &Reference,
        mount_from: Option<&Reference>,
    ) -> Result<Digest> {
        let session = self.session(reference, RegistryOperation::Push).await?;
        let mut blobs: Vec<Descriptor> = image.layers().to_vec();
        blobs.push(image.manifest.config().clone());
        let session = &session;
        stream::iter(blobs.into_iter().map(|d| async move {
            self.send_blob(session, store, reference, mount_from, &d)
                .await
        }))
        .buffer_unordered(PARALLEL_TRANSFERS)
        .try_collect::<Vec<()>>()
        .await?;
        let bytes = store.read(image.digest(), crate::image::MAX_JSON_SIZE)?;
        session
            .put_manifest(reference, bytes, image.descriptor.media_type().as_ref())
            .await?;
        Ok(image.digest().clone())
    }

    /// Pushes several single-platform images and an index over them to `reference`; returns the
    /// index digest.
    pub async fn push_index(
        &self,
        store: &ContentStore,
        images: &[Image],
        reference: &Reference,
    ) -> Result<Digest> {
        for image in images {
            let by_digest = Reference::with_digest(
                reference.registry().to_owned(),
                reference.repository().to_owned(),
                image.digest().to_string(),
            );
            self.push(store, image, &by_digest, None).await?;
        }
        let index = crate::image::write_index(store, images).map_err(|e| RegistryError::Image {
            reference: reference.whole(),
            source: Box::new(e),
        })?;
        let session = self.session(reference, RegistryOperation::Push).await?;
        let bytes = store.read(index.digest(), crate::image::MAX_JSON_SIZE)?;
        session
            .put_manifest(reference, bytes, media::OCI_INDEX)
            .await?;
        Ok(index.digest().clone())
    }

    async fn send_blob(
        &self,
        session: &Session,
        store: &ContentStore,
        reference: &Reference,
        mount_from: Option<&Reference>,
        descriptor: &Descriptor,
    ) -> Result<()> {
        let digest = descriptor.digest().to_string();
        if session
            .client
            .blob_exists(reference, &digest)
            .await
            .map_err(|e| session.error(e))?
        {
            return Ok(());
        }
        if let Some(source) = mount_from.filter(|s| {
            s.registry() == reference.registry() && s.repository() != reference.repository()
        }) {
            match session.client.mount_blob(reference, source, &digest).await {
                Ok(()) => return Ok(()),
                Err(e) => tracing::debug!(
                    "mounting {digest} from {} failed, uploading: {e}",
                    repository_name(source)
                ),
            }
        }
        let reader = store.open_blob(descriptor.digest())?;
        let pieces = stream::try_unfold(reader, |mut reader| async move {
            let mut buf = vec![0u8; UPLOAD_PIECE];
            let mut filled = 0;
            while filled < buf.len() {
                let n = std::io::Read::read(&mut reader, &mut buf[filled..]).map_err(|e| {
                    OciDistributionError::GenericError(Some(format!("reading the blob: {e}")))
                })?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                return Ok(None);
            }
            buf.truncate(filled);
            Ok(Some((bytes::Bytes::from(buf), reader)))
        });
        session
            .client
            .push_blob_stream(reference, pieces, &digest, Some(descriptor.size()))
            .await
            .map_err(|e| session.error(e))?;
        Ok(())
    }
}

/// Runs a registry future to completion, for callers that are not async.
///
/// Every call shares one runtime, made on first use: the shared clients keep idle connections
/// that belong to the runtime they were opened on. Several threads may wait here at once.
pub fn block_on<F: std::future::Future>(future: F) -> std::io::Result<F::Output> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let runtime = match RUNTIME.get() {
        Some(runtime) => runtime,
        None => {
            let made = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("umstage-registry")
                .enable_all()
                .build()?;
            RUNTIME.get_or_init(|| made)
        }
    };
    Ok(runtime.block_on(future))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection_follows_docker() {
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "docker.io",
            "10.0.0.1:5000",
            "localhost.example.com",
            "[2001:db8::1]:5000",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
