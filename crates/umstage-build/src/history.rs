//! The `created_by` text of image history entries, worded as BuildKit words them, so `docker
//! history` shows the same lines for an image built by umstage as for one built by BuildKit.
//!
//! BuildKit formats several entries with Go's `%q` and `%v` verbs (`CMD ["a" "b"]`,
//! `VOLUME [/data]`, `EXPOSE map[80/tcp:{}]`); the helpers here produce the same text.

use std::time::Duration;

use umstage_dockerfile::{Command, KeyValue, Sources, go_quote};

use crate::config::HealthConfig;

/// Go's `%q` of a `[]string`: `["a" "b"]`.
pub fn go_quote_list(words: &[String]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| go_quote(w)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `%v` of a `[]string`: `[a b]`.
fn go_list(words: &[String]) -> String {
    format!("[{}]", words.join(" "))
}

/// Go's `time.Duration.String()`: `0s`, `1.5s`, `2m0s`, `1h0m0s`, `500ms`.
fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    let trim = |whole: u128, frac: u128, digits: usize| -> String {
        let frac = format!("{frac:0digits$}");
        let frac = frac.trim_end_matches('0');
        if frac.is_empty() {
            whole.to_string()
        } else {
            format!("{whole}.{frac}")
        }
    };
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", trim(nanos / 1_000, nanos % 1_000, 3));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", trim(nanos / 1_000_000, nanos % 1_000_000, 6));
    }
    let secs = nanos / 1_000_000_000;
    let seconds = format!("{}s", trim(secs % 60, nanos % 1_000_000_000, 9));
    let (hours, minutes) = (secs / 3600, (secs / 60) % 60);
    match (hours, secs / 60) {
        (0, 0) => seconds,
        (0, _) => format!("{minutes}m{seconds}"),
        _ => format!("{hours}h{minutes}m{seconds}"),
    }
}

/// Go's `%q` of an integer: a single-quoted rune literal (`'\x03'`).
fn go_quote_rune(n: i64) -> String {
    match u32::try_from(n).ok().and_then(char::from_u32) {
        Some('\'') => "'\\''".into(),
        Some(c) => {
            let q = go_quote(&c.to_string());
            let inner = &q[1..q.len() - 1];
            let inner = if inner == "\\\"" { "\"" } else { inner };
            format!("'{inner}'")
        }
        None => "'\u{fffd}'".into(),
    }
}

fn pairs(keyword: &str, kvs: &[KeyValue]) -> String {
    let mut s = keyword.to_string();
    for kv in kvs {
        s.push_str(&format!(" {}={}", kv.key, kv.value));
    }
    s
}

/// `HEALTHCHECK` as BuildKit records it: Go's `%q` of the healthcheck struct pointer.
fn healthcheck(check: &HealthConfig) -> String {
    let ns = |n: i64| {
        go_quote(&go_duration(Duration::from_nanos(
            u64::try_from(n).unwrap_or(0),
        )))
    };
    format!(
        "HEALTHCHECK &{{{} {} {} {} {} {}}}",
        go_quote_list(&check.test),
        ns(check.interval),
        ns(check.timeout),
        ns(check.start_period),
        ns(check.start_interval),
        go_quote_rune(check.retries)
    )
}

/// `COPY`/`ADD` as BuildKit records it: flags that change the result, then sources and dest.
fn copy(
    keyword: &str,
    parents: bool,
    chown: Option<&str>,
    chmod: Option<&str>,
    s: &Sources,
) -> String {
    let mut out = keyword.to_string();
    if parents {
        out.push_str(" --parents");
    }
    if let Some(c) = chown {
        out.push_str(&format!(" --chown={c}"));
    }
    if let Some(c) = chmod {
        out.push_str(&format!(" --chmod={c}"));
    }
    for p in &s.paths {
        out.push(' ');
        out.push_str(p);
    }
    for doc in &s.inline {
        out.push_str(" <<");
        out.push_str(&doc.name);
    }
    out.push(' ');
    out.push_str(&s.dest);
    out.push_str(" # buildkit");
    out
}

/// The history text of a metadata or file instruction, from its expanded form. `config` is
/// the stage config after the instruction (CMD, ENTRYPOINT and HEALTHCHECK record what was
/// stored); `args` are an ARG's resolved values. `None` for instructions BuildKit records no
/// entry for (ONBUILD) or words elsewhere (RUN, WORKDIR).
pub fn created_by(
    expanded: &Command,
    config: &crate::config::ImageConfig,
    args: &[(String, Option<String>)],
) -> Option<String> {
    let c = &config.config;
    Some(match expanded {
        Command::Env(kvs) => pairs("ENV", kvs),
        Command::Label(kvs) => pairs("LABEL", kvs),
        Command::Maintainer(name) => format!("MAINTAINER {name}"),
        Command::Cmd(_) => format!(
            "CMD {}",
            go_quote_list(c.cmd.as_deref().unwrap_or_default())
        ),
        Command::Entrypoint(_) => format!(
            "ENTRYPOINT {}",
            go_quote_list(c.entrypoint.as_deref().unwrap_or_default())
        ),
        Command::User(u) => format!("USER {u}"),
        Command::Volume(paths) => format!("VOLUME {}", go_list(paths)),
        Command::StopSignal(s) => format!("STOPSIGNAL {s}"),
        Command::Shell(words) => format!("SHELL {}", go_list(words)),
        Command::Expose(_) => {
            let ports: Vec<String> = c
                .exposed_ports
                .iter()
                .flatten()
                .map(|(p, _)| format!("{p}:{{}}"))
                .collect();
            format!("EXPOSE map[{}]", ports.join(" "))
        }
        Command::Healthcheck(_) => match &c.healthcheck {
            Some(h) => healthcheck(h),
            None => "HEALTHCHECK <nil>".into(),
        },
        Command::Arg(_) => {
            let words: Vec<String> = args
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => format!("{k}={v}"),
                    None => k.clone(),
                })
                .collect();
            format!("ARG {}", words.join(" "))
        }
        Command::Copy(cp) => copy(
            "COPY",
            cp.parents,
            cp.chown.as_deref(),
            cp.chmod.as_deref(),
            &cp.sources,
        ),
        Command::Add(a) => copy(
            "ADD",
            a.parents,
            a.chown.as_deref(),
            a.chmod.as_deref(),
            &a.sources,
        ),
        Command::Onbuild(_) | Command::Run(_) | Command::Workdir(_) | Command::From(_) => {
            return None;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_formats() {
        assert_eq!(
            go_quote_list(&["/bin/sh".into(), "-c".into(), "echo \"hi\"\n".into()]),
            r#"["/bin/sh" "-c" "echo \"hi\"\n"]"#
        );
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_quote_rune(3), "'\\x03'");
        assert_eq!(go_quote_rune(65), "'A'");
    }

    #[test]
    fn healthcheck_reads_like_buildkit() {
        let h = HealthConfig {
            test: vec!["CMD-SHELL".into(), "true".into()],
            interval: 30_000_000_000,
            retries: 3,
            ..HealthConfig::default()
        };
        assert_eq!(
            healthcheck(&h),
            r#"HEALTHCHECK &{["CMD-SHELL" "true"] "30s" "0s" "0s" "0s" '\x03'}"#
        );
    }
}
