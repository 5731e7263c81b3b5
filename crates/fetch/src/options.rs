//! How to talk to registries: plain data, set by the caller, read by every module.

use std::path::PathBuf;
use std::time::Duration;

use crate::auth::Credentials;

/// Settings for talking to registries.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Talk plain HTTP. Without it, HTTPS is used, except that a loopback registry that
    /// does not speak TLS falls back to HTTP (Docker treats 127.0.0.0/8 as insecure too).
    pub plain_http: bool,
    pub credentials: Option<Credentials>,
    /// Where the docker CLI's config.json is looked up for credentials when none are
    /// given (default: `$DOCKER_CONFIG`, else `~/.docker`).
    pub docker_config: Option<PathBuf>,
    /// PEM file of extra CA certificates to trust, besides the system's.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for registries that ask for one.
    pub tls_client: Option<(PathBuf, Option<PathBuf>)>,
    /// Accept any server certificate (dangerous; rdpull warns).
    pub insecure_skip_verify: bool,
    /// containerd-style `hosts.toml` directory (mirrors, per-host TLS).
    pub hosts_dir: Option<PathBuf>,
    /// Manifests and indexes larger than this are refused before they are buffered.
    pub max_manifest_size: u64,
    pub connect_timeout: Duration,
    /// A response body that delivers no byte for this long fails; it is also the window
    /// over which `min_rate` is measured.
    pub stall_timeout: Duration,
    /// A blob body that delivers fewer bytes a second than this over a whole
    /// `stall_timeout` window is too slow: resumed like a broken one, and failing for
    /// good after `slow_windows` such windows (curl's `--speed-limit`). 0: off.
    pub min_rate: u64,
    /// Too-slow windows a blob body may have before it fails (at most
    /// `retry.max_attempts`): a dead-slow server fails within this many stall windows.
    pub slow_windows: u32,
    /// A small object must arrive within this: the ping and token requests whole, a
    /// manifest's body, an image config with its retries. (Response headers are bounded
    /// by `stall_timeout` per attempt.)
    pub request_timeout: Duration,
    /// Idle connections kept per host (sized to the pull's parallelism).
    pub pool_size: usize,
    /// Retries and backoff of requests and downloads.
    pub retry: RetryPolicy,
    /// Splitting large blobs over several connections.
    pub chunks: ChunkPolicy,
}

/// How requests survive failures: bounded attempts with exponential backoff and jitter.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Failed attempts in a row (without progress, for a download) before giving up.
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// The longest `Retry-After` honoured.
    pub retry_after_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            retry_after_max: Duration::from_secs(60),
        }
    }
}

/// Whether a failed request is worth another try, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retry {
    /// The failure will not go away by asking again.
    Never,
    /// Try again after the retry policy's backoff.
    Backoff,
    /// Try again after the server's `Retry-After` (seconds; capped by the policy).
    After(u64),
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based): the server's `Retry-After` if
    /// it gave one, else base·2^(attempt-1), capped, with ±50% jitter.
    pub fn delay(&self, attempt: u32, retry: Retry) -> Duration {
        if let Retry::After(s) = retry {
            return Duration::from_secs(s).min(self.retry_after_max);
        }
        let exp = self
            .backoff_base
            .saturating_mul(1 << attempt.saturating_sub(1).min(16));
        // Jitter from the clock's nanoseconds: enough to keep clients apart.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.subsec_nanos())
            .unwrap_or(0);
        exp.min(self.backoff_max)
            .mul_f64(0.5 + (nanos % 1000) as f64 / 1000.0)
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            plain_http: false,
            credentials: None,
            tls_ca: None,
            tls_client: None,
            insecure_skip_verify: false,
            hosts_dir: None,
            docker_config: None,
            // containerd's limit too: no real manifest comes near it.
            max_manifest_size: 4 << 20,
            connect_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(30),
            min_rate: 1024,
            slow_windows: 2,
            request_timeout: Duration::from_secs(60),
            pool_size: 16,
            retry: RetryPolicy::default(),
            chunks: ChunkPolicy::default(),
        }
    }
}

/// When and how to fetch one blob over several connections.
#[derive(Clone, Debug)]
pub struct ChunkPolicy {
    /// Blobs smaller than this use one stream.
    pub min_size: u64,
    pub chunk_size: u64,
    /// Chunks of one blob in flight at most (the streaming one included).
    pub window: usize,
    /// Bytes the prefetched chunks of all of a pull's blobs may hold at once; the size
    /// of its [`StreamBudget`]'s memory.
    pub memory: u64,
}

impl Default for ChunkPolicy {
    fn default() -> Self {
        ChunkPolicy {
            min_size: 32 << 20,
            // Large: a registry spends milliseconds of CPU per request, which a pull from
            // a registry on the same machine pays for (docs/performance.md).
            chunk_size: 16 << 20,
            window: 4,
            // Four chunks: memory stays bounded however many layers are chunked at once.
            memory: 64 << 20,
        }
    }
}

/// What an endpoint may be used for (containerd's host capabilities).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Capability {
    /// Fetch content by digest (blobs, manifests by digest).
    Pull,
    /// Resolve a tag to a digest.
    Resolve,
}

/// How to reach one endpoint: everything but the live state.
#[derive(Clone, Debug, Default)]
pub struct EndpointSpec {
    /// `scheme://host[:port][/path]`, without the trailing `/v2`.
    pub url: String,
    /// The URL already is the API root (containerd's `override_path`).
    pub override_path: bool,
    pub pull: bool,
    pub resolve: bool,
    /// Extra CA certificates (PEM files).
    pub ca: Vec<PathBuf>,
    /// Client certificate and key (PEM; the key may be in the certificate file).
    pub client: Option<(PathBuf, Option<PathBuf>)>,
    pub skip_verify: bool,
    pub headers: Vec<(String, String)>,
    /// Added as `?ns=<registry>` to a mirror's requests, as containerd does, so one
    /// mirror can serve several upstreams.
    pub namespace: Option<String>,
}
