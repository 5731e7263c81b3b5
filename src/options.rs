//! From command-line flags to the pipeline's options, and the process limits a pull needs.

use std::time::Duration;

use rdpull_fetch::{ChunkPolicy, ClientOptions, Credentials, Platform};
use rdpull_pipeline::PullOptions;
use rdpull_run::{Network, Resources, RunOptions, SeccompProfile};
use tokio_util::sync::CancellationToken;

use crate::cli::{Command, Global, NetworkArg, RunArgs};

/// Any error, for the CLI's one-line report.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The pull options the flags ask for.
pub(crate) fn pull(g: &Global, cancel: &CancellationToken) -> Result<PullOptions, BoxError> {
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
    Ok(PullOptions {
        parallel: g.parallel.max(1),
        platform,
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
            min_rate: g.min_rate,
            slow_windows: g.slow_windows,
            request_timeout: Duration::from_secs(g.request_timeout.max(1)),
            ..ClientOptions::default()
        },
        cancel: cancel.clone(),
        keep_blobs: g.keep_blobs,
        resume_min_size: g.resume_min_size,
    })
}

/// Commands that write the store need root; say so before anything fails half-way.
pub(crate) fn require_root(command: &Command) -> Result<(), BoxError> {
    let name = match command {
        Command::Pull { .. } => "pull",
        Command::Unpack { .. } => "unpack",
        Command::Bundle { .. } => "bundle",
        Command::Run { .. } => "run",
        Command::Rm { .. } => "rm",
        Command::Rmi { .. } => "rmi",
        Command::Prune => "prune",
        Command::Snapshotter { .. } => "snapshotter",
        Command::Images { .. }
        | Command::Inspect { .. }
        | Command::History { .. }
        | Command::Save { .. }
        | Command::Ps { .. } => return Ok(()),
    };
    if rustix::process::geteuid().is_root() {
        return Ok(());
    }
    Err(format!(
        "{name} needs root: layers set file owners, make device nodes and write trusted.* \
         xattrs, and the store belongs to root; run rdpull as root (e.g. with sudo)"
    )
    .into())
}

/// Several layers unpack at once, each with cached directory fds: use the hard limit.
pub(crate) fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        let _ = setrlimit(Resource::Nofile, l);
    }
}

/// The `run` flags as `rdpull-run` takes them.
pub(crate) fn run(args: &RunArgs, command: &[String]) -> Result<RunOptions, BoxError> {
    let mut seccomp = SeccompProfile::Default;
    let mut no_new_privileges = false;
    for opt in &args.security_opt {
        // Docker takes `seccomp=X` and the older `seccomp:X`.
        match opt.split_once(['=', ':']) {
            Some(("seccomp", "unconfined")) => seccomp = SeccompProfile::Unconfined,
            Some(("seccomp", file)) if !file.is_empty() => {
                seccomp = SeccompProfile::File(file.into());
            }
            Some(("no-new-privileges", "true")) => no_new_privileges = true,
            Some(("no-new-privileges", "false")) => no_new_privileges = false,
            None if opt == "no-new-privileges" => no_new_privileges = true,
            _ => return Err(rdpull_run::SpecError::SecurityOpt(opt.clone()).into()),
        }
    }
    let resources = Resources::parse(
        args.memory.as_deref(),
        args.memory_swap.as_deref(),
        args.cpus,
        args.cpu_shares,
        args.pids_limit,
    )?;
    Ok(RunOptions {
        command: command.to_vec(),
        entrypoint: args.entrypoint.clone(),
        env: args.env.clone(),
        workdir: args.workdir.clone(),
        user: args.run_user.clone(),
        hostname: args.hostname.clone(),
        read_only: args.read_only,
        network: match args.network {
            NetworkArg::Host => Network::Host,
            NetworkArg::None => Network::None,
        },
        tty: args.tty,
        cap_add: args.cap_add.clone(),
        cap_drop: args.cap_drop.clone(),
        privileged: args.privileged,
        seccomp,
        no_new_privileges,
        resources,
    })
}

/// A group named by `--socket-group`: a numeric id, or a name from `/etc/group`.
pub(crate) fn group_id(group: &str) -> Result<u32, BoxError> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let text = std::fs::read_to_string("/etc/group")?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((f.next()?, f.nth(1)?))
        })
        .find(|(name, _)| *name == group)
        .and_then(|(_, gid)| gid.parse().ok())
        .ok_or_else(|| format!("--socket-group {group}: no such group in /etc/group").into())
}
