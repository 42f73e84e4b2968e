//! Manifests that are not images (a build cache) and single blobs: fetched and pushed as they
//! are, for callers that read the manifest themselves.

use futures_util::{StreamExt, TryStreamExt, stream};
use oci_client::RegistryOperation;
use oci_spec::image::Descriptor;

use super::{PARALLEL_TRANSFERS, RegistryClient, Result};
use crate::digest::Digest;
use crate::reference::Reference;
use crate::store::ContentStore;

impl RegistryClient {
    /// Fetches the manifest `reference` names into `store`, whatever it describes, and
    /// returns its digest (checked against the reference's digest when it has one).
    pub async fn pull_manifest(
        &self,
        store: &ContentStore,
        reference: &Reference,
    ) -> Result<Digest> {
        let session = self.session(reference, RegistryOperation::Pull).await?;
        self.fetch_manifest(&session, store, reference, reference.digest())
            .await
    }

    /// Fetches `blobs` of `reference`'s repository into `store` (those present and intact are
    /// not fetched again); each is checked against its digest and size.
    pub async fn pull_blobs(
        &self,
        store: &ContentStore,
        reference: &Reference,
        blobs: &[Descriptor],
    ) -> Result<()> {
        let session = self.session(reference, RegistryOperation::Pull).await?;
        let session = &session;
        stream::iter(
            blobs
                .iter()
                .map(|d| async move { self.fetch_blob(session, store, reference, d).await }),
        )
        .buffer_unordered(PARALLEL_TRANSFERS)
        .try_collect::<Vec<()>>()
        .await?;
        Ok(())
    }

    /// Pushes the manifest `manifest` (in `store`, of `media_type`) and `blobs` (from `store`)
    /// to `reference`: blobs the registry has are skipped, those in `mount_from` (same
    /// registry) mounted, others uploaded; then the manifest is tagged.
    pub async fn push_manifest(
        &self,
        store: &ContentStore,
        manifest: &Descriptor,
        blobs: &[Descriptor],
        reference: &Reference,
        mount_from: Option<&Reference>,
    ) -> Result<()> {
        let session = self.session(reference, RegistryOperation::Push).await?;
        let session = &session;
        stream::iter(blobs.iter().map(|d| async move {
            self.send_blob(session, store, reference, mount_from, d)
                .await
        }))
        .buffer_unordered(PARALLEL_TRANSFERS)
        .try_collect::<Vec<()>>()
        .await?;
        let bytes = store.read(manifest.digest(), crate::image::MAX_JSON_SIZE)?;
        session
            .put_manifest(
                &self.limits,
                reference,
                bytes,
                manifest.media_type().as_ref(),
            )
            .await
    }
}
