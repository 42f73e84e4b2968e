//! Where a user's subordinate ids and the tools that map them are found. The doctor reads them
//! as facts and the namespace code uses them, so they live apart from both.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// A subordinate range `(start, count)` from `/etc/subuid` or `/etc/subgid`.
pub(crate) type SubRange = (u32, u32);

/// Reads the ranges of `name` (or of the numeric `uid`) from a subordinate id file, in file order.
pub(crate) fn read_subordinate(file: &Path, name: &str, uid: u32) -> Vec<SubRange> {
    match std::fs::read_to_string(file) {
        Ok(text) => parse_subordinate(&text, name, uid),
        Err(_) => Vec::new(),
    }
}

fn parse_subordinate(text: &str, name: &str, uid: u32) -> Vec<SubRange> {
    let uid_text = uid.to_string();
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.starts_with('#') {
                return None;
            }
            let mut fields = line.split(':');
            let owner = fields.next()?;
            let start = fields.next()?.trim().parse::<u32>().ok()?;
            let count = fields.next()?.trim().parse::<u32>().ok()?;
            ((owner == name || owner == uid_text) && count > 0).then_some((start, count))
        })
        .collect()
}

/// The first `tool` on `PATH` (or in `/usr/bin`, `/usr/sbin`), such as `newuidmap`.
pub(crate) fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_match_name_or_uid_in_file_order() {
        let text = "# comment\nalice:100000:65536\nbob:200000:1000\n1001:300000:10\nalice:400000:5\nbroken line\n";
        assert_eq!(
            parse_subordinate(text, "alice", 1000),
            vec![(100000, 65536), (400000, 5)]
        );
        assert_eq!(parse_subordinate(text, "carol", 1001), vec![(300000, 10)]);
        assert!(parse_subordinate(text, "dave", 7).is_empty());
    }
}
