//! rdpull: pull container images in one streaming pass (fetch, verify, decompress,
//! unpack into overlay snapshots). The CLI parses arguments and wires the crates; the
//! work is done in `rdpull-fetch`, `rdpull-verify`, `rdpull-unpack` and `rdpull-snapshot`.

mod progress;
mod pull;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use rdpull_fetch::{ChunkPolicy, ClientOptions, Credentials, Platform, Reference};
use rdpull_snapshot::Store;

#[derive(Parser)]
#[command(
    name = "rdpull",
    version,
    about = "Pipelined container image pull and unpack"
)]
#[command(after_help = "`rdpull [OPTIONS] IMAGE` is short for `rdpull [OPTIONS] pull IMAGE`.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    global: Global,
}

const COMMANDS: &[&str] = &["pull", "unpack", "images", "help"];

/// `rdpull [OPTIONS] IMAGE` means `rdpull [OPTIONS] pull IMAGE`, as the design's
/// `rdpull --parallel 16 centos:latest`.
fn with_default_command(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    // The options that take a value, from clap's own definition, to skip their values.
    let value_options: Vec<String> = Cli::command()
        .get_arguments()
        .filter(|a| a.get_action().takes_values())
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if a == "--" {
            break;
        }
        if a.starts_with('-') {
            i += if value_options.iter().any(|o| o == a.as_ref()) {
                2
            } else {
                1
            };
            continue;
        }
        if !COMMANDS.contains(&a.as_ref()) {
            args.insert(i, "pull".into());
        }
        break;
    }
    args
}

#[derive(Args, Clone)]
struct Global {
    /// Where snapshots, images and metadata live.
    #[arg(
        long,
        global = true,
        env = "RDPULL_ROOT",
        default_value = "/var/lib/rdpull"
    )]
    root: PathBuf,
    /// Concurrent HTTP blob streams.
    #[arg(long, global = true, default_value_t = 8)]
    parallel: usize,
    /// Platform to pull from a multi-platform image (default: this host's).
    #[arg(long, global = true)]
    platform: Option<String>,
    /// Talk plain HTTP to the registry.
    #[arg(long, global = true)]
    plain_http: bool,
    /// containerd hosts directory: <DIR>/<registry>/hosts.toml lists mirrors and per-host
    /// TLS (docs/hosts.md in containerd).
    #[arg(long, global = true, default_value = "/etc/containerd/certs.d")]
    hosts_dir: PathBuf,
    /// Client certificate (PEM) for registries that require one.
    #[arg(long, global = true)]
    tls_cert: Option<PathBuf>,
    /// Key of --tls-cert, if not in the same file.
    #[arg(long, global = true, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Accept any registry certificate. Dangerous: anyone on the path can serve a tag.
    #[arg(long, global = true)]
    insecure_skip_tls_verify: bool,
    /// Extra CA certificates (PEM) to trust for registry TLS.
    #[arg(long, global = true)]
    tls_ca: Option<PathBuf>,
    /// Registry credentials, USER:PASSWORD.
    #[arg(long, global = true, env = "RDPULL_USER", hide_env_values = true)]
    user: Option<String>,
    /// Seconds a download may go without receiving a byte.
    #[arg(long, global = true, default_value_t = 30)]
    stall_timeout: u64,
    /// Blobs at least this large (bytes) are fetched in chunks over several connections
    /// when the registry honours Range.
    #[arg(long, global = true, default_value_t = ChunkPolicy::default().min_size)]
    chunked_min_size: u64,
    /// Chunk size in bytes.
    #[arg(long, global = true, default_value_t = ChunkPolicy::default().chunk_size)]
    chunk_size: u64,
    /// Chunks of one blob in flight at most, the streaming one included.
    #[arg(long, global = true, default_value_t = ChunkPolicy::default().window)]
    chunk_window: usize,
    /// Bytes that prefetched chunks, of all layers together, may hold at once.
    #[arg(long, global = true, default_value_t = ChunkPolicy::default().memory)]
    chunk_memory: u64,
    /// Print only the image reference.
    #[arg(long, short, global = true)]
    quiet: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Pull an image into the snapshot store.
    Pull { image: String },
    /// Write an image's root filesystem to DIR (a new directory), pulling it if needed.
    Unpack { image: String, dir: PathBuf },
    /// List pulled images.
    Images,
}

