//! rdpull: pull container images in one streaming pass (fetch, verify, decompress,
//! unpack into overlay snapshots).
//!
//! The binary parses arguments ([`cli`]), builds the pipeline's options from them
//! ([`options`]), turns signals into cancellation ([`signals`]), dispatches, and renders
//! ([`progress`], [`render`], the one-line error). The work is done by `rdpull-pipeline`
//! over `rdpull-fetch`, `rdpull-verify`, `rdpull-unpack` and `rdpull-snapshot`.

mod cli;
mod options;
mod progress;
mod render;
mod signals;

use std::io::stdout;
use std::process::ExitCode;
use std::sync::Arc;

use rdpull_fetch::Reference;
use rdpull_pipeline::{find_images, pull, pull_if_missing, Ensured, PullError};
use rdpull_snapshot::{ImageRecord, Store};
use tokio_util::sync::CancellationToken;

use crate::cli::{with_default_command, Cli, Command, Global, ListFormat};
use crate::options::BoxError;
use crate::progress::Progress;
use crate::signals::Signals;

fn main() -> ExitCode {
    // The built-in launcher's helper: single-threaded, before anything else starts.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let [_, cmd, bundle, id] = &args[..] {
        if cmd == rdpull_run::launch::LAUNCH_COMMAND {
            let code = rdpull_run::launch::launch(bundle.as_ref(), &id.to_string_lossy());
            return ExitCode::from(u8::try_from(code).unwrap_or(255));
        }
    }
    let cli = cli::parse(with_default_command(args));
    // Errors reach the user as one line from main; libraries' own logging stays quiet
    // unless RDPULL_LOG asks for it (e.g. RDPULL_LOG=debug). The snapshotter daemon logs
    // what it serves, pulls and falls back on.
    let filter = std::env::var("RDPULL_LOG").unwrap_or_else(|_| {
        let level = match cli.command {
            Command::Snapshotter { .. } => "info",
            _ => "warn",
        };
        format!(
            "off,rdpull={level},rdpull_pipeline=warn,rdpull_fetch=warn,rdpull_unpack=warn,\
             rdpull_snapshot=warn,rdpull_containerd_snapshotter={level}"
        )
    });
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&e),
    };
    let (result, signal) = rt.block_on(async {
        let signals = match Signals::watch() {
            Ok(s) => s,
            Err(e) => return (Err(e.into()), None),
        };
        (run(cli, &signals.cancel).await, signals.received())
    });
    match (result, signal) {
        (Ok(code), _) => code,
        (Err(e), Some(number)) if interrupted(e.as_ref()) => {
            eprintln!(
                "rdpull: interrupted by {}: what was committed is kept, the rest removed",
                signals::name(number)
            );
            ExitCode::from(128 + number as u8)
        }
        (Err(e), _) => fail(e.as_ref()),
    }
}

