//! Image references with Docker Hub normalisation (`busybox` → `docker.io/library/busybox:latest`).

pub use oci_spec::distribution::Reference;

/// A reference could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid image reference {text:?}: {reason}")]
pub struct ReferenceError {
    /// The text given.
    pub text: String,
    /// Why it is invalid.
    pub reason: String,
}

/// Parses `text` as an image reference, defaulting to Docker Hub, `library/` and the `latest` tag.
pub fn parse(text: &str) -> Result<Reference, ReferenceError> {
    let reference: Reference = text
        .parse()
        .map_err(|e: oci_spec::distribution::ParseError| ReferenceError {
            text: text.to_owned(),
            reason: e.to_string(),
        })?;
    if reference.tag().is_none() && reference.digest().is_none() {
        return Ok(Reference::with_tag(
            reference.registry().to_owned(),
            reference.repository().to_owned(),
            "latest".into(),
        ));
    }
    Ok(reference)
}

/// The short form Docker shows (`busybox:latest` for `docker.io/library/busybox:latest`).
pub fn familiar(reference: &Reference) -> String {
    let full = reference.whole();
    let short = full.strip_prefix("docker.io/").unwrap_or(&full);
    short
        .strip_prefix("library/")
        .filter(|s| !s.contains('/') || !s.split(['/', ':', '@']).next().is_some_and(str::is_empty))
        .unwrap_or(short)
        .to_owned()
}

/// The name without tag or digest (`docker.io/library/busybox`).
pub fn repository_name(reference: &Reference) -> String {
    format!("{}/{}", reference.registry(), reference.repository())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn docker_hub_names_are_normalised() {
        let r = parse("busybox").unwrap();
        assert_eq!(r.whole(), "docker.io/library/busybox:latest");
        assert_eq!(familiar(&r), "busybox:latest");
        let r = parse("127.0.0.1:5000/team/app:1.0").unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("127.0.0.1:5000", "team/app", Some("1.0"))
        );
        assert_eq!(familiar(&r), "127.0.0.1:5000/team/app:1.0");
        let pinned = format!("alpine@sha256:{}", "a".repeat(64));
        assert_eq!(
            parse(&pinned).unwrap().digest(),
            Some(format!("sha256:{}", "a".repeat(64)).as_str())
        );
        assert!(parse("Not A Reference").is_err());
    }
}
