//! rdpull against an in-process registry that misbehaves: every bad input must fail the
//! pull with one clear line and exit 1, leave nothing half-committed, and keep what was
//! committed usable. Needs root (unpacking sets owners and makes devices).

mod common;

use common::{fails, ok, rdpull, snapshot_dirs, snapshots, stdout};
use rdpull_testkit::registry::{
    gzip, one_file_layer, sha256, FakeRegistry, Pushed, Reply, LAYER_GZIP, OCI_MANIFEST,
};
use rdpull_testkit::{listing, Tar};

fn pull(reg: &FakeRegistry, root: &std::path::Path, image: &str) -> std::process::Output {
    rdpull(
        root,
        &["--plain-http", "pull", &format!("{}/{image}", reg.addr)],
    )
}

/// `rdpull unpack` of `image` (on `reg`) into `dir`, with the store at `root`.
fn unpack(reg: &FakeRegistry, root: &std::path::Path, image: &str, dir: &std::path::Path) {
    ok(rdpull(
        root,
        &[
            "unpack",
            &format!("{}/{image}", reg.addr),
            dir.to_str().unwrap(),
        ],
    ));
}

/// Make layer `i` of `app` send half its blob, then hang. Returns the blob's path.
fn stall_halfway(reg: &FakeRegistry, p: &Pushed, i: usize) -> String {
    let path = FakeRegistry::blob_path("app", &p.layer_digests[i]);
    reg.set(
        &path,
        Reply::Stall {
            body: p.blobs[i].clone(),
            send: p.blobs[i].len() / 2,
        },
    );
    path
}

/// After a failed pull: no active snapshot and no directory beyond the committed ones.
fn assert_clean(root: &std::path::Path) {
    let (committed, active) = snapshots(root);
    assert!(active.is_empty(), "active snapshots left: {active:?}");
    assert_eq!(
        snapshot_dirs(root),
        committed.len(),
        "orphan snapshot directories"
    );
}

#[test]
fn pulls_and_a_second_pull_fetches_no_layer() {
    let reg = FakeRegistry::start();
    let tars = vec![one_file_layer("a", b"1"), one_file_layer("b", b"2")];
    let p = reg.push("app", "v1", &tars);
    let root = tempfile::tempdir().unwrap();
    let out = stdout(&ok(pull(&reg, root.path(), "app:v1")));
    assert!(
        out.contains(&format!("Digest: {}", p.manifest_digest)),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "Status: Downloaded newer image for {}/app:v1",
            reg.addr
        )),
        "{out}"
    );
    assert_eq!(out.matches(": Pull complete").count(), 2, "{out}");
    for d in &p.layer_digests {
        assert_eq!(reg.hits(&FakeRegistry::blob_path("app", d)), 1);
    }
    let out = stdout(&ok(pull(&reg, root.path(), "app:v1")));
    assert_eq!(out.matches(": Already exists").count(), 2, "{out}");
    assert!(
        out.contains(&format!(
            "Status: Image is up to date for {}/app:v1",
            reg.addr
        )),
        "{out}"
    );
    for d in &p.layer_digests {
        assert_eq!(
            reg.hits(&FakeRegistry::blob_path("app", d)),
            1,
            "layer fetched again"
        );
    }
    // By digest too, and unpack from the store without any new request.
    let by_digest = format!("{}/app@{}", reg.addr, p.manifest_digest);
    ok(rdpull(root.path(), &["--plain-http", "pull", &by_digest]));
    let dir = root.path().join("rootfs");
    ok(rdpull(
        root.path(),
        &["unpack", &by_digest, dir.to_str().unwrap()],
    ));
    assert_eq!(listing(&dir), vec!["/a f 0644 0:0 1", "/b f 0644 0:0 2"]);
    for d in &p.layer_digests {
        assert_eq!(reg.hits(&FakeRegistry::blob_path("app", d)), 1);
    }
    let images = stdout(&ok(rdpull(root.path(), &["images"])));
    assert!(
        images.contains(&format!("{}/app:v1", reg.addr)) && images.contains(&p.manifest_digest),
        "{images}"
    );
}

