//! End to end, the `ptrace` tier against the steps users run and against hostile ones, as the
//! test user runs it (`--sandbox ptrace`): a path must not leave the step's root, and no file
//! outside the snapshot (a canary in the test user's directory) is read, made or changed.

mod common;

use std::fs;

use common::{Env, TestResult, assert_ok, stderr};

/// The words after the step prefix (`#N 0.012 `) of each output line that starts with `prefix`.
fn lines_with<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
    out.lines()
        .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest))
        .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest))
        .filter(|l| l.starts_with(prefix))
        .collect()
}

/// A canary directory outside the step's root, holding one file; the step must not see it.
struct Canary {
    dir: std::path::PathBuf,
}

impl Canary {
    const SECRET: &str = "canary-secret";

    fn new(env: &Env) -> Result<Self, Box<dyn std::error::Error>> {
        let dir = env.path("canary");
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("secret"), Self::SECRET)?;
        env.dir.user().chown_tree(&dir)?;
        Ok(Canary { dir })
    }

    /// The canary directory's path, as the step would name it on the host.
    fn path(&self) -> String {
        self.dir.display().to_string()
    }

    /// Fails unless the directory still holds only the untouched secret.
    fn check(&self, log: &str) -> TestResult {
        let names: Vec<_> = fs::read_dir(&self.dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        assert_eq!(
            names,
            ["secret"],
            "a file was made outside the root:\n{log}"
        );
        assert_eq!(fs::read_to_string(self.dir.join("secret"))?, Self::SECRET);
        assert!(
            !log.contains(Self::SECRET),
            "the step read the canary:\n{log}"
        );
        Ok(())
    }
}

#[test]
fn process_links_in_proc_and_dev_lead_into_the_root_not_onto_the_host() -> TestResult {
    let env = Env::new()?;
    let canary = Canary::new(&env)?;
    let c = canary.path();
    let dockerfile = format!(
        "FROM busybox\n\
         RUN ln -s / /esc && mkdir -p {c} && echo inside > {c}/secret && cd / \\\n\
          && echo \"root $(cat /proc/self/root{c}/secret 2>&1)\" \\\n\
          && echo \"cwd $(cat /proc/self/cwd/esc{c}/secret 2>&1)\" \\\n\
          && echo \"parent $(cat /proc/$PPID/root{c}/secret 2>&1)\" \\\n\
          && echo \"task $(cat /proc/thread-self/root{c}/secret 2>&1)\" \\\n\
          && echo \"rel $(cd /proc && cat self/root{c}/secret 2>&1)\" \\\n\
          && echo \"fd $(exec 3< / && cat /dev/fd/3/esc{c}/secret 2>&1)\" \\\n\
          && echo \"cd $(cd /proc/self/root{c} && cat secret 2>&1)\" \\\n\
          && echo \"ls $(ls /proc/self/root/ | grep -c '^esc$')\" \\\n\
          && echo made > /proc/self/root{c}/made \\\n\
          && echo \"stdin $(echo piped | cat /dev/stdin)\"\n"
    );
    let ctx = env.context("ctx", &[("Dockerfile", &dockerfile)])?;
    let out = env.build(&ctx, "img.tar", &["--sandbox", "ptrace"]);
    let log = stderr(&out);
    assert_ok(&out);
    for case in ["root", "cwd", "parent", "task", "rel", "fd", "cd"] {
        assert_eq!(
            lines_with(&log, &format!("{case} ")),
            [format!("{case} inside")],
            "{log}"
        );
    }
    assert_eq!(lines_with(&log, "ls "), ["ls 1"], "{log}");
    assert_eq!(lines_with(&log, "stdin "), ["stdin piped"], "{log}");
    canary.check(&log)
}
