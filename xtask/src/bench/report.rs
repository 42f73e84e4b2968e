//! `docs/benchmarks.md`: the bench's own section, between markers, so the
//! micro-benchmark sections others write in the same file are kept.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::measure::{Summary, summarize};
use super::{BUILDERS, Mode, REFERENCE, Results};

const BEGIN: &str = "<!-- cargo xtask bench: begin (generated; edit outside these markers) -->";
const END: &str = "<!-- cargo xtask bench: end -->";

/// A target from issue 6: umstage's median against a peer's, or an absolute bound.
struct Target {
    case: &'static str,
    mode: Mode,
    /// umstage ÷ BuildKit must be at most this.
    max_ratio: f64,
    /// …and umstage's median at most this many seconds.
    max_seconds: Option<f64>,
}

const TARGETS: &[Target] = &[
    Target {
        case: "c-multistage",
        mode: Mode::Cold,
        max_ratio: 0.95,
        max_seconds: None,
    },
    Target {
        case: "c-multistage",
        mode: Mode::Warm,
        max_ratio: 0.5,
        max_seconds: Some(0.1),
    },
    Target {
        case: "c-multistage",
        mode: Mode::Incr,
        max_ratio: 0.5,
        max_seconds: None,
    },
    Target {
        case: "parallel-stages",
        mode: Mode::Cold,
        max_ratio: 1.0,
        max_seconds: None,
    },
    Target {
        case: "many-files",
        mode: Mode::Cold,
        max_ratio: 0.7,
        max_seconds: None,
    },
    Target {
        case: "many-files",
        mode: Mode::Warm,
        max_ratio: 0.35,
        max_seconds: None,
    },
    Target {
        case: "big-layer",
        mode: Mode::Cold,
        max_ratio: 0.7,
        max_seconds: None,
    },
];

/// Per-RUN-step target (seconds) and peak RSS target for big-layer (bytes).
const STEP_TARGET: f64 = 0.010;
const BIG_LAYER_RSS_TARGET: u64 = 64 << 20;

/// Issue 13: c-multistage from the registry cache with `--push` back (seconds),
/// and with an archive against downloading the final image alone (ratio).
const CI_PUSH_TARGET: f64 = 0.3;
const CI_ARCHIVE_TARGET: f64 = 1.2;

/// Writes (or replaces) the bench section of `path`.
pub fn write(path: &Path, results: &Results) -> Result<()> {
    let section = render(results);
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(begin), Some(end)) if begin < end => {
            let rest = old[end + END.len()..].trim_start();
            if rest.is_empty() {
                format!("{}{section}", &old[..begin])
            } else {
                format!("{}{section}\n{rest}", &old[..begin])
            }
        }
        _ if old.trim().is_empty() => format!("# Benchmarks\n\n{section}\n"),
        // First in the file, right under its title, ahead of the crates' own sections.
        _ => match old.split_once('\n') {
            Some((title, rest)) if title.starts_with("# ") => {
                format!("{title}\n\n{section}\n\n{}", rest.trim_start())
            }
            _ => format!("{section}\n\n{old}"),
        },
    };
    // Written aside and renamed: a full disk must not leave the document cut short.
    let aside = path.with_extension("md.partial");
    let written = std::fs::write(&aside, new)
        .with_context(|| format!("writing {}", aside.display()))
        .and_then(|()| {
            std::fs::rename(&aside, path).with_context(|| format!("replacing {}", path.display()))
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&aside);
    }
    written
}

fn summary(results: &Results, case: &str, mode: Mode, builder: &str) -> Option<Summary> {
    results
        .runs
        .iter()
        .find(|((c, m, b), _)| c == case && *m == mode && *b == builder)
        .and_then(|(_, runs)| summarize(runs))
}

fn cell(summary: Option<Summary>) -> String {
    summary.map_or_else(
        || "—".into(),
        |s| format!("{:.2} ({:.2}–{:.2})", s.median, s.min, s.max),
    )
}

fn ratio(a: Option<Summary>, b: Option<Summary>) -> Option<f64> {
    Some(a?.median / b?.median)
}

fn mib(bytes: u64) -> String {
    format!("{:.0}", bytes as f64 / f64::from(1 << 20))
}

