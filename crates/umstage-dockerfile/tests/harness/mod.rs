//! Just enough of libtest's command line for a `harness = false` test to work under both
//! `cargo test` and `cargo nextest` (which lists tests with `--list` and runs them by name).

/// Whether this binary's single test, `name`, should run now. Answers `--list` itself.
pub fn should_run(name: &str) -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    if has("--list") {
        if !has("--ignored") {
            println!("{name}: test");
        }
        return false;
    }
    if has("--ignored") {
        return false;
    }
    let exact = has("--exact");
    // Options that take their value as the next argument; that value is not a filter.
    const WITH_VALUE: &[&str] = &[
        "--format",
        "--color",
        "--test-threads",
        "--skip",
        "--logfile",
        "-Z",
    ];
    let mut filters: Vec<&String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if WITH_VALUE.contains(&a.as_str()) {
            it.next();
        } else if !a.starts_with('-') {
            filters.push(a);
        }
    }
    filters.is_empty()
        || filters.iter().any(|f| {
            if exact {
                f.as_str() == name
            } else {
                name.contains(f.as_str())
            }
        })
}
