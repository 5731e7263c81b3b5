use std::io;

/// Why a runtime spec or bundle could not be made. One line each, naming the user,
/// group, path or field involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// `--user` or the config's `User` names a user the image's passwd file lacks
    /// (Docker's words).
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    /// The group part names a group the image's group file lacks.
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
    /// Neither the image nor the command line gives a command to run.
    #[error("no command: the image has no Entrypoint or Cmd, and none was given")]
    NoCommand,
    /// An `-e` value that is not `NAME=VALUE` or `NAME`, or a name with `=` in it.
    #[error("invalid environment variable {0:?}")]
    InvalidEnv(String),
    /// `--workdir` or the config's `WorkingDir` is not an absolute path.
    #[error("working directory {0:?} is not an absolute path")]
    RelativeWorkdir(String),
    /// Reading or writing a file inside the rootfs.
    #[error("rootfs {path}: {source}")]
    Rootfs {
        path: String,
        #[source]
        source: io::Error,
    },
    /// Writing a bundle file.
    #[error("bundle {path}: {source}")]
    Bundle {
        path: String,
        #[source]
        source: io::Error,
    },
    /// The spec does not fit oci-spec's types (a bug of this crate, not an input).
    #[error("runtime spec: {0}")]
    Spec(String),
}

/// Why a container could not run. [`RunError::exit_code`] is what `docker run` would
/// exit with: 127 for a command not found, 126 for one that cannot be invoked, 125 for
/// everything that failed in rdpull itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error(transparent)]
    Setup(#[from] SpecError),
    #[error(transparent)]
    Store(#[from] rdpull_snapshot::StoreError),
    #[error("mount {path}: {source}")]
    Mount {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("image {0} has no layers")]
    NoLayers(String),
    /// The command is nowhere in the rootfs (`PATH` searched for a bare name).
    #[error("exec: {0}")]
    NotFound(String),
    /// The command is a directory or not executable.
    #[error("exec: {0}")]
    CannotInvoke(String),
    /// The OCI runtime could not be started or waited for.
    #[error("runtime {runtime}: {source}")]
    Runtime {
        runtime: String,
        #[source]
        source: io::Error,
    },
    #[error("no such container: {0}")]
    NoSuchContainer(String),
    #[error("container id prefix {0:?} names several containers")]
    Ambiguous(String),
    #[error("container {0} is running")]
    Running(String),
}

impl RunError {
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::NotFound(_) => 127,
            RunError::CannotInvoke(_) => 126,
            _ => 125,
        }
    }
}
