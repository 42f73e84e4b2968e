//! The subordinate range to suggest to a user who has none, chosen as `useradd` chooses one
//! (shadow's `find_new_sub_uids`): the lowest block of `SUB_UID_COUNT` ids between
//! `SUB_UID_MIN` and `SUB_UID_MAX` (from `/etc/login.defs`) that no other user's range in
//! `/etc/subuid` overlaps, and the same for gids. Suggesting a fixed range would give two
//! users the same ids.

/// `login.defs` limits for one kind of id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limits {
    min: u64,
    max: u64,
    count: u64,
}

/// shadow's defaults when `login.defs` does not say.
const DEFAULT: Limits = Limits {
    min: 100_000,
    max: 600_100_000,
    count: 65_536,
};

/// The limits for `kind` (`UID` or `GID`) from the text of `login.defs`.
fn limits(login_defs: &str, kind: &str) -> Limits {
    let value = |key: &str, default: u64| {
        login_defs
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                (words.next()? == key).then(|| words.next())?
            })
            .filter_map(parse_number)
            .next_back()
            .unwrap_or(default)
    };
    Limits {
        min: value(&format!("SUB_{kind}_MIN"), DEFAULT.min),
        max: value(&format!("SUB_{kind}_MAX"), DEFAULT.max),
        count: value(&format!("SUB_{kind}_COUNT"), DEFAULT.count),
    }
}

/// A number as `login.defs` writes one: decimal, or hexadecimal after `0x`.
fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Every range in a subordinate id file, whoever owns it, as `(start, count)`.
fn taken(file: &str) -> Vec<(u64, u64)> {
    file.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.trim().split(':');
            let _owner = fields.next()?;
            let start = fields.next()?.trim().parse().ok()?;
            let count = fields.next()?.trim().parse().ok()?;
            Some((start, count))
        })
        .collect()
}

/// The first id of the lowest free block, or `None` when the limits leave no room.
fn lowest_free(mut taken: Vec<(u64, u64)>, limits: Limits) -> Option<u64> {
    if limits.count == 0 {
        return None;
    }
    taken.sort_unstable();
    let mut candidate = limits.min;
    for (start, count) in taken {
        if start >= candidate + limits.count {
            break;
        }
        candidate = candidate.max(start + count);
    }
    (candidate + limits.count - 1 <= limits.max).then_some(candidate)
}

/// A free `FIRST-LAST` range for `kind`, as `usermod --add-sub*ids` takes it.
fn free(file: &str, login_defs: &str, kind: &str) -> Option<String> {
    let limits = limits(login_defs, kind);
    let first = lowest_free(taken(file), limits)?;
    Some(format!("{first}-{}", first + limits.count - 1))
}

/// The command that gives `name` free subordinate ranges, from the texts of `/etc/subuid`,
/// `/etc/subgid` and `/etc/login.defs` (empty when missing); words when no block is free.
pub(super) fn fix(name: &str, subuid: &str, subgid: &str, login_defs: &str) -> String {
    match (
        free(subuid, login_defs, "UID"),
        free(subgid, login_defs, "GID"),
    ) {
        (Some(uids), Some(gids)) => {
            format!("sudo usermod --add-subuids {uids} --add-subgids {gids} {name}")
        }
        _ => format!(
            "give {name} a range of 65536 ids that no other user has in /etc/subuid and /etc/subgid"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN_DEFS: &str = "# comment\nSUB_UID_MIN\t\t   100000\nSUB_UID_MAX\t\t600100000\nSUB_UID_COUNT\t\t    65536\n";

    #[test]
    fn the_first_user_gets_the_first_block() {
        assert_eq!(
            fix("bob", "", "", ""),
            "sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 bob"
        );
    }

    #[test]
    fn other_users_ranges_are_skipped_and_gaps_are_used() {
        let subuid = "alice:100000:65536\n# old\ncarol:300000:65536\ndave:165536:1000\n";
        let subgid = "alice:100000:65536\n";
        assert_eq!(
            fix("bob", subuid, subgid, DEBIAN_DEFS),
            "sudo usermod --add-subuids 166536-232071 --add-subgids 165536-231071 bob"
        );
        // A gap too small for a block is passed over.
        let subuid = "alice:100000:65536\ncarol:200000:65536\n";
        assert_eq!(
            free(subuid, DEBIAN_DEFS, "UID").as_deref(),
            Some("265536-331071")
        );
    }

    #[test]
    fn login_defs_limits_are_followed() {
        let defs = "SUB_GID_MIN 0x20000\nSUB_GID_MAX 200000\nSUB_GID_COUNT 1000\n";
        assert_eq!(free("", defs, "GID").as_deref(), Some("131072-132071"));
        // Full: the words, not a range that collides.
        let full = "x:131072:68929\n";
        assert_eq!(free(full, defs, "GID"), None);
        assert!(fix("bob", "", full, defs).contains("no other user has"));
    }
}
