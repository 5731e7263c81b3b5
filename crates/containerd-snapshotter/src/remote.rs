//! The remote-snapshot path: containerd's Prepare of a layer that carries the CRI's image
//! labels starts rdpull's own pull of the whole image, and each layer's Prepare is
//! answered AlreadyExists once that layer is committed and presented under the name,
//! parent and labels containerd will look it up by (the protocol stargz, SOCI and nydus
//! use). Anything that keeps rdpull from helping falls back to containerd's own fetch
//! and unpack: a reason is logged, the user's pull never fails because of it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdpull_fetch::{BlobDescriptor, Reference};
use rdpull_pipeline::{pull, LayerState, PullOptions, Reporter};
use rdpull_verify::Digest;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::error::SnapshotterError;
use crate::snapshotter::Snapshotter;

/// Labels containerd's CRI puts on each layer's Prepare
/// (`snapshotters.AppendInfoHandlerWrapper`, with `disable_snapshot_annotations = false`).
pub const CRI_IMAGE_REF: &str = "containerd.io/snapshot/cri.image-ref";
pub const CRI_MANIFEST_DIGEST: &str = "containerd.io/snapshot/cri.manifest-digest";
pub const CRI_LAYER_DIGEST: &str = "containerd.io/snapshot/cri.layer-digest";
/// How long a finished pull's layers count as in flight for Cleanup: containerd asks for
/// them right after, layer by layer.
const FINISHED_PULL_GRACE: Duration = Duration::from_secs(120);

/// What a Prepare should answer.
#[derive(Debug)]
pub enum Provided {
    /// The layer is a committed snapshot containerd will find: answer AlreadyExists.
    Exists,
    /// rdpull cannot provide it; create the active snapshot and let containerd unpack.
    Fallback(Fallback),
}

