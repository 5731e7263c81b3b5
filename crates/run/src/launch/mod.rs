//! The built-in launcher: a runtime-spec bundle to a running container, without runc.
//!
//! It runs as its own single-threaded process (the `rdpull` binary re-executed as
//! `rdpull __launch BUNDLE ID` before any tokio runtime exists), because namespace and
//! credential changes from a multi-threaded process are unsound. Three processes take
//! part:
//!
//! * the **launcher** (this module) loads `config.json`, makes the container's cgroups
//!   (`cgroup`), blocks the signals it forwards, unshares the PID namespace and forks;
//!   it then forwards signals to the container's PID 1, relays the terminal under `-t`
//!   (`tty`), waits, removes the cgroups and exits with the container's code;
//! * the container's **PID 1** (`init`) enters the other namespaces, builds the root
//!   (`mounts`), sets the hostname and loopback while the launcher moves it into the
//!   cgroups, then forks the command and stays as its init, forwarding signals and
//!   reaping orphans;
//! * the **command** (`process`) sets rlimits, credentials and capabilities and
//!   `execve`s.
//!
//! A failing step in either container process is reported over a close-on-exec pipe
//! as the step and its errno (`report`); the launcher prints it as one line and exits
//! 125, 126 or 127 from it. The command runs under the spec's seccomp filter
//! (`seccomp`). The launcher does not join namespaces by path or make user namespaces.

mod cgroup;
mod init;
mod mounts;
mod process;
mod report;
mod seccomp;
mod tty;

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use rustix::event::{PollFd, PollFlags};

pub use report::Failure;
use report::{Context, Step};
pub use seccomp::CACHE_ENV as SECCOMP_CACHE_ENV;

/// The hidden command that runs the launcher.
pub const LAUNCH_COMMAND: &str = "__launch";

/// The name the spec's JSON gives `value`, an enum of oci-spec's (`RLIMIT_NOFILE`,
/// `CAP_CHOWN`, `SCMP_ACT_ALLOW`, `c`); empty for anything else.
pub(crate) fn spec_name(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// The signals passed on to the container (and SIGCHLD, to wait for it).
pub(crate) fn forwarded_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
        Signal::SIGCHLD,
    ] {
        set.add(s);
    }
    set
}

/// Run the bundle in `bundle` as container `id` until it exits; returns the exit code
/// (the command's, 128 + N when signal N killed it, or 125/126/127 for a failure, then
/// reported on stderr as one line). Call it from a single-threaded process.
pub fn launch(bundle: &Path, id: &str) -> i32 {
    match start(bundle, id) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("rdpull: error: {f}");
            f.exit_code()
        }
    }
}

fn start(bundle: &Path, id: &str) -> Result<i32, Failure> {
    let (spec, rootfs) = load(bundle)?;
    let (new_pid, namespaces) = namespaces(&spec)?;
    let terminal = spec.process().as_ref().and_then(|p| p.terminal()) == Some(true);
    let seccomp = spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .map(seccomp::filter)
        .transpose()?;
    let cgroups = cgroup::Cgroups::create(id, &spec)?;
    let (report_r, report_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).step(Step::Fork, "report pipe")?;
    let console = terminal.then(console_sockets).transpose()?;
    let (joined_r, joined_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).step(Step::Fork, "cgroup pipe")?;
    let signal_fd = block_forwarded_signals()?;
    if new_pid {
        nix::sched::unshare(CloneFlags::CLONE_NEWPID).step(Step::Namespaces, "pid")?;
    }
    let (forked, in_cgroup) = fork_into(cgroups.clone_target()).step(Step::Fork, "container")?;
    let child = match forked {
        ForkResult::Child => {
            drop((signal_fd, report_r, joined_w));
            init::container_init(init::Setup {
                spec: &spec,
                rootfs: &rootfs,
                bundle,
                cgroups: &cgroups,
                namespaces,
                joined: joined_r,
                console_socket: console.map(|(_, theirs)| theirs),
                seccomp: seccomp.as_ref(),
                report: File::from(report_w),
            })
        }
        ForkResult::Parent { child } => child,
    };
    drop((report_w, joined_r));
    // The move into the cgroups waits for an RCU grace period (the kernel's threadgroup
    // lock), the launcher's largest cost: it runs while PID 1 builds the root. A PID 1
    // cloned into its cgroup needs no move.
    let moved = if in_cgroup {
        Ok(())
    } else {
        cgroups.add(child.as_raw())
    };
    if let Err(f) = moved {
        let _ = kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
        // A PID 1 that failed first is gone (ESRCH here): its report is the cause.
        return Err(report::Failure::receive(&mut File::from(report_r)).unwrap_or(f));
    }
    // A PID 1 that failed first has closed its end; its report says why.
    let _ = rustix::io::write(&joined_w, b"j");
    drop(joined_w);
    let code = wait_for(child, &signal_fd, console);
    report_oom(code, &cgroups);
    drop(cgroups);
    match report::Failure::receive(&mut File::from(report_r)) {
        Some(f) => Err(f),
        None => Ok(code),
    }
}

