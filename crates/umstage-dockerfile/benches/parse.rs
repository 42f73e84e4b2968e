//! Parse and expand a generated 10,000-line Dockerfile.
#![allow(missing_docs)] // criterion_group! generates an undocumented public function.

use criterion::{Criterion, criterion_group, criterion_main};
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

fn bench(c: &mut Criterion) {
    let text = generate(10_000);
    assert!(text.lines().count() >= 10_000);
    let args = BuildArgs::default();
    c.bench_function("parse+expand 10k lines", |b| {
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

criterion_group!(benches, bench);
criterion_main!(benches);
