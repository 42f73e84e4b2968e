//! Resolving `--chown` owners through the target image's own `/etc/passwd` and `/etc/group`.

use umstage_snapshot::sandbox::user::{group_entries, passwd_entries};

/// A `--chown` value that cannot be resolved in the image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChownError {
    /// The value is empty or has an empty part.
    #[error("invalid --chown value {0:?}: use USER[:GROUP] with names or numeric ids")]
    Invalid(String),
    /// A user name that the image's `/etc/passwd` does not have.
    #[error(
        "--chown: user {0:?} is not in the image's /etc/passwd: create it in an earlier RUN step or use a numeric uid"
    )]
    UnknownUser(String),
    /// A group name that the image's `/etc/group` does not have.
    #[error(
        "--chown: group {0:?} is not in the image's /etc/group: create it in an earlier RUN step or use a numeric gid"
    )]
    UnknownGroup(String),
}

/// Finds `name` in passwd-format text (`name:x:uid:gid:…`) and returns its uid and primary gid.
pub fn lookup_user(passwd: &str, name: &str) -> Option<(u32, u32)> {
    passwd_entries(passwd)
        .find(|e| e.name == name)
        .map(|e| (e.uid, e.gid))
}

/// Finds `name` in group-format text (`name:x:gid:members`) and returns its gid.
pub fn lookup_group(group: &str, name: &str) -> Option<u32> {
    group_entries(group).find(|g| g.name == name).map(|g| g.gid)
}

/// Resolves a `--chown` value (`user`, `user:group`, names or numbers) to a uid and gid, as
/// BuildKit does: a numeric user alone gets the same number as its group, a user name alone gets
/// its primary group. `passwd` and `group` are the image's files, `None` when it has none.
pub fn resolve_chown(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<(u32, u32), ChownError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user_part.is_empty() || group_part.is_some_and(str::is_empty) {
        return Err(ChownError::Invalid(spec.to_string()));
    }
    let (uid, primary_gid) = match user_part.parse::<u32>() {
        Ok(uid) => (uid, uid),
        Err(_) => passwd
            .and_then(|p| lookup_user(p, user_part))
            .ok_or_else(|| ChownError::UnknownUser(user_part.to_string()))?,
    };
    let gid = match group_part {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group
                .and_then(|text| lookup_group(text, g))
                .ok_or_else(|| ChownError::UnknownGroup(g.to_string()))?,
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:34:web:/var/www:/bin/false\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:www\nweb:x:34:\n";

    #[test]
    fn names_resolve_in_the_image_files() {
        let r = |s| resolve_chown(s, Some(PASSWD), Some(GROUP));
        assert_eq!(r("www"), Ok((33, 34)));
        assert_eq!(r("www:staff"), Ok((33, 50)));
        assert_eq!(r("10"), Ok((10, 10)));
        assert_eq!(r("10:11"), Ok((10, 11)));
        assert_eq!(r("0:web"), Ok((0, 34)));
        assert_eq!(r("www:7"), Ok((33, 7)));
    }

    #[test]
    fn unknown_names_and_bad_values_are_errors() {
        let r = |s| resolve_chown(s, Some(PASSWD), Some(GROUP));
        assert_eq!(r("nobody"), Err(ChownError::UnknownUser("nobody".into())));
        assert_eq!(
            r("1:nogroup"),
            Err(ChownError::UnknownGroup("nogroup".into()))
        );
        assert_eq!(r(":1"), Err(ChownError::Invalid(":1".into())));
        assert_eq!(r("1:"), Err(ChownError::Invalid("1:".into())));
        assert_eq!(
            resolve_chown("www", None, None),
            Err(ChownError::UnknownUser("www".into()))
        );
        assert_eq!(resolve_chown("5:6", None, None), Ok((5, 6)));
    }
}