/// Why rdpull leaves a layer to containerd. Logged, never returned to containerd.
#[derive(Debug, thiserror::Error)]
pub enum Fallback {
    /// The Prepare lacks a label of the CRI's: containerd is not configured to pass them.
    #[error(
        "no {0} label: containerd passes the image to snapshotters with \
         disable_snapshot_annotations = false (CRI local pull), or on 2.1 with \
         enable_remote_snapshot_annotations = \"true\" in [proxy_plugins.rdpull.exports] \
         (transfer service)"
    )]
    MissingLabel(&'static str),
    /// A label of the CRI's does not parse.
    #[error("{label}: {source}")]
    BadLabel {
        label: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// rdpull's pull of the image failed (shared by every Prepare waiting on it).
    #[error("rdpull's pull failed: {0}")]
    PullFailed(#[source] Arc<PullFailure>),
    /// The pull finished without this layer.
    #[error("layer {0} is not in the image rdpull pulled")]
    NotInImage(String),
    /// The pull ended without saying how (the daemon is shutting down).
    #[error("the pull stopped")]
    PullStopped,
    /// The committed layer could not be presented to containerd.
    #[error(transparent)]
    Adopt(#[from] SnapshotterError),
    /// The blocking task presenting it panicked.
    #[error("presenting the layer: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// How a remote pull failed: the pull itself, or pinning its layers afterwards.
#[derive(Debug, thiserror::Error)]
pub enum PullFailure {
    #[error(transparent)]
    Pull(#[from] rdpull_pipeline::PullError),
    #[error(transparent)]
    Keep(#[from] SnapshotterError),
    #[error("keeping the layers: {0}")]
    Task(#[from] tokio::task::JoinError),
}

#[derive(Clone, Debug)]
enum PullState {
    /// Running; the counter moves each time a layer is committed.
    Running(u64),
    Done(Result<(), Arc<PullFailure>>),
}

struct RemotePull {
    state: watch::Receiver<PullState>,
    /// The image's layers (ChainIDs), once the pull resolved them.
    chain: Arc<Mutex<Vec<String>>>,
}

pub struct RemotePulls {
    sn: Arc<Snapshotter>,
    options: PullOptions,
    pulls: Arc<Mutex<HashMap<String, Arc<RemotePull>>>>,
    tasks: TaskTracker,
    /// A fallback for want of the CRI's labels was logged.
    said_unlabelled: AtomicBool,
}

impl RemotePulls {
    /// Pulls run with `options` (registry access, parallelism); its cancel token stops
    /// them all.
    pub fn new(sn: Arc<Snapshotter>, options: PullOptions) -> RemotePulls {
        RemotePulls {
            sn,
            options,
            pulls: Arc::default(),
            tasks: TaskTracker::new(),
            said_unlabelled: AtomicBool::new(false),
        }
    }

    /// Cancel the running pulls and wait for them to clean up.
    pub async fn shutdown(&self) {
        self.options.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Layers of pulls running or just finished, which Cleanup must not release.
    pub fn in_flight(&self) -> HashSet<String> {
        let pulls = self.pulls.lock().expect("pulls lock");
        pulls
            .values()
            .flat_map(|p| p.chain.lock().expect("chain lock").clone())
            .collect()
    }

    /// Provide the layer `target` (a ChainID) for a Prepare of `key` on `parent`.
    pub async fn provide(
        &self,
        key: &str,
        parent: &str,
        labels: &BTreeMap<String, String>,
        target: &str,
    ) -> Provided {
        match self.try_provide(parent, labels, target).await {
            Ok(()) => Provided::Exists,
            Err(why) => {
                let msg =
                    rdpull_fetch::with_causes(why.to_string(), std::error::Error::source(&why));
                // A configuration without the labels falls back on every layer: said
                // once, then only at debug level.
                let repeated = matches!(why, Fallback::MissingLabel(_))
                    && self.said_unlabelled.swap(true, Ordering::Relaxed);
                if repeated {
                    tracing::debug!(
                        "fallback: {key}: containerd unpacks layer {target} itself: {msg}"
                    );
                } else {
                    tracing::info!(
                        "fallback: {key}: containerd unpacks layer {target} itself: {msg}"
                    );
                }
                Provided::Fallback(why)
            }
        }
    }

    async fn try_provide(
        &self,
        parent: &str,
        labels: &BTreeMap<String, String>,
        target: &str,
    ) -> Result<(), Fallback> {
        let store = self.sn.store().clone();
        let t = target.to_string();
        let committed = move || store.is_committed(&t).unwrap_or(false);
        if !blocking(committed.clone()).await {
            let reference = image_of(labels)?;
            let pull = self.pull_for(reference);
            let mut state = pull.state.clone();
            loop {
                if blocking(committed.clone()).await {
                    break;
                }
                let now = state.borrow_and_update().clone();
                match now {
                    PullState::Done(Err(e)) => return Err(Fallback::PullFailed(e)),
                    // The layer may have committed between the look above and the end.
                    PullState::Done(Ok(())) if blocking(committed.clone()).await => break,
                    PullState::Done(Ok(())) => {
                        return Err(Fallback::NotInImage(target.to_string()))
                    }
                    PullState::Running(_) => {}
                }
                if state.changed().await.is_err() {
                    return Err(Fallback::PullStopped);
                }
            }
        }
        let (sn, target, parent) = (self.sn.clone(), target.to_string(), parent.to_string());
        let labels = labels.clone();
        tokio::task::spawn_blocking(move || sn.adopt_layer(&target, &parent, labels)).await??;
        Ok(())
    }

    /// The pull of `reference`, started unless one is running or just finished.
    fn pull_for(&self, reference: Reference) -> Arc<RemotePull> {
        let key = reference.to_string();
        let mut pulls = self.pulls.lock().expect("pulls lock");
        if let Some(p) = pulls.get(&key) {
            return p.clone();
        }
        let (tx, rx) = watch::channel(PullState::Running(0));
        let chain = Arc::new(Mutex::new(Vec::new()));
        let entry = Arc::new(RemotePull {
            state: rx,
            chain: chain.clone(),
        });
        pulls.insert(key.clone(), entry.clone());
        let job = PullJob {
            sn: self.sn.clone(),
            options: self.options.clone(),
            reference,
            tx,
            chain,
        };
        let (pulls, cancel) = (self.pulls.clone(), self.options.cancel.clone());
        self.tasks.spawn(async move {
            job.run().await;
            // Kept a while, so that containerd's next Prepares and Cleanup see it.
            tokio::select! {
                () = tokio::time::sleep(FINISHED_PULL_GRACE) => {}
                () = cancel.cancelled() => {}
            }
            pulls.lock().expect("pulls lock").remove(&key);
        });
        entry
    }
}

/// The image a layer's labels name: the CRI's reference at the manifest digest it
/// resolved, so that rdpull pulls exactly the manifest containerd is unpacking.
fn image_of(labels: &BTreeMap<String, String>) -> Result<Reference, Fallback> {
    let get = |name: &'static str| labels.get(name).ok_or(Fallback::MissingLabel(name));
    let image: Reference = get(CRI_IMAGE_REF)?
        .parse()
        .map_err(|e: rdpull_fetch::FetchError| Fallback::BadLabel {
            label: CRI_IMAGE_REF,
            source: e.into(),
        })?;
    let manifest: Digest =
        get(CRI_MANIFEST_DIGEST)?
            .parse()
            .map_err(|e: rdpull_verify::VerifyError| Fallback::BadLabel {
                label: CRI_MANIFEST_DIGEST,
                source: e.into(),
            })?;
    Ok(image.with_digest(manifest))
}

async fn blocking(f: impl FnOnce() -> bool + Send + 'static) -> bool {
    tokio::task::spawn_blocking(f).await.unwrap_or(false)
}

/// One remote pull and what it tells the Prepares waiting on it.
struct PullJob {
    sn: Arc<Snapshotter>,
    options: PullOptions,
    reference: Reference,
    tx: watch::Sender<PullState>,
    chain: Arc<Mutex<Vec<String>>>,
}

impl PullJob {
    async fn run(self) {
        let t0 = Instant::now();
        let store = self.sn.store().clone();
        let name = self.reference.to_string();
        let recorded_before = store.image(&name).is_ok();
        let progress = Arc::new(Progress {
            tx: self.tx.clone(),
            bytes: Mutex::new(Vec::new()),
        });
        let pulled = pull(
            store.clone(),
            &self.reference,
            &self.options,
            progress.clone(),
        )
        .await;
        let result = match pulled {
            Ok(outcome) => {
                let chain: Vec<String> = outcome
                    .image
                    .chain
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                self.chain.lock().expect("chain lock").clone_from(&chain);
                let (sn, name2) = (self.sn.clone(), name.clone());
                // Every layer is pinned for containerd before the image record this pull
                // made goes: containerd, not `rdpull images`, owns this image.
                let kept = tokio::task::spawn_blocking(move || {
                    for layer in &chain {
                        sn.pin_layer(layer)?;
                    }
                    if !recorded_before {
                        sn.store().remove_image(&name2)?;
                    }
                    Ok::<_, crate::SnapshotterError>(())
                })
                .await;
                let bytes: u64 = progress.bytes.lock().expect("bytes lock").iter().sum();
                tracing::info!(
                    "remote pull: {name}: {} layers ({} fetched), {bytes} bytes in {} ms",
                    outcome.image.layers.len(),
                    outcome.fetched_layers,
                    t0.elapsed().as_millis()
                );
                match kept {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(Arc::new(PullFailure::Keep(e))),
                    Err(e) => Err(Arc::new(PullFailure::Task(e))),
                }
            }
            Err(e) => {
                let msg = rdpull_fetch::with_causes(e.to_string(), std::error::Error::source(&e));
                tracing::warn!(
                    "remote pull: {name}: failed after {} ms: {msg}",
                    t0.elapsed().as_millis()
                );
                Err(Arc::new(PullFailure::Pull(e)))
            }
        };
        self.tx.send_replace(PullState::Done(result));
    }
}

/// Wakes the waiting Prepares at each committed layer, and counts bytes for the log.
struct Progress {
    tx: watch::Sender<PullState>,
    bytes: Mutex<Vec<u64>>,
}

impl Reporter for Progress {
    fn started(&self, _reference: &Reference, layers: &[BlobDescriptor]) {
        *self.bytes.lock().expect("bytes lock") = vec![0; layers.len()];
    }

    fn layer(&self, _index: usize, state: LayerState) {
        if matches!(state, LayerState::Complete | LayerState::AlreadyExists) {
            self.tx.send_modify(|s| {
                if let PullState::Running(n) = s {
                    *n += 1;
                }
            });
        }
    }

    fn bytes(&self, index: usize, received: u64) {
        if let Some(b) = self.bytes.lock().expect("bytes lock").get_mut(index) {
            *b = (*b).max(received);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cri_labels_name_the_image_or_say_why_not() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let digest = format!("sha256:{}", "a".repeat(64));
        let ok = image_of(&labels(&[
            (CRI_IMAGE_REF, "reg.example/app:1"),
            (CRI_MANIFEST_DIGEST, &digest),
        ]))
        .unwrap();
        assert_eq!(ok.to_string(), format!("reg.example/app@{digest}"));
        let missing = image_of(&labels(&[(CRI_IMAGE_REF, "reg.example/app:1")])).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "no containerd.io/snapshot/cri.manifest-digest label: containerd passes the image \
             to snapshotters with disable_snapshot_annotations = false (CRI local pull), or on \
             2.1 with enable_remote_snapshot_annotations = \"true\" in \
             [proxy_plugins.rdpull.exports] (transfer service)"
        );
        let bad = image_of(&labels(&[
            (CRI_IMAGE_REF, "reg.example/app:1"),
            (CRI_MANIFEST_DIGEST, "sha256:short"),
        ]))
        .unwrap_err();
        assert!(matches!(bad, Fallback::BadLabel { .. }), "{bad:?}");
        // The parse error is kept as the cause, not flattened into the text.
        let cause = std::error::Error::source(&bad)
            .expect("a cause")
            .to_string();
        assert_eq!(
            bad.to_string(),
            format!("containerd.io/snapshot/cri.manifest-digest: {cause}")
        );
    }
}
