//! Progress of a pull, as events for whatever front end shows them.

use rdpull_fetch::{BlobDescriptor, Reference};

/// A layer's state, as `docker pull` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayerState {
    /// Missing, and queued for download.
    Waiting,
    /// Its blob is streaming in.
    Downloading,
    /// Every byte arrived; the unpacker works through what is buffered.
    Extracting,
    /// Both digests matched; the layer waits for its turn to commit.
    Verifying,
    /// Committed to the store.
    Complete,
    /// The store had it before this pull.
    AlreadyExists,
}

impl LayerState {
    /// The words `docker pull` prints for the state.
    pub fn text(self) -> &'static str {
        match self {
            LayerState::Waiting => "Waiting",
            LayerState::Downloading => "Downloading",
            LayerState::Verifying => "Verifying Checksum",
            LayerState::Extracting => "Extracting",
            LayerState::Complete => "Pull complete",
            LayerState::AlreadyExists => "Already exists",
        }
    }
}

/// Receives a pull's progress. Called from the pull's tasks and threads, so it must be
/// cheap and must not block; every method has an empty default.
pub trait Reporter: Send + Sync {
    /// The reference resolved to an image with these layers (bottom first); the layer
    /// indices of the other calls index this slice.
    fn started(&self, reference: &Reference, layers: &[BlobDescriptor]) {
        let _ = (reference, layers);
    }

    /// Layer `index` entered `state`.
    fn layer(&self, index: usize, state: LayerState) {
        let _ = (index, state);
    }

    /// `received` compressed bytes of layer `index` have arrived so far.
    fn bytes(&self, index: usize, received: u64) {
        let _ = (index, received);
    }
}

/// A [`Reporter`] that ignores every event.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoReport;

impl Reporter for NoReport {}
