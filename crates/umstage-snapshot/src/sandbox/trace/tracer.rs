//! The supervisor's loop: one thread waiting on every process of the step (`__WALL`), each
//! traced from its fork on, answering the seccomp stops of the calls the filter sends and
//! finishing rewritten calls at their exit stops. Signals pass through untouched.
//!
//! A new process or thread inherits from its creator (the played user, the scratch slot),
//! which the creator's fork event says. The kernel may report the child's first stop before
//! that event (`waitpid` looks at the newest tracee first): the child then waits, stopped,
//! for the event. Let run, it could exec before the event is seen, and a vfork's child would
//! then be given its parent's slot in an address space where that address is not mapped.

use std::collections::HashMap;

use nix::errno::Errno;
use nix::sys::ptrace::{self, Event, Options};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::super::ExitStatus;
use super::super::identity::Identity;
use super::calls::{Entry, Pending};
use super::context::Context;
use super::slots::{self, Injected, Slot, Spare};

/// Where a tracee is in its start.
#[derive(Clone, Copy, PartialEq)]
enum Start {
    /// Announced by its creator's fork event: its first stop (the SIGSTOP every traced child
    /// starts with) is still to come.
    Announced,
    /// Stopped at its first stop before its creator's fork event was seen: it waits for that
    /// event, or for `creator` (the process it would come from) to end or exec, after which
    /// it cannot come.
    Held {
        creator: Pid,
    },
    Running,
}

/// One traced process.
struct Tracee {
    start: Start,
    /// A rewritten call waiting for its exit stop.
    pending: Option<Box<Pending>>,
    /// The user it is played as.
    who: Identity,
    /// The guest path of the dynamic program it runs (the kernel sees the loader).
    exe: Option<Vec<u8>>,
    /// Its scratch slot, once it has needed one.
    slot: Option<Slot>,
    /// The call that makes its slot, waiting for its exit stop.
    injected: Option<Injected>,
    /// A vfork's child sharing its waiting parent's memory: that parent thread, which a slot
    /// this child maps (in that memory) goes to when the child execs or ends.
    lender: Option<Pid>,
}

impl Tracee {
    fn new((who, exe): (Identity, Option<Vec<u8>>)) -> Self {
        Tracee {
            start: Start::Announced,
            pending: None,
            who,
            exe,
            slot: None,
            injected: None,
            lender: None,
        }
    }
}

/// The tracee `pid`, met now if it was not yet.
fn tracee_of<'a>(
    tracees: &'a mut HashMap<Pid, Tracee>,
    spare: &mut Spare,
    pid: Pid,
    ctx: &Context,
) -> &'a mut Tracee {
    if !tracees.contains_key(&pid) {
        // Slots a gone process of this number left are not this one's.
        spare.forget(pid);
        let played = inherited(pid, tracees, ctx);
        tracees.insert(pid, Tracee::new(played));
    }
    tracees
        .entry(pid)
        .or_insert_with(|| Tracee::new((ctx.who, None)))
}

/// The user a process the supervisor has not met yet is played as: its creator's, else the
/// step's.
fn inherited(
    pid: Pid,
    tracees: &HashMap<Pid, Tracee>,
    ctx: &Context,
) -> (Identity, Option<Vec<u8>>) {
    match creator_of(pid, tracees) {
        Some(creator) => played_by(tracees, creator, ctx),
        None => (ctx.who, None),
    }
}

/// The user tracee `pid` is played as, and the program it runs.
fn played_by(
    tracees: &HashMap<Pid, Tracee>,
    pid: Pid,
    ctx: &Context,
) -> (Identity, Option<Vec<u8>>) {
    tracees
        .get(&pid)
        .map_or((ctx.who, None), |t| (t.who, t.exe.clone()))
}

