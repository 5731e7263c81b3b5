//! The container's command process, from its fork to `execve`: a session of its own
//! (with the terminal as controlling tty under `-t`), signals as a new program expects
//! them, rlimits, then the credentials in the order that keeps the spec's capabilities
//! (bounding set while still root, groups, gid, uid with capabilities kept, the
//! effective, permitted, inheritable and ambient sets), `no_new_privileges`, the umask,
//! the working directory, the seccomp filter (first instead when loading it needs
//! `CAP_SYS_ADMIN`) and `execve` with the spec's environment, searching its `PATH`.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::str::FromStr;

use caps::{CapSet, Capability};
use nix::errno::Errno;
use nix::sys::signal::{signal, SigHandler, SigSet, SigmaskHow, Signal};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{LinuxCapabilities, PosixRlimit, Process};
use rustix::process::{Resource, Rlimit};

use super::report::{Context, Failure, Step};
use super::seccomp::Filter;
use super::spec_name;
use crate::spec::command_candidates;

/// Become the container's command. Never returns: on failure the report is sent and
/// the process exits with the failure's code.
pub(crate) fn exec_command(
    process: &Process,
    tty: Option<OwnedFd>,
    seccomp: Option<&Filter>,
    mut report: File,
) -> ! {
    let failure = match set_up(process, tty, seccomp) {
        Ok(()) => exec(process),
        Err(f) => f,
    };
    failure.send_and_exit(&mut report)
}

fn set_up(
    process: &Process,
    tty: Option<OwnedFd>,
    seccomp: Option<&Filter>,
) -> Result<(), Failure> {
    // The launcher blocks the signals it forwards, and Rust ignores SIGPIPE; a new
    // program gets neither.
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .step(Step::Fork, "signal mask")?;
    // SAFETY: SIG_DFL installs no handler.
    #[allow(unsafe_code)]
    unsafe {
        signal(Signal::SIGPIPE, SigHandler::SigDfl).step(Step::Fork, "SIGPIPE")?;
    }
    nix::unistd::setsid().step(Step::Terminal, "setsid")?;
    if let Some(tty) = tty {
        rustix::process::ioctl_tiocsctty(&tty).step(Step::Terminal, "controlling terminal")?;
        for target in 0..3 {
            let mut fd = nix_fd(target);
            nix::unistd::dup2(&tty, &mut fd).step(Step::Terminal, "stdio")?;
            std::mem::forget(fd);
        }
    }
    for r in process.rlimits().iter().flatten() {
        set_rlimit(r)?;
    }
    let caps = process.capabilities().clone().unwrap_or_default();
    let user = process.user();
    drop_bounding(&caps)?;
    let no_new_privileges = process.no_new_privileges() == Some(true);
    // Without no_new_privileges, loading a filter takes CAP_SYS_ADMIN: load it while
    // this process still has it.
    if let (Some(filter), false) = (seccomp, no_new_privileges) {
        filter.load()?;
    }
    let gids: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&gids).step(Step::Groups, &format!("{:?}", user.additional_gids()))?;
    let (uid, gid) = (Uid::from_raw(user.uid()), Gid::from_raw(user.gid()));
    nix::unistd::setresgid(gid, gid, gid).step(Step::User, &format!("gid {gid}"))?;
    rustix::thread::set_keep_capabilities(true).step(Step::User, "keep capabilities")?;
    nix::unistd::setresuid(uid, uid, uid).step(Step::User, &format!("uid {uid}"))?;
    rustix::thread::set_keep_capabilities(false).step(Step::User, "keep capabilities")?;
    set_capabilities(&caps)?;
    if no_new_privileges {
        rustix::thread::set_no_new_privs(true).step(Step::NoNewPrivileges, "")?;
    }
    let umask = user.umask().unwrap_or(0o022);
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(umask));
    let cwd = process.cwd().to_string_lossy().into_owned();
    rustix::process::chdir(&*cwd).step(Step::Cwd, &cwd)?;
    match (seccomp, no_new_privileges) {
        (Some(filter), true) => filter.load(),
        _ => Ok(()),
    }
}

/// An fd number for dup2's target; never closed (it is stdin, stdout or stderr).
fn nix_fd(n: i32) -> OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: 0, 1 and 2 stay open for the process's life; the OwnedFd is forgotten
    // after dup2 and so never closes them.
    #[allow(unsafe_code)]
    unsafe {
        OwnedFd::from_raw_fd(n)
    }
}

