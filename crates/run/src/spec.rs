//! The runtime spec: an image config and the user's `run` options, with the defaults
//! Docker and containerd give every container (copied as semantics, from their
//! documented behaviour: `docker run`'s reference and containerd's default spec).

use std::path::Path;

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::Spec;
use serde_json::json;

use crate::capabilities::capabilities;
use crate::error::SpecError;
use crate::seccomp::SeccompProfile;
use crate::user::resolve_user;

/// `PATH` when the image sets none (Docker's).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's masked paths: hidden behind an empty file or directory.
const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The container's network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Network {
    /// The host's network namespace (rdpull has no bridge).
    #[default]
    Host,
    /// A network namespace of its own, with only a loopback.
    None,
}

/// What `rdpull run` and `rdpull bundle` take from the command line.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// The command after the image: replaces the config's `Cmd`.
    pub command: Vec<String>,
    /// `--entrypoint`: replaces the config's `Entrypoint` (and drops its `Cmd`); empty
    /// clears it.
    pub entrypoint: Option<String>,
    /// `-e NAME=VALUE`, or `-e NAME` for the caller's value of `NAME`.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub read_only: bool,
    pub network: Network,
    pub tty: bool,
    /// `--cap-add`, `--cap-drop`: capability names (`CAP_` optional, any case, `ALL`).
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// `--privileged`: every capability, no seccomp filter, no masked or read-only
    /// paths, `/sys` and the cgroups writable, every device allowed.
    pub privileged: bool,
    /// `--security-opt seccomp=...`.
    pub seccomp: SeccompProfile,
    /// `--security-opt no-new-privileges`.
    pub no_new_privileges: bool,
    /// `--memory`, `--cpus`, `--pids-limit`, ...
    pub resources: crate::resources::Resources,
}

/// The runtime spec for running `config`'s image, unpacked at `rootfs` (read for the
/// user's passwd and group entries), with `opts`, under `hostname`. The spec's root is
/// the bundle's `rootfs`, and `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` are
/// bind-mounted from the bundle's files of those names ([`crate::write_bundle`]).
pub fn runtime_spec(
    config: &ImageConfiguration,
    rootfs: &Path,
    opts: &RunOptions,
    hostname: &str,
) -> Result<Spec, SpecError> {
    let image = config.config().clone().unwrap_or_default();
    let args = command(
        image.entrypoint().as_deref().unwrap_or_default(),
        image.cmd().as_deref().unwrap_or_default(),
        opts,
    )?;
    let cwd = opts
        .workdir
        .clone()
        .or_else(|| image.working_dir().clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(SpecError::RelativeWorkdir(cwd));
    }
    let user_spec = opts
        .user
        .clone()
        .or_else(|| image.user().clone())
        .unwrap_or_default();
    let user = resolve_user(rootfs, &user_spec)?;
    let env = environment(
        image.env().as_deref().unwrap_or_default(),
        opts,
        hostname,
        &user.home,
    )?;
    check_exec_size(&args, &env)?;
    // A process that is not root starts with no effective or permitted capabilities
    // (the kernel's rule for a setuid to non-root); the bounding set stays Docker's.
    let caps = capabilities(&opts.cap_add, &opts.cap_drop, opts.privileged)?;
    let running_caps = if user.uid == 0 { caps.clone() } else { vec![] };
    let seccomp = if opts.privileged {
        None
    } else {
        crate::seccomp::for_container(&opts.seccomp, &caps)?
    };
    let spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": opts.tty,
            "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps,
                "effective": running_caps,
                "permitted": running_caps,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": opts.no_new_privileges,
        },
        "root": {"path": "rootfs", "readonly": opts.read_only},
        "hostname": hostname,
        "mounts": mounts(opts.read_only, opts.privileged),
        "linux": linux(opts, seccomp),
    });
    serde_json::from_value(spec).map_err(SpecError::Spec)
}

/// Namespaces (the host's network unless `--network none`), the device cgroup (deny all
/// but the runtime's defaults, unless privileged), masked and read-only paths (none
/// when privileged), the seccomp filter.
fn linux(opts: &RunOptions, seccomp: Option<serde_json::Value>) -> serde_json::Value {
    let network = opts.network;
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    if network == Network::None {
        namespaces.push(json!({"type": "network"}));
    }
    // Docker's default on a cgroup v2 host: the container sees its own cgroup as the
    // root of `/sys/fs/cgroup` and of `/proc/self/cgroup`.
    if cgroup_v2_only() {
        namespaces.push(json!({"type": "cgroup"}));
    }
    let (masked, readonly): (&[&str], &[&str]) = if opts.privileged {
        (&[], &[])
    } else {
        (MASKED_PATHS, READONLY_PATHS)
    };
    let mut linux = json!({
        "namespaces": namespaces,
        "resources": {"devices": [{"allow": opts.privileged, "access": "rwm"}]},
        "maskedPaths": masked,
        "readonlyPaths": readonly,
    });
    if let Some(seccomp) = seccomp {
        linux["seccomp"] = seccomp;
    }
    if opts.privileged {
        linux["devices"] = host_devices(Path::new("/dev")).into();
    }
    opts.resources.to_spec(&mut linux["resources"]);
    linux
}

