use std::io;

use rdpull_verify::VerifyError;

/// What went wrong unpacking a layer. One line each, naming the path or digest involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnpackError {
    /// The layer's media type names no compression this crate can read.
    #[error("unsupported layer media type {0:?}")]
    UnsupportedMediaType(String),
    /// The reader of compressed bytes (the download) failed; its error is kept as is.
    #[error("download failed: {0}")]
    Source(#[source] io::Error),
    /// The compressed bytes do not match the layer descriptor's size or digest.
    #[error("compressed blob: {0}")]
    Blob(#[source] VerifyError),
    /// The uncompressed tar stream does not hash to the config's DiffID.
    #[error("uncompressed content (DiffID): {0}")]
    DiffId(#[source] VerifyError),
    /// The compressed data is corrupt or truncated.
    #[error("{compression} data: {source}")]
    Decompress {
        compression: &'static str,
        #[source]
        source: io::Error,
    },
    /// The tar stream itself is malformed.
    #[error("tar stream: {0}")]
    Tar(#[source] io::Error),
    /// Applying one entry failed at the filesystem: `op` names the step.
    #[error("{path}: {op}: {source}")]
    Entry {
        path: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// An entry the applier will not write (it would escape, or is not representable).
    #[error("{path}: refused: {why}")]
    Refused { path: String, why: String },
    /// The layer directory could not be opened, or its applying thread not started.
    #[error("layer directory {path}: {source}")]
    Root {
        path: String,
        #[source]
        source: io::Error,
    },
}
