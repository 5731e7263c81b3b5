//! Blob downloads as streams of bytes, never buffered whole.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::client::Registry;
use crate::error::FetchError;
use crate::manifest::{parse_json, BlobDescriptor};

/// The body of one blob, as it arrives. It ends after the server's last byte; checking the
/// length and digest is the consumer's job (the bytes flow through a hasher anyway).
pub struct BlobStream {
    inner: Pin<Box<dyn Stream<Item = Result<Bytes, FetchError>> + Send>>,
}

impl Stream for BlobStream {
    type Item = Result<Bytes, FetchError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl Registry {
    /// Start downloading `blob` from `repository`.
    pub async fn blob(
        &self,
        repository: &str,
        blob: &BlobDescriptor,
    ) -> Result<BlobStream, FetchError> {
        let what = format!("blob {}", blob.digest);
        let path = format!("{repository}/blobs/{}", blob.digest);
        let resp = self.get(&what, &path, repository, None).await?;
        if let Some(len) = resp.content_length() {
            if len != blob.size {
                return Err(FetchError::Blob {
                    digest: blob.digest.clone(),
                    why: format!(
                        "server announces {len} bytes, the descriptor says {}",
                        blob.size
                    ),
                });
            }
        }
        let digest = blob.digest.clone();
        let url = resp.url().to_string();
        let inner = resp.bytes_stream().map(move |r| {
            r.map_err(|e| FetchError::Blob {
                digest: digest.clone(),
                why: format!("{url}: {}", describe(&e)),
            })
        });
        Ok(BlobStream {
            inner: Box::pin(inner),
        })
    }

    /// Fetch a small blob (an image config) whole, verified against its descriptor.
    pub async fn blob_bytes(
        &self,
        repository: &str,
        blob: &BlobDescriptor,
        limit: u64,
    ) -> Result<Bytes, FetchError> {
        if blob.size > limit {
            return Err(FetchError::Blob {
                digest: blob.digest.clone(),
                why: format!("{} bytes is more than the {limit}-byte limit", blob.size),
            });
        }
        let mut s = self.blob(repository, blob).await?;
        let mut buf = Vec::with_capacity(blob.size as usize);
        while let Some(chunk) = s.next().await {
            let chunk = chunk?;
            if (buf.len() + chunk.len()) as u64 > blob.size {
                return Err(FetchError::Blob {
                    digest: blob.digest.clone(),
                    why: format!("longer than its descriptor size {}", blob.size),
                });
            }
            buf.extend_from_slice(&chunk);
        }
        let what = format!("blob {}", blob.digest);
        if buf.len() as u64 != blob.size {
            return Err(FetchError::Verify {
                what,
                source: rdpull_verify::VerifyError::Size {
                    expected: blob.size,
                    actual: buf.len() as u64,
                },
            });
        }
        blob.digest
            .verify(&buf)
            .map_err(|source| FetchError::Verify { what, source })?;
        Ok(Bytes::from(buf))
    }

    /// Fetch and parse a JSON blob (the image config).
    pub async fn blob_json<T: serde::de::DeserializeOwned>(
        &self,
        repository: &str,
        blob: &BlobDescriptor,
        limit: u64,
    ) -> Result<(Bytes, T), FetchError> {
        let bytes = self.blob_bytes(repository, blob, limit).await?;
        let v = parse_json(&format!("blob {}", blob.digest), &bytes)?;
        Ok((bytes, v))
    }
}

/// reqwest's Display hides the cause ("error decoding response body"); name it.
fn describe(e: &reqwest::Error) -> String {
    let mut s = if e.is_timeout() {
        "stalled: no data within the stall timeout".to_string()
    } else {
        e.to_string()
    };
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
