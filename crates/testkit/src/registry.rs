//! A registry v2 server for tests, in-process and plain HTTP. It serves what the test put
//! in it, honours `Range`, logs every request (path and headers) and the bytes it sent,
//! and misbehaves on request: truncated bodies, injected statuses with `Retry-After`,
//! ignored `Range`, stalls, redirects, Basic auth.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::Tar;

/// One thing to do instead of serving a request normally.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Serve the response but close the connection after this many body bytes.
    Truncate(usize),
    /// Answer with this status (and `Retry-After` seconds, if given).
    Status(u16, Option<u64>),
    /// Send the headers and this many body bytes, then hang for a long time.
    Stall(usize),
    /// Sleep before answering (to reorder concurrent responses).
    Delay(Duration),
    /// Invalidate the current Bearer token first (so this request gets a 401).
    ExpireToken,
}

#[derive(Clone)]
pub enum Reply {
    /// 200 (or 206 for a `Range` request) with a body and content type (shared, so
    /// gigabyte bodies are not copied per request).
    Body {
        content_type: String,
        body: Arc<[u8]>,
    },
    /// A status with a small JSON error body.
    Status(u16),
    /// Announce `body.len()` bytes, send the first `send` of them, then hang.
    Stall { body: Vec<u8>, send: usize },
    /// 307 to this URL.
    Redirect(String),
    /// 200 with the whole body (whatever `Range` asked), `piece` bytes every `every`,
    /// until it is sent or the client goes away.
    Trickle {
        body: Vec<u8>,
        piece: usize,
        every: Duration,
    },
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Request {
    /// `GET`, `CONNECT`, ...
    pub method: String,
    /// For proxy requests: the absolute-form authority (`GET http://host:port/...`) or
    /// the `CONNECT` target.
    pub proxied_to: Option<String>,
    pub path: String,
    /// Header names lower-cased.
    pub headers: HashMap<String, String>,
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Reply>,
    faults: HashMap<String, VecDeque<Fault>>,
    hits: HashMap<String, usize>,
    sent: HashMap<String, usize>,
    log: Vec<Request>,
    /// Paths served without `Range` support.
    no_range: Vec<String>,
    basic: Option<String>,
    /// Bearer mode: the generation of the only token accepted.
    bearer: Option<u64>,
    /// Tokens issued so far (the newest is `tok-<issued>`).
    issued: u64,
    /// `expires_in` of issued tokens.
    token_ttl: u64,
    /// 401 answers given.
    unauthorized: usize,
}

#[derive(Clone)]
pub struct FakeRegistry {
    pub addr: String,
    state: Arc<Mutex<State>>,
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// What `push` put into the registry.
pub struct Pushed {
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
    pub diff_ids: Vec<String>,
    pub blobs: Vec<Vec<u8>>,
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// `bytes=a-b` or `bytes=a-` against a body of `len` bytes: the half-open range.
fn parse_range(h: &str, len: usize) -> Option<(usize, usize)> {
    let r = h.strip_prefix("bytes=")?;
    let (a, b) = r.split_once('-')?;
    let a: usize = a.trim().parse().ok()?;
    let b: usize = if b.trim().is_empty() {
        len - 1
    } else {
        b.trim().parse().ok()?
    };
    (a <= b && a < len).then_some((a, (b + 1).min(len)))
}

/// The request line and headers. As a proxy, an absolute-form target is answered as if we
/// were its origin, and a `CONNECT` names the tunnel's far end.
fn read_request(conn: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or("").to_string();
    let target = words.next().unwrap_or("/").to_string();
    let (proxied_to, target) = match target.strip_prefix("http://") {
        Some(rest) => {
            let (auth, p) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let p = if p.is_empty() { "/" } else { p };
            (Some(auth.to_string()), p.to_string())
        }
        None if method == "CONNECT" => (Some(target.clone()), String::new()),
        None => (None, target),
    };
    let path = target.split('?').next().unwrap().to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    Some(Request {
        method,
        proxied_to,
        path,
        headers,
    })
}

/// A `CONNECT` tunnel to `to`, both ways until either side closes.
fn tunnel(mut conn: TcpStream, to: &str) {
    let Ok(upstream) = TcpStream::connect(to) else {
        let _ = conn.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    let _ = conn.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
    let (mut a, mut b) = (conn.try_clone().unwrap(), upstream.try_clone().unwrap());
    let (mut c, mut d) = (conn, upstream);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut a, &mut b);
        let _ = b.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut d, &mut c);
}

/// The whole `body`, `piece` bytes every `every`, until the client goes away.
fn trickle(mut conn: TcpStream, body: &[u8], piece: usize, every: Duration) {
    let head = head("200 OK", "application/octet-stream", body.len(), "");
    let _ = conn.write_all(head.as_bytes());
    for part in body.chunks(piece.max(1)) {
        std::thread::sleep(every);
        if conn.write_all(part).and_then(|_| conn.flush()).is_err() {
            break;
        }
    }
}

/// An injected error status, with `Retry-After` if given.
fn inject_status(mut conn: TcpStream, code: u16, retry_after: Option<u64>) {
    let ra = retry_after
        .map(|s| format!("Retry-After: {s}\r\n"))
        .unwrap_or_default();
    let body = br#"{"errors":[{"code":"UNAVAILABLE","message":"injected"}]}"#;
    let _ = conn.write_all(
        format!(
            "HTTP/1.1 {code} Injected\r\n{ra}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let _ = conn.write_all(body);
}

fn head(status: &str, content_type: &str, len: usize, extra: &str) -> String {
    format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n{extra}Connection: close\r\n\r\n")
}

/// A body, or the part a `Range` asks for (when `ranged`), cut after `truncate` bytes.
/// Returns the body bytes written, or None if the client went away before the body.
fn send_body(
    conn: &mut TcpStream,
    content_type: &str,
    body: &[u8],
    range: Option<&str>,
    ranged: bool,
    truncate: Option<(usize, bool)>,
) -> Option<usize> {
    let (status, range, extra) = match range.and_then(|h| parse_range(h, body.len())) {
        Some((a, b)) if ranged => (
            "206 Partial Content",
            a..b,
            format!("Content-Range: bytes {a}-{}/{}\r\n", b - 1, body.len()),
        ),
        _ => (
            "200 OK",
            0..body.len(),
            String::from(if ranged {
                "Accept-Ranges: bytes\r\n"
            } else {
                ""
            }),
        ),
    };
    let data = &body[range];
    conn.write_all(head(status, content_type, data.len(), &extra).as_bytes())
        .ok()?;
    let n = truncate.map_or(data.len(), |(n, _)| n.min(data.len()));
    conn.write_all(&data[..n]).ok().map(|()| n)
}

impl Default for FakeRegistry {
    fn default() -> Self {
        FakeRegistry::start()
    }
}

impl FakeRegistry {
    pub fn start() -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let reg = FakeRegistry {
            addr: listener.local_addr().unwrap().to_string(),
            state: Arc::default(),
        };
        let r = reg.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let r = r.clone();
                std::thread::spawn(move || r.serve(conn));
            }
        });
        reg
    }

