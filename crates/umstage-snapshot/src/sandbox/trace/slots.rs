//! Each traced thread's scratch slot: a mapping of the tracee's own, made for the supervisor,
//! which writes there what a call is given instead of its own arguments (translated paths,
//! an exec's command line). Nothing the program owns is overwritten: writing below the stack
//! pointer did, on a thread with little stack left.
//!
//! A slot is made by turning the call stopped at its entry into an `mmap` (or an `mremap` that
//! grows the slot), reading the address at its exit stop and rewinding the thread onto its
//! `syscall` instruction, so that the original call runs again and stops again. A fork's child
//! has its copy of its parent's slot (a shell's child then execs with no call injected); a
//! vfork's child borrows its parent's (the parent waits until the child execs or ends; the
//! child never moves the slot), and one it maps itself (its parent had none) goes to its
//! parent then; a new thread gets one a finished thread of its process left,
//! else its own, as does a child sharing memory with its parent otherwise; an exec forgets
//! them all.

use std::collections::HashMap;

use libc::user_regs_struct;
use nix::unistd::Pid;

/// The least a slot holds: every call but an exec with a long command line fits.
const MIN_LEN: u64 = 64 * 1024;

/// The length of the `syscall` instruction (`0f 05`), to rewind over it.
const SYSCALL_LEN: u64 = 2;

/// A thread's slot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Slot {
    pub(super) addr: u64,
    pub(super) len: u64,
    /// The process whose address space holds it.
    tgid: Pid,
    /// That address space's number ([`Spare`]).
    space: u64,
    /// A vfork's child's, which is its parent's: it is not moved.
    borrowed: bool,
}

impl Slot {
    /// The slot as a vfork's child, which shares it with its waiting parent, uses it.
    pub(super) fn borrowed(self) -> Slot {
        Slot {
            borrowed: true,
            ..self
        }
    }

    /// This slot, made by a vfork's child in the memory it shares with its waiting parent,
    /// as the slot of that parent's thread `lender`.
    pub(super) fn handed_back(self, lender: Pid, spare: &mut Spare) -> Slot {
        let tgid = tgid_of(lender);
        Slot {
            tgid,
            space: spare.space(tgid),
            borrowed: false,
            ..self
        }
    }

    /// Whether the thread holding it made it (or was given it), rather than borrowing it.
    pub(super) fn is_own(self) -> bool {
        !self.borrowed
    }

    /// The copy of this slot that fork's child `child` has (see [`copies_memory`]).
    pub(super) fn copied(self, child: Pid, spare: &mut Spare) -> Slot {
        Slot {
            tgid: child,
            space: spare.space(child),
            borrowed: false,
            ..self
        }
    }
}

/// Whether the fork a thread is stopped in (its registers `regs`; `read` reads a word of its
/// memory) gives the child a copy of its memory: a `clone` with `CLONE_VM` and `SIGCHLD` is
/// reported as a fork too, and shares it. Where it cannot tell, no.
pub(super) fn copies_memory(regs: &user_regs_struct, read: impl Fn(u64) -> Option<u64>) -> bool {
    let flags = match regs.orig_rax as i64 {
        libc::SYS_fork => Some(0),
        libc::SYS_clone => Some(regs.rdi),
        // `struct clone_args` starts with its flags.
        libc::SYS_clone3 => read(regs.rdi),
        _ => None,
    };
    flags.is_some_and(|f| f & libc::CLONE_VM as u64 == 0)
}

/// A slot call injected at an entry stop, waiting for its exit stop.
pub(super) struct Injected {
    /// The registers of the call it stands in for.
    saved: user_regs_struct,
    len: u64,
}

/// Turns the call stopped at its entry with `regs` into the one that gives the thread a slot
/// of at least `need` bytes: growing `current` where it is the thread's own, else mapping one.
pub(super) fn inject(regs: &mut user_regs_struct, current: Option<Slot>, need: u64) -> Injected {
    let saved = *regs;
    let len = need.max(MIN_LEN).next_multiple_of(4096);
    match current {
        Some(slot) if !slot.borrowed => {
            regs.orig_rax = libc::SYS_mremap as u64;
            regs.rdi = slot.addr;
            regs.rsi = slot.len;
            regs.rdx = len;
            regs.r10 = libc::MREMAP_MAYMOVE as u64;
        }
        _ => {
            regs.orig_rax = libc::SYS_mmap as u64;
            regs.rdi = 0;
            regs.rsi = len;
            regs.rdx = (libc::PROT_READ | libc::PROT_WRITE) as u64;
            regs.r10 = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
            regs.r8 = u64::MAX;
            regs.r9 = 0;
        }
    }
    Injected { saved, len }
}

/// At the injected call's exit stop (`regs`) in thread `tid`: its new slot (`None` where the
/// mapping failed and the old one stands), and the registers that run the original call again,
/// or, where the mapping failed, make it fail as the mapping did.
pub(super) fn finish(
    tid: Pid,
    injected: Injected,
    regs: &user_regs_struct,
    spare: &mut Spare,
) -> (Option<Slot>, user_regs_struct) {
    let ret = regs.rax as i64;
    let mut back = injected.saved;
    if (-4095..0).contains(&ret) {
        back.rax = ret as u64;
        return (None, back);
    }
    back.rax = back.orig_rax;
    back.rip -= SYSCALL_LEN;
    let tgid = tgid_of(tid);
    let slot = Slot {
        addr: ret as u64,
        len: injected.len,
        tgid,
        space: spare.space(tgid),
        borrowed: false,
    };
    (Some(slot), back)
}

/// The process (thread group) of thread `tid`.
fn tgid_of(tid: Pid) -> Pid {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
        .map_or(tid, Pid::from_raw)
}

