//! The registry client: pull and push images between a registry and the content store, on top
//! of the `oci-client` crate (transport, token handshake, chunked uploads).

mod artifact;
mod clients;
mod download;
mod error;
mod fetch;
mod limits;

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use base64::Engine;
use futures_util::{StreamExt, TryStreamExt, stream};
use oci_client::RegistryOperation;
use oci_client::errors::{DigestError, OciDistributionError};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_spec::image::Descriptor;

use crate::auth::{AuthStore, Credential};
use crate::digest::{self, Digest};
use crate::image::{Image, ImageError, Manifest, Platform, media, parse_manifest, select_platform};
use crate::reference::{Reference, repository_name};
use crate::store::{ContentStore, StoreError};
use clients::{SharedClients, SignIn, Transport};
pub use download::{DownloadError, Downloaded, Validators};
use error::Origin;
pub use error::{RegistryError, TransportError};
pub use limits::Limits;

/// Layers downloaded or uploaded at once.
const PARALLEL_TRANSFERS: usize = 3;
/// Size of the pieces a blob is uploaded in.
const UPLOAD_PIECE: usize = 4 << 20;

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
pub type AskHelper = dyn Fn(
        &str,
        &str,
    ) -> std::result::Result<Option<Credential>, Box<dyn std::error::Error + Send + Sync>>
    + Send
    + Sync;

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
    limits: Limits,
    clients: SharedClients,
}

/// One reference's registry, signed in for one operation.
struct Session {
    transport: Transport,
    /// The `Authorization` header for requests made without `oci-client`.
    authorization: Option<String>,
    origin: Origin,
}

