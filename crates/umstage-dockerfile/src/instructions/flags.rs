//! The `--flag`s of one instruction, checked against what it accepts, and the typing error.

/// A problem found while typing a node: message, the flag it concerns, and a suggestion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TypeError {
    pub(crate) message: String,
    pub(crate) flag: Option<String>,
    pub(crate) suggestion: Option<String>,
    pub(crate) unknown_instruction: bool,
}

impl TypeError {
    pub(super) fn arg(message: impl Into<String>) -> TypeError {
        TypeError {
            message: message.into(),
            flag: None,
            suggestion: None,
            unknown_instruction: false,
        }
    }
    pub(super) fn flag(flag: &str, message: impl Into<String>) -> TypeError {
        TypeError {
            message: message.into(),
            flag: Some(flag.to_owned()),
            suggestion: None,
            unknown_instruction: false,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum FlagType {
    Bool,
    String,
    Strings,
}

/// Parsed `--flag` values for one instruction, checked against what it accepts.
pub(super) struct Flags {
    values: Vec<(&'static str, Vec<String>)>,
}

impl Flags {
    pub(super) fn parse(
        keyword: &str,
        raw: &[String],
        allowed: &[(&'static str, FlagType)],
    ) -> Result<Flags, TypeError> {
        let mut values: Vec<(&'static str, Vec<String>)> = Vec::new();
        for arg in raw {
            let Some(body) = arg.strip_prefix("--") else {
                return Err(TypeError::flag(
                    arg,
                    format!("arg should start with -- : {arg}"),
                ));
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(key, ty)) = allowed.iter().find(|(n, _)| *n == name) else {
                let mut e = TypeError::flag(
                    &format!("--{name}"),
                    if allowed.is_empty() {
                        format!("unknown flag: --{name} ({keyword} takes no flags)")
                    } else {
                        format!("unknown flag: --{name}")
                    },
                );
                e.suggestion = crate::error::closest(name, allowed.iter().map(|(n, _)| *n))
                    .map(|s| format!("did you mean --{s}?"));
                return Err(e);
            };
            let seen = values.iter().position(|(n, _)| *n == key);
            if seen.is_some() && ty != FlagType::Strings {
                return Err(TypeError::flag(
                    &format!("--{name}"),
                    format!("duplicate flag specified: --{name}"),
                ));
            }
            let v = match ty {
                FlagType::Bool => {
                    if value == Some("") {
                        return Err(TypeError::flag(
                            &format!("--{name}"),
                            format!("missing a value on flag: --{name}"),
                        ));
                    }
                    match value.map(str::to_ascii_lowercase).as_deref() {
                        None | Some("true") => "true".to_owned(),
                        Some("false") => "false".to_owned(),
                        Some(other) => {
                            return Err(TypeError::flag(
                                &format!("--{name}"),
                                format!("expecting boolean value for flag --{name}, not: {other}"),
                            ));
                        }
                    }
                }
                FlagType::String | FlagType::Strings => match value {
                    Some(v) => v.to_owned(),
                    None => {
                        return Err(TypeError::flag(
                            &format!("--{name}"),
                            format!("missing a value on flag: --{name}"),
                        ));
                    }
                },
            };
            match seen {
                Some(i) => values[i].1.push(v),
                None => values.push((key, vec![v])),
            }
        }
        Ok(Flags { values })
    }

    pub(super) fn string(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.last().cloned())
    }

    pub(super) fn strings(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    pub(super) fn bool(&self, name: &str) -> Option<bool> {
        self.string(name).map(|v| v == "true")
    }
}
