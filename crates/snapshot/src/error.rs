use std::io;

/// Snapshot store errors, each naming the snapshot or file involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("snapshot {0}: already exists")]
    AlreadyExists(String),
    #[error("snapshot {0}: not found")]
    NotFound(String),
    #[error("snapshot {key}: {why}")]
    InvalidState { key: String, why: String },
    #[error("image {0}: not found")]
    ImageNotFound(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: corrupt metadata: {source}")]
    Corrupt {
        path: String,
        #[source]
        source: serde_json::Error,
    },
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
