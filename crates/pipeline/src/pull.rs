//! [`pull`]: one image into the store, step by step.
//!
//! 0. A lease on the store, so that a concurrent `prune` waits for this pull.
//! 1. [`remove_stale`]: active snapshots of pulls whose process is gone are removed.
//! 2. [`Source::resolve`]: connect, resolve the reference to a manifest, fetch the config,
//!    derive the ChainIDs.
//! 3. [`find_present`]: which layers the store already has committed.
//! 4. [`Layers::fetch`]: every missing layer gets a task (largest first); layers commit
//!    strictly in chain order, each only after both its digests matched and it was
//!    settled on the committed layers below it (`rdpull_unpack::settle_on_lowers`), so
//!    the store never holds a committed layer without its parents. The first failure cancels the
//!    rest and removes their active snapshots; layers committed before it stay.
//! 5. [`record_image`]: manifest, index and config blobs, then the image record.
//!
//! One idea, kept in one file at about 500 lines: these steps and their order, each a
//! function a reader finds in step order; what one layer's bytes go through is
//! `layer.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use oci_spec::image::ImageConfiguration;
use rdpull_fetch::{
    blob_json, resolve, ClientOptions, Platform, Reference, Registry, ResolvedImage, StreamBudget,
};
use rdpull_snapshot::{ChainId, ImageRecord, LayerRecord, Store, StoreError, Writeback};
use rdpull_unpack::{settle_on_lowers, ApplyOptions, LowerRefs};
use rdpull_verify::Digest;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::{ConfigError, PullError};
use crate::keep::{keep_present_blobs, BlobSource};
use crate::layer::{Kept, LayerJob};
use crate::report::{LayerState, Reporter};
use rdpull_snapshot::owner::{owner_gone, owner_label, OWNER_LABEL};

/// Image configs are small; this only stops a hostile registry from making us buffer.
const MAX_CONFIG_SIZE: u64 = 16 << 20;
/// How often the store's filesystem is written back while layers unpack: often enough
/// that a commit's `syncfs` finds little left, rarely enough to leave the CPU to the
/// unpack (measured: docs/performance.md).
const WRITEBACK_INTERVAL: Duration = Duration::from_millis(1000);
/// Label recording which blob a layer snapshot was unpacked from.
const LAYER_DIGEST_LABEL: &str = "rdpull.io/layer.digest";

/// Default [`PullOptions::resume_min_size`]: 64 MiB.
pub const RESUME_MIN_SIZE: u64 = 64 << 20;

/// How to pull.
#[derive(Clone, Debug)]
pub struct PullOptions {
    /// Layer downloads at once (and the HTTP connection pool's size).
    pub parallel: usize,
    /// The platform chosen from a multi-platform index.
    pub platform: Platform,
    /// Registry access: TLS, credentials, hosts.toml, retries, chunking.
    pub client: ClientOptions,
    /// Cancelled from outside (a signal handler) to stop the pull: it cleans up and
    /// returns [`PullError::Interrupted`].
    pub cancel: CancellationToken,
    /// Keep each layer blob this pull downloads in the store's content store, verified
    /// by the same digest (for `save`, and to unpack again without the network).
    pub keep_blobs: bool,
    /// Blobs at least this large keep the bytes received so far on disk, so that the next
    /// pull continues them where this one stopped; smaller ones are fetched again whole.
    /// Writing them aside costs the unpacking thread time (docs/performance.md).
    pub resume_min_size: u64,
}

/// What a pull did.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PullOutcome {
    /// The image as recorded in the store.
    pub image: ImageRecord,
    /// Layers this pull downloaded and committed (the rest were present).
    pub fetched_layers: usize,
    /// Nothing was fetched and the reference already named this image.
    pub up_to_date: bool,
}

