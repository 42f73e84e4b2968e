//! Platforms as `os/arch[/variant]`, the host's and parsed ones.

/// A platform such as `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// Architecture, e.g. `amd64`.
    pub arch: String,
    /// Variant, e.g. `v8`; empty if none.
    pub variant: String,
}

impl Platform {
    /// The platform this program runs on, in OCI terms.
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", ""),
            "aarch64" => ("arm64", ""),
            "arm" => ("arm", "v7"),
            "x86" => ("386", ""),
            "powerpc64" => ("ppc64le", ""),
            "s390x" => ("s390x", ""),
            "riscv64" => ("riscv64", ""),
            other => (other, ""),
        };
        Platform {
            os: std::env::consts::OS.to_owned(),
            arch: arch.to_owned(),
            variant: variant.to_owned(),
        }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Option<Platform> {
        let mut parts = s.split('/');
        let os = parts.next().filter(|p| !p.is_empty())?;
        let arch = parts.next().filter(|p| !p.is_empty())?;
        let variant = parts.next().unwrap_or("");
        if parts.next().is_some() {
            return None;
        }
        Some(Platform {
            os: os.to_ascii_lowercase(),
            arch: arch.to_ascii_lowercase(),
            variant: variant.to_ascii_lowercase(),
        })
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}
