//! Shell completions and man pages, generated from the same clap definitions as the parser, so
//! they can never list a flag that does not exist or miss one that does.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::Cli;

/// Writes the completion script for `shell` to `out`. Made in memory first: clap_complete
/// panics on a failed write, and a closed pipe (`| head`) is not a bug.
pub fn completion(shell: clap_complete::Shell, out: &mut dyn Write) -> std::io::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "umstage", &mut script);
    out.write_all(&script)
}

/// Writes `umstage.1` and one page per subcommand (`umstage-build.1`, …) into `dir`.
pub fn man_pages(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))
}
