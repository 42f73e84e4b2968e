//! The diagnosis of the pod profiles the issue measured, from their facts.

use std::path::PathBuf;

use super::status::{CapSet, ProcStatus, Seccomp};
use super::*;

/// Docker's default capability set.
const DEFAULT_CAPS: CapSet = CapSet(0xa80425fb);

fn pod(uid: u32, caps: CapSet, nnp: bool, seccomp: Seccomp, trial: Trial) -> Facts {
    Facts {
        uid,
        user: uid.to_string(),
        status: ProcStatus {
            seccomp,
            no_new_privs: nnp,
            effective: if uid == 0 { caps } else { CapSet(0) },
            permitted: if uid == 0 { caps } else { CapSet(0) },
            bounding: caps,
        },
        trial,
        max_user_namespaces: Some(63000),
        unprivileged_userns_clone: None,
        apparmor_restricts_userns: None,
        subuid: vec![(100000, 65536)],
        subgid: vec![(100000, 65536)],
        newuidmap: MapTool::FileCaps(PathBuf::from("/usr/bin/newuidmap")),
        newgidmap: MapTool::FileCaps(PathBuf::from("/usr/bin/newgidmap")),
        proc_overmounts: vec!["/proc/kcore".into(), "/proc/sys".into()],
        state_root: Some(StateRoot {
            path: PathBuf::from("/home/build/.local/share/umstage"),
            on_overlay: true,
            free_bytes: Some(10 << 30),
            unusable: None,
        }),
        landlock: Landlock::Abi(7),
    }
}

const EPERM: i32 = libc::EPERM;

#[test]
fn restricted_pod_gets_ptrace_and_blames_seccomp_not_a_sysctl() {
    let d = diagnose(&pod(
        1000,
        CapSet(0),
        true,
        Seccomp::Filter,
        Trial::Unshare(EPERM),
    ));
    assert_eq!(d.tier, Some(Tier::Ptrace));
    assert!(d.reason.contains("ptrace supervisor"), "{}", d.reason);
    assert!(d.reason.contains("seccomp filter"), "{}", d.reason);
    let blockers = d.blockers_of(Tier::UsernsSingle);
    assert!(
        blockers.contains("seccompProfile.type: Unconfined"),
        "{blockers}"
    );
    assert!(
        !blockers.contains("unprivileged_userns_clone"),
        "{blockers}"
    );
    let userns = &d.upgrades[0];
    assert_eq!(userns.tier, Tier::Userns);
    // What would give a non-root pod the chroot tier is not counted against the namespaces.
    assert!(!d.blockers_of(Tier::UsernsSingle).contains("runAsUser"));
    assert!(d.blockers_of(Tier::Chroot).contains("runAsUser: 0"));
    assert!(
        userns
            .fixes
            .iter()
            .any(|f| f.contains("allowPrivilegeEscalation: true")),
        "{:?}",
        userns.fixes
    );
}

#[test]
fn root_with_default_capabilities_is_refused_a_namespace_and_gets_chroot() {
    let d = diagnose(&pod(
        0,
        DEFAULT_CAPS,
        false,
        Seccomp::Filter,
        Trial::Unshare(EPERM),
    ));
    assert_eq!(d.tier, Some(Tier::Chroot));
    assert!(d.reason.contains("chrooted"), "{}", d.reason);
    assert!(
        d.blockers_of(Tier::UsernsSingle)
            .contains("without CAP_SYS_ADMIN")
    );
    let better: Vec<Tier> = d.upgrades.iter().map(|u| u.tier).collect();
    assert_eq!(better, [Tier::Userns, Tier::UsernsSingle]);
    // Root without CAP_SYS_CHROOT falls to the ptrace tier.
    let no_chroot = CapSet(DEFAULT_CAPS.0 & !(1 << status::cap::SYS_CHROOT));
    let d = diagnose(&pod(
        0,
        no_chroot,
        false,
        Seccomp::Filter,
        Trial::Unshare(EPERM),
    ));
    assert_eq!(d.tier, Some(Tier::Ptrace));
    assert!(d.blockers_of(Tier::Chroot).contains("CAP_SYS_CHROOT"));
}

