//! Typing a syntax node into its [`Command`]: arguments, flags and heredocs checked per instruction.

use std::time::Duration;

use super::flags::{FlagType, Flags, TypeError};
use super::values::parse_duration;
use super::*;
use crate::mount::parse_mount;
use crate::syntax::{Node, chomp_heredoc, keyword_lower, parse_heredoc};

/// The node's arguments as a command line, taken out of the node.
fn command_line(node: &mut Node) -> CommandLine {
    let args = std::mem::take(&mut node.args);
    if node.json {
        CommandLine::Exec(args)
    } else if args.len() == 1 {
        CommandLine::Shell(args.into_iter().next().unwrap_or_default())
    } else {
        CommandLine::Shell(args.join(" "))
    }
}

fn exactly_one(node: &mut Node, name: &str) -> Result<String, TypeError> {
    match node.args.as_mut_slice() {
        [one] => Ok(std::mem::take(one)),
        _ => Err(TypeError::arg(format!(
            "{name} requires exactly one argument"
        ))),
    }
}

fn no_flags(node: &Node, name: &str) -> Result<(), TypeError> {
    Flags::parse(name, &node.flags, &[]).map(|_| ())
}

fn key_values(node: &mut Node, name: &str) -> Result<Vec<KeyValue>, TypeError> {
    if node.args.is_empty() {
        return Err(TypeError::arg(format!(
            "{name} requires at least one argument"
        )));
    }
    if !node.args.len().is_multiple_of(3) {
        return Err(TypeError::arg(format!(
            "Bad input to {name}, too many arguments"
        )));
    }
    node.args
        .chunks_mut(3)
        .map(|c| {
            if c[0].is_empty() {
                Err(TypeError::arg(format!("{name} names can not be blank")))
            } else {
                Ok(KeyValue {
                    key: std::mem::take(&mut c[0]),
                    value: std::mem::take(&mut c[1]),
                })
            }
        })
        .collect()
}

fn sources(node: &mut Node, name: &str) -> Result<Sources, TypeError> {
    if node.args.len() < 2 {
        return Err(TypeError::arg(format!(
            "{name} requires at least two arguments, but only one was provided. Destination could not be determined"
        )));
    }
    let mut srcs = std::mem::take(&mut node.args);
    let dest = srcs.pop().unwrap_or_default();
    if !node.json && matches!(parse_heredoc(&dest), Ok(Some(_))) {
        return Err(TypeError::arg(format!(
            "{name} cannot accept a heredoc as a destination"
        )));
    }
    let mut paths = Vec::new();
    let mut inline = Vec::new();
    for src in srcs {
        match (!node.json)
            .then(|| parse_heredoc(&src).ok().flatten())
            .flatten()
        {
            Some(h) => {
                let doc = node.heredocs.iter().find(|d| d.name == h.name);
                let content = doc.map(|d| d.content.clone()).unwrap_or_default();
                inline.push(InlineSource {
                    name: h.name,
                    data: if h.chomp {
                        chomp_heredoc(&content)
                    } else {
                        content
                    },
                    expand: h.expand,
                });
            }
            None => paths.push(src),
        }
    }
    Ok(Sources {
        paths,
        inline,
        dest,
    })
}
fn health_duration(flags: &Flags, name: &str) -> Result<Duration, TypeError> {
    let Some(v) = flags.string(name) else {
        return Ok(Duration::ZERO);
    };
    if v.is_empty() {
        return Ok(Duration::ZERO);
    }
    let d = parse_duration(&v).ok_or_else(|| {
        TypeError::flag(
            &format!("--{name}"),
            format!("time: invalid duration \"{v}\" for --{name}"),
        )
    })?;
    if !d.is_zero() && d < Duration::from_millis(1) {
        return Err(TypeError::flag(
            &format!("--{name}"),
            format!("--{name}: interval cannot be less than 1ms"),
        ));
    }
    Ok(d)
}