/// The traced process that created `pid`, which the supervisor has not met yet: its thread
/// group's leader for a thread, else its parent. `None` where that process is gone (the
/// child of a process that died has been given to the step's reaper).
fn creator_of(pid: Pid, tracees: &HashMap<Pid, Tracee>) -> Option<Pid> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    ["Tgid:", "PPid:"]
        .iter()
        .filter_map(|key| {
            let line = status.lines().find(|l| l.starts_with(key))?;
            line[key.len()..].trim().parse::<i32>().ok()
        })
        .map(Pid::from_raw)
        .find(|p| *p != pid)
        .filter(|p| tracees.contains_key(p))
}

/// Supervises the step whose main process `child` has stopped itself, traced, before setting
/// its filter and exec'ing; returns how `child` ended, once every process of the step is gone.
pub(super) fn run(ctx: &Context, child: Pid) -> Result<ExitStatus, Errno> {
    loop {
        match waitpid(child, Some(WaitPidFlag::__WALL))? {
            WaitStatus::Stopped(_, Signal::SIGSTOP) => break,
            WaitStatus::Exited(_, code) => return Ok(ExitStatus::Code(code)),
            WaitStatus::Signaled(_, signal, _) => return Ok(ExitStatus::Signal(signal as i32)),
            _ => {}
        }
    }
    ptrace::setoptions(
        child,
        Options::PTRACE_O_TRACESYSGOOD
            | Options::PTRACE_O_TRACESECCOMP
            | Options::PTRACE_O_TRACEFORK
            | Options::PTRACE_O_TRACEVFORK
            | Options::PTRACE_O_TRACECLONE
            | Options::PTRACE_O_TRACEEXEC
            | Options::PTRACE_O_EXITKILL,
    )?;
    ptrace::cont(child, None)?;
    let mut first = Tracee::new((ctx.who, None));
    first.start = Start::Running;
    let mut tracees: HashMap<Pid, Tracee> = HashMap::from([(child, first)]);
    let mut spare = Spare::default();
    let mut ended = None;
    loop {
        let status = match waitpid(None, Some(WaitPidFlag::__WALL)) {
            Ok(status) => status,
            Err(Errno::EINTR) => continue,
            Err(Errno::ECHILD) => break,
            Err(e) => return Err(e),
        };
        // A process the step started as it ended goes too.
        if ended.is_some()
            && let Some(pid) = status.pid()
        {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        }
        match status {
            WaitStatus::Exited(pid, code) => {
                gone(&mut tracees, &mut spare, pid);
                release(&mut tracees, pid);
                if pid == child {
                    ended = Some(ExitStatus::Code(code));
                    end_all(child, &tracees);
                }
            }
            WaitStatus::Signaled(pid, signal, _) => {
                gone(&mut tracees, &mut spare, pid);
                release(&mut tracees, pid);
                if pid == child {
                    ended = Some(ExitStatus::Signal(signal as i32));
                    end_all(child, &tracees);
                }
            }
            WaitStatus::PtraceEvent(pid, _, event) => {
                let tracee = tracee_of(&mut tracees, &mut spare, pid, ctx);
                let resume = if event == Event::PTRACE_EVENT_SECCOMP as i32 {
                    seccomp_stop(ctx, pid, tracee, &mut spare)
                } else {
                    if event == Event::PTRACE_EVENT_EXEC as i32 {
                        // The exec succeeded: its registers are the new program's, its
                        // address space new.
                        tracee.exe = tracee.pending.take().and_then(|p| p.into_exe());
                        let lent = tracee.lender.take().zip(tracee.slot.take());
                        spare.forget(pid);
                        hand_back(&mut tracees, &mut spare, lent);
                        release(&mut tracees, pid);
                    } else if let Ok(new) = ptrace::getevent(pid)
                        && [
                            Event::PTRACE_EVENT_FORK,
                            Event::PTRACE_EVENT_VFORK,
                            Event::PTRACE_EVENT_CLONE,
                        ]
                        .iter()
                        .any(|e| *e as i32 == event)
                    {
                        born(
                            &mut tracees,
                            &mut spare,
                            pid,
                            event,
                            Pid::from_raw(new as i32),
                        );
                    }
                    Resume::Cont
                };
                resume_with(pid, resume, None);
            }
            WaitStatus::PtraceSyscall(pid) => {
                let tracee = tracee_of(&mut tracees, &mut spare, pid, ctx);
                if let Some(injected) = tracee.injected.take() {
                    if let Ok(regs) = ptrace::getregs(pid) {
                        let (slot, back) = slots::finish(pid, injected, &regs, &mut spare);
                        tracee.slot = slot.or(tracee.slot);
                        let _ = ptrace::setregs(pid, back);
                    }
                } else if let Some(pending) = tracee.pending.take()
                    && let Ok(mut regs) = ptrace::getregs(pid)
                {
                    ctx.exit(pid, &mut regs, pending);
                    let _ = ptrace::setregs(pid, regs);
                }
                resume_with(pid, Resume::Cont, None);
            }
            WaitStatus::Stopped(pid, signal) => {
                if signal == Signal::SIGSTOP
                    && !tracees.contains_key(&pid)
                    && let Some(creator) = creator_of(pid, &tracees)
                {
                    // Its first stop, before its creator's fork event: it waits for it.
                    spare.forget(pid);
                    let mut held = Tracee::new(played_by(&tracees, creator, ctx));
                    held.start = Start::Held { creator };
                    tracees.insert(pid, held);
                    continue;
                }
                let tracee = tracee_of(&mut tracees, &mut spare, pid, ctx);
                let inject = if signal == Signal::SIGSTOP && tracee.start == Start::Announced {
                    tracee.start = Start::Running;
                    None
                } else if is_group_stop(pid, signal) {
                    None
                } else {
                    Some(signal)
                };
                resume_with(pid, Resume::Cont, inject);
            }
            _ => {}
        }
    }
    Ok(ended.unwrap_or(ExitStatus::Signal(Signal::SIGKILL as i32)))
}

