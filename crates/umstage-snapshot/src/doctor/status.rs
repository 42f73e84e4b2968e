//! What `/proc/self/status` says about the restrictions this process runs under: its seccomp
//! mode, no-new-privileges and capability sets.

use serde::Serialize;

/// The seccomp mode of the process (`Seccomp:` in `/proc/self/status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Seccomp {
    /// No filter: every system call reaches the kernel.
    Disabled,
    /// Strict mode: only read, write, exit and sigreturn.
    Strict,
    /// A BPF filter decides (a container runtime's profile, for one).
    Filter,
    /// The kernel did not say.
    Unknown,
}

/// A capability set, bit `n` for capability number `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct CapSet(pub u64);

/// Capability numbers the tiers depend on, as in `<linux/capability.h>`.
pub mod cap {
    /// Changing file owners.
    pub const CHOWN: u32 = 0;
    /// Changing the group ids (and what `newgidmap` needs).
    pub const SETGID: u32 = 6;
    /// Changing the user ids (and what `newuidmap` needs).
    pub const SETUID: u32 = 7;
    /// `chroot(2)`.
    pub const SYS_CHROOT: u32 = 18;
    /// Mounts and namespaces, among much else.
    pub const SYS_ADMIN: u32 = 21;
}

impl CapSet {
    /// Whether capability `n` is in the set.
    pub fn has(self, n: u32) -> bool {
        n < 64 && self.0 & (1 << n) != 0
    }

    /// The names of the capabilities in the set (`CAP_…`), lowest number first.
    pub fn names(self) -> Vec<&'static str> {
        crate::sandbox::caps::NUMBERS
            .iter()
            .filter(|(_, n)| self.has(*n))
            .map(|(name, _)| *name)
            .collect()
    }
}

/// The lines of `/proc/self/status` that matter here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcStatus {
    /// The seccomp mode.
    pub seccomp: Seccomp,
    /// Whether no-new-privileges is set: then setuid bits and file capabilities give nothing.
    pub no_new_privs: bool,
    /// The capabilities in effect.
    pub effective: CapSet,
    /// The capabilities that may be made effective.
    pub permitted: CapSet,
    /// The most any program this process executes can have.
    pub bounding: CapSet,
}

impl ProcStatus {
    /// This process's status; a missing or unreadable file reads as no restriction known.
    pub fn current() -> ProcStatus {
        Self::parse(&std::fs::read_to_string("/proc/self/status").unwrap_or_default())
    }

    /// Parses the text of a `/proc/<pid>/status` file.
    pub fn parse(text: &str) -> ProcStatus {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let caps = |name: &str| {
            CapSet(
                field(name)
                    .and_then(|v| u64::from_str_radix(v, 16).ok())
                    .unwrap_or(0),
            )
        };
        ProcStatus {
            seccomp: match field("Seccomp") {
                Some("0") => Seccomp::Disabled,
                Some("1") => Seccomp::Strict,
                Some("2") => Seccomp::Filter,
                _ => Seccomp::Unknown,
            },
            no_new_privs: field("NoNewPrivs") == Some("1"),
            effective: caps("CapEff"),
            permitted: caps("CapPrm"),
            bounding: caps("CapBnd"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docker run --user 1000 --cap-drop ALL --security-opt no-new-privileges`.
    const RESTRICTED: &str = "Name:\tcat\nUid:\t1000\t1000\t1000\t1000\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n";
    /// Root in a container with Docker's default capabilities.
    const DEFAULT_ROOT: &str = "CapPrm:\t00000000a80425fb\nCapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\nNoNewPrivs:\t0\nSeccomp:\t2\n";

    #[test]
    fn restricted_pod_reads_as_filtered_with_no_capabilities() {
        let s = ProcStatus::parse(RESTRICTED);
        assert_eq!(s.seccomp, Seccomp::Filter);
        assert!(s.no_new_privs);
        assert!(s.bounding.names().is_empty());
    }

    #[test]
    fn default_capabilities_lack_sys_admin_but_keep_chroot_chown_and_mknod() {
        let s = ProcStatus::parse(DEFAULT_ROOT);
        assert!(!s.no_new_privs);
        for c in [
            cap::CHOWN,
            cap::SETUID,
            cap::SETGID,
            cap::SYS_CHROOT,
            27, // CAP_MKNOD
        ] {
            assert!(s.effective.has(c), "{c}");
        }
        assert!(!s.effective.has(cap::SYS_ADMIN));
        assert!(!s.effective.has(19), "no CAP_SYS_PTRACE by default");
        assert!(s.effective.names().contains(&"CAP_SYS_CHROOT"));
    }

    #[test]
    fn missing_lines_read_as_unknown() {
        let s = ProcStatus::parse("");
        assert_eq!(s.seccomp, Seccomp::Unknown);
        assert_eq!(s.bounding, CapSet(0));
    }
}