fn render(results: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{BEGIN}");
    let _ = writeln!(s, "## Builders side by side (`cargo xtask bench`)\n");
    let _ = writeln!(
        s,
        "Measured {} on {}; 1-minute load average {} at the start and {} at the end \
         (the machine is shared: other work running beside the bench slows every builder).{}\n",
        command_text("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        machine(),
        results.load_at_start,
        load_average(),
        if results.quick {
            " A `--quick` run: a subset of the cases."
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "Reproduce (as root, with `../shared` beside the workspace): `cargo xtask bench`{} \
         (`--quick` for a subset in a few minutes, `--runs N`, `--case NAME`, `--builders umstage,buildkit,buildah`, \
         `--modes cold,warm,incr,ci`, `--sandbox TIER` and `--umstage-as-root` for umstage).\n",
        if results.quick { " --quick" } else { "" }
    );
    let _ = writeln!(s, "Builders:\n");
    for builder in BUILDERS {
        match (
            results.versions.get(builder),
            results.failures.get(&("*".to_owned(), builder)),
        ) {
            (Some(version), _) => {
                let _ = writeln!(s, "- **{builder}**: {version}");
            }
            (None, Some(reason)) => {
                let _ = writeln!(s, "- **{builder}**: could not run: {}", one_line(reason));
            }
            (None, None) => {
                let _ = writeln!(s, "- **{builder}**: not selected for this run");
            }
        }
    }
    let _ = writeln!(
        s,
        "\nEach cell is the median wall time in seconds of {} runs (fastest–slowest), \
         building and writing the image archive (`docker save` for BuildKit, whose \
         archive is uncompressed; `buildah push oci-archive:` and umstage's `-o` \
         with gzip layers). **cold**: store emptied, base images pulled again from a \
         `docker-registry` on 127.0.0.1; **warm**: the same build again; **incr**: \
         after a one-line change to the case's `INCR_FILE`. Builders alternate run \
         by run. Cases: `../shared/bench/cases`.\n",
        results.runs_asked
    );
    let _ = writeln!(
        s,
        "| case | mode | umstage | BuildKit | Buildah | umstage ÷ BuildKit | umstage ÷ Buildah |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for case in &results.cases {
        for &mode in case.modes() {
            let [u, k, b] = BUILDERS.map(|builder| summary(results, &case.name, mode, builder));
            if [u, k, b].iter().all(Option::is_none) {
                continue;
            }
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                case.name,
                mode.label(),
                cell(u),
                cell(k),
                cell(b),
                ratio(u, k).map_or("—".into(), |r| format!("{r:.2}")),
                ratio(u, b).map_or("—".into(), |r| format!("{r:.2}")),
            );
        }
    }

    let _ = writeln!(s, "\n### Per RUN step\n");
    let _ = writeln!(
        s,
        "(cold `run-steps-20` − cold `run-steps-1`) ÷ 19, from the medians above, in milliseconds.\n"
    );
    let _ = writeln!(s, "| | umstage | BuildKit | Buildah |\n|---|---|---|---|");
    let steps = BUILDERS.map(|b| per_step(results, b));
    let _ = writeln!(
        s,
        "| per RUN step (ms) | {} |",
        steps
            .iter()
            .map(|v| v.map_or("—".into(), |v| format!("{:.0}", v * 1000.0)))
            .collect::<Vec<_>>()
            .join(" | ")
    );

    let _ = writeln!(s, "\n### Peak memory\n");
    let _ = writeln!(
        s,
        "Largest resident set of the builder's whole process tree seen while it \
         built (sampled every 40 ms; for BuildKit that includes dockerd and its \
         containerd), median over the runs, MiB.\n"
    );
    let _ = writeln!(
        s,
        "| case | mode | umstage | BuildKit | Buildah |\n|---|---|---|---|---|"
    );
    for case in &results.cases {
        for &mode in case.modes() {
            if BUILDERS
                .iter()
                .all(|b| summary(results, &case.name, mode, b).is_none())
            {
                continue;
            }
            let cells = BUILDERS.map(|b| {
                summary(results, &case.name, mode, b).map_or("—".into(), |x| mib(x.peak_rss_bytes))
            });
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                case.name,
                mode.label(),
                cells.join(" | ")
            );
        }
    }

    let _ = writeln!(s, "\n### Targets (issue 6)\n");
    let _ = writeln!(s, "| target | measured | met |\n|---|---|---|");
    for t in TARGETS {
        let u = summary(results, t.case, t.mode, "umstage");
        let k = summary(results, t.case, t.mode, "BuildKit");
        let bound = t
            .max_seconds
            .map_or(String::new(), |m| format!(", under {m} s"));
        let (measured, met) = match ratio(u, k) {
            Some(r) => {
                let median = u.map_or(f64::MAX, |u| u.median);
                let met = r <= t.max_ratio && t.max_seconds.is_none_or(|m| median < m);
                (
                    format!("{r:.2} × BuildKit ({median:.2} s)"),
                    if met { "yes" } else { "**no**" },
                )
            }
            None => ("not measured".into(), "—"),
        };
        let _ = writeln!(
            s,
            "| {} {} ≤ {} × BuildKit{bound} | {measured} | {met} |",
            t.case,
            t.mode.label(),
            t.max_ratio
        );
    }
    let [u_step, k_step, b_step] = steps;
    let _ = writeln!(
        s,
        "| per RUN step ≤ 10 ms | {} | {} |",
        u_step.map_or("not measured".into(), |v| format!(
            "{:.0} ms (BuildKit {}, Buildah {})",
            v * 1000.0,
            k_step.map_or("—".into(), |v| format!("{:.0} ms", v * 1000.0)),
            b_step.map_or("—".into(), |v| format!("{:.0} ms", v * 1000.0)),
        )),
        u_step.map_or("—", |v| if v <= STEP_TARGET { "yes" } else { "**no**" })
    );
    let big = summary(results, "big-layer", Mode::Cold, "umstage");
    let _ = writeln!(
        s,
        "| peak RSS, big-layer ≤ 64 MiB | {} | {} |",
        big.map_or("not measured".into(), |b| format!(
            "{} MiB",
            mib(b.peak_rss_bytes)
        )),
        big.map_or("—", |b| if b.peak_rss_bytes <= BIG_LAYER_RSS_TARGET {
            "yes"
        } else {
            "**no**"
        })
    );
    let incr = summary(results, "big-layer", Mode::Incr, "umstage");
    let _ = writeln!(
        s,
        "| big-layer incr: the 500 MB layer neither re-diffed nor recompressed | {} | judged from the time |",
        match (incr, big) {
            (Some(i), Some(c)) => format!("incr {:.2} s against cold {:.2} s", i.median, c.median),
            _ => "not measured".into(),
        }
    );

    render_ci(&mut s, results);

    let failures: Vec<_> = results
        .failures
        .iter()
        .filter(|((case, _), _)| case != "*")
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(s, "\n### Runs that failed\n");
        for ((case, builder), reason) in failures {
            let _ = writeln!(s, "- {builder} on {case}: {}", one_line(reason));
        }
    }
    let _ = writeln!(s, "\n{END}");
    s
}

