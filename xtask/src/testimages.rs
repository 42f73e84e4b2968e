//! `cargo xtask testimages`: the offline base images, and optionally a registry serving them.

use std::io::BufRead;

use anyhow::{Context, Result, bail};
use umstage_testutil::images::{self, ImageLayout};
use umstage_testutil::registry::Registry;

use crate::setup::install_packages;

/// Options of `testimages`.
#[derive(Debug, Default)]
struct Options {
    debian: bool,
    serve: bool,
    port: Option<u16>,
}

pub fn run(args: &[String]) -> Result<()> {
    let options = parse(args)?;
    let made = make(options.debian)?;
    for image in &made {
        println!("{} {}", image.name_tag(), image.oci_reference());
    }
    if options.serve {
        serve(&made, options.port)?;
    }
    Ok(())
}

fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--debian" => options.debian = true,
            "--serve" => options.serve = true,
            "--port" => {
                let port = args.next().context("--port needs a number")?;
                options.port = Some(port.parse().with_context(|| format!("bad port `{port}`"))?);
            }
            other => bail!("unknown argument `{other}` (try `cargo xtask help`)"),
        }
    }
    Ok(options)
}

/// What making (and serving) the images uses.
const IMAGE_PACKAGES: &[&str] = &["busybox-static", "umoci", "skopeo", "docker-registry"];

/// Makes busybox, and debian-build when asked (fast when already made); as
/// root, installs the tools that takes first.
pub fn make(debian: bool) -> Result<Vec<ImageLayout>> {
    if umstage_testutil::is_root() {
        install_packages(IMAGE_PACKAGES)?;
        if debian {
            install_packages(&["debootstrap"])?;
        }
    }
    let mut made = vec![images::busybox().context("making busybox:latest")?];
    if debian {
        if images::existing("debian-build", "bookworm").is_none() {
            eprintln!("xtask: running debootstrap for debian-build:bookworm (a minute or more)");
        }
        made.push(images::debian_build().context("making debian-build:bookworm")?);
    }
    Ok(made)
}

fn serve(made: &[ImageLayout], port: Option<u16>) -> Result<()> {
    let registry = match port {
        Some(port) => Registry::start_on_port(port),
        None => Registry::start(),
    }
    .context("starting docker-registry")?;
    for image in made {
        let reference = image.push(&registry)?;
        println!("serving {reference}");
    }
    println!(
        "registry on http://{} (press Enter or end input to stop)",
        registry.host()
    );
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading stdin")?;
    Ok(())
}
