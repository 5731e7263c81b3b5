//! One missing layer: its blob streamed from the registry into the unpacker, which
//! verifies and applies it into an active snapshot directory.
//!
//! The received compressed bytes are kept in the store's ingest file for the blob as the
//! unpacker reads them. A pull that stops on a download failure, a signal or a crash
//! leaves them there; the next pull replays them into the unpacker and continues the
//! download with `Range` from where they end. Both digests are still checked over the
//! whole layer; kept bytes that do not verify are dropped and the layer fetched again.
//! A layer blob the content store keeps whole (`--keep-blobs`) is unpacked from there
//! with no request at all.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use rdpull_fetch::{BlobDescriptor, BlobStream, Registry, StreamBudget};
use rdpull_snapshot::{Ingest, Store, StoreError};
use rdpull_unpack::{
    unpack_layer, ApplyOptions, LayerDescriptor, LayerStats, LowerRefs, UnpackError,
};
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
    pub(crate) store: Arc<Store>,
    /// What the store keeps of the blob.
    pub(crate) kept: Kept,
    /// Move the completed download into the content store instead of deleting it.
    pub(crate) keep_blob: bool,
}

/// What the store keeps of a layer's blob when its pull starts.
pub(crate) enum Kept {
    /// The whole blob, in the content store.
    Blob(File),
    /// Its partial download, which this pull holds, to continue and extend.
    Partial(Ingest),
    /// Nothing: another running pull holds the partial download, or the blob is too
    /// small to be worth continuing. This pull keeps nothing.
    Nothing,
}

impl Kept {
    /// What the store has of `blob`; a partial download is held (and so kept from now on)
    /// only when the blob is to be kept whole or is at least `resume_min_size` bytes.
    pub(crate) fn find(
        store: &Store,
        blob: &BlobDescriptor,
        keep_blob: bool,
        resume_min_size: u64,
    ) -> Result<Kept, StoreError> {
        if let Some(file) = store.kept_blob(&blob.digest, blob.size)? {
            return Ok(Kept::Blob(file));
        }
        if !keep_blob && blob.size < resume_min_size {
            return Ok(Kept::Nothing);
        }
        Ok(match store.ingest(&blob.digest, blob.size)? {
            Some(ingest) => Kept::Partial(ingest),
            None => Kept::Nothing,
        })
    }
}

/// What one attempt at a layer gave: the unpacker's result, and the ingest back.
type Attempt = (Result<LayerStats, UnpackError>, Option<Ingest>);

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
    /// directory holds the layer; settling it on the layers below and the commit are the
    /// caller's.
    pub(crate) async fn run(mut self) -> Result<LowerRefs, PullError> {
        let (prefix, ingest, whole) = match std::mem::replace(&mut self.kept, Kept::Nothing) {
            Kept::Blob(file) => (Some((file, self.blob.size)), None, true),
            Kept::Partial(i) if i.kept() > 0 => {
                let file = i.file().try_clone();
                let file = file.map_err(|e| self.failed(LayerError::Keep(e)))?;
                (Some((file, i.kept())), Some(i), false)
            }
            Kept::Partial(i) => (None, Some(i), false),
            Kept::Nothing => (None, None, false),
        };
        let from = prefix.as_ref().map_or(0, |p| p.1);
        let (mut unpacked, mut ingest) = self.attempt(prefix, ingest, from).await?;
        let bad_prefix = match &unpacked {
            Err(e) if from > 0 && is_bad_content(e) => Some(e.to_string()),
            _ => None,
        };
        if let Some(e) = bad_prefix {
            tracing::warn!(
                "layer {}/{}: the {from} bytes kept from an earlier pull do not verify ({e}); \
                 fetching the layer again",
                self.index + 1,
                self.count
            );
            if whole {
                self.store.remove_kept_blob(&self.blob.digest)?;
                ingest = self.store.ingest(&self.blob.digest, self.blob.size)?;
            }
            if let Some(i) = &ingest {
                let emptied = i.file().set_len(0);
                emptied.map_err(|e| self.failed(LayerError::Keep(e)))?;
            }
            empty_dir(&self.dir).map_err(|source| {
                self.failed(UnpackError::Root {
                    path: self.dir.display().to_string(),
                    source,
                })
            })?;
            (unpacked, ingest) = self.attempt(None, ingest, 0).await?;
        }
        let refs = match unpacked {
            Ok(stats) => {
                self.finish_kept(ingest);
                stats.lower_refs
            }
            // Kept for the next pull: what arrived is a good prefix as far as we know.
            Err(e) if is_download_failure(&e) => return Err(self.failed(e)),
            Err(e) => {
                if let Some(i) = ingest {
                    let _ = i.discard();
                }
                return Err(self.failed(e));
            }
        };
        self.reporter.layer(self.index, LayerState::Verifying);
        Ok(refs)
    }

    /// The layer is in: its downloaded bytes go to the content store or away. Neither
    /// can fail the layer.
    fn finish_kept(&self, ingest: Option<Ingest>) {
        let Some(ingest) = ingest else { return };
        let done = if self.keep_blob {
            self.store.keep_blob(ingest)
        } else {
            ingest.discard()
        };
        if let Err(e) = done {
            tracing::warn!("{e}");
        }
    }

    /// Unpack the `from` bytes of `prefix`, then download the rest, appending it to
    /// `ingest`'s file as it is read.
    async fn attempt(
        &self,
        prefix: Option<(File, u64)>,
        ingest: Option<Ingest>,
        from: u64,
    ) -> Result<Attempt, PullError> {
        let mut cancelled = self.cancelled.clone();
        let opened = BlobStream::open_from(
            &self.registry,
            &self.repository,
            &self.blob,
            from,
            &self.budget,
        );
        let stream = tokio::select! {
            s = opened => s.map_err(|e| self.failed(e))?,
            _ = cancelled.wait_for(|c| *c) => return Err(PullError::Cancelled),
        };
        if from > 0 {
            tracing::info!(
                "layer {}/{}: continuing the download at byte {from}",
                self.index + 1,
                self.count
            );
        }
        self.reporter.layer(self.index, LayerState::Downloading);
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_PIECES);
        let download = self.forward(stream, from, tx, cancelled);
        let reader = KeepingReader::new(ChannelReader::new(rx), prefix, ingest, from);
        let unpack = self.spawn_unpack(reader);
        let ((), unpacked) = tokio::join!(download, unpack);
        tracing::info!(
            "{} ms: layer {} unpacked",
            self.t0.elapsed().as_millis(),
            self.index + 1
        );
        unpacked.map_err(|source| PullError::Task {
            what: "unpack task",
            source,
        })
    }

    /// Send the body to the unpacker until it ends, fails, or the pull is cancelled; then
    /// the sender drops and the unpacker sees the end of its input.
    async fn forward(
        &self,
        mut stream: BlobStream,
        from: u64,
        tx: mpsc::Sender<io::Result<Bytes>>,
        mut cancelled: watch::Receiver<bool>,
    ) {
        let mut got = from;
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

    /// The unpacker, on a blocking thread, reading the kept bytes and then what
    /// [`LayerJob::forward`] sends.
    fn spawn_unpack(&self, mut reader: KeepingReader) -> tokio::task::JoinHandle<Attempt> {
        let blob = self.blob.clone();
        let (diff_id, dir) = (self.diff_id.clone(), self.dir.clone());
        tokio::task::spawn_blocking(move || {
            let d = LayerDescriptor {
                digest: &blob.digest,
                size: blob.size,
                media_type: &blob.media_type,
                diff_id: &diff_id,
            };
            let unpacked = unpack_layer(&mut reader, &d, &dir, &ApplyOptions::default());
            (unpacked, reader.ingest)
        })
    }
}

