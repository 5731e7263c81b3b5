//! The pull pipeline: wires fetch → verify → unpack → snapshot for one image.
//!
//! Every missing layer gets its own task. Its HTTP body (async, on the runtime) feeds a
//! bounded channel; a blocking thread reads that channel through the compressed hash,
//! the decompressor, the DiffID hash and the tar applier into an active snapshot. Layers
//! commit strictly in chain order, each only after both its digests matched, so the store
//! never holds a committed layer without its parents. The first failure cancels the rest
//! and removes their active snapshots; layers committed before it stay.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use oci_spec::image::ImageConfiguration;
use rdpull_fetch::{
    resolve, BlobDescriptor, ClientOptions, FetchError, Platform, Reference, Registry,
    ResolvedImage, StreamBudget,
};
use rdpull_snapshot::{ChainId, ImageRecord, LayerRecord, Store, StoreError, Writeback};
use rdpull_unpack::{unpack_layer, ApplyOptions, LayerDescriptor};
use rdpull_verify::Digest;
use tokio::sync::{mpsc, watch};

use crate::progress::{LayerState, Progress};

/// Image configs are small; this only stops a hostile registry from making us buffer.
const MAX_CONFIG_SIZE: u64 = 16 << 20;
/// Pieces between a download and its unpacker; the blob stream buffers another 32.
const CHANNEL_CHUNKS: usize = 8;
/// How often the store's filesystem is written back while layers unpack. At 1 s
/// multi:latest pulled 10% faster (A/B, 6 ABBA cycles) and a debian-sized pull is over
/// before the first one; 250 ms cost CPU that the unpack needed.
const WRITEBACK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(1000);
/// Label naming the process that owns an active snapshot (`pid:starttime`).
const OWNER_LABEL: &str = "rdpull.io/owner";

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A layer failed: its download (FetchError) or its unpacking (UnpackError).
    #[error("layer {index}/{count} {digest}: {source}")]
    Layer {
        index: usize,
        count: usize,
        digest: Digest,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("config {digest}: {why}")]
    Config { digest: Digest, why: String },
    #[error("{0}")]
    Internal(String),
}

pub struct PullOptions {
    pub parallel: usize,
    pub platform: Platform,
    pub client: ClientOptions,
    pub quiet: bool,
}

/// What a pull did.
pub struct PullOutcome {
    pub image: ImageRecord,
}

