use rdpull_verify::{Digest, VerifyError};

use crate::options::{Capability, Retry};

/// Everything that can go wrong talking to a registry. Messages are one line, name the
/// object (reference, digest, URL, file) and never contain credentials or tokens.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The image reference does not parse.
    #[error("invalid reference {reference:?}: {why}")]
    InvalidReference { reference: String, why: String },
    /// The platform string does not parse.
    #[error("invalid platform {0:?}: want os/arch[/variant], e.g. linux/arm64/v8")]
    InvalidPlatform(String),
    /// A request failed below HTTP: connect, TLS, a broken or stalled body.
    #[error("{what}: {url}: {}", describe(.source))]
    Http {
        what: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// Over TLS, with no client certificate given, the server closed the connection right
    /// after the handshake: most likely it requires one.
    #[error("{what}: {url}: {}: the registry may require a client certificate: pass --tls-cert and --tls-key, or set `client` in its hosts.toml", describe(.source))]
    ClientCertificate {
        what: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered with an error status.
    #[error("{what}: {url}: HTTP {status}{detail}")]
    Status {
        what: String,
        url: String,
        status: u16,
        detail: String,
        /// The server's `Retry-After`, in seconds.
        retry_after: Option<u64>,
    },
    /// The registry refused our credentials, or wants some we do not have.
    #[error("{what}: {url}: not authorized{detail}")]
    Unauthorized {
        what: String,
        url: String,
        detail: String,
    },
    /// The Bearer token server failed or answered something unusable.
    #[error("token request to {realm}: {why}")]
    Token { realm: String, why: String },
    /// The challenge's realm is not a URL.
    #[error("token request to {realm}: invalid realm URL: {source}")]
    TokenRealm {
        realm: String,
        #[source]
        source: url::ParseError,
    },
    /// The token request did not get an answer (the URL, which may carry the scope and
    /// account, left out of the cause).
    #[error("token request to {realm}: {source}")]
    TokenTransport {
        realm: String,
        #[source]
        source: reqwest::Error,
    },
    /// A manifest or index is larger than the configured limit.
    #[error("manifest {reference}: larger than the {limit}-byte limit{}", size.map(|s| format!(" ({s} bytes)")).unwrap_or_default())]
    ManifestTooLarge {
        reference: String,
        limit: u64,
        size: Option<u64>,
    },
    /// A Docker schema 1 manifest, which nothing current pushes.
    #[error("manifest {reference} is Docker schema 1 ({media_type}), which is deprecated and not supported: push the image again with a current client")]
    Schema1 {
        reference: String,
        media_type: String,
    },
    /// A manifest media type that is neither an image nor an index.
    #[error("manifest {reference}: unsupported media type {media_type:?}")]
    UnsupportedMediaType {
        reference: String,
        media_type: String,
    },
    /// An index with no image for the platform asked for.
    #[error("manifest {reference}: no image for platform {platform} (available: {available})")]
    NoMatchingPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    /// Indexes pointing at indexes, deeper than `limit`.
    #[error("manifest {reference}: index nested deeper than {limit} levels")]
    IndexTooDeep { reference: String, limit: usize },
    /// Content did not match its digest (or size).
    #[error("{what}: {source}")]
    Verify {
        what: String,
        #[source]
        source: VerifyError,
    },
    /// A manifest, index, config or token answer is not the JSON it should be.
    #[error("{what}: invalid JSON: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// A local setting could not be used: `what` names it (a hosts file, docker config,
    /// credential helper, CA or client certificate file, extra header).
    #[error("{what}: {source}")]
    Setting {
        what: String,
        #[source]
        source: SettingError,
    },
    /// No configured registry host may be used for this kind of request.
    #[error("{what}: no registry host has the {need:?} capability")]
    NoHost { what: String, need: Capability },
    /// A small blob (an image config) is larger than the limit for its kind.
    #[error("blob {digest}: {size} bytes is more than the {limit}-byte limit")]
    BlobTooLarge {
        digest: Digest,
        size: u64,
        limit: u64,
    },
    /// The registry's answer for a blob does not fit what was asked.
    #[error("blob {digest}: {problem}")]
    BlobResponse {
        digest: Digest,
        problem: BodyMismatch,
    },
    /// A chunk's download task panicked or was aborted.
    #[error("blob {digest}: chunk task: {source}")]
    ChunkTask {
        digest: Digest,
        #[source]
        source: tokio::task::JoinError,
    },
    /// A blob's body trickled: fewer than `min_rate` bytes a second over `window` seconds.
    #[error("blob {digest}: too slow: {rate} bytes/s over {window} s, below the minimum of {min_rate} bytes/s")]
    TooSlow {
        digest: Digest,
        rate: u64,
        min_rate: u64,
        window: u64,
    },
    /// A small request (manifest, config), retries included, took longer than allowed.
    #[error("{what}: not done within {limit} s")]
    TimedOut { what: String, limit: u64 },
    /// A blob's body ended early.
    #[error("blob {digest}: body ended at byte {got} of {want}")]
    Incomplete { digest: Digest, got: u64, want: u64 },
    /// Retries exhausted; `last` names the object, `what` is kept for callers.
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp {
        what: String,
        attempts: u32,
        last: Box<FetchError>,
    },
}

/// Why a local setting could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingError {
    /// The file could not be read.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// JSON that does not parse (docker config.json, a credential helper's answer).
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// TOML that does not parse (hosts.toml).
    #[error("{}", .0.message())]
    Toml(#[from] toml::de::Error),
    /// A certificate or key the TLS library refused.
    #[error(transparent)]
    Tls(#[from] reqwest::Error),
    /// A header name or value HTTP does not allow.
    #[error(transparent)]
    HeaderName(#[from] reqwest::header::InvalidHeaderName),
    #[error(transparent)]
    HeaderValue(#[from] reqwest::header::InvalidHeaderValue),
    /// A credential helper's answer is not its JSON.
    #[error("invalid answer: {0}")]
    HelperAnswer(#[source] serde_json::Error),
    /// Well-formed, but against the file's rules: says which key and what it wants.
    #[error("{0}")]
    Rule(String),
}

/// How a blob response differs from the request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyMismatch {
    /// A 206 whose `Content-Range` does not parse.
    #[error("bad Content-Range {0:?}")]
    BadContentRange(String),
    /// A 206 for other bytes than asked, or of a blob of another size.
    #[error("asked for bytes {start}-{last}, got {content_range:?}")]
    WrongRange {
        start: u64,
        last: u64,
        content_range: String,
    },
    /// A 200 whose length is not the descriptor's size.
    #[error("server announces {announced} bytes, the descriptor says {expected}")]
    WrongLength { announced: u64, expected: u64 },
}

impl FetchError {
    /// Worth another try (a network error or a status a server may not repeat), and the
    /// wait the server asked for.
    pub fn retry(&self) -> Retry {
        match self {
            FetchError::Http { .. }
            | FetchError::Incomplete { .. }
            | FetchError::TooSlow { .. } => Retry::Backoff,
            FetchError::Status {
                status,
                retry_after,
                ..
            } if *status >= 500 || *status == 429 || *status == 408 => {
                retry_after.map_or(Retry::Backoff, Retry::After)
            }
            _ => Retry::Never,
        }
    }

    /// A [`FetchError::Setting`] for the setting `what`.
    pub(crate) fn setting(what: impl Into<String>, source: impl Into<SettingError>) -> Self {
        FetchError::Setting {
            what: what.into(),
            source: source.into(),
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
