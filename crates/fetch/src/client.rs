//! The registry v2 HTTP client: scheme choice, `/v2/` ping, authenticated requests.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::{Response, StatusCode};

use crate::auth::Credentials;
use crate::endpoint::{Capability, Endpoint, EndpointSpec};
use crate::error::FetchError;
use crate::reference::Reference;

/// Settings for talking to registries.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Talk plain HTTP. Without it, HTTPS is used, except that a loopback registry that
    /// does not speak TLS falls back to HTTP (Docker treats 127.0.0.0/8 as insecure too).
    pub plain_http: bool,
    pub credentials: Option<Credentials>,
    /// Where the docker CLI's config.json is looked up for credentials when none are
    /// given (default: `$DOCKER_CONFIG`, else `~/.docker`).
    pub docker_config: Option<std::path::PathBuf>,
    /// PEM file of extra CA certificates to trust, besides the system's.
    pub tls_ca: Option<std::path::PathBuf>,
    /// Client certificate and key (PEM) for registries that ask for one.
    pub tls_client: Option<(std::path::PathBuf, Option<std::path::PathBuf>)>,
    /// Accept any server certificate (dangerous; rdpull warns).
    pub insecure_skip_verify: bool,
    /// containerd-style `hosts.toml` directory (mirrors, per-host TLS).
    pub hosts_dir: Option<std::path::PathBuf>,
    /// Manifests and indexes larger than this are refused before they are buffered.
    pub max_manifest_size: u64,
    pub connect_timeout: Duration,
    /// A response body that delivers no byte for this long fails.
    pub stall_timeout: Duration,
    /// Idle connections kept per host (sized to the pull's parallelism).
    pub pool_size: usize,
    /// Retries and backoff of requests and downloads.
    pub retry: RetryPolicy,
    /// Splitting large blobs over several connections.
    pub chunks: crate::blob::ChunkPolicy,
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

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based): the server's `Retry-After` if
    /// it gave one, else base·2^(attempt-1), capped, with ±50% jitter.
    pub fn delay(&self, attempt: u32, retry_after: Option<u64>) -> Duration {
        if let Some(s) = retry_after {
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
            pool_size: 16,
            retry: RetryPolicy::default(),
            chunks: crate::blob::ChunkPolicy::default(),
        }
    }
}

/// A registry as reached through its endpoints: the mirrors of its `hosts.toml`, in
/// order, then the registry itself.
pub struct Registry {
    endpoints: Vec<Endpoint>,
    options: ClientOptions,
}

impl Registry {
    /// Set up the endpoints that serve `reference`. Without a hosts file the registry
    /// itself is pinged to choose the scheme (a loopback registry without TLS gets HTTP).
    pub async fn connect(
        reference: &Reference,
        options: ClientOptions,
    ) -> Result<Registry, FetchError> {
        let registry = reference.registry();
        let dcfg = options.docker_config.as_deref();
        let server_credentials = match &options.credentials {
            Some(c) => Some(c.clone()),
            None => crate::docker_config::lookup(dcfg, registry).await?,
        };
        let host = reference.registry_host().to_string();
        let scheme = if options.plain_http { "http" } else { "https" };
        let default_server = format!("{scheme}://{host}");
        let from_file = match &options.hosts_dir {
            Some(dir) => crate::hosts::load(dir, registry, &default_server)?,
            None => None,
        };
        let configured = from_file.is_some();
        let specs = from_file.unwrap_or_else(|| {
            vec![EndpointSpec {
                url: default_server,
                pull: true,
                resolve: true,
                ..EndpointSpec::default()
            }]
        });
        let mut endpoints = Vec::new();
        for mut spec in specs {
            if let Some(ca) = &options.tls_ca {
                spec.ca.push(ca.clone());
            }
            if spec.client.is_none() {
                spec.client = options.tls_client.clone();
            }
            spec.skip_verify |= options.insecure_skip_verify;
            // A mirror gets its own credentials, never the registry's.
            let credentials = match &spec.namespace {
                None => server_credentials.clone(),
                Some(_) => crate::docker_config::lookup(dcfg, &host_of(&spec.url)).await?,
            };
            endpoints.push(Endpoint::new(spec, &options, credentials)?);
        }
        if !configured {
            let server = endpoints.last_mut().expect("one endpoint");
            match server.ping().await {
                Err(tls_error @ FetchError::Http { .. })
                    if !options.plain_http && is_loopback(&host) =>
                {
                    tracing::debug!("{host}: no TLS on a loopback registry, trying plain HTTP");
                    server.set_base(format!("http://{host}/v2/"));
                    // If plain HTTP fails too, the TLS failure is the one worth reporting.
                    server.ping().await.map_err(|_| tls_error)?;
                }
                other => other?,
            }
        }
        Ok(Registry { endpoints, options })
    }

