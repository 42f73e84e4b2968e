//! `umstage`: builds container images from Dockerfiles with no daemon and no root.

mod admin;
mod ca_roots;
mod cli;
mod docker_flags;
mod doctor;
mod excerpt;
mod generate;
mod log_warnings;
mod progress;

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use umstage_build::flags::{BuildFlags, Prepared};
use umstage_build::options::Output;
use umstage_build::request::{BuildRequest, BuildResult};

use cli::{BuildArgs, Cli, Command, DebugCommand, ProgressMode};

/// The status of a process that panicked, as Rust's own.
const PANICKED: i32 = 101;

fn main() -> ExitCode {
    // Before anything else (no thread may exist yet): the RUN sandbox helper and the second
    // half of the user-namespace re-exec. The single-threaded helper keeps Rust's own panic
    // (it ends with status 101 and the step fails); the hook below is for the builder.
    umstage_snapshot::dispatch();
    exit_on_panic();
    ca_roots::ensure_root_store_not_empty();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => match docker_flags::explain(&e) {
            Some(message) => {
                eprintln!("{message}\n\nUsage: umstage build [OPTIONS] <CONTEXT>");
                return ExitCode::from(2);
            }
            None => e.exit(),
        },
    };
    init_logging(&cli.log_level);
    let root = match state_root(cli.root.as_deref()) {
        Ok(r) => r,
        Err(e) => return usage_error(&e),
    };
    match cli.command {
        Command::Debug(DebugCommand::Parse { file }) => debug_parse(&file),
        Command::Completion { shell } => report(
            generate::completion(shell, &mut std::io::stdout())
                .context("writing the completion script"),
        ),
        Command::ManPages { dir } => report(generate::man_pages(&dir)),
        Command::Build(args) => {
            let sandbox = match enter_sandbox(args.sandbox, &root) {
                Ok(ns) => ns,
                Err(code) => return code,
            };
            build(*args, root, &sandbox)
        }
        Command::Doctor(args) => report(doctor::run(&root, args.json)),
        Command::Info(args) => {
            match enter_sandbox(cli::SandboxChoice::Auto, &root) {
                Ok(ns) => warn_limited(&ns),
                Err(code) => return code,
            }
            report(admin::info(&root, args.json))
        }
        Command::Prune(args) => {
            match enter_sandbox(cli::SandboxChoice::Auto, &root) {
                Ok(ns) => warn_limited(&ns),
                Err(code) => return code,
            }
            report(admin::prune(&root, args.all, args.keep_storage))
        }
    }
}