/// The `ci` modes' table and issue 13's targets, when any ran.
fn render_ci(s: &mut String, results: &Results) {
    if !results.cases.iter().any(|c| {
        !ran(results, &c.name, Mode::Ci).is_empty()
            || !ran(results, &c.name, Mode::CiPush).is_empty()
    }) {
        return;
    }
    let _ = writeln!(
        s,
        "\n### CI: the cache from a registry into an empty store (issue 13)\n"
    );
    let _ = writeln!(
        s,
        "An earlier, untimed build of each builder exported its cache to the loopback \
         registry and pushed its image there. Each timed run then starts from an emptied \
         store and builds with that cache: **archive** writes the image archive (as above), \
         **push** pushes the image to the same registry (tag `ci`, beside the earlier one). \
         umstage: `--cache-to type=registry,…,mode=max` then `--cache-from type=registry,…`; \
         BuildKit: the inline cache (`--build-arg BUILDKIT_INLINE_CACHE=1`, `docker push`, \
         every image and the build cache pruned, `--cache-from IMAGE`), then `docker save` or \
         `docker push`; Buildah: `--layers --cache-to REPO` then `--cache-from REPO`, then \
         `buildah push`. Bytes are counted by a relay in the bench between the builders and \
         the registry (every byte on the wire each way, HTTP headers included; \
         \"layers\" are the message bodies that are not JSON: layer blobs, never manifests \
         or configs), median of the runs, decimal units. **{REFERENCE}**: `skopeo copy` of \
         umstage's final image from the registry to an OCI archive, the floor for an \
         archive run.{}\n",
        if results.lost_streams > 0 {
            format!(
                " The relay could not follow the HTTP of {} connections; their bytes after that \
                 point count as layers.",
                results.lost_streams
            )
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        s,
        "| case | output | builder | seconds | downloaded | of it layers | uploaded | of it layers |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for case in &results.cases {
        for (mode, output) in [(Mode::Ci, "archive"), (Mode::CiPush, "push")] {
            for (builder, x) in ran(results, &case.name, mode) {
                let t = x.traffic.unwrap_or_default();
                let _ = writeln!(
                    s,
                    "| {} | {output} | {builder} | {} | {} | {} | {} | {} |",
                    case.name,
                    cell(Some(x)),
                    bytes(t.down),
                    bytes(t.layers_down),
                    bytes(t.up),
                    bytes(t.layers_up),
                );
            }
        }
    }

    let _ = writeln!(s, "\n### Targets (issue 13)\n");
    let _ = writeln!(s, "| target | measured | met |\n|---|---|---|");
    let push = summary(results, "c-multistage", Mode::CiPush, "umstage");
    let (measured, met) = match push {
        Some(p) => {
            let t = p.traffic.unwrap_or_default();
            let met = p.median <= CI_PUSH_TARGET && t.layers_down == 0 && t.layers_up == 0;
            (
                format!(
                    "{:.2} s; layers {} down, {} up",
                    p.median,
                    bytes(t.layers_down),
                    bytes(t.layers_up)
                ),
                if met { "yes" } else { "**no**" },
            )
        }
        None => ("not measured".into(), "—"),
    };
    let _ = writeln!(
        s,
        "| c-multistage, registry cache into an empty store, `--push` back: ≤ {CI_PUSH_TARGET} s and 0 layer bytes moved | {measured} | {met} |"
    );
    let archive = summary(results, "c-multistage", Mode::Ci, "umstage");
    let floor = summary(results, "c-multistage", Mode::Ci, REFERENCE);
    let (measured, met) = match (archive, floor) {
        (Some(a), Some(f)) => {
            let r = a.median / f.median;
            (
                format!("{r:.2} × ({:.2} s against {:.2} s)", a.median, f.median),
                if r <= CI_ARCHIVE_TARGET {
                    "yes"
                } else {
                    "**no**"
                },
            )
        }
        _ => ("not measured".into(), "—"),
    };
    let _ = writeln!(
        s,
        "| c-multistage, registry cache into an empty store, image archive: ≤ {CI_ARCHIVE_TARGET} × downloading the final image alone ({REFERENCE}) | {measured} | {met} |"
    );
}

/// The builders (and the reference) with runs of `case` in `mode`.
fn ran(results: &Results, case: &str, mode: Mode) -> Vec<(&'static str, Summary)> {
    BUILDERS
        .iter()
        .chain(std::iter::once(&REFERENCE))
        .filter_map(|b| summary(results, case, mode, b).map(|x| (*b, x)))
        .collect()
}

/// Bytes in decimal units, exact below a kilobyte.
fn bytes(n: u64) -> String {
    let n = n as f64;
    if n < 1e3 {
        format!("{n} B")
    } else if n < 1e6 {
        format!("{:.1} KB", n / 1e3)
    } else {
        format!("{:.1} MB", n / 1e6)
    }
}

fn per_step(results: &Results, builder: &str) -> Option<f64> {
    let one = summary(results, "run-steps-1", Mode::Cold, builder)?;
    let twenty = summary(results, "run-steps-20", Mode::Cold, builder)?;
    Some((twenty.median - one.median) / 19.0)
}

fn one_line(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() > 400 {
        format!("{}…", joined.chars().take(400).collect::<String>())
    } else {
        joined
    }
}

fn command_text(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The 1-minute load average now.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let kib: u64 = m.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.0} GiB", kib as f64 / 1024.0 / 1024.0))
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{} ({}), Linux {}, {cores} cores, {memory}",
        command_text("sh", &["-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        cpu,
        command_text("uname", &["-r"]),
    )
}

#[cfg(test)]
mod tests {
    use super::{BEGIN, END, write};
    use crate::bench::Results;

    #[test]
    fn the_bench_section_is_replaced_and_other_sections_kept() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("benchmarks.md");
        std::fs::write(&path, "# Benchmarks\n\n## Parser\n\nparse: 3 ms\n")?;
        write(&path, &Results::default())?;
        write(&path, &Results::default())?;
        let text = std::fs::read_to_string(&path)?;
        assert_eq!(text.matches(BEGIN).count(), 1, "{text}");
        assert_eq!(text.matches(END).count(), 1, "{text}");
        assert!(text.starts_with("# Benchmarks\n\n<!--"), "{text}");
        assert!(
            text.trim_end().ends_with("## Parser\n\nparse: 3 ms"),
            "{text}"
        );
        Ok(())
    }
}
