//! SIGINT and SIGTERM: the first cancels the running command, which cleans up after
//! itself (a pull removes its active snapshots, `unpack` its partial rootfs) and ends
//! with exit code 128 + the signal; a second exits at once.

use std::sync::atomic::{AtomicI32, Ordering};

/// While a container's runtime runs, its pid: signals go to it instead (`forward_to`).
static FORWARD: AtomicI32 = AtomicI32::new(0);

/// Send SIGINT and SIGTERM to `pid` (a container's runtime, which passes them on to the
/// container) instead of cancelling; 0 stops forwarding.
pub(crate) fn forward_to(pid: u32) {
    FORWARD.store(i32::try_from(pid).unwrap_or(0), Ordering::SeqCst);
}
use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// The signals a command listens for, and the cancellation they trigger.
pub(crate) struct Signals {
    /// Cancelled by the first signal.
    pub(crate) cancel: CancellationToken,
    received: Arc<AtomicI32>,
}

impl Signals {
    /// Start listening (needs the tokio runtime).
    pub(crate) fn watch() -> std::io::Result<Signals> {
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let cancel = CancellationToken::new();
        let received = Arc::new(AtomicI32::new(0));
        let (c, r) = (cancel.clone(), received.clone());
        tokio::spawn(async move {
            loop {
                let number = tokio::select! {
                    _ = interrupt.recv() => libc_number(SignalKind::interrupt()),
                    _ = terminate.recv() => libc_number(SignalKind::terminate()),
                };
                let pid = FORWARD.load(Ordering::SeqCst);
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    if let Some(sig) = rustix::process::Signal::from_named_raw(number) {
                        let _ = rustix::process::kill_process(pid, sig);
                    }
                    continue;
                }
                if r.swap(number, Ordering::SeqCst) != 0 {
                    eprintln!("rdpull: {}: exiting at once", name(number));
                    std::process::exit(128 + number);
                }
                c.cancel();
            }
        });
        Ok(Signals { cancel, received })
    }

    /// The first signal received, if any.
    pub(crate) fn received(&self) -> Option<i32> {
        match self.received.load(Ordering::SeqCst) {
            0 => None,
            n => Some(n),
        }
    }
}

fn libc_number(kind: SignalKind) -> i32 {
    kind.as_raw_value()
}

/// `SIGINT`, `SIGTERM`.
pub(crate) fn name(number: i32) -> &'static str {
    match number {
        2 => "SIGINT",
        15 => "SIGTERM",
        _ => "a signal",
    }
}
