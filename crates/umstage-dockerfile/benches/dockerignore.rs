//! `.dockerignore` matching over a 20,000-path context (the many-files layout), with a
//! literal ignore file and with a glob one, in CPU time per full pass.
#![allow(missing_docs)] // criterion_group! generates an undocumented public function.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use umstage_dockerfile::Dockerignore;

/// 200 directories of 100 files, as the many-files bench case lays them out.
fn paths() -> Vec<String> {
    let mut out = Vec::with_capacity(20_200);
    for d in 0..200 {
        let top = if d < 50 { "keep" } else { "other" };
        out.push(format!("data/{top}/d{d:03}"));
        for f in 0..100 {
            out.push(format!("data/{top}/d{d:03}/f{f:04}.txt"));
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let paths = paths();
    for (name, rules) in [
        ("literal", "data/.complete\nprepare.sh\n"),
        (
            "globs",
            "**/*.log\nnode_modules\n*.tmp\ndata/other/d1[0-4]?\n!data/other/d12*/f00??.txt\n",
        ),
    ] {
        let ignore = Dockerignore::parse(rules).expect("parses");
        c.bench_function(&format!("is_excluded x20200 ({name})"), |b| {
            b.iter(|| {
                paths
                    .iter()
                    .filter(|p| ignore.is_excluded(black_box(p)))
                    .count()
            })
        });
    }
}

criterion_group! {
    name = matching;
    config = Criterion::default().measurement_time(Duration::from_secs(4)).sample_size(30);
    targets = bench
}
criterion_main!(matching);