/// The host's device nodes under `dir`, as `docker run --privileged` passes them on
/// (runc's list: not the pseudo-terminals, shared memory, message queues, fd links or
/// the console).
fn host_devices(dir: &Path) -> Vec<serde_json::Value> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let Ok(m) = e.path().symlink_metadata() else {
            continue;
        };
        let ft = m.file_type();
        if ft.is_dir() {
            if !matches!(
                name.to_str(),
                Some("pts" | "shm" | "fd" | "mqueue" | ".lxc" | ".lxd-mounts" | ".udev")
            ) {
                out.extend(host_devices(&e.path()));
            }
            continue;
        }
        let kind = match (ft.is_char_device(), ft.is_block_device()) {
            (true, _) => "c",
            (_, true) => "b",
            _ => continue,
        };
        if name == "console" {
            continue;
        }
        let rdev = m.rdev();
        out.push(json!({
            "path": e.path(),
            "type": kind,
            "major": rustix::fs::major(rdev),
            "minor": rustix::fs::minor(rdev),
            "fileMode": m.mode() & 0o7777,
            "uid": m.uid(),
            "gid": m.gid(),
        }));
    }
    out
}

/// Is `/sys/fs/cgroup` a cgroup2 mount (a v2-only host, not a v1 or hybrid one)?
pub(crate) fn cgroup_v2_only() -> bool {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    // `f_type`'s width differs by architecture (i64 here, u32 on s390x).
    #[allow(clippy::useless_conversion)]
    rustix::fs::statfs("/sys/fs/cgroup").is_ok_and(|s| i64::from(s.f_type) == CGROUP2_SUPER_MAGIC)
}

/// Longest single argument or environment string `execve` takes (`MAX_ARG_STRLEN`,
/// its NUL included).
const MAX_EXEC_STRING: usize = 32 * 4096;
/// The most the arguments and environment may take together (strings, NULs and
/// pointers): a quarter of the usual 8 MiB stack limit, as the kernel counts them.
const MAX_EXEC_TOTAL: usize = 2 << 20;

/// Refuse before any runtime starts what `execve` would refuse with E2BIG, so that every
/// runtime gives the same answer.
fn check_exec_size(args: &[String], env: &[String]) -> Result<(), SpecError> {
    let too_long = |why: String| Err(SpecError::ArgumentsTooLong(why));
    for (what, list) in [("argument", args), ("environment entry", env)] {
        if let Some((i, s)) = list
            .iter()
            .enumerate()
            .find(|(_, s)| s.len() >= MAX_EXEC_STRING)
        {
            return too_long(format!(
                "{what} {i} is {} bytes, more than the {} execve takes",
                s.len(),
                MAX_EXEC_STRING - 1
            ));
        }
    }
    let total: usize = args.iter().chain(env).map(|s| s.len() + 1 + 8).sum();
    if total > MAX_EXEC_TOTAL {
        return too_long(format!(
            "{} arguments and {} environment entries take {total} bytes, more than the {MAX_EXEC_TOTAL} execve takes",
            args.len(),
            env.len()
        ));
    }
    Ok(())
}

/// Entrypoint and Cmd with the overrides `docker run` applies.
fn command(
    entrypoint: &[String],
    cmd: &[String],
    opts: &RunOptions,
) -> Result<Vec<String>, SpecError> {
    let mut args: Vec<String> = match &opts.entrypoint {
        Some(e) if e.is_empty() => vec![],
        Some(e) => vec![e.clone()],
        None => entrypoint.to_vec(),
    };
    if !opts.command.is_empty() {
        args.extend(opts.command.iter().cloned());
    } else if opts.entrypoint.is_none() {
        args.extend(cmd.iter().cloned());
    }
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(args)
}

