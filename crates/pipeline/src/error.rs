use std::io;

use rdpull_fetch::FetchError;
use rdpull_snapshot::StoreError;
use rdpull_unpack::UnpackError;
use rdpull_verify::{Digest, VerifyError};

/// Why a pull failed. One line each, naming the
/// layer, digest or path involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PullError {
    /// Reaching the registry, or resolving the reference to a manifest and config.
    #[error(transparent)]
    Fetch(Box<FetchError>),
    /// The snapshot store refused or failed an operation.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// One layer failed; `index` counts from 1, as the progress display does.
    #[error("layer {index}/{count} {digest}: {source}")]
    Layer {
        index: usize,
        count: usize,
        digest: Digest,
        #[source]
        source: LayerError,
    },
    /// The image config does not describe the manifest's layers.
    #[error("config {digest}: {source}")]
    Config {
        digest: Digest,
        #[source]
        source: ConfigError,
    },
    /// The layer stopped because another layer of the pull failed first.
    #[error("cancelled: another layer failed")]
    Cancelled,
    /// The caller's cancellation token fired (a signal): the pull stopped, its active
    /// snapshots are removed and the layers committed before it are kept.
    #[error("interrupted")]
    Interrupted,
    /// A layer's task panicked or was aborted: a bug, not an input problem.
    #[error("{what}: {source}")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// How one layer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    /// Its blob could not be fetched.
    #[error(transparent)]
    Download(Box<FetchError>),
    /// Its bytes did not verify, decompress or apply.
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    /// Its blob could not be written to the store (`--keep-blobs`).
    #[error("keeping its blob: {0}")]
    Keep(#[source] io::Error),
}

impl From<FetchError> for PullError {
    fn from(e: FetchError) -> Self {
        PullError::Fetch(Box::new(e))
    }
}

impl From<FetchError> for LayerError {
    fn from(e: FetchError) -> Self {
        LayerError::Download(Box::new(e))
    }
}

/// What is wrong with an image config.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `rootfs.diff_ids` does not have one entry per manifest layer.
    #[error("{diff_ids} diff_ids for {layers} layers in manifest {manifest}")]
    DiffIdCount {
        diff_ids: usize,
        layers: usize,
        manifest: Digest,
    },
    /// The config is not an image config.
    #[error("not an image config: {0}")]
    Json(#[from] serde_json::Error),
    /// A `rootfs.diff_ids` entry is not a digest.
    #[error(transparent)]
    InvalidDiffId(#[from] VerifyError),
}
