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
    /// A path of the image that no runtime may be handed: a mount destination whose
    /// parent is not a directory, or a directory where a file is bound.
    #[error("unsafe image path {path}: {why}")]
    UnsafePath { path: String, why: String },
    /// The working directory could not be made a directory inside the rootfs.
    #[error("working directory {path}: {source}")]
    Workdir {
        path: String,
        #[source]
        source: io::Error,
    },
    /// A uid or gid outside what runtimes accept (runc's 0 to 2^31-1); -1 would mean
    /// "leave unchanged", i.e. root.
    #[error("user {user}: uids and gids must be in range 0-{max}")]
    IdOutOfRange { user: String, max: u32 },
    /// A file the image provides and rdpull reads (`/etc/passwd`) is not a regular file.
    #[error("rootfs {path}: not a regular file ({kind})")]
    NotRegular { path: String, kind: &'static str },
    /// A file the image provides and rdpull reads is larger than it reads.
    #[error("rootfs {path}: {size} bytes, more than the {max} rdpull reads")]
    TooLarge { path: String, size: u64, max: u64 },
    /// The command line and environment exceed what `execve` takes.
    #[error("exec: {0}")]
    ArgumentsTooLong(String),
    /// A resource limit Docker would refuse (`--memory 1k`), naming the flag.
    #[error("{0}")]
    InvalidLimit(String),
    /// `--cap-add` or `--cap-drop` names no capability.
    #[error("unknown capability: {0:?}")]
    UnknownCapability(String),
    /// `--security-opt` that rdpull does not take.
    #[error(
        "--security-opt {0:?}: takes seccomp=unconfined, seccomp=FILE.json or no-new-privileges"
    )]
    SecurityOpt(String),
    /// A seccomp profile file that cannot be read.
    #[error("seccomp profile {path}: {source}")]
    SeccompProfileRead {
        path: String,
        #[source]
        source: io::Error,
    },
    /// A seccomp profile file that is not Docker's JSON format.
    #[error("seccomp profile {path}: {source}")]
    SeccompProfileFormat {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// A seccomp profile file that gives both `architectures` and `archMap`.
    #[error("seccomp profile {0}: both architectures and archMap are given")]
    SeccompProfileArchitectures(String),
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
    /// Making a bundle's directory or its container id: `op` names the step.
    #[error("{op} {path}: {source}")]
    BundleDir {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    /// The spec does not fit oci-spec's types (a bug of this crate, not an input).
    #[error("runtime spec: {0}")]
    Spec(#[source] serde_json::Error),
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
