//! One missing layer: its blob streamed from the registry into the unpacker, which
//! verifies and applies it into an active snapshot directory.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use rdpull_fetch::{BlobDescriptor, BlobStream, Registry, StreamBudget};
use rdpull_unpack::{unpack_layer, ApplyOptions, LayerDescriptor};
use rdpull_verify::Digest;
use tokio::sync::{mpsc, watch};

use crate::error::{LayerError, PullError};
use crate::report::{LayerState, Reporter};

/// Pieces between a download and its unpacker. Each may pin a whole HTTP read buffer,
/// so this bounds a layer's memory as much as it smooths the flow.
const CHANNEL_PIECES: usize = 8;

/// Everything one layer's task needs.
pub(crate) struct LayerJob {
    pub(crate) index: usize,
    pub(crate) count: usize,
    pub(crate) blob: BlobDescriptor,
    pub(crate) diff_id: Digest,
    /// The active snapshot's directory.
    pub(crate) dir: PathBuf,
    pub(crate) repository: String,
    pub(crate) registry: Arc<Registry>,
    pub(crate) budget: StreamBudget,
    pub(crate) reporter: Arc<dyn Reporter>,
    /// Turns true when the pull has failed elsewhere.
    pub(crate) cancelled: watch::Receiver<bool>,
    /// When the pull started, for phase timings in the log.
    pub(crate) t0: Instant,
}

/// The error a download hands the unpacker when the pull was cancelled.
#[derive(Debug, thiserror::Error)]
#[error("cancelled: another layer failed")]
struct Cancelled;

impl LayerJob {
    fn failed(&self, source: impl Into<LayerError>) -> PullError {
        PullError::Layer {
            index: self.index + 1,
            count: self.count,
            digest: self.blob.digest.clone(),
            source: source.into(),
        }
    }

    /// Download, verify and apply the layer. On success both digests matched and the
    /// directory holds the layer; the commit is the caller's.
    pub(crate) async fn run(self) -> Result<(), PullError> {
        let mut cancelled = self.cancelled.clone();
        let opened = BlobStream::open(&self.registry, &self.repository, &self.blob, &self.budget);
        let stream = tokio::select! {
            s = opened => s.map_err(|e| self.failed(e))?,
            _ = cancelled.wait_for(|c| *c) => return Err(PullError::Cancelled),
        };
        self.reporter.layer(self.index, LayerState::Downloading);
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_PIECES);
        let download = self.forward(stream, tx, cancelled);
        let unpack = self.spawn_unpack(rx);
        let ((), unpacked) = tokio::join!(download, unpack);
        tracing::info!(
            "{} ms: layer {} unpacked and verified",
            self.t0.elapsed().as_millis(),
            self.index + 1
        );
        unpacked
            .map_err(|source| PullError::Task {
                what: "unpack task",
                source,
            })?
            .map_err(|e| self.failed(e))?;
        self.reporter.layer(self.index, LayerState::Verifying);
        Ok(())
    }

    /// Send the body to the unpacker until it ends, fails, or the pull is cancelled; then
    /// the sender drops and the unpacker sees the end of its input.
    async fn forward(
        &self,
        mut stream: BlobStream,
        tx: mpsc::Sender<io::Result<Bytes>>,
        mut cancelled: watch::Receiver<bool>,
    ) {
        let mut got = 0u64;
        loop {
            let item = tokio::select! {
                piece = stream.next() => match piece {
                    None => break,
                    Some(piece) => piece.map_err(io::Error::other),
                },
                _ = cancelled.wait_for(|c| *c) => Err(io::Error::other(Cancelled)),
            };
            let failed = item.is_err();
            if let Ok(piece) = &item {
                got += piece.len() as u64;
                self.reporter.bytes(self.index, got);
            }
            if tx.send(item).await.is_err() || failed {
                return; // the unpacker stopped, or the download failed
            }
        }
        if got == self.blob.size {
            self.reporter.layer(self.index, LayerState::Extracting);
            tracing::info!(
                "{} ms: layer {} downloaded",
                self.t0.elapsed().as_millis(),
                self.index + 1
            );
        }
    }

    /// The unpacker, on a blocking thread, reading what [`LayerJob::forward`] sends.
    fn spawn_unpack(
        &self,
        rx: mpsc::Receiver<io::Result<Bytes>>,
    ) -> tokio::task::JoinHandle<Result<rdpull_unpack::LayerStats, rdpull_unpack::UnpackError>>
    {
        let blob = self.blob.clone();
        let (diff_id, dir) = (self.diff_id.clone(), self.dir.clone());
        tokio::task::spawn_blocking(move || {
            let d = LayerDescriptor {
                digest: &blob.digest,
                size: blob.size,
                media_type: &blob.media_type,
                diff_id: &diff_id,
            };
            unpack_layer(ChannelReader::new(rx), &d, &dir, &ApplyOptions::default())
        })
    }
}

/// Blocking `Read` over the pieces a download task sends.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        ChannelReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}
