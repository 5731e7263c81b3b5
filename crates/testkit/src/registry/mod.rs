//! A registry v2 server for tests, in-process and plain HTTP. It serves what the test put
//! in it, honours `Range`, logs every request (path and headers) and the bytes it sent,
//! and misbehaves on request: truncated bodies, injected statuses with `Retry-After`,
//! ignored `Range`, stalls, redirects, Basic auth.

//!
//! `wire` speaks the HTTP of one connection; `images` puts blobs, manifests and whole
//! images into the server.

mod images;
mod wire;

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use images::{gzip, one_file_layer, sha256, Pushed, LAYER_GZIP, OCI_MANIFEST};
use wire::{head, inject_status, read_request, send_body, trickle, tunnel};

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
}
