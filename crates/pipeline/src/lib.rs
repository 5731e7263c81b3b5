//! The pull pipeline of rdpull, as a library: one image from a registry into the
//! snapshot store, every layer fetched, verified, decompressed and unpacked in one pass.
//!
//! This crate owns the order of the pull ([`pull`]): stale snapshots of dead pulls are
//! removed, the reference is resolved to a manifest and config, every missing layer gets
//! a task that streams its blob through the unpacker into an active snapshot, layers
//! commit strictly in chain order, and the image is recorded last. Progress goes to a
//! [`Reporter`], so a terminal, a daemon's log and a test each see the same events.
//! [`find_images`] and [`remove_images`] name stored images as a user does, by reference
//! or digest, and [`save_to_file`] writes one as an OCI layout tar. Pulls keep what they
//! received of a layer for the next pull to continue, and with `keep_blobs` keep the
//! whole blobs.
//!
//! It does not speak HTTP (`rdpull-fetch`), hash (`rdpull-verify`), write layer files
//! (`rdpull-unpack`), keep metadata or flatten images (`rdpull-snapshot`), or make
//! bundles and containers (`rdpull-run`); it wires the first four, and it never prints:
//! rendering is the caller's.

mod error;
mod keep;
mod layer;
mod local;
mod pull;
mod report;

pub use error::{ConfigError, LayerError, PullError};
pub use local::{find_images, remove_images, save_to_file, LocalError};
pub use pull::{pull, pull_if_missing, Ensured, PullOptions, PullOutcome, RESUME_MIN_SIZE};
pub use report::{LayerState, NoReport, Reporter};
