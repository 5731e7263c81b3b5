//! One place a registry's content can be fetched from: the registry itself or a mirror
//! (containerd's "host"). Each has its own HTTP client (CA, client certificate, TLS
//! verification), extra headers, credentials and token cache.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE,
};
use reqwest::{Response, StatusCode};

use crate::auth::{parse_challenges, Challenge, Credentials, Secret, TokenResponse};
use crate::error::{FetchError, SettingError};
use crate::http::{error_detail, http_error, status_error};
use crate::options::{Capability, ClientOptions, EndpointSpec};

/// Tokens are renewed this long before they expire, so none expires in flight.
const TOKEN_RENEW_MARGIN: Duration = Duration::from_secs(10);

/// An `Authorization` value and, for a Bearer token, when it expires.
#[derive(Clone)]
struct CachedAuth {
    header: HeaderValue,
    expires: Option<Instant>,
}

pub(crate) struct Endpoint {
    pub spec: EndpointSpec,
    http: reqwest::Client,
    base: String,
    headers: HeaderMap,
    credentials: Option<Credentials>,
    auth: Mutex<HashMap<String, CachedAuth>>,
    /// The last Bearer challenge, to renew tokens before they expire.
    challenge: Mutex<Option<Challenge>>,
    /// The bound on a whole small request.
    request_timeout: Duration,
}

impl Endpoint {
    pub(crate) fn new(
        spec: EndpointSpec,
        options: &ClientOptions,
        credentials: Option<Credentials>,
    ) -> Result<Endpoint, FetchError> {
        let http = http_client(&spec, options)?;
        let headers = extra_headers(&spec)?;
        let root = spec.url.trim_end_matches('/');
        let base = if spec.override_path {
            format!("{root}/")
        } else {
            format!("{root}/v2/")
        };
        Ok(Endpoint {
            spec,
            http,
            base,
            headers,
            credentials,
            auth: Mutex::new(HashMap::new()),
            challenge: Mutex::new(None),
            request_timeout: options.request_timeout,
        })
    }