/// Pull `reference` into `store`, reporting progress to `reporter`.
pub async fn pull(
    store: Arc<Store>,
    reference: &Reference,
    options: &PullOptions,
    reporter: Arc<dyn Reporter>,
) -> Result<PullOutcome, PullError> {
    let t0 = Instant::now();
    // Held until the image is recorded: `prune` waits for it and cannot take a layer
    // this pull found present.
    let _lease = store.lease()?;
    remove_stale(&store)?;
    let source = tokio::select! {
        s = Source::resolve(reference, options, t0) => s?,
        _ = options.cancel.cancelled() => return Err(PullError::Interrupted),
    };
    reporter.started(reference, &source.image.layers);
    let present = find_present(&store, &source.chain, &*reporter)?;
    let fetched_layers = present.iter().filter(|p| !**p).count();
    if fetched_layers > 0 {
        let budget = StreamBudget::new(options.parallel, options.client.chunks.memory);
        let mut layers = Layers::new(store.clone(), &source, reporter, budget, t0);
        layers.keep_blobs = options.keep_blobs;
        layers.resume_min_size = options.resume_min_size;
        layers.fetch(&present, &options.cancel).await?;
    }
    if options.keep_blobs && present.iter().any(|p| *p) {
        let blobs = BlobSource {
            registry: source.registry.clone(),
            repository: source.reference.repository().to_string(),
            budget: StreamBudget::new(options.parallel, options.client.chunks.memory),
        };
        let kept = keep_present_blobs(&store, &blobs, &source.image.layers, &present);
        tokio::select! {
            kept = kept => kept?,
            _ = options.cancel.cancelled() => return Err(PullError::Interrupted),
        }
    }
    let previous = store.image(&reference.to_string()).ok();
    let image = record_image(&store, reference, &options.platform, &source)?;
    tracing::info!("{} ms: image recorded", t0.elapsed().as_millis());
    let up_to_date =
        fetched_layers == 0 && previous.is_some_and(|p| p.target_digest == image.target_digest);
    Ok(PullOutcome {
        image,
        fetched_layers,
        up_to_date,
    })
}

/// An image made available by [`pull_if_missing`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Ensured {
    /// The store had it for the platform asked for; nothing was fetched.
    Present(ImageRecord),
    /// It was pulled.
    Pulled(PullOutcome),
}

impl Ensured {
    /// The image as recorded in the store.
    pub fn image(&self) -> &ImageRecord {
        match self {
            Ensured::Present(image) => image,
            Ensured::Pulled(outcome) => &outcome.image,
        }
    }
}

/// The image `reference` names, pulled first unless the store has it for the platform
/// `options` asks for.
pub async fn pull_if_missing(
    store: Arc<Store>,
    reference: &Reference,
    options: &PullOptions,
    reporter: Arc<dyn Reporter>,
) -> Result<Ensured, PullError> {
    match store.image(&reference.to_string()) {
        Ok(r) if r.platform == options.platform.to_string() => Ok(Ensured::Present(r)),
        _ => Ok(Ensured::Pulled(
            pull(store, reference, options, reporter).await?,
        )),
    }
}

/// Remove the active snapshots left by pulls whose process has died.
fn remove_stale(store: &Store) -> Result<(), PullError> {
    let removed = store.remove_stale(owner_gone)?;
    if !removed.is_empty() {
        tracing::info!(
            "removed {} snapshot(s) left by interrupted pulls",
            removed.len()
        );
    }
    Ok(())
}

/// The image as the registry describes it, and the registry to fetch its layers from.
struct Source {
    reference: Reference,
    registry: Arc<Registry>,
    image: ResolvedImage,
    config_bytes: Bytes,
    diff_ids: Vec<Digest>,
    chain: Vec<ChainId>,
}

impl Source {
    async fn resolve(
        reference: &Reference,
        options: &PullOptions,
        t0: Instant,
    ) -> Result<Source, PullError> {
        let mut client = options.client.clone();
        client.pool_size = options.parallel.max(1);
        let registry = Arc::new(Registry::connect(reference, client).await?);
        tracing::info!("{} ms: connected", t0.elapsed().as_millis());
        let image = resolve(&registry, reference, &options.platform).await?;
        let (config_bytes, config): (_, ImageConfiguration) = blob_json(
            &registry,
            reference.repository(),
            &image.config,
            MAX_CONFIG_SIZE,
        )
        .await?;
        let diff_ids = diff_ids(&image, &config).map_err(|source| PullError::Config {
            digest: image.config.digest.clone(),
            source,
        })?;
        tracing::info!("{} ms: manifest and config", t0.elapsed().as_millis());
        Ok(Source {
            reference: reference.clone(),
            registry,
            chain: ChainId::chain(&diff_ids),
            image,
            config_bytes,
            diff_ids,
        })
    }
}

/// The config's DiffIDs, one per manifest layer.
fn diff_ids(
    image: &ResolvedImage,
    config: &ImageConfiguration,
) -> Result<Vec<Digest>, ConfigError> {
    let ids = config.rootfs().diff_ids();
    if ids.len() != image.layers.len() {
        return Err(ConfigError::DiffIdCount {
            diff_ids: ids.len(),
            layers: image.layers.len(),
            manifest: image.manifest_digest.clone(),
        });
    }
    Ok(ids.iter().map(|s| s.parse()).collect::<Result<_, _>>()?)
}