#[test]
fn wrong_blob_digest() {
    let reg = FakeRegistry::start();
    let p = reg.push("app", "v1", &[one_file_layer("a", b"1")]);
    // Same size, other bytes.
    let mut bad = p.blobs[0].clone();
    let n = bad.len();
    bad[n - 5] ^= 0xff;
    reg.set(
        &FakeRegistry::blob_path("app", &p.layer_digests[0]),
        Reply::Body {
            content_type: "application/octet-stream".into(),
            body: bad.clone().into(),
        },
    );
    let root = tempfile::tempdir().unwrap();
    let e = fails(pull(&reg, root.path(), "app:v1"));
    assert_eq!(
        e,
        format!(
            "rdpull: error: layer 1/1 {d}: compressed blob: digest mismatch: expected {d}, got {}",
            sha256(&bad),
            d = p.layer_digests[0]
        )
    );
    assert_clean(root.path());
    assert!(snapshots(root.path()).0.is_empty());
}

#[test]
fn wrong_diff_id() {
    let reg = FakeRegistry::start();
    let tar = one_file_layer("a", b"1");
    let p = reg.push("app", "v1", std::slice::from_ref(&tar));
    // A config whose diff_id is not the layer's.
    let wrong = sha256(b"not the tar");
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [wrong]},
    }))
    .unwrap();
    let cd = reg.put_blob("app", &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": LAYER_GZIP, "digest": p.layer_digests[0], "size": p.blobs[0].len()}],
    }))
    .unwrap();
    reg.put_manifest("app", "v2", OCI_MANIFEST, &manifest);
    let root = tempfile::tempdir().unwrap();
    let e = fails(pull(&reg, root.path(), "app:v2"));
    assert_eq!(
        e,
        format!(
            "rdpull: error: layer 1/1 {}: uncompressed content (DiffID): digest mismatch: expected {wrong}, got {}",
            p.layer_digests[0],
            sha256(&tar)
        )
    );
    assert_clean(root.path());
}

#[test]
fn manifest_by_digest_must_hash_to_that_digest() {
    let reg = FakeRegistry::start();
    let p = reg.push("app", "v1", &[one_file_layer("a", b"1")]);
    let other = reg.push("app", "v2", &[one_file_layer("b", b"2")]);
    // The registry answers the digest of v1 with v2's manifest.
    reg.put_manifest("app", &p.manifest_digest, OCI_MANIFEST, &other.manifest);
    let root = tempfile::tempdir().unwrap();
    let e = fails(pull(
        &reg,
        root.path(),
        &format!("app@{}", p.manifest_digest),
    ));
    assert_eq!(
        e,
        format!(
            "rdpull: error: manifest {a}/app@{d}: digest mismatch: expected {d}, got {}",
            other.manifest_digest,
            a = reg.addr,
            d = p.manifest_digest
        )
    );
}

#[test]
fn schema1_is_refused() {
    let reg = FakeRegistry::start();
    let body = br#"{"schemaVersion":1,"name":"app","tag":"old","architecture":"amd64","fsLayers":[],"history":[],"signatures":[]}"#;
    reg.put_manifest(
        "app",
        "old",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        body,
    );
    let root = tempfile::tempdir().unwrap();
    let e = fails(pull(&reg, root.path(), "app:old"));
    assert_eq!(
        e,
        format!(
            "rdpull: error: manifest {}/app:old is Docker schema 1 (application/vnd.docker.distribution.manifest.v1+prettyjws), which is deprecated and not supported: push the image again with a current client",
            reg.addr
        )
    );
}

