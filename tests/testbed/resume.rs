//! A pull killed in the middle of the testbed's big image resumes and ends equal to a
//! clean pull.

use super::*;

/// kill -9 in the middle of a pull of the testbed's big image (2.3 GB, 6 layers), then
/// the same command again: it completes, fetches no layer that was committed, and the
/// result equals a clean pull. Needs `make-images big` (a benchmark image, not built for
/// CI): run with `cargo test --test testbed -- --ignored`.
#[test]
#[ignore = "needs the big testbed image: make-images big"]
fn killed_big_pull_resumes_and_equals_a_clean_pull() {
    skip_unless_root!();
    setup();
    let st = Command::new("bash")
        .arg(testbed().join("make-images"))
        .arg("big")
        .status()
        .unwrap();
    assert!(st.success());
    let image = format!("{REG}/big:latest");
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    let log = testbed_dir().join("registry/http.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rdpull"))
        .args([
            "--root",
            root.to_str().unwrap(),
            "--parallel",
            "2",
            "pull",
            &image,
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while snapshots(&root).0.is_empty() {
        assert!(t0.elapsed().as_secs() < 120, "no layer committed");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the pull ended before it could be killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (committed, _) = snapshots(&root);
    assert!(
        committed.len() < 6,
        "everything was committed before the kill"
    );
    // Which layer blobs were committed: from the store's metadata labels.
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("metadata.json")).unwrap()).unwrap();
    let done: Vec<String> = meta["snapshots"]
        .as_object()
        .unwrap()
        .values()
        .filter(|i| i["kind"] == "committed")
        .map(|i| {
            i["labels"]["rdpull.io/layer.digest"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let from = log_since(&log, 0).len();
    let dir = t.path().join("rootfs");
    ok(rdpull(
        &root,
        // The rerun on single streams, the clean pull chunked: chunking must not change a byte.
        &[
            "--parallel",
            "16",
            "--chunk-window",
            "1",
            "unpack",
            &image,
            dir.to_str().unwrap(),
        ],
    ));
    for d in &done {
        let refetched = log_since(&log, from)
            .iter()
            .filter(|l| l.contains(&format!("GET /v2/big/blobs/{d}")))
            .count();
        assert_eq!(refetched, 0, "committed layer {d} fetched again");
    }
    let clean = t.path().join("clean");
    let from = log_since(&log, 0).len();
    ok(rdpull(
        &t.path().join("store2"),
        &[
            "--parallel",
            "16",
            "unpack",
            &image,
            clean.to_str().unwrap(),
        ],
    ));
    // The largest layer (244 MB) came over several connections.
    let largest = {
        let o = Command::new("python3")
            .arg(testbed().join("regtool.py"))
            .args(["layers", &image])
            .output()
            .unwrap();
        let text = String::from_utf8(o.stdout).unwrap();
        let mut layers: Vec<(u64, String)> = text
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[2].parse().unwrap(), f[0].to_string())
            })
            .collect();
        layers.sort();
        layers.pop().unwrap().1
    };
    let gets = log_since(&log, from)
        .iter()
        .filter(|l| l.contains(&format!("\"GET /v2/big/blobs/{largest}")))
        .count();
    assert!(gets >= 8, "largest layer fetched in {gets} request(s)");
    assert_same(
        &tree_manifest(&dir),
        &tree_manifest(&clean),
        "resumed vs clean pull of big:latest",
    );
}