/// Which layers the store has committed already; each layer's first state is reported.
fn find_present(
    store: &Store,
    chain: &[ChainId],
    reporter: &dyn Reporter,
) -> Result<Vec<bool>, PullError> {
    let mut present = Vec::with_capacity(chain.len());
    for (i, c) in chain.iter().enumerate() {
        let here = store.is_committed(&c.to_string())?;
        let state = if here {
            LayerState::AlreadyExists
        } else {
            LayerState::Waiting
        };
        reporter.layer(i, state);
        present.push(here);
    }
    Ok(present)
}

/// The missing layers of one pull, from their active snapshots to their commits.
struct Layers<'a> {
    store: Arc<Store>,
    source: &'a Source,
    reporter: Arc<dyn Reporter>,
    budget: StreamBudget,
    t0: Instant,
    cancel: watch::Sender<bool>,
    tasks: JoinSet<(usize, Result<LowerRefs, PullError>)>,
    /// Layer index → key and directory of its active snapshot, until it is committed.
    prepared: BTreeMap<usize, (String, PathBuf)>,
    /// Keep each downloaded blob in the content store.
    keep_blobs: bool,
    /// Keep the received bytes of blobs this large for the next pull to continue.
    resume_min_size: u64,
}

impl<'a> Layers<'a> {
    fn new(
        store: Arc<Store>,
        source: &'a Source,
        reporter: Arc<dyn Reporter>,
        budget: StreamBudget,
        t0: Instant,
    ) -> Self {
        Layers {
            store,
            source,
            reporter,
            budget,
            t0,
            cancel: watch::channel(false).0,
            tasks: JoinSet::new(),
            prepared: BTreeMap::new(),
            keep_blobs: false,
            resume_min_size: u64::MAX,
        }
    }

    /// Fetch every layer not `present`, committing in chain order. On failure, or when
    /// `cancel` fires, the other layers are stopped and their active snapshots removed
    /// before the error returns.
    async fn fetch(
        mut self,
        present: &[bool],
        cancel: &CancellationToken,
    ) -> Result<(), PullError> {
        // Stopped when every layer has committed or the pull failed.
        let _writeback = Writeback::start(self.store.root(), WRITEBACK_INTERVAL);
        let outcome = match self.start_missing(present) {
            // Commits happen between awaits, so a cancelled pull stops between two.
            Ok(()) => tokio::select! {
                done = self.commit_in_order(present) => done,
                _ = cancel.cancelled() => Err(PullError::Interrupted),
            },
            Err(e) => Err(e),
        };
        if outcome.is_err() {
            self.abort().await;
        }
        outcome
    }

    /// Prepare an active snapshot for each missing layer and start its task, largest
    /// first: it takes the longest, and gets the first stream slots (and the spare ones
    /// for its chunks).
    fn start_missing(&mut self, present: &[bool]) -> Result<(), PullError> {
        let layers = &self.source.image.layers;
        let mut missing: Vec<usize> = (0..layers.len()).filter(|&i| !present[i]).collect();
        missing.sort_by_key(|&i| std::cmp::Reverse(layers[i].size));
        let owner = owner_label();
        for i in missing {
            let chain = &self.source.chain;
            let key = format!("extract-{}-{}", std::process::id(), chain[i]);
            let labels = BTreeMap::from([
                (OWNER_LABEL.to_string(), owner.clone()),
                (LAYER_DIGEST_LABEL.to_string(), layers[i].digest.to_string()),
            ]);
            let parent = i.checked_sub(1).map(|p| chain[p].to_string());
            let info = self.store.prepare(&key, parent.as_deref(), labels)?;
            let dir = self.store.fs_path(&info);
            self.prepared.insert(i, (key, dir.clone()));
            let mut job = self.job(i, dir);
            job.kept = Kept::find(
                &self.store,
                &layers[i],
                self.keep_blobs,
                self.resume_min_size,
            )?;
            self.tasks.spawn(async move { (i, job.run().await) });
        }
        Ok(())
    }

    fn job(&self, index: usize, dir: std::path::PathBuf) -> LayerJob {
        let s = self.source;
        LayerJob {
            index,
            count: s.image.layers.len(),
            blob: s.image.layers[index].clone(),
            diff_id: s.diff_ids[index].clone(),
            dir,
            repository: s.reference.repository().to_string(),
            registry: s.registry.clone(),
            budget: self.budget.clone(),
            reporter: self.reporter.clone(),
            cancelled: self.cancel.subscribe(),
            t0: self.t0,
            store: self.store.clone(),
            kept: Kept::Nothing,
            keep_blob: self.keep_blobs,
        }
    }

