use std::io;

/// Snapshot store errors, each naming the snapshot or file involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A snapshot of that key or name exists already (another pull may have committed it).
    #[error("snapshot {0}: already exists")]
    AlreadyExists(String),
    /// No snapshot has that key.
    #[error("snapshot {0}: not found")]
    NotFound(String),
    /// The snapshot exists but the operation does not fit its kind or relations.
    #[error("snapshot {key}: {why}")]
    InvalidState { key: String, why: String },
    /// No image record has that name.
    #[error("image {0}: not found")]
    ImageNotFound(String),
    /// A filesystem operation on the store failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    /// The metadata document does not parse.
    #[error("{path}: corrupt metadata: {source}")]
    Corrupt {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// An image's layer blob is not in the content store (it was pulled without
    /// `--keep-blobs`).
    #[error("layer blob {0} is not kept: pull the image with --keep-blobs first")]
    NotKept(String),
    /// An image's config blob does not parse as an image config.
    #[error("config {digest}: not an image config: {source}")]
    Config {
        digest: String,
        #[source]
        source: serde_json::Error,
    },
    /// Writing a flattened rootfs: `op` names the step, `path` the target.
    #[error("{op} {path}: {source}")]
    Rootfs {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    /// The caller stopped the work (a signal); what it had written is removed.
    #[error("interrupted")]
    Interrupted,
    /// A stored blob does not match its digest.
    #[error("blob {digest}: {source}")]
    Blob {
        digest: String,
        #[source]
        source: rdpull_verify::VerifyError,
    },
}

pub(crate) fn io_err(path: impl std::fmt::Display) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_string();
    move |source| StoreError::Io { path, source }
}
