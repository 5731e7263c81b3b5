//! Byte-exact resume: the compressed bytes a killed pull received are kept, and the next
//! pull replays them and fetches only the rest, with `Range`; kept bytes that do not fit
//! the blob are dropped with a warning and the layer fetched again.

use std::path::{Path, PathBuf};

use super::*;

/// A 3 MiB incompressible layer over a small base; the big blob's path on the registry.
fn image(reg: &FakeRegistry) -> (Pushed, String) {
    let big = Tar::default()
        .file("big", &rdpull_testkit::noise(3 << 20, 11))
        .finish();
    let p = reg.push("app", "v1", &[one_file_layer("base", b"b"), big]);
    let path = FakeRegistry::blob_path("app", &p.layer_digests[1]);
    (p, path)
}

/// Keep the received bytes of every blob (by default only of large ones).
const RESUME_ALL: &str = "--resume-min-size";

fn pull_resuming(reg: &FakeRegistry, root: &Path) -> std::process::Output {
    let image = format!("{}/app:v1", reg.addr);
    rdpull(root, &[RESUME_ALL, "0", "--plain-http", "pull", &image])
}

fn ingest_file(root: &Path, digest: &str) -> PathBuf {
    root.join("ingest").join(digest.replacen(':', "-", 1))
}

/// Start a pull whose big blob stalls after `at` bytes; kill -9 it once those bytes are
/// kept on disk and the small layer is in (its kept bytes gone), so that the big blob's
/// are all the store keeps, however the two layers' tasks were scheduled.
fn kill_after_keeping(reg: &FakeRegistry, root: &Path, path: &str, kept: &Path, at: usize) {
    reg.faults(path, vec![Fault::Stall(at)]);
    let image = format!("{}/app:v1", reg.addr);
    let mut child = common::spawn(root, &[RESUME_ALL, "0", "--plain-http", "pull", &image]);
    common::wait_until("the first bytes to be kept, and only those", 30, || {
        let only_big = std::fs::read_dir(root.join("ingest")).is_ok_and(|d| d.count() == 1);
        only_big && std::fs::metadata(kept).is_ok_and(|m| m.len() == at as u64)
    });
    child.kill().unwrap();
    child.wait().unwrap();
}

fn ranges(reg: &FakeRegistry, path: &str) -> Vec<Option<String>> {
    reg.requests(path)
        .into_iter()
        .map(|r| r.headers.get("range").cloned())
        .collect()
}

fn assert_image(reg: &FakeRegistry, root: &Path) {
    let dir = root.join("rootfs");
    unpack(reg, root, "app:v1", &dir);
    assert_eq!(
        listing(&dir),
        [
            "/base f 0644 0:0 b".to_string(),
            format!("/big f 0644 0:0 <{} bytes>", 3 << 20)
        ]
    );
}

#[test]
fn a_killed_pull_continues_at_the_kept_byte_and_fetches_the_layer_once() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let (p, path) = image(&reg);
    let root = tempfile::tempdir().unwrap();
    let kept = ingest_file(root.path(), &p.layer_digests[1]);
    let at = (1 << 20) + 12_345;
    kill_after_keeping(&reg, root.path(), &path, &kept, at);
    // `inspect` with no image shows what the store keeps of the interrupted pull.
    let store: serde_json::Value =
        serde_json::from_str(&stdout(&ok(rdpull(root.path(), &["inspect"])))).unwrap();
    let partial = &store["partial_downloads"];
    assert_eq!(partial.as_array().unwrap().len(), 1, "{store}");
    assert_eq!(partial[0]["digest"], p.layer_digests[1].as_str());
    assert_eq!(partial[0]["bytes"], std::fs::metadata(&kept).unwrap().len());
    assert_eq!(partial[0]["in_use"], false);
    assert_eq!(store["kept_blobs"], serde_json::json!([]));

    ok(pull_resuming(&reg, root.path()));
    assert_eq!(ranges(&reg, &path), [None, Some(format!("bytes={at}-"))]);
    assert_eq!(
        reg.sent(&path),
        p.blobs[1].len(),
        "bytes sent in both pulls"
    );
    assert!(
        !kept.exists(),
        "the kept bytes are removed once the layer is in"
    );
    assert_clean(root.path());
    assert_image(&reg, root.path());
}

#[test]
fn kept_bytes_that_do_not_verify_are_dropped_and_the_layer_fetched_again() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let (p, path) = image(&reg);
    let root = tempfile::tempdir().unwrap();
    let kept = ingest_file(root.path(), &p.layer_digests[1]);
    let at = 1 << 20;
    kill_after_keeping(&reg, root.path(), &path, &kept, at);
    // One byte of the kept prefix goes bad on disk.
    let mut bytes = std::fs::read(&kept).unwrap();
    bytes[at / 2] ^= 0xff;
    std::fs::write(&kept, &bytes).unwrap();

    let out = ok(pull_resuming(&reg, root.path()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "layer 2/2: the {at} bytes kept from an earlier pull do not verify"
        )) && err.contains("fetching the layer again"),
        "{err}"
    );
    assert_eq!(
        ranges(&reg, &path),
        [None, Some(format!("bytes={at}-")), None]
    );
    // The bad byte shows only in the digest at the end: the rest came, then the whole.
    assert_eq!(reg.sent(&path), 2 * p.blobs[1].len());
    assert!(!kept.exists());
    assert_image(&reg, root.path());

    // More bytes kept than the blob has cannot be its prefix: dropped before any request.
    let reg = FakeRegistry::start();
    let (p, path) = image(&reg);
    let root = tempfile::tempdir().unwrap();
    let kept = ingest_file(root.path(), &p.layer_digests[1]);
    std::fs::create_dir_all(kept.parent().unwrap()).unwrap();
    std::fs::write(&kept, vec![0u8; p.blobs[1].len() + 1]).unwrap();
    let out = ok(pull_resuming(&reg, root.path()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: {} bytes kept for a blob of {}: discarded",
            kept.display(),
            p.blobs[1].len() + 1,
            p.blobs[1].len()
        )),
        "{err}"
    );
    assert_eq!(ranges(&reg, &path), [None]);
    assert_image(&reg, root.path());
}