    /// Commit layers in chain order as they finish, each settled on the committed layers
    /// below it first; stop at the first failure.
    async fn commit_in_order(&mut self, present: &[bool]) -> Result<(), PullError> {
        let count = present.len();
        let mut done: BTreeMap<usize, LowerRefs> = BTreeMap::new();
        let mut next = present.iter().take_while(|p| **p).count();
        while let Some(joined) = self.tasks.join_next().await {
            let (i, result) = joined.map_err(|source| PullError::Task {
                what: "layer task failed",
                source,
            })?;
            done.insert(i, result?);
            while next < count && (present[next] || done.contains_key(&next)) {
                if let Some((key, dir)) = self.prepared.get(&next).cloned() {
                    let refs = done.remove(&next).unwrap_or_default();
                    self.settle(next, dir, refs).await?;
                    commit(&self.store, &key, &self.source.chain[next])?;
                    self.prepared.remove(&next);
                    tracing::info!(
                        "{} ms: layer {} committed (syncfs included)",
                        self.t0.elapsed().as_millis(),
                        next + 1
                    );
                    self.reporter.layer(next, LayerState::Complete);
                }
                next += 1;
            }
        }
        Ok(())
    }

    /// Settle layer `index`, unpacked into `dir`, on the committed layers below it: what
    /// it wrote through their symlinks, their directories' metadata, hard links to
    /// their files (`rdpull_unpack::settle_on_lowers`).
    async fn settle(&self, index: usize, dir: PathBuf, refs: LowerRefs) -> Result<(), PullError> {
        if refs.is_empty() {
            return Ok(());
        }
        let lowers: Vec<PathBuf> = match index.checked_sub(1) {
            Some(p) => self
                .store
                .chain(&self.source.chain[p].to_string())?
                .iter()
                .map(|info| self.store.fs_path(info))
                .collect(),
            None => Vec::new(),
        };
        let what = (refs.implicit_dirs().len(), refs.deferred_links().len());
        let settled = tokio::task::spawn_blocking(move || {
            let lowers: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
            settle_on_lowers(&dir, &lowers, refs, &ApplyOptions::default())
        })
        .await
        .map_err(|source| PullError::Task {
            what: "settling a layer",
            source,
        })?;
        settled.map_err(|e| PullError::Layer {
            index: index + 1,
            count: self.source.image.layers.len(),
            digest: self.source.image.layers[index].digest.clone(),
            source: e.into(),
        })?;
        tracing::info!(
            "{} ms: layer {} settled on the layers below ({} implicit directories, {} hard links)",
            self.t0.elapsed().as_millis(),
            index + 1,
            what.0,
            what.1
        );
        Ok(())
    }

    /// Stop the other downloads and wait until every unpacker has let go of its
    /// directory, then remove the snapshots that will not be committed.
    async fn abort(&mut self) {
        let _ = self.cancel.send(true);
        while self.tasks.join_next().await.is_some() {}
        for (key, _) in self.prepared.values() {
            if let Err(e) = self.store.remove(key) {
                tracing::warn!("removing {key}: {e}");
            }
        }
    }
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

/// Keep the image's manifest, index and config, and record the image.
fn record_image(
    store: &Store,
    reference: &Reference,
    platform: &Platform,
    source: &Source,
) -> Result<ImageRecord, PullError> {
    let image = &source.image;
    store.put_blob(&image.manifest_digest, &image.manifest)?;
    if let Some(index) = &image.index {
        store.put_blob(&image.target_digest, index)?;
    }
    store.put_blob(&image.config.digest, &source.config_bytes)?;
    let record = ImageRecord {
        name: reference.to_string(),
        target_digest: image.target_digest.clone(),
        target_media_type: image.target_media_type.clone(),
        manifest_digest: image.manifest_digest.clone(),
        config_digest: image.config.digest.clone(),
        platform: platform.to_string(),
        layers: image
            .layers
            .iter()
            .zip(&source.diff_ids)
            .map(|(l, d)| LayerRecord {
                digest: l.digest.clone(),
                size: l.size,
                media_type: l.media_type.clone(),
                diff_id: d.clone(),
            })
            .collect(),
        chain: source.chain.clone(),
        created: 0,
    };
    store.put_image(record.clone())?;
    Ok(record)
}
