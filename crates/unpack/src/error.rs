use std::io;

use rdpull_verify::VerifyError;

/// What went wrong unpacking a layer. One line each, naming the path or digest involved.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("unsupported layer media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("download failed: {0}")]
    Source(String),
    #[error("compressed blob: {0}")]
    Blob(VerifyError),
    #[error("uncompressed content (DiffID): {0}")]
    DiffId(VerifyError),
    #[error("{compression} data: {source}")]
    Decompress {
        compression: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("tar stream: {0}")]
    Tar(#[source] io::Error),
    #[error("{path}: {op}: {source}")]
    Entry {
        path: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{path}: refused: {why}")]
    Refused { path: String, why: String },
    #[error("layer directory {path}: {source}")]
    Root {
        path: String,
        #[source]
        source: io::Error,
    },
}