/// The layer failed because its bytes stopped coming (a network error, a cancelled
/// pull), not because they were wrong: what was kept is still a good prefix.
fn is_download_failure(e: &UnpackError) -> bool {
    matches!(e, UnpackError::Source(_))
}

/// The layer's bytes were wrong (a digest, the compression, the tar stream), which kept
/// bytes can cause; a failing filesystem cannot be mended by fetching again.
fn is_bad_content(e: &UnpackError) -> bool {
    matches!(
        e,
        UnpackError::Blob(_)
            | UnpackError::DiffId(_)
            | UnpackError::Decompress { .. }
            | UnpackError::Tar(_)
            | UnpackError::Refused { .. }
    )
}

/// Remove everything in `dir`, keeping the directory and its mode.
fn empty_dir(dir: &Path) -> io::Result<()> {
    let mode = std::fs::metadata(dir)?.permissions();
    std::fs::remove_dir_all(dir)?;
    std::fs::create_dir(dir)?;
    std::fs::set_permissions(dir, mode)
}

/// The blob's bytes for the unpacker: first the ones kept (a partial download, or the
/// whole blob), then the download's, which it appends to the ingest file as they are read.
/// A write that fails (a full disk) stops the keeping, not the layer.
struct KeepingReader {
    prefix: Option<File>,
    /// Read position in the kept prefix, and its end.
    replayed: u64,
    kept: u64,
    ingest: Option<Ingest>,
    /// Where the next downloaded byte goes in the ingest file.
    written: u64,
    keeping: bool,
    network: ChannelReader,
}

impl KeepingReader {
    fn new(
        network: ChannelReader,
        prefix: Option<(File, u64)>,
        ingest: Option<Ingest>,
        from: u64,
    ) -> KeepingReader {
        let (prefix, kept) = prefix.map_or((None, 0), |(f, n)| (Some(f), n));
        KeepingReader {
            prefix,
            replayed: 0,
            kept,
            keeping: ingest.is_some(),
            ingest,
            written: from,
            network,
        }
    }
}

impl Read for KeepingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(prefix) = self.prefix.as_ref().filter(|_| self.replayed < self.kept) {
            let want = (self.kept - self.replayed).min(buf.len() as u64) as usize;
            let n = prefix.read_at(&mut buf[..want], self.replayed)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the kept bytes of the blob were cut short",
                ));
            }
            self.replayed += n as u64;
            return Ok(n);
        }
        let n = self.network.read(buf)?;
        if let Some(ingest) = self.ingest.as_ref().filter(|_| self.keeping && n > 0) {
            match ingest.file().write_all_at(&buf[..n], self.written) {
                Ok(()) => self.written += n as u64,
                Err(e) => {
                    tracing::debug!("not keeping the downloaded bytes any more: {e}");
                    self.keeping = false;
                }
            }
        }
        Ok(n)
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