#[test]
fn oversized_manifest_is_refused_before_it_is_read() {
    let reg = FakeRegistry::start();
    let mut big = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{"x":""#.to_vec();
    big.resize(5 << 20, b'x');
    big.extend_from_slice(b"\"}}");
    reg.put_manifest("app", "huge", OCI_MANIFEST, &big);
    let root = tempfile::tempdir().unwrap();
    let e = fails(pull(&reg, root.path(), "app:huge"));
    assert_eq!(
        e,
        format!(
            "rdpull: error: manifest {}/app:huge: larger than the 4194304-byte limit ({} bytes)",
            reg.addr,
            big.len()
        )
    );
}

#[test]
fn truncated_gzip_layer() {
    let reg = FakeRegistry::start();
    let tar = Tar::default().file("big", &vec![9u8; 200_000]).finish();
    let full = gzip(&tar);
    let cut = full[..full.len() / 2].to_vec();
    // A layer whose blob really is a truncated gzip (digest and size match the bytes).
    let d = reg.put_blob("app", &cut);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha256(&tar)]},
    }))
    .unwrap();
    let cd = reg.put_blob("app", &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": LAYER_GZIP, "digest": d, "size": cut.len()}],
    }))
    .unwrap();
    reg.put_manifest("app", "cut", OCI_MANIFEST, &manifest);
    let root = tempfile::tempdir().unwrap();
    let e = fails(pull(&reg, root.path(), "app:cut"));
    assert!(
        e.starts_with(&format!("rdpull: error: layer 1/1 {d}: gzip data: ")),
        "{e}"
    );
    assert_clean(root.path());
}

#[test]
fn blob_missing_and_server_errors() {
    let reg = FakeRegistry::start();
    let p = reg.push("app", "v1", &[one_file_layer("a", b"1")]);
    let path = FakeRegistry::blob_path("app", &p.layer_digests[0]);
    reg.set(&path, Reply::Status(500));
    let root = tempfile::tempdir().unwrap();
    let e = fails(pull(&reg, root.path(), "app:v1"));
    assert_eq!(
        e,
        format!(
            "rdpull: error: layer 1/1 {d}: gave up after 5 attempts: blob {d}: http://{a}/v2/app/blobs/{d}: HTTP 500 (UNKNOWN injected failure)",
            d = p.layer_digests[0],
            a = reg.addr
        )
    );
    assert_clean(root.path());
    let e = fails(pull(&reg, root.path(), "app:nope"));
    assert!(e.contains("manifest") && e.contains("HTTP 404"), "{e}");
    let e = fails(rdpull(root.path(), &["pull", "Not/A/Valid:ref"]));
    assert_eq!(
        e,
        "rdpull: error: invalid reference \"Not/A/Valid:ref\": repository name must be lowercase"
    );
}

/// A failure in the top layer: the lower layers that were committed stay, and the next
/// pull fetches only what is missing.
#[test]
fn failure_keeps_committed_layers_and_the_retry_fetches_only_the_rest() {
    let reg = FakeRegistry::start();
    let tars: Vec<Vec<u8>> = (0..3)
        .map(|i| one_file_layer(&format!("f{i}"), &[b'0' + i as u8]))
        .collect();
    let p = reg.push("app", "v1", &tars);
    let top = FakeRegistry::blob_path("app", &p.layer_digests[2]);
    reg.set(&top, Reply::Status(503));
    let root = tempfile::tempdir().unwrap();
    fails(pull(&reg, root.path(), "app:v1"));
    assert_clean(root.path());
    let (committed, _) = snapshots(root.path());
    assert!(
        committed.len() <= 2,
        "the failed layer must not be committed: {committed:?}"
    );
    // Now the registry behaves.
    reg.set(
        &top,
        Reply::Body {
            content_type: "application/octet-stream".into(),
            body: p.blobs[2].clone().into(),
        },
    );
    let before: Vec<usize> = p
        .layer_digests
        .iter()
        .map(|d| reg.hits(&FakeRegistry::blob_path("app", d)))
        .collect();
    ok(pull(&reg, root.path(), "app:v1"));
    let after: Vec<usize> = p
        .layer_digests
        .iter()
        .map(|d| reg.hits(&FakeRegistry::blob_path("app", d)))
        .collect();
    assert_eq!(snapshots(root.path()).0.len(), 3);
    for i in 0..3 {
        // A layer committed by the failed pull is not fetched again.
        let was_committed = i < committed.len();
        assert_eq!(
            after[i] - before[i],
            usize::from(!was_committed),
            "layer {i}"
        );
    }
    let dir = root.path().join("rootfs");
    unpack(&reg, root.path(), "app:v1", &dir);
    assert_eq!(
        listing(&dir),
        vec!["/f0 f 0644 0:0 0", "/f1 f 0644 0:0 1", "/f2 f 0644 0:0 2"]
    );
}

