use rdpull_verify::{Digest, VerifyError};

/// Everything that can go wrong talking to a registry. Messages are one line, name the
/// object (reference, digest, URL) and never contain credentials or tokens.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid reference {reference:?}: {why}")]
    InvalidReference { reference: String, why: String },
    #[error("invalid platform {0:?}: want os/arch[/variant], e.g. linux/arm64/v8")]
    InvalidPlatform(String),
    #[error("{what}: {url}: {}", describe(.source))]
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
        /// The server's `Retry-After`, in seconds.
        retry_after: Option<u64>,
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
    #[error("blob {digest}: body ended at byte {got} of {want}")]
    Incomplete { digest: Digest, got: u64, want: u64 },
    /// `last` names the object; `what` is kept for callers.
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp {
        what: String,
        attempts: u32,
        last: Box<FetchError>,
    },
}

impl FetchError {
    /// Worth another try (a network error or a status a server may not repeat), and the
    /// wait the server asked for.
    pub fn retry(&self) -> Option<Option<u64>> {
        match self {
            FetchError::Http { .. } => Some(None),
            FetchError::Status {
                status,
                retry_after,
                ..
            } if *status >= 500 || *status == 429 || *status == 408 => Some(*retry_after),
            FetchError::Incomplete { .. } => Some(None),
            _ => None,
        }
    }
}

/// reqwest's own message hides the cause ("error decoding response body"); spell out the
/// chain, and say plainly when a transfer stalled.
fn describe(e: &reqwest::Error) -> String {
    let s = if e.is_timeout() && !e.is_connect() {
        "stalled: no data within the stall timeout".to_string()
    } else if e.is_timeout() {
        "connect timed out".to_string()
    } else {
        e.to_string()
    };
    with_causes(s, std::error::Error::source(e))
}

/// `message` followed by every cause in the chain from `source` that it does not
/// already spell out, joined by ": " (one line, no repetition).
pub fn with_causes(
    mut message: String,
    mut source: Option<&(dyn std::error::Error + 'static)>,
) -> String {
    while let Some(inner) = source {
        let m = inner.to_string();
        if !message.contains(&m) {
            message.push_str(": ");
            message.push_str(&m);
        }
        source = inner.source();
    }
    message
}
