//! The pipeline driven in-process, as `rdpull run` and the containerd proxy will drive it:
//! a pull through the library against the in-process registry, with a recording
//! [`Reporter`]. Needs root (unpacking sets owners); as non-root each test is skipped.
// A test is one scenario, steps and assertions in order; splitting it would hide it.
#![allow(clippy::too_many_lines)]

use std::sync::{Arc, Mutex};

use rdpull_fetch::{BlobDescriptor, ClientOptions, Platform, Reference};
use rdpull_pipeline::{
    pull, pull_if_missing, Ensured, LayerError, LayerState, PullError, PullOptions, Reporter,
};
use rdpull_snapshot::{flatten_image, Store};
use rdpull_testkit::registry::{one_file_layer, FakeRegistry, Reply, LAYER_GZIP};
use rdpull_testkit::{listing, skip_unless_root};
use rdpull_unpack::UnpackError;
use tokio_util::sync::CancellationToken;

/// Every event, in the order the pull reported it.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<String>>,
}

impl Reporter for Recorder {
    fn started(&self, reference: &Reference, layers: &[BlobDescriptor]) {
        let sizes: Vec<u64> = layers.iter().map(|l| l.size).collect();
        self.push(format!("started {reference} {sizes:?}"));
    }

    fn layer(&self, index: usize, state: LayerState) {
        self.push(format!("{index} {}", state.text()));
    }

    fn bytes(&self, index: usize, received: u64) {
        self.push(format!("{index} bytes {received}"));
    }
}

impl Recorder {
    fn push(&self, e: String) {
        self.events.lock().unwrap().push(e);
    }

    /// The events of layer `index`, bytes left out (their number depends on the network).
    fn states_of(&self, index: usize) -> Vec<String> {
        let prefix = format!("{index} ");
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.starts_with(&prefix) && !e.contains(" bytes "))
            .map(|e| e[prefix.len()..].to_string())
            .collect()
    }

    fn last_bytes(&self, index: usize) -> Option<u64> {
        let prefix = format!("{index} bytes ");
        let events = self.events.lock().unwrap();
        let last = events.iter().rev().find(|e| e.starts_with(&prefix))?;
        last[prefix.len()..].parse().ok()
    }
}

/// A fresh store, and the reference of `app:v1` on `reg`.
fn store_and_reference(reg: &FakeRegistry) -> (tempfile::TempDir, Arc<Store>, Reference) {
    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(root.path()).unwrap());
    let reference = format!("{}/app:v1", reg.addr).parse().unwrap();
    (root, store, reference)
}