/// Pull `reference` into `store`.
pub async fn pull(
    store: Arc<Store>,
    reference: &Reference,
    opts: &PullOptions,
) -> Result<PullOutcome, PullError> {
    let removed =
        store.remove_stale(|i| i.labels.get(OWNER_LABEL).is_some_and(|o| !owner_alive(o)))?;
    if !removed.is_empty() {
        tracing::info!(
            "removed {} snapshot(s) left by interrupted pulls",
            removed.len()
        );
    }
    let mut client = opts.client.clone();
    client.pool_size = opts.parallel.max(1);
    // Phase timings for RDPULL_LOG=rdpull=info: where a pull's time goes.
    let t0 = std::time::Instant::now();
    let ms = move || t0.elapsed().as_millis();
    let registry = Arc::new(Registry::connect(reference, client).await?);
    tracing::info!("{} ms: connected", ms());
    let image = resolve(&registry, reference, &opts.platform).await?;
    let (config_bytes, config): (_, ImageConfiguration) = registry
        .blob_json(reference.repository(), &image.config, MAX_CONFIG_SIZE)
        .await?;
    let diff_ids = diff_ids(&image, &config)?;
    tracing::info!("{} ms: manifest and config", ms());
    let chain = ChainId::chain(&diff_ids);
    let count = image.layers.len();

    let progress = Arc::new(Progress::new(
        opts.quiet,
        image
            .layers
            .iter()
            .map(|l| l.digest.short().to_string())
            .collect(),
        image.layers.iter().map(|l| l.size).collect(),
    ));
    progress.say(&format!(
        "{}: Pulling from {}",
        reference
            .tag()
            .unwrap_or_else(|| reference.digest().map_or("latest", |d| d.short())),
        reference.repository()
    ));

    let mut present = Vec::with_capacity(count);
    for c in &chain {
        present.push(store.is_committed(&c.to_string())?);
    }
    let fetched_layers = present.iter().filter(|p| !**p).count();
    for (i, p) in present.iter().enumerate() {
        progress.state(
            i,
            if *p {
                LayerState::AlreadyExists
            } else {
                LayerState::Waiting
            },
        );
    }

    let budget = StreamBudget::new(opts.parallel, opts.client.chunks.memory);
    let (cancel, cancelled) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut prepared: BTreeMap<usize, String> = BTreeMap::new();
    let outcome = async {
        // Dropped (stopped) when every layer has committed or the pull failed.
        let _writeback =
            (fetched_layers > 0).then(|| Writeback::start(store.root(), WRITEBACK_INTERVAL));
        let owner = owner_label();
        // Largest first: it takes the longest, and gets the first stream slots (and the
        // spare ones for its chunks).
        let mut missing: Vec<usize> = (0..count).filter(|&i| !present[i]).collect();
        missing.sort_by_key(|&i| std::cmp::Reverse(image.layers[i].size));
        for i in missing {
            let key = format!("extract-{}-{}", std::process::id(), chain[i]);
            let mut labels = BTreeMap::new();
            labels.insert(OWNER_LABEL.to_string(), owner.clone());
            labels.insert(
                "rdpull.io/layer.digest".to_string(),
                image.layers[i].digest.to_string(),
            );
            let parent = i.checked_sub(1).map(|p| chain[p].to_string());
            let info = store.prepare(&key, parent.as_deref(), labels)?;
            prepared.insert(i, key);
            let job = LayerJob {
                index: i,
                count,
                blob: image.layers[i].clone(),
                diff_id: diff_ids[i].clone(),
                dir: store.fs_path(&info),
                repository: reference.repository().to_string(),
                registry: registry.clone(),
                budget: budget.clone(),
                progress: progress.clone(),
                cancelled: cancelled.clone(),
            };
            tasks.spawn(async move { (i, job.run(t0).await) });
        }
        // Commit in chain order as layers finish; stop at the first failure.
        let mut done = vec![false; count];
        let mut next = present.iter().take_while(|p| **p).count();
        while let Some(joined) = tasks.join_next().await {
            let i = joined
                .map_err(|e| PullError::Internal(format!("layer task failed: {e}")))
                .and_then(|(i, r)| r.map(|()| i))?;
            done[i] = true;
            while next < count && (present[next] || done[next]) {
                if let Some(key) = prepared.remove(&next) {
                    commit(&store, &key, &chain[next])?;
                    tracing::info!(
                        "{} ms: layer {} committed (syncfs included)",
                        ms(),
                        next + 1
                    );
                    progress.state(next, LayerState::Complete);
                }
                next += 1;
            }
        }
        Ok::<(), PullError>(())
    }
    .await;
    if outcome.is_err() {
        // Stop the other downloads and wait until every unpacker has let go of its
        // directory before removing the snapshots that will not be committed.
        let _ = cancel.send(true);
        while tasks.join_next().await.is_some() {}
        for key in prepared.values() {
            if let Err(e) = store.remove(key) {
                tracing::warn!("removing {key}: {e}");
            }
        }
    }
    outcome?;

    store.put_blob(&image.manifest_digest, &image.manifest)?;
    if let Some(index) = &image.index {
        store.put_blob(&image.target_digest, index)?;
    }
    store.put_blob(&image.config.digest, &config_bytes)?;
    let previous = store.image(&reference.to_string()).ok();
    let record = ImageRecord {
        name: reference.to_string(),
        target_digest: image.target_digest.clone(),
        target_media_type: image.target_media_type.clone(),
        manifest_digest: image.manifest_digest.clone(),
        config_digest: image.config.digest.clone(),
        platform: opts.platform.to_string(),
        layers: image
            .layers
            .iter()
            .zip(&diff_ids)
            .map(|(l, d)| LayerRecord {
                digest: l.digest.clone(),
                size: l.size,
                media_type: l.media_type.clone(),
                diff_id: d.clone(),
            })
            .collect(),
        chain,
        created: 0,
    };
    store.put_image(record.clone())?;
    tracing::info!("{} ms: image recorded", ms());
    let up_to_date =
        fetched_layers == 0 && previous.is_some_and(|p| p.target_digest == record.target_digest);
    let status = if up_to_date {
        format!("Image is up to date for {reference}")
    } else {
        format!("Downloaded newer image for {reference}")
    };
    progress.finish(
        &image.target_digest.to_string(),
        &status,
        &reference.to_string(),
    );
    Ok(PullOutcome { image: record })
}

fn diff_ids(image: &ResolvedImage, config: &ImageConfiguration) -> Result<Vec<Digest>, PullError> {
    let bad = |why: String| PullError::Config {
        digest: image.config.digest.clone(),
        why,
    };
    let ids = config.rootfs().diff_ids();
    if ids.len() != image.layers.len() {
        return Err(bad(format!(
            "{} diff_ids for {} layers in manifest {}",
            ids.len(),
            image.layers.len(),
            image.manifest_digest
        )));
    }
    ids.iter()
        .map(|s| s.parse::<Digest>().map_err(|e| bad(e.to_string())))
        .collect()
}

/// Commit a layer under its ChainID. Another pull that committed the same ChainID first
/// wins; ours is dropped.
fn commit(store: &Store, key: &str, chain_id: &ChainId) -> Result<(), PullError> {
    match store.commit(&chain_id.to_string(), key, BTreeMap::new()) {
        Ok(_) => Ok(()),
        Err(StoreError::AlreadyExists(_)) => Ok(store.remove(key)?),
        Err(e) => Err(e.into()),
    }
}

struct LayerJob {
    index: usize,
    count: usize,
    blob: BlobDescriptor,
    diff_id: Digest,
    dir: std::path::PathBuf,
    repository: String,
    registry: Arc<Registry>,
    budget: StreamBudget,
    progress: Arc<Progress>,
    /// Turns true when the pull has failed elsewhere.
    cancelled: watch::Receiver<bool>,
}

