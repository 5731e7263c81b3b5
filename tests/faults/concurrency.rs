//! Several rdpull processes on one root: overlapping pulls all succeed with one committed
//! snapshot per layer, and a prune that runs during a pull waits for it.

use std::time::{Duration, Instant};

use super::*;
use crate::common::spawn_capturing;
use rdpull_testkit::registry::Fault;

/// Layer `name`: one file of 300 kB of noise, so that pulls overlap in time.
fn layer(name: &str) -> Vec<u8> {
    let seed = name.bytes().fold(7u64, |h, b| h * 31 + b as u64);
    one_file_layer(name, &rdpull_testkit::noise(300_000, seed))
}

#[test]
fn four_processes_pulling_overlapping_images_into_one_root_all_succeed() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let (a, b, c, d, e) = (layer("a"), layer("b"), layer("c"), layer("d"), layer("e"));
    let images: [(&str, Vec<Vec<u8>>); 4] = [
        ("v1", vec![a.clone(), b.clone()]),
        ("v2", vec![a.clone(), b.clone(), c.clone()]),
        ("v3", vec![a.clone(), d]),
        ("v4", vec![a, b, c, e]),
    ];
    for (tag, tars) in &images {
        reg.push("app", tag, tars);
    }
    let root = tempfile::tempdir().unwrap();
    let children: Vec<_> = images
        .iter()
        .map(|(tag, _)| {
            let image = format!("{}/app:{tag}", reg.addr);
            spawn_capturing(root.path(), &["--plain-http", "-q", "pull", &image])
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // One committed snapshot per distinct chain (a; a,b; a,b,c; a,d; a,b,c,e), and no
    // directory or active snapshot left by a raced duplicate.
    let (committed, active) = snapshots(root.path());
    assert_eq!((committed.len(), active.len()), (5, 0), "{committed:?}");
    assert_clean(root.path());
    let listed = stdout(&ok(rdpull(root.path(), &["images", "--format", "json"])));
    assert_eq!(listed.lines().count(), 4, "{listed}");
    let dir = root.path().join("rootfs");
    unpack(&reg, root.path(), "app:v4", &dir);
    let names: Vec<String> = listing(&dir)
        .iter()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(names, ["/a", "/b", "/c", "/e"]);
}

#[test]
fn prune_during_a_pull_waits_and_removes_nothing_it_uses() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let p = reg.push("app", "v1", &[layer("a"), layer("b")]);
    // Layer 2 answers after 2 s: the pull holds its lease that long at least.
    let slow = FakeRegistry::blob_path("app", &p.layer_digests[1]);
    reg.faults(&slow, vec![Fault::Delay(Duration::from_secs(2))]);
    let root = tempfile::tempdir().unwrap();
    let image = format!("{}/app:v1", reg.addr);
    let t0 = Instant::now();
    let pulling = spawn_capturing(root.path(), &["--plain-http", "-q", "pull", &image]);
    common::wait_until("layer 1 committed", 30, || {
        snapshots(root.path()).0.len() == 1
    });
    let pruned = rdpull(root.path(), &["prune"]);
    let prune_done = t0.elapsed();
    let out = pulling.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        prune_done >= Duration::from_secs(2),
        "prune ended after {prune_done:?}, before the pull could"
    );
    assert_eq!(stdout(&ok(pruned)), "Total reclaimed space: 0B\n");
    assert_eq!(snapshots(root.path()).0.len(), 2);
    let dir = root.path().join("rootfs");
    unpack(&reg, root.path(), "app:v1", &dir);
    assert_eq!(listing(&dir).len(), 2);
}
