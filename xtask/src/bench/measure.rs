//! Timing a builder's commands and sampling the peak RSS of its process tree.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::relay::Traffic;

/// How often the process tree's memory is sampled while a command runs.
const SAMPLE_EVERY: Duration = Duration::from_millis(40);

/// What one timed run of a builder took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Measurement {
    /// Wall time of all the run's commands together.
    pub seconds: f64,
    /// Largest sum of resident memory over the builder's process tree seen while it ran.
    pub peak_rss_bytes: u64,
    /// Bytes to and from the registry, where the run went through the counting relay.
    pub traffic: Option<Traffic>,
}

impl Measurement {
    /// Adds a later command of the same run (e.g. the export after the build).
    pub fn then(self, next: Measurement) -> Measurement {
        Measurement {
            seconds: self.seconds + next.seconds,
            peak_rss_bytes: self.peak_rss_bytes.max(next.peak_rss_bytes),
            traffic: match (self.traffic, next.traffic) {
                (Some(a), Some(b)) => Some(a.plus(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

/// Runs `cmd` to completion, timing it and sampling the RSS of its process
/// tree plus the trees of `extra_roots` (a daemon doing the work for it).
/// Its output goes to `log`; a failure shows the log's tail.
pub fn timed(cmd: &mut Command, extra_roots: &[u32], log: &std::path::Path) -> Result<Measurement> {
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone().context("duplicating the log file")?;
    let started = Instant::now();
    let mut child: Child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("cannot run `{}`", umstage_testutil::command_line(cmd)))?;
    let mut roots = vec![child.id()];
    roots.extend_from_slice(extra_roots);
    let mut peak = 0;
    let status = loop {
        peak = peak.max(tree_rss_bytes(&roots));
        if let Some(status) = child.try_wait().context("waiting for a builder")? {
            break status;
        }
        std::thread::sleep(SAMPLE_EVERY);
    };
    let seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "`{}` failed ({status}):\n{}",
            umstage_testutil::command_line(cmd),
            tail.join("\n")
        );
    }
    Ok(Measurement {
        seconds,
        peak_rss_bytes: peak,
        traffic: None,
    })
}

/// Sum of the resident memory of `roots` and all their descendants, now.
pub fn tree_rss_bytes(roots: &[u32]) -> u64 {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = parent_of(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let page = page_size();
    let mut total = 0;
    let mut stack = roots.to_vec();
    while let Some(pid) = stack.pop() {
        total += resident_pages(pid) * page;
        if let Some(kids) = children.get(&pid) {
            stack.extend(kids);
        }
    }
    total
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

fn resident_pages(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

/// Median and range of a set of runs.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// Median seconds.
    pub median: f64,
    /// Fastest run.
    pub min: f64,
    /// Slowest run.
    pub max: f64,
    /// Median of the runs' peak RSS.
    pub peak_rss_bytes: u64,
    /// Median of each count of the runs' traffic, if they were counted.
    pub traffic: Option<Traffic>,
}

/// Summarises `runs` (none gives `None`).
pub fn summarize(runs: &[Measurement]) -> Option<Summary> {
    if runs.is_empty() {
        return None;
    }
    let mut seconds: Vec<f64> = runs.iter().map(|m| m.seconds).collect();
    seconds.sort_by(f64::total_cmp);
    let rss = middle(runs.iter().map(|m| m.peak_rss_bytes));
    let traffic: Vec<Traffic> = runs.iter().filter_map(|m| m.traffic).collect();
    let traffic = (!traffic.is_empty()).then(|| Traffic {
        down: middle(traffic.iter().map(|t| t.down)),
        up: middle(traffic.iter().map(|t| t.up)),
        layers_down: middle(traffic.iter().map(|t| t.layers_down)),
        layers_up: middle(traffic.iter().map(|t| t.layers_up)),
    });
    Some(Summary {
        median: median(&seconds),
        min: seconds[0],
        max: seconds[seconds.len() - 1],
        peak_rss_bytes: rss,
        traffic,
    })
}

/// The middle value (the upper one of an even count); 0 for none.
fn middle(values: impl Iterator<Item = u64>) -> u64 {
    let mut values: Vec<u64> = values.collect();
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::{Measurement, summarize, tree_rss_bytes};
    use crate::bench::relay::Traffic;

    fn m(seconds: f64, rss: u64) -> Measurement {
        Measurement {
            seconds,
            peak_rss_bytes: rss,
            traffic: None,
        }
    }

    fn t(down: u64, layers_down: u64) -> Option<Traffic> {
        Some(Traffic {
            down,
            up: 1,
            layers_down,
            layers_up: 0,
        })
    }

    #[test]
    fn traffic_adds_up_within_a_run_and_has_a_median_across_runs() {
        let build = Measurement {
            traffic: t(10, 5),
            ..m(1.0, 1)
        };
        let push = Measurement {
            traffic: t(3, 0),
            ..m(0.5, 2)
        };
        let run = build.then(push);
        assert_eq!(
            run.traffic.map(|t| (t.down, t.up, t.layers_down)),
            Some((13, 2, 5))
        );
        assert_eq!(build.then(m(1.0, 1)).traffic, t(10, 5));
        let runs = [
            run,
            build,
            Measurement {
                traffic: t(20, 9),
                ..m(1.0, 1)
            },
        ];
        assert_eq!(summarize(&runs).and_then(|s| s.traffic), t(13, 5));
        assert_eq!(summarize(&[m(1.0, 1)]).and_then(|s| s.traffic), None);
    }

    #[test]
    fn summary_has_median_and_range() {
        let s = summarize(&[m(3.0, 30), m(1.0, 10), m(2.0, 20)]);
        assert_eq!(
            s.map(|s| (s.median, s.min, s.max, s.peak_rss_bytes)),
            Some((2.0, 1.0, 3.0, 20))
        );
        let even = summarize(&[m(1.0, 1), m(4.0, 1), m(2.0, 1), m(3.0, 1)]);
        assert_eq!(even.map(|s| s.median), Some(2.5));
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn own_process_tree_has_resident_memory() {
        assert!(tree_rss_bytes(&[std::process::id()]) > 1 << 20);
    }
}