#[test]
fn a_tier_without_namespaces_says_once_when_landlock_does_not_confine_it() {
    let restricted = pod(
        1000,
        CapSet(0),
        true,
        Seccomp::Filter,
        Trial::Unshare(EPERM),
    );
    let d = diagnose(&restricted);
    assert_eq!(d.unconfined(), None);
    assert!(!d.reason.contains("Landlock"), "{}", d.reason);
    let why =
        "landlock_create_ruleset fails: Operation not permitted (a seccomp filter refuses it)";
    let d = diagnose(&Facts {
        landlock: Landlock::Unavailable(why.into()),
        ..restricted.clone()
    });
    assert_eq!(d.tier, Some(Tier::Ptrace));
    let said = format!("not confined by Landlock: {why}");
    assert_eq!(d.unconfined(), Some(said.as_str()));
    assert_eq!(d.reason.matches("not confined by Landlock").count(), 1);
    assert!(d.reason.ends_with(&said), "{}", d.reason);
    // The namespace tiers need no Landlock: their reason does not mention it.
    let unconfined = diagnose(&Facts {
        landlock: Landlock::Unavailable(why.into()),
        trial: Trial::Works,
        ..restricted
    });
    assert_eq!(unconfined.tier, Some(Tier::UsernsSingle));
    assert!(
        !unconfined.reason.contains("Landlock"),
        "{}",
        unconfined.reason
    );
}

#[test]
fn setuid_map_tools_without_sys_admin_cannot_map_ranges_but_file_capabilities_can() {
    let mut facts = pod(1000, DEFAULT_CAPS, false, Seccomp::Disabled, Trial::Works);
    facts.newuidmap = MapTool::SetuidRoot(PathBuf::from("/usr/bin/newuidmap"));
    let d = diagnose(&facts);
    assert_eq!(d.tier, Some(Tier::UsernsSingle));
    assert!(
        d.blockers_of(Tier::Userns)
            .contains("setcap cap_setuid+ep /usr/bin/newuidmap")
    );
    // On a host (every capability in the bounding set) the setuid bit is enough.
    facts.status.bounding = CapSet(u64::MAX);
    assert_eq!(diagnose(&facts).tier, Some(Tier::Userns));
}

#[test]
fn unconfined_pod_with_ranges_gets_the_first_tier() {
    let d = diagnose(&pod(
        1000,
        DEFAULT_CAPS,
        false,
        Seccomp::Disabled,
        Trial::Works,
    ));
    assert_eq!(d.tier, Some(Tier::Userns));
    assert!(d.upgrades.is_empty());
    let root = d
        .findings
        .iter()
        .find(|f| f.topic == "state root")
        .expect("state root");
    assert_eq!(root.level, Level::Limits);
    assert!(root.fix.as_deref().is_some_and(|f| f.contains("emptyDir")));
}

#[test]
fn unconfined_pod_without_ranges_gets_one_id_and_the_line_to_add() {
    let mut facts = pod(1000, DEFAULT_CAPS, false, Seccomp::Disabled, Trial::Works);
    facts.subuid.clear();
    let d = diagnose(&facts);
    assert_eq!(d.tier, Some(Tier::UsernsSingle));
    assert!(
        d.reason.contains("no range for 1000 in /etc/subuid"),
        "{}",
        d.reason
    );
    assert_eq!(d.upgrades.len(), 1);
    assert!(
        d.upgrades[0].fixes[0].contains("1000:100000:65536"),
        "{:?}",
        d.upgrades
    );
}

#[test]
fn apparmor_denying_mount_is_named_with_its_fix() {
    let d = diagnose(&pod(
        1000,
        DEFAULT_CAPS,
        false,
        Seccomp::Disabled,
        Trial::Mount(libc::EACCES),
    ));
    assert_eq!(d.tier, None);
    assert!(
        d.blockers_of(Tier::UsernsSingle)
            .contains("apparmor=unconfined")
    );
}

#[test]
fn dropped_setuid_capability_keeps_ranges_out_of_reach() {
    let mut facts = pod(1000, CapSet(0), false, Seccomp::Disabled, Trial::Works);
    facts.status.bounding = CapSet(DEFAULT_CAPS.0 & !(1 << status::cap::SETUID));
    let d = diagnose(&facts);
    assert_eq!(d.tier, Some(Tier::UsernsSingle));
    assert!(
        d.reason
            .contains("CAP_SETUID is not in the capability bounding set"),
        "{}",
        d.reason
    );
}

#[test]
fn sysctls_that_forbid_namespaces_are_named_with_the_sysctl() {
    let mut facts = pod(
        1000,
        DEFAULT_CAPS,
        false,
        Seccomp::Disabled,
        Trial::Unshare(libc::ENOSPC),
    );
    facts.max_user_namespaces = Some(0);
    let d = diagnose(&facts);
    assert!(
        d.blockers_of(Tier::UsernsSingle)
            .contains("sysctl -w user.max_user_namespaces")
    );
}
