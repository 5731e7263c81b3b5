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

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use rdpull_verify::Digest;
use reqwest::{Response, StatusCode};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::client::Registry;
use crate::error::{BodyMismatch, FetchError};
use crate::http::{http_error, within};
use crate::manifest::{parse_json, BlobDescriptor};
use crate::options::{Capability, Retry};

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

    async fn acquire(&self) -> OwnedSemaphorePermit {
        self.streams
            .clone()
            .acquire_owned()
            .await
            .expect("budget semaphore is never closed")
    }

    fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.streams.clone().try_acquire_owned().ok()
    }

    /// Room for a prefetched chunk of `bytes`, if the budget has it now.
    fn try_reserve(&self, bytes: u64) -> Option<OwnedSemaphorePermit> {
        let units = u32::try_from(bytes.div_ceil(MEMORY_UNIT)).ok()?;
        self.chunk_memory.clone().try_acquire_many_owned(units).ok()
    }
}

/// Pieces between the download task and its consumer. A piece of a streamed body is a
/// slice of hyper's read buffer (up to 408 KiB) and keeps all of it alive, so queued
/// pieces weigh more than their length: this bounds a blob's memory as much as the
/// chunk budget does (docs/performance.md).
const CHANNEL_CHUNKS: usize = 8;
/// Largest piece sent down the channel: the channel bounds pieces, not bytes, so a
/// prefetched chunk goes on in slices (which share its buffer, no copy).
const MAX_PIECE: usize = 256 << 10;

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

/// Where a range fetch delivers bytes.
enum Sink<'a> {
    Channel(&'a mpsc::Sender<Result<Bytes, FetchError>>),
    Buffer(BytesMut),
}

/// The consumer has gone: stop quietly.
struct Gone;

impl Sink<'_> {
    async fn put(&mut self, b: Bytes) -> Result<(), Gone> {
        match self {
            Sink::Channel(tx) => tx.send(Ok(b)).await.map_err(|_| Gone),
            Sink::Buffer(buf) => {
                buf.extend_from_slice(&b);
                Ok(())
            }
        }
    }
}

enum Failure {
    Fetch(FetchError),
    Gone,
}

