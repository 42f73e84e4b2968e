//! Command-line values that shape every `RUN` step's sandbox, in Docker's syntax: `--add-host`
//! and `--shm-size` (`--ulimit` is the sandbox's own [`umstage_snapshot::sandbox::Ulimit`]).

use std::net::IpAddr;

/// `--add-host HOST:IP` (or `HOST=IP`, as buildx also takes): a line of RUN's `/etc/hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddHost {
    /// The name.
    pub name: String,
    /// Its address.
    pub address: IpAddr,
}

/// A `--add-host` or `--shm-size` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag} {given:?}: {why}")]
pub struct StepOptionError {
    flag: &'static str,
    given: String,
    why: String,
}

fn error(flag: &'static str, given: &str, why: impl Into<String>) -> StepOptionError {
    StepOptionError {
        flag,
        given: given.to_string(),
        why: why.into(),
    }
}

impl std::str::FromStr for AddHost {
    type Err = StepOptionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // The name ends at the first `=` or `:`; an IPv6 address has colons of its own.
        let split = text
            .find('=')
            .or_else(|| text.find(':'))
            .ok_or_else(|| error("--add-host", text, "use HOST:IP, such as db:10.0.0.5"))?;
        let (name, address) = (&text[..split], &text[split + 1..]);
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(error(
                "--add-host",
                text,
                "the host name is empty or has spaces",
            ));
        }
        if address == "host-gateway" {
            return Err(error(
                "--add-host",
                text,
                "host-gateway names the Docker daemon's gateway, and umstage has no daemon: give the address (RUN shares the host's network, so 127.0.0.1 reaches the host)",
            ));
        }
        let address = address
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| {
                error(
                    "--add-host",
                    text,
                    format!("{address:?} is not an IP address"),
                )
            })?;
        Ok(AddHost {
            name: name.to_string(),
            address,
        })
    }
}

/// `--shm-size` as Docker reads it: bytes, or a number with `k`, `m`, `g` or `t` (powers of
/// 1024, an optional `b` after; `64m` is 64 MiB).
pub fn parse_shm_size(text: &str) -> Result<u64, StepOptionError> {
    let lower = text.trim().to_ascii_lowercase();
    let digits = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits);
    let shift = match unit.trim_end_matches('b').trim_end_matches('i') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => {
            return Err(error(
                "--shm-size",
                text,
                "use bytes or a number with k, m, g or t, such as 256m",
            ));
        }
    };
    let value: f64 = number.parse().map_err(|_| {
        error(
            "--shm-size",
            text,
            "use bytes or a number with k, m, g or t, such as 256m",
        )
    })?;
    let bytes = value * f64::from(1u32 << 10).powi(shift / 10);
    if bytes < 1.0 {
        return Err(error(
            "--shm-size",
            text,
            "the size must be at least 1 byte",
        ));
    }
    if bytes > u64::MAX as f64 {
        return Err(error(
            "--shm-size",
            text,
            "the size is past the 16 EiB a size can be",
        ));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_host_takes_dockers_and_buildxs_forms() {
        let h: Result<AddHost, _> = "db:10.0.0.5".parse();
        assert_eq!(
            h,
            Ok(AddHost {
                name: "db".into(),
                address: IpAddr::from([10, 0, 0, 5])
            })
        );
        let v6: Result<AddHost, _> = "v6:::1".parse();
        assert_eq!(v6.map(|h| h.address.to_string()), Ok("::1".to_string()));
        let eq: Result<AddHost, _> = "x=[fe80::1]".parse();
        assert_eq!(eq.map(|h| h.name), Ok("x".to_string()));
        for bad in ["db", ":1.2.3.4", "db:nowhere", "db:host-gateway"] {
            let e = bad.parse::<AddHost>().err().map(|e| e.to_string());
            assert!(e.is_some_and(|e| e.starts_with("--add-host")), "{bad}");
        }
    }

    #[test]
    fn shm_sizes_are_powers_of_1024() {
        assert_eq!(parse_shm_size("64m"), Ok(64 << 20));
        assert_eq!(parse_shm_size("1G"), Ok(1 << 30));
        assert_eq!(parse_shm_size("512kb"), Ok(512 << 10));
        assert_eq!(parse_shm_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_shm_size("4096"), Ok(4096));
        assert!(
            parse_shm_size("99999999999999g")
                .is_err_and(|e| e.to_string().contains("past the 16 EiB"))
        );
        for bad in ["", "0", "64x", "m"] {
            assert!(parse_shm_size(bad).is_err(), "{bad}");
        }
    }
}
