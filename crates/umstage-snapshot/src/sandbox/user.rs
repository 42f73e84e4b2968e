//! Reading an image's own `/etc/passwd` and `/etc/group`, and resolving a step's user
//! (`name`, `uid`, `user:group`) against them as Docker does.

use super::failure::HelperError;

/// The ids and home a step runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResolvedUser {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) additional_gids: Vec<u32>,
    pub(crate) home: String,
}

/// One line of an `/etc/passwd` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry<'a> {
    /// The user name.
    pub name: &'a str,
    /// The uid.
    pub uid: u32,
    /// The primary gid.
    pub gid: u32,
    /// The home directory (empty when the field is).
    pub home: &'a str,
}

/// One line of an `/etc/group` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry<'a> {
    /// The group name.
    pub name: &'a str,
    /// The gid.
    pub gid: u32,
    /// The user names listed as members.
    pub members: Vec<&'a str>,
}

/// The entries of passwd-format text; comments and malformed lines are skipped.
pub fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if line.starts_with('#') || fields.len() < 4 {
            return None;
        }
        Some(PasswdEntry {
            name: fields[0],
            uid: fields[2].parse().ok()?,
            gid: fields[3].parse().ok()?,
            home: fields.get(5).copied().unwrap_or(""),
        })
    })
}

/// The entries of group-format text; comments and malformed lines are skipped.
pub fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if line.starts_with('#') || fields.len() < 3 {
            return None;
        }
        Some(GroupEntry {
            name: fields[0],
            gid: fields[2].parse().ok()?,
            members: fields
                .get(3)
                .map(|m| {
                    m.split(',')
                        .map(str::trim)
                        .filter(|m| !m.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        })
    })
}

