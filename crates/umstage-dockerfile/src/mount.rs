//! `RUN --mount=…` specifications: bind, cache, tmpfs, secret and ssh mounts.

use crate::shell::ExpandError;

/// The kind of a `RUN --mount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MountType {
    /// A read-only view of the context, a stage or an image (the default).
    #[default]
    Bind,
    /// A persistent cache directory shared between builds.
    Cache,
    /// An empty in-memory filesystem.
    Tmpfs,
    /// A secret file (or environment variable) provided by the build client.
    Secret,
    /// An SSH agent socket forwarded from the build client.
    Ssh,
}

/// How concurrent builds share one cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sharing {
    /// Many writers at once (the default).
    Shared,
    /// A new mount is created if the cache is in use.
    Private,
    /// Later users wait until the first releases the cache.
    Locked,
}

/// One parsed `--mount` value.
///
/// Before expansion (as stored on a parsed [`crate::Run`]) option values that contain `$` are
/// kept as written and their typed checks are deferred; [`crate::Instruction::expand_mounts`] gives
/// the final values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mount {
    /// The mount type.
    pub kind: MountType,
    /// `from=`: stage name, stage index or image the source comes from (bind and cache).
    pub from: Option<String>,
    /// `source=`/`src=`: path inside `from` (bind, cache) or secret id source.
    pub source: Option<String>,
    /// `target=`/`dst=`/`destination=`: where the mount appears.
    pub target: Option<String>,
    /// Whether the mount is read-only (defaults: bind, secret, ssh read-only; cache, tmpfs writable).
    pub readonly: bool,
    /// `id=`: cache id, secret id or ssh id.
    pub id: Option<String>,
    /// `sharing=` for cache mounts.
    pub sharing: Option<Sharing>,
    /// `required`: fail if the secret or ssh socket is not provided.
    pub required: bool,
    /// `mode=` (octal) for cache, secret and ssh mounts.
    pub mode: Option<u32>,
    /// `uid=` for cache, secret and ssh mounts.
    pub uid: Option<u32>,
    /// `gid=` for cache, secret and ssh mounts.
    pub gid: Option<u32>,
    /// `size=` in bytes for tmpfs mounts.
    pub size: Option<u64>,
    /// `env=`: for secrets, the environment variable that receives the value.
    pub env: Option<String>,
}

/// Every option key BuildKit accepts in `--mount`.
const KEYS: &[&str] = &[
    "type",
    "from",
    "source",
    "src",
    "target",
    "dst",
    "destination",
    "readonly",
    "ro",
    "readwrite",
    "rw",
    "required",
    "id",
    "sharing",
    "mode",
    "uid",
    "gid",
    "size",
    "env",
];

/// Why a `--mount` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    /// A field or value that is not allowed, as BuildKit words it.
    #[error("{0}")]
    Invalid(String),
    /// A value's variables could not be expanded.
    #[error(transparent)]
    Expand(#[from] ExpandError),
}

impl From<String> for MountError {
    fn from(message: String) -> Self {
        MountError::Invalid(message)
    }
}

impl From<&str> for MountError {
    fn from(message: &str) -> Self {
        MountError::Invalid(message.to_owned())
    }
}

/// An expander for option values: takes the raw value and returns it expanded.
pub type ValueExpander<'a> = &'a dyn Fn(&str) -> Result<String, ExpandError>;

/// Splits one CSV record the way Go's `encoding/csv` reads it.
fn csv_fields(s: &str) -> Result<Vec<String>, MountError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => {
                        return Err(
                            "failed to parse csv mounts: extraneous or missing \" in quoted-field"
                                .into(),
                        );
                    }
                    Some('"') => match chars.peek() {
                        Some('"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some(',') | None => break,
                        Some(_) => {
                            return Err(MountError::Invalid("failed to parse csv mounts: extraneous or missing \" in quoted-field".into()));
                        }
                    },
                    Some(c) => field.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                if c == '"' {
                    return Err(MountError::Invalid(
                        "failed to parse csv mounts: bare \" in non-quoted-field".into(),
                    ));
                }
                field.push(c);
                chars.next();
            }
        }
        out.push(field);
        match chars.next() {
            Some(',') => continue,
            _ => return Ok(out),
        }
    }
}

/// A `uid=` or `gid=` value. 4294967295 is refused: it is -1 to the kernel, which then
/// leaves the owner as it is, so no file can be given it.
fn parse_id(key: &str, value: &str) -> Result<u32, MountError> {
    match value.parse::<u32>() {
        Ok(id) if id != u32::MAX => Ok(id),
        _ => Err(MountError::Invalid(format!(
            "invalid value {value} for {key}"
        ))),
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool, MountError> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(MountError::Invalid(format!("invalid value for {key}: {v}"))),
    }
}

