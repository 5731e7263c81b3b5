//! The command line: what rdpull accepts, and nothing it does.

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};
use rdpull_fetch::{ChunkPolicy, ClientOptions};

#[derive(Parser)]
#[command(
    name = "rdpull",
    version,
    about = "Pipelined container image pull and unpack"
)]
#[command(after_help = "`rdpull [OPTIONS] IMAGE` is short for `rdpull [OPTIONS] pull IMAGE`.")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    #[command(flatten)]
    pub(crate) global: Global,
}

/// `rdpull [OPTIONS] IMAGE` means `rdpull [OPTIONS] pull IMAGE`, as the design's
/// `rdpull --parallel 16 centos:latest`.
pub(crate) fn with_default_command(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    if let Some(i) = first_word(&args) {
        let a = args[i].to_string_lossy();
        let is_command = a == "help" || Cli::command().get_subcommands().any(|c| c.get_name() == a);
        if !is_command {
            args.insert(i, "pull".into());
        }
    }
    args
}

/// The first word of `args` that is neither an option nor an option's value (options
/// that take one are known from clap's own definition), up to a `--`.
fn first_word(args: &[std::ffi::OsString]) -> Option<usize> {
    let value_options: Vec<String> = Cli::command()
        .get_arguments()
        .filter(|a| a.get_action().takes_values())
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if a == "--" {
            return None;
        }
        if !a.starts_with('-') {
            return Some(i);
        }
        i += if value_options.iter().any(|o| o == a.as_ref()) {
            2
        } else {
            1
        };
    }
    None
}

/// The registry's `--user USER:PASSWORD` after a command, as `skopeo` and `crane` users
/// type it (`rdpull pull --user u:p IMAGE`), moved before the command, where clap takes
/// it. Not after `run` or `bundle`, whose `--user` is the container's user.
pub(crate) fn registry_user_before_command(
    mut args: Vec<std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    let Some(at) = command_index(&args) else {
        return args;
    };
    if ["run", "bundle"].contains(&args[at].to_string_lossy().as_ref()) {
        return args;
    }
    let mut i = at + 1;
    let mut moved = Vec::new();
    while i < args.len() && args[i] != "--" {
        let a = args[i].to_string_lossy();
        if a == "--user" && i + 1 < args.len() {
            moved.extend(args.drain(i..i + 2));
        } else if a.starts_with("--user=") {
            moved.push(args.remove(i));
        } else {
            i += 1;
        }
    }
    args.splice(at..at, moved);
    args
}

/// Where the command's name is in `args`.
fn command_index(args: &[std::ffi::OsString]) -> Option<usize> {
    let i = first_word(args)?;
    let a = args[i].to_string_lossy();
    Cli::command()
        .get_subcommands()
        .any(|c| c.get_name() == a)
        .then_some(i)
}

/// Parse the command line. A usage error of `run` exits 125, as `docker run`'s do (the
/// command's own codes are the container's); other usage errors exit 2.
pub(crate) fn parse(args: Vec<std::ffi::OsString>) -> Cli {
    let args = registry_user_before_command(args);
    match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() && names_run(&args) => {
            let _ = e.print();
            std::process::exit(125)
        }
        Err(e) => e.exit(),
    }
}

/// Is `run` the command `args` ask for (the first word that is a command name)?
fn names_run(args: &[std::ffi::OsString]) -> bool {
    command_index(args).is_some_and(|i| args[i] == "run")
}