fn main() -> ExitCode {
    // Errors reach the user as one line from main; libraries' own logging stays quiet
    // unless RDPULL_LOG asks for it (e.g. RDPULL_LOG=debug).
    let filter = std::env::var("RDPULL_LOG").unwrap_or_else(|_| {
        "off,rdpull=warn,rdpull_fetch=warn,rdpull_unpack=warn,rdpull_snapshot=warn".into()
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

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn run(cli: Cli) -> Result<(), BoxError> {
    let (g, command) = (cli.global, cli.command);
    raise_fd_limit();
    let store = Arc::new(Store::open(&g.root)?);
    match command {
        Command::Pull { image } => {
            let reference: Reference = image.parse()?;
            pull::pull(store, &reference, &pull_options(&g)?).await?;
        }
        Command::Unpack { image, dir } => {
            let reference: Reference = image.parse()?;
            let opts = pull_options(&g)?;
            // Pull unless the image is here for the platform asked for.
            let record = match store.image(&reference.to_string()) {
                Ok(r) if r.platform == opts.platform.to_string() => r,
                _ => pull::pull(store.clone(), &reference, &opts).await?.image,
            };
            let stats = pull::unpack_to(&store, &record, &dir)?;
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

fn pull_options(g: &Global) -> Result<pull::PullOptions, BoxError> {
    let platform = match &g.platform {
        Some(p) => p.parse()?,
        None => Platform::host(),
    };
    if g.insecure_skip_tls_verify {
        eprintln!(
            "rdpull: WARNING: TLS certificate verification is OFF (--insecure-skip-tls-verify): \
             anyone between you and the registry can impersonate it and serve other images for a tag"
        );
    }
    let credentials = match &g.user {
        Some(u) => Some(Credentials::parse(u).ok_or("--user wants USER:PASSWORD")?),
        None => None,
    };
    Ok(pull::PullOptions {
        parallel: g.parallel.max(1),
        platform,
        quiet: g.quiet,
        client: ClientOptions {
            plain_http: g.plain_http,
            credentials,
            tls_ca: g.tls_ca.clone(),
            tls_client: g.tls_cert.clone().map(|c| (c, g.tls_key.clone())),
            insecure_skip_verify: g.insecure_skip_tls_verify,
            hosts_dir: Some(g.hosts_dir.clone()),
            chunks: ChunkPolicy {
                min_size: g.chunked_min_size,
                chunk_size: g.chunk_size.max(1),
                window: g.chunk_window,
                memory: g.chunk_memory,
            },
            stall_timeout: Duration::from_secs(g.stall_timeout.max(1)),
            ..ClientOptions::default()
        },
    })
}

/// Several layers unpack at once, each with cached directory fds: use the hard limit.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        let _ = setrlimit(Resource::Nofile, l);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        let v = s.split_whitespace().map(std::ffi::OsString::from).collect();
        with_default_command(v)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn image_alone_means_pull() {
        assert_eq!(
            args("rdpull --parallel 16 centos"),
            ["rdpull", "--parallel", "16", "pull", "centos"]
        );
        assert_eq!(args("rdpull centos"), ["rdpull", "pull", "centos"]);
        assert_eq!(
            args("rdpull --root /r --quiet x:1"),
            ["rdpull", "--root", "/r", "--quiet", "pull", "x:1"]
        );
        assert_eq!(
            args("rdpull --root /r images"),
            ["rdpull", "--root", "/r", "images"]
        );
        assert_eq!(
            args("rdpull --root=/r unpack a b"),
            ["rdpull", "--root=/r", "unpack", "a", "b"]
        );
        assert_eq!(args("rdpull --help"), ["rdpull", "--help"]);
        assert_eq!(
            args("rdpull --chunk-size 9 --hosts-dir /h --tls-key k x"),
            [
                "rdpull",
                "--chunk-size",
                "9",
                "--hosts-dir",
                "/h",
                "--tls-key",
                "k",
                "pull",
                "x"
            ]
        );
        Cli::command().debug_assert();
    }
}
