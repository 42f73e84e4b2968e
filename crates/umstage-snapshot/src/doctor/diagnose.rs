//! From facts to findings: each restriction named, the tier a build will use, and for each
//! better tier the exact changes that would make it available.

use serde::Serialize;

use super::facts::{Facts, Landlock, MapTool};
use super::status::{Seccomp, cap};
use super::tier::Tier;
use super::trial::{Trial, errno_name};

/// How a finding bears on the build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Nothing in the way.
    Ok,
    /// Worth knowing; no tier depends on it.
    Note,
    /// Keeps a tier out of reach (see [`Finding::blocks`]) or makes the build slower.
    Limits,
}

/// One restriction (or its absence), in words, with the change that lifts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What was looked at, e.g. `seccomp`.
    pub topic: &'static str,
    /// How it bears on the build.
    pub level: Level,
    /// What was found, one line.
    pub text: String,
    /// The change that lifts it: pod spec fields, a sysctl, a command.
    pub fix: Option<String>,
    /// The tier it keeps out of reach (see [`keeps_out`]): fixing it and the other findings
    /// that keep that tier out makes it available.
    pub blocks: Option<Tier>,
}

/// A better tier than the one chosen, and what it takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Upgrade {
    /// The tier.
    pub tier: Tier,
    /// Every fix it needs.
    pub fixes: Vec<String>,
}

/// What `umstage doctor` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnosis {
    /// Every restriction looked at, in a fixed order.
    pub findings: Vec<Finding>,
    /// The tier a build will use, if any can run `RUN` steps here.
    pub tier: Option<Tier>,
    /// Why that tier (or why none), one line.
    pub reason: String,
    /// Better tiers and their fixes, best first.
    pub upgrades: Vec<Upgrade>,
}

impl Diagnosis {
    /// Why the steps of the tiers without a namespace are not confined by Landlock, if they
    /// are not: `not confined by Landlock: …`.
    pub fn unconfined(&self) -> Option<&str> {
        unconfined(&self.findings)
    }

