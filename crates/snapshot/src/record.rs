//! What the store records of a pulled image: plain data, shared by the metadata document
//! (`store`) and the image operations (`images`).

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
