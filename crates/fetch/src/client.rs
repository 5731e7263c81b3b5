//! The registry v2 HTTP client: scheme choice, `/v2/` ping, authenticated requests.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};

use crate::auth::{parse_challenges, Challenge, Credentials, Secret, TokenResponse};

/// Tokens are renewed this long before they expire, so none expires in flight.
const TOKEN_RENEW_MARGIN: Duration = Duration::from_secs(10);

/// An `Authorization` value and, for a Bearer token, when it expires.
#[derive(Clone)]
struct CachedAuth {
    header: HeaderValue,
    expires: Option<Instant>,
}
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

/// A connection to one registry host, with its token cache.
pub struct Registry {
    http: reqwest::Client,
    base: String,
    options: ClientOptions,
    /// `Authorization` header per scope (`repository:NAME:pull`); "" for registry-wide.
    auth: Mutex<HashMap<String, CachedAuth>>,
    /// The last Bearer challenge, to renew tokens before they expire.
    challenge: Mutex<Option<Challenge>>,
}

impl Registry {
    /// Connect to the registry that serves `reference`: choose the scheme and ping `/v2/`.
    pub async fn connect(
        reference: &Reference,
        mut options: ClientOptions,
    ) -> Result<Registry, FetchError> {
        if options.credentials.is_none() {
            options.credentials = crate::docker_config::lookup(
                options.docker_config.as_deref(),
                reference.registry(),
            )
            .await?;
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.stall_timeout)
            .pool_max_idle_per_host(options.pool_size)
            .user_agent(concat!("rdpull/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &options.tls_ca {
            let bad = |why: String| FetchError::Invalid {
                what: format!("--tls-ca {}", path.display()),
                why,
            };
            let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no PEM certificate in it".into()));
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder.build().map_err(|e| FetchError::Http {
            what: "HTTP client".into(),
            url: String::new(),
            source: e,
        })?;
        let host = reference.registry_host().to_string();
        let https = format!("https://{host}/v2/");
        let http_base = format!("http://{host}/v2/");
        let mut reg = Registry {
            http,
            base: if options.plain_http {
                http_base.clone()
            } else {
                https
            },
            options,
            auth: Mutex::new(HashMap::new()),
            challenge: Mutex::new(None),
        };
        match reg.ping().await {
            Err(tls_error @ FetchError::Http { .. })
                if !reg.options.plain_http && is_loopback(&host) =>
            {
                tracing::debug!("{host}: no TLS on a loopback registry, trying plain HTTP");
                reg.base = http_base;
                // If plain HTTP fails too, the TLS failure is the one worth reporting.
                reg.ping().await.map_err(|_| tls_error)?;
            }
            other => other?,
        }
        Ok(reg)
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

    /// `GET /v2/`: 200, or 401 with a challenge we can answer later, means a v2 registry.
    async fn ping(&self) -> Result<(), FetchError> {
        let url = self.base.clone();
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| http_error("registry ping", &url, e))?;
        match resp.status() {
            s if s.is_success() || s == StatusCode::UNAUTHORIZED => Ok(()),
            s => Err(status_error("registry ping", &url, s, resp).await),
        }
    }

    /// The base URL, `scheme://host/v2/`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// An authenticated GET of `path` (below `/v2/`), answering one 401 challenge.
    /// Returns the successful response; any other status is an error naming `what`.
    pub(crate) async fn get(
        &self,
        what: &str,
        path: &str,
        repository: &str,
        accept: Option<&str>,
    ) -> Result<Response, FetchError> {
        self.get_range(what, path, repository, accept, None).await
    }

    /// [`Registry::get`] with an optional `Range: bytes=start-[end]` (end inclusive).
    pub(crate) async fn get_range(
        &self,
        what: &str,
        path: &str,
        repository: &str,
        accept: Option<&str>,
        range: Option<(u64, Option<u64>)>,
    ) -> Result<Response, FetchError> {
        let url = format!("{}{}", self.base, path);
        let scope = format!("repository:{repository}:pull");
        let mut answered = false;
        loop {
            let mut req = self.http.get(&url);
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            if let Some((start, end)) = range {
                let end = end.map(|e| e.to_string()).unwrap_or_default();
                req = req.header(reqwest::header::RANGE, format!("bytes={start}-{end}"));
            }
            if let Some(h) = self.authorization(&scope).await? {
                req = req.header(AUTHORIZATION, h);
            }
            let resp = req.send().await.map_err(|e| http_error(what, &url, e))?;
            let status = resp.status();
            if status.is_success() {
                return Ok(resp);
            }
            if status == StatusCode::UNAUTHORIZED && !answered {
                let challenges = resp
                    .headers()
                    .get_all(WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(parse_challenges)
                    .collect::<Vec<_>>();
                let cached = self.answer(&challenges, &scope).await?;
                self.auth.lock().unwrap().insert(scope.clone(), cached);
                answered = true;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                let detail = error_detail(resp).await;
                return Err(FetchError::Unauthorized {
                    what: what.to_string(),
                    url,
                    detail,
                });
            }
            return Err(status_error(what, &url, status, resp).await);
        }
    }

    /// Turn a challenge into an `Authorization` header: Bearer through the token
    /// endpoint (anonymously unless we have credentials), Basic with credentials.
    /// The `Authorization` for `scope`: the cached one, renewed first when its token is
    /// about to expire.
    async fn authorization(&self, scope: &str) -> Result<Option<HeaderValue>, FetchError> {
        let cached = self.auth.lock().unwrap().get(scope).cloned();
        let Some(cached) = cached else {
            return Ok(None);
        };
        let expiring = cached
            .expires
            .is_some_and(|t| t <= Instant::now() + TOKEN_RENEW_MARGIN);
        let challenge = self.challenge.lock().unwrap().clone();
        match (expiring, challenge) {
            (true, Some(c)) => {
                let renewed = self.bearer(&c, scope).await?;
                let header = renewed.header.clone();
                self.auth.lock().unwrap().insert(scope.to_string(), renewed);
                Ok(Some(header))
            }
            _ => Ok(Some(cached.header)),
        }
    }

    /// Turn a challenge into an `Authorization`: Bearer through the token endpoint
    /// (anonymously unless we have credentials), Basic with a password.
    async fn answer(
        &self,
        challenges: &[Challenge],
        scope: &str,
    ) -> Result<CachedAuth, FetchError> {
        if let Some(c) = challenges.iter().find(|c| c.scheme == "bearer") {
            *self.challenge.lock().unwrap() = Some(c.clone());
            return self.bearer(c, scope).await;
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            if let Some(h) = self
                .options
                .credentials
                .as_ref()
                .and_then(|c| c.basic_header())
            {
                return Ok(CachedAuth {
                    header: header_value(&h)?,
                    expires: None,
                });
            }
            return Err(FetchError::Unauthorized {
                what: "registry".into(),
                url: self.base.clone(),
                detail: " (Basic auth required: pass --user USER:PASSWORD or docker login)".into(),
            });
        }
        Err(FetchError::Unauthorized {
            what: "registry".into(),
            url: self.base.clone(),
            detail: " (no supported WWW-Authenticate challenge)".into(),
        })
    }

    async fn bearer(&self, c: &Challenge, scope: &str) -> Result<CachedAuth, FetchError> {
        let (token, expires_in) = self.fetch_token(c, scope).await?;
        Ok(CachedAuth {
            header: header_value(&format!("Bearer {token}"))?,
            // The token spec: without expires_in, a token lives 60 s.
            expires: Some(Instant::now() + Duration::from_secs(expires_in.unwrap_or(60))),
        })
    }

    /// A token from the challenge's realm: an OAuth2 POST (`refresh_token` grant) for an
    /// identity token, else a GET, with Basic credentials if we have a password.
    async fn fetch_token(
        &self,
        c: &Challenge,
        scope: &str,
    ) -> Result<(String, Option<u64>), FetchError> {
        let realm = c.param("realm").ok_or_else(|| FetchError::Token {
            realm: "(none)".into(),
            why: "Bearer challenge without realm".into(),
        })?;
        let terr = |why: String| FetchError::Token {
            realm: realm.to_string(),
            why,
        };
        let mut url =
            url::Url::parse(realm).map_err(|e| terr(format!("invalid realm URL: {e}")))?;
        let scope = c.param("scope").unwrap_or(scope);
        let creds = self.options.credentials.as_ref();
        let req = match creds.map(|c| &c.secret) {
            Some(Secret::IdentityToken(t)) => {
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                form.append_pair("grant_type", "refresh_token")
                    .append_pair("refresh_token", t)
                    .append_pair("client_id", "rdpull")
                    .append_pair("scope", scope);
                if let Some(s) = c.param("service") {
                    form.append_pair("service", s);
                }
                self.http
                    .post(url.as_str())
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(form.finish())
            }
            _ => {
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = c.param("service") {
                        q.append_pair("service", s);
                    }
                    q.append_pair("scope", scope);
                }
                let mut req = self.http.get(url.as_str());
                if let Some(h) = creds.and_then(|c| c.basic_header()) {
                    req = req.header(AUTHORIZATION, header_value(&h)?);
                }
                req
            }
        };
        let resp = req
            .send()
            .await
            .map_err(|e| terr(e.without_url().to_string()))?;
        if !resp.status().is_success() {
            let rejected = resp.status() == StatusCode::UNAUTHORIZED && creds.is_some();
            let note = if rejected {
                " (credentials rejected)"
            } else {
                ""
            };
            return Err(terr(format!("HTTP {}{note}", resp.status().as_u16())));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| terr(e.without_url().to_string()))?;
        // serde's message would not quote the token, but say nothing of the body anyway.
        let t: TokenResponse =
            serde_json::from_slice(&body).map_err(|_| terr("answer is not token JSON".into()))?;
        let token = t
            .token
            .filter(|t| !t.is_empty())
            .or(t.access_token)
            .ok_or_else(|| terr("answer has no token".into()))?;
        Ok((token, t.expires_in))
    }
}

fn header_value(s: &str) -> Result<HeaderValue, FetchError> {
    let mut v = HeaderValue::from_str(s).map_err(|_| FetchError::Token {
        realm: String::new(),
        why: "token is not a valid header value".into(),
    })?;
    v.set_sensitive(true);
    Ok(v)
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
async fn error_detail(resp: Response) -> String {
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