/// Slots that finished threads left, per process, for its next new threads: a program that
/// starts and ends threads all along keeps as many slots as it has threads at once. Each
/// process's address space is numbered, so that a slot left after an exec (another thread's
/// death can be reported after its process's exec) or by a gone process of the same number
/// is never given out.
#[derive(Default)]
pub(super) struct Spare {
    spaces: HashMap<Pid, u64>,
    last_space: u64,
    left: HashMap<Pid, Vec<Slot>>,
}

impl Spare {
    /// The number of process `tgid`'s address space.
    fn space(&mut self, tgid: Pid) -> u64 {
        if let Some(space) = self.spaces.get(&tgid) {
            return *space;
        }
        self.last_space += 1;
        self.spaces.insert(tgid, self.last_space);
        self.last_space
    }

    /// A slot for thread `tid`, which has none, left by a finished thread of its process.
    pub(super) fn take(&mut self, tid: Pid) -> Option<Slot> {
        if self.left.is_empty() {
            return None;
        }
        self.left.get_mut(&tgid_of(tid))?.pop()
    }

    /// Thread `tid` ended: its own slot stays in its process for another thread.
    pub(super) fn leave(&mut self, tid: Pid, slot: Slot) {
        if slot.tgid != tid && !slot.borrowed && self.spaces.get(&slot.tgid) == Some(&slot.space) {
            self.left.entry(slot.tgid).or_default().push(slot);
        }
    }

    /// Process `tgid` ended, exec'd or is new: its address space is not the one numbered.
    pub(super) fn forget(&mut self, tgid: Pid) {
        self.left.remove(&tgid);
        self.spaces.remove(&tgid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs() -> user_regs_struct {
        // SAFETY: user_regs_struct is plain data.
        let mut regs: user_regs_struct = unsafe { std::mem::zeroed() };
        regs.orig_rax = libc::SYS_openat as u64;
        regs.rax = (-libc::ENOSYS) as u64;
        regs.rip = 0x1000;
        regs.rsi = 0x7000;
        regs
    }

    #[test]
    fn a_made_slot_runs_the_call_again_and_a_failed_one_fails_it() {
        let mut call = regs();
        let injected = inject(&mut call, None, 10);
        assert_eq!(call.orig_rax, libc::SYS_mmap as u64);
        assert_eq!(call.rsi, MIN_LEN);
        let mut exit = call;
        exit.rax = 0x5000_0000;
        let tid = nix::unistd::getpid();
        let mut spare = Spare::default();
        let (slot, back) = finish(tid, injected, &exit, &mut spare);
        let slot = slot.expect("a slot");
        assert_eq!(
            (slot.addr, slot.len, slot.tgid),
            (0x5000_0000, MIN_LEN, tid)
        );
        assert_eq!((back.rax, back.rip), (libc::SYS_openat as u64, 0x1000 - 2));
        assert_eq!(back.rsi, 0x7000);

        let mut call = regs();
        let injected = inject(&mut call, Some(slot), 3 * MIN_LEN + 1);
        assert_eq!(call.orig_rax, libc::SYS_mremap as u64);
        assert_eq!(
            (call.rdi, call.rsi, call.rdx),
            (slot.addr, MIN_LEN, 3 * MIN_LEN + 4096)
        );
        let mut exit = call;
        exit.rax = (-libc::ENOMEM) as u64;
        let (slot, back) = finish(tid, injected, &exit, &mut spare);
        assert_eq!(slot, None);
        assert_eq!((back.rax, back.rip), ((-libc::ENOMEM) as u64, 0x1000));
    }

    #[test]
    fn only_a_fork_that_copies_memory_gives_the_child_a_copy_of_the_slot() {
        let mut call = regs();
        call.orig_rax = libc::SYS_fork as u64;
        assert!(copies_memory(&call, |_| None));
        call.orig_rax = libc::SYS_clone as u64;
        call.rdi = libc::SIGCHLD as u64;
        assert!(copies_memory(&call, |_| None));
        call.rdi |= libc::CLONE_VM as u64;
        assert!(!copies_memory(&call, |_| None));
        call.orig_rax = libc::SYS_clone3 as u64;
        call.rdi = 0x7000;
        let flags = |f: u64| move |at: u64| (at == 0x7000).then_some(f);
        assert!(copies_memory(&call, flags(0)));
        assert!(!copies_memory(&call, flags(libc::CLONE_VM as u64)));
        assert!(!copies_memory(&call, |_| None));
    }

    #[test]
    fn a_slot_goes_to_the_next_thread_of_its_process_only() {
        let tid = nix::unistd::getpid();
        let mut spare = Spare::default();
        let own = Slot {
            addr: 0x5000_0000,
            len: MIN_LEN,
            tgid: tid,
            space: spare.space(tid),
            borrowed: false,
        };
        let thread = Pid::from_raw(tid.as_raw() + 1);
        let borrowed = own.borrowed();
        // A vfork's child never moves its parent's slot, nor leaves it to others.
        let mut call = regs();
        inject(&mut call, Some(borrowed), 2 * MIN_LEN);
        assert_eq!(call.orig_rax, libc::SYS_mmap as u64);
        spare.leave(thread, borrowed);
        // Nor does a process's own thread leave its slot once the process is gone.
        spare.leave(tid, own);
        assert_eq!(spare.take(tid), None);
        let threads = Slot {
            addr: 0x6000_0000,
            ..own
        };
        spare.leave(thread, threads);
        assert_eq!(spare.take(tid), Some(threads));
        // After an exec, a slot of the old address space is dropped.
        spare.forget(tid);
        spare.space(tid);
        spare.leave(thread, threads);
        assert_eq!(spare.take(tid), None);
    }
}
