//! Chunked download: the chunk the consumer needs next streams straight through, while
//! later ones are prefetched into memory over spare stream slots and handed on in order.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use rdpull_verify::Digest;
use reqwest::Response;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::task::JoinHandle;

use super::budget::StreamBudget;
use super::range::{fetch_into_memory, fetch_range, Failure, Sink};
use crate::client::Registry;
use crate::error::FetchError;
use crate::manifest::BlobDescriptor;

/// Largest piece sent down the channel: the channel bounds pieces, not bytes, so a
/// prefetched chunk goes on in slices (which share its buffer, no copy).
const MAX_PIECE: usize = 256 << 10;

/// A chunk being fetched into memory, with its share of the budget's memory. Dropping
/// it (the download gave up, or its consumer went away) aborts the fetch.
struct Prefetch {
    task: JoinHandle<Result<Bytes, FetchError>>,
    memory: Option<OwnedSemaphorePermit>,
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A prefetched chunk and its share of the budget's memory.
struct Budgeted {
    bytes: Bytes,
    _memory: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Budgeted {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Chunked download: the next chunk streams through; later ones are prefetched over
/// spare stream slots into memory, and handed on in order.
pub(super) async fn fetch_chunked(
    registry: &Arc<Registry>,
    repository: &str,
    blob: &BlobDescriptor,
    start: u64,
    first: Response,
    tx: &mpsc::Sender<Result<Bytes, FetchError>>,
    budget: &StreamBudget,
) -> Result<(), Failure> {
    let policy = registry.options().chunks.clone();
    let ranges: Vec<(u64, u64)> = (start..blob.size)
        .step_by(policy.chunk_size as usize)
        .map(|s| (s, (s + policy.chunk_size).min(blob.size)))
        .collect();
    let mut prefetched: VecDeque<(usize, Prefetch)> = VecDeque::new();
    let mut next_prefetch = 1;
    let mut first = Some(first);
    for (k, &(start, end)) in ranges.iter().enumerate() {
        while prefetched.len() + 1 < policy.window && next_prefetch < ranges.len() {
            let range = ranges[next_prefetch];
            let Some(p) = Prefetch::start(registry, repository, blob, range, budget) else {
                break;
            };
            prefetched.push_back((next_prefetch, p));
            next_prefetch += 1;
        }
        if prefetched.front().is_some_and(|(i, _)| *i == k) {
            let (_, p) = prefetched.pop_front().expect("front checked");
            p.deliver(&blob.digest, tx).await?;
        } else {
            let mut sink = Sink::Channel(tx);
            fetch_range(
                registry,
                repository,
                blob,
                start,
                end,
                first.take(),
                &mut sink,
            )
            .await?;
            next_prefetch = next_prefetch.max(k + 1);
        }
    }
    Ok(())
}

impl Prefetch {
    /// Fetch bytes `[s, e)` of `blob` into memory on a spare stream, if `budget` has a
    /// stream and the memory for it now.
    fn start(
        registry: &Arc<Registry>,
        repository: &str,
        blob: &BlobDescriptor,
        (s, e): (u64, u64),
        budget: &StreamBudget,
    ) -> Option<Prefetch> {
        let memory = budget.try_reserve(e - s)?;
        let permit = budget.try_acquire()?;
        let (reg, repo, b) = (registry.clone(), repository.to_string(), blob.clone());
        let task = tokio::spawn(async move {
            let _permit = permit;
            fetch_into_memory(&reg, &repo, &b, s, e, None).await
        });
        Some(Prefetch {
            task,
            memory: Some(memory),
        })
    }

    /// Wait for the chunk and send it on in slices. The slices share the buffer, and the
    /// buffer holds its budget share until the last slice has been consumed.
    async fn deliver(
        mut self,
        digest: &Digest,
        tx: &mpsc::Sender<Result<Bytes, FetchError>>,
    ) -> Result<(), Failure> {
        let bytes = (&mut self.task)
            .await
            .map_err(|source| FetchError::ChunkTask {
                digest: digest.clone(),
                source,
            })??;
        let memory = self.memory.take().expect("a chunk is delivered once");
        let mut bytes = Bytes::from_owner(Budgeted {
            bytes,
            _memory: memory,
        });
        while !bytes.is_empty() {
            let piece = bytes.split_to(bytes.len().min(MAX_PIECE));
            tx.send(Ok(piece)).await.map_err(|_| Failure::Gone)?;
        }
        Ok(())
    }
}
