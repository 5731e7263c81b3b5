//! `--keep-blobs` for layers a pull finds already unpacked: their blobs were not kept when
//! they were pulled, so they are downloaded into the content store now (continuing a
//! partial download, verified by the blob digest), and never unpacked again.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use futures_util::StreamExt;
use rdpull_fetch::{BlobDescriptor, BlobStream, Registry, StreamBudget};
use rdpull_snapshot::{Ingest, Store};
use rdpull_unpack::UnpackError;
use rdpull_verify::VerifyError;
use tokio::task::JoinSet;

use crate::error::{LayerError, PullError};

/// Where the blobs come from.
pub(crate) struct BlobSource {
    pub(crate) registry: Arc<Registry>,
    pub(crate) repository: String,
    pub(crate) budget: StreamBudget,
}

/// Keep the blob of every layer in `layers` that is `present` and not kept yet.
pub(crate) async fn keep_present_blobs(
    store: &Arc<Store>,
    source: &BlobSource,
    layers: &[BlobDescriptor],
    present: &[bool],
) -> Result<(), PullError> {
    let mut tasks = JoinSet::new();
    for (index, blob) in layers.iter().enumerate().filter(|(i, _)| present[*i]) {
        if store.kept_blob(&blob.digest, blob.size)?.is_some() {
            continue;
        }
        // Held by another pull, which keeps it.
        let Some(ingest) = store.ingest(&blob.digest, blob.size)? else {
            continue;
        };
        let (store, blob) = (store.clone(), blob.clone());
        let (registry, repository, budget) = (
            source.registry.clone(),
            source.repository.clone(),
            source.budget.clone(),
        );
        let count = layers.len();
        tasks.spawn(async move {
            let kept = keep_blob(&store, &registry, &repository, &blob, ingest, &budget).await;
            kept.map_err(|source| PullError::Layer {
                index: index + 1,
                count,
                digest: blob.digest.clone(),
                source,
            })
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|source| PullError::Task {
            what: "blob download",
            source,
        })??;
    }
    Ok(())
}

async fn keep_blob(
    store: &Store,
    registry: &Arc<Registry>,
    repository: &str,
    blob: &BlobDescriptor,
    ingest: Ingest,
    budget: &StreamBudget,
) -> Result<(), LayerError> {
    let keep_err = LayerError::Keep;
    let mut hasher = blob.digest.algorithm().hasher();
    let mut pos = 0;
    let mut buf = vec![0; 256 << 10];
    while pos < ingest.kept() {
        let want = buf.len().min((ingest.kept() - pos) as usize);
        let n = ingest
            .file()
            .read_at(&mut buf[..want], pos)
            .map_err(keep_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        pos += n as u64;
    }
    let mut stream = BlobStream::open_from(registry, repository, blob, pos, budget).await?;
    while let Some(piece) = stream.next().await {
        let piece = piece?;
        ingest.file().write_all_at(&piece, pos).map_err(keep_err)?;
        hasher.update(&piece);
        pos += piece.len() as u64;
    }
    let actual = hasher.finish();
    if actual != blob.digest {
        let _ = ingest.discard();
        let mismatch = VerifyError::Mismatch {
            expected: blob.digest.clone(),
            actual,
        };
        return Err(UnpackError::Blob(mismatch).into());
    }
    store
        .keep_blob(ingest)
        .map_err(|e| keep_err(std::io::Error::other(e)))
}
