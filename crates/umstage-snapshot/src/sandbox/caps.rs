//! Limiting a step's capabilities before it execs: everything outside the spec's bounding set
//! is dropped from the bounding set, and the inheritable and ambient sets are cleared, so the
//! step's root keeps only those capabilities after `execve`.

use oci_spec::runtime::{Capabilities, Capability};

use super::failure::HelperError;

/// Linux capability numbers by name, as in `<linux/capability.h>`.
pub(crate) const NUMBERS: [(&str, u32); 41] = [
    ("CAP_CHOWN", 0),
    ("CAP_DAC_OVERRIDE", 1),
    ("CAP_DAC_READ_SEARCH", 2),
    ("CAP_FOWNER", 3),
    ("CAP_FSETID", 4),
    ("CAP_KILL", 5),
    ("CAP_SETGID", 6),
    ("CAP_SETUID", 7),
    ("CAP_SETPCAP", 8),
    ("CAP_LINUX_IMMUTABLE", 9),
    ("CAP_NET_BIND_SERVICE", 10),
    ("CAP_NET_BROADCAST", 11),
    ("CAP_NET_ADMIN", 12),
    ("CAP_NET_RAW", 13),
    ("CAP_IPC_LOCK", 14),
    ("CAP_IPC_OWNER", 15),
    ("CAP_SYS_MODULE", 16),
    ("CAP_SYS_RAWIO", 17),
    ("CAP_SYS_CHROOT", 18),
    ("CAP_SYS_PTRACE", 19),
    ("CAP_SYS_PACCT", 20),
    ("CAP_SYS_ADMIN", 21),
    ("CAP_SYS_BOOT", 22),
    ("CAP_SYS_NICE", 23),
    ("CAP_SYS_RESOURCE", 24),
    ("CAP_SYS_TIME", 25),
    ("CAP_SYS_TTY_CONFIG", 26),
    ("CAP_MKNOD", 27),
    ("CAP_LEASE", 28),
    ("CAP_AUDIT_WRITE", 29),
    ("CAP_AUDIT_CONTROL", 30),
    ("CAP_SETFCAP", 31),
    ("CAP_MAC_OVERRIDE", 32),
    ("CAP_MAC_ADMIN", 33),
    ("CAP_SYSLOG", 34),
    ("CAP_WAKE_ALARM", 35),
    ("CAP_BLOCK_SUSPEND", 36),
    ("CAP_AUDIT_READ", 37),
    ("CAP_PERFMON", 38),
    ("CAP_BPF", 39),
    ("CAP_CHECKPOINT_RESTORE", 40),
];

/// Every capability this table knows: what a privileged step keeps.
pub(crate) fn all() -> Capabilities {
    NUMBERS
        .iter()
        .filter_map(|(n, _)| serde_json::from_value(serde_json::Value::from(*n)).ok())
        .collect()
}

/// The kernel's number for `cap`.
fn number(cap: Capability) -> Option<u32> {
    let value = serde_json::to_value(cap).ok()?;
    let name = value.as_str()?;
    NUMBERS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// Drops from this process's bounding set every capability not in `keep`, and clears its
/// inheritable and ambient sets. Needs `CAP_SETPCAP` (root in the step's user namespace).
pub(crate) fn limit_to(keep: &Capabilities) -> Result<(), HelperError> {
    let keep: Vec<u32> = keep.iter().filter_map(|c| number(*c)).collect();
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .unwrap_or(40);
    for cap in (0..=last).filter(|c| !keep.contains(c)) {
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        if rc != 0 {
            return Err(HelperError::during(
                format!("dropping capability {cap} from the bounding set"),
                std::io::Error::last_os_error(),
            ));
        }
    }
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    clear_inheritable()
}

/// `capset` with the inheritable set emptied (effective and permitted kept).
fn clear_inheritable() -> Result<(), HelperError> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: the header and a two-element data array, as capget(2) documents for version 3.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(HelperError::during(
            "capget",
            std::io::Error::last_os_error(),
        ));
    }
    for d in &mut data {
        d.inheritable = 0;
    }
    // SAFETY: as above, for capset(2).
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(HelperError::during(
            "capset",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_capability_has_a_number() {
        for cap in super::super::spec::DEFAULT_CAPABILITIES {
            assert!(number(cap).is_some(), "{cap:?}");
        }
        assert_eq!(number(Capability::SysAdmin), Some(21));
        assert_eq!(all().len(), NUMBERS.len());
    }
}
