//! How a step is named in the progress, as BuildKit names its vertices: only the steps that
//! make a filesystem operation (a FROM of an image, RUN, COPY, ADD, WORKDIR) are numbered in
//! `[stage n/total]`; the ones that only change the config (ARG, ENV, USER, CMD…) are not.

use umstage_dockerfile::{Base, Command};

/// Whether the step makes a vertex BuildKit numbers.
pub(crate) fn numbered(command: &Command) -> bool {
    matches!(
        command,
        Command::Run(_) | Command::Copy(_) | Command::Add(_) | Command::Workdir(_)
    )
}

/// Whether the stage's FROM makes a vertex: only an image does (scratch and an earlier stage
/// make none).
pub(crate) fn from_numbered(base: &Base) -> bool {
    matches!(base, Base::Image(_))
}

/// The FROM's text: BuildKit names it by the reference the build uses (variables expanded,
/// the name completed), without the stage's name.
pub(crate) fn from_text(base: &Base, original: &str) -> String {
    match base {
        Base::Image(reference) => {
            let name = umstage_oci::reference::parse(reference)
                .map(|r| r.whole())
                .unwrap_or_else(|_| reference.clone());
            format!("FROM {name}")
        }
        Base::Scratch | Base::Stage(_) => original.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_base_is_named_by_its_whole_reference() {
        let base = Base::Image("debian:12".into());
        assert_eq!(
            from_text(&base, "FROM ${IMG} AS builder"),
            "FROM docker.io/library/debian:12"
        );
        assert!(from_numbered(&base));
        assert!(!from_numbered(&Base::Scratch));
        assert!(!from_numbered(&Base::Stage(0)));
    }
}
