//! The launcher's report of a failed setup step: written by the container's processes
//! to a close-on-exec pipe, read by the launcher. A successful `execve` closes the pipe
//! with nothing written, so "nothing read" means the command runs.
//!
//! The exit code is decided from the step and its errno, never from error strings:
//! `execve` failing with ENOENT is 127, with EACCES, ENOEXEC, EISDIR or EPERM 126, and
//! every other step 125 (`docker run`'s table).

use std::fmt;
use std::io::{Read, Write};

use nix::errno::Errno;

/// A setup step of the launcher, named in the error line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Step {
    Spec,
    Namespaces,
    Cgroup,
    Mount,
    Devices,
    PivotRoot,
    MaskedPath,
    ReadonlyPath,
    Hostname,
    Network,
    Terminal,
    Rlimit,
    Groups,
    User,
    Capabilities,
    NoNewPrivileges,
    Seccomp,
    Cwd,
    Fork,
    Exec,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Spec => "spec",
            Step::Namespaces => "namespaces",
            Step::Cgroup => "cgroup",
            Step::Mount => "mount",
            Step::Devices => "devices",
            Step::PivotRoot => "pivot_root",
            Step::MaskedPath => "masked path",
            Step::ReadonlyPath => "read-only path",
            Step::Hostname => "hostname",
            Step::Network => "network",
            Step::Terminal => "terminal",
            Step::Rlimit => "rlimit",
            Step::Groups => "setgroups",
            Step::User => "setuid/setgid",
            Step::Capabilities => "capabilities",
            Step::NoNewPrivileges => "no_new_privileges",
            Step::Seccomp => "seccomp",
            Step::Cwd => "cwd",
            Step::Fork => "fork",
            Step::Exec => "exec",
        }
    }
}

/// A step that failed: which, on what (a path, a name), and the errno.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    pub(crate) step: Step,
    pub(crate) what: String,
    pub(crate) errno: i32,
}

impl Failure {
    pub(crate) fn new(step: Step, what: impl Into<String>, errno: impl OsErrno) -> Failure {
        Failure {
            step,
            what: what.into(),
            errno: errno.raw(),
        }
    }

    /// `docker run`'s exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        match (self.step, Errno::from_raw(self.errno)) {
            (Step::Exec, Errno::ENOENT) => 127,
            (Step::Exec, Errno::EACCES | Errno::ENOEXEC | Errno::EISDIR | Errno::EPERM) => 126,
            _ => 125,
        }
    }

    /// Send the report (one JSON document) and end the process with its exit code.
    pub(crate) fn send_and_exit(&self, pipe: &mut std::fs::File) -> ! {
        let _ = pipe.write_all(&serde_json::to_vec(self).expect("a report serializes"));
        std::process::exit(self.exit_code())
    }

    /// The report read from the pipe (to its end), if one was written.
    pub(crate) fn receive(pipe: &mut impl Read) -> Option<Failure> {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        serde_json::from_slice(&buf).ok()
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errno = Errno::from_raw(self.errno);
        let why = std::io::Error::from_raw_os_error(self.errno);
        match (self.step, errno) {
            (Step::Exec, Errno::ENOENT) if !self.what.contains('/') => write!(
                f,
                "exec: {:?}: executable file not found in $PATH",
                self.what
            ),
            _ if self.what.is_empty() => write!(f, "launch: {}: {why}", self.step.name()),
            _ => write!(f, "launch: {} {}: {why}", self.step.name(), self.what),
        }
    }
}

impl std::error::Error for Failure {}

/// An error that carries an errno: nix's, rustix's, std's.
pub(crate) trait OsErrno {
    fn raw(&self) -> i32;
}

impl OsErrno for Errno {
    fn raw(&self) -> i32 {
        *self as i32
    }
}

impl OsErrno for rustix::io::Errno {
    fn raw(&self) -> i32 {
        self.raw_os_error()
    }
}

impl OsErrno for std::io::Error {
    fn raw(&self) -> i32 {
        self.raw_os_error().unwrap_or(Errno::EIO as i32)
    }
}

/// Attach a step and its subject to a failing call.
pub(crate) trait Context<T> {
    fn step(self, step: Step, what: &str) -> Result<T, Failure>;
}

impl<T, E: OsErrno> Context<T> for Result<T, E> {
    fn step(self, step: Step, what: &str) -> Result<T, Failure> {
        self.map_err(|e| Failure::new(step, what, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_docker_run() {
        let f = |step, errno| Failure::new(step, "/bin/x", errno).exit_code();
        assert_eq!(f(Step::Exec, Errno::ENOENT), 127);
        assert_eq!(f(Step::Exec, Errno::EACCES), 126);
        assert_eq!(f(Step::Exec, Errno::ENOEXEC), 126);
        assert_eq!(f(Step::Exec, Errno::EISDIR), 126);
        assert_eq!(f(Step::Exec, Errno::E2BIG), 125);
        assert_eq!(f(Step::Mount, Errno::ENOENT), 125);
        assert_eq!(f(Step::User, Errno::EPERM), 125);
    }

    #[test]
    fn a_report_survives_the_pipe_and_names_its_step() {
        let sent = Failure::new(Step::Mount, "/proc", Errno::EPERM);
        let mut bytes: &[u8] = &serde_json::to_vec(&sent).unwrap();
        let got = Failure::receive(&mut bytes).unwrap();
        assert_eq!(got, sent);
        assert_eq!(
            got.to_string(),
            "launch: mount /proc: Operation not permitted (os error 1)"
        );
        assert_eq!(Failure::receive(&mut &b""[..]), None);
        let nf = Failure::new(Step::Exec, "nosuch", Errno::ENOENT);
        assert_eq!(
            nf.to_string(),
            "exec: \"nosuch\": executable file not found in $PATH"
        );
    }
}
