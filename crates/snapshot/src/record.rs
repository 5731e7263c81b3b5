//! What the store records of a pulled image: plain data, shared by the metadata document
//! (`store`) and the image operations (`images`).

use std::path::PathBuf;

use rdpull_verify::Digest;

use crate::chain::ChainId;

/// One layer as the image describes it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerRecord {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub diff_id: Digest,
}

/// A pulled image: what its reference resolved to and the snapshots that hold it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageRecord {
    /// The normalised reference, e.g. `docker.io/library/centos:latest`.
    pub name: String,
    /// What the reference points at (an index or the manifest).
    pub target_digest: Digest,
    pub target_media_type: String,
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    pub platform: String,
    pub layers: Vec<LayerRecord>,
    /// ChainIDs, bottom first; the last names the image's top snapshot.
    pub chain: Vec<ChainId>,
    pub created: u128,
}

impl ImageRecord {
    /// Sum of the compressed layer sizes.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }

    pub fn top(&self) -> Option<&ChainId> {
        self.chain.last()
    }
}

/// One layer of an image as `inspect` shows it.
#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct LayerDetails {
    /// Compressed blob digest and size, as the manifest lists them.
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    /// Digest of the uncompressed tar stream.
    pub diff_id: Digest,
    /// The name of the committed snapshot that holds the layer.
    pub chain_id: String,
    /// The snapshot's files (an overlayfs lower directory).
    pub snapshot_dir: PathBuf,
    /// Bytes the snapshot directory takes on disk.
    pub unpacked_size: u64,
    /// The compressed blob in the content store, if it is kept (`--keep-blobs`).
    pub kept_blob: Option<PathBuf>,
}

/// An image as `inspect` shows it: the record, the parsed config and its layers.
#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct ImageDetails {
    pub name: String,
    pub target_digest: Digest,
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    pub platform: String,
    /// The image config as stored (OCI or Docker JSON).
    pub config: serde_json::Value,
    /// Bottom first.
    pub layers: Vec<LayerDetails>,
}

/// One step of an image's build history, from its config.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryEntry {
    /// RFC 3339 creation time, if the config has one.
    pub created: Option<String>,
    pub created_by: String,
    pub comment: String,
    /// The layer (index into `layers`) this step made, or none for a metadata-only step.
    pub layer: Option<usize>,
}

impl ImageDetails {
    /// The config's `history`, oldest first, each step paired with the layer it made
    /// (steps marked `empty_layer` made none). Without a history, one step per layer.
    pub fn history(&self) -> Vec<HistoryEntry> {
        let text =
            |v: &serde_json::Value, k: &str| v.get(k).and_then(|s| s.as_str()).map(str::to_string);
        let Some(steps) = self.config.get("history").and_then(|h| h.as_array()) else {
            return (0..self.layers.len())
                .map(|i| HistoryEntry {
                    created: None,
                    created_by: String::new(),
                    comment: String::new(),
                    layer: Some(i),
                })
                .collect();
        };
        let mut next_layer = 0;
        steps
            .iter()
            .map(|step| {
                let empty = step.get("empty_layer").and_then(|e| e.as_bool()) == Some(true);
                let layer = (!empty && next_layer < self.layers.len()).then(|| {
                    next_layer += 1;
                    next_layer - 1
                });
                HistoryEntry {
                    created: text(step, "created"),
                    created_by: text(step, "created_by").unwrap_or_default(),
                    comment: text(step, "comment").unwrap_or_default(),
                    layer,
                }
            })
            .collect()
    }
}

/// What the store holds besides its images, as `inspect` with no image shows it.
#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct StoreDetails {
    pub root: PathBuf,
    /// Received bytes of blobs whose pull stopped, which the next pull continues.
    pub partial_downloads: Vec<PartialDownloadDetails>,
    /// Whole layer blobs in the content store (`--keep-blobs`), with the images using them.
    pub kept_blobs: Vec<KeptBlobDetails>,
}

#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct PartialDownloadDetails {
    pub digest: Digest,
    /// Bytes kept so far.
    pub bytes: u64,
    /// Last written, in seconds since the Unix epoch; `prune` removes it a day later.
    pub modified: u64,
    /// A running pull is writing it now.
    pub in_use: bool,
}

#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct KeptBlobDetails {
    pub digest: Digest,
    pub size: u64,
    pub path: PathBuf,
    pub images: Vec<String>,
}