fn options() -> PullOptions {
    PullOptions {
        parallel: 4,
        platform: Platform::host(),
        client: ClientOptions {
            plain_http: true,
            docker_config: Some("/nonexistent/rdpull-tests".into()),
            ..ClientOptions::default()
        },
        cancel: CancellationToken::new(),
        keep_blobs: false,
        resume_min_size: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_through_the_library_reports_every_step_and_commits_the_chain() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let tars = vec![one_file_layer("a", b"1"), one_file_layer("b", b"22")];
    let pushed = reg.push("app", "v1", &tars);
    let (root, store, reference) = store_and_reference(&reg);

    let recorder = Arc::new(Recorder::default());
    let outcome = pull(store.clone(), &reference, &options(), recorder.clone())
        .await
        .unwrap();
    assert_eq!(outcome.fetched_layers, 2);
    assert!(!outcome.up_to_date);
    assert_eq!(
        outcome.image.manifest_digest.to_string(),
        pushed.manifest_digest
    );
    let sizes: Vec<u64> = pushed.blobs.iter().map(|b| b.len() as u64).collect();
    assert_eq!(
        recorder.events.lock().unwrap()[0],
        format!("started {reference} {sizes:?}")
    );
    for (i, size) in sizes.iter().enumerate() {
        assert_eq!(
            recorder.states_of(i),
            [
                "Waiting",
                "Downloading",
                "Extracting",
                "Verifying Checksum",
                "Pull complete"
            ],
            "layer {i}"
        );
        assert_eq!(recorder.last_bytes(i), Some(*size), "layer {i}");
    }
    // The chain is committed under its ChainIDs, parent before child, and nothing is
    // left active.
    let infos = store.list().unwrap();
    assert_eq!(infos.len(), 2, "{infos:?}");
    let top = store.stat(&outcome.image.chain[1].to_string()).unwrap();
    assert_eq!(top.parent, Some(outcome.image.chain[0].to_string()));
    assert!(infos
        .iter()
        .all(|i| i.kind == rdpull_snapshot::Kind::Committed));

    // Again: nothing fetched, every layer already there, up to date.
    let again = Arc::new(Recorder::default());
    let outcome = pull(store.clone(), &reference, &options(), again.clone())
        .await
        .unwrap();
    assert_eq!((outcome.fetched_layers, outcome.up_to_date), (0, true));
    assert_eq!(again.states_of(0), ["Already exists"]);
    assert_eq!(again.states_of(1), ["Already exists"]);
    for d in &pushed.layer_digests {
        assert_eq!(reg.hits(&FakeRegistry::blob_path("app", d)), 1);
    }

    // pull_if_missing finds it; flatten_image flattens it.
    let ensured = pull_if_missing(store.clone(), &reference, &options(), again)
        .await
        .unwrap();
    assert!(matches!(ensured, Ensured::Present(_)));
    let dir = root.path().join("rootfs");
    let stats = flatten_image(&store, ensured.image(), &dir, &|| false).unwrap();
    assert_eq!(stats.entries, 2);
    assert_eq!(listing(&dir), ["/a f 0644 0:0 1", "/b f 0644 0:0 22"]);
}

/// `keep_blobs`: each downloaded blob is kept, verified, in the content store; layers
/// unpack again from there with no request; a kept blob gone bad is fetched again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_blobs_are_the_blobs_and_layers_unpack_again_from_them() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let tars = vec![one_file_layer("a", b"1"), one_file_layer("b", b"22")];
    let pushed = reg.push("app", "v1", &tars);
    let (root, store, reference) = store_and_reference(&reg);
    let keeping = PullOptions {
        keep_blobs: true,
        ..options()
    };
    let none = Arc::new(rdpull_pipeline::NoReport);
    pull(store.clone(), &reference, &keeping, none.clone())
        .await
        .unwrap();
    let kept = |d: &str| root.path().join("content/blobs/sha256").join(&d[7..]);
    for (d, blob) in pushed.layer_digests.iter().zip(&pushed.blobs) {
        let bytes = std::fs::read(kept(d)).unwrap();
        assert_eq!(rdpull_testkit::registry::sha256(&bytes), *d);
        assert_eq!(&bytes, blob);
    }
    assert_eq!(
        std::fs::read_dir(root.path().join("ingest"))
            .unwrap()
            .count(),
        0
    );

    // The layers' snapshots go (the kept blobs stay); a bad byte in one kept blob.
    let forget_layers = |store: &Store| {
        let image = store.images().unwrap().remove(0);
        for chain_id in image.chain.iter().rev() {
            store.remove(&chain_id.to_string()).unwrap();
        }
    };
    forget_layers(&store);
    let mut bad = std::fs::read(kept(&pushed.layer_digests[1])).unwrap();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(kept(&pushed.layer_digests[1]), bad).unwrap();
    let outcome = pull(store.clone(), &reference, &keeping, none.clone())
        .await
        .unwrap();
    assert_eq!(outcome.fetched_layers, 2);
    let hits = |i: usize| reg.hits(&FakeRegistry::blob_path("app", &pushed.layer_digests[i]));
    assert_eq!(
        (hits(0), hits(1)),
        (1, 2),
        "only the bad kept blob is fetched"
    );
    assert_eq!(
        std::fs::read(kept(&pushed.layer_digests[1])).unwrap(),
        pushed.blobs[1]
    );
    let dir = root.path().join("rootfs");
    flatten_image(&store, &outcome.image, &dir, &|| false).unwrap();
    assert_eq!(listing(&dir), ["/a f 0644 0:0 1", "/b f 0644 0:0 22"]);

    // Without keep_blobs, kept blobs are still used, and stay.
    forget_layers(&store);
    pull(store.clone(), &reference, &options(), none)
        .await
        .unwrap();
    assert_eq!((hits(0), hits(1)), (1, 2));
    assert!(kept(&pushed.layer_digests[0]).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_layer_is_a_typed_error_and_leaves_no_active_snapshot() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let tars = vec![one_file_layer("a", b"1"), one_file_layer("b", b"2")];
    let pushed = reg.push("app", "v1", &tars);
    // Layer 2's blob is replaced by other bytes of the same length.
    let mut wrong = pushed.blobs[1].clone();
    let last = wrong.len() - 1;
    wrong[last] ^= 0xff;
    reg.set(
        &FakeRegistry::blob_path("app", &pushed.layer_digests[1]),
        Reply::Body {
            content_type: LAYER_GZIP.into(),
            body: wrong.into(),
        },
    );
    let (_root, store, reference) = store_and_reference(&reg);
    let err = pull(
        store.clone(),
        &reference,
        &options(),
        Arc::new(Recorder::default()),
    )
    .await
    .unwrap_err();
    match &err {
        PullError::Layer {
            index: 2,
            count: 2,
            digest,
            source: LayerError::Unpack(UnpackError::Blob(_)),
        } => assert_eq!(digest.to_string(), pushed.layer_digests[1]),
        other => panic!("{other:?}"),
    }
    assert!(
        store
            .list()
            .unwrap()
            .iter()
            .all(|i| i.kind == rdpull_snapshot::Kind::Committed),
        "active snapshot left behind"
    );
    assert!(store.image(&reference.to_string()).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_pull_removes_its_active_snapshots_and_keeps_committed_layers() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let tars = vec![one_file_layer("a", b"1"), one_file_layer("b", b"2")];
    let pushed = reg.push("app", "v1", &tars);
    // Layer 2 sends half its blob, then hangs.
    reg.set(
        &FakeRegistry::blob_path("app", &pushed.layer_digests[1]),
        Reply::Stall {
            body: pushed.blobs[1].clone(),
            send: pushed.blobs[1].len() / 2,
        },
    );
    let (root, store, reference) = store_and_reference(&reg);
    let opts = options();
    let cancel = opts.cancel.clone();
    let recorder = Arc::new(Recorder::default());
    let pulling = tokio::spawn({
        let (store, recorder) = (store.clone(), recorder.clone());
        async move { pull(store, &reference, &opts, recorder).await }
    });
    // Cancel once layer 1 has committed and layer 2 is downloading.
    let t0 = std::time::Instant::now();
    while !recorder.states_of(0).iter().any(|s| s == "Pull complete") {
        assert!(t0.elapsed().as_secs() < 30, "layer 1 never committed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    cancel.cancel();
    let err = tokio::time::timeout(std::time::Duration::from_secs(10), pulling)
        .await
        .expect("a cancelled pull must end promptly")
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, PullError::Interrupted), "{err:?}");
    let infos = store.list().unwrap();
    assert_eq!(infos.len(), 1, "{infos:?}");
    assert_eq!(infos[0].kind, rdpull_snapshot::Kind::Committed);
    assert_eq!(
        std::fs::read_dir(root.path().join("snapshots"))
            .unwrap()
            .count(),
        1,
        "the active snapshot's directory is left"
    );
}