impl From<FetchError> for Failure {
    fn from(e: FetchError) -> Self {
        Failure::Fetch(e)
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

/// How a blob request is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ask {
    /// A streamed body, with `Range` only for a part of the blob.
    Stream,
    /// A streamed body, with `Range` even from 0 (to learn whether the server honours it).
    Probe,
}

/// One request for bytes `[start, end)` of `blob`. Checks what the server says it sends.
async fn open(
    registry: &Registry,
    repository: &str,
    blob: &BlobDescriptor,
    start: u64,
    end: u64,
    ask: Ask,
) -> Result<Response, FetchError> {
    let what = format!("blob {}", blob.digest);
    let path = format!("{repository}/blobs/{}", blob.digest);
    let last = (end < blob.size).then(|| end - 1);
    let range = (ask == Ask::Probe || start > 0 || end < blob.size).then_some((start, last));
    let resp = registry
        .get_range(&what, &path, repository, None, range, Capability::Pull)
        .await?;
    let bad = |problem: BodyMismatch| FetchError::BlobResponse {
        digest: blob.digest.clone(),
        problem,
    };
    if resp.status() == StatusCode::PARTIAL_CONTENT {
        let cr = resp
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let (s, total) =
            parse_content_range(cr).ok_or_else(|| bad(BodyMismatch::BadContentRange(cr.into())))?;
        if s != start || total.is_some_and(|t| t != blob.size) {
            return Err(bad(BodyMismatch::WrongRange {
                start,
                last: end - 1,
                content_range: cr.into(),
            }));
        }
    } else if let Some(len) = resp.content_length() {
        if len != blob.size {
            return Err(bad(BodyMismatch::WrongLength {
                announced: len,
                expected: blob.size,
            }));
        }
    }
    Ok(resp)
}

/// Deliver bytes `[start, end)` of `blob` to `sink`, resuming after failures from the
/// first byte not yet delivered. `first` is an already open response for `start`.
async fn fetch_range(
    registry: &Registry,
    repository: &str,
    blob: &BlobDescriptor,
    start: u64,
    end: u64,
    mut first: Option<Response>,
    sink: &mut Sink<'_>,
) -> Result<(), Failure> {
    let policy = &registry.options().retry;
    let what = format!("blob {}", blob.digest);
    let mut pos = start;
    let mut failures = 0;
    loop {
        let (error, progressed) = match first.take() {
            Some(r) => drain(r, registry, blob, &mut pos, end, sink).await?,
            None => match open(registry, repository, blob, pos, end, Ask::Stream).await {
                Ok(r) => drain(r, registry, blob, &mut pos, end, sink).await?,
                Err(e) => (Some(e), false),
            },
        };
        let Some(error) = error else { return Ok(()) };
        let retry = error.retry();
        if retry == Retry::Never {
            return Err(error.into());
        }
        // Progress resets the count, except a trickle's, which must run out of attempts.
        let too_slow = matches!(error, FetchError::TooSlow { .. });
        failures = if progressed && !too_slow {
            1
        } else {
            failures + 1
        };
        if failures >= policy.max_attempts {
            return Err(FetchError::GaveUp {
                what,
                attempts: failures,
                last: Box::new(error),
            }
            .into());
        }
        tracing::debug!("{what}: resuming at byte {pos} after: {error}");
        tokio::time::sleep(policy.delay(failures, retry)).await;
    }
}

/// Read one response body into `sink`, advancing `pos` (at most to `end`). Returns the
/// error that cut it short, if any, and whether any byte was delivered.
async fn drain(
    mut resp: Response,
    registry: &Registry,
    blob: &BlobDescriptor,
    pos: &mut u64,
    end: u64,
    sink: &mut Sink<'_>,
) -> Result<(Option<FetchError>, bool), Failure> {
    // A 200 carries the blob from byte 0 whatever we asked for.
    let mut at = if resp.status() == StatusCode::PARTIAL_CONTENT {
        *pos
    } else {
        0
    };
    let url = resp.url().to_string();
    let mut progressed = false;
    let options = registry.options();
    let mut speed = SpeedCheck::new(options.min_rate, options.stall_timeout);
    // One timer per window, not one per piece.
    let window_end = tokio::time::sleep_until(speed.window_end.into());
    tokio::pin!(window_end);
    loop {
        let next = if speed.min_rate > 0 {
            tokio::select! {
                piece = resp.chunk() => Some(piece),
                () = &mut window_end => None,
            }
        } else {
            Some(resp.chunk().await)
        };
        match speed.check(&blob.digest) {
            Err(too_slow) => return Ok((Some(too_slow), progressed)),
            Ok(true) => window_end.as_mut().reset(speed.window_end.into()),
            Ok(false) => {}
        }
        let Some(next) = next else {
            continue; // a window ended fast enough; read on
        };
        match next {
            Ok(Some(b)) => {
                speed.got(b.len() as u64);
                let b = new_part(b, &mut at, *pos, end);
                *pos += b.len() as u64;
                if !b.is_empty() {
                    progressed = true;
                    sink.put(b).await.map_err(|Gone| Failure::Gone)?;
                }
                if *pos == end {
                    return Ok((None, progressed));
                }
            }
            Ok(None) => break,
            Err(e) => {
                return Ok((
                    Some(http_error(&format!("blob {}", blob.digest), &url, e)),
                    progressed,
                ))
            }
        }
    }
    let incomplete = (*pos != end).then(|| FetchError::Incomplete {
        digest: blob.digest.clone(),
        got: *pos,
        want: end,
    });
    Ok((incomplete, progressed))
}

/// The part of a piece received at offset `*at` that lies in `[pos, end)`, with `*at`
/// moved past the piece. A server that ignores `Range` resends what we have: skipped.
fn new_part(mut b: Bytes, at: &mut u64, pos: u64, end: u64) -> Bytes {
    let len = b.len() as u64;
    if *at + len <= pos {
        *at += len;
        return Bytes::new();
    }
    if *at < pos {
        let _ = b.split_to((pos - *at) as usize);
        *at = pos;
    }
    b.truncate((end - pos).min(b.len() as u64) as usize);
    *at += b.len() as u64;
    b
}

/// curl's `--speed-limit`/`--speed-time`: a body must deliver `min_rate` bytes a second
/// over each whole window, or it is too slow.
struct SpeedCheck {
    min_rate: u64,
    window: Duration,
    window_end: Instant,
    received: u64,
}

impl SpeedCheck {
    fn new(min_rate: u64, window: Duration) -> SpeedCheck {
        SpeedCheck {
            min_rate,
            window,
            window_end: Instant::now() + window,
            received: 0,
        }
    }