fn set_rlimit(r: &PosixRlimit) -> Result<(), Failure> {
    let name = spec_name(&r.typ());
    let resource = rlimit_resource(&name)
        .ok_or_else(|| Failure::new(Step::Rlimit, name.clone(), Errno::EINVAL))?;
    let limit = Rlimit {
        current: Some(r.soft()),
        maximum: Some(r.hard()),
    };
    rustix::process::setrlimit(resource, limit).step(Step::Rlimit, &name)
}

fn rlimit_resource(name: &str) -> Option<Resource> {
    Some(match name {
        "RLIMIT_CPU" => Resource::Cpu,
        "RLIMIT_FSIZE" => Resource::Fsize,
        "RLIMIT_DATA" => Resource::Data,
        "RLIMIT_STACK" => Resource::Stack,
        "RLIMIT_CORE" => Resource::Core,
        "RLIMIT_RSS" => Resource::Rss,
        "RLIMIT_NPROC" => Resource::Nproc,
        "RLIMIT_NOFILE" => Resource::Nofile,
        "RLIMIT_MEMLOCK" => Resource::Memlock,
        "RLIMIT_AS" => Resource::As,
        "RLIMIT_LOCKS" => Resource::Locks,
        "RLIMIT_SIGPENDING" => Resource::Sigpending,
        "RLIMIT_MSGQUEUE" => Resource::Msgqueue,
        "RLIMIT_NICE" => Resource::Nice,
        "RLIMIT_RTPRIO" => Resource::Rtprio,
        "RLIMIT_RTTIME" => Resource::Rttime,
        _ => return None,
    })
}

/// The spec's capability names (`CAP_CHOWN`) as the caps crate's set.
fn cap_set(
    list: Option<&HashSet<oci_spec::runtime::Capability>>,
) -> Result<caps::CapsHashSet, Failure> {
    let mut out = caps::CapsHashSet::new();
    for c in list.into_iter().flatten() {
        let name = spec_name(c);
        let cap = Capability::from_str(&name)
            .map_err(|_| Failure::new(Step::Capabilities, name.clone(), Errno::EINVAL))?;
        out.insert(cap);
    }
    Ok(out)
}

fn caps_err(what: &str) -> impl FnOnce(caps::errors::CapsError) -> Failure + '_ {
    move |_| Failure::new(Step::Capabilities, what, Errno::last())
}

/// Drop from the bounding set every capability the spec's bounding set lacks.
fn drop_bounding(caps: &LinuxCapabilities) -> Result<(), Failure> {
    let keep = cap_set(caps.bounding().as_ref())?;
    for cap in caps::runtime::thread_all_supported() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).map_err(caps_err("bounding"))?;
        }
    }
    Ok(())
}

fn set_capabilities(caps: &LinuxCapabilities) -> Result<(), Failure> {
    // Effective first: it is checked against the permitted set of the moment, which
    // still holds everything; permitted must then still cover it.
    let sets = [
        (CapSet::Effective, caps.effective(), "effective"),
        (CapSet::Permitted, caps.permitted(), "permitted"),
        (CapSet::Inheritable, caps.inheritable(), "inheritable"),
        (CapSet::Ambient, caps.ambient(), "ambient"),
    ];
    for (set, list, what) in sets {
        caps::set(None, set, &cap_set(list.as_ref())?).map_err(caps_err(what))?;
    }
    Ok(())
}

/// `execve` of the command: a name with a slash as it is, a bare name in each directory
/// of the spec's `PATH` (a directory where it cannot be run is skipped, as by execvp).
fn exec(process: &Process) -> Failure {
    let args = process.args().clone().unwrap_or_default();
    let env = process.env().clone().unwrap_or_default();
    let Some(cmd) = args.first().cloned() else {
        return Failure::new(Step::Exec, "", Errno::ENOENT);
    };
    let (Ok(argv), Ok(envp)) = (cstrings(&args), cstrings(&env)) else {
        return Failure::new(Step::Exec, cmd, Errno::EINVAL);
    };
    let mut seen = Errno::ENOENT;
    for c in command_candidates(&cmd, process) {
        let Ok(path) = CString::new(c) else { continue };
        let Err(e) = nix::unistd::execve(&path, &argv, &envp);
        match e {
            Errno::ENOENT | Errno::ENOTDIR => {}
            Errno::EACCES | Errno::EPERM if !cmd.contains('/') => seen = e,
            _ => return Failure::new(Step::Exec, cmd, e),
        }
    }
    Failure::new(Step::Exec, cmd, seen)
}

fn cstrings(list: &[String]) -> Result<Vec<CString>, std::ffi::NulError> {
    list.iter().map(|s| CString::new(s.as_bytes())).collect()
}
