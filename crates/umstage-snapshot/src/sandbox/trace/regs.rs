//! A stopped thread's system call arguments, in the registers the x86-64 system call ABI
//! passes them in.

use libc::user_regs_struct;

/// The `i`th argument.
pub(super) fn arg(regs: &user_regs_struct, i: usize) -> u64 {
    match i {
        0 => regs.rdi,
        1 => regs.rsi,
        2 => regs.rdx,
        3 => regs.r10,
        4 => regs.r8,
        _ => regs.r9,
    }
}

/// Sets the `i`th argument.
pub(super) fn set_arg(regs: &mut user_regs_struct, i: usize, value: u64) {
    match i {
        0 => regs.rdi = value,
        1 => regs.rsi = value,
        2 => regs.rdx = value,
        3 => regs.r10 = value,
        4 => regs.r8 = value,
        _ => regs.r9 = value,
    }
}
