//! `-t`: a pseudo-terminal for the command, the caller's terminal in raw mode while the
//! container runs (restored on every way out: the guard's drop), bytes relayed both
//! ways, and the window size passed on at start and on every SIGWINCH.
//!
//! The pty is made inside the container, from its own devpts, so that the command sees
//! `/dev/pts/0` and `/dev/console` as under runc; its master reaches the launcher over
//! a unix socket (`SCM_RIGHTS`).

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::{poll, PollFd, PollFlags};
use rustix::fs::{Mode, OFlags};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use rustix::pty::OpenptFlags;
use rustix::termios::{OptionalActions, Termios};

use super::report::{Context, Failure, Step};

/// The pseudo-terminal: the launcher keeps the master, the command gets the slave.
pub(crate) struct Pty {
    pub(crate) master: OwnedFd,
    pub(crate) slave: OwnedFd,
}

impl Pty {
    /// A new pty from `/dev/ptmx` (in the container: its devpts), its slave also bound
    /// on `/dev/console`.
    pub(crate) fn open_as_console() -> Result<Pty, Failure> {
        let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
        let master = rustix::pty::openpt(flags).step(Step::Terminal, "ptmx")?;
        rustix::pty::grantpt(&master).step(Step::Terminal, "grantpt")?;
        rustix::pty::unlockpt(&master).step(Step::Terminal, "unlockpt")?;
        let name = rustix::pty::ptsname(&master, Vec::new()).step(Step::Terminal, "ptsname")?;
        let slave = rustix::fs::open(
            name.as_c_str(),
            OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .step(Step::Terminal, &name.to_string_lossy())?;
        let console = "/dev/console";
        match rustix::fs::open(
            console,
            OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(_) => {}
            Err(e) => return Err(Failure::new(Step::Terminal, console, e)),
        }
        let bind = nix::mount::MsFlags::MS_BIND;
        nix::mount::mount(
            Some(name.as_c_str()),
            console,
            None::<&str>,
            bind,
            None::<&str>,
        )
        .step(Step::Terminal, console)?;
        Ok(Pty { master, slave })
    }
}

/// Send `fd` over the unix socket `sock`.
pub(crate) fn send_fd(sock: &OwnedFd, fd: BorrowedFd<'_>) -> Result<(), Failure> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    cmsg.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(sock, &[IoSlice::new(b"t")], &mut cmsg, SendFlags::empty())
        .step(Step::Terminal, "send pty")
        .map(drop)
}

/// The fd sent over `sock`, or none if the other side closed it first.
pub(crate) fn receive_fd(sock: &OwnedFd) -> Option<OwnedFd> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    rustix::net::recvmsg(sock, &mut iov, &mut cmsg, RecvFlags::CMSG_CLOEXEC).ok()?;
    cmsg.drain().find_map(|m| match m {
        RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
        _ => None,
    })
}

/// The caller's terminal in raw mode until dropped.
pub(crate) struct RawMode(Termios);

impl RawMode {
    /// Raw mode on stdin, if stdin is a terminal.
    pub(crate) fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(stdin.as_fd(), OptionalActions::Now, &raw).ok()?;
        Some(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        let _ = rustix::termios::tcsetattr(stdin.as_fd(), OptionalActions::Now, &self.0);
    }
}

/// Give the pty the caller's window size (if stdin is a terminal).
pub(crate) fn copy_window_size(master: &OwnedFd) {
    if let Ok(size) = rustix::termios::tcgetwinsize(std::io::stdin().as_fd()) {
        let _ = rustix::termios::tcsetwinsize(master, size);
    }
}

/// Relay stdin to the pty and the pty to stdout. `signals` is polled too: `on_signal`
/// runs when it is readable and returns true once the container has ended; what the
/// pty still holds is then written out.
pub(crate) fn relay(master: &OwnedFd, signals: &impl AsFd, mut on_signal: impl FnMut() -> bool) {
    let (mut stdin_open, mut master_open) = (true, true);
    let mut buf = [0u8; 8192];
    let stdin = std::io::stdin();
    loop {
        let mut fds = vec![PollFd::new(signals, PollFlags::IN)];
        if master_open {
            fds.push(PollFd::new(master, PollFlags::IN));
        }
        if stdin_open {
            fds.push(PollFd::new(&stdin, PollFlags::IN));
        }
        if poll(&mut fds, None).is_err() {
            continue;
        }
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        let mut i = 1;
        if master_open {
            // 0 or EIO: every slave is closed.
            master_open = !ready[i] || copy(master, std::io::stdout().as_fd(), &mut buf);
            i += 1;
        }
        if stdin_open && ready.get(i) == Some(&true) {
            stdin_open = copy(stdin.as_fd(), master, &mut buf);
        }
        if ready[0] && on_signal() {
            break;
        }
    }
    if master_open {
        let _ = rustix::fs::fcntl_setfl(master, OFlags::NONBLOCK);
        while let Ok(n @ 1..) = rustix::io::read(master, &mut buf) {
            write_all(std::io::stdout().as_fd(), &buf[..n]);
        }
    }
}

/// One read from `from` written in full to `to`; false at its end or on an error.
fn copy(from: impl AsFd, to: impl AsFd, buf: &mut [u8]) -> bool {
    match rustix::io::read(&from, &mut *buf) {
        Ok(n) if n > 0 => write_all(to, &buf[..n]),
        Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => true,
        _ => false,
    }
}

fn write_all(to: impl AsFd, mut rest: &[u8]) -> bool {
    while !rest.is_empty() {
        match rustix::io::write(&to, rest) {
            Ok(w) => rest = &rest[w..],
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return false,
        }
    }
    true
}