    fn got(&mut self, bytes: u64) {
        self.received += bytes;
    }

    /// At the end of a window: an error if its rate was below the minimum, else a new
    /// window (`Ok(true)`). `digest` names the blob in the error.
    fn check(&mut self, digest: &Digest) -> Result<bool, FetchError> {
        let now = Instant::now();
        if self.min_rate == 0 || now < self.window_end {
            return Ok(false);
        }
        let secs = self.window.as_secs_f64().max(0.001);
        let rate = (self.received as f64 / secs) as u64;
        // Nothing at all is a stall, which the stall timeout reports as such.
        if rate < self.min_rate && self.received > 0 {
            return Err(FetchError::TooSlow {
                digest: digest.clone(),
                rate,
                min_rate: self.min_rate,
                window: self.window.as_secs(),
            });
        }
        self.window_end = now + self.window;
        self.received = 0;
        Ok(true)
    }
}

/// Chunked download: the next chunk streams through; later ones are prefetched over
/// spare stream slots into memory, and handed on in order.
async fn fetch_chunked(
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

/// Bytes `[start, end)` of `blob`, whole in memory; `first` is an already open response.
async fn fetch_into_memory(
    registry: &Registry,
    repository: &str,
    blob: &BlobDescriptor,
    start: u64,
    end: u64,
    first: Option<Response>,
) -> Result<Bytes, FetchError> {
    let mut sink = Sink::Buffer(BytesMut::with_capacity((end - start) as usize));
    match fetch_range(registry, repository, blob, start, end, first, &mut sink).await {
        Ok(()) => {}
        Err(Failure::Fetch(e)) => return Err(e),
        Err(Failure::Gone) => unreachable!("a buffer never goes away"),
    }
    match sink {
        Sink::Buffer(buf) => Ok(buf.freeze()),
        Sink::Channel(_) => unreachable!("the sink made above is a buffer"),
    }
}

/// Fetch a small blob (an image config) whole, verified against its descriptor.
pub async fn blob_bytes(
    registry: &Registry,
    repository: &str,
    blob: &BlobDescriptor,
    limit: u64,
) -> Result<Bytes, FetchError> {
    if blob.size > limit {
        return Err(FetchError::BlobTooLarge {
            digest: blob.digest.clone(),
            size: blob.size,
            limit,
        });
    }
    let what = format!("blob {}", blob.digest);
    let whole = async {
        let first = registry
            .retrying(&what, || {
                open(registry, repository, blob, 0, blob.size, Ask::Stream)
            })
            .await?;
        fetch_into_memory(registry, repository, blob, 0, blob.size, Some(first)).await
    };
    let buf = within(registry.options().request_timeout, &what, whole).await?;
    blob.digest
        .verify(&buf)
        .map_err(|source| FetchError::Verify { what, source })?;
    Ok(buf)
}

/// Fetch and parse a JSON blob (the image config).
pub async fn blob_json<T: serde::de::DeserializeOwned>(
    registry: &Registry,
    repository: &str,
    blob: &BlobDescriptor,
    limit: u64,
) -> Result<(Bytes, T), FetchError> {
    let bytes = blob_bytes(registry, repository, blob, limit).await?;
    let v = parse_json(&format!("blob {}", blob.digest), &bytes)?;
    Ok((bytes, v))
}

/// `bytes a-b/total` (total may be `*`): the start, and the total if known.
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let r = v.trim().strip_prefix("bytes ")?;
    let (span, total) = r.split_once('/')?;
    let (a, _b) = span.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((a.trim().parse().ok()?, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 0-99/1000"),
            Some((0, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 100-199/*"), Some((100, None)));
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }
}
