//! The registry client a build pulls base images and pushes outputs with.

use crate::request::BuildRequest;

/// A registry client with the request's insecure registries and the user's credentials.
pub(crate) fn registry_client(request: &BuildRequest) -> umstage_oci::registry::RegistryClient {
    umstage_oci::registry::RegistryClient::new(umstage_oci::registry::RegistryOptions {
        insecure_registries: request.insecure_registries.clone(),
        auth: umstage_oci::auth::AuthStore::from_environment(),
        credential_helper: Some(umstage_oci::registry::HelperRunner(std::sync::Arc::new(
            crate::credentials::ask_helper,
        ))),
    })
}
