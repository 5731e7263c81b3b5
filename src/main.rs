//! rdpull: pull container images in one streaming pass (fetch, verify, decompress,
//! unpack into overlay snapshots).
//!
//! The binary parses arguments ([`cli`]), builds the pipeline's options from them
//! ([`options`]), dispatches, and renders ([`progress`], the `images` table, the one-line
//! error). The work is done by `rdpull-pipeline` over `rdpull-fetch`, `rdpull-verify`,
//! `rdpull-unpack` and `rdpull-snapshot`.

mod cli;
mod options;
mod progress;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use rdpull_fetch::Reference;
use rdpull_pipeline::{pull, pull_if_missing, unpack_to, Ensured};
use rdpull_snapshot::Store;

use crate::cli::{with_default_command, Cli, Command};
use crate::options::BoxError;
use crate::progress::Progress;

fn main() -> ExitCode {
    // Errors reach the user as one line from main; libraries' own logging stays quiet
    // unless RDPULL_LOG asks for it (e.g. RDPULL_LOG=debug).
    let filter = std::env::var("RDPULL_LOG").unwrap_or_else(|_| {
        "off,rdpull=warn,rdpull_pipeline=warn,rdpull_fetch=warn,rdpull_unpack=warn,rdpull_snapshot=warn".into()
    });
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse_from(with_default_command(std::env::args_os().collect()));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&e),
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e.as_ref()),
    }
}

/// One line on stderr: the error and the causes it does not already spell out.
fn fail(e: &(dyn std::error::Error + 'static)) -> ExitCode {
    let msg = rdpull_fetch::with_causes(e.to_string(), e.source());
    eprintln!("rdpull: error: {}", msg.replace('\n', " "));
    ExitCode::FAILURE
}

async fn run(cli: Cli) -> Result<(), BoxError> {
    let (g, command) = (cli.global, cli.command);
    options::raise_fd_limit();
    let store = Arc::new(Store::open(&g.root)?);
    match command {
        Command::Pull { image } => {
            let reference: Reference = image.parse()?;
            let progress = Arc::new(Progress::new(g.quiet));
            let outcome = pull(store, &reference, &options::pull(&g)?, progress.clone()).await?;
            progress.finish(&reference, &outcome);
        }
        Command::Unpack { image, dir } => {
            let reference: Reference = image.parse()?;
            let progress = Arc::new(Progress::new(g.quiet));
            let ensured = pull_if_missing(
                store.clone(),
                &reference,
                &options::pull(&g)?,
                progress.clone(),
            )
            .await?;
            if let Ensured::Pulled(outcome) = &ensured {
                progress.finish(&reference, outcome);
            }
            let stats = unpack_to(&store, ensured.image(), &dir)?;
            if !g.quiet {
                println!(
                    "Unpacked {reference} to {} ({} entries)",
                    dir.display(),
                    stats.entries
                );
            }
        }
        Command::Images => {
            println!(
                "{:<50} {:<73} {:>10} {:>6}",
                "REF", "MANIFEST DIGEST", "SIZE", "LAYERS"
            );
            for i in store.images()? {
                println!(
                    "{:<50} {:<73} {:>10} {:>6}",
                    i.name,
                    i.manifest_digest.to_string(),
                    i.size(),
                    i.layers.len()
                );
            }
        }
    }
    Ok(())
}
