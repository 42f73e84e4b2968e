//! `--chmod` values of COPY and ADD: octal (`0755`) or symbolic (`u=rwx,go=rx`, `+x`).

use std::str::FromStr;

/// A parsed `--chmod` value, applied to each copied file's own mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    /// An absolute mode: every copied file and directory gets exactly these permission bits.
    Octal(u32),
    /// Symbolic clauses, applied in order to each file's mode as `chmod(1)` does.
    Symbolic(Vec<Clause>),
}

/// One `who op perms` part of a symbolic mode, such as `go-w`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    /// Bit mask of who is affected: a combination of the user, group and other permission bits
    /// (`0o700`, `0o070`, `0o007`), plus the set-id bits that belong to them.
    who: u32,
    /// The operations, in order.
    ops: Vec<(Op, Perms)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Remove,
    Set,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Perms {
    /// Literal `rwxst` bits, with `X` kept apart since it depends on the file.
    Bits { bits: u32, conditional_x: bool },
    /// Copy the permissions another class has (`g=u`).
    CopyFrom(u32),
}

/// A `--chmod` value that is neither octal nor valid symbolic notation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid --chmod value {value:?}: use octal digits (0755) or symbolic notation (u=rwx,go=rx or +x)"
)]
pub struct ChmodError {
    value: String,
}

const USER: u32 = 0o4700;
const GROUP: u32 = 0o2070;
const OTHER: u32 = 0o1007;
const ALL: u32 = 0o7777;

impl FromStr for Chmod {
    type Err = ChmodError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let err = || ChmodError {
            value: value.to_string(),
        };
        if value.is_empty() {
            return Err(err());
        }
        if value.bytes().all(|b| b.is_ascii_digit()) {
            let mode = u32::from_str_radix(value, 8).map_err(|_| err())?;
            if mode > 0o7777 {
                return Err(err());
            }
            return Ok(Chmod::Octal(mode));
        }
        value
            .split(',')
            .map(|c| parse_clause(c).ok_or_else(err))
            .collect::<Result<_, _>>()
            .map(Chmod::Symbolic)
    }
}

fn parse_clause(text: &str) -> Option<Clause> {
    let mut chars = text.chars().peekable();
    let mut who = 0;
    while let Some(&c) = chars.peek() {
        who |= match c {
            'u' => USER,
            'g' => GROUP,
            'o' => OTHER,
            'a' => ALL,
            _ => break,
        };
        chars.next();
    }
    if who == 0 {
        // No class named: all of them (umask is not consulted; a build has none to honour).
        who = ALL;
    }
    let mut ops = Vec::new();
    while let Some(c) = chars.next() {
        let op = match c {
            '+' => Op::Add,
            '-' => Op::Remove,
            '=' => Op::Set,
            _ => return None,
        };
        let perms = match chars.peek() {
            Some('u') => {
                chars.next();
                Perms::CopyFrom(0o700)
            }
            Some('g') => {
                chars.next();
                Perms::CopyFrom(0o070)
            }
            Some('o') => {
                chars.next();
                Perms::CopyFrom(0o007)
            }
            _ => {
                let mut bits = 0;
                let mut conditional_x = false;
                while let Some(&p) = chars.peek() {
                    match p {
                        'r' => bits |= 0o444,
                        'w' => bits |= 0o222,
                        'x' => bits |= 0o111,
                        'X' => conditional_x = true,
                        's' => bits |= 0o6000,
                        't' => bits |= 0o1000,
                        _ => break,
                    }
                    chars.next();
                }
                Perms::Bits {
                    bits,
                    conditional_x,
                }
            }
        };
        ops.push((op, perms));
    }
    if ops.is_empty() {
        return None;
    }
    Some(Clause { who, ops })
}

impl Chmod {
    /// The permission bits (`0o7777` part) a file with mode `current` gets; `is_dir` matters for
    /// `X`. The file type bits are not part of the result.
    pub fn apply(&self, current: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(mode) => *mode,
            Chmod::Symbolic(clauses) => {
                let mut mode = current & 0o7777;
                for clause in clauses {
                    for &(op, perms) in &clause.ops {
                        let bits = match perms {
                            Perms::Bits {
                                bits,
                                conditional_x,
                            } => {
                                let x = if conditional_x && (is_dir || mode & 0o111 != 0) {
                                    0o111
                                } else {
                                    0
                                };
                                (bits | x) & clause.who
                            }
                            Perms::CopyFrom(class) => {
                                let part = (mode & class) >> class.trailing_zeros();
                                (part * 0o111) & clause.who & 0o777
                            }
                        };
                        mode = match op {
                            Op::Add => mode | bits,
                            Op::Remove => mode & !bits,
                            // `=` clears the named classes' rwx (set-id bits only when named).
                            Op::Set => (mode & !(clause.who & 0o777)) | bits,
                        };
                    }
                }
                mode
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(spec: &str, mode: u32, dir: bool) -> u32 {
        spec.parse::<Chmod>()
            .map(|c| c.apply(mode, dir))
            .unwrap_or(u32::MAX)
    }

    #[test]
    fn octal_replaces_the_mode() {
        assert_eq!(apply("755", 0o600, false), 0o755);
        assert_eq!(apply("0640", 0o777, true), 0o640);
        assert_eq!(apply("4755", 0o600, false), 0o4755);
    }

    #[test]
    fn symbolic_edits_the_existing_mode() {
        assert_eq!(apply("+x", 0o644, false), 0o755);
        assert_eq!(apply("u=rwx,go=rx", 0o600, false), 0o755);
        assert_eq!(apply("go-w", 0o666, false), 0o644);
        assert_eq!(apply("a=r", 0o755, false), 0o444);
        assert_eq!(apply("g=u", 0o640, false), 0o660);
        assert_eq!(apply("o+t", 0o777, true), 0o1777);
        assert_eq!(apply("u+s", 0o755, false), 0o4755);
        assert_eq!(apply("u=rw,g=,o=", 0o777, false), 0o600);
    }

    #[test]
    fn capital_x_only_for_directories_and_executables() {
        assert_eq!(apply("a+X", 0o644, false), 0o644);
        assert_eq!(apply("a+X", 0o644, true), 0o755);
        assert_eq!(apply("a+X", 0o744, false), 0o755);
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in ["", "999", "77777", "u", "u*x", "rwx", "0o755", "+q", "u+x,"] {
            assert!(bad.parse::<Chmod>().is_err(), "{bad:?} accepted");
        }
    }
}
