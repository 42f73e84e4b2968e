//! `execve` in the guest's root: the kernel would load a dynamic program's interpreter, and a
//! script's, from the host's paths, so the supervisor picks the program itself. A static ELF
//! is executed directly (its host path); a dynamic one by executing the guest's own dynamic
//! loader (`ld.so --argv0 ARGV0 PROGRAM ARGS...`: glibc 2.33 and later, musl), which then
//! opens the program and its libraries through the translated `open`s; a `#!` script becomes its
//! interpreter (with its optional argument) and the script's path, through the same rule.

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;

use libc::user_regs_struct;
use nix::unistd::Pid;

use super::context::Context;
use super::errno::errno;
use super::memory::{self, Scratch};
use super::paths::Follow;
use super::regs::{arg, set_arg};
use super::syscalls::{How, PathArg};

/// How deep scripts may name interpreters that are scripts (Linux allows 4 too).
const MAX_DEPTH: usize = 4;

/// An argument of the new command line: one the caller has, or a new string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Arg {
    At(u64),
    New(Vec<u8>),
}

/// What a file is to `execve`.
#[derive(Debug, PartialEq, Eq)]
enum Program {
    /// `#!interpreter [argument]`.
    Script {
        interpreter: Vec<u8>,
        argument: Option<Vec<u8>>,
    },
    /// An ELF with this `PT_INTERP`.
    Dynamic(Vec<u8>),
    /// Anything the kernel loads alone (a static ELF), or refuses.
    Direct,
}

/// Rewrites an exec's program and command line in `regs`, or says why it fails; the guest
/// path of the program when it is dynamic (the kernel then runs the loader). `exe` is the
/// caller's own dynamic program, which `/proc/self/exe` names to it.
pub(super) fn rewrite(
    ctx: &Context,
    pid: Pid,
    regs: &mut user_regs_struct,
    scratch: &mut Scratch,
    path: PathArg,
    argv_arg: usize,
    exe: Option<&[u8]>,
) -> Result<Option<Vec<u8>>, i32> {
    let given_at = arg(regs, path.path);
    let given = memory::read_cstr(pid, given_at).map_err(errno)?;
    let dirfd = path.dirfd.map_or(libc::AT_FDCWD, |i| arg(regs, i) as i32);
    let (mut program, mut named) = if given.is_empty() {
        // fexecve: the kernel would load a dynamic program's interpreter from the host's
        // paths, so a program the guest sees is started by its path like any other; the
        // rest (a memfd, a deleted file, no AT_EMPTY_PATH) is left to the kernel.
        let empty_path = matches!(path.how, How::AtFlags(i)
            if arg(regs, i) as i32 & libc::AT_EMPTY_PATH != 0);
        let link = std::fs::read_link(format!("/proc/{pid}/fd/{dirfd}"));
        let guest = match link {
            Ok(link) if empty_path && dirfd >= 0 => {
                let link = link.as_os_str().as_bytes();
                let deleted = link.ends_with(b" (deleted)");
                ctx.root.to_guest(link).filter(|_| !deleted)
            }
            _ => None,
        };
        let Some(guest) = guest else {
            return Ok(None);
        };
        (guest.clone(), Arg::New(guest))
    } else {
        let Some(program) = ctx.root.absolute(pid, dirfd, &given) else {
            return Ok(None);
        };
        (program, Arg::At(given_at))
    };
    // The loader must be given the program itself: its own /proc/self/exe is the loader.
    if let Some(exe) = exe
        && names_own_exe(pid, &program)
    {
        program = exe.to_vec();
        named = Arg::New(program.clone());
    }
    let mut args: Vec<Arg> = read_argv(pid, arg(regs, argv_arg))?
        .into_iter()
        .map(Arg::At)
        .collect();
    if args.is_empty() {
        args.push(named.clone());
    }
    for _ in 0..MAX_DEPTH {
        let host = ctx.root.to_host(pid, &program, Follow::Yes)?;
        let host_path = Path::new(std::ffi::OsStr::from_bytes(&host));
        let meta = std::fs::metadata(host_path).map_err(errno)?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(libc::EACCES);
        }
        match classify(host_path) {
            Program::Script {
                interpreter,
                argument,
            } => {
                let mut new = vec![Arg::New(interpreter.clone())];
                new.extend(argument.map(Arg::New));
                new.push(named);
                new.extend(args.drain(1..));
                args = new;
                program = ctx
                    .root
                    .absolute(pid, libc::AT_FDCWD, &interpreter)
                    .ok_or(libc::ENOENT)?;
                named = Arg::New(interpreter);
            }
            Program::Dynamic(loader) => {
                let loader_host = ctx.root.to_host(pid, &loader, Follow::Yes)?;
                let mut new = vec![
                    Arg::New(loader),
                    Arg::New(b"--argv0".to_vec()),
                    args[0].clone(),
                    named,
                ];
                new.extend(args.drain(1..));
                place(regs, scratch, path, argv_arg, &loader_host, &new)?;
                return Ok(ctx.root.to_guest(&host));
            }
            Program::Direct => {
                place(regs, scratch, path, argv_arg, &host, &args)?;
                return Ok(None);
            }
        }
    }
    Err(libc::ELOOP)
}

