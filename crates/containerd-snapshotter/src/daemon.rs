//! The long-running server: one per store root, on a unix socket containerd connects to.
//!
//! Start: the root's daemon lock is taken without waiting (a second daemon on the same
//! root refuses), the database opens, what a crash left is cleaned up, and the socket is
//! bound with mode 0600 (0660 and the group's ownership with a socket group). A socket
//! file left by a dead server is replaced; one a live server answers on is refused.
//! Stop (the cancel token, from SIGTERM/SIGINT): running pulls are cancelled and remove
//! their active snapshots, in-flight calls finish, the socket file goes.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rdpull_pipeline::PullOptions;
use rdpull_snapshot::Store;
use rustix::fs::{flock, FlockOperation};
use tokio_stream::wrappers::UnixListenerStream;

use crate::remote::RemotePulls;
use crate::service::SnapshotsService;
use crate::snapshotter::Snapshotter;

/// How the daemon listens and pulls.
#[derive(Clone, Debug)]
pub struct DaemonOptions {
    /// The unix socket containerd's `proxy_plugins` address names.
    pub address: PathBuf,
    /// Group allowed to connect (socket mode 0660); none: root only (0600).
    pub socket_group: Option<u32>,
    /// Registry access and parallelism of remote pulls; its cancel token stops the
    /// daemon.
    pub pull: PullOptions,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    #[error("another rdpull snapshotter serves the store {0}")]
    AlreadyRunning(String),
    #[error("{0}: a server is listening there already")]
    AddressInUse(String),
    #[error("{0}: exists and is not a socket")]
    NotASocket(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Snapshotter(#[from] crate::SnapshotterError),
    #[error("serving {path}: {source}")]
    Serve {
        path: String,
        #[source]
        source: tonic::transport::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError {
    let path = path.display().to_string();
    move |source| DaemonError::Io { path, source }
}

/// Serve containerd's snapshots API for `store` until `options.pull.cancel` fires.
pub async fn serve(store: Arc<Store>, options: DaemonOptions) -> Result<(), DaemonError> {
    let _lock = lock_root(store.root())?;
    let sn = Arc::new(
        tokio::task::spawn_blocking(move || {
            let sn = Snapshotter::open(store)?;
            sn.cleanup(&Default::default())?;
            Ok::<_, crate::SnapshotterError>(sn)
        })
        .await
        .expect("open does not panic")?,
    );
    let listener = bind(&options.address, options.socket_group)?;
    let cancel = options.pull.cancel.clone();
    let remote = Arc::new(RemotePulls::new(sn.clone(), options.pull.clone()));
    let service = SnapshotsService::new(sn, remote.clone());
    tracing::info!(
        "serving containerd snapshots on {}",
        options.address.display()
    );
    let served = tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
            cancel.cancelled().await;
            tracing::info!("stopping: cancelling remote pulls");
            remote.shutdown().await;
        })
        .await;
    let _ = std::fs::remove_file(&options.address);
    tracing::info!("stopped");
    served.map_err(|source| DaemonError::Serve {
        path: options.address.display().to_string(),
        source,
    })
}

/// The root's daemon lock, held while serving.
fn lock_root(root: &Path) -> Result<File, DaemonError> {
    let dir = root.join("containerd");
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let path = dir.join("daemon.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    flock(file.as_fd(), FlockOperation::NonBlockingLockExclusive)
        .map_err(|_| DaemonError::AlreadyRunning(root.display().to_string()))?;
    Ok(file)
}

/// Bind `path`, replacing a stale socket, with mode 0600 (0660 for `group`).
fn bind(path: &Path, group: Option<u32>) -> Result<tokio::net::UnixListener, DaemonError> {
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(DaemonError::AddressInUse(path.display().to_string()));
            }
            tracing::info!("{}: replacing a stale socket", path.display());
            std::fs::remove_file(path).map_err(io(path))?;
        }
        Ok(_) => return Err(DaemonError::NotASocket(path.display().to_string())),
        Err(_) => {}
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    // Bound under a umask that leaves the socket closed until its mode is set: no
    // other thread creates files yet.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let listener = tokio::net::UnixListener::bind(path);
    rustix::process::umask(old);
    let listener = listener.map_err(io(path))?;
    let mode = match group {
        Some(gid) => {
            std::os::unix::fs::chown(path, None, Some(gid)).map_err(io(path))?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))?;
    Ok(listener)
}
