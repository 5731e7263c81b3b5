//! Crash points: a pull killed with SIGKILL at many moments spread over the whole pull
//! (downloads, unpacking, commits, metadata writes). After each kill the store opens,
//! every committed snapshot's parents are committed, each committed layer's tree equals
//! a clean pull's, and a rerun completes without fetching a committed layer again.
//!
//! `RDPULL_CRASH_POINTS` sets the number of kill moments (default 12, for CI);
//! `scripts/crash-points` runs 60.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use super::*;

/// Committed snapshots by name: (parent, the tree of its directory).
fn committed_trees(root: &Path) -> BTreeMap<String, (Option<String>, Vec<String>)> {
    let meta = std::fs::read(root.join("metadata.json")).unwrap_or_default();
    if meta.is_empty() {
        return BTreeMap::new();
    }
    let v: serde_json::Value = serde_json::from_slice(&meta).expect("metadata parses");
    let mut out = BTreeMap::new();
    for (key, info) in v["snapshots"].as_object().unwrap() {
        if info["kind"] != "committed" {
            continue;
        }
        let parent = info["parent"].as_str().map(str::to_string);
        let dir = root
            .join("snapshots")
            .join(info["id"].to_string())
            .join("fs");
        out.insert(key.clone(), (parent, listing(&dir)));
    }
    out
}

/// Layer `i`: 1500 small files and one of 1 MB, so that a pull spends time in every
/// stage.
fn layer(i: usize) -> Vec<u8> {
    let mut t = Tar::default();
    for f in 0..1500 {
        t.file(
            &format!("l{i}/d{}/f{f}", f % 30),
            format!("{i}-{f}").as_bytes(),
        );
    }
    t.file(
        &format!("l{i}/big"),
        &rdpull_testkit::noise(1 << 20, i as u64),
    );
    t.finish()
}

#[test]
fn sigkill_at_many_points_leaves_a_consistent_store_and_a_rerun_fetches_only_the_rest() {
    skip_unless_root!();
    let points: u32 = std::env::var("RDPULL_CRASH_POINTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(12);
    let reg = FakeRegistry::start();
    let p = reg.push("app", "v1", &(0..4).map(layer).collect::<Vec<_>>());
    let blob_hits = |i: usize| reg.hits(&FakeRegistry::blob_path("app", &p.layer_digests[i]));

    let clean = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    ok(pull(&reg, clean.path(), "app:v1"));
    let duration = t0.elapsed();
    let want = committed_trees(clean.path());
    assert_eq!(want.len(), 4);
    // ChainID → layer index, from the clean pull's parent links.
    let mut order: Vec<String> = Vec::new();
    while order.len() < want.len() {
        let parent = order.last().cloned();
        let next = want.iter().find(|(_, (p, _))| *p == parent).unwrap().0;
        order.push(next.clone());
    }

    let image = format!("{}/app:v1", reg.addr);
    for k in 0..points {
        // Spread over the clean pull's duration, and a little beyond it.
        let at = duration.mul_f64(1.1 * f64::from(k) / f64::from(points.max(1)));
        let root = tempfile::tempdir().unwrap();
        let mut child = common::spawn(root.path(), &["--plain-http", "pull", &image]);
        std::thread::sleep(at);
        let _ = child.kill();
        child.wait().unwrap();

        let got = committed_trees(root.path());
        let active = snapshots(root.path()).1.len();
        eprintln!("kill at {at:?}: {} committed, {active} active", got.len());
        for (name, (parent, tree)) in &got {
            if let Some(parent) = parent {
                assert!(
                    got.contains_key(parent),
                    "kill at {at:?}: {name}'s parent {parent} is not committed"
                );
            }
            assert_eq!(
                tree, &want[name].1,
                "kill at {at:?}: layer {name} differs from a clean pull's"
            );
        }
        let before: Vec<usize> = (0..4).map(blob_hits).collect();
        ok(pull(&reg, root.path(), "app:v1"));
        for (i, name) in order.iter().enumerate() {
            if got.contains_key(name) {
                assert_eq!(
                    blob_hits(i),
                    before[i],
                    "kill at {at:?}: committed layer {i} fetched again"
                );
            }
        }
        assert_eq!(
            committed_trees(root.path()),
            want,
            "kill at {at:?}: the rerun's store"
        );
        assert_clean(root.path());
    }
}
