//! The registry v2 HTTP client: scheme choice, `/v2/` ping, authenticated requests.

use std::net::IpAddr;

use reqwest::Response;

use crate::endpoint::Endpoint;
use crate::error::FetchError;
use crate::options::{Capability, ClientOptions, EndpointSpec, Retry};
use crate::reference::Reference;

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
                Err(
                    tls_error @ (FetchError::Http { .. } | FetchError::ClientCertificate { .. }),
                ) if !options.plain_http && is_loopback(&host) => {
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
                    Retry::Never => return Err(e),
                    retry if attempt < policy.max_attempts => {
                        tracing::debug!("{what}: attempt {attempt} failed: {e}");
                        tokio::time::sleep(policy.delay(attempt, retry)).await;
                    }
                    _ => {
                        return Err(FetchError::GaveUp {
                            what: what.to_string(),
                            attempts: attempt,
                            last: Box::new(e),
                        })
                    }
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
        Err(last.unwrap_or_else(|| FetchError::NoHost {
            what: what.to_string(),
            need,
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
