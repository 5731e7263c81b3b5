//! One range of a blob: the request and the checks of what the server says it sends,
//! then the body delivered to a sink, resumed with `Range` after failures from the first
//! byte not yet delivered.

use bytes::{Bytes, BytesMut};
use reqwest::{Response, StatusCode};
use tokio::sync::mpsc;

use super::speed::SpeedCheck;
use crate::client::Registry;
use crate::error::{BodyMismatch, FetchError};
use crate::http::http_error;
use crate::manifest::BlobDescriptor;
use crate::options::{Capability, Retry};

/// Where a range fetch delivers bytes.
pub(super) enum Sink<'a> {
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

pub(super) enum Failure {
    Fetch(FetchError),
    Gone,
}

impl From<FetchError> for Failure {
    fn from(e: FetchError) -> Self {
        Failure::Fetch(e)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ask {
    /// A streamed body, with `Range` only for a part of the blob.
    Stream,
    /// A streamed body, with `Range` even from 0 (to learn whether the server honours it).
    Probe,
}

/// One request for bytes `[start, end)` of `blob`. Checks what the server says it sends.
pub(super) async fn open(
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
pub(super) async fn fetch_range(
    registry: &Registry,
    repository: &str,
    blob: &BlobDescriptor,
    start: u64,
    end: u64,
    mut first: Option<Response>,
    sink: &mut Sink<'_>,
) -> Result<(), Failure> {
    let options = registry.options();
    let policy = &options.retry;
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
        let limit = if too_slow {
            options.slow_windows.min(policy.max_attempts).max(1)
        } else {
            policy.max_attempts
        };
        if failures >= limit {
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

/// Bytes `[start, end)` of `blob`, whole in memory; `first` is an already open response.
pub(super) async fn fetch_into_memory(
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