/// Did the work stop because a signal cancelled it (a pull, or a flattening)?
fn interrupted(e: &(dyn std::error::Error + 'static)) -> bool {
    use rdpull_snapshot::StoreError;
    matches!(e.downcast_ref(), Some(PullError::Interrupted))
        || matches!(e.downcast_ref(), Some(StoreError::Interrupted))
        || matches!(
            e.downcast_ref(),
            Some(rdpull_run::RunError::Store(StoreError::Interrupted))
        )
}

/// `inspect`: every image each argument names, as one JSON array.
fn inspect(store: &Store, args: &[String]) -> Result<(), BoxError> {
    if args.is_empty() {
        return shown(render::inspect(&mut stdout(), &store.details()?));
    }
    let mut details = Vec::new();
    for arg in args {
        for image in find_images(store, arg)? {
            details.push(store.inspect(&image)?);
        }
    }
    shown(render::inspect(&mut stdout(), &details))
}

/// A closed stdout (`rdpull images | head`) ends the listing quietly, as for other tools.
fn shown(written: std::io::Result<()>) -> Result<(), BoxError> {
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// `rmi`: every argument is tried; each failure is one line, and any makes the exit 1.
fn remove_images(store: &Store, args: &[String], force: bool) -> Result<(), BoxError> {
    let mut failed = 0;
    for arg in args {
        match rdpull_pipeline::remove_images(store, arg, force) {
            Ok(removed) => removed
                .iter()
                .for_each(|i| println!("Untagged: {}", i.name)),
            Err(e) if args.len() == 1 => return Err(e.into()),
            Err(e) => {
                fail(&e);
                failed += 1;
            }
        }
    }
    match failed {
        0 => Ok(()),
        n => Err(format!("{n} of {} images not removed", args.len()).into()),
    }
}

/// One line on stderr: the error and the causes it does not already spell out.
fn fail(e: &(dyn std::error::Error + 'static)) -> ExitCode {
    let msg = rdpull_fetch::with_causes(e.to_string(), e.source());
    eprintln!("rdpull: error: {}", msg.replace('\n', " "));
    ExitCode::FAILURE
}

/// `rdpull unpack`: the image (pulled if needed) flattened into `dir`.
async fn unpack(
    store: Arc<Store>,
    g: &Global,
    image: &str,
    dir: &std::path::Path,
    cancel: &CancellationToken,
) -> Result<(), BoxError> {
    let (reference, image) = ensure_image(&store, g, image, cancel, Progress::new(g.quiet)).await?;
    // On a blocking thread, so that a signal can stop it between two entries.
    let (dir2, cancel) = (dir.to_path_buf(), cancel.clone());
    let stats = tokio::task::spawn_blocking(move || {
        rdpull_snapshot::flatten_image(&store, &image, &dir2, &|| cancel.is_cancelled())
    })
    .await??;
    if !g.quiet {
        println!(
            "Unpacked {reference} to {} ({} entries)",
            dir.display(),
            stats.entries
        );
    }
    Ok(())
}

/// `rdpull bundle`: the image (pulled if needed) as an OCI bundle in `dir`.
async fn bundle(
    store: Arc<Store>,
    g: &Global,
    image: &str,
    dir: &std::path::Path,
    run: rdpull_run::RunOptions,
    cancel: &CancellationToken,
) -> Result<(), BoxError> {
    let (reference, image) = ensure_image(&store, g, image, cancel, Progress::new(g.quiet)).await?;
    let (dir2, cancel) = (dir.to_path_buf(), cancel.clone());
    let user = run.user.clone();
    let id = tokio::task::spawn_blocking(move || {
        rdpull_run::bundle_image(&store, &image, &dir2, &run, &|| cancel.is_cancelled())
    })
    .await?
    .map_err(|e| credentials_hint(e, "bundle", user.as_deref()))?;
    if !g.quiet {
        println!(
            "Bundle of {reference} in {} (rootfs flattened), for container {}",
            dir.display(),
            id.as_str()
        );
    }
    Ok(())
}

/// `rdpull pull`.
async fn pull_image(
    store: Arc<Store>,
    g: &Global,
    image: &str,
    cancel: &CancellationToken,
) -> Result<(), BoxError> {
    let reference: Reference = image.parse()?;
    let progress = Arc::new(Progress::new(g.quiet));
    let opts = options::pull(g, cancel)?;
    let outcome = pull(store, &reference, &opts, progress.clone()).await?;
    progress.finish(&reference, &outcome);
    Ok(())
}

/// `rdpull rm`: each container by id or unique prefix; its full id is printed.
fn remove_containers(store: &Store, ids: &[String]) -> Result<(), BoxError> {
    for id in ids {
        println!("{}", rdpull_run::remove_container_by_id(store, id)?);
    }
    Ok(())
}

/// `rdpull run`: a container of the image (pulled if needed), run by `runtime` until it
/// exits. The exit code is the command's; a failure is reported here, with 125, 126 or
/// 127 as `docker run` uses them.
async fn run_container(
    store: Arc<Store>,
    g: &Global,
    image: &str,
    opts: rdpull_run::RunOptions,
    rm: bool,
    runtime: rdpull_run::Runtime,
    cancel: &CancellationToken,
) -> ExitCode {
    let ran: Result<i32, BoxError> = async {
        let (_, image) =
            ensure_image(&store, g, image, cancel, Progress::on_stderr(g.quiet)).await?;
        let user = opts.user.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let mut c = rdpull_run::Container::create(&store, &image, &opts)?;
            let code = c.run(&runtime, signals::forward_to);
            signals::forward_to(0);
            if rm {
                c.remove(&store);
            }
            code
        })
        .await?;
        joined.map_err(|e| credentials_hint(e, "run", user.as_deref()))
    }
    .await;
    match ran {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        Err(e) => {
            let code = e
                .downcast_ref::<rdpull_run::RunError>()
                .map_or(125, rdpull_run::RunError::exit_code);
            fail(e.as_ref());
            ExitCode::from(code)
        }
    }
}

/// `--user` after `run` or `bundle` is the container's user. When a `NAME:SECRET` there
/// names no user or group of the image, it may be registry credentials typed after the
/// command: the error says where those go.
fn credentials_hint(e: rdpull_run::RunError, command: &str, user: Option<&str>) -> BoxError {
    use rdpull_run::{RunError, SpecError};
    let unknown = matches!(
        e,
        RunError::Setup(SpecError::UnknownUser(_) | SpecError::UnknownGroup(_))
    );
    if unknown && user.is_some_and(|u| u.contains(':')) {
        format!(
            "{e} (registry credentials go before the command: \
             rdpull --user USER:PASSWORD {command} ...)"
        )
        .into()
    } else {
        e.into()
    }
}

/// `rdpull snapshotter`: containerd's snapshots API on `address` until `cancel` fires.
async fn snapshotter(
    store: Arc<Store>,
    g: &Global,
    address: std::path::PathBuf,
    socket_group: Option<&str>,
    cancel: &CancellationToken,
) -> Result<(), BoxError> {
    let options = rdpull_containerd_snapshotter::daemon::DaemonOptions {
        address,
        socket_group: socket_group.map(options::group_id).transpose()?,
        pull: options::pull(g, cancel)?,
    };
    Ok(rdpull_containerd_snapshotter::daemon::serve(store, options).await?)
}

/// The stored image `image` names, pulled first (with progress) if the store lacks it.
async fn ensure_image(
    store: &Arc<Store>,
    g: &Global,
    image: &str,
    cancel: &CancellationToken,
    progress: Progress,
) -> Result<(Reference, ImageRecord), BoxError> {
    let reference: Reference = image.parse()?;
    let progress = Arc::new(progress);
    let opts = options::pull(g, cancel)?;
    let ensured = pull_if_missing(store.clone(), &reference, &opts, progress.clone()).await?;
    if let Ensured::Pulled(outcome) = &ensured {
        progress.finish(&reference, outcome);
    }
    Ok((reference, ensured.image().clone()))
}

/// Dispatch: one arm per command, each a call (longer than the usual bound because the
/// commands are many, not because an arm holds logic).
#[allow(clippy::too_many_lines)]
async fn run(cli: Cli, cancel: &CancellationToken) -> Result<ExitCode, BoxError> {
    let (g, command) = (cli.global, cli.command);
    options::require_root(&command)?;
    options::raise_fd_limit();
    let store = Arc::new(Store::open(&g.root)?);
    match command {
        Command::Pull { image } => pull_image(store, &g, &image, cancel).await?,
        Command::Unpack { image, dir } => unpack(store, &g, &image, &dir, cancel).await?,
        Command::Bundle {
            run,
            image,
            dir,
            command,
        } => {
            bundle(
                store,
                &g,
                &image,
                &dir,
                options::run(&run, &command)?,
                cancel,
            )
            .await?
        }
        Command::Images { format } => {
            let json = format == ListFormat::Json;
            shown(render::images(
                &mut stdout(),
                &store.images()?,
                g.quiet,
                json,
            ))?;
        }
        Command::Rmi { images, force } => remove_images(&store, &images, force)?,
        Command::Run {
            run,
            rm,
            runtime,
            image,
            command,
        } => {
            let opts = match options::run(&run, &command) {
                Ok(opts) => opts,
                // As every failure of `run` before the container starts: 125.
                Err(e) => {
                    fail(e.as_ref());
                    return Ok(ExitCode::from(125));
                }
            };
            let runtime = rdpull_run::Runtime::named(runtime.as_deref());
            return Ok(run_container(store, &g, &image, opts, rm, runtime, cancel).await);
        }
        Command::Ps { all } => shown(render::containers(
            &mut stdout(),
            &rdpull_run::list_containers(&store)?,
            all,
        ))?,
        Command::Rm { ids } => remove_containers(&store, &ids)?,
        Command::Prune => shown(render::prune(&mut stdout(), &store.prune()?))?,
        Command::Inspect { images } => inspect(&store, &images)?,
        Command::Save { image, file } => {
            let image = find_images(&store, &image)?.remove(0);
            rdpull_pipeline::save_to_file(&store, &image, &file)?;
        }
        Command::Snapshotter {
            address,
            socket_group,
        } => snapshotter(store, &g, address, socket_group.as_deref(), cancel).await?,
        Command::History { image, no_trunc } => {
            let details = store.inspect(&find_images(&store, &image)?[0])?;
            shown(render::history(&mut stdout(), &details, no_trunc))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
