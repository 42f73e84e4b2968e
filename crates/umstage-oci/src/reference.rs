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
///
/// The grammar is Docker's (`[host[:port]/]path[:tag][@digest]`, the host possibly a bracketed
/// IPv6 address), checked by hand: the regular expression `oci-spec` parses with costs tens of
/// milliseconds to compile, a large share of a warm build.
pub fn parse(text: &str) -> Result<Reference, ReferenceError> {
    let invalid = |reason: &str| ReferenceError {
        text: text.to_owned(),
        reason: reason.to_owned(),
    };
    if text.is_empty() {
        return Err(invalid("repository name must have at least one component"));
    }
    let (rest, digest) = match text.split_once('@') {
        Some((rest, digest)) => {
            check_digest(digest).map_err(invalid)?;
            (rest, Some(digest))
        }
        None => (text, None),
    };
    // A tag follows the last ':' that comes after the last '/' (a ':' before it is a port).
    let name_end = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[name_end..].rfind(':') {
        Some(i) => (&rest[..name_end + i], Some(&rest[name_end + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag
        && !is_tag(tag)
    {
        return Err(invalid("invalid tag format"));
    }
    let (registry, path) = match name.split_once('/') {
        Some((first, path)) if first.contains(['.', ':', '[']) || first == "localhost" => {
            if !is_host(first) {
                return Err(invalid("invalid reference format"));
            }
            (first, path)
        }
        _ => ("docker.io", name),
    };
    if path.len() > NAME_MAX {
        return Err(invalid(
            "repository name must not be more than 255 characters",
        ));
    }
    if path
        .split('/')
        .any(|component| !is_path_component(component))
    {
        return Err(invalid(if path.chars().any(|c| c.is_ascii_uppercase()) {
            "repository name must be lowercase"
        } else {
            "invalid reference format"
        }));
    }
    let registry = if registry == "index.docker.io" {
        "docker.io"
    } else {
        registry
    };
    let repository = if registry == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_owned()
    };
    let registry = registry.to_owned();
    Ok(match (tag, digest) {
        (Some(tag), Some(digest)) => {
            Reference::with_tag_and_digest(registry, repository, tag.into(), digest.into())
        }
        (None, Some(digest)) => Reference::with_digest(registry, repository, digest.into()),
        (tag, None) => Reference::with_tag(registry, repository, tag.unwrap_or("latest").into()),
    })
}

/// The longest repository path Docker accepts.
const NAME_MAX: usize = 255;

/// `host[:port]`: dot-separated labels of letters, digits and inner dashes, or `[IPv6]`.
fn is_host(text: &str) -> bool {
    let (host, port) = if let Some(after) = text.strip_prefix('[') {
        let Some((address, rest)) = after.split_once(']') else {
            return false;
        };
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match rest {
            "" => return true,
            _ => match rest.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let labels_ok = text.starts_with('[')
        || host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    labels_ok && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `[a-z0-9]+` runs joined by one separator: `.`, `_`, `__` or any number of `-`.
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.first().is_some_and(|b| alnum(*b)) || !bytes.last().is_some_and(|b| alnum(*b)) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn is_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    tag.len() <= 128
        && tag.as_bytes().first().is_some_and(|b| word(*b))
        && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-')
}

/// `algorithm:hex` with a known algorithm and a hex part of its length.
fn check_digest(digest: &str) -> Result<(), &'static str> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err("invalid checksum digest format");
    };
    let length = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ if !algorithm.is_empty()
            && algorithm
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+.-_".contains(&b)) =>
        {
            return Err("unsupported digest algorithm");
        }
        _ => return Err("invalid checksum digest format"),
    };
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("invalid checksum digest format");
    }
    if hex.len() != length {
        return Err("invalid checksum digest length");
    }
    Ok(())
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

    #[test]
    fn hosts_ports_tags_and_digests_split_as_docker_splits_them() {
        let digest = format!("sha256:{}", "b".repeat(64));
        // text, registry, repository, tag, digest
        type Case = (
            &'static str,
            &'static str,
            &'static str,
            Option<&'static str>,
            Option<&'static str>,
        );
        let cases: &[Case] = &[
            (
                "test.com:tag",
                "docker.io",
                "library/test.com",
                Some("tag"),
                None,
            ),
            (
                "test.com:5000/repo",
                "test.com:5000",
                "repo",
                Some("latest"),
                None,
            ),
            (
                "localhost/a/b_c__d-e--f.g:v1.0-rc_1",
                "localhost",
                "a/b_c__d-e--f.g",
                Some("v1.0-rc_1"),
                None,
            ),
            ("team/app", "docker.io", "team/app", Some("latest"), None),
            (
                "index.docker.io/library/busybox",
                "docker.io",
                "library/busybox",
                Some("latest"),
                None,
            ),
            ("[::1]:5000/app:2", "[::1]:5000", "app", Some("2"), None),
            (
                "Registry.Example-1.com/app",
                "Registry.Example-1.com",
                "app",
                Some("latest"),
                None,
            ),
        ];
        for (text, registry, repository, tag, digest) in cases {
            let r = parse(text).unwrap();
            assert_eq!(
                (r.registry(), r.repository(), r.tag(), r.digest()),
                (*registry, *repository, *tag, *digest),
                "{text}"
            );
        }
        let both = parse(&format!("busybox:1.36@{digest}")).unwrap();
        assert_eq!(
            both.whole(),
            format!("docker.io/library/busybox:1.36@{digest}")
        );

        let refused = [
            ("", "at least one component"),
            ("Busybox", "lowercase"),
            ("app:", "tag"),
            ("app:-x", "tag"),
            ("a//b", "format"),
            ("a..b", "format"),
            ("-a", "format"),
            ("bad_host_.com/app", "format"),
            ("host.com:port/app", "format"),
            ("app@sha256:abc", "length"),
            ("app@md5:abcd", "unsupported"),
            ("app@sha256", "digest format"),
        ];
        for (text, reason) in refused {
            let err = parse(text).unwrap_err();
            assert!(err.reason.contains(reason), "{text}: {err}");
        }
        assert!(parse(&format!("app:{}", "t".repeat(129))).is_err());
        assert!(parse(&"a".repeat(256)).is_err());
    }
}