/// Parses a size like `64m`, `1GiB` or `1024` into bytes (binary units, as Docker's `RAMInBytes`).
fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024f64.powi(4),
        "p" | "pb" | "pib" => 1024f64.powi(5),
        _ => return None,
    };
    let bytes = num * mult;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Parses a `--mount` value. Without an expander, values containing `$` are kept raw and checked later.
pub fn parse_mount(text: &str, expander: Option<ValueExpander<'_>>) -> Result<Mount, MountError> {
    let mut m = Mount::default();
    let mut ro_auto = true;
    let mut deferred_type = false;
    for field in csv_fields(text)? {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_owned())),
            None => (field.to_ascii_lowercase(), None),
        };
        let Some(value) = value else {
            match key.as_str() {
                "readonly" | "ro" => {
                    m.readonly = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.readonly = false;
                    ro_auto = false;
                }
                "required" => {
                    if !matches!(m.kind, MountType::Secret | MountType::Ssh) && !deferred_type {
                        return Err(MountError::Invalid(format!(
                            "unexpected key '{key}' for mount type '{}'",
                            m.kind
                        )));
                    }
                    m.required = true;
                }
                _ => {
                    return Err(MountError::Invalid(format!(
                        "invalid field '{field}' must be a key=value pair"
                    )));
                }
            }
            continue;
        };
        let value = match expander {
            Some(f) => f(&value)?,
            None => {
                if key == "from" && value.contains('$') && value.len() > 1 {
                    return Err(MountError::Invalid(format!(
                        "'{key}' doesn't support variable expansion, define alias stage instead"
                    )));
                }
                if value.contains('$') {
                    // Deferred: checked when the step's environment is known.
                    if !KEYS.contains(&key.as_str()) {
                        return Err(unknown_key(&key, &field));
                    }
                    if key == "type" {
                        deferred_type = true;
                    }
                    set_raw(&mut m, &key, value);
                    continue;
                }
                value
            }
        };
        let typed_ok = !deferred_type;
        match key.as_str() {
            "type" => {
                m.kind = match value.to_ascii_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => {
                        let hint = crate::error::closest(
                            &value,
                            ["bind", "cache", "tmpfs", "secret", "ssh"],
                        );
                        return Err(MountError::Invalid(format!(
                            "unsupported mount type \"{value}\"{}",
                            hint.map(|h| format!(" (did you mean {h}?)"))
                                .unwrap_or_default()
                        )));
                    }
                }
            }
            "from" => m.from = Some(value),
            "source" | "src" => m.source = Some(value),
            "target" | "dst" | "destination" => m.target = Some(value),
            "readonly" | "ro" => {
                m.readonly = parse_bool(&key, &value)?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.readonly = !parse_bool(&key, &value)?;
                ro_auto = false;
            }
            "required" => {
                if typed_ok && !matches!(m.kind, MountType::Secret | MountType::Ssh) {
                    return Err(MountError::Invalid(format!(
                        "unexpected key '{key}' for mount type '{}'",
                        m.kind
                    )));
                }
                m.required = parse_bool(&key, &value)?;
            }
            "size" => {
                if typed_ok && m.kind != MountType::Tmpfs {
                    return Err(MountError::Invalid(format!(
                        "unexpected key '{key}' for mount type '{}'",
                        m.kind
                    )));
                }
                m.size = Some(
                    parse_size(&value)
                        .ok_or_else(|| format!("invalid value for {key}: {value}"))?,
                );
            }
            "id" => m.id = Some(value),
            "sharing" => {
                m.sharing = Some(match value.to_ascii_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => {
                        return Err(MountError::Invalid(format!(
                            "unsupported sharing value \"{value}\""
                        )));
                    }
                })
            }
            "mode" => {
                m.mode = Some(
                    u32::from_str_radix(&value, 8)
                        .map_err(|_| format!("invalid value {value} for mode"))?,
                )
            }
            "uid" => m.uid = Some(parse_id("uid", &value)?),
            "gid" => m.gid = Some(parse_id("gid", &value)?),
            "env" => m.env = Some(value),
            _ => return Err(unknown_key(&key, &field)),
        }
    }
    if deferred_type {
        return Ok(m);
    }
    validate(&mut m, ro_auto)?;
    Ok(m)
}

fn unknown_key(key: &str, field: &str) -> MountError {
    let hint = crate::error::closest(key, KEYS.iter().copied());
    MountError::Invalid(format!(
        "unexpected key '{key}' in '{field}'{}",
        hint.map(|h| format!(" (did you mean {h}?)"))
            .unwrap_or_default()
    ))
}

fn set_raw(m: &mut Mount, key: &str, value: String) {
    match key {
        "from" => m.from = Some(value),
        "source" | "src" => m.source = Some(value),
        "target" | "dst" | "destination" => m.target = Some(value),
        "id" => m.id = Some(value),
        "env" => m.env = Some(value),
        _ => {}
    }
}