#[derive(Args, Clone)]
pub(crate) struct Global {
    /// Where snapshots, images and metadata live.
    #[arg(
        long,
        global = true,
        env = "RDPULL_ROOT",
        default_value = "/var/lib/rdpull"
    )]
    pub(crate) root: PathBuf,
    /// Concurrent HTTP blob streams.
    #[arg(long, global = true, default_value_t = 8)]
    pub(crate) parallel: usize,
    /// Platform to pull from a multi-platform image (default: this host's).
    #[arg(long, global = true)]
    pub(crate) platform: Option<String>,
    /// Talk plain HTTP to the registry.
    #[arg(long, global = true)]
    pub(crate) plain_http: bool,
    /// containerd hosts directory: <DIR>/<registry>/hosts.toml lists mirrors and per-host
    /// TLS (docs/hosts.md in containerd).
    #[arg(long, global = true, default_value = "/etc/containerd/certs.d")]
    pub(crate) hosts_dir: PathBuf,
    /// Client certificate (PEM) for registries that require one.
    #[arg(long, global = true)]
    pub(crate) tls_cert: Option<PathBuf>,
    /// Key of --tls-cert, if not in the same file.
    #[arg(long, global = true, requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Accept any registry certificate. Dangerous: anyone on the path can serve a tag.
    #[arg(long, global = true)]
    pub(crate) insecure_skip_tls_verify: bool,
    /// Extra CA certificates (PEM) to trust for registry TLS.
    #[arg(long, global = true)]
    pub(crate) tls_ca: Option<PathBuf>,
    /// Registry credentials, USER:PASSWORD (before or after the command; after `run` and
    /// `bundle`, `--user` is the container's user).
    #[arg(long, env = "RDPULL_USER", hide_env_values = true)]
    pub(crate) user: Option<String>,
    /// Seconds a download may go without receiving a byte.
    #[arg(long, global = true, default_value_t = 30)]
    pub(crate) stall_timeout: u64,
    /// A download slower than this many bytes a second over a whole --stall-timeout window
    /// is resumed, and fails after --slow-windows such windows (0: no minimum).
    #[arg(long, global = true, default_value_t = ClientOptions::default().min_rate)]
    pub(crate) min_rate: u64,
    /// Too-slow windows a download may have before it fails (1 or more; at most 5, the
    /// retries, count).
    #[arg(
        long,
        global = true,
        default_value_t = ClientOptions::default().slow_windows,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub(crate) slow_windows: u32,
    /// Seconds a small object (manifest, config, token) may take as a whole.
    #[arg(long, global = true, default_value_t = ClientOptions::default().request_timeout.as_secs())]
    pub(crate) request_timeout: u64,
    /// Blobs at least this large (bytes) are fetched in chunks over several connections
    /// when the registry honours Range.
    #[arg(long, global = true, default_value_t = ChunkPolicy::default().min_size)]
    pub(crate) chunked_min_size: u64,
    /// Chunk size in bytes.
    #[arg(long, global = true, default_value_t = ChunkPolicy::default().chunk_size)]
    pub(crate) chunk_size: u64,
    /// Chunks of one blob in flight at most, the streaming one included.
    #[arg(long, global = true, default_value_t = ChunkPolicy::default().window)]
    pub(crate) chunk_window: usize,
    /// Bytes that prefetched chunks, of all layers together, may hold at once.
    #[arg(long, global = true, default_value_t = ChunkPolicy::default().memory)]
    pub(crate) chunk_memory: u64,
    /// Keep each downloaded layer blob in the store (for `save`, and to unpack again
    /// without the network); `prune` removes those no image uses.
    #[arg(
        long,
        global = true,
        env = "RDPULL_KEEP_BLOBS",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub(crate) keep_blobs: bool,
    /// Blobs at least this large (bytes) keep what was received on disk, so that the
    /// next pull continues an interrupted download where it stopped.
    #[arg(long, global = true, default_value_t = rdpull_pipeline::RESUME_MIN_SIZE)]
    pub(crate) resume_min_size: u64,
    /// Print only the image reference (pull, unpack) or manifest digests (images).
    #[arg(long, short, global = true)]
    pub(crate) quiet: bool,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Pull an image into the snapshot store.
    Pull { image: String },
    /// Write an image's root filesystem to DIR (a new directory), pulling it if needed.
    Unpack { image: String, dir: PathBuf },
    /// List pulled images (with -q, their manifest digests only).
    Images {
        /// `table` (default) or `json` (one object per line).
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Remove images by name or manifest digest; their layers go at the next `prune`.
    Rmi {
        #[arg(required = true)]
        images: Vec<String>,
        /// Remove every name of a digest that has several.
        #[arg(long, short)]
        force: bool,
    },
    /// Remove the layers and blobs no image uses, and what interrupted pulls left.
    Prune,
    /// Show images as JSON: manifest, platform, config, and per layer its snapshot. With
    /// no image: the store's partial downloads and kept layer blobs.
    Inspect { images: Vec<String> },
    /// Write an image to FILE as an OCI image layout tar, which `skopeo copy
    /// oci-archive:FILE` and `podman load -i FILE` read. Its layer blobs must be kept:
    /// pull it with --keep-blobs first.
    Save { image: String, file: PathBuf },
    /// Write an OCI bundle of IMAGE to DIR (a new directory), pulling it if needed: a
    /// flattened `rootfs` and a `config.json` with Docker's defaults, which `runc run
    /// --bundle DIR ID` and `crun run` run as they are.
    Bundle {
        #[command(flatten)]
        run: RunArgs,
        image: String,
        dir: PathBuf,
        /// The command and its arguments, replacing the image's Cmd.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Run a command in a new container of IMAGE (pulled if needed), as `docker run`
    /// does, through an OCI runtime. Exits with the command's code, 128+N when signal N
    /// killed it; 125 when rdpull fails, 126 when the command cannot be invoked, 127 when
    /// it is not found.
    Run {
        #[command(flatten)]
        run: RunArgs,
        /// Remove the container (its snapshot and directory) when it exits.
        #[arg(long)]
        rm: bool,
        /// Hand the container to an OCI runtime (runc, crun, or a path to one) instead
        /// of the built-in launcher.
        #[arg(long)]
        runtime: Option<String>,
        image: String,
        /// The command and its arguments, replacing the image's Cmd.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// List containers: running ones, or with -a all of them.
    Ps {
        #[arg(long, short)]
        all: bool,
    },
    /// Remove stopped containers, by id or a unique id prefix.
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Show how an image was built, newest step first, as `docker history` does.
    History {
        image: String,
        /// Do not shorten the CREATED BY column.
        #[arg(long)]
        no_trunc: bool,
    },
    /// Serve containerd's snapshots API on a unix socket, as a snapshotter proxy plugin
    /// (`[proxy_plugins.rdpull]`). Layers that containerd's CRI labels with their image
    /// are pulled by rdpull itself; images `rdpull pull` has are served without a second
    /// download. Runs until SIGTERM or SIGINT.
    Snapshotter {
        /// The socket to listen on.
        #[arg(long, default_value = "/run/rdpull/snapshotter.sock")]
        address: PathBuf,
        /// Group (name or id) allowed to connect; the socket is then mode 0660, else 0600.
        #[arg(long, value_name = "GROUP")]
        socket_group: Option<String>,
    },
}

/// How `images` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ListFormat {
    Table,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Vec<std::ffi::OsString> {
        s.split(' ').map(Into::into).collect()
    }

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
        assert_eq!(args("rdpull save x f"), ["rdpull", "save", "x", "f"]);
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

    #[test]
    fn registry_user_after_the_command_is_the_registry_user() {
        let moved = |s: &str| -> Vec<String> {
            registry_user_before_command(args(s).into_iter().map(Into::into).collect())
                .into_iter()
                .map(|a| a.into_string().unwrap())
                .collect()
        };
        assert_eq!(
            moved("rdpull --root /r pull --user u:p x --quiet"),
            ["rdpull", "--root", "/r", "--user", "u:p", "pull", "x", "--quiet"]
        );
        assert_eq!(
            moved("rdpull images --user=u:p"),
            ["rdpull", "--user=u:p", "images"]
        );
        assert_eq!(
            moved("rdpull x --user u:p"),
            ["rdpull", "--user", "u:p", "pull", "x"]
        );
        // After run and bundle it is the container's user.
        for kept in ["rdpull run --user 1:2 x", "rdpull bundle --user 1:2 x d"] {
            assert_eq!(moved(kept), args(kept), "{kept}");
        }
        let cli = Cli::try_parse_from(moved("rdpull --quiet save --user a:b x f")).unwrap();
        assert_eq!(cli.global.user.as_deref(), Some("a:b"));
    }

    #[test]
    fn bad_values_of_the_new_flags_are_usage_errors() {
        let parse = |s: &str| Cli::try_parse_from(args(s));
        for bad in [
            "rdpull --resume-min-size lots x",
            "rdpull --resume-min-size -1 x",
            "rdpull --keep-blobs=maybe x",
            "rdpull save onlyimage",
            "rdpull --slow-windows 0 x",
            "rdpull --slow-windows lots x",
            "rdpull x --slow-windows -1",
        ] {
            let e = parse(bad).err().unwrap_or_else(|| panic!("{bad} parsed"));
            assert_eq!(e.exit_code(), 2, "{bad}");
        }
        assert!(names_run(&os("rdpull --root r run --bogus img")));
        assert!(!names_run(&os("rdpull --root r pull img")));
        assert!(!names_run(&os("rdpull images")));
        let ok = parse("rdpull --keep-blobs --resume-min-size 0 x").unwrap();
        assert!(ok.global.keep_blobs);
        assert_eq!(ok.global.resume_min_size, 0);
        let five = parse("rdpull --slow-windows 5 x").unwrap();
        assert_eq!(five.global.slow_windows, 5);
    }
}

/// How a container runs, as `docker run` takes it.
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct RunArgs {
    /// Set an environment variable: NAME=VALUE, or NAME for this process's value.
    #[arg(long, short)]
    pub(crate) env: Vec<String>,
    /// Working directory inside the container (created if missing).
    #[arg(long, short)]
    pub(crate) workdir: Option<String>,
    /// User: name, uid, uid:gid, name:group, resolved in the image's /etc/passwd and
    /// /etc/group.
    #[arg(long = "user", short = 'u')]
    pub(crate) run_user: Option<String>,
    /// Replace the image's Entrypoint (and drop its Cmd); "" clears it.
    #[arg(long)]
    pub(crate) entrypoint: Option<String>,
    /// The container's hostname (default: the first 12 characters of its id).
    #[arg(long)]
    pub(crate) hostname: Option<String>,
    /// Mount the rootfs read-only.
    #[arg(long)]
    pub(crate) read_only: bool,
    /// `host` (default: the host's network) or `none` (a loopback only).
    #[arg(long, value_enum, default_value_t = NetworkArg::Host)]
    pub(crate) network: NetworkArg,
    /// Allocate a terminal for the process.
    #[arg(long, short)]
    pub(crate) tty: bool,
    /// Add a capability to Docker's default set (CAP_ optional, any case; ALL).
    #[arg(long, value_name = "CAP")]
    pub(crate) cap_add: Vec<String>,
    /// Drop a capability from the set (ALL drops every one).
    #[arg(long, value_name = "CAP")]
    pub(crate) cap_drop: Vec<String>,
    /// Every capability, no seccomp filter, no masked or read-only paths, /sys and the
    /// cgroups writable, every device allowed.
    #[arg(long)]
    pub(crate) privileged: bool,
    /// seccomp=unconfined, seccomp=FILE.json (Docker's profile format), or
    /// no-new-privileges. Default: Docker's default seccomp profile.
    #[arg(long, value_name = "OPT")]
    pub(crate) security_opt: Vec<String>,
    /// Memory limit, e.g. 32m, 1g (at least 6m).
    #[arg(long, short = 'm', value_name = "BYTES")]
    pub(crate) memory: Option<String>,
    /// Memory plus swap limit (-1: unlimited swap); default twice --memory.
    #[arg(long, value_name = "BYTES")]
    pub(crate) memory_swap: Option<String>,
    /// CPUs the container may use, e.g. 1.5.
    #[arg(long, value_name = "N")]
    pub(crate) cpus: Option<f64>,
    /// Relative CPU weight (1024 is the default share).
    #[arg(long, short = 'c', value_name = "N")]
    pub(crate) cpu_shares: Option<u64>,
    /// Most processes and threads the container may have (0 or -1: no limit).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub(crate) pids_limit: Option<i64>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum NetworkArg {
    #[default]
    Host,
    None,
}