/// Resolves `user[:group]` (names or numbers; empty is root).
///
/// A name must exist in `passwd`; a number need not. Without an explicit group the primary
/// group comes from the passwd entry and the supplementary groups are those listing the
/// user; with one, only that group applies. The primary group always leads the
/// supplementary ones: since CVE-2023-25173 BuildKit, containerd and runc keep it there, so
/// that dropping to a user cannot leave it outside its own group. `home` is the passwd
/// entry's, else `/`.
pub(crate) fn resolve(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, HelperError> {
    let mut parts = spec.splitn(3, ':');
    let user_arg = parts.next().unwrap_or("").trim();
    let group_arg = parts.next().unwrap_or("").trim();
    let uid_arg = user_arg.parse::<u32>().ok();
    let gid_arg = group_arg.parse::<u32>().ok();

    let mut resolved = ResolvedUser {
        uid: 0,
        gid: 0,
        additional_gids: Vec::new(),
        home: "/".to_string(),
    };
    let matched = passwd.and_then(|text| {
        passwd_entries(text).find(|entry| match (user_arg, uid_arg) {
            ("", _) => entry.uid == 0,
            (_, Some(uid)) => entry.uid == uid,
            (name, None) => entry.name == name,
        })
    });
    let matched_name = match &matched {
        Some(entry) => {
            resolved.uid = entry.uid;
            resolved.gid = entry.gid;
            resolved.home = if entry.home.is_empty() {
                "/".into()
            } else {
                entry.home.into()
            };
            Some(entry.name.to_string())
        }
        None if user_arg.is_empty() => None,
        None => match uid_arg {
            Some(uid) => {
                resolved.uid = uid;
                None
            }
            None => {
                return Err(HelperError::NoUser(user_arg.to_string()));
            }
        },
    };

    if !group_arg.is_empty() {
        let found = group.and_then(|text| {
            group_entries(text)
                .find(|g| match gid_arg {
                    Some(gid) => g.gid == gid,
                    None => g.name == group_arg,
                })
                .map(|g| g.gid)
        });
        resolved.gid = match (found, gid_arg) {
            (Some(gid), _) | (None, Some(gid)) => gid,
            (None, None) => {
                return Err(HelperError::NoGroup(group_arg.to_string()));
            }
        };
    } else if let (Some(name), Some(text)) = (&matched_name, group) {
        resolved.additional_gids = group_entries(text)
            .filter(|g| g.members.contains(&name.as_str()))
            .map(|g| g.gid)
            .collect();
    }
    // 4294967295 is -1 to the kernel: setresuid(-1) leaves the step root.
    for (what, id) in [("user", resolved.uid), ("group", resolved.gid)] {
        if id == u32::MAX {
            return Err(HelperError::Refused(format!(
                "USER {spec}: {what} id {id} is -1 to the kernel, which keeps the current id: it is not an id a step can run as"
            )));
        }
    }
    if !resolved.additional_gids.contains(&resolved.gid) {
        resolved.additional_gids.insert(0, resolved.gid);
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nnohome:x:1001:1001::\n";
    const GROUP: &str =
        "root:x:0:\nwheel:x:10:app,root\napp:x:1000:\naudio:x:29:other,app\nstaff:x:50:\n";

    fn r(spec: &str) -> Result<ResolvedUser, HelperError> {
        resolve(spec, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn empty_spec_is_root_with_its_home_and_groups() {
        let root = r("").expect("root");
        assert_eq!((root.uid, root.gid, root.home.as_str()), (0, 0, "/root"));
        assert_eq!(root.additional_gids, vec![0, 10]);
    }

    #[test]
    fn name_gives_primary_group_home_and_supplementary_groups() {
        let app = r("app").expect("app");
        assert_eq!(
            (app.uid, app.gid, app.home.as_str()),
            (1000, 1000, "/home/app")
        );
        assert_eq!(app.additional_gids, vec![1000, 10, 29]);
    }

    #[test]
    fn number_without_entry_is_allowed_with_gid_0_and_home_slash() {
        let u = r("4242").expect("numeric");
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 0, "/"));
        assert_eq!(u.additional_gids, vec![0]);
        assert_eq!(r("1000").expect("numeric app").home, "/home/app");
    }

    #[test]
    fn explicit_group_replaces_primary_and_drops_supplementary() {
        let u = r("app:staff").expect("app:staff");
        assert_eq!((u.uid, u.gid), (1000, 50));
        assert_eq!(u.additional_gids, vec![50]);
        assert_eq!(r("app:777").expect("numeric group").gid, 777);
    }

    #[test]
    fn unknown_names_are_errors_like_docker() {
        assert_eq!(
            r("nobody").expect_err("must fail").to_string(),
            "unable to find user nobody: no matching entries in passwd file"
        );
        assert!(
            r("app:nogroup")
                .expect_err("must fail")
                .to_string()
                .contains("unable to find group nogroup")
        );
        assert!(matches!(r("nobody"), Err(HelperError::NoUser(u)) if u == "nobody"));
        assert!(matches!(r("app:nogroup"), Err(HelperError::NoGroup(g)) if g == "nogroup"));
        assert!(resolve("app", None, None).is_err());
        assert_eq!(resolve("7", None, None).expect("no passwd").uid, 7);
    }

    #[test]
    fn primary_group_is_listed_once_even_when_a_group_names_the_user() {
        let group = "root:x:0:root\nwheel:x:10:root\n";
        let root = resolve("", Some(PASSWD), Some(group)).expect("root");
        assert_eq!(root.additional_gids, vec![0, 10]);
        let numeric = resolve("1234:1234", Some(PASSWD), Some(group)).expect("numeric");
        assert_eq!((numeric.gid, numeric.additional_gids), (1234, vec![1234]));
    }

    #[test]
    fn the_id_that_means_no_change_is_refused() {
        for spec in ["4294967295", "0:4294967295", "big"] {
            let passwd = "big:x:4294967295:0::/:/bin/sh\n";
            assert!(
                matches!(
                    resolve(spec, Some(passwd), None),
                    Err(HelperError::Refused(_))
                ),
                "{spec}"
            );
        }
    }

    #[test]
    fn empty_home_field_defaults_to_slash() {
        assert_eq!(r("nohome").expect("nohome").home, "/");
    }
}