/// How a stopped tracee goes on.
enum Resume {
    /// To its next seccomp stop.
    Cont,
    /// To the exit stop of the call it is in.
    Syscall,
}

fn resume_with(pid: Pid, how: Resume, signal: Option<Signal>) {
    // A tracee killed meanwhile (ESRCH) needs nothing more.
    let _ = match how {
        Resume::Cont => ptrace::cont(pid, signal),
        Resume::Syscall => ptrace::syscall(pid, signal),
    };
}

/// Thread `parent` reported (fork event `event`) its new child `new`, which inherits its
/// played user and its slot: a vfork's child borrows it, a fork's child that copies memory
/// has its copy, any other (a new thread, a child sharing memory) makes its own. A child
/// held at its first stop goes on now; one that runs already keeps what it has.
fn born(tracees: &mut HashMap<Pid, Tracee>, spare: &mut Spare, parent: Pid, event: i32, new: Pid) {
    let Some(creator) = tracees.get(&parent) else {
        return;
    };
    let (played, slot) = ((creator.who, creator.exe.clone()), creator.slot);
    let start = tracees.get(&new).map(|t| t.start);
    if start.is_none() {
        spare.forget(new);
    }
    let vfork = event == Event::PTRACE_EVENT_VFORK as i32;
    let lender = (vfork && !copies_memory(parent)).then_some(parent);
    let slot = match slot {
        Some(slot) if vfork => Some(slot.borrowed()),
        Some(slot) if event == Event::PTRACE_EVENT_FORK as i32 && copies_memory(parent) => {
            Some(slot.copied(new, spare))
        }
        _ => None,
    };
    match start {
        None => {
            let mut child = Tracee::new(played);
            child.slot = slot;
            child.lender = lender;
            tracees.insert(new, child);
        }
        Some(Start::Held { .. }) => {
            let mut child = Tracee::new(played);
            child.slot = slot;
            child.lender = lender;
            child.start = Start::Running;
            tracees.insert(new, child);
            resume_with(new, Resume::Cont, None);
        }
        Some(Start::Announced | Start::Running) => {}
    }
}

