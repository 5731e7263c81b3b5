//! Blob downloads: streams of bytes that survive the network, never buffered whole.
//!
//! A download runs as a task feeding a bounded channel. A failed request is retried with
//! backoff; a body that breaks off is resumed with `Range: bytes=N-` from the first byte
//! not yet delivered, so the consumer's streaming hash simply continues (a server that
//! ignores `Range` sends the whole body again and the first N bytes are skipped). A large
//! blob on a server that honours `Range` is split into chunks: the chunk the consumer
//! needs next streams straight through, while up to `window - 1` following chunks are
//! fetched into memory over extra connections, when the shared [`StreamBudget`] has
//! spare ones and the memory to hold them.
//!
//! Submodules, ground first: the shared [`StreamBudget`] (`budget`), the speed check of
//! one body (`speed`), one range with its retries and resumes (`range`), chunked
//! prefetch (`chunked`), and whole small blobs (`small`).

mod budget;
mod chunked;
mod range;
mod small;
mod speed;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use reqwest::StatusCode;
use tokio::sync::mpsc;

pub use budget::StreamBudget;
pub use small::{blob_bytes, blob_json};

use crate::client::Registry;
use crate::error::FetchError;
use crate::manifest::BlobDescriptor;
use chunked::fetch_chunked;
use range::{fetch_range, open, Ask, Failure, Sink};

/// slice of hyper's read buffer (up to 408 KiB) and keeps all of it alive, so queued
/// pieces weigh more than their length: this bounds a blob's memory as much as the
/// chunk budget does (docs/performance.md).
const CHANNEL_CHUNKS: usize = 8;

/// The body of one blob, in order, as it arrives. Ends after the blob's last byte, or
/// with one error once retries are exhausted. Checking the content is the consumer's job.
pub struct BlobStream {
    rx: mpsc::Receiver<Result<Bytes, FetchError>>,
}

impl Stream for BlobStream {
    type Item = Result<Bytes, FetchError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl BlobStream {
    /// Start downloading `blob`. Waits for a stream slot from `budget`, makes the first
    /// request (retrying it), then streams the body from a background task.
    pub async fn open(
        registry: &Arc<Registry>,
        repository: &str,
        blob: &BlobDescriptor,
        budget: &StreamBudget,
    ) -> Result<BlobStream, FetchError> {
        BlobStream::open_from(registry, repository, blob, 0, budget).await
    }

    /// [`BlobStream::open`] for the bytes of `blob` from offset `start` on (the caller
    /// has the ones before it): the stream yields bytes `start..size`.
    pub async fn open_from(
        registry: &Arc<Registry>,
        repository: &str,
        blob: &BlobDescriptor,
        start: u64,
        budget: &StreamBudget,
    ) -> Result<BlobStream, FetchError> {
        if start >= blob.size {
            // Nothing left to fetch: an empty stream, and no request.
            let (_, rx) = mpsc::channel(1);
            return Ok(BlobStream { rx });
        }
        let permit = budget.acquire().await;
        let chunks = &registry.options().chunks;
        let chunked = blob.size - start >= chunks.min_size.max(1)
            && chunks.window > 1
            && chunks.chunk_size > 0;
        let first_end = if chunked {
            (start + chunks.chunk_size).min(blob.size)
        } else {
            blob.size
        };
        let what = format!("blob {}", blob.digest);
        let first = registry
            .retrying(&what, || {
                let ask = if chunked { Ask::Probe } else { Ask::Stream };
                open(registry, repository, blob, start, first_end, ask)
            })
            .await?;
        // A server that ignores Range answers 200 with the whole body: one stream then.
        let chunked = chunked && first.status() == StatusCode::PARTIAL_CONTENT;
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let (reg, repo, blob, budget) = (
            registry.clone(),
            repository.to_string(),
            blob.clone(),
            budget.clone(),
        );
        tokio::spawn(async move {
            let _permit = permit;
            let result = if chunked {
                fetch_chunked(&reg, &repo, &blob, start, first, &tx, &budget).await
            } else {
                let mut sink = Sink::Channel(&tx);
                fetch_range(&reg, &repo, &blob, start, blob.size, Some(first), &mut sink).await
            };
            if let Err(Failure::Fetch(e)) = result {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(BlobStream { rx })
    }
}
