//! The container's PID 1: it enters the remaining namespaces, builds the root, sets the
//! hostname and brings up loopback in a new network namespace while the launcher moves
//! it into the container's cgroups, waits for that, then forks the command and stays as a minimal init (as `docker run --init` does): it
//! passes the signals the launcher forwards on to the command, reaps every orphan, and
//! exits with the command's status when the command ends.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use oci_spec::runtime::Spec;

use super::cgroup::Cgroups;
use super::report::{Context, Failure, Step};
use super::seccomp::Filter;
use super::{forwarded_signals, mounts, process, tty};

/// What the container's init needs from the launcher.
pub(crate) struct Setup<'a> {
    pub(crate) spec: &'a Spec,
    pub(crate) rootfs: &'a Path,
    pub(crate) bundle: &'a Path,
    pub(crate) cgroups: &'a Cgroups,
    /// The namespaces to enter besides the PID one, which the launcher already made.
    pub(crate) namespaces: CloneFlags,
    /// Readable (one byte) once the launcher has moved this process into the cgroups.
    pub(crate) joined: OwnedFd,
    /// Under `-t`, the socket to send the pty's master to the launcher on.
    pub(crate) console_socket: Option<OwnedFd>,
    /// The seccomp filter for the command, compiled.
    pub(crate) seccomp: Option<&'a Filter>,
    pub(crate) report: File,
}

/// Run as the container's PID 1 (just forked, single-threaded, signals blocked).
pub(crate) fn container_init(mut s: Setup<'_>) -> ! {
    // A cgroup namespace is rooted where this process is when it is made: it waits for
    // the move into the container's cgroups (none when cloned into it).
    let cgroup_namespace = s.namespaces.contains(CloneFlags::CLONE_NEWCGROUP);
    if cgroup_namespace {
        wait_until_joined(&s);
    }
    let tty = match enter(&s).and_then(|()| console(&s)) {
        Ok(tty) => tty,
        Err(f) => f.send_and_exit(&mut s.report),
    };
    // Nothing runs the command before the launcher has moved this process into the
    // container's cgroups (and so under its device rules).
    if !cgroup_namespace {
        wait_until_joined(&s);
    }
    let process = s.spec.process().clone().unwrap_or_default();
    // SAFETY: the launcher is single-threaded, so the child may run any code.
    #[allow(unsafe_code)]
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => process::exec_command(&process, tty, s.seccomp, s.report),
        Ok(ForkResult::Parent { child }) => {
            drop(s.report);
            drop(tty);
            supervise(child)
        }
        Err(e) => Failure::new(Step::Fork, "command", e).send_and_exit(&mut s.report),
    }
}

/// Wait for the launcher's word that this process is in the container's cgroups; if it
/// could not move it, it says why itself, and this process ends.
fn wait_until_joined(s: &Setup<'_>) {
    let mut joined = [0u8; 1];
    if !matches!(rustix::io::read(&s.joined, &mut joined), Ok(1)) {
        std::process::exit(125);
    }
}

fn enter(s: &Setup<'_>) -> Result<(), Failure> {
    // The container lives only as long as its launcher: killed outright, the launcher
    // takes the whole PID namespace with it instead of leaving it unwatched.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .step(Step::Namespaces, "parent death signal")?;
    // Out of the caller's session: a terminal's signals reach the container only as
    // the launcher forwards them.
    nix::unistd::setsid().step(Step::Namespaces, "setsid")?;
    nix::sched::unshare(s.namespaces).step(Step::Namespaces, &format!("{:?}", s.namespaces))?;
    mounts::build_root(s.spec, s.rootfs, s.bundle, s.cgroups)?;
    if s.namespaces.contains(CloneFlags::CLONE_NEWUTS) {
        if let Some(name) = s.spec.hostname() {
            nix::unistd::sethostname(name).step(Step::Hostname, name)?;
        }
    }
    if s.namespaces.contains(CloneFlags::CLONE_NEWNET) {
        loopback_up().step(Step::Network, "lo")?;
    }
    Ok(())
}

/// Under `-t`: the pty, made in the container, its master sent to the launcher;
/// returns the slave, for the command.
fn console(s: &Setup<'_>) -> Result<Option<OwnedFd>, Failure> {
    let Some(socket) = &s.console_socket else {
        return Ok(None);
    };
    let pty = tty::Pty::open_as_console()?;
    tty::send_fd(socket, pty.master.as_fd())?;
    Ok(Some(pty.slave))
}

/// Bring `lo` up (a new network namespace has it down).
fn loopback_up() -> Result<(), Errno> {
    use rustix::net::{AddressFamily, SocketType};
    let sock = rustix::net::socket(AddressFamily::INET, SocketType::DGRAM, None)
        .map_err(|e| Errno::from_raw(e.raw_os_error()))?;
    let mut req = nix::libc::ifreq {
        ifr_name: [0; nix::libc::IFNAMSIZ],
        ifr_ifru: nix::libc::__c_anonymous_ifr_ifru { ifru_flags: 0 },
    };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo") {
        *d = *s as nix::libc::c_char;
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    // SAFETY: `req` is a valid ifreq that outlives both calls; SIOCGIFFLAGS and
    // SIOCSIFFLAGS read and write only its flags.
    #[allow(unsafe_code)]
    unsafe {
        Errno::result(nix::libc::ioctl(fd, nix::libc::SIOCGIFFLAGS, &mut req))?;
        req.ifr_ifru.ifru_flags |= nix::libc::IFF_UP as nix::libc::c_short;
        Errno::result(nix::libc::ioctl(fd, nix::libc::SIOCSIFFLAGS, &req))?;
    }
    Ok(())
}

/// Forward signals to the command, reap everything, and exit with the command's
/// status (128 + N when signal N killed it).
fn supervise(command: Pid) -> ! {
    let Ok(signals) = SignalFd::new(&forwarded_signals()) else {
        std::process::exit(125)
    };
    loop {
        let Ok(Some(info)) = signals.read_signal() else {
            continue;
        };
        let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
            continue;
        };
        if sig != Signal::SIGCHLD {
            let _ = kill(command, sig);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == command => std::process::exit(code),
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == command => {
                    std::process::exit(128 + sig as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}
