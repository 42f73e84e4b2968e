//! `--annotation`: OCI annotations on the image manifest or on the index, in buildx's syntax
//! (`[manifest:|index:]KEY=VALUE`; with no prefix, the manifest).

/// Where an annotation goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The image manifest (`manifest:`, the default).
    Manifest,
    /// The index: an archive's or layout's `index.json` (`index:`).
    Index,
}

/// One `--annotation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    /// Where it goes.
    pub level: Level,
    /// The key, such as `org.opencontainers.image.description`.
    pub key: String,
    /// The value.
    pub value: String,
}

/// A `--annotation` umstage cannot apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--annotation {given:?}: {why}")]
pub struct AnnotationError {
    given: String,
    why: String,
}

impl std::str::FromStr for Annotation {
    type Err = AnnotationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |why: &str| AnnotationError {
            given: text.to_string(),
            why: why.to_string(),
        };
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| err("use [manifest:|index:]KEY=VALUE"))?;
        // The level prefix is before the first colon, and holds no dot (keys such as
        // `org.example:x` keep their colon).
        let (level, key) = match key.split_once(':') {
            Some((prefix, rest)) if !prefix.contains('.') => {
                let level = match prefix {
                    "manifest" => Level::Manifest,
                    "index" => Level::Index,
                    p if p.contains('[') => {
                        return Err(err(
                            "a build makes one platform's image: drop the [platform] and the annotation goes to it",
                        ));
                    }
                    "manifest-descriptor" | "index-descriptor" => {
                        return Err(err(
                            "descriptor annotations are not supported: use manifest: or index:",
                        ));
                    }
                    _ => return Err(err("the level must be manifest: or index:")),
                };
                (level, rest)
            }
            _ => (Level::Manifest, key),
        };
        if key.is_empty() {
            return Err(err("the key is empty"));
        }
        Ok(Annotation {
            level,
            key: key.to_string(),
            value: value.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildx_prefixes_choose_the_level() {
        let a = |t: &str| t.parse::<Annotation>();
        assert_eq!(
            a("org.opencontainers.image.title=t").map(|a| (a.level, a.key, a.value)),
            Ok((
                Level::Manifest,
                "org.opencontainers.image.title".into(),
                "t".into()
            ))
        );
        assert_eq!(
            a("index:k=v=w").map(|a| (a.level, a.value)),
            Ok((Level::Index, "v=w".into()))
        );
        assert_eq!(a("manifest:k=").map(|a| a.level), Ok(Level::Manifest));
        for bad in [
            "k",
            "=v",
            "manifest[linux/amd64]:k=v",
            "index-descriptor:k=v",
            "blob:k=v",
        ] {
            assert!(a(bad).is_err(), "{bad}");
        }
    }
}
