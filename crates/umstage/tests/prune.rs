//! End to end, `umstage prune` beside running builds: whatever prune removes, with or without
//! `--all`, no build on the same state root fails, and every image it writes reads back.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Env, TestResult, text, unpack};

/// Builds of each Dockerfile, one after another; all Dockerfiles at once.
const ROUNDS: usize = 4;
/// At most this many prunes, and none started after this long (bounds if builds hang).
const MAX_PRUNES: usize = 300;
const MAX_TIME: Duration = Duration::from_secs(600);

/// A Dockerfile's name, its context, and the files (path, content) its image must hold.
type Case<'a> = (&'a str, &'a std::path::Path, &'a [(&'a str, &'a str)]);

#[test]
fn prune_in_a_loop_beside_builds_never_fails_a_build() -> TestResult {
    let env = Env::new()?;
    // A RUN chain, a COPY from the context and a cache hit on the later rounds.
    let plain = env.context(
        "plain",
        &[
            ("Dockerfile", "FROM busybox\nRUN echo one > /one\nCOPY f.txt /f.txt\nRUN cat /one /f.txt > /both\n"),
            ("f.txt", "two\n"),
        ],
    )?;
    // COPY --from another stage, whose snapshot is viewed while prune runs.
    let staged = env.context(
        "staged",
        &[(
            "Dockerfile",
            "FROM busybox AS tool\nRUN echo built > /out\nFROM busybox\nCOPY --from=tool /out /from-tool\nRUN cat /from-tool > /copied\n",
        )],
    )?;
    // A WORKDIR and a whole-context COPY over a RUN that shares its first step with `plain`.
    let shared = env.context(
        "shared",
        &[
            (
                "Dockerfile",
                "FROM busybox\nRUN echo one > /one\nWORKDIR /w\nCOPY . .\nRUN ls /w > /listing\n",
            ),
            ("data/x", "x\n"),
        ],
    )?;
    let cases: [Case; 3] = [
        ("plain", &plain, &[("/both", "one\ntwo\n")]),
        ("staged", &staged, &[("/copied", "built\n")]),
        (
            "shared",
            &shared,
            &[("/listing", "Dockerfile\ndata\n"), ("/one", "one\n")],
        ),
    ];
    let root = env.path("state");
    let root_arg = root.to_str().ok_or("state root path")?;
    let building = AtomicBool::new(true);
    let started = Instant::now();
    let (builds, prunes) = std::thread::scope(|s| {
        let pruner = s.spawn(|| {
            let mut outputs = Vec::new();
            let flags: [&[&str]; 3] = [&[], &["--all"], &["--keep-storage", "8MiB"]];
            // At least one prune whatever the timing; then until the builds are done.
            while outputs.is_empty()
                || (building.load(Ordering::SeqCst)
                    && outputs.len() < MAX_PRUNES
                    && started.elapsed() < MAX_TIME)
            {
                let mut args = vec!["prune", "--root", root_arg];
                args.extend_from_slice(flags[outputs.len() % flags.len()]);
                outputs.push(env.umstage(&args, &[]));
            }
            outputs
        });
        let builders: Vec<_> = cases
            .iter()
            .map(|(name, ctx, _)| {
                let env = &env;
                s.spawn(move || {
                    (0..ROUNDS)
                        .map(|round| {
                            let out = format!("{name}-{round}.tar");
                            (out.clone(), env.build(ctx, &out, &[]))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let builds: Vec<_> = builders.into_iter().map(|b| b.join()).collect();
        building.store(false, Ordering::SeqCst);
        (builds, pruner.join())
    });
    let prunes = prunes.map_err(|_| "the pruning thread panicked")?;
    for prune in &prunes {
        assert!(prune.status.success(), "prune failed:\n{}", text(prune));
    }
    let mut checked = 0;
    for ((name, _, files), built) in cases.iter().zip(builds) {
        for (archive, out) in built.map_err(|_| "a building thread panicked")? {
            assert!(
                out.status.success(),
                "{name}: a build failed beside prune:\n{}",
                text(&out)
            );
            let image = unpack(&env, &archive)?;
            for (path, content) in *files {
                assert_eq!(&image.read_to_string(path)?, content, "{archive}: {path}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, ROUNDS * cases.len());
    // The prunes ran while builds held leases (else this test proved nothing).
    let beside = prunes
        .iter()
        .filter(|p| String::from_utf8_lossy(&p.stdout).contains("running build"))
        .count();
    eprintln!(
        "{} prunes, {beside} beside running builds, {checked} builds",
        prunes.len()
    );
    assert!(
        beside > 0,
        "no prune saw a running build in {} prunes",
        prunes.len()
    );
    // With every build done, nothing is held: --all empties the root, leases included.
    let all = env.umstage(&["prune", "--all", "--root", root_arg], &[]);
    assert!(all.status.success(), "{}", text(&all));
    assert_eq!(std::fs::read_dir(&root)?.count(), 0);
    Ok(())
}
