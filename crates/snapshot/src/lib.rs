//! Local state of rdpull: snapshots, images and the blobs that describe them.
//!
//! This crate owns the on-disk store under rdpull's root: a snapshot store modelled on
//! containerd's snapshotter ([`Store`]: key, parent, kind, labels, timestamps; prepare,
//! view, commit, remove, mounts), addressed by [`ChainId`] for committed layers so that a
//! layer already present is never fetched again; image records ([`ImageRecord`]); a small
//! content store for manifests and configs; partial downloads of layer blobs
//! ([`Store::ingest`]), so that an interrupted pull continues where it stopped; and [`flatten`], which turns a chain of
//! overlay-format snapshot directories into one plain rootfs; and the lifecycle of what
//! it holds: removing image records, [`Store::prune`] of what no image or running pull
//! (holding a [`Lease`]) uses, [`Store::pin`] for holders outside the store (the
//! containerd snapshotter), and [`Store::inspect`]. It does not fetch or unpack
//! layers (though it keeps their blobs when asked, and exports an image as an OCI layout
//! tar, [`Store::save`]); it gives the unpacker a directory and commits it when told to.

mod chain;
mod error;
mod export;
mod flatten;
mod fsutil;
mod gc;
mod images;
mod ingest;
pub mod owner;
mod pin;
mod record;
mod store;
mod writeback;

pub use chain::ChainId;
pub use error::StoreError;
pub use flatten::{flatten, flatten_image, flatten_until, FlattenStats};
pub use fsutil::{disk_usage, DiskUsage};
pub use gc::{Lease, PruneReport};
pub use ingest::{Ingest, PartialDownload};
pub use record::{
    HistoryEntry, ImageDetails, ImageRecord, KeptBlobDetails, LayerDetails, LayerRecord,
    PartialDownloadDetails, StoreDetails,
};
pub use store::{Info, Kind, Mount, Store};
pub use writeback::Writeback;
