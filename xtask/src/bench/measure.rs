//! Timing a builder's commands and sampling the peak RSS of its process tree.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How often the process tree's memory is sampled while a command runs.
const SAMPLE_EVERY: Duration = Duration::from_millis(40);

/// What one timed run of a builder took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Measurement {
    /// Wall time of all the run's commands together.
    pub seconds: f64,
    /// Largest sum of resident memory over the builder's process tree seen while it ran.
    pub peak_rss_bytes: u64,
}

impl Measurement {
    /// Adds a later command of the same run (e.g. the export after the build).
    pub fn then(self, next: Measurement) -> Measurement {
        Measurement {
            seconds: self.seconds + next.seconds,
            peak_rss_bytes: self.peak_rss_bytes.max(next.peak_rss_bytes),
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
}

/// Summarises `runs` (none gives `None`).
pub fn summarize(runs: &[Measurement]) -> Option<Summary> {
    if runs.is_empty() {
        return None;
    }
    let mut seconds: Vec<f64> = runs.iter().map(|m| m.seconds).collect();
    seconds.sort_by(f64::total_cmp);
    let mut rss: Vec<u64> = runs.iter().map(|m| m.peak_rss_bytes).collect();
    rss.sort_unstable();
    Some(Summary {
        median: median(&seconds),
        min: seconds[0],
        max: seconds[seconds.len() - 1],
        peak_rss_bytes: rss[rss.len() / 2],
    })
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

    fn m(seconds: f64, rss: u64) -> Measurement {
        Measurement {
            seconds,
            peak_rss_bytes: rss,
        }
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
