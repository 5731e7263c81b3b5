//! Blobs, manifests and whole OCI images put into a [`FakeRegistry`].

use std::io::Write;

use sha2::{Digest as _, Sha256};

use super::{FakeRegistry, Reply};
use crate::Tar;

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