impl Session {
    /// Uploads manifest or index bytes as they are (so the digest is kept) under `reference`.
    async fn put_manifest(
        &self,
        limits: &Limits,
        reference: &Reference,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> Result<()> {
        let content_type: reqwest::header::HeaderValue = media_type.parse().map_err(|_| {
            self.origin
                .protocol(format!("invalid media type {media_type:?}"))
        })?;
        limits
            .retry(|| async {
                self.transport
                    .oci
                    .push_manifest_raw(reference, bytes.clone(), content_type.clone())
                    .await
                    .map_err(|e| self.origin.oci(e, "uploading the manifest"))
            })
            .await?;
        Ok(())
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
    /// A client with `options` and the default [`Limits`].
    pub fn new(options: RegistryOptions) -> Self {
        Self {
            options,
            limits: Limits::default(),
            clients: SharedClients::default(),
        }
    }

    /// This client with other timeouts, retries and size limits.
    pub fn with_limits(self, limits: Limits) -> Self {
        Self {
            limits,
            // Clients carry their timeouts: new ones for the new limits.
            clients: SharedClients::default(),
            ..self
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
        let transport = self
            .clients
            .get(plain_http, &self.limits)
            .map_err(|source| RegistryError::Tls {
                registry: registry.clone(),
                source,
            })?;
        let mut credential = self.options.auth.lookup(&registry, reference.repository());
        let mut helper_failure = None;
        if credential == Credential::Anonymous
            && let Some(helper) = self.options.auth.helper(&registry)
        {
            credential = match &self.options.credential_helper {
                Some(run) => match (run.0)(helper, &helper_server(&registry)) {
                    Ok(found) => found.unwrap_or_default(),
                    Err(e) => {
                        // Anonymous access may still do; if the registry wants credentials,
                        // its refusal says why there were none.
                        tracing::debug!(
                            "credential helper docker-credential-{helper} for {registry}: {e}; using anonymous access"
                        );
                        helper_failure = Some(format!(
                            "the credential helper docker-credential-{helper} failed: {e}"
                        ));
                        Credential::Anonymous
                    }
                },
                None => Credential::Anonymous,
            };
        }
        let had_credentials = credential != Credential::Anonymous;
        let (auth, basic) = match credential {
            Credential::Anonymous => (RegistryAuth::Anonymous, None),
            Credential::Basic { username, password } => {
                let header = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("{username}:{password}"))
                );
                (RegistryAuth::Basic(username, password), Some(header))
            }
        };
        let origin = Origin {
            registry,
            reference: reference.whole(),
            scheme: if plain_http { "http" } else { "https" },
            had_credentials,
            helper_failure,
            read_timeout: self.limits.read_timeout,
        };
        let sign_in = SignIn {
            plain_http,
            registry: origin.registry.clone(),
            repository: reference.repository().to_owned(),
            push: matches!(operation, RegistryOperation::Push),
            credential: basic.clone(),
        };
        let token = match self.clients.token(&sign_in) {
            Some(token) => token,
            None => {
                let asked = std::time::Instant::now();
                let token = self
                    .limits
                    .retry(|| async {
                        transport
                            .oci
                            .auth(reference, &auth, operation)
                            .await
                            .map_err(|e| origin.oci(e, "signing in"))
                    })
                    .await?;
                self.clients.keep_token(sign_in, asked, token.clone());
                token
            }
        };
        Ok(Session {
            transport,
            authorization: token.map(|t| format!("Bearer {t}")).or(basic),
            origin,
        })
    }

    /// Pulls `reference` for `platform` into `store` (blobs already present are not fetched again)
    /// and returns the image.
    pub async fn pull(
        &self,
        store: &ContentStore,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<Image> {
        self.pull_with(store, reference, platform, true).await
    }

    /// Pulls `reference`'s manifest and config for `platform` into `store`, not its layers
    /// (fetch them with [`RegistryClient::pull_blobs`] when they are needed).
    pub async fn pull_metadata(
        &self,
        store: &ContentStore,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<Image> {
        self.pull_with(store, reference, platform, false).await
    }

    async fn pull_with(
        &self,
        store: &ContentStore,
        reference: &Reference,
        platform: &Platform,
        with_layers: bool,
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
        // Every blob is refused once it passes its descriptor's size: this bounds the config.
        if manifest.config().size() > self.limits.max_config {
            return Err(session.origin.too_large(
                format!("config {}", manifest.config().digest()),
                self.limits.max_config,
            ));
        }
        let mut blobs = vec![manifest.config().clone()];
        if with_layers {
            blobs.extend(manifest.layers().iter().cloned());
        }
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
        let bytes = self
            .limits
            .retry(|| {
                fetch::manifest(
                    &session.transport.http,
                    &session.origin,
                    &target,
                    session.authorization.as_deref(),
                    self.limits.max_manifest,
                )
            })
            .await?;
        let actual = digest::sha256(&bytes);
        if let Some(expected) = digest
            && expected != actual.to_string()
        {
            return Err(session
                .origin
                .mismatch(format!("manifest {expected} arrived as {actual}")));
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
        self.limits
            .retry(|| download_blob(session, store, reference, descriptor))
            .await
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
        let mut blobs: Vec<Descriptor> = image.layers().to_vec();
        blobs.push(image.manifest.config().clone());
        self.push_manifest(store, &image.descriptor, &blobs, reference, mount_from)
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
            .put_manifest(&self.limits, reference, bytes, media::OCI_INDEX)
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
        let exists = self
            .limits
            .retry(|| async {
                session
                    .transport
                    .oci
                    .blob_exists(reference, &digest)
                    .await
                    .map_err(|e| session.origin.oci(e, "checking for a blob"))
            })
            .await?;
        if exists {
            return Ok(());
        }
        if let Some(source) = mount_from.filter(|s| {
            s.registry() == reference.registry() && s.repository() != reference.repository()
        }) {
            match session
                .transport
                .oci
                .mount_blob(reference, source, &digest)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) => tracing::debug!(
                    "mounting {digest} from {} failed, uploading: {e}",
                    repository_name(source)
                ),
            }
        }
        self.limits
            .retry(|| upload_blob(session, store, reference, descriptor))
            .await
    }
}

/// One try at downloading a blob into `store`, refusing more bytes than its descriptor gives.
async fn download_blob(
    session: &Session,
    store: &ContentStore,
    reference: &Reference,
    descriptor: &Descriptor,
) -> Result<()> {
    let digest = descriptor.digest();
    let expected = descriptor.size();
    let what = format!("downloading blob {digest}");
    let origin = &session.origin;
    let mut stream = session
        .transport
        .oci
        .pull_blob_stream(reference, &oci_descriptor(descriptor))
        .await
        .map_err(|e| origin.oci(e, &what))?;
    let mut writer = store.writer_for(digest)?;
    let mut got: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                let digest_error = error::chain(&e).find_map(|c| c.downcast_ref::<DigestError>());
                return Err(match origin.transport(&e, &what) {
                    _ if let Some(DigestError::VerificationError { actual, .. }) = digest_error => {
                        origin.mismatch(format!("blob {digest} arrived as {actual}"))
                    }
                    _ if let Some(other) = digest_error => {
                        origin.mismatch(format!("blob {digest}: {other}"))
                    }
                    RegistryError::Transfer { .. } if got < expected => {
                        origin.truncated(digest.to_string(), expected, got)
                    }
                    other => other,
                });
            }
        };
        got += chunk.len() as u64;
        if got > expected {
            return Err(origin.mismatch(format!(
                "blob {digest} is longer than the {expected} bytes its descriptor gives"
            )));
        }
        std::io::Write::write_all(&mut writer, &chunk).map_err(StoreError::Source)?;
    }
    if got < expected {
        return Err(origin.truncated(digest.to_string(), expected, got));
    }
    writer.commit().map_err(|e| match e {
        StoreError::Mismatch {
            expected, actual, ..
        } => origin.mismatch(format!("blob {expected} arrived as {actual}")),
        other => other.into(),
    })?;
    Ok(())
}

/// One try at uploading a blob from `store`, in pieces.
async fn upload_blob(
    session: &Session,
    store: &ContentStore,
    reference: &Reference,
    descriptor: &Descriptor,
) -> Result<()> {
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
    let digest = descriptor.digest().to_string();
    session
        .transport
        .oci
        .push_blob_stream(reference, pieces, &digest, Some(descriptor.size()))
        .await
        .map_err(|e| session.origin.oci(e, &format!("uploading blob {digest}")))?;
    Ok(())
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
