//! Manifests fetched with a size cap: `oci-client` reads a manifest body whole before anything
//! can look at its size, so a registry could make us hold a gigabyte. Here the body is read
//! chunk by chunk and refused as soon as it passes the limit (or when its length says so).

use oci_spec::distribution::Reference;
use reqwest::header::{ACCEPT, AUTHORIZATION};

use super::error::{Origin, RegistryError};
use crate::image::media;

/// The longest error body read, to quote the registry's message.
const ERROR_BODY_LIMIT: u64 = 64 << 10;

/// A body that was not read.
enum Unread {
    TooLarge,
    Broken(reqwest::Error),
}

/// The body of `response`, or `TooLarge` once it passes `limit` bytes.
async fn read_capped(mut response: reqwest::Response, limit: u64) -> Result<Vec<u8>, Unread> {
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(Unread::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Unread::Broken)? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(Unread::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn manifest_url(scheme: &str, target: &Reference) -> String {
    let name = target.digest().or_else(|| target.tag()).unwrap_or("latest");
    let namespace = target
        .namespace()
        .map(|ns| format!("?ns={ns}"))
        .unwrap_or_default();
    format!(
        "{scheme}://{}/v2/{}/manifests/{name}{namespace}",
        target.resolve_registry(),
        target.repository()
    )
}

/// GETs the manifest or index `target` names, at most `limit` bytes of it, sending
/// `authorization` (the header value the token handshake gave) if any.
pub(super) async fn manifest(
    http: &reqwest::Client,
    origin: &Origin,
    target: &Reference,
    authorization: Option<&str>,
    limit: u64,
) -> Result<Vec<u8>, RegistryError> {
    let what = "fetching the manifest";
    let mut request = http
        .get(manifest_url(origin.scheme, target))
        .header(ACCEPT, media::MANIFEST_TYPES.join(", "));
    if let Some(value) = authorization {
        request = request.header(AUTHORIZATION, value);
    }
    let response = request
        .send()
        .await
        .map_err(|e| origin.transport(&e, what))?;
    let status = response.status();
    if !status.is_success() {
        // The status says what went wrong; an error body too large or broken only loses the
        // registry's wording.
        let body = read_capped(response, ERROR_BODY_LIMIT)
            .await
            .unwrap_or_default();
        return Err(origin.status(status.as_u16(), &body));
    }
    read_capped(response, limit).await.map_err(|e| match e {
        Unread::TooLarge => origin.too_large("the manifest", limit),
        Unread::Broken(e) => origin.transport(&e, what),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_urls_name_the_tag_or_digest() {
        let tagged =
            crate::reference::parse("127.0.0.1:5000/team/app:1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            manifest_url("http", &tagged),
            "http://127.0.0.1:5000/v2/team/app/manifests/1"
        );
        let hub = crate::reference::parse("busybox").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            manifest_url("https", &hub),
            "https://index.docker.io/v2/library/busybox/manifests/latest"
        );
    }
}