/// Builds the typed command for one syntax node, taking its arguments and heredocs.
pub(crate) fn type_node(node: &mut Node) -> Result<Command, TypeError> {
    use FlagType::{Bool, String as Str, Strings};
    let mut buf = [0u8; 16];
    let lower = keyword_lower(&node.keyword, &mut buf);
    let k = match INSTRUCTIONS.iter().find(|i| i.eq_ignore_ascii_case(lower)) {
        Some(k) => *k,
        None => "",
    };
    Ok(match k {
        "FROM" => {
            let flags = Flags::parse(k, &node.flags, &[("platform", Str)])?;
            let (name, as_keyword) = match node.args.as_slice() {
                [_] => (None, None),
                [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
                    let lower = name.to_lowercase();
                    let mut chars = lower.chars();
                    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
                        && chars.all(|c| {
                            c.is_ascii_lowercase()
                                || c.is_ascii_digit()
                                || matches!(c, '-' | '_' | '.')
                        });
                    if !valid {
                        return Err(TypeError::arg(format!(
                            "invalid name for build stage: \"{name}\", name can't start with a number or contain symbols"
                        )));
                    }
                    (Some(name.clone()), Some(as_kw.clone()))
                }
                _ => {
                    return Err(TypeError::arg(
                        "FROM requires either one or three arguments",
                    ));
                }
            };
            Command::From(From {
                base: node.args[0].clone(),
                name: name.as_ref().map(|n| n.to_lowercase()),
                name_as_written: name,
                as_keyword,
                platform: flags.string("platform"),
            })
        }
        "RUN" => {
            let flags = Flags::parse(
                k,
                &node.flags,
                &[
                    ("mount", Strings),
                    ("network", Str),
                    ("security", Str),
                    ("device", Strings),
                ],
            )?;
            if node.args.is_empty() && !node.json {
                return Err(TypeError::arg("RUN requires at least one argument"));
            }
            let network = match flags.string("network").as_deref() {
                None => None,
                Some("default") => Some(NetworkMode::Default),
                Some("none") => Some(NetworkMode::None),
                Some("host") => Some(NetworkMode::Host),
                Some(other) => {
                    return Err(TypeError::flag(
                        "--network",
                        format!(
                            "--network: unsupported network mode \"{other}\" (expected default, none or host)"
                        ),
                    ));
                }
            };
            let security = match flags.string("security").as_deref() {
                None => None,
                Some("sandbox") => Some(SecurityMode::Sandbox),
                Some("insecure") => Some(SecurityMode::Insecure),
                Some(other) => {
                    return Err(TypeError::flag(
                        "--security",
                        format!(
                            "--security: unsupported security mode \"{other}\" (expected sandbox or insecure)"
                        ),
                    ));
                }
            };
            let mount_flags = flags.strings("mount");
            let mounts = mount_flags
                .iter()
                .map(|m| {
                    parse_mount(m, None)
                        .map_err(|e| TypeError::flag("--mount", format!("--mount: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Command::Run(Run {
                command: command_line(node),
                mount_flags,
                mounts,
                network,
                security,
                devices: flags.strings("device"),
                heredocs: std::mem::take(&mut node.heredocs),
            })
        }
        "CMD" => {
            no_flags(node, k)?;
            Command::Cmd(command_line(node))
        }
        "ENTRYPOINT" => {
            no_flags(node, k)?;
            Command::Entrypoint(command_line(node))
        }
        "LABEL" => {
            no_flags(node, k)?;
            Command::Label(key_values(node, k)?)
        }
        "ENV" => {
            no_flags(node, k)?;
            Command::Env(key_values(node, k)?)
        }
        "MAINTAINER" => {
            no_flags(node, k)?;
            Command::Maintainer(exactly_one(node, k)?)
        }
        "EXPOSE" => {
            no_flags(node, k)?;
            if node.args.is_empty() {
                return Err(TypeError::arg("EXPOSE requires at least one argument"));
            }
            Command::Expose(std::mem::take(&mut node.args))
        }
        "ADD" => {
            let flags = Flags::parse(
                k,
                &node.flags,
                &[
                    ("chown", Str),
                    ("chmod", Str),
                    ("link", Bool),
                    ("keep-git-dir", Bool),
                    ("checksum", Str),
                    ("exclude", Strings),
                    ("unpack", Bool),
                    ("parents", Bool),
                ],
            )?;
            Command::Add(Add {
                sources: sources(node, k)?,
                chown: flags.string("chown"),
                chmod: flags.string("chmod"),
                link: flags.bool("link").unwrap_or(false),
                keep_git_dir: flags.bool("keep-git-dir").unwrap_or(false),
                checksum: flags.string("checksum"),
                excludes: flags.strings("exclude"),
                unpack: flags.bool("unpack"),
                parents: flags.bool("parents").unwrap_or(false),
            })
        }
        "COPY" => {
            let flags = Flags::parse(
                k,
                &node.flags,
                &[
                    ("from", Str),
                    ("chown", Str),
                    ("chmod", Str),
                    ("link", Bool),
                    ("parents", Bool),
                    ("exclude", Strings),
                ],
            )?;
            if flags.string("from").is_some_and(|f| f.is_empty()) {
                return Err(TypeError::flag("--from", "missing a value on flag: --from"));
            }
            Command::Copy(Copy {
                sources: sources(node, k)?,
                from: flags.string("from"),
                chown: flags.string("chown"),
                chmod: flags.string("chmod"),
                link: flags.bool("link").unwrap_or(false),
                parents: flags.bool("parents").unwrap_or(false),
                excludes: flags.strings("exclude"),
            })
        }
        "VOLUME" => {
            no_flags(node, k)?;
            if node.args.is_empty() {
                return Err(TypeError::arg("VOLUME requires at least one argument"));
            }
            let mut v = Vec::new();
            for a in &node.args {
                let t = a.trim();
                if t.is_empty() {
                    return Err(TypeError::arg(
                        "VOLUME specified can not be an empty string",
                    ));
                }
                v.push(t.to_owned());
            }
            Command::Volume(v)
        }
        "USER" => {
            no_flags(node, k)?;
            Command::User(exactly_one(node, k)?)
        }
        "WORKDIR" => {
            no_flags(node, k)?;
            Command::Workdir(exactly_one(node, k)?)
        }
        "ARG" => {
            no_flags(node, k)?;
            if node.args.is_empty() {
                return Err(TypeError::arg("ARG requires at least one argument"));
            }
            let mut decls = Vec::new();
            for a in &node.args {
                let decl = match a.split_once('=') {
                    Some(("", _)) => return Err(TypeError::arg("ARG names can not be blank")),
                    Some((n, v)) => ArgDecl {
                        name: n.to_owned(),
                        default: Some(v.to_owned()),
                    },
                    None => ArgDecl {
                        name: a.clone(),
                        default: None,
                    },
                };
                decls.push(decl);
            }
            Command::Arg(decls)
        }
        "ONBUILD" => {
            no_flags(node, k)?;
            let Some(child) = &node.child else {
                return Err(TypeError::arg("ONBUILD requires at least one argument"));
            };
            let trigger = child.keyword.to_ascii_uppercase();
            match trigger.as_str() {
                "ONBUILD" => {
                    return Err(TypeError::arg(
                        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                    ));
                }
                "MAINTAINER" | "FROM" => {
                    return Err(TypeError::arg(format!(
                        "{trigger} isn't allowed as an ONBUILD trigger"
                    )));
                }
                _ => {}
            }
            type_node(&mut child.as_ref().clone())?;
            let mut expression = strip_onbuild(&node.original).to_owned();
            for d in &node.heredocs {
                expression.push('\n');
                expression.push_str(&d.content);
                expression.push_str(&d.name);
            }
            Command::Onbuild(expression)
        }
        "STOPSIGNAL" => {
            no_flags(node, k)?;
            Command::StopSignal(exactly_one(node, k)?)
        }
        "HEALTHCHECK" => {
            let Some(typ) = node.args.first() else {
                return Err(TypeError::arg("HEALTHCHECK requires at least one argument"));
            };
            let typ = typ.to_ascii_uppercase();
            let rest = &node.args[1..];
            if typ == "NONE" {
                if !rest.is_empty() || !node.flags.is_empty() {
                    return Err(TypeError::arg("HEALTHCHECK NONE takes no arguments"));
                }
                Command::Healthcheck(Healthcheck::None)
            } else {
                let flags = Flags::parse(
                    k,
                    &node.flags,
                    &[
                        ("interval", Str),
                        ("timeout", Str),
                        ("start-period", Str),
                        ("start-interval", Str),
                        ("retries", Str),
                    ],
                )?;
                if typ != "CMD" {
                    return Err(TypeError::arg(format!(
                        "Unknown type \"{typ}\" in HEALTHCHECK (try CMD)"
                    )));
                }
                if rest.is_empty() {
                    return Err(TypeError::arg("Missing command after HEALTHCHECK CMD"));
                }
                let test = if node.json {
                    std::iter::once("CMD".to_owned())
                        .chain(rest.iter().cloned())
                        .collect()
                } else {
                    vec!["CMD-SHELL".to_owned(), rest.join(" ")]
                };
                let retries = match flags.string("retries") {
                    None => 0,
                    Some(v) if v.is_empty() => 0,
                    Some(v) => match v.parse::<i64>() {
                        Ok(n) if n < 0 => {
                            return Err(TypeError::flag(
                                "--retries",
                                format!("--retries cannot be negative ({n})"),
                            ));
                        }
                        Ok(n) => u32::try_from(n).map_err(|_| {
                            TypeError::flag(
                                "--retries",
                                format!("--retries value out of range: {v}"),
                            )
                        })?,
                        Err(_) => {
                            return Err(TypeError::flag(
                                "--retries",
                                format!("invalid value for --retries: {v}"),
                            ));
                        }
                    },
                };
                Command::Healthcheck(Healthcheck::Cmd {
                    test,
                    options: HealthOptions {
                        interval: health_duration(&flags, "interval")?,
                        timeout: health_duration(&flags, "timeout")?,
                        start_period: health_duration(&flags, "start-period")?,
                        start_interval: health_duration(&flags, "start-interval")?,
                        retries,
                    },
                })
            }
        }
        "SHELL" => {
            no_flags(node, k)?;
            if node.args.is_empty() {
                return Err(TypeError::arg("SHELL requires at least one argument"));
            }
            if !node.json {
                let mut e = TypeError::arg("SHELL requires the arguments to be in JSON form");
                e.suggestion = Some(format!("write SHELL [\"{}\"]", node.args.join("\", \"")));
                return Err(e);
            }
            Command::Shell(std::mem::take(&mut node.args))
        }
        _ => {
            let mut e = TypeError::arg(format!("unknown instruction \"{}\"", node.keyword));
            e.unknown_instruction = true;
            e.suggestion = crate::error::closest(&node.keyword, INSTRUCTIONS.iter().copied())
                .map(|s| format!("did you mean {s}?"));
            return Err(e);
        }
    })
}

fn strip_onbuild(original: &str) -> &str {
    let t = original.trim_start();
    match t.get(..7) {
        Some(k) if k.eq_ignore_ascii_case("onbuild") => t[7..].trim_start(),
        _ => t,
    }
}
