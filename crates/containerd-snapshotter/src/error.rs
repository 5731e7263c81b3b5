//! Errors of the snapshotter, and the gRPC codes containerd's proxy client maps back to
//! its own error kinds (`errdefs`): NotFound, AlreadyExists, FailedPrecondition,
//! InvalidArgument, Unimplemented; anything else is Unknown/Internal.

use rdpull_snapshot::StoreError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotterError {
    #[error("snapshot {0}: not found")]
    NotFound(String),
    #[error("snapshot {0}: already exists")]
    AlreadyExists(String),
    /// The snapshot exists but its kind or its children forbid the call.
    #[error("snapshot {key}: {why}")]
    FailedPrecondition { key: String, why: String },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}: not implemented")]
    Unimplemented(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The metadata database failed.
    #[error("metadata: {0}")]
    Database(#[source] Box<redb::Error>),
    /// The metadata database could not be opened (another process holds it).
    #[error("metadata {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: Box<redb::DatabaseError>,
    },
    /// A record of the database does not parse.
    #[error("metadata: record {key}: {source}")]
    Record {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    /// A record contradicts itself (an active snapshot without its own files).
    #[error("metadata: {key}: {why}")]
    Inconsistent { key: String, why: &'static str },
    /// rdpull's own store (shared layers) failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SnapshotterError {
    pub(crate) fn io(path: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_string();
        move |source| SnapshotterError::Io { path, source }
    }

    pub(crate) fn db(e: impl Into<redb::Error>) -> Self {
        SnapshotterError::Database(Box::new(e.into()))
    }

    /// The gRPC status code containerd's client maps back to the same `errdefs` kind.
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            SnapshotterError::NotFound(_) | SnapshotterError::Store(StoreError::NotFound(_)) => {
                Code::NotFound
            }
            SnapshotterError::AlreadyExists(_)
            | SnapshotterError::Store(StoreError::AlreadyExists(_)) => Code::AlreadyExists,
            SnapshotterError::FailedPrecondition { .. }
            | SnapshotterError::Store(StoreError::InvalidState { .. }) => Code::FailedPrecondition,
            SnapshotterError::InvalidArgument(_) => Code::InvalidArgument,
            SnapshotterError::Unimplemented(_) => Code::Unimplemented,
            _ => Code::Internal,
        }
    }
}

impl From<SnapshotterError> for tonic::Status {
    fn from(e: SnapshotterError) -> tonic::Status {
        let msg = rdpull_fetch::with_causes(e.to_string(), std::error::Error::source(&e));
        tonic::Status::new(e.code(), msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn codes_are_the_ones_containerd_maps_back() {
        let cases = [
            (SnapshotterError::NotFound("k".into()), Code::NotFound),
            (
                SnapshotterError::AlreadyExists("k".into()),
                Code::AlreadyExists,
            ),
            (
                SnapshotterError::FailedPrecondition {
                    key: "k".into(),
                    why: "has children".into(),
                },
                Code::FailedPrecondition,
            ),
            (
                SnapshotterError::InvalidArgument("x".into()),
                Code::InvalidArgument,
            ),
            (
                SnapshotterError::Unimplemented("x".into()),
                Code::Unimplemented,
            ),
            (
                SnapshotterError::Store(StoreError::NotFound("s".into())),
                Code::NotFound,
            ),
            (
                SnapshotterError::Inconsistent {
                    key: "x".into(),
                    why: "active without files",
                },
                Code::Internal,
            ),
        ];
        for (e, code) in cases {
            let text = e.to_string();
            let status = tonic::Status::from(e);
            assert_eq!((status.code(), status.message()), (code, text.as_str()));
        }
    }
}
