//! The sandbox tiers, best first: what a `RUN` step runs in, and how a build is told which.

use serde::Serialize;

/// A way of running `RUN` steps, from the most faithful down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    /// A user namespace mapping the caller's subordinate ranges (or every id, as real root):
    /// steps own files as any user.
    Userns,
    /// A user namespace mapping one id: steps run as root; a chown to another owner is
    /// recorded in an xattr, shown to `stat` and written into the layers.
    UsernsSingle,
    /// No namespace at all, as root with the default capabilities but no `CAP_SYS_ADMIN` (a
    /// container where Kaniko runs): steps run chrooted in copied (native) snapshots, owners
    /// are real, and there is no `/proc`, no `/sys` and no `RUN --mount`.
    Chroot,
    /// No namespace and no privilege at all (a non-root user under a runtime's default seccomp
    /// profile): steps run under a ptrace supervisor that translates their paths into linked
    /// native snapshots (`crate::cow`: the parent's files hard-linked, copied up before a
    /// change) and plays root, recording owners as `userns-single` does.
    Ptrace,
}

impl Tier {
    /// Every tier, best first.
    pub const ALL: [Tier; 4] = [Tier::Userns, Tier::UsernsSingle, Tier::Chroot, Tier::Ptrace];

    /// The name the `--sandbox` flag and `umstage doctor` use.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Userns => "userns",
            Tier::UsernsSingle => "userns-single",
            Tier::Chroot => "chroot",
            Tier::Ptrace => "ptrace",
        }
    }

    /// Whether steps run without any namespace: nothing can be mounted, snapshots are native
    /// trees used in place.
    pub fn mounts_nothing(self) -> bool {
        matches!(self, Tier::Chroot | Tier::Ptrace)
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which tier a build asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TierChoice {
    /// The best one that works here.
    #[default]
    Auto,
    /// This one, or fail saying why not.
    Exactly(Tier),
}

static ACTIVE: std::sync::OnceLock<Tier> = std::sync::OnceLock::new();

/// Records the tier this process's build runs its steps in (once; the namespace tiers are
/// also known from [`crate::userns::current`]).
pub fn activate(tier: Tier) {
    let _ = ACTIVE.set(tier);
    if tier == Tier::Ptrace {
        // No id can be mapped or changed: the process's own ids are root's in the images.
        umstage_oci::owner::play_root(umstage_oci::owner::Owner {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        });
    }
}

/// The tier this process's steps run in, when one was activated.
pub fn active_tier() -> Option<Tier> {
    ACTIVE.get().copied()
}
