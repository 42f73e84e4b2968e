//! Layer export benchmark: 500 MB of mixed data (200 MB random, 200 MB text, 100 MB zeros)
//! turned into a layer in the content store, per compression; reports input throughput and the
//! process's peak resident memory during the export.
//!
//! `cargo bench -p umstage-oci --bench layer_export [-- --size-mb N] [--levels] [--sink]`
//!
//! Besides wall time it reports CPU time (all threads, and the main thread alone) and a
//! projection for two idle cores, max(CPU / 2, main-thread CPU), because the shared
//! development machines are rarely idle.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use umstage_oci::ContentStore;
use umstage_oci::changes::{Change, ChangeKind, ChangeSet};
use umstage_oci::compress::Compression;
use umstage_oci::layer::{LayerOptions, write_layer};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

const WORDS: &[&str] = &[
    "the",
    "layer",
    "image",
    "build",
    "container",
    "registry",
    "digest",
    "manifest",
    "config",
    "rootfs",
    "overlay",
    "snapshot",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "with",
    "on",
    "as",
    "by",
    "this",
    "from",
    "at",
    "be",
    "or",
    "an",
    "function",
    "return",
    "struct",
    "impl",
    "let",
    "mut",
    "match",
    "Some",
    "None",
    "Ok",
    "Err",
    "use",
    "pub",
    "fn",
    "=>",
    "{",
    "}",
];

fn write_file(
    path: &Path,
    bytes: usize,
    mut fill: impl FnMut(&mut Vec<u8>),
) -> std::io::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut buf = Vec::with_capacity(1 << 16);
    let mut written = 0;
    while written < bytes {
        buf.clear();
        fill(&mut buf);
        let n = buf.len().min(bytes - written);
        file.write_all(&buf[..n])?;
        written += n;
    }
    file.flush()
}

/// Makes the source tree; returns the change set and the total bytes of file content.
fn make_source(dir: &Path, total_mb: usize) -> std::io::Result<(ChangeSet, u64)> {
    let mb = 1 << 20;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut changes = Vec::new();
    let mut total = 0u64;
    let add = |rel: String, changes: &mut Vec<Change>| {
        changes.push(Change {
            path: rel.into(),
            kind: ChangeKind::Upsert,
        })
    };
    for kind in ["random", "text", "zeros"] {
        std::fs::create_dir_all(dir.join(kind))?;
        add(kind.to_owned(), &mut changes);
    }
    let share = |fraction: usize| total_mb * fraction / 5 * mb;
    // Random: 4 MB files. Text: 1 MB files. Zeros: 10 MB files.
    for (kind, bytes, file_size) in [
        ("random", share(2), 4 * mb),
        ("text", share(2), mb),
        ("zeros", share(1), 10 * mb),
    ] {
        for i in 0..bytes.div_ceil(file_size) {
            let size = file_size.min(bytes - i * file_size);
            let rel = format!("{kind}/f{i:04}");
            match kind {
                "random" => write_file(&dir.join(&rel), size, |b| {
                    for _ in 0..8192 {
                        b.extend_from_slice(&rng.next().to_le_bytes());
                    }
                })?,
                "text" => write_file(&dir.join(&rel), size, |b| {
                    while b.len() < 65536 {
                        let r = rng.next();
                        b.extend_from_slice(WORDS[(r % WORDS.len() as u64) as usize].as_bytes());
                        b.push(if r >> 60 == 0 { b'\n' } else { b' ' });
                    }
                })?,
                _ => write_file(&dir.join(&rel), size, |b| b.resize(65536, 0))?,
            }
            add(rel, &mut changes);
            total += size as u64;
        }
    }
    Ok((
        ChangeSet {
            source: dir.to_owned(),
            changes,
        },
        total,
    ))
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU seconds this process has used.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given, which is plain old data.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU seconds used by the calling thread alone (the pipeline's serial part runs on it).
fn thread_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after the comm; clock ticks.
    // SAFETY: sysconf reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (field(11) + field(12)) / ticks.max(1.0)
}

fn reset_peak_rss() {
    // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux ≥ 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let size_mb = args
        .iter()
        .position(|a| a == "--size-mb")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let all_levels = args.iter().any(|a| a == "--levels");
    // `--sink`: compress to nowhere, to separate the pipeline's cost from the store's disk writes.
    let sink = args.iter().any(|a| a == "--sink");
    let work = tempfile::Builder::new()
        .prefix("umstage-bench-")
        .tempdir_in(std::env::var_os("BENCH_DIR").unwrap_or_else(|| "/var/tmp".into()))?;
    let source = work.path().join("source");
    println!("generating {size_mb} MB of mixed data (2/5 random, 2/5 text, 1/5 zeros)…");
    let (changes, total) = make_source(&source, size_mb)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut cases = vec![
        ("gzip", Compression::GZIP),
        ("zstd", Compression::ZSTD),
        ("none", Compression::None),
    ];
    if all_levels {
        cases.extend([
            ("gzip", Compression::Gzip { level: 6 }),
            ("gzip", Compression::Gzip { level: 9 }),
            ("zstd", Compression::Zstd { level: 3 }),
            ("zstd", Compression::Zstd { level: 6 }),
            ("zstd", Compression::Zstd { level: 9 }),
        ]);
    }
    println!(
        "{:<6} {:>5} {:>7} {:>8} {:>11} {:>8} {:>10} {:>14} {:>7} {:>13}",
        "codec",
        "level",
        "threads",
        "seconds",
        "MB/s input",
        "CPU s",
        "main CPU s",
        "MB/s 2 idle*",
        "ratio",
        "peak RSS MiB"
    );
    for (name, compression) in cases {
        let level = match compression {
            Compression::Gzip { level } => level.to_string(),
            Compression::Zstd { level } => level.to_string(),
            Compression::None => "-".into(),
        };
        let store = ContentStore::open(work.path().join(format!("store-{name}-{level}")))?;
        reset_peak_rss();
        let start = Instant::now();
        let cpu_start = cpu_seconds();
        let main_start = thread_cpu_seconds();
        let options = LayerOptions {
            compression,
            source_date_epoch: Some(0),
            threads,
        };
        let (blob_size, tar_size) = if sink {
            let (counter, _, tar_size) = umstage_oci::layer::write_compressed(
                umstage_oci::digest::HashingWriter::new(std::io::sink()),
                &changes,
                &options,
            )?;
            (counter.written(), tar_size)
        } else {
            let layer = write_layer(&store, &changes, &options)?;
            (layer.blob.size, layer.tar_size)
        };
        let seconds = start.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu_start;
        let main_cpu = thread_cpu_seconds() - main_start;
        // On two idle cores the run takes at least max(all CPU / 2, the main thread's CPU).
        let projected = total as f64 / 1e6 / (cpu / 2.0).max(main_cpu);
        let peak = peak_rss_kib() as f64 / 1024.0;
        println!(
            "{name:<6} {level:>5} {threads:>7} {seconds:>8.2} {:>11.0} {cpu:>8.2} {main_cpu:>10.2} {projected:>14.0} {:>7.3} {peak:>13.1}",
            total as f64 / 1e6 / seconds,
            blob_size as f64 / tar_size as f64,
        );
        std::fs::remove_dir_all(store.root())?;
    }
    Ok(())
}
