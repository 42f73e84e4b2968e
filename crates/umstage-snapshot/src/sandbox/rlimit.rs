//! Resource limits of a step (`--ulimit`, as `docker build --ulimit` gives them): parsed from
//! Docker's `NAME=SOFT[:HARD]`, carried in the spec as OCI `rlimits`, and set by the helper
//! just before it execs the step's command.

use oci_spec::runtime::{PosixRlimit, PosixRlimitBuilder, PosixRlimitType};

use super::failure::HelperError;

/// Docker's names for the limits, with the OCI type of each.
const NAMES: [(&str, PosixRlimitType); 16] = [
    ("as", PosixRlimitType::RlimitAs),
    ("core", PosixRlimitType::RlimitCore),
    ("cpu", PosixRlimitType::RlimitCpu),
    ("data", PosixRlimitType::RlimitData),
    ("fsize", PosixRlimitType::RlimitFsize),
    ("locks", PosixRlimitType::RlimitLocks),
    ("memlock", PosixRlimitType::RlimitMemlock),
    ("msgqueue", PosixRlimitType::RlimitMsgqueue),
    ("nice", PosixRlimitType::RlimitNice),
    ("nofile", PosixRlimitType::RlimitNofile),
    ("nproc", PosixRlimitType::RlimitNproc),
    ("rss", PosixRlimitType::RlimitRss),
    ("rtprio", PosixRlimitType::RlimitRtprio),
    ("rttime", PosixRlimitType::RlimitRttime),
    ("sigpending", PosixRlimitType::RlimitSigpending),
    ("stack", PosixRlimitType::RlimitStack),
];

/// One limit: `soft` and `hard`, `u64::MAX` for unlimited (`-1` as Docker writes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ulimit {
    /// Which limit.
    pub kind: PosixRlimitType,
    /// The soft limit.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

/// A `--ulimit` that is not `NAME=SOFT[:HARD]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--ulimit {given:?}: {why}")]
pub struct UlimitError {
    given: String,
    why: String,
}

impl std::str::FromStr for Ulimit {
    type Err = UlimitError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |why: String| UlimitError {
            given: text.to_string(),
            why,
        };
        let (name, values) = text
            .split_once('=')
            .ok_or_else(|| err("use NAME=SOFT[:HARD], such as nofile=1024:2048".into()))?;
        let kind = NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, k)| *k)
            .ok_or_else(|| {
                let names: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
                err(format!(
                    "no limit is named {name:?}: use one of {}",
                    names.join(", ")
                ))
            })?;
        let number = |v: &str| match v {
            "-1" => Ok(u64::MAX),
            _ => v
                .parse::<u64>()
                .map_err(|_| err(format!("{v:?} is not a number (or -1 for unlimited)"))),
        };
        let (soft, hard) = match values.split_once(':') {
            Some((s, h)) => (number(s)?, number(h)?),
            None => (number(values)?, number(values)?),
        };
        if soft > hard {
            return Err(err("the soft limit is above the hard one".into()));
        }
        Ok(Ulimit { kind, soft, hard })
    }
}

impl Ulimit {
    /// The OCI spec's form.
    pub(crate) fn to_spec(self) -> Result<PosixRlimit, oci_spec::OciSpecError> {
        PosixRlimitBuilder::default()
            .typ(self.kind)
            .soft(self.soft)
            .hard(self.hard)
            .build()
    }
}

/// Sets the spec's limits on this process (the helper, about to exec the step); a hard limit
/// above what this process has needs privilege over the host, so it fails as the kernel says.
pub(crate) fn apply(limits: &[PosixRlimit]) -> Result<(), HelperError> {
    use nix::sys::resource::{Resource, setrlimit};
    for limit in limits {
        let resource = match limit.typ() {
            PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
            PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
            PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
            PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
            PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
            PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
            PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
            PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
            PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
            PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
            PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
            PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
            PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
            PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
            PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
            PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        };
        let name = NAMES
            .iter()
            .find(|(_, k)| *k == limit.typ())
            .map_or("?", |(n, _)| *n);
        setrlimit(resource, limit.soft(), limit.hard()).map_err(|source| HelperError::Ulimit {
            limit: format!("{name}={}:{}", shown(limit.soft()), shown(limit.hard())),
            source,
        })?;
    }
    Ok(())
}

fn shown(value: u64) -> String {
    if value == u64::MAX {
        "-1".into()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockers_forms_parse() {
        assert_eq!(
            "nofile=1024:2048".parse(),
            Ok(Ulimit {
                kind: PosixRlimitType::RlimitNofile,
                soft: 1024,
                hard: 2048
            })
        );
        assert_eq!(
            "core=-1".parse(),
            Ok(Ulimit {
                kind: PosixRlimitType::RlimitCore,
                soft: u64::MAX,
                hard: u64::MAX
            })
        );
        for bad in ["nofile", "files=1", "nofile=x", "nofile=10:5"] {
            let e = bad.parse::<Ulimit>().err().map(|e| e.to_string());
            assert!(
                e.is_some_and(|e| e.starts_with(&format!("--ulimit {bad:?}: "))),
                "{bad}"
            );
        }
    }
}
