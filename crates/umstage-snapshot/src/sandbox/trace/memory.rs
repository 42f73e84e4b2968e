//! A tracee's memory: strings read from it, and new strings written into its thread's scratch
//! slot, a mapping that holds nothing of the program's. Through `/proc/PID/mem`, which its
//! tracer may use: the runtimes' default seccomp profiles refuse `process_vm_readv` and
//! `process_vm_writev`.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use nix::unistd::Pid;

use super::slots::Slot;

/// The most a path may hold, with its NUL.
const PATH_MAX: usize = libc::PATH_MAX as usize;

/// Reads `len` bytes at `addr`.
pub(super) fn read(pid: Pid, addr: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut out = vec![0u8; len];
    let n = File::open(format!("/proc/{pid}/mem"))?.read_at(&mut out, addr)?;
    out.truncate(n);
    Ok(out)
}

/// Reads a NUL-terminated string at `addr` (without its NUL), a page at a time so that no
/// read crosses into an unmapped page.
pub(super) fn read_cstr(pid: Pid, addr: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < PATH_MAX {
        let in_page = 4096 - (at % 4096) as usize;
        let chunk = read(pid, at, in_page)?;
        if chunk.is_empty() {
            return Err(io::Error::from_raw_os_error(libc::EFAULT));
        }
        if let Some(end) = chunk.iter().position(|b| *b == 0) {
            out.extend_from_slice(&chunk[..end]);
            return Ok(out);
        }
        out.extend_from_slice(&chunk);
        at += chunk.len() as u64;
    }
    Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG))
}

/// Writes `bytes` at `addr`.
pub(super) fn write(pid: Pid, addr: u64, bytes: &[u8]) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))?
        .write_all_at(bytes, addr)
}

/// Room in the calling thread's slot ([`super::slots`]) for what one system call is given
/// instead of its own arguments.
pub(super) struct Scratch {
    pid: Pid,
    slot: Option<Slot>,
    /// What the call has been given so far, fitting the slot or not.
    wanted: u64,
}

impl Scratch {
    /// In `slot`, where the thread has one.
    pub(super) fn new(pid: Pid, slot: Option<Slot>) -> Self {
        Scratch {
            pid,
            slot,
            wanted: 0,
        }
    }

    /// Writes `bytes` (16-byte aligned) and returns their address. What does not fit the
    /// slot is only counted (its address is 0): the call then waits for a larger slot
    /// ([`Scratch::short_of`]) and nothing given it is used.
    pub(super) fn put(&mut self, bytes: &[u8]) -> io::Result<u64> {
        let at = self.wanted;
        self.wanted += (bytes.len() as u64).next_multiple_of(16);
        match self.slot {
            Some(slot) if self.wanted <= slot.len => {
                write(self.pid, slot.addr + at, bytes)?;
                Ok(slot.addr + at)
            }
            _ => Ok(0),
        }
    }

    /// The room the call needs where its slot is missing or too small.
    pub(super) fn short_of(&self) -> Option<u64> {
        (self.wanted > self.slot.map_or(0, |s| s.len)).then_some(self.wanted)
    }

    /// Writes `text` with a NUL and returns its address.
    pub(super) fn put_cstr(&mut self, text: &[u8]) -> io::Result<u64> {
        let mut bytes = Vec::with_capacity(text.len() + 1);
        bytes.extend_from_slice(text);
        bytes.push(0);
        self.put(&bytes)
    }
}
