//! Single-id mode, said once per build: what it changes, what it changed in this build, and
//! the fix. Said at the end, whether the build succeeded or not, so a `RUN chown` that failed
//! with a bare "Invalid argument" is explained right under it.

use umstage_snapshot::userns::SingleId;

use crate::state::Skipped;

/// The warning for a build in single-id mode, given what its unpacks could not apply.
pub(crate) fn summary(cause: &SingleId, skipped: &Skipped) -> String {
    let mut s = format!(
        "single-id mode ({}): only your own user id exists in the build, so owners other than root are recorded (user.rootlesscontainers) and written into the layers rather than set, and a non-root USER is played by root (it may write where that user could not)",
        cause.reason
    );
    if skipped.count > 0 {
        let plural = if skipped.count == 1 { "y" } else { "ies" };
        s.push_str(&format!(
            "; {} entr{plural} of base image layers lost their owner, device or extended attribute and belong to root in the image",
            skipped.count
        ));
        if let Some(first) = &skipped.first {
            s.push_str(&format!(" (first: {first})"));
        }
    }
    match &cause.fix {
        Some(fix) => s.push_str(&format!(". Fix: {fix}")),
        None => s.push('.'),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_says_what_changed_how_much_and_the_fix() {
        let cause = SingleId {
            reason: "no range for user bob in /etc/subuid".into(),
            fix: Some(
                "sudo usermod --add-subuids 165536-231071 --add-subgids 165536-231071 bob".into(),
            ),
        };
        let skipped = Skipped {
            count: 10,
            first: Some(
                "etc/gshadow: could not set owner 0:42: Invalid argument (os error 22)".into(),
            ),
        };
        let s = summary(&cause, &skipped);
        assert!(
            s.starts_with("single-id mode (no range for user bob in /etc/subuid): "),
            "{s}"
        );
        assert!(
            s.contains("; 10 entries of base image layers lost their owner"),
            "{s}"
        );
        assert!(
            s.contains("(first: etc/gshadow: could not set owner 0:42"),
            "{s}"
        );
        assert!(
            s.ends_with(
                ". Fix: sudo usermod --add-subuids 165536-231071 --add-subgids 165536-231071 bob"
            ),
            "{s}"
        );
        assert!(!s.contains('\n'));
        let none = summary(&cause, &Skipped::default());
        assert!(!none.contains("entr"), "{none}");
    }
}