    /// The API root, `scheme://host/v2/`.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    pub(crate) fn set_base(&mut self, base: String) {
        self.base = base;
    }

    pub(crate) fn can(&self, c: Capability) -> bool {
        match c {
            Capability::Pull => self.spec.pull,
            Capability::Resolve => self.spec.resolve,
        }
    }

    /// A request that failed below HTTP. Over TLS without a client certificate, a
    /// connection the server closes right after the handshake, or a certificate alert, is
    /// how a registry that requires one refuses (in TLS 1.3 the alert comes after the
    /// client's Finished, and may be seen as a closed connection), so the error says what
    /// to do.
    fn transport_error(&self, what: &str, url: &str, e: reqwest::Error) -> FetchError {
        let chain = crate::error::with_causes(e.to_string(), std::error::Error::source(&e));
        let refused = ["closed", "CertificateRequired", "BadCertificate"]
            .iter()
            .any(|s| chain.contains(s));
        let no_certificate = url.starts_with("https://")
            && self.spec.client.is_none()
            && !e.is_timeout()
            && !e.is_connect()
            && refused;
        if !no_certificate {
            return http_error(what, url, e);
        }
        FetchError::ClientCertificate {
            what: what.to_string(),
            url: url.to_string(),
            source: e.without_url(),
        }
    }

    /// `GET /v2/`: 200, or 401 with a challenge we can answer later, means a v2 registry.
    pub(crate) async fn ping(&self) -> Result<(), FetchError> {
        let url = self.base.clone();
        let resp = self
            .http
            .get(&url)
            .headers(self.headers.clone())
            .timeout(self.request_timeout)
            .send()
            .await
            .map_err(|e| self.transport_error("registry ping", &url, e))?;
        match resp.status() {
            s if s.is_success() || s == StatusCode::UNAUTHORIZED => Ok(()),
            s => Err(status_error("registry ping", &url, s, resp).await),
        }
    }

    /// An authenticated GET of `path` (below the API root), answering one 401
    /// challenge, with an optional `Range: bytes=start-[end]` (end inclusive).
    pub(crate) async fn get(
        &self,
        what: &str,
        path: &str,
        repository: &str,
        accept: Option<&str>,
        range: Option<(u64, Option<u64>)>,
    ) -> Result<Response, FetchError> {
        let mut url = format!("{}{}", self.base, path);
        if let Some(ns) = &self.spec.namespace {
            url.push_str("?ns=");
            url.push_str(&url::form_urlencoded::byte_serialize(ns.as_bytes()).collect::<String>());
        }
        let scope = format!("repository:{repository}:pull");
        let mut answered = false;
        loop {
            let mut req = self.http.get(&url).headers(self.headers.clone());
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
            let resp = req
                .send()
                .await
                .map_err(|e| self.transport_error(what, &url, e))?;
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
            if let Some(h) = self.credentials.as_ref().and_then(|c| c.basic_header()) {
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
        let url = url::Url::parse(realm).map_err(|source| FetchError::TokenRealm {
            realm: realm.to_string(),
            source,
        })?;
        let transport = |e: reqwest::Error| FetchError::TokenTransport {
            realm: realm.to_string(),
            source: e.without_url(),
        };
        let scope = c.param("scope").unwrap_or(scope);
        let creds = self.credentials.as_ref();
        let req = match creds.map(|c| &c.secret) {
            Some(Secret::IdentityToken(t)) => self.token_post(url, c, t, scope),
            _ => self.token_get(url, c, scope)?,
        };
        let resp = req
            .timeout(self.request_timeout)
            .send()
            .await
            .map_err(transport)?;
        if !resp.status().is_success() {
            let rejected = resp.status() == StatusCode::UNAUTHORIZED && creds.is_some();
            let note = if rejected {
                " (credentials rejected)"
            } else {
                ""
            };
            return Err(terr(format!("HTTP {}{note}", resp.status().as_u16())));
        }
        let body = resp.bytes().await.map_err(transport)?;
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

    /// The OAuth2 `refresh_token` grant for an identity token.
    fn token_post(
        &self,
        url: url::Url,
        c: &Challenge,
        refresh_token: &str,
        scope: &str,
    ) -> reqwest::RequestBuilder {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "refresh_token")
            .append_pair("refresh_token", refresh_token)
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

    /// A token GET, anonymous or with Basic credentials.
    fn token_get(
        &self,
        mut url: url::Url,
        c: &Challenge,
        scope: &str,
    ) -> Result<reqwest::RequestBuilder, FetchError> {
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = c.param("service") {
                q.append_pair("service", s);
            }
            q.append_pair("scope", scope);
        }
        let mut req = self.http.get(url.as_str());
        if let Some(h) = self.credentials.as_ref().and_then(|c| c.basic_header()) {
            req = req.header(AUTHORIZATION, header_value(&h)?);
        }
        Ok(req)
    }
}

/// The HTTP client of one endpoint: timeouts, pool, and its TLS trust and identity.
fn http_client(
    spec: &EndpointSpec,
    options: &ClientOptions,
) -> Result<reqwest::Client, FetchError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(options.connect_timeout)
        .read_timeout(options.stall_timeout)
        .pool_max_idle_per_host(options.pool_size)
        .user_agent(concat!("rdpull/", env!("CARGO_PKG_VERSION")));
    for path in &spec.ca {
        let bad = |e: SettingError| FetchError::setting(format!("CA {}", path.display()), e);
        let pem = std::fs::read(path).map_err(|e| bad(e.into()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.into()))?;
        if certs.is_empty() {
            return Err(bad(SettingError::Rule("no PEM certificate in it".into())));
        }
        builder = builder.tls_certs_merge(certs);
    }
    if let Some((cert, key)) = &spec.client {
        let what = format!("client certificate {}", cert.display());
        let mut pem = std::fs::read(cert).map_err(|e| FetchError::setting(what.clone(), e))?;
        if let Some(key) = key {
            let key_pem = std::fs::read(key)
                .map_err(|e| FetchError::setting(format!("client key {}", key.display()), e))?;
            pem.push(b'\n');
            pem.extend(key_pem);
        }
        let id = reqwest::Identity::from_pem(&pem).map_err(|e| FetchError::setting(what, e))?;
        builder = builder.identity(id);
    }
    if spec.skip_verify {
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|e| FetchError::Http {
        what: "HTTP client".into(),
        url: spec.url.clone(),
        source: e,
    })
}

/// The extra headers hosts.toml gives an endpoint.
fn extra_headers(spec: &EndpointSpec) -> Result<HeaderMap, FetchError> {
    let mut headers = HeaderMap::new();
    for (k, v) in &spec.headers {
        let what = || format!("header {k}");
        let name =
            HeaderName::from_bytes(k.as_bytes()).map_err(|e| FetchError::setting(what(), e))?;
        let value = HeaderValue::from_str(v).map_err(|e| FetchError::setting(what(), e))?;
        headers.append(name, value);
    }
    Ok(headers)
}

fn header_value(s: &str) -> Result<HeaderValue, FetchError> {
    let mut v = HeaderValue::from_str(s).map_err(|_| FetchError::Token {
        realm: String::new(),
        why: "token is not a valid header value".into(),
    })?;
    v.set_sensitive(true);
    Ok(v)
}