/// Say so when the container ended killed (137) by the OOM killer at its memory limit.
fn report_oom(code: i32, cgroups: &cgroup::Cgroups) {
    if code == 128 + Signal::SIGKILL as i32 && cgroups.oom_killed() {
        eprintln!(
            "rdpull: the container reached its memory limit: the kernel's OOM killer killed it"
        );
    }
}

/// Block the signals the launcher forwards (they reach it through the returned
/// signalfd instead), before it forks: the container's processes start with them
/// blocked until each is set up.
fn block_forwarded_signals() -> Result<SignalFd, Failure> {
    let signals = forwarded_signals();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), None)
        .step(Step::Fork, "signal mask")?;
    SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .step(Step::Fork, "signalfd")
}

/// `clone3`'s arguments (`struct clone_args`, as of Linux 5.7).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Fork the container's PID 1: straight into the cgroup `into` with
/// `clone3(CLONE_INTO_CGROUP)` when there is one and the kernel has it (5.7+); returns
/// whether it was. Like `fork`, the child goes on with a copy of this process.
fn fork_into(into: Option<&OwnedFd>) -> Result<(ForkResult, bool), Errno> {
    if let Some(cgroup) = into {
        let args = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            exit_signal: Signal::SIGCHLD as u64,
            cgroup: std::os::fd::AsRawFd::as_raw_fd(cgroup) as u64,
            ..CloneArgs::default()
        };
        // SAFETY: without CLONE_VM this is a fork: the child gets its own copy of the
        // address space and continues on its copy of this stack. This process is
        // single-threaded (the caller's contract), so no lock is held by a thread the
        // child lacks; glibc (2.34+) asks the kernel for the thread id it signals.
        #[allow(unsafe_code)]
        let ret = unsafe {
            nix::libc::syscall(
                nix::libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        match Errno::result(ret) {
            Ok(0) => return Ok((ForkResult::Child, true)),
            Ok(pid) => {
                let child = Pid::from_raw(pid as i32);
                return Ok((ForkResult::Parent { child }, true));
            }
            // Before 5.7 (no CLONE_INTO_CGROUP) or 5.3 (no clone3): fork, then move.
            Err(Errno::ENOSYS | Errno::E2BIG | Errno::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    // SAFETY: this process is single-threaded (the caller's contract), so the child may
    // run any code.
    #[allow(unsafe_code)]
    unsafe { nix::unistd::fork() }.map(|r| (r, false))
}

/// The bundle's spec and the absolute path of its rootfs.
fn load(bundle: &Path) -> Result<(Spec, PathBuf), Failure> {
    let config = bundle.join("config.json");
    let spec = Spec::load(&config).map_err(|e| {
        let what = format!("{}: {e}", config.display());
        Failure::new(Step::Spec, what, Errno::EINVAL)
    })?;
    let rootfs = spec
        .root()
        .as_ref()
        .map_or_else(|| PathBuf::from("rootfs"), |r| r.path().clone());
    Ok((spec, bundle.join(rootfs)))
}

/// The two ends of the socket the pty's master comes back on: ours, the container's.
fn console_sockets() -> Result<(OwnedFd, OwnedFd), Failure> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .step(Step::Terminal, "console socket")
}

/// Forward signals (relaying the pty under `-t`) until the container's PID 1 ends;
/// returns its exit code.
fn wait_for(child: Pid, signal_fd: &SignalFd, console: Option<(OwnedFd, OwnedFd)>) -> i32 {
    // The pty's master, once the container has made it (none if it failed first).
    let master = console.and_then(|(ours, theirs)| {
        drop(theirs);
        tty::receive_fd(&ours)
    });
    if let Some(master) = master {
        let _raw = tty::RawMode::enter();
        tty::copy_window_size(&master);
        let mut code = None;
        tty::relay(&master, signal_fd, || {
            code = on_signals(signal_fd, child, Some(&master));
            code.is_some()
        });
        return code.unwrap_or(125);
    }
    loop {
        let mut fds = [PollFd::new(signal_fd, PollFlags::IN)];
        let _ = rustix::event::poll(&mut fds, None);
        if let Some(code) = on_signals(signal_fd, child, None) {
            return code;
        }
    }
}

/// Handle the pending signals: forward them to the container's PID 1 (with a pty,
/// SIGWINCH resizes it instead), and on SIGCHLD see if it ended. Returns its exit
/// code once it has.
fn on_signals(signal_fd: &SignalFd, child: Pid, pty: Option<&OwnedFd>) -> Option<i32> {
    let mut ended = None;
    while let Ok(Some(info)) = signal_fd.read_signal() {
        let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
            continue;
        };
        match (sig, pty) {
            (Signal::SIGCHLD, _) => {
                ended = match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(_, code)) => Some(code),
                    Ok(WaitStatus::Signaled(_, sig, _)) => Some(128 + sig as i32),
                    _ => ended,
                };
            }
            (Signal::SIGWINCH, Some(master)) => tty::copy_window_size(master),
            _ => {
                let _ = kill(child, sig);
            }
        }
    }
    ended
}