/// Whether the guest path `path` is process `pid`'s `/proc/self/exe` (the magic link would
/// name the loader that runs a dynamic program).
fn names_own_exe(pid: Pid, path: &[u8]) -> bool {
    let parts: Vec<&[u8]> = path
        .split(|b| *b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .collect();
    let own = pid.to_string();
    match parts.as_slice() {
        [b"proc", who, b"exe"] => {
            *who == b"self" || *who == b"thread-self" || *who == own.as_bytes()
        }
        _ => false,
    }
}

/// Writes the program's host path and the command line into the scratch slot and points
/// the call's arguments at them.
fn place(
    regs: &mut user_regs_struct,
    scratch: &mut Scratch,
    path: PathArg,
    argv_arg: usize,
    host: &[u8],
    args: &[Arg],
) -> Result<(), i32> {
    let program = scratch.put_cstr(host).map_err(errno)?;
    let mut pointers = Vec::with_capacity((args.len() + 1) * 8);
    for a in args {
        let at = match a {
            Arg::At(at) => *at,
            Arg::New(text) => scratch.put_cstr(text).map_err(errno)?,
        };
        pointers.extend_from_slice(&at.to_ne_bytes());
    }
    pointers.extend_from_slice(&0u64.to_ne_bytes());
    let argv = scratch.put(&pointers).map_err(errno)?;
    set_arg(regs, path.path, program);
    set_arg(regs, argv_arg, argv);
    if let Some(dirfd) = path.dirfd {
        set_arg(regs, dirfd, libc::AT_FDCWD as u64);
    }
    Ok(())
}

/// The caller's `argv` array: its string addresses.
fn read_argv(pid: Pid, at: u64) -> Result<Vec<u64>, i32> {
    let mut out = Vec::new();
    if at == 0 {
        return Ok(out);
    }
    loop {
        let bytes = memory::read(pid, at + 8 * out.len() as u64, 8).map_err(errno)?;
        let Ok(word) = <[u8; 8]>::try_from(bytes.as_slice()) else {
            return Err(libc::EFAULT);
        };
        let ptr = u64::from_ne_bytes(word);
        if ptr == 0 {
            return Ok(out);
        }
        out.push(ptr);
        if out.len() > 1 << 20 {
            return Err(libc::E2BIG);
        }
    }
}

/// What `path` is to `execve`; `Direct` when it cannot be read (the kernel then decides).
fn classify(path: &Path) -> Program {
    // As `calls::open`: no symlink swapped in since the path was resolved is followed.
    let opened = if path.starts_with("/proc") {
        std::fs::File::open(path)
    } else {
        umstage_oci::inroot::open_no_symlinks(path, rustix::fs::OFlags::RDONLY)
            .map(std::fs::File::from)
    };
    let Ok(mut file) = opened else {
        return Program::Direct;
    };
    let mut head = [0u8; 256];
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return Program::Direct,
        }
    }
    let head = &head[..n];
    if let Some(line) = head.strip_prefix(b"#!") {
        return script(line).unwrap_or(Program::Direct);
    }
    elf_interpreter(&file, head).map_or(Program::Direct, Program::Dynamic)
}

