//! Parse and expand a generated 10,000-line Dockerfile.
#![allow(missing_docs)] // criterion_group! generates an undocumented public function.

use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use umstage_dockerfile::{BuildArgs, StageScope, parse};

fn generate(lines: usize) -> String {
    let mut s = String::from("# syntax=docker/dockerfile:1\nARG BASE=alpine:3.20\n");
    let mut n = 2;
    let mut stage = 0;
    while n < lines {
        s.push_str(&format!("FROM ${{BASE}} AS stage{stage}\n"));
        s.push_str("ARG VERSION=1.2.3\nENV APP_HOME=/opt/app PATH=/opt/app/bin:$PATH\n");
        n += 3;
        for i in 0..40 {
            let line = match i % 8 {
                0 => format!(
                    "RUN --mount=type=cache,target=/root/.cache echo step {i} && make -j4 target{i}\n"
                ),
                1 => format!("COPY --chown=1000:1000 src/{i} ${{APP_HOME}}/src/{i}\n"),
                2 => format!("ENV STEP_{i}=\"value ${{VERSION}}-{i}\"\n"),
                3 => format!("LABEL org.example.step{i}=\"${{VERSION:-none}}\"\n"),
                4 => "RUN apt-get update && \\\n    apt-get install -y curl\n".to_owned(),
                5 => format!("WORKDIR ${{APP_HOME}}/w{i}\n"),
                6 => format!("ARG OPT_{i}=${{VERSION%.*}}\n"),
                _ => "CMD [\"/opt/app/bin/run\", \"--flag\"]\n".to_owned(),
            };
            n += line.matches('\n').count();
            s.push_str(&line);
        }
        if stage > 0 {
            s.push_str(&format!("COPY --from=stage{} /out /in\n", stage - 1));
            n += 1;
        }
        stage += 1;
    }
    s
}

/// CPU time of the benchmarking thread: unlike wall time, it does not grow when other
/// processes on the shared machine take the cores.
struct ThreadCpuTime;

fn thread_cpu_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;
    fn start(&self) -> Duration {
        thread_cpu_now()
    }
    fn end(&self, start: Duration) -> Duration {
        thread_cpu_now().saturating_sub(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, _typical: f64, values: &mut [f64]) -> &'static str {
        for v in values {
            *v /= 1e6;
        }
        "ms (cpu)"
    }
    fn scale_throughputs(
        &self,
        _typical: f64,
        _t: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        for v in values {
            *v /= 1e6;
        }
        "ms (cpu)"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns (cpu)"
    }
}

fn parse_and_expand<M: Measurement + 'static>(c: &mut Criterion<M>, name: &str) {
    let text = generate(10_000);
    assert!(text.lines().count() >= 10_000);
    let args = BuildArgs::default();
    c.bench_function(name, |b| {
        b.iter(|| {
            let df = parse("Dockerfile", &text).expect("parses");
            let meta = df.meta_scope(&args).expect("meta");
            let graph = df.graph(&meta).expect("graph");
            let mut count = 0;
            for stage in &df.stages {
                let mut scope = StageScope::new(&args, &meta, []);
                for i in &stage.instructions {
                    scope.step(i).expect("expands");
                    count += 1;
                }
            }
            (graph.nodes.len(), count)
        })
    });
}

fn wall(c: &mut Criterion) {
    parse_and_expand(c, "parse+expand 10k lines (wall)");
}

fn cpu(c: &mut Criterion<ThreadCpuTime>) {
    parse_and_expand(c, "parse+expand 10k lines (cpu)");
}

criterion_group!(wall_time, wall);
criterion_group! {
    name = cpu_time;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = cpu
}
criterion_main!(wall_time, cpu_time);