/// Process `creator` ended or exec'd: the children held for its fork events go on, with what
/// they inherited when they were met.
fn release(tracees: &mut HashMap<Pid, Tracee>, creator: Pid) {
    for (pid, tracee) in tracees.iter_mut() {
        if tracee.start == (Start::Held { creator }) {
            tracee.start = Start::Running;
            resume_with(*pid, Resume::Cont, None);
        }
    }
}

/// Whether the fork thread `pid` is stopped in copies its memory ([`slots::copies_memory`]).
fn copies_memory(pid: Pid) -> bool {
    ptrace::getregs(pid).is_ok_and(|regs| {
        slots::copies_memory(&regs, |at| {
            let word = super::memory::read(pid, at, 8).ok()?;
            Some(u64::from_ne_bytes(word.try_into().ok()?))
        })
    })
}

/// A process or thread ended: a thread's slot stays for its process's next thread.
fn gone(tracees: &mut HashMap<Pid, Tracee>, spare: &mut Spare, pid: Pid) {
    if let Some(tracee) = tracees.remove(&pid) {
        match (tracee.lender, tracee.slot) {
            (Some(lender), Some(slot)) => hand_back(tracees, spare, Some((lender, slot))),
            (None, Some(slot)) => spare.leave(pid, slot),
            (_, None) => {}
        }
    }
    spare.forget(pid);
}

/// A vfork's child execs or ends: a slot it mapped itself, in the memory it shared with its
/// parent, becomes its parent thread's where that has none, instead of staying there unused
/// (64 KiB per process a thread with no slot starts).
fn hand_back(tracees: &mut HashMap<Pid, Tracee>, spare: &mut Spare, lent: Option<(Pid, Slot)>) {
    if let Some((lender, slot)) = lent
        && slot.is_own()
        && let Some(parent) = tracees.get_mut(&lender)
        && parent.slot.is_none()
    {
        parent.slot = Some(slot.handed_back(lender, spare));
    }
}

/// Handles a call's seccomp stop.
fn seccomp_stop(ctx: &Context, pid: Pid, tracee: &mut Tracee, spare: &mut Spare) -> Resume {
    let Ok(mut regs) = ptrace::getregs(pid) else {
        return Resume::Cont;
    };
    let mut entry = ctx.enter(
        pid,
        &mut regs,
        &mut tracee.who,
        tracee.exe.as_deref(),
        tracee.slot,
    );
    if matches!(entry, Entry::Scratch(_))
        && tracee.slot.is_none()
        && let Some(slot) = spare.take(pid)
    {
        tracee.slot = Some(slot);
        entry = ctx.enter(
            pid,
            &mut regs,
            &mut tracee.who,
            tracee.exe.as_deref(),
            tracee.slot,
        );
    }
    match entry {
        Entry::Pass => Resume::Cont,
        Entry::Scratch(need) => {
            let slot = tracee.slot;
            let injected = slots::inject(&mut regs, slot, need);
            if ptrace::setregs(pid, regs).is_err() {
                return Resume::Cont;
            }
            tracee.injected = Some(injected);
            Resume::Syscall
        }
        Entry::Skip(value) => {
            // Number -1 skips the call; the return register keeps what is set here.
            regs.orig_rax = u64::MAX;
            regs.rax = value as u64;
            let _ = ptrace::setregs(pid, regs);
            Resume::Cont
        }
        Entry::Rewritten(pending) => {
            if ptrace::setregs(pid, regs).is_err() {
                return Resume::Cont;
            }
            tracee.pending = Some(pending);
            Resume::Syscall
        }
    }
}

/// A stop signal's group-stop (no signal to deliver) rather than its delivery.
fn is_group_stop(pid: Pid, signal: Signal) -> bool {
    matches!(
        signal,
        Signal::SIGSTOP | Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU
    ) && ptrace::getsiginfo(pid) == Err(Errno::EINVAL)
}

/// The step's main process ended: every other process of the step ends too.
fn end_all(child: Pid, tracees: &HashMap<Pid, Tracee>) {
    let _ = nix::sys::signal::killpg(child, Signal::SIGKILL);
    for pid in tracees.keys() {
        let _ = nix::sys::signal::kill(*pid, Signal::SIGKILL);
    }
}