/// kill -9 in the middle of a layer: nothing committed for it; the next run cleans up and
/// completes.
#[test]
fn killed_pull_leaves_nothing_committed_and_the_rerun_completes() {
    let reg = FakeRegistry::start();
    let tar = Tar::default()
        .file(
            "big",
            &(0..400_000u32)
                .flat_map(|i| i.to_le_bytes())
                .collect::<Vec<u8>>(),
        )
        .finish();
    let p = reg.push("app", "v1", std::slice::from_ref(&tar));
    let path = stall_halfway(&reg, &p, 0);
    let root = tempfile::tempdir().unwrap();
    let image = format!("{}/app:v1", reg.addr);
    let mut child = common::spawn(root.path(), &["--plain-http", "pull", &image]);
    // Wait until the download is under way (an active snapshot exists), then kill -9.
    common::wait_until("the pull to start", 30, || {
        !snapshots(root.path()).1.is_empty()
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    let (committed, active) = snapshots(root.path());
    assert!(committed.is_empty(), "{committed:?}");
    assert_eq!(
        active.len(),
        1,
        "the interrupted layer stays active, never committed"
    );
    reg.set(
        &path,
        Reply::Body {
            content_type: "application/octet-stream".into(),
            body: p.blobs[0].clone().into(),
        },
    );
    ok(pull(&reg, root.path(), "app:v1"));
    let (committed, active) = snapshots(root.path());
    assert_eq!((committed.len(), active.len()), (1, 0));
    assert_eq!(
        snapshot_dirs(root.path()),
        1,
        "the stale snapshot's files are gone"
    );
}

/// Every escape kind from a registry layer, with canaries beside the store root.
#[test]
fn hostile_layers_write_nothing_outside_the_root() {
    let reg = FakeRegistry::start();
    let mut t = Tar::default();
    t.file("ok.txt", b"ok");
    t.file("../escape-dotdot.txt", b"x");
    t.file("a/../../escape-mid.txt", b"x");
    t.file("/abs-escape.txt", b"x");
    t.symlink("sl-abs", "/");
    t.file("sl-abs/canary", b"overwritten");
    t.symlink("sl-rel", "../../../../../../..");
    t.file("sl-rel/canary", b"overwritten");
    t.symlink("chain1", "chain2")
        .symlink("chain2", "../../chain3")
        .symlink("chain3", "/..");
    t.file("chain1/canary", b"overwritten");
    t.file("../.wh.canary", b"");
    t.file("a/../../.wh.escape-target", b"");
    reg.push("evil", "all", &[t.finish()]);
    let hl = Tar::default()
        .file("ok.txt", b"ok")
        .hardlink("hl", "../../../canary")
        .finish();
    let hp = reg.push("evil", "hardlink", &[hl]);

    let sandbox = tempfile::tempdir().unwrap();
    std::fs::write(sandbox.path().join("canary"), "canary").unwrap();
    let root = sandbox.path().join("store");
    let before = listing(sandbox.path());
    ok(pull(&reg, &root, "evil:all"));
    let dir = sandbox.path().join("rootfs");
    unpack(&reg, &root, "evil:all", &dir);
    let outside: Vec<String> = listing(sandbox.path())
        .into_iter()
        .filter(|l| !l.starts_with("/store") && !l.starts_with("/rootfs"))
        .collect();
    assert_eq!(outside, before);
    assert_eq!(
        listing(&dir),
        vec![
            "/abs-escape.txt f 0644 0:0 x",
            "/canary f 0644 0:0 overwritten",
            "/chain1 l 0777 0:0 chain2",
            "/chain2 l 0777 0:0 ../../chain3",
            "/chain3 l 0777 0:0 /..",
            "/escape-dotdot.txt f 0644 0:0 x",
            "/escape-mid.txt f 0644 0:0 x",
            "/ok.txt f 0644 0:0 ok",
            "/sl-abs l 0777 0:0 /",
            "/sl-rel l 0777 0:0 ../../../../../../..",
        ]
    );
    let e = fails(pull(&reg, &root, "evil:hardlink"));
    assert_eq!(
        e,
        format!(
            "rdpull: error: layer 1/1 {}: /hl: refused: hard link target /canary is not in this layer",
            hp.layer_digests[0]
        )
    );
    let outside: Vec<String> = listing(sandbox.path())
        .into_iter()
        .filter(|l| !l.starts_with("/store") && !l.starts_with("/rootfs"))
        .collect();
    assert_eq!(outside, before);
    assert_clean(&root);
}

/// One layer fails while another is stalled mid-body: the pull reports the failure at
/// once (it does not wait out the stall timeout), and removes both active snapshots only
/// after their unpackers have stopped.
#[test]
fn a_failed_layer_cancels_the_others() {
    let reg = FakeRegistry::start();
    let big = Tar::default().file("big", &vec![7u8; 3 << 20]).finish();
    let p = reg.push("app", "v1", &[big, one_file_layer("b", b"2")]);
    stall_halfway(&reg, &p, 0);
    reg.set(
        &FakeRegistry::blob_path("app", &p.layer_digests[1]),
        Reply::Status(500),
    );
    let root = tempfile::tempdir().unwrap();
    let t0 = std::time::Instant::now();
    let out = rdpull(
        root.path(),
        &[
            "--plain-http",
            "--stall-timeout",
            "120",
            "pull",
            &format!("{}/app:v1", reg.addr),
        ],
    );
    let e = fails(out);
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(60),
        "cancellation did not stop the stalled download"
    );
    assert!(
        e.starts_with(&format!(
            "rdpull: error: layer 2/2 {}: ",
            p.layer_digests[1]
        )),
        "{e}"
    );
    assert!(e.ends_with("HTTP 500 (UNKNOWN injected failure)"), "{e}");
    assert_clean(root.path());
    assert!(snapshots(root.path()).0.is_empty());
}

/// kill -9 with some layers committed and one mid-download: the rerun keeps the committed
/// layers (fetches none of them again) and completes the image.
#[test]
fn killed_pull_keeps_committed_layers() {
    let reg = FakeRegistry::start();
    let tars: Vec<Vec<u8>> = (0..3u8)
        .map(|i| {
            Tar::default()
                .file(&format!("f{i}"), &vec![i; 200_000 + i as usize])
                .finish()
        })
        .collect();
    let p = reg.push("app", "v1", &tars);
    let top = stall_halfway(&reg, &p, 2);
    let root = tempfile::tempdir().unwrap();
    let image = format!("{}/app:v1", reg.addr);
    let mut child = common::spawn(root.path(), &["--plain-http", "pull", &image]);
    common::wait_until("two layers committed", 30, || {
        snapshots(root.path()).0.len() >= 2
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let (committed, active) = snapshots(root.path());
    assert_eq!((committed.len(), active.len()), (2, 1));
    reg.set(
        &top,
        Reply::Body {
            content_type: "application/octet-stream".into(),
            body: p.blobs[2].clone().into(),
        },
    );
    let hits = |i: usize| reg.hits(&FakeRegistry::blob_path("app", &p.layer_digests[i]));
    let before = [hits(0), hits(1), hits(2)];
    ok(pull(&reg, root.path(), "app:v1"));
    assert_eq!(
        [
            hits(0) - before[0],
            hits(1) - before[1],
            hits(2) - before[2]
        ],
        [0, 0, 1]
    );
    assert_eq!(snapshots(root.path()).0.len(), 3);
    let dir = root.path().join("rootfs");
    unpack(&reg, root.path(), "app:v1", &dir);
    assert_eq!(
        listing(&dir),
        vec![
            "/f0 f 0644 0:0 <200000 bytes>",
            "/f1 f 0644 0:0 <200001 bytes>",
            "/f2 f 0644 0:0 <200002 bytes>"
        ]
    );
}