    /// The findings that keep `tier` out of reach, as `text (fix: …)`, joined by `; `.
    pub fn blockers_of(&self, tier: Tier) -> String {
        self.findings
            .iter()
            .filter(|f| f.blocks.is_some_and(|b| keeps_out(b, tier)))
            .map(|f| match &f.fix {
                Some(fix) => format!("{} (fix: {fix})", f.text),
                None => f.text.clone(),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The fix that lets unshare through a runtime's default seccomp profile.
const SECCOMP_FIX: &str = "pod: securityContext.seccompProfile.type: Unconfined, or a Localhost profile allowing unshare and clone with CLONE_NEWUSER (docker run --security-opt seccomp=unconfined)";
/// The fix for AppArmor's docker-default profile, which denies mount.
const APPARMOR_FIX: &str = "pod: securityContext.appArmorProfile.type: Unconfined (docker run --security-opt apparmor=unconfined)";

/// Judges the facts.
pub fn diagnose(facts: &Facts) -> Diagnosis {
    let mut findings = Vec::new();
    namespace_findings(facts, &mut findings);
    mapping_findings(facts, &mut findings);
    environment_findings(facts, &mut findings);
    landlock_finding(facts, &mut findings);
    let tier = choose(facts);
    let reason = reason(facts, tier, &findings);
    let upgrades = Tier::ALL
        .into_iter()
        .filter(|t| tier.is_none_or(|chosen| *t < chosen))
        .map(|t| Upgrade {
            tier: t,
            fixes: findings
                .iter()
                .filter(|f| f.blocks.is_some_and(|b| keeps_out(b, t)))
                .filter_map(|f| f.fix.clone())
                .collect(),
        })
        .collect();
    Diagnosis {
        findings,
        tier,
        reason,
        upgrades,
    }
}

/// Whether a finding that blocks `blocker` keeps `tier` out too: what stops a user namespace
/// stops both namespace tiers; the others stop only their own.
pub fn keeps_out(blocker: Tier, tier: Tier) -> bool {
    blocker == tier || (blocker == Tier::UsernsSingle && tier == Tier::Userns)
}

/// Root with the capabilities a chrooted step needs to be root in it.
fn chroot_possible(facts: &Facts) -> bool {
    let caps = facts.status.effective;
    facts.uid == 0
        && [cap::SYS_CHROOT, cap::CHOWN, cap::SETUID, cap::SETGID]
            .into_iter()
            .all(|c| caps.has(c))
}

/// Whether the ptrace supervisor is built for this architecture (it rewrites x86-64 system
/// calls; a runtime's default seccomp profile allows ptrace on Linux 4.8 and later).
fn ptrace_possible() -> bool {
    cfg!(target_arch = "x86_64")
}

fn choose(facts: &Facts) -> Option<Tier> {
    if facts.trial != Trial::Works && facts.trial != Trial::NotRun {
        if chroot_possible(facts) {
            return Some(Tier::Chroot);
        }
        // Only a refused unshare falls back here: a namespace that is made but may not mount
        // fails inside it, past the point where a build can change its tier.
        let refused = matches!(facts.trial, Trial::Unshare(_));
        return (refused && ptrace_possible()).then_some(Tier::Ptrace);
    }
    if facts.uid == 0 || subordinate_usable(facts) {
        Some(Tier::Userns)
    } else {
        Some(Tier::UsernsSingle)
    }
}

/// Whether `newuidmap` and `newgidmap` can map the caller's ranges.
fn subordinate_usable(facts: &Facts) -> bool {
    !facts.subuid.is_empty()
        && !facts.subgid.is_empty()
        && tool_blocker(facts, &facts.newuidmap, cap::SETUID).is_none()
        && tool_blocker(facts, &facts.newgidmap, cap::SETGID).is_none()
}

/// Why a map tool cannot raise the capability it needs, as a finding's text and fix.
fn tool_blocker(facts: &Facts, tool: &MapTool, needs: u32) -> Option<(String, String)> {
    let cap_name = if needs == cap::SETUID {
        "CAP_SETUID"
    } else {
        "CAP_SETGID"
    };
    let path = match tool {
        MapTool::Missing => {
            return Some((
                "newuidmap/newgidmap not found".into(),
                "install the uidmap package (shadow-utils on Fedora) in the image".into(),
            ));
        }
        MapTool::Plain(path) => {
            return Some((
                format!(
                    "{} is neither setuid root nor given file capabilities",
                    path.display()
                ),
                format!(
                    "chmod u+s {} (or setcap cap_setuid,cap_setgid+ep)",
                    path.display()
                ),
            ));
        }
        MapTool::SetuidRoot(path) | MapTool::FileCaps(path) => path,
    };
    if facts.status.no_new_privs {
        return Some((
            format!("no-new-privileges is set, so {}'s setuid bit or file capabilities give it nothing", path.display()),
            "pod: securityContext.allowPrivilegeEscalation: true (docker: leave out --security-opt no-new-privileges)".into(),
        ));
    }
    if !facts.status.bounding.has(needs) {
        return Some((
            format!(
                "{cap_name} is not in the capability bounding set, so {} cannot raise it",
                path.display()
            ),
            format!(
                "pod: do not drop {} in securityContext.capabilities (docker: no --cap-drop of it)",
                &cap_name[4..]
            ),
        ));
    }
    // The kernel lets a map be written only by an opener with CAP_SYS_ADMIN over the new
    // namespace: its owner (the caller's uid) has it, root outside it only with CAP_SYS_ADMIN,
    // which containers drop. A setuid-root tool is root; a tool with file capabilities keeps
    // the caller's uid.
    if matches!(tool, MapTool::SetuidRoot(_))
        && facts.uid != 0
        && !facts.status.bounding.has(cap::SYS_ADMIN)
    {
        let file_cap = if needs == cap::SETUID {
            "cap_setuid"
        } else {
            "cap_setgid"
        };
        return Some((
            format!(
                "{} is setuid root, and without CAP_SYS_ADMIN (dropped, as containers drop it) the kernel refuses an id map written by root for a namespace it does not own",
                path.display()
            ),
            format!(
                "in the image, give it file capabilities instead of the setuid bit: chmod u-s {p} && setcap {file_cap}+ep {p}",
                p = path.display()
            ),
        ));
    }
    None
}

fn push(
    out: &mut Vec<Finding>,
    topic: &'static str,
    level: Level,
    text: String,
    fix: Option<&str>,
    blocks: Option<Tier>,
) {
    out.push(Finding {
        topic,
        level,
        text,
        fix: fix.map(str::to_string),
        blocks,
    });
}

fn namespace_findings(facts: &Facts, out: &mut Vec<Finding>) {
    let refused = matches!(facts.trial, Trial::Unshare(_));
    let all = Some(Tier::UsernsSingle);
    let sys_admin = facts.status.effective.has(cap::SYS_ADMIN);
    match facts.status.seccomp {
        Seccomp::Filter if refused && !sys_admin => push(
            out,
            "seccomp",
            Level::Limits,
            "a seccomp filter (Seccomp: 2) refuses unshare(CLONE_NEWUSER) without CAP_SYS_ADMIN, as the default profiles of Docker, containerd and CRI-O do".into(),
            Some(SECCOMP_FIX),
            all,
        ),
        Seccomp::Filter => push(out, "seccomp", Level::Note, "a seccomp filter is in place (Seccomp: 2)".into(), None, None),
        Seccomp::Strict => push(out, "seccomp", Level::Limits, "seccomp strict mode: almost no system call is allowed".into(), Some(SECCOMP_FIX), all),
        Seccomp::Disabled => push(out, "seccomp", Level::Ok, "no seccomp filter".into(), None, None),
        Seccomp::Unknown => push(out, "seccomp", Level::Note, "the kernel does not report a seccomp mode".into(), None, None),
    }
    let caps = facts.status.effective.names();
    let caps_text = if caps.is_empty() {
        "none".to_string()
    } else {
        caps.join(" ")
    };
    push(
        out,
        "capabilities",
        Level::Note,
        format!("uid {}, effective capabilities: {caps_text}", facts.uid),
        None,
        None,
    );
    if facts.max_user_namespaces == Some(0) {
        push(
            out,
            "max_user_namespaces",
            Level::Limits,
            "user.max_user_namespaces is 0: no user namespace can be made".into(),
            Some("on the node: sysctl -w user.max_user_namespaces=28633"),
            all,
        );
    }
    if facts.unprivileged_userns_clone == Some(false) && facts.uid != 0 {
        push(out, "unprivileged_userns_clone", Level::Limits, "kernel.unprivileged_userns_clone is 0: only privileged processes may make user namespaces".into(), Some("on the node: sysctl -w kernel.unprivileged_userns_clone=1"), all);
    }
    if facts.apparmor_restricts_userns == Some(true) && facts.uid != 0 {
        push(out, "apparmor_restrict_unprivileged_userns", Level::Limits, "kernel.apparmor_restrict_unprivileged_userns is 1: AppArmor denies unprivileged user namespaces to unconfined programs".into(), Some("on the node: sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor profile with `userns,` for umstage"), all);
    }
    let (level, text, fix, blocks) = match facts.trial {
        Trial::Works => (
            Level::Ok,
            "a user namespace with a mount in it works".to_string(),
            None,
            None,
        ),
        Trial::NotRun => (
            Level::Note,
            "the user namespace trial could not run".to_string(),
            None,
            None,
        ),
        Trial::Unshare(e) => (
            Level::Limits,
            format!("unshare(CLONE_NEWUSER) fails: {}", errno_name(e)),
            None,
            all,
        ),
        Trial::Map(e) => (
            Level::Limits,
            format!(
                "writing a single-id map in a new user namespace fails: {}",
                errno_name(e)
            ),
            None,
            all,
        ),
        Trial::Mount(e) => (
            Level::Limits,
            format!(
                "a user namespace works but mounting in it fails: {} (AppArmor's docker-default profile denies mount)",
                errno_name(e)
            ),
            Some(APPARMOR_FIX),
            all,
        ),
    };
    push(out, "user namespaces", level, text, fix, blocks);
}

fn mapping_findings(facts: &Facts, out: &mut Vec<Finding>) {
    if facts.uid == 0 {
        push(
            out,
            "id mapping",
            Level::Ok,
            "real root: every id is mapped".into(),
            None,
            None,
        );
        return;
    }
    let ranges = |r: &[(u32, u32)]| {
        r.iter()
            .map(|(start, count)| format!("{count} from {start}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if facts.subuid.is_empty() || facts.subgid.is_empty() {
        let file = if facts.subuid.is_empty() {
            "subuid"
        } else {
            "subgid"
        };
        let numeric = facts.user == facts.uid.to_string();
        let fix = if numeric {
            format!(
                "uid {} has no name: add the line {}:100000:65536 to /etc/subuid and /etc/subgid in the image",
                facts.uid, facts.uid
            )
        } else {
            format!(
                "usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {}",
                facts.user
            )
        };
        push(
            out,
            "subordinate ids",
            Level::Limits,
            format!(
                "no range for {} in /etc/{file}: other owners are recorded rather than set, and a non-root USER is played by root",
                facts.user
            ),
            Some(&fix),
            Some(Tier::Userns),
        );
    } else {
        push(
            out,
            "subordinate ids",
            Level::Ok,
            format!(
                "{}: uids {}; gids {}",
                facts.user,
                ranges(&facts.subuid),
                ranges(&facts.subgid)
            ),
            None,
            None,
        );
    }
    let mut fixes_said = Vec::new();
    for (tool, needs) in [
        (&facts.newuidmap, cap::SETUID),
        (&facts.newgidmap, cap::SETGID),
    ] {
        match tool_blocker(facts, tool, needs) {
            // One missing package or one no-new-privileges is one finding, not one per tool.
            Some((text, fix)) if !fixes_said.contains(&fix) => {
                push(
                    out,
                    "newuidmap/newgidmap",
                    Level::Limits,
                    text,
                    Some(&fix),
                    Some(Tier::Userns),
                );
                fixes_said.push(fix);
            }
            Some(_) => {}
            None => {
                if let MapTool::SetuidRoot(path) | MapTool::FileCaps(path) = tool {
                    let how = if matches!(tool, MapTool::FileCaps(_)) {
                        "file capabilities"
                    } else {
                        "setuid root"
                    };
                    push(
                        out,
                        "newuidmap/newgidmap",
                        Level::Ok,
                        format!("{} ({how})", path.display()),
                        None,
                        None,
                    );
                }
            }
        }
    }
}

fn environment_findings(facts: &Facts, out: &mut Vec<Finding>) {
    if facts.uid != 0 {
        push(
            out,
            "chroot",
            Level::Note,
            "not root: the chroot tier (no namespaces) needs root with CAP_SYS_CHROOT".into(),
            Some(
                "pod: securityContext.runAsUser: 0 with the default capabilities (as Kaniko runs)",
            ),
            Some(Tier::Chroot),
        );
    } else if !chroot_possible(facts) {
        push(out, "chroot", Level::Note, "root without CAP_SYS_CHROOT, CAP_CHOWN, CAP_SETUID and CAP_SETGID: the chroot tier cannot run".into(), Some("pod: keep the default capabilities (do not drop SYS_CHROOT, CHOWN, SETUID, SETGID)"), Some(Tier::Chroot));
    }
    if !ptrace_possible() {
        push(
            out,
            "ptrace",
            Level::Note,
            "the ptrace tier is built for x86-64 only".into(),
            None,
            Some(Tier::Ptrace),
        );
    }
    if facts.proc_overmounts.is_empty() {
        push(
            out,
            "/proc",
            Level::Ok,
            "/proc is not masked".into(),
            None,
            None,
        );
    } else {
        push(
            out,
            "/proc",
            Level::Note,
            format!(
                "/proc has {} masked or read-only paths ({}): a step cannot mount its own /proc and sees this one",
                facts.proc_overmounts.len(),
                facts.proc_overmounts.join(" ")
            ),
            Some(
                "pod: securityContext.procMount: Unmasked with hostUsers: false (docker run --security-opt systempaths=unconfined)",
            ),
            None,
        );
    }
    let Some(root) = &facts.state_root else {
        return;
    };
    if let Some(why) = &root.unusable {
        push(
            out,
            "state root",
            Level::Limits,
            format!("no build can keep its state there: {why}"),
            Some("give --root a directory you can write (or one that can be made)"),
            None,
        );
    } else if root.on_overlay {
        push(
            out,
            "state root",
            Level::Limits,
            format!(
                "{} is on overlayfs, which overlayfs cannot stack on: snapshots are copied (native), slower",
                root.path.display()
            ),
            Some("mount an emptyDir volume at the state root (or give --root a directory on one)"),
            None,
        );
    } else {
        push(
            out,
            "state root",
            Level::Ok,
            format!("{} is not on overlayfs", root.path.display()),
            None,
            None,
        );
    }
    const ENOUGH: u64 = 2 << 30;
    match root.free_bytes {
        Some(free) if free < ENOUGH => push(
            out,
            "free space",
            Level::Limits,
            format!(
                "{} MiB free at the state root: a build may run out",
                free >> 20
            ),
            Some("give the state root a larger volume (emptyDir sizeLimit), or umstage prune"),
            None,
        ),
        Some(free) => push(
            out,
            "free space",
            Level::Ok,
            format!("{} MiB free at the state root", free >> 20),
            None,
            None,
        ),
        None => push(
            out,
            "free space",
            Level::Note,
            "the free space at the state root is unknown".into(),
            None,
            None,
        ),
    }
}

/// The text of the Landlock finding when steps go unconfined.
fn unconfined(findings: &[Finding]) -> Option<&str> {
    findings
        .iter()
        .find(|f| f.topic == LANDLOCK && f.level != Level::Ok)
        .map(|f| f.text.as_str())
}

/// The Landlock finding's topic.
const LANDLOCK: &str = "landlock";

fn landlock_finding(facts: &Facts, out: &mut Vec<Finding>) {
    match &facts.landlock {
        Landlock::Abi(abi) => push(
            out,
            LANDLOCK,
            Level::Ok,
            format!("Landlock ABI {abi}: chroot and ptrace steps reach only their own files"),
            None,
            None,
        ),
        Landlock::Unavailable(why) => push(
            out,
            LANDLOCK,
            Level::Note,
            format!("not confined by Landlock: {why}"),
            Some(
                "on the node: Linux 5.19 or later with Landlock enabled; pod: a seccomp profile allowing landlock_create_ruleset, landlock_add_rule and landlock_restrict_self",
            ),
            None,
        ),
    }
}

fn reason(facts: &Facts, tier: Option<Tier>, findings: &[Finding]) -> String {
    let first_blocker = |t: Tier| {
        findings
            .iter()
            .find(|f| f.blocks.is_some_and(|b| keeps_out(b, t)))
            .map_or_else(String::new, |f| f.text.clone())
    };
    match tier {
        Some(Tier::Userns) if facts.uid == 0 => {
            "a user namespace with every id mapped (real root)".into()
        }
        Some(Tier::Userns) => "a user namespace with the subordinate ranges mapped".into(),
        Some(Tier::UsernsSingle) => format!(
            "a user namespace with one id, so owners other than root are recorded, not set, and a non-root USER is played by root: {}",
            first_blocker(Tier::Userns)
        ),
        Some(tier @ (Tier::Chroot | Tier::Ptrace)) => {
            let mut reason = format!(
                "no user namespace ({}): {}",
                first_blocker(Tier::UsernsSingle),
                what_it_is(tier)
            );
            if let Some(unconfined) = unconfined(findings) {
                reason.push_str("; ");
                reason.push_str(unconfined);
            }
            reason
        }
        None => format!(
            "no tier can run RUN steps here: {}",
            first_blocker(Tier::UsernsSingle)
        ),
    }
}

/// What steps get in a tier without namespaces, one clause.
pub(super) fn what_it_is(tier: Tier) -> &'static str {
    match tier {
        Tier::Chroot => {
            "steps run chrooted as real root in copied snapshots, without /proc, /sys or RUN --mount"
        }
        Tier::Ptrace => {
            "steps run under a ptrace supervisor in linked snapshots (files hard-linked to the parent's, copied up before a change), as played root with owners recorded, without RUN --network=none"
        }
        Tier::Userns | Tier::UsernsSingle => "steps run in a user namespace",
    }
}