    /// Require Basic auth `user:password` on every path (the challenge names realm "fake").
    pub fn require_basic(&self, user_password: &str) {
        use std::fmt::Write as _;
        // base64 by hand: the testkit needs nothing else for it.
        const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let b = user_password.as_bytes();
        let mut out = String::new();
        for c in b.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= c.len() {
                    out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        let mut v = String::new();
        write!(v, "Basic {out}").unwrap();
        self.state.lock().unwrap().basic = Some(v);
    }

    /// Require Bearer tokens from this registry's own `/token` endpoint (anonymous). Only
    /// the newest token is valid; [`Fault::ExpireToken`] issues a new generation.
    pub fn require_bearer(&self) {
        self.require_bearer_ttl(300);
    }

    /// [`FakeRegistry::require_bearer`] with tokens that say they live `ttl` seconds.
    pub fn require_bearer_ttl(&self, ttl: u64) {
        let mut st = self.state.lock().unwrap();
        st.bearer = Some(1);
        st.token_ttl = ttl;
    }

    /// How many requests were answered 401.
    pub fn unauthorized(&self) -> usize {
        self.state.lock().unwrap().unauthorized
    }

    /// One connection: read the request, decide the answer, send it.
    fn serve(&self, mut conn: TcpStream) {
        let Some(req) = read_request(&conn) else {
            return;
        };
        let (reply, fault, ranged, authorized) = self.decide(&req);
        if req.method == "CONNECT" {
            return tunnel(conn, req.proxied_to.as_deref().unwrap_or_default());
        }
        if !authorized {
            return self.challenge(&mut conn);
        }
        let mut truncate = None;
        match fault {
            Some(Fault::Status(code, retry_after)) => {
                return inject_status(conn, code, retry_after)
            }
            Some(Fault::Stall(n)) => truncate = Some((n, true)),
            Some(Fault::Truncate(n)) => truncate = Some((n, false)),
            Some(Fault::Delay(d)) => std::thread::sleep(d),
            Some(Fault::ExpireToken) | None => {}
        }
        match reply {
            Reply::Body { content_type, body } => {
                let range = req.headers.get("range").map(String::as_str);
                let sent = send_body(&mut conn, &content_type, &body, range, ranged, truncate);
                if let Some(n) = sent {
                    let mut st = self.state.lock().unwrap();
                    *st.sent.entry(req.path.clone()).or_default() += n;
                }
                if let Some((_, true)) = truncate {
                    let _ = conn.flush();
                    std::thread::sleep(Duration::from_secs(300));
                }
            }
            Reply::Status(code) => {
                let body = br#"{"errors":[{"code":"UNKNOWN","message":"injected failure"}]}"#;
                let status = format!("{code} Injected");
                let _ = conn
                    .write_all(head(&status, "application/json", body.len(), "").as_bytes())
                    .and_then(|_| conn.write_all(body));
            }
            Reply::Stall { body, send } => {
                let _ = conn.write_all(
                    head("200 OK", "application/octet-stream", body.len(), "").as_bytes(),
                );
                let _ = conn.write_all(&body[..send]);
                let _ = conn.flush();
                std::thread::sleep(Duration::from_secs(300));
            }
            Reply::Trickle { body, piece, every } => trickle(conn, &body, piece, every),
            Reply::Redirect(to) => {
                let location = format!("Location: {to}\r\n");
                let status = "307 Temporary Redirect";
                let _ = conn.write_all(head(status, "text/plain", 0, &location).as_bytes());
            }
        }
    }

    /// Log the request and decide its answer: the reply, a queued fault, whether `Range`
    /// is honoured, and whether the request is authorized (issuing tokens on `/token`).
    fn decide(&self, req: &Request) -> (Reply, Option<Fault>, bool, bool) {
        let path = &req.path;
        let mut st = self.state.lock().unwrap();
        *st.hits.entry(path.clone()).or_default() += 1;
        st.log.push(req.clone());
        if let (Some(Fault::ExpireToken), Some(_)) =
            (st.faults.get(path).and_then(|q| q.front()), st.bearer)
        {
            st.bearer = Some(st.issued + 1);
            st.faults.get_mut(path).unwrap().pop_front();
        }
        let auth = req.headers.get("authorization");
        let authorized = st.basic.as_ref().is_none_or(|b| auth == Some(b))
            && st
                .bearer
                .is_none_or(|g| path == "/token" || auth == Some(&format!("Bearer tok-{g}")));
        if path == "/token" && st.bearer.is_some() {
            // Every token request gets a new token; only the newest is accepted.
            st.issued += 1;
            st.bearer = Some(st.issued);
        }
        if !authorized {
            st.unauthorized += 1;
        }
        let json = |body: String| Reply::Body {
            content_type: "application/json".into(),
            body: body.into_bytes().into(),
        };
        let reply = match path.as_str() {
            "/token" => json(format!(
                r#"{{"token":"tok-{}","expires_in":{}}}"#,
                st.bearer.unwrap_or(0),
                st.token_ttl
            )),
            "/v2/" => json("{}".into()),
            _ => st.routes.get(path).cloned().unwrap_or(Reply::Status(404)),
        };
        let fault = st.faults.get_mut(path).and_then(|q| q.pop_front());
        let ranged = !st.no_range.contains(path);
        (reply, fault, ranged, authorized)
    }

    /// A 401 with the challenge of the auth mode in force.
    fn challenge(&self, conn: &mut TcpStream) {
        let challenge = if self.state.lock().unwrap().bearer.is_some() {
            format!(
                r#"Bearer realm="http://{}/token",service="fake""#,
                self.addr
            )
        } else {
            r#"Basic realm="fake""#.to_string()
        };
        let _ = conn.write_all(
            format!("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: {challenge}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
    }

    pub fn set(&self, path: &str, reply: Reply) {
        self.state
            .lock()
            .unwrap()
            .routes
            .insert(path.to_string(), reply);
    }

    /// Faults for the next requests to `path`, one each, in order.
    pub fn faults(&self, path: &str, faults: Vec<Fault>) {
        self.state
            .lock()
            .unwrap()
            .faults
            .insert(path.to_string(), faults.into());
    }

    /// Serve `path` as if `Range` were unknown (always 200 and the whole body).
    pub fn ignore_range(&self, path: &str) {
        self.state.lock().unwrap().no_range.push(path.to_string());
    }

    pub fn hits(&self, path: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Body bytes sent for `path`, over all requests.
    pub fn sent(&self, path: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .sent
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Every request to `path`, in order.
    pub fn requests(&self, path: &str) -> Vec<Request> {
        self.state
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    pub fn all_requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn blob_path(repo: &str, digest: &str) -> String {
        format!("/v2/{repo}/blobs/{digest}")
    }

    pub fn put_blob(&self, repo: &str, data: &[u8]) -> String {
        let d = sha256(data);
        self.set(
            &Self::blob_path(repo, &d),
            Reply::Body {
                content_type: "application/octet-stream".into(),
                body: data.to_vec().into(),
            },
        );
        d
    }

    pub fn put_manifest(&self, repo: &str, reference: &str, content_type: &str, body: &[u8]) {
        self.set(
            &format!("/v2/{repo}/manifests/{reference}"),
            Reply::Body {
                content_type: content_type.into(),
                body: body.to_vec().into(),
            },
        );
    }

    /// Push an OCI image of gzip layers made from `tars`, tagged `tag`.
    pub fn push(&self, repo: &str, tag: &str, tars: &[Vec<u8>]) -> Pushed {
        let layers: Vec<(Vec<u8>, &str, String)> = tars
            .iter()
            .map(|t| (gzip(t), LAYER_GZIP, sha256(t)))
            .collect();
        self.push_layers(repo, tag, layers)
    }

    /// Push an OCI image of layer blobs as given: (blob, media type, DiffID).
    pub fn push_layers(
        &self,
        repo: &str,
        tag: &str,
        layers: Vec<(Vec<u8>, &str, String)>,
    ) -> Pushed {
        let diff_ids: Vec<String> = layers.iter().map(|l| l.2.clone()).collect();
        let layer_digests: Vec<String> = layers.iter().map(|l| self.put_blob(repo, &l.0)).collect();
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/usr/bin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config = serde_json::to_vec(&config).unwrap();
        let config_digest = self.put_blob(repo, &config);
        let descriptors: Vec<serde_json::Value> = layers
            .iter()
            .zip(&layer_digests)
            .map(|(l, d)| serde_json::json!({"mediaType": l.1, "digest": d, "size": l.0.len()}))
            .collect();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": descriptors,
        }))
        .unwrap();
        self.put_manifest(repo, tag, OCI_MANIFEST, &manifest);
        let manifest_digest = sha256(&manifest);
        self.put_manifest(repo, &manifest_digest, OCI_MANIFEST, &manifest);
        let blobs = layers.into_iter().map(|l| l.0).collect();
        Pushed {
            manifest,
            manifest_digest,
            config_digest,
            layer_digests,
            diff_ids,
            blobs,
        }
    }
}

/// A layer with one file.
pub fn one_file_layer(name: &str, content: &[u8]) -> Vec<u8> {
    Tar::default().file(name, content).finish()
}