/// Make `spec`'s seccomp filter as the launcher does at each start (from the cache
/// [`SECCOMP_CACHE_ENV`] names, if set), and load it into this process when `load` is
/// set (irreversible: for a child that then exits).
/// For the benchmark of the filter's cost per start (`cargo bench -p rdpull-run`).
#[doc(hidden)]
pub fn seccomp_filter_for_bench(spec: &Spec, load: bool) -> Result<(), Failure> {
    let Some(seccomp) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else {
        return Ok(());
    };
    let filter = seccomp::filter(seccomp)?;
    if load {
        filter.load()?;
    }
    Ok(())
}

/// Remove the cgroups a launcher of container `id` left behind (it was killed before it
/// could). Empty ones only: the kernel refuses to remove a cgroup with processes in it.
pub fn remove_leftovers(id: &str) {
    drop(cgroup::Cgroups::existing(id));
}

/// Whether to make a PID namespace, and the other namespaces to make. Namespaces given
/// by path and user namespaces are refused.
fn namespaces(spec: &Spec) -> Result<(bool, CloneFlags), Failure> {
    let mut flags = CloneFlags::empty();
    let mut pid = false;
    let list = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    for ns in list {
        let name = format!("{:?}", ns.typ()).to_lowercase();
        if ns.path().is_some() {
            return Err(Failure::new(
                Step::Namespaces,
                format!("{name} (by path)"),
                Errno::ENOTSUP,
            ));
        }
        match ns.typ() {
            LinuxNamespaceType::Pid => pid = true,
            LinuxNamespaceType::Mount => flags |= CloneFlags::CLONE_NEWNS,
            LinuxNamespaceType::Uts => flags |= CloneFlags::CLONE_NEWUTS,
            LinuxNamespaceType::Ipc => flags |= CloneFlags::CLONE_NEWIPC,
            LinuxNamespaceType::Network => flags |= CloneFlags::CLONE_NEWNET,
            LinuxNamespaceType::Cgroup => flags |= CloneFlags::CLONE_NEWCGROUP,
            _ => return Err(Failure::new(Step::Namespaces, name, Errno::ENOTSUP)),
        }
    }
    if !flags.contains(CloneFlags::CLONE_NEWNS) {
        // The root is built with mounts; without a mount namespace they would be the host's.
        return Err(Failure::new(
            Step::Namespaces,
            "mount (required)",
            Errno::ENOTSUP,
        ));
    }
    Ok((pid, flags))
}
