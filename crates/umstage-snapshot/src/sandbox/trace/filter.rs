//! The step's seccomp filter: the calls the supervisor must see stop for it
//! (`SECCOMP_RET_TRACE`), the ones that would bypass it fail, and every other call runs at
//! full speed without a stop.

use super::super::failure::HelperError;

/// `AUDIT_ARCH_X86_64`: a call made under another ABI (32-bit `int 0x80`) could name paths
/// the supervisor does not decode, so it fails.
const AUDIT_ARCH: u32 = 0xc000_003e;

/// x32 calls have this bit in their number.
const X32_BIT: u32 = 0x4000_0000;

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

/// Skips the next instruction unless the accumulator is `k`.
fn jeq_next(k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt: 0,
        jf: 1,
        k,
    }
}

fn ret(k: u32) -> libc::sock_filter {
    stmt(libc::BPF_RET | libc::BPF_K, k)
}

/// `sendto`'s address argument: only a call that names one stops (every `send` is a
/// `sendto` without).
const SENDTO_ADDR: u32 = 4;

/// Call `nr` stops when its argument `arg` is not zero, and runs otherwise.
fn trace_with_arg(nr: i64, arg: u32) -> [libc::sock_filter; 7] {
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    // seccomp_data: the arguments from offset 16, 8 bytes each (low word first).
    let low = 16 + 8 * arg;
    let zero_or = |to_trace: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt: 0,
        jf: to_trace,
        k: 0,
    };
    [
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 6,
            k: nr as u32,
        },
        stmt(load, low),
        zero_or(3),
        stmt(load, low + 4),
        zero_or(1),
        ret(libc::SECCOMP_RET_ALLOW),
        ret(libc::SECCOMP_RET_TRACE),
    ]
}

/// The program: one comparison and return per call.
pub(super) fn program() -> Vec<libc::sock_filter> {
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    // seccomp_data: nr at 0, arch at 4.
    let mut prog = vec![
        stmt(load, 4),
        jeq_next(AUDIT_ARCH),
        stmt(libc::BPF_JMP | libc::BPF_JA, 1),
    ];
    prog.push(ret(enosys));
    prog.push(stmt(load, 0));
    prog.push(libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16,
        jt: 0,
        jf: 1,
        k: X32_BIT,
    });
    prog.push(ret(enosys));
    for nr in super::syscalls::traced() {
        if nr == libc::SYS_sendto {
            prog.extend(trace_with_arg(nr, SENDTO_ADDR));
            continue;
        }
        if nr == libc::SYS_ioctl {
            continue;
        }
        prog.push(jeq_next(nr as u32));
        prog.push(ret(libc::SECCOMP_RET_TRACE));
    }
    // ioctl stops only for the requests that change an inode through any descriptor: the
    // others (a terminal's) are many and change no file. seccomp_data: args[1] at 24.
    prog.push(libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt: 0,
        jf: 6,
        k: libc::SYS_ioctl as u32,
    });
    prog.push(stmt(load, 24));
    prog.push(jeq_next(super::copyup::FS_IOC_SETFLAGS));
    prog.push(ret(libc::SECCOMP_RET_TRACE));
    prog.push(jeq_next(super::copyup::FS_IOC_FSSETXATTR));
    prog.push(ret(libc::SECCOMP_RET_TRACE));
    prog.push(ret(libc::SECCOMP_RET_ALLOW));
    for (nr, errno) in super::syscalls::REFUSED {
        prog.push(jeq_next(nr as u32));
        prog.push(ret(libc::SECCOMP_RET_ERRNO | errno as u32));
    }
    prog.push(ret(libc::SECCOMP_RET_ALLOW));
    prog
}

/// Installs the filter on the calling thread (no-new-privileges must be set).
pub(super) fn install() -> Result<(), HelperError> {
    super::super::seccomp::load(&mut program(), 0)
        .map_err(|e| HelperError::during("installing the step's seccomp filter", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_checks_the_abi_then_returns_per_call_and_allows_the_rest() {
        let prog = program();
        let calls = super::super::syscalls::traced().len() + super::super::syscalls::REFUSED.len();
        // sendto's block has five more instructions, and so has ioctl's.
        assert_eq!(prog.len(), 7 + 2 * calls + 5 + 5 + 1);
        assert!(prog.len() < 4096);
        assert_eq!(prog[prog.len() - 1].k, libc::SECCOMP_RET_ALLOW);
        assert_eq!(prog[8].k, libc::SECCOMP_RET_TRACE);
    }

    #[test]
    fn sendto_stops_only_when_its_address_argument_is_set() {
        let prog = program();
        let at = prog
            .iter()
            .position(|i| i.k == libc::SYS_sendto as u32)
            .unwrap_or(prog.len());
        let block = &prog[at..at + 7];
        // Another call skips the block; either word of args[4] set jumps to the stop.
        assert_eq!((block[0].jt, block[0].jf), (0, 6));
        assert_eq!((block[1].k, block[3].k), (48, 52));
        assert_eq!(
            (block[2].k, block[2].jf, block[4].k, block[4].jf),
            (0, 3, 0, 1)
        );
        assert_eq!(block[5].k, libc::SECCOMP_RET_ALLOW);
        assert_eq!(block[6].k, libc::SECCOMP_RET_TRACE);
    }
}
