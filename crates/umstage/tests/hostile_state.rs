//! End to end, a state root holding what umstage never writes there: a FIFO where a record, a
//! lock, a lease or a blob should be. A plain `open()` of one waits for a writer forever, and no
//! SIGTERM ends that wait; every such file must be refused at once instead, the build going on
//! without it or failing with an error that names it.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{Env, TestResult, assert_ok, last_layer_path, text};

const DOCKERFILE: &str =
    "FROM busybox\nCOPY a.txt /a.txt\nARG N\nRUN echo \"$N\" > /n && cat /a.txt > /b\n";

/// Every file below `dir`, relative to `root`.
fn files(root: &Path, dir: &Path, into: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            files(root, &entry.path(), into)?;
        } else if let Ok(rel) = entry.path().strip_prefix(root) {
            into.push(rel.to_owned());
        }
    }
    Ok(())
}

/// The place of one kind of file in a state root, by its path relative to the root.
struct Place {
    what: &'static str,
    holds: fn(&str) -> bool,
    /// A FIFO planted beside the files (named `planted`), where there may be none yet.
    beside: Option<&'static str>,
}

const PLACES: &[Place] = &[
    Place {
        what: "step records",
        holds: |p| p.starts_with("cache/steps/") && p.ends_with(".json"),
        beside: None,
    },
    Place {
        what: "step inputs",
        holds: |p| p.starts_with("cache/inputs/"),
        beside: None,
    },
    Place {
        what: "context digests",
        holds: |p| p.ends_with(".digests"),
        beside: None,
    },
    Place {
        what: "blob stamps",
        holds: |p| p.starts_with("verified/"),
        beside: None,
    },
    Place {
        what: "snapshot records",
        holds: |p| p.starts_with("snapshots/") && p.contains("/meta/") && p.ends_with(".json"),
        beside: None,
    },
    Place {
        what: "the snapshots' lock",
        holds: |p| p.starts_with("snapshots/") && p.ends_with("/lock"),
        beside: None,
    },
    Place {
        what: "build leases",
        holds: |_| false,
        beside: Some("leases"),
    },
];

#[test]
fn a_fifo_planted_in_the_state_root_is_refused_not_waited_on() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context("ctx", &[("Dockerfile", DOCKERFILE), ("a.txt", "a\n")])?;
    let mut failures = Vec::new();
    for (n, place) in PLACES.iter().enumerate() {
        let root = env.dir.mkdir(format!("state-{n}"))?;
        let first = env.build_in(&root, &ctx, "first.tar", &["--build-arg", "N=1"], &[]);
        assert_ok(&first);
        let mut planted = Vec::new();
        let mut all = Vec::new();
        files(&root, &root, &mut all)?;
        for rel in all {
            if (place.holds)(&rel.to_string_lossy()) {
                let path = root.join(&rel);
                fs::remove_file(&path)?;
                planted.push(path);
            }
        }
        if let Some(dir) = place.beside {
            planted.push(root.join(dir).join("planted"));
            if let Ok(entries) = fs::read_dir(root.join("snapshots")) {
                for driver in entries {
                    planted.push(driver?.path().join(dir).join("planted"));
                }
            }
        }
        assert!(
            !planted.is_empty(),
            "no {} in {}",
            place.what,
            root.display()
        );
        for path in &planted {
            umstage_testutil::run(env.dir.user().command("mkfifo").arg(path))?;
        }

        // The RUN step misses (another N), so the snapshotter is needed too.
        match env.build_unless_stuck(&root, &ctx, "second.tar", &["--build-arg", "N=2"]) {
            Err(hung) => failures.push(format!("{}: {hung}", place.what)),
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                let err = common::stderr(&out);
                if !planted
                    .iter()
                    .any(|p| err.contains(&p.display().to_string()))
                {
                    failures.push(format!(
                        "{}: the error names no planted FIFO:\n{}",
                        place.what,
                        text(&out)
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    Ok(())
}

#[test]
fn a_fifo_in_place_of_a_stored_layer_is_replaced_by_the_layer_made_again() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context("ctx", &[("Dockerfile", DOCKERFILE), ("a.txt", "a\n")])?;
    let root = env.path("state");
    assert_ok(&env.build_in(&root, &ctx, "first.tar", &["--build-arg", "N=1"], &[]));
    let layer = last_layer_path(&env, "first.tar")?;
    // The archive names blobs as the state root's content store does: blobs/sha256/HEX.
    let blob = root.join(&layer);
    fs::remove_file(&blob)?;
    umstage_testutil::run(env.dir.user().command("mkfifo").arg(&blob))?;

    let out = env.build_unless_stuck(&root, &ctx, "second.tar", &["--build-arg", "N=1"])?;
    assert_ok(&out);
    // The step that made the layer runs again.
    assert!(
        !common::stderr(&out).contains("RUN echo \"$N\" > /n && cat /a.txt > /b\n#4 CACHED"),
        "{}",
        text(&out)
    );
    assert_eq!(
        common::unpack(&env, "second.tar")?.read_to_string("/b")?,
        "a\n"
    );
    let kind = fs::symlink_metadata(&blob)?.file_type();
    assert!(
        kind.is_file(),
        "{} is still not a regular file",
        blob.display()
    );
    Ok(())
}
