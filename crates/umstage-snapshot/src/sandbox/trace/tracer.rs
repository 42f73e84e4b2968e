//! The supervisor's loop: one thread waiting on every process of the step (`__WALL`), each
//! traced from its fork on, answering the seccomp stops of the calls the filter sends and
//! finishing rewritten calls at their exit stops. Signals pass through untouched.

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

/// One traced process.
struct Tracee {
    /// Its first stop (the SIGSTOP every traced child starts with) is still to come.
    starting: bool,
    /// A rewritten call waiting for its exit stop.
    pending: Option<Box<Pending>>,
    /// The user it is played as.
    who: Identity,
    /// The guest path of the dynamic program it runs (the kernel sees the loader).
    exe: Option<Vec<u8>>,
}

impl Tracee {
    fn new((who, exe): (Identity, Option<Vec<u8>>)) -> Self {
        Tracee {
            starting: true,
            pending: None,
            who,
            exe,
        }
    }
}

/// The tracee `pid`, met now if it was not yet.
fn tracee_of<'a>(tracees: &'a mut HashMap<Pid, Tracee>, pid: Pid, ctx: &Context) -> &'a mut Tracee {
    if !tracees.contains_key(&pid) {
        let played = inherited(pid, tracees, ctx);
        tracees.insert(pid, Tracee::new(played));
    }
    tracees
        .entry(pid)
        .or_insert_with(|| Tracee::new((ctx.who, None)))
}

/// The user a process the supervisor has not met yet is played as: its thread group's, or
/// its parent's (a fork's child can stop before its parent's fork event is seen).
fn inherited(
    pid: Pid,
    tracees: &HashMap<Pid, Tracee>,
    ctx: &Context,
) -> (Identity, Option<Vec<u8>>) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    ["Tgid:", "PPid:"]
        .iter()
        .filter_map(|key| {
            let line = status.lines().find(|l| l.starts_with(key))?;
            line[key.len()..].trim().parse::<i32>().ok()
        })
        .map(Pid::from_raw)
        .filter(|p| *p != pid)
        .find_map(|p| tracees.get(&p).map(|t| (t.who, t.exe.clone())))
        .unwrap_or((ctx.who, None))
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
    first.starting = false;
    let mut tracees: HashMap<Pid, Tracee> = HashMap::from([(child, first)]);
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
                tracees.remove(&pid);
                if pid == child {
                    ended = Some(ExitStatus::Code(code));
                    end_all(child, &tracees);
                }
            }
            WaitStatus::Signaled(pid, signal, _) => {
                tracees.remove(&pid);
                if pid == child {
                    ended = Some(ExitStatus::Signal(signal as i32));
                    end_all(child, &tracees);
                }
            }
            WaitStatus::PtraceEvent(pid, _, event) => {
                let tracee = tracee_of(&mut tracees, pid, ctx);
                let resume = if event == Event::PTRACE_EVENT_SECCOMP as i32 {
                    seccomp_stop(ctx, pid, tracee)
                } else {
                    if event == Event::PTRACE_EVENT_EXEC as i32 {
                        // The exec succeeded: its registers are the new program's.
                        tracee.exe = tracee.pending.take().and_then(|p| p.into_exe());
                    }
                    let played = (tracee.who, tracee.exe.clone());
                    if let Ok(new) = ptrace::getevent(pid)
                        && [
                            Event::PTRACE_EVENT_FORK,
                            Event::PTRACE_EVENT_VFORK,
                            Event::PTRACE_EVENT_CLONE,
                        ]
                        .iter()
                        .any(|e| *e as i32 == event)
                    {
                        tracees
                            .entry(Pid::from_raw(new as i32))
                            .or_insert_with(|| Tracee::new(played));
                    }
                    Resume::Cont
                };
                resume_with(pid, resume, None);
            }
            WaitStatus::PtraceSyscall(pid) => {
                let tracee = tracee_of(&mut tracees, pid, ctx);
                if let Some(pending) = tracee.pending.take()
                    && let Ok(mut regs) = ptrace::getregs(pid)
                {
                    ctx.exit(pid, &mut regs, pending);
                    let _ = ptrace::setregs(pid, regs);
                }
                resume_with(pid, Resume::Cont, None);
            }
            WaitStatus::Stopped(pid, signal) => {
                let tracee = tracee_of(&mut tracees, pid, ctx);
                let inject = if signal == Signal::SIGSTOP && tracee.starting {
                    tracee.starting = false;
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

/// Handles a call's seccomp stop.
fn seccomp_stop(ctx: &Context, pid: Pid, tracee: &mut Tracee) -> Resume {
    let Ok(mut regs) = ptrace::getregs(pid) else {
        return Resume::Cont;
    };
    match ctx.enter(pid, &mut regs, &mut tracee.who, tracee.exe.as_deref()) {
        Entry::Pass => Resume::Cont,
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
