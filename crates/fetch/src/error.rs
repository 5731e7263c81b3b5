use rdpull_verify::{Digest, VerifyError};

/// Everything that can go wrong talking to a registry. Messages are one line, name the
/// object (reference, digest, URL) and never contain credentials or tokens.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid reference {reference:?}: {why}")]
    InvalidReference { reference: String, why: String },
    #[error("invalid platform {0:?}: want os/arch[/variant], e.g. linux/arm64/v8")]
    InvalidPlatform(String),
    #[error("{what}: {url}: {source}")]
    Http {
        what: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what}: {url}: HTTP {status}{detail}")]
    Status {
        what: String,
        url: String,
        status: u16,
        detail: String,
    },
    #[error("{what}: {url}: not authorized{detail}")]
    Unauthorized {
        what: String,
        url: String,
        detail: String,
    },
    #[error("token request to {realm}: {why}")]
    Token { realm: String, why: String },
    #[error("manifest {reference}: larger than the {limit}-byte limit{}", size.map(|s| format!(" ({s} bytes)")).unwrap_or_default())]
    ManifestTooLarge {
        reference: String,
        limit: u64,
        size: Option<u64>,
    },
    #[error("manifest {reference} is Docker schema 1 ({media_type}), which is deprecated and not supported: push the image again with a current client")]
    Schema1 {
        reference: String,
        media_type: String,
    },
    #[error("manifest {reference}: unsupported media type {media_type:?}")]
    UnsupportedMediaType {
        reference: String,
        media_type: String,
    },
    #[error("manifest {reference}: no image for platform {platform} (available: {available})")]
    NoMatchingPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error(
        "manifest {reference}: index nested deeper than {0} levels",
        crate::manifest::MAX_INDEX_DEPTH
    )]
    IndexTooDeep { reference: String },
    #[error("{what}: {source}")]
    Verify {
        what: String,
        #[source]
        source: VerifyError,
    },
    #[error("{what}: invalid JSON: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: {why}")]
    Invalid { what: String, why: String },
    #[error("blob {digest}: {why}")]
    Blob { digest: Digest, why: String },
}