impl LayerJob {
    fn failed(&self, source: impl std::error::Error + Send + Sync + 'static) -> PullError {
        PullError::Layer {
            index: self.index + 1,
            count: self.count,
            digest: self.blob.digest.clone(),
            source: Box::new(source),
        }
    }

    async fn run(self, t0: std::time::Instant) -> Result<(), PullError> {
        let mut cancelled = self.cancelled.clone();
        let stopped = || PullError::Internal("cancelled".into());

        let mut stream = tokio::select! {
            s = self.registry.blob(&self.repository, &self.blob, &self.budget) => s.map_err(|e| self.failed(e))?,
            _ = cancelled.wait_for(|c| *c) => return Err(stopped()),
        };
        self.progress.state(self.index, LayerState::Downloading);
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_CHUNKS);
        let (index, total, p) = (self.index, self.blob.size, self.progress.clone());
        // The body goes to the unpacker until it ends, fails, or the pull is cancelled;
        // then the sender drops and the unpacker sees the end of its input.
        let download = async move {
            let mut got = 0u64;
            loop {
                let chunk = tokio::select! {
                    c = stream.next() => c,
                    _ = cancelled.wait_for(|c| *c) => Some(Err(FetchError::Invalid {
                        what: "download".into(),
                        why: "cancelled: another layer failed".into(),
                    })),
                };
                let Some(chunk) = chunk else { break };
                let item = chunk.map_err(|e| io::Error::other(e.to_string()));
                let failed = item.is_err();
                if let Ok(c) = &item {
                    got += c.len() as u64;
                    p.bytes(index, got);
                }
                if tx.send(item).await.is_err() || failed {
                    return; // the unpacker stopped, or the download failed
                }
            }
            if got == total {
                // The body is in; the unpacker works through what is buffered.
                p.state(index, LayerState::Extracting);
                tracing::info!(
                    "{} ms: layer {} downloaded",
                    t0.elapsed().as_millis(),
                    index + 1
                );
            }
        };
        let desc_digest = self.blob.digest.clone();
        let media_type = self.blob.media_type.clone();
        let (size, diff_id, dir) = (self.blob.size, self.diff_id.clone(), self.dir.clone());
        let unpack = tokio::task::spawn_blocking(move || {
            let d = LayerDescriptor {
                digest: &desc_digest,
                size,
                media_type: &media_type,
                diff_id: &diff_id,
            };
            unpack_layer(ChannelReader::new(rx), &d, &dir, &ApplyOptions::default())
        });
        let ((), unpacked) = tokio::join!(download, unpack);
        tracing::info!(
            "{} ms: layer {} unpacked and verified",
            t0.elapsed().as_millis(),
            self.index + 1
        );
        unpacked
            .map_err(|e| PullError::Internal(format!("unpack task: {e}")))?
            .map_err(|e| self.failed(e))?;
        // Both digests matched; the commit (in chain order) follows.
        self.progress.state(self.index, LayerState::Verifying);
        Ok(())
    }
}

/// Blocking `Read` over the chunks a download task sends.
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

/// `pid:starttime` of this process: a pid alone can be reused after a crash.
fn owner_label() -> String {
    let pid = std::process::id();
    format!("{pid}:{}", start_time(pid).unwrap_or_default())
}

fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22, counted after the parenthesised command name (which may hold spaces).
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19).map(str::to_string)
}

fn owner_alive(owner: &str) -> bool {
    let Some((pid, start)) = owner.split_once(':') else {
        return false;
    };
    pid.parse::<u32>().ok().and_then(start_time).as_deref() == Some(start)
}

/// Flatten an image's snapshots into `dest`, which must not exist (its parent must).
/// Built in a hidden sibling and renamed into place, so `dest` appears whole or not at all.
pub fn unpack_to(
    store: &Store,
    image: &ImageRecord,
    dest: &Path,
) -> Result<rdpull_snapshot::FlattenStats, PullError> {
    let io =
        |what: &str, e: io::Error| PullError::Internal(format!("{what} {}: {e}", dest.display()));
    if dest.symlink_metadata().is_ok() {
        return Err(io(
            "unpack target",
            io::Error::new(io::ErrorKind::AlreadyExists, "already exists"),
        ));
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = dest.file_name().ok_or_else(|| {
        io(
            "unpack target",
            io::Error::new(io::ErrorKind::InvalidInput, "has no file name"),
        )
    })?;
    let tmp = parent.join(format!(
        ".{}.rdpull-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::create_dir(&tmp).map_err(|e| io("create", e))?;
    let layers: Result<Vec<_>, _> = image
        .chain
        .iter()
        .map(|c| store.stat(&c.to_string()).map(|i| store.fs_path(&i)))
        .collect();
    let result = layers
        .map_err(PullError::from)
        .and_then(|l| rdpull_snapshot::flatten(&l, &tmp).map_err(PullError::from))
        .and_then(|stats| {
            std::fs::rename(&tmp, dest)
                .map(|_| stats)
                .map_err(|e| io("rename into", e))
        });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}