fn validate(m: &mut Mount, ro_auto: bool) -> Result<(), MountError> {
    let file_info = matches!(
        m.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    );
    if !file_info {
        for (set, name) in [
            (m.mode.is_some(), "mode"),
            (m.uid.is_some(), "uid"),
            (m.gid.is_some(), "gid"),
        ] {
            if set {
                return Err(MountError::Invalid(format!(
                    "{name} not allowed for \"{}\" type mounts",
                    m.kind
                )));
            }
        }
    }
    if ro_auto {
        m.readonly = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    if m.kind == MountType::Secret {
        if m.from.is_some() {
            return Err(MountError::Invalid(
                "secret mount should not have a from".into(),
            ));
        }
        if m.sharing.is_some() {
            return Err(MountError::Invalid(
                "secret mount should not define sharing".into(),
            ));
        }
        if m.source.is_none() && m.target.is_none() && m.id.is_none() && m.env.is_none() {
            return Err(MountError::Invalid(
                "invalid secret mount. one of source, target required".into(),
            ));
        }
        if m.source.is_some() && m.id.is_some() {
            return Err(MountError::Invalid(
                "both source and id can't be set".into(),
            ));
        }
    }
    if m.sharing.is_some() && m.kind != MountType::Cache {
        return Err(MountError::Invalid(format!(
            "invalid cache sharing set for {} mount",
            m.kind
        )));
    }
    if m.kind != MountType::Secret && m.env.is_some() {
        return Err(MountError::Invalid(format!(
            "unexpected key 'env' for mount type '{}'",
            m.kind
        )));
    }
    Ok(())
}

impl std::fmt::Display for MountType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_id_that_means_no_change_is_no_owner() {
        for flag in ["uid", "gid"] {
            let text = format!("type=cache,target=/c,{flag}=4294967295");
            assert!(parse_mount(&text, None).is_err(), "{text}");
        }
        let m = parse_mount("type=cache,target=/c,uid=4294967294", None).unwrap();
        assert_eq!(m.uid, Some(4294967294));
    }

    #[test]
    fn every_type_and_its_options() {
        let m = parse_mount(
            "type=cache,target=/root/.cache,id=go,sharing=locked,mode=0755,uid=1,gid=2",
            None,
        )
        .unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.mode, Some(0o755));
        assert_eq!(m.sharing, Some(Sharing::Locked));
        assert!(!m.readonly);
        let b = parse_mount("target=/src,from=build,source=/out,rw", None).unwrap();
        assert_eq!(b.kind, MountType::Bind);
        assert!(!b.readonly);
        assert!(parse_mount("type=bind,target=/x", None).unwrap().readonly);
        let t = parse_mount("type=tmpfs,target=/tmp,size=64m", None).unwrap();
        assert_eq!(t.size, Some(64 << 20));
        let s = parse_mount("type=secret,id=tok,env=TOKEN,required", None).unwrap();
        assert!(s.required && s.readonly);
        assert_eq!(s.env.as_deref(), Some("TOKEN"));
        assert_eq!(parse_mount("type=ssh", None).unwrap().kind, MountType::Ssh);
    }

    #[test]
    fn bad_mounts_name_the_problem() {
        assert!(
            parse_mount("type=nfs,target=/x", None)
                .unwrap_err()
                .to_string()
                .contains("unsupported mount type")
        );
        assert!(
            parse_mount("type=bind,target=/x,mode=0700", None)
                .unwrap_err()
                .to_string()
                .contains("mode not allowed")
        );
        assert!(
            parse_mount("target=/x,tagret=/y", None)
                .unwrap_err()
                .to_string()
                .contains("did you mean target")
        );
        assert!(parse_mount("type=secret", None).is_err());
        assert!(
            parse_mount("type=bind,from=$X,target=/x", None)
                .unwrap_err()
                .to_string()
                .contains("doesn't support variable")
        );
        assert!(parse_mount("type=cache,size=1g,target=/x", None).is_err());
    }

    #[test]
    fn deferred_values_expand_later() {
        let raw = parse_mount("type=cache,target=$DIR,uid=$UID", None).unwrap();
        assert_eq!(raw.target.as_deref(), Some("$DIR"));
        let f = |v: &str| -> Result<String, ExpandError> {
            Ok(v.replace("$DIR", "/c").replace("$UID", "7"))
        };
        let m = parse_mount("type=cache,target=$DIR,uid=$UID", Some(&f)).unwrap();
        assert_eq!(m.target.as_deref(), Some("/c"));
        assert_eq!(m.uid, Some(7));
    }

    #[test]
    fn csv_quoting() {
        assert_eq!(csv_fields("a,\"b,c\",d").unwrap(), ["a", "b,c", "d"]);
        assert!(csv_fields("a\"b").is_err());
    }
}