/// Makes a panic in any thread end the whole process at once, with an error: left to unwind,
/// a panicking worker leaves the threads waiting on it waiting forever (a build that hangs,
/// deaf to SIGTERM). In the user-namespace child, the parent then exits with this status too,
/// and the sandboxes die with their init; nothing is left running.
fn exit_on_panic() {
    std::panic::set_hook(Box::new(|info| {
        use std::io::Write;
        let thread = std::thread::current();
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let backtrace = std::backtrace::Backtrace::capture();
        let backtrace = match backtrace.status() {
            std::backtrace::BacktraceStatus::Captured => format!("\n{backtrace}"),
            _ => String::new(),
        };
        // A closed standard error must not make this panic again.
        let _ = writeln!(
            std::io::stderr(),
            "umstage: error: internal error (a bug in umstage): thread '{}' panicked{location}: {}{backtrace}",
            thread.name().unwrap_or("unnamed"),
            info.payload_as_str().unwrap_or("(no message)"),
        );
        std::process::exit(PANICKED);
    }));
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("umstage: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Enters the sandbox tier asked for (or the best that works): for a namespace tier the outer
/// process re-executes itself and exits with the child's status, so only the child returns
/// from here. A build says the tier through its progress stream; the other commands warn here
/// when ids are limited.
fn enter_sandbox(
    choice: cli::SandboxChoice,
    root: &Path,
) -> Result<umstage_snapshot::doctor::Entered, ExitCode> {
    use umstage_snapshot::doctor::{Tier, TierChoice};
    let tier = match choice {
        cli::SandboxChoice::Auto => TierChoice::Auto,
        cli::SandboxChoice::Userns => TierChoice::Exactly(Tier::Userns),
        cli::SandboxChoice::UsernsSingle => TierChoice::Exactly(Tier::UsernsSingle),
        cli::SandboxChoice::Chroot => TierChoice::Exactly(Tier::Chroot),
        cli::SandboxChoice::Ptrace => TierChoice::Exactly(Tier::Ptrace),
    };
    umstage_snapshot::doctor::enter(tier, root).map_err(|e| {
        eprintln!("umstage: error: {e}");
        ExitCode::from(1)
    })
}

/// Says, for the commands that have no progress stream, that ids are limited and how to fix it.
fn warn_limited(entered: &umstage_snapshot::doctor::Entered) {
    if let Some(w) = &entered.warning {
        eprintln!("umstage: warning: {w}");
    }
}

/// `umstage debug parse FILE`: BuildKit's dump of the parse tree, or the error (exit 2).
fn debug_parse(file: &Path) -> ExitCode {
    let (name, text) = if file.as_os_str() == "-" {
        let mut text = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut text) {
            eprintln!("umstage: cannot read standard input: {e}");
            return ExitCode::from(2);
        }
        ("Dockerfile".to_string(), text)
    } else {
        match std::fs::read(file) {
            Ok(bytes) => (
                file.display().to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            ),
            Err(e) => {
                eprintln!("umstage: cannot read {}: {e}", file.display());
                return ExitCode::from(2);
            }
        }
    };
    match umstage_dockerfile::dump(&name, &text) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(level: &str) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(filter);
    tracing_subscriber::registry()
        .with(log)
        .with(log_warnings::ToProgress)
        .init();
}

fn usage_error(e: &anyhow::Error) -> ExitCode {
    eprintln!("umstage: {e:#}");
    ExitCode::from(2)
}

/// `--root`, else the default (`$XDG_DATA_HOME/umstage` or `~/.local/share/umstage`; as real
/// root `/var/lib/umstage`).
fn state_root(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    match flag {
        Some(root) => std::path::absolute(root)
            .with_context(|| format!("--root {}: cannot make it absolute", root.display())),
        None => Ok(umstage_snapshot::default_state_root()),
    }
}

fn build(args: BuildArgs, root: PathBuf, sandbox: &umstage_snapshot::doctor::Entered) -> ExitCode {
    let stdout_taken = args.outputs.iter().any(Output::writes_stdout);
    // A context read from standard input lives in a temporary directory for the build.
    let prepared = build_flags(&args).into_request(root, &mut std::io::stdin().lock(), &|name| {
        std::env::var(name).ok()
    });
    let Prepared {
        request,
        stdin_context: _stdin_context,
        load,
        load_dir: _load_dir,
    } = match prepared {
        Ok(p) => p,
        Err(e) => return usage_error(&e.into()),
    };
    if args.check {
        return check(&request);
    }
    let mode = if args.quiet {
        ProgressMode::Quiet
    } else {
        args.progress
    };
    let renderer = progress::renderer(mode, std::io::stderr().is_terminal());
    let forwarding = log_warnings::forward_to(renderer.clone());
    renderer.emit(umstage_build::event::Event::Sandbox {
        tier: sandbox.tier.to_string(),
        reason: sandbox.reason.clone(),
    });
    let outcome = umstage_build::build(&request, renderer.as_ref());
    let loaded = match (&outcome, &load) {
        (Ok(_), Some(archive)) => Some(
            umstage_build::load::find(archive)
                .and_then(|loader| umstage_build::load::load(loader, archive, renderer.as_ref())),
        ),
        _ => None,
    };
    drop(forwarding);
    renderer.finish();
    match loaded {
        Some(Ok(report)) if !report.is_empty() => eprintln!("{report}"),
        Some(Err(e)) => {
            eprintln!("umstage: error: {e}");
            return ExitCode::from(1);
        }
        _ => {}
    }
    match outcome {
        Ok(result) => {
            if let Err(e) = write_result_files(&args, &result) {
                eprintln!("umstage: {e:#}");
                return ExitCode::from(1);
            }
            if args.quiet
                && !stdout_taken
                && let Some(id) = &result.config_digest
            {
                println!("{id}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if let Some(excerpt) = excerpt::for_error(&e, &request.dockerfile) {
                eprint!("{excerpt}");
            }
            eprintln!("umstage: error: {e}");
            // Stopped by SIGINT or SIGTERM: exit as a shell reports a process the signal killed.
            let code = umstage_snapshot::Cancel::received_signal()
                .map_or(e.exit_code(), |signal| 128 + signal as u8);
            ExitCode::from(code)
        }
    }
}

/// `umstage build --check`: the build checks in BuildKit's verbose form, on standard error;
/// exit 1 when any is found.
fn check(request: &BuildRequest) -> ExitCode {
    let findings = umstage_build::event::Collect::default();
    if let Err(e) = umstage_build::check(request, &findings) {
        eprintln!("umstage: error: {e}");
        return ExitCode::from(e.exit_code());
    }
    let mut count = 0;
    for event in findings.events() {
        if let umstage_build::event::Event::Lint {
            rule,
            message,
            url,
            file,
            line,
            source,
        } = event
        {
            count += 1;
            eprintln!(
                "{rule} - {url}\n{message}\n{file}:{line}\n--------------------\n{line} | >>> {source}\n--------------------\n"
            );
        }
    }
    match count {
        0 => {
            eprintln!("Check complete, no warnings found.");
            ExitCode::SUCCESS
        }
        1 => {
            eprintln!("Check complete, 1 warning has been found!");
            ExitCode::from(1)
        }
        n => {
            eprintln!("Check complete, {n} warnings have been found!");
            ExitCode::from(1)
        }
    }
}

/// The build flags, plain, for the library to make the request of.
fn build_flags(a: &BuildArgs) -> BuildFlags {
    BuildFlags {
        context: a.context.clone(),
        file: a.file.clone(),
        tags: a.tags.clone(),
        outputs: a.outputs.clone(),
        target: a.target.clone(),
        build_args: a.build_args.clone(),
        build_contexts: a.build_contexts.clone(),
        platform: a.platform.clone(),
        no_cache: a.no_cache,
        no_cache_filter: a.no_cache_filter.clone(),
        cache_from: a.cache_from.clone(),
        cache_to: a.cache_to.clone(),
        network: a.network,
        secrets: a.secrets.clone(),
        ssh: a.ssh.clone(),
        allow: a.allow.clone(),
        labels: a.labels.clone(),
        snapshotter: a.snapshotter,
        insecure_registries: a.insecure_registries.clone(),
        push: a.push,
        jobs: a.jobs,
        add_hosts: a.add_hosts.clone(),
        shm_size: a.shm_size,
        ulimits: a.ulimits.clone(),
        annotations: a.annotations.clone(),
        load: a.load,
    }
}

/// Writes `--iidfile` and `--metadata-file`.
fn write_result_files(args: &BuildArgs, result: &BuildResult) -> anyhow::Result<()> {
    if let Some(path) = &args.iidfile {
        let id = result.config_digest.as_deref().unwrap_or_default();
        std::fs::write(path, id)
            .with_context(|| format!("writing --iidfile {}", path.display()))?;
    }
    if let Some(path) = &args.metadata_file {
        let mut meta = serde_json::Map::new();
        if let Some(c) = &result.config_digest {
            meta.insert("containerimage.config.digest".into(), c.clone().into());
        }
        if let Some(m) = &result.manifest {
            meta.insert("containerimage.digest".into(), m.digest.clone().into());
            meta.insert(
                "containerimage.descriptor".into(),
                serde_json::to_value(m).unwrap_or_default(),
            );
        }
        if !result.names.is_empty() {
            meta.insert("image.name".into(), result.names.join(",").into());
        }
        let text = serde_json::to_string_pretty(&meta)?;
        std::fs::write(path, text)
            .with_context(|| format!("writing --metadata-file {}", path.display()))?;
    }
    Ok(())
}