/// The image's environment with `-e` applied, plus Docker's `PATH`, `HOSTNAME`, `HOME`
/// and (with a terminal) `TERM` where they are not set.
fn environment(
    image: &[String],
    opts: &RunOptions,
    hostname: &str,
    home: &str,
) -> Result<Vec<String>, SpecError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: &str, v: &str| match env
        .iter_mut()
        .find(|(n, _)| n == k)
    {
        Some(slot) => slot.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    set(&mut env, "HOSTNAME", hostname);
    for kv in image {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(&mut env, k, v);
    }
    for kv in &opts.env {
        match kv.split_once('=') {
            Some(("", _)) => return Err(SpecError::InvalidEnv(kv.clone())),
            Some((k, v)) => set(&mut env, k, v),
            None if kv.is_empty() => return Err(SpecError::InvalidEnv(kv.clone())),
            // `-e NAME`: the caller's value, or nothing when the caller has none.
            None => {
                if let Ok(v) = std::env::var(kv) {
                    set(&mut env, kv, &v);
                }
            }
        }
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
    }
    if opts.tty && !env.iter().any(|(k, _)| k == "TERM") {
        env.push(("TERM".into(), "xterm".into()));
    }
    if !env.iter().any(|(k, _)| k == "HOME") {
        env.push(("HOME".into(), home.into()));
    }
    Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// containerd's default mounts, and the container's own `/etc` files from the bundle.
/// `/sys` and the cgroups are read-only unless privileged.
fn mounts(read_only: bool, privileged: bool) -> serde_json::Value {
    let ro = if privileged { "rw" } else { "ro" };
    let etc = |name: &str| {
        let mut options = vec!["rbind", "rprivate"];
        if read_only {
            options.push("ro");
        }
        json!({"destination": format!("/etc/{name}"), "type": "bind", "source": name, "options": options})
    };
    json!([
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", ro]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", ro]},
        etc("hostname"),
        etc("hosts"),
        etc("resolv.conf"),
    ])
}

/// Where `execve` looks for `cmd`: a path as it is (relative to the working directory),
/// a bare name in each directory of the process's `PATH`.
pub(crate) fn command_candidates(cmd: &str, process: &oci_spec::runtime::Process) -> Vec<String> {
    if cmd.contains('/') {
        let cwd = process.cwd().to_string_lossy().into_owned();
        vec![if cmd.starts_with('/') {
            cmd.to_string()
        } else {
            format!("{cwd}/{cmd}")
        }]
    } else {
        let env = process.env().clone().unwrap_or_default();
        let path = env
            .iter()
            .find_map(|kv| kv.strip_prefix("PATH="))
            .unwrap_or("")
            .to_string();
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| format!("{d}/{cmd}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> RunOptions {
        RunOptions::default()
    }

    #[test]
    fn entrypoint_and_cmd_take_their_overrides_as_docker_run_does() {
        let ep = vec!["/entry".to_string(), "-x".into()];
        let cmd = vec!["default".to_string()];
        let run = |o: RunOptions| command(&ep, &cmd, &o);
        assert_eq!(run(opts()).unwrap(), ["/entry", "-x", "default"]);
        let args = RunOptions {
            command: vec!["given".into()],
            ..opts()
        };
        assert_eq!(run(args).unwrap(), ["/entry", "-x", "given"]);
        let new_ep = RunOptions {
            entrypoint: Some("/bin/sh".into()),
            ..opts()
        };
        assert_eq!(run(new_ep).unwrap(), ["/bin/sh"]);
        let cleared = RunOptions {
            entrypoint: Some(String::new()),
            command: vec!["ls".into()],
            ..opts()
        };
        assert_eq!(run(cleared).unwrap(), ["ls"]);
        let nothing = RunOptions {
            entrypoint: Some(String::new()),
            ..opts()
        };
        assert_eq!(
            run(nothing).unwrap_err().to_string(),
            "no command: the image has no Entrypoint or Cmd, and none was given"
        );
    }

    #[test]
    fn environment_gets_docker_defaults_and_overrides() {
        let image = vec!["A=image".to_string(), "B=image".into()];
        let o = RunOptions {
            env: vec![
                "B=flag".into(),
                "C=x=y".into(),
                "RDPULL_TEST_UNSET_VAR".into(),
            ],
            tty: true,
            ..opts()
        };
        assert_eq!(
            environment(&image, &o, "abc", "/root").unwrap(),
            [
                format!("PATH={DEFAULT_PATH}"),
                "HOSTNAME=abc".into(),
                "A=image".into(),
                "B=flag".into(),
                "C=x=y".into(),
                "TERM=xterm".into(),
                "HOME=/root".into(),
            ]
        );
        let bad = RunOptions {
            env: vec!["=v".into()],
            ..opts()
        };
        assert_eq!(
            environment(&[], &bad, "h", "/").unwrap_err().to_string(),
            "invalid environment variable \"=v\""
        );
    }
}
