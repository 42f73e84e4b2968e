//! `--cache-from` and `--cache-to` as `docker buildx build` takes them: `type=…` and
//! comma-separated `key=value` options, or (for `--cache-from`) a bare image reference.

use std::path::PathBuf;

/// Which steps a cache export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// The steps of the exported image's own stage and the stages it is `FROM`.
    #[default]
    Min,
    /// Every step of every stage built.
    Max,
}

/// A cache to read step results from (`--cache-from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheImport {
    /// `type=local,src=DIR[,digest=sha256:…]`: an OCI layout directory.
    Local {
        /// The directory.
        src: PathBuf,
        /// The cache manifest to use, when the directory holds several.
        digest: Option<String>,
    },
    /// `type=registry,ref=REF`, or a bare `REF`: a cache manifest in a registry, or an image
    /// pushed with an inline cache.
    Registry {
        /// The reference.
        reference: String,
    },
}

/// Where to write the build's cache (`--cache-to`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheExport {
    /// `type=local,dest=DIR[,mode=min|max]`.
    Local {
        /// The directory.
        dest: PathBuf,
        /// Which steps.
        mode: CacheMode,
    },
    /// `type=registry,ref=REF[,mode=min|max]`.
    Registry {
        /// The reference.
        reference: String,
        /// Which steps.
        mode: CacheMode,
    },
    /// `type=inline`: the cache travels in the exported image's config.
    Inline,
}

/// A cache option could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag} {value:?}: {reason}")]
pub struct SpecError {
    /// `--cache-from` or `--cache-to`.
    pub flag: &'static str,
    /// What was given.
    pub value: String,
    /// What is wrong.
    pub reason: SpecProblem,
}

/// What is wrong with a cache option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecProblem {
    /// A comma-separated part without `=`.
    #[error("{0:?} is not key=value")]
    NotKeyValue(String),
    /// A `mode=` other than `min` or `max`.
    #[error("mode={0}: use min or max")]
    Mode(String),
    /// A key the type needs is missing or empty.
    #[error("{0}= is required")]
    Required(&'static str),
    /// A `type=` umstage cannot read (empty when none was given).
    #[error("type={0}: umstage reads caches of type local and registry")]
    ImportType(String),
    /// A `type=` umstage cannot write (empty when none was given).
    #[error("type={0}: umstage writes caches of type local, registry and inline")]
    ExportType(String),
}

/// The options of one value, `type` apart.
struct Fields {
    kind: Option<String>,
    pairs: Vec<(String, String)>,
}

fn fields(flag: &'static str, value: &str) -> Result<Fields, SpecError> {
    let mut kind = None;
    let mut pairs = Vec::new();
    for part in value.split(',') {
        let Some((k, v)) = part.split_once('=') else {
            return Err(SpecError {
                flag,
                value: value.into(),
                reason: SpecProblem::NotKeyValue(part.to_string()),
            });
        };
        if k == "type" {
            kind = Some(v.to_string());
        } else {
            pairs.push((k.to_string(), v.to_string()));
        }
    }
    Ok(Fields { kind, pairs })
}

impl Fields {
    fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn mode(&self, flag: &'static str, value: &str) -> Result<CacheMode, SpecError> {
        match self.get("mode") {
            None | Some("min") => Ok(CacheMode::Min),
            Some("max") => Ok(CacheMode::Max),
            Some(other) => Err(SpecError {
                flag,
                value: value.into(),
                reason: SpecProblem::Mode(other.to_string()),
            }),
        }
    }
}

fn required<'a>(
    f: &'a Fields,
    key: &'static str,
    flag: &'static str,
    value: &str,
) -> Result<&'a str, SpecError> {
    f.get(key)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| SpecError {
            flag,
            value: value.into(),
            reason: SpecProblem::Required(key),
        })
}

/// Parses one `--cache-from` value.
pub fn parse_import(value: &str) -> Result<CacheImport, SpecError> {
    const FLAG: &str = "--cache-from";
    if !value.contains('=') {
        return Ok(CacheImport::Registry {
            reference: value.to_string(),
        });
    }
    let f = fields(FLAG, value)?;
    match f.kind.as_deref() {
        Some("local") => Ok(CacheImport::Local {
            src: PathBuf::from(required(&f, "src", FLAG, value)?),
            digest: f.get("digest").map(str::to_owned),
        }),
        Some("registry") => Ok(CacheImport::Registry {
            reference: required(&f, "ref", FLAG, value)?.to_string(),
        }),
        other => Err(SpecError {
            flag: FLAG,
            value: value.into(),
            reason: SpecProblem::ImportType(other.unwrap_or("").to_string()),
        }),
    }
}

/// Parses one `--cache-to` value.
pub fn parse_export(value: &str) -> Result<CacheExport, SpecError> {
    const FLAG: &str = "--cache-to";
    let f = fields(FLAG, value)?;
    match f.kind.as_deref() {
        Some("local") => Ok(CacheExport::Local {
            dest: PathBuf::from(required(&f, "dest", FLAG, value)?),
            mode: f.mode(FLAG, value)?,
        }),
        Some("registry") => Ok(CacheExport::Registry {
            reference: required(&f, "ref", FLAG, value)?.to_string(),
            mode: f.mode(FLAG, value)?,
        }),
        Some("inline") => Ok(CacheExport::Inline),
        other => Err(SpecError {
            flag: FLAG,
            value: value.into(),
            reason: SpecProblem::ExportType(other.unwrap_or("").to_string()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_as_buildx_takes_them() {
        assert_eq!(
            parse_import("registry.example/app:build"),
            Ok(CacheImport::Registry {
                reference: "registry.example/app:build".into()
            })
        );
        assert_eq!(
            parse_import("type=local,src=/c,digest=sha256:ab"),
            Ok(CacheImport::Local {
                src: "/c".into(),
                digest: Some("sha256:ab".into())
            })
        );
        assert_eq!(
            parse_export("type=local,dest=/c,mode=max"),
            Ok(CacheExport::Local {
                dest: "/c".into(),
                mode: CacheMode::Max
            })
        );
        assert_eq!(
            parse_export("type=registry,ref=r/c,image-manifest=true"),
            Ok(CacheExport::Registry {
                reference: "r/c".into(),
                mode: CacheMode::Min
            })
        );
        assert_eq!(parse_export("type=inline"), Ok(CacheExport::Inline));
        let reason = |r: Result<CacheExport, SpecError>| r.map_err(|e| e.reason).err();
        assert_eq!(
            reason(parse_export("type=local")),
            Some(SpecProblem::Required("dest"))
        );
        assert_eq!(
            reason(parse_export("type=gha,scope=x")),
            Some(SpecProblem::ExportType("gha".into()))
        );
        assert_eq!(
            reason(parse_export("type=local,dest=/c,mode=all")),
            Some(SpecProblem::Mode("all".into()))
        );
        let err = parse_import("type=local,src").expect_err("a part without =");
        assert_eq!(err.reason, SpecProblem::NotKeyValue("src".into()));
        assert_eq!(
            err.to_string(),
            r#"--cache-from "type=local,src": "src" is not key=value"#
        );
    }
}
