//! A registry v2 server for tests, in-process and plain HTTP: it serves what the test put
//! in it, counts requests per path, and can be told to misbehave (wrong bytes, wrong
//! sizes, stalled bodies, errors).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdpull_testkit::Tar;
use sha2::{Digest as _, Sha256};

#[derive(Clone)]
pub enum Reply {
    /// 200 with a body and content type.
    Body { content_type: String, body: Vec<u8> },
    /// A status with a small JSON error body.
    Status(u16),
    /// Announce `body.len()` bytes, send the first `send` of them, then hang.
    Stall { body: Vec<u8>, send: usize },
}

#[derive(Clone, Default)]
pub struct FakeRegistry {
    pub addr: String,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
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

impl FakeRegistry {
    pub fn start() -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let reg = FakeRegistry {
            addr: listener.local_addr().unwrap().to_string(),
            ..Default::default()
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

    fn serve(&self, mut conn: TcpStream) {
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            return;
        }
        let path = line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .split('?')
            .next()
            .unwrap()
            .to_string();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                break;
            }
        }
        *self.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
        let reply = if path == "/v2/" {
            Reply::Body {
                content_type: "application/json".into(),
                body: b"{}".to_vec(),
            }
        } else {
            self.routes
                .lock()
                .unwrap()
                .get(&path)
                .cloned()
                .unwrap_or(Reply::Status(404))
        };
        let head = |status: &str, ct: &str, len: usize| {
            format!("HTTP/1.1 {status}\r\nContent-Type: {ct}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
        };
        let _ = match reply {
            Reply::Body { content_type, body } => conn
                .write_all(head("200 OK", &content_type, body.len()).as_bytes())
                .and_then(|_| conn.write_all(&body)),
            Reply::Status(code) => {
                let body = br#"{"errors":[{"code":"UNKNOWN","message":"injected failure"}]}"#;
                conn.write_all(
                    head(&format!("{code} Injected"), "application/json", body.len()).as_bytes(),
                )
                .and_then(|_| conn.write_all(body))
            }
            Reply::Stall { body, send } => {
                let _ = conn
                    .write_all(head("200 OK", "application/octet-stream", body.len()).as_bytes());
                let _ = conn.write_all(&body[..send]);
                let _ = conn.flush();
                std::thread::sleep(Duration::from_secs(120));
                Ok(())
            }
        };
    }

    pub fn set(&self, path: &str, reply: Reply) {
        self.routes.lock().unwrap().insert(path.to_string(), reply);
    }

    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
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
                body: data.to_vec(),
            },
        );
        d
    }

    pub fn put_manifest(&self, repo: &str, reference: &str, content_type: &str, body: &[u8]) {
        self.set(
            &format!("/v2/{repo}/manifests/{reference}"),
            Reply::Body {
                content_type: content_type.into(),
                body: body.to_vec(),
            },
        );
    }

    /// Push an OCI image of gzip layers made from `tars`, tagged `tag`.
    pub fn push(&self, repo: &str, tag: &str, tars: &[Vec<u8>]) -> Pushed {
        let blobs: Vec<Vec<u8>> = tars.iter().map(|t| gzip(t)).collect();
        let diff_ids: Vec<String> = tars.iter().map(|t| sha256(t)).collect();
        let layer_digests: Vec<String> = blobs.iter().map(|b| self.put_blob(repo, b)).collect();
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/usr/bin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config = serde_json::to_vec(&config).unwrap();
        let config_digest = self.put_blob(repo, &config);
        let layers: Vec<serde_json::Value> = blobs
            .iter()
            .zip(&layer_digests)
            .map(
                |(b, d)| serde_json::json!({"mediaType": LAYER_GZIP, "digest": d, "size": b.len()}),
            )
            .collect();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": layers,
        }))
        .unwrap();
        self.put_manifest(repo, tag, OCI_MANIFEST, &manifest);
        let manifest_digest = sha256(&manifest);
        self.put_manifest(repo, &manifest_digest, OCI_MANIFEST, &manifest);
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