/// A `#!` line's interpreter and optional argument (the rest of the line, as Linux takes it).
fn script(line: &[u8]) -> Option<Program> {
    let line = line.split(|b| *b == b'\n').next()?;
    let is_blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = line.iter().position(|b| !is_blank(b))?;
    let line = &line[start..];
    let end = line.iter().position(is_blank).unwrap_or(line.len());
    let interpreter = line[..end].to_vec();
    let rest = &line[end..];
    let argument = rest
        .iter()
        .position(|b| !is_blank(b))
        .map(|s| {
            let rest = &rest[s..];
            let e = rest.iter().rposition(|b| !is_blank(b)).map_or(0, |e| e + 1);
            rest[..e].to_vec()
        })
        .filter(|a| !a.is_empty());
    Some(Program::Script {
        interpreter,
        argument,
    })
}

/// A 64-bit little-endian ELF's `PT_INTERP`, if it has one.
fn elf_interpreter(file: &std::fs::File, head: &[u8]) -> Option<Vec<u8>> {
    if head.len() < 64 || &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return None;
    }
    let u16_at =
        |b: &[u8], at: usize| Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?));
    let u32_at =
        |b: &[u8], at: usize| Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?));
    let u64_at =
        |b: &[u8], at: usize| Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?));
    let phoff = u64_at(head, 32)?;
    let phentsize = usize::from(u16_at(head, 54)?);
    let phnum = usize::from(u16_at(head, 56)?);
    if phentsize < 56 || phnum > 256 {
        return None;
    }
    let mut table = vec![0u8; phentsize * phnum];
    file.read_exact_at(&mut table, phoff).ok()?;
    for entry in table.chunks(phentsize) {
        const PT_INTERP: u32 = 3;
        if u32_at(entry, 0)? != PT_INTERP {
            continue;
        }
        let offset = u64_at(entry, 8)?;
        let size = usize::try_from(u64_at(entry, 32)?).ok()?.min(4096);
        let mut name = vec![0u8; size];
        file.read_exact_at(&mut name, offset).ok()?;
        let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
        name.truncate(end);
        return Some(name);
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_callers_own_exe_is_named_by_self_or_its_pid() {
        let pid = Pid::from_raw(42);
        assert!(names_own_exe(pid, b"/proc/self/exe"));
        assert!(names_own_exe(pid, b"//proc/./42/exe"));
        assert!(!names_own_exe(pid, b"/proc/43/exe"));
        assert!(!names_own_exe(pid, b"/usr/bin/exe"));
    }

    #[test]
    fn shebang_lines_give_the_interpreter_and_one_argument() {
        assert_eq!(
            script(b" /bin/sh -e -x \nrest"),
            Some(Program::Script {
                interpreter: b"/bin/sh".to_vec(),
                argument: Some(b"-e -x".to_vec())
            })
        );
        assert_eq!(
            script(b"/usr/bin/env\n"),
            Some(Program::Script {
                interpreter: b"/usr/bin/env".to_vec(),
                argument: None
            })
        );
        assert_eq!(script(b"   \n"), None);
    }

    #[test]
    fn the_running_test_binary_names_its_loader_or_is_static() {
        let exe = std::env::current_exe().unwrap();
        match classify(&exe) {
            Program::Dynamic(loader) => assert!(loader.starts_with(b"/"), "{loader:?}"),
            other => assert_eq!(other, Program::Direct),
        }
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("t");
        std::fs::write(&text, b"plain").unwrap();
        assert_eq!(classify(&text), Program::Direct);
    }
}
