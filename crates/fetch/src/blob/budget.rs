//! The streams and chunk memory a pull's downloads share.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What a pull's downloads share: the HTTP streams it may have open at once, and the
/// memory its prefetched chunks may hold. Layers take a stream slot in the order they ask
/// for it (largest first, if the caller asks in that order); chunks only use slots and
/// memory left spare, so the memory bound holds however many blobs are chunked at once.
#[derive(Clone)]
pub struct StreamBudget {
    streams: Arc<Semaphore>,
    /// In units of [`MEMORY_UNIT`] bytes: a semaphore counts in `u32` per acquisition.
    chunk_memory: Arc<Semaphore>,
}

/// The granularity of the chunk memory budget.
const MEMORY_UNIT: u64 = 1 << 10;

impl StreamBudget {
    /// `streams` streams at once, and prefetched chunks holding at most `chunk_memory`
    /// bytes at once (a chunk's share is returned when its last byte has been consumed).
    pub fn new(streams: usize, chunk_memory: u64) -> StreamBudget {
        let units = usize::try_from(chunk_memory / MEMORY_UNIT)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        StreamBudget {
            streams: Arc::new(Semaphore::new(streams.max(1))),
            chunk_memory: Arc::new(Semaphore::new(units)),
        }
    }

    pub(super) async fn acquire(&self) -> OwnedSemaphorePermit {
        self.streams
            .clone()
            .acquire_owned()
            .await
            .expect("budget semaphore is never closed")
    }

    pub(super) fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.streams.clone().try_acquire_owned().ok()
    }

    /// Room for a prefetched chunk of `bytes`, if the budget has it now.
    pub(super) fn try_reserve(&self, bytes: u64) -> Option<OwnedSemaphorePermit> {
        let units = u32::try_from(bytes.div_ceil(MEMORY_UNIT)).ok()?;
        self.chunk_memory.clone().try_acquire_many_owned(units).ok()
    }
}
