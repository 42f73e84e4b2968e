//! Property test: arbitrary bytes and near-Dockerfiles never panic the parser or expander,
//! finish, and produce bounded output. Deterministic (seeded) so failures reproduce.
//! Prints how many inputs ran.

use std::process::ExitCode;

mod harness;

use umstage_dockerfile::{BuildArgs, Dockerignore, Lexer, StageScope, dump, parse};

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

const PIECES: &[&str] = &[
    "FROM ",
    "RUN ",
    "COPY ",
    "ADD ",
    "ENV ",
    "ARG ",
    "LABEL ",
    "CMD ",
    "ENTRYPOINT ",
    "ONBUILD ",
    "HEALTHCHECK ",
    "SHELL ",
    "WORKDIR ",
    "USER ",
    "EXPOSE ",
    "VOLUME ",
    "STOPSIGNAL ",
    "MAINTAINER ",
    "FROMM ",
    "alpine",
    "AS ",
    "build",
    "--from=",
    "--mount=type=cache,target=/x ",
    "--mount=",
    "--platform=$P ",
    "--chown=",
    "--link ",
    "--interval=5s ",
    "CMD ",
    "NONE",
    "$",
    "${",
    "}",
    "${A:-",
    "${B#",
    "${C%%",
    "${D//",
    "/",
    ":",
    "?",
    "+",
    "-",
    "\"",
    "'",
    "\\",
    "`",
    "\\\n",
    "\n",
    "\n\n",
    "# escape=`\n",
    "# syntax=x\n",
    "#",
    "[",
    "]",
    "[\"a\", \"b\"]",
    ",",
    "=",
    "A=1",
    "<<EOF\n",
    "<<-EOF\n",
    "EOF\n",
    "\tEOF\n",
    "<<'E'\n",
    "E\n",
    " ",
    "\t",
    "0",
    "1",
    "é",
    "☃",
    "\r\n",
    "**",
    "!",
    "*.md",
    "\u{feff}",
    "\u{a0}",
];

fn near_dockerfile(rng: &mut Rng) -> String {
    let n = 1 + rng.below(40);
    let mut s = String::new();
    if rng.below(2) == 0 {
        s.push_str("FROM base AS s0\n");
    }
    for _ in 0..n {
        s.push_str(rng.pick(PIECES));
    }
    s
}

fn random_bytes(rng: &mut Rng) -> String {
    let n = rng.below(300);
    let bytes: Vec<u8> = (0..n).map(|_| (rng.next() & 0xff) as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn exercise(text: &str) {
    let _ = dump("Dockerfile", text);
    let lexer = Lexer::new('\\');
    let env = vec![
        ("A".to_owned(), "x y".to_owned()),
        ("B".to_owned(), "a/b/c".to_owned()),
    ];
    let _ = lexer.expand_word(text, &env);
    let _ = lexer.expand_words(text, &env);
    let _ = Dockerignore::parse(text).map(|d| d.is_excluded("a/b/c.md"));
    if let Ok(df) = parse("Dockerfile", text) {
        let _ = df.lints();
        let args = BuildArgs::default();
        if let Ok(meta) = df.meta_scope(&args) {
            if let (Ok(g), Ok(t)) = (df.graph(&meta), df.resolve_target(None)) {
                let _ = g.required(t);
            }
            for stage in &df.stages {
                let mut scope = StageScope::new(&args, &meta, []);
                for i in &stage.instructions {
                    if scope.step(i).is_err() {
                        break;
                    }
                }
            }
        }
    }
}

/// The process's peak resident set size (VmHWM) in KiB; 0 if it cannot be read.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> ExitCode {
    if !harness::should_run("fuzz") {
        return ExitCode::SUCCESS;
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut count = 0usize;
    for i in 0..12_000 {
        let text = if i % 3 == 0 {
            random_bytes(&mut rng)
        } else {
            near_dockerfile(&mut rng)
        };
        exercise(&text);
        count += 1;
    }
    // Pathological shapes: deep nesting, long lines, many continuations.
    let big = [
        "${a:-".repeat(5000),
        format!("FROM a\nRUN {}\n", "x".repeat(70_000)),
        format!("FROM a\nRUN [{}]\n", "[".repeat(50_000)),
        format!("FROM a\n{}", "ONBUILD ".repeat(5000)),
        format!("FROM a\nRUN a \\\n{}b\n", " \\\n".repeat(20_000)),
        format!("FROM a\nENV {}\n", "a=\"b\" ".repeat(5000)),
        format!("{}\n", "*".repeat(3000)),
        format!(
            "FROM a\nARG V={}\nENV X=${{V//a*b/x}} Y=${{V%%*c}}\n",
            "a".repeat(60_000)
        ),
        // Thousands of variables in one stage: lookups must not grow with the scope.
        (0..20_000usize).fold(String::from("FROM a\n"), |mut s, i| {
            s.push_str(&format!(
                "ENV V{i}=${{V{}:+y}}\nARG A{i}=$V{i}\n",
                i.saturating_sub(1)
            ));
            s
        }),
    ];
    for text in &big {
        exercise(text);
        count += 1;
    }
    let peak_kib = peak_rss_kib();
    println!("fuzz: {count} generated inputs, no panic, peak RSS {peak_kib} KiB");
    // Memory stays bounded: the whole run, pathological inputs included, fits in 512 MiB.
    if peak_kib == 0 || peak_kib > 512 * 1024 {
        println!("fuzz: peak RSS {peak_kib} KiB is outside (0, 512 MiB]");
        println!("{count} passed, 1 failed");
        return ExitCode::FAILURE;
    }
    println!("{count} passed, 0 failed");
    ExitCode::SUCCESS
}
