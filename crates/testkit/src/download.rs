//! A blob downloaded from a [`FakeRegistry`] through rdpull-fetch's own client, as a
//! layer is: for tests and fuzz targets of chunked, resumed and faulty downloads.

use std::sync::Arc;

use futures_util::StreamExt;
use rdpull_fetch::{
    BlobDescriptor, BlobStream, ClientOptions, FetchError, Reference, Registry, StreamBudget,
};

use crate::registry::FakeRegistry;

/// Put `data` into `reg` (repository `r`) and start downloading it from byte `start`,
/// over plain HTTP with `options` and a budget of `streams` streams and the chunk
/// policy's memory.
pub async fn open_blob(
    reg: &FakeRegistry,
    data: &[u8],
    start: u64,
    streams: usize,
    options: ClientOptions,
) -> Result<BlobStream, FetchError> {
    let digest = reg.put_blob("r", data);
    let reference: Reference = format!("{}/r:t", reg.addr).parse().expect("a reference");
    let options = ClientOptions {
        plain_http: true,
        ..options
    };
    let budget = StreamBudget::new(streams, options.chunks.memory);
    let registry = Arc::new(Registry::connect(&reference, options).await?);
    let blob = BlobDescriptor {
        digest: digest.parse().expect("a digest"),
        size: data.len() as u64,
        media_type: "application/octet-stream".into(),
    };
    BlobStream::open_from(&registry, "r", &blob, start, &budget).await
}

/// Everything `stream` yields, or its first error.
pub async fn collect(mut stream: BlobStream) -> Result<Vec<u8>, FetchError> {
    let mut out = Vec::new();
    while let Some(piece) = stream.next().await {
        out.extend_from_slice(&piece?);
    }
    Ok(out)
}
