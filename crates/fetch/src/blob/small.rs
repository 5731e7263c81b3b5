//! Small blobs (image configs) fetched whole and verified.

use bytes::Bytes;

use super::range::{fetch_into_memory, open, Ask};
use crate::client::Registry;
use crate::error::FetchError;
use crate::http::within;
use crate::manifest::{parse_json, BlobDescriptor};

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
