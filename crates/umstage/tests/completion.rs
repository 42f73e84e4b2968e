//! Shell completions and man pages come from the same clap definitions as the parser: they
//! name the real subcommands and flags, and bash accepts the script.

mod common;

use std::process::Command;

use common::{Env, TestResult, stderr, text};

#[test]
fn completion_scripts_name_the_real_flags_and_bash_accepts_its_script() -> TestResult {
    let env = Env::new()?;
    for (shell, marker) in [
        ("bash", "complete -F _umstage"),
        ("zsh", "#compdef umstage"),
        ("fish", "complete -c umstage"),
    ] {
        let out = env.umstage(&["completion", shell], &[]);
        assert!(out.status.success(), "{shell}: {}", text(&out));
        let script = String::from_utf8(out.stdout)?;
        assert!(script.contains(marker), "{shell}: {script}");
        for flag in ["build-arg", "no-cache-filter", "progress", "rawjson"] {
            assert!(script.contains(flag), "{shell} lacks {flag}");
        }
        if shell == "bash" {
            let path = env.path("umstage.bash");
            std::fs::write(&path, &script)?;
            let check = Command::new("bash").arg("-n").arg(&path).output()?;
            assert!(check.status.success(), "bash -n: {}", text(&check));
        }
    }
    let out = env.umstage(&["completion", "tcsh"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("bash"), "{}", text(&out));
    Ok(())
}

#[test]
fn man_pages_are_written_for_every_subcommand() -> TestResult {
    let env = Env::new()?;
    let dir = env.path("man");
    let out = env.umstage(&["man-pages", dir.to_str().unwrap_or_default()], &[]);
    assert!(out.status.success(), "{}", text(&out));
    for page in [
        "umstage",
        "umstage-build",
        "umstage-info",
        "umstage-prune",
        "umstage-completion",
        "umstage-man-pages",
    ] {
        let text = std::fs::read_to_string(dir.join(format!("{page}.1")))?;
        assert!(text.contains(&format!(".TH {page} 1")), "{page}: {text}");
    }
    let build = std::fs::read_to_string(dir.join("umstage-build.1"))?;
    assert!(build.contains(r"\-\-build\-arg"), "{build}");
    Ok(())
}