    /// Run `op` until it succeeds, fails for good, or has failed `max_attempts` times.
    pub(crate) async fn retrying<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, FetchError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, FetchError>>,
    {
        let policy = &self.options.retry;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match op().await {
                Ok(t) => return Ok(t),
                Err(e) => match e.retry() {
                    Some(after) if attempt < policy.max_attempts => {
                        tracing::debug!("{what}: attempt {attempt} failed: {e}");
                        tokio::time::sleep(policy.delay(attempt, after)).await;
                    }
                    Some(_) => {
                        return Err(FetchError::GaveUp {
                            what: what.to_string(),
                            attempts: attempt,
                            last: Box::new(e),
                        })
                    }
                    None => return Err(e),
                },
            }
        }
    }

    /// The API roots of the endpoints, in the order they are tried.
    pub fn endpoints(&self) -> Vec<&str> {
        self.endpoints.iter().map(|e| e.base()).collect()
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// An authenticated GET of `path` (below `/v2/`) from the first endpoint that can
    /// serve it; a failing endpoint passes the request to the next. The last error is
    /// returned when all fail.
    pub(crate) async fn get(
        &self,
        what: &str,
        path: &str,
        repository: &str,
        accept: Option<&str>,
        need: Capability,
    ) -> Result<Response, FetchError> {
        self.get_range(what, path, repository, accept, None, need)
            .await
    }

    /// [`Registry::get`] with an optional `Range: bytes=start-[end]` (end inclusive).
    pub(crate) async fn get_range(
        &self,
        what: &str,
        path: &str,
        repository: &str,
        accept: Option<&str>,
        range: Option<(u64, Option<u64>)>,
        need: Capability,
    ) -> Result<Response, FetchError> {
        let mut last = None;
        for ep in self.endpoints.iter().filter(|e| e.can(need)) {
            match ep.get(what, path, repository, accept, range).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    tracing::debug!("{what}: {} failed, trying the next host: {e}", ep.base());
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| FetchError::Invalid {
            what: what.to_string(),
            why: format!("no registry host has the {need:?} capability"),
        }))
    }
}

/// `https://host:port/path` → `host:port`.
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}

fn is_loopback(host: &str) -> bool {
    let h = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    h == "localhost" || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

pub(crate) fn http_error(what: &str, url: &str, e: reqwest::Error) -> FetchError {
    FetchError::Http {
        what: what.to_string(),
        url: url.to_string(),
        source: e.without_url(),
    }
}

pub(crate) async fn status_error(
    what: &str,
    url: &str,
    status: StatusCode,
    resp: Response,
) -> FetchError {
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    FetchError::Status {
        what: what.to_string(),
        url: url.to_string(),
        status: status.as_u16(),
        detail: error_detail(resp).await,
        retry_after,
    }
}

/// The first error `message` of a registry's JSON error body, if any.
pub(crate) async fn error_detail(resp: Response) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<E>,
    }
    #[derive(serde::Deserialize)]
    struct E {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let body = match resp.bytes().await {
        Ok(b) if b.len() < 64 << 10 => b,
        _ => return String::new(),
    };
    match serde_json::from_slice::<Errors>(&body) {
        Ok(e) if !e.errors.is_empty() => {
            let e = &e.errors[0];
            let msg: String = format!("{} {}", e.code, e.message)
                .chars()
                .take(200)
                .collect();
            format!(" ({})", msg.trim())
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1:5000",
            "localhost",
            "localhost:5000",
            "[::1]:5000",
            "127.1.2.3",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "docker.io",
            "10.0.0.1:5000",
            "[2001:db8::1]:5000",
            "example.com",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }
}
