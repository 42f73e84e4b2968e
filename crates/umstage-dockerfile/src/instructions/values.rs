//! Value syntaxes instructions share: EXPOSE's port specs and Go durations.

use std::time::Duration;

/// An EXPOSE word that is no port spec, as BuildKit words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PortError(String);

/// Normalizes EXPOSE words into image-config port keys (`80/tcp`), expanding ranges
/// (`8000-8002/udp`) and accepting Docker's `[ip:][hostport:]port[/proto]` forms.
pub fn exposed_ports(words: &[String]) -> Result<Vec<String>, PortError> {
    let mut out = Vec::new();
    for w in words {
        let (spec, proto) = match w.rsplit_once('/') {
            Some((p, proto)) => (p, proto.to_ascii_lowercase()),
            None => (w.as_str(), "tcp".to_owned()),
        };
        if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
            return Err(PortError(format!("invalid proto: {proto} in EXPOSE {w}")));
        }
        let container = spec.rsplit(':').next().unwrap_or(spec);
        let (lo, hi) = match container.split_once('-') {
            Some((a, b)) => (a, b),
            None => (container, container),
        };
        let parse = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| PortError(format!("invalid containerPort: {container} in EXPOSE {w}")))
        };
        let (lo, hi) = (parse(lo)?, parse(hi)?);
        if hi < lo {
            return Err(PortError(format!(
                "invalid range specified for container port: {container}"
            )));
        }
        for p in lo..=hi {
            let key = format!("{p}/{proto}");
            if !out.contains(&key) {
                out.push(key);
            }
        }
    }
    Ok(out)
}

/// Parses a Go duration (`1m30s`, `500ms`, `1.5h`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if n == 0 {
            return None;
        }
        let num: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[u..];
        total += num * unit;
    }
    (total.is_finite() && total < 1e10).then(|| Duration::from_secs_f64(total))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn port_specs() {
        let w = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            exposed_ports(&w(&["80", "53/UDP"])).unwrap(),
            ["80/tcp", "53/udp"]
        );
        assert_eq!(
            exposed_ports(&w(&["8000-8002/udp"])).unwrap(),
            ["8000/udp", "8001/udp", "8002/udp"]
        );
        assert_eq!(
            exposed_ports(&w(&["127.0.0.1:8080:80"])).unwrap(),
            ["80/tcp"]
        );
        assert!(exposed_ports(&w(&["http"])).is_err());
        assert!(exposed_ports(&w(&["80/xyz"])).is_err());
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("x"), None);
    }
}
