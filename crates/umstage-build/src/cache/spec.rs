//! `--cache-from` and `--cache-to` as `docker buildx build` takes them: `type=…` and
//! comma-separated `key=value` options, or (for `--cache-from`) a bare image reference.

use std::path::PathBuf;

use umstage_oci::compress::Compression;

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

/// How a cache export writes its blobs and manifest, as buildx's options say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportFormat {
    /// `compression=` (and `compression-level=`): the compression of the layers this build
    /// made, converted in the cache when they were made otherwise; `None` keeps every blob
    /// as it is.
    pub compression: Option<Compression>,
    /// `force-compression=true`: every blob of the cache is converted, base image layers and
    /// hits too.
    pub force_compression: bool,
    /// `oci-mediatypes=` (default true): OCI media types, else Docker's.
    pub oci_media_types: bool,
    /// `image-manifest=` (default true, false with Docker media types): an image manifest,
    /// else an index listing the blobs and the config (BuildKit's older form).
    pub image_manifest: bool,
}

impl Default for ExportFormat {
    fn default() -> Self {
        ExportFormat {
            compression: None,
            force_compression: false,
            oci_media_types: true,
            image_manifest: true,
        }
    }
}

/// Where to write the build's cache (`--cache-to`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheExport {
    /// `type=local,dest=DIR[,mode=min|max][,…]`.
    Local {
        /// The directory.
        dest: PathBuf,
        /// Which steps.
        mode: CacheMode,
        /// How.
        format: ExportFormat,
    },
    /// `type=registry,ref=REF[,mode=min|max][,…]`.
    Registry {
        /// The reference.
        reference: String,
        /// Which steps.
        mode: CacheMode,
        /// How.
        format: ExportFormat,
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
    /// A `ref=` that is no image name (why, as the reference parser words it).
    #[error("ref=: {0}")]
    Reference(String),
    /// A `type=` umstage cannot read (empty when none was given).
    #[error("type={0}: umstage reads caches of type local and registry")]
    ImportType(String),
    /// A `type=` umstage cannot write (empty when none was given).
    #[error("type={0}: umstage writes caches of type local, registry and inline")]
    ExportType(String),
    /// A `compression=` umstage cannot write.
    #[error("compression={0}: umstage writes gzip, zstd and uncompressed layers")]
    Compression(String),
    /// A `compression-level=` out of the compression's range, or for none.
    #[error("compression-level={level}: {reason}")]
    CompressionLevel {
        /// What was given.
        level: String,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// A boolean option that is neither true nor false.
    #[error("{key}={value}: use true or false")]
    Bool {
        /// The option.
        key: &'static str,
        /// What was given.
        value: String,
    },
    /// `image-manifest=true` with `oci-mediatypes=false`: an image manifest of Docker's
    /// media types cannot name an artifact, as BuildKit refuses too.
    #[error("image-manifest=true needs oci-mediatypes=true")]
    ImageManifestNeedsOci,
    /// `compression=zstd` with `oci-mediatypes=false`: Docker's media types have no zstd
    /// layer (umstage writes none in a Docker image either).
    #[error("compression=zstd needs oci-mediatypes=true")]
    ZstdNeedsOci,
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

    /// A boolean option as BuildKit reads it (Go's `strconv.ParseBool`).
    fn bool(&self, key: &'static str, default: bool) -> Result<bool, SpecProblem> {
        match self.get(key) {
            None => Ok(default),
            Some("1" | "t" | "T" | "TRUE" | "true" | "True") => Ok(true),
            Some("0" | "f" | "F" | "FALSE" | "false" | "False") => Ok(false),
            Some(v) => Err(SpecProblem::Bool {
                key,
                value: v.to_string(),
            }),
        }
    }

    /// `compression=`, `compression-level=`, `force-compression=`, `oci-mediatypes=` and
    /// `image-manifest=`, with BuildKit's defaults.
    fn format(&self) -> Result<ExportFormat, SpecProblem> {
        let force_compression = self.bool("force-compression", false)?;
        let level = self.get("compression-level");
        let kind = match self.get("compression") {
            Some(kind) => Some(kind),
            // BuildKit's default compression, once an option asks for one.
            None if force_compression || level.is_some() => Some("gzip"),
            None => None,
        };
        let compression = kind.map(|k| compression(k, level)).transpose()?;
        let oci_media_types = self.bool("oci-mediatypes", true)?;
        let image_manifest = self.bool("image-manifest", oci_media_types)?;
        if image_manifest && !oci_media_types {
            return Err(SpecProblem::ImageManifestNeedsOci);
        }
        if matches!(compression, Some(Compression::Zstd { .. })) && !oci_media_types {
            return Err(SpecProblem::ZstdNeedsOci);
        }
        Ok(ExportFormat {
            compression,
            force_compression,
            oci_media_types,
            image_manifest,
        })
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

/// The compression `kind` names, at `level` (or umstage's default level for it).
fn compression(kind: &str, level: Option<&str>) -> Result<Compression, SpecProblem> {
    let bad = |reason| SpecProblem::CompressionLevel {
        level: level.unwrap_or_default().to_string(),
        reason,
    };
    let parsed = level
        .map(|l| l.parse::<i32>().map_err(|_| bad("not a number")))
        .transpose()?;
    match (kind, parsed) {
        ("gzip", None) => Ok(Compression::GZIP),
        ("gzip", Some(l)) => u32::try_from(l)
            .ok()
            .filter(|l| *l <= 9)
            .map(|level| Compression::Gzip { level })
            .ok_or_else(|| bad("gzip takes 0 to 9")),
        ("zstd", None) => Ok(Compression::ZSTD),
        ("zstd", Some(level @ 1..=22)) => Ok(Compression::Zstd { level }),
        ("zstd", Some(_)) => Err(bad("zstd takes 1 to 22")),
        ("uncompressed", None) => Ok(Compression::None),
        ("uncompressed", Some(_)) => Err(bad("an uncompressed layer has no level")),
        (other, _) => Err(SpecProblem::Compression(other.to_string())),
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
    let format = || {
        f.format().map_err(|reason| SpecError {
            flag: FLAG,
            value: value.into(),
            reason,
        })
    };
    match f.kind.as_deref() {
        Some("local") => Ok(CacheExport::Local {
            dest: PathBuf::from(required(&f, "dest", FLAG, value)?),
            mode: f.mode(FLAG, value)?,
            format: format()?,
        }),
        Some("registry") => {
            let reference = required(&f, "ref", FLAG, value)?;
            // Refused before the build, not after it when the cache is pushed.
            umstage_oci::reference::parse(reference).map_err(|e| SpecError {
                flag: FLAG,
                value: value.into(),
                reason: SpecProblem::Reference(e.to_string()),
            })?;
            Ok(CacheExport::Registry {
                reference: reference.to_string(),
                mode: f.mode(FLAG, value)?,
                format: format()?,
            })
        }
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
                mode: CacheMode::Max,
                format: ExportFormat::default(),
            })
        );
        assert_eq!(
            parse_export("type=registry,ref=r/c,image-manifest=true"),
            Ok(CacheExport::Registry {
                reference: "r/c".into(),
                mode: CacheMode::Min,
                format: ExportFormat::default(),
            })
        );
        assert_eq!(parse_export("type=inline"), Ok(CacheExport::Inline));
        let reason = |r: Result<CacheExport, SpecError>| r.map_err(|e| e.reason).err();
        assert_eq!(
            reason(parse_export("type=local")),
            Some(SpecProblem::Required("dest"))
        );
        assert!(matches!(
            reason(parse_export("type=registry,ref=UPPER/x")),
            Some(SpecProblem::Reference(_))
        ));
        assert_eq!(
            reason(parse_export("type=gha,scope=x")),
            Some(SpecProblem::ExportType("gha".into()))
        );
        assert_eq!(
            reason(parse_export("type=local,dest=/c,mode=all")),
            Some(SpecProblem::Mode("all".into()))
        );
        let format = |v: &str| match parse_export(v) {
            Ok(CacheExport::Registry { format, .. }) => Ok(format),
            Ok(other) => panic!("not a registry export: {other:?}"),
            Err(e) => Err(e.reason),
        };
        assert_eq!(
            format("type=registry,ref=r,compression=zstd,compression-level=19"),
            Ok(ExportFormat {
                compression: Some(Compression::Zstd { level: 19 }),
                ..ExportFormat::default()
            })
        );
        assert_eq!(
            format("type=registry,ref=r,force-compression=true,oci-mediatypes=false"),
            Ok(ExportFormat {
                compression: Some(Compression::GZIP),
                force_compression: true,
                oci_media_types: false,
                image_manifest: false,
            })
        );
        assert_eq!(
            format("type=registry,ref=r,compression=estargz"),
            Err(SpecProblem::Compression("estargz".into()))
        );
        assert_eq!(
            format("type=registry,ref=r,compression=gzip,compression-level=12")
                .map_err(|e| e.to_string()),
            Err("compression-level=12: gzip takes 0 to 9".into())
        );
        assert_eq!(
            format("type=registry,ref=r,oci-mediatypes=false,image-manifest=true"),
            Err(SpecProblem::ImageManifestNeedsOci)
        );
        assert_eq!(
            format("type=registry,ref=r,compression=zstd,oci-mediatypes=false"),
            Err(SpecProblem::ZstdNeedsOci)
        );
        assert_eq!(
            format("type=registry,ref=r,image-manifest=yes"),
            Err(SpecProblem::Bool {
                key: "image-manifest",
                value: "yes".into()
            })
        );
        let err = parse_import("type=local,src").expect_err("a part without =");
        assert_eq!(err.reason, SpecProblem::NotKeyValue("src".into()));
        assert_eq!(
            err.to_string(),
            r#"--cache-from "type=local,src": "src" is not key=value"#
        );
    }
}
