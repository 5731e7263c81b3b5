//! Layer unpacking: decompression and tar application into one directory per layer.
//!
//! This crate owns the bytes-to-files stage of rdpull: choosing the decompressor from a
//! media type ([`Compression`]), applying a tar stream to a layer directory in overlayfs
//! format ([`apply_tar`]: whiteouts as 0:0 devices, opaque directories as xattrs), and
//! the verified composition of both ([`unpack_layer`]: compressed digest and size, then
//! DiffID, checked as the bytes stream through, on two threads joined by a bounded pipe).
//! The overlay format itself (whiteout devices, opaque markers) is defined once, in
//! [`overlay`], for the applier here and for flattening in `rdpull-snapshot`. Every path
//! is resolved inside the layer directory as if it were `/` (openat2 `RESOLVE_IN_ROOT`),
//! so a hostile layer cannot write outside it. It does not fetch blobs, decide where layer directories live, or
//! commit them: that is the snapshot store's job.

// Ground: paths, the overlay format, file helpers, options and the apply→settle record.
mod files;
mod options;
pub mod overlay;
mod path;
mod record;
// Views of layer directories.
mod merged;
mod root;
// Applying a tar stream, and settling the result on the layers below; neither imports
// the other.
mod apply;
mod settle;
// Tar and compression plumbing, and the composition of it all.
mod compression;
mod error;
mod header;
mod layer;
mod pax;
mod pipe;
mod writeback;

pub use apply::{apply_tar, LayerStats};
pub use compression::{Compression, Decoder};
pub use error::UnpackError;
pub use files::{copy_owner_mode, remove_all};
pub use layer::{unpack_layer, LayerDescriptor};
pub use options::ApplyOptions;
pub use path::clean as clean_path;
pub use record::LowerRefs;
pub use settle::settle_on_lowers;
