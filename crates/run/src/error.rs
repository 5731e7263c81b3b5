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
