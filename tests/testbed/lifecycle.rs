//! The image lifecycle next to `pull`: `images` (table, `-q`, `--format json`),
//! `inspect`, `history`, `rmi` and `prune`, until a root holds nothing again.

use super::*;
use crate::common::snapshot_dirs;

/// Every line of `images --format json`, parsed.
fn listed(root: &Path) -> Vec<serde_json::Value> {
    let out = stdout(&ok(rdpull(root, &["images", "--format", "json"])));
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn blobs(root: &Path) -> usize {
    std::fs::read_dir(root.join("content/blobs/sha256")).map_or(0, |d| d.count())
}

#[test]
fn images_inspect_history_rmi_and_prune_reclaim_everything() {
    skip_unless_root!();
    setup();
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let (debian, multi) = (
        format!("{REG}/debian:bookworm"),
        format!("{REG}/multi:latest"),
    );
    for image in [&debian, &multi] {
        ok(rdpull(root, &["--plain-http", "-q", "pull", image]));
    }
    let list = listed(root);
    let names: Vec<&str> = list.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, [debian.as_str(), multi.as_str()]);
    let digests: Vec<String> = list
        .iter()
        .map(|i| i["manifest_digest"].as_str().unwrap().to_string())
        .collect();
    let quiet = stdout(&ok(rdpull(root, &["images", "-q"])));
    assert_eq!(quiet.lines().collect::<Vec<_>>(), digests);
    let table = stdout(&ok(rdpull(root, &["images"])));
    assert!(table.contains(" 51.1MB "), "human sizes: {table}");

    // inspect: the record, the config, and per layer its committed snapshot.
    let out = stdout(&ok(rdpull(root, &["inspect", &multi])));
    let inspected: serde_json::Value = serde_json::from_str(&out).unwrap();
    let m = &inspected[0];
    assert_eq!(m["manifest_digest"], list[1]["manifest_digest"]);
    assert_eq!(m["platform"], "linux/amd64");
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 7);
    let (committed, _) = snapshots(root);
    for (i, l) in layers.iter().enumerate() {
        assert_eq!(
            l["diff_id"], m["config"]["rootfs"]["diff_ids"][i],
            "layer {i}"
        );
        assert!(committed.contains(&l["chain_id"].as_str().unwrap().to_string()));
        assert!(Path::new(l["snapshot_dir"].as_str().unwrap()).is_dir());
    }
    // The 50k-file layer takes space; the 1 GiB zero file is a hole.
    assert!(layers[1]["unpacked_size"].as_u64().unwrap() > 100_000_000);
    assert!(layers[2]["unpacked_size"].as_u64().unwrap() < 1_000_000);
    let by_digest = stdout(&ok(rdpull(root, &["inspect", &digests[1]])));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&by_digest).unwrap(),
        inspected
    );

    // history: newest first, one row per config history step, the image id on top.
    let steps = m["config"]["history"].as_array().unwrap();
    let out = stdout(&ok(rdpull(root, &["history", &multi])));
    let rows: Vec<&str> = out.lines().collect();
    assert!(rows[0].starts_with("IMAGE "), "{out}");
    assert_eq!(rows.len(), steps.len() + 1, "{out}");
    let config_id = &m["config_digest"].as_str().unwrap()["sha256:".len()..][..12];
    assert!(rows[1].starts_with(config_id), "{out}");
    assert!(
        rows[2..].iter().all(|r| r.starts_with("<missing>")),
        "{out}"
    );
    let newest = steps.last().unwrap()["comment"].as_str().unwrap();
    assert!(rows[1].ends_with(newest), "{out}");

    // rmi: unknown names fail with one line; a digest with two names needs --force.
    let e = fails(rdpull(root, &["rmi", "nosuch"]));
    assert_eq!(e, "rdpull: error: no such image: nosuch");
    let debian_by_digest = format!("{REG}/debian@{}", digests[0]);
    ok(rdpull(
        root,
        &["--plain-http", "-q", "pull", &debian_by_digest],
    ));
    let e = fails(rdpull(root, &["rmi", &digests[0]]));
    assert_eq!(
        e,
        format!(
            "rdpull: error: image {} has several names ({debian}, {debian_by_digest}): \
             remove them by name, or use --force",
            digests[0]
        )
    );
    let out = stdout(&ok(rdpull(root, &["rmi", "-f", &digests[0]])));
    assert_eq!(
        out,
        format!("Untagged: {debian}\nUntagged: {debian_by_digest}\n")
    );

    // prune: debian's layer and blobs go, multi's stay and still unpack.
    let before = snapshot_dirs(root);
    let out = stdout(&ok(rdpull(root, &["prune"])));
    assert_eq!(snapshot_dirs(root), before - 1, "{out}");
    assert!(out.contains("Deleted snapshot: sha256:"), "{out}");
    let freed = out.lines().last().unwrap();
    assert!(freed.starts_with("Total reclaimed space: 1"), "{out}");
    assert!(freed.ends_with("MB"), "{out}");
    let dir = root.join("rootfs");
    ok(rdpull(root, &["unpack", &multi, dir.to_str().unwrap()]));
    assert_same(
        &tree_manifest(&dir),
        &expected("multi_latest"),
        "multi after prune",
    );
    std::fs::remove_dir_all(&dir).unwrap();

    // rmi of the last image, then prune: nothing is left.
    let out = stdout(&ok(rdpull(root, &["rmi", &digests[1]])));
    assert_eq!(out, format!("Untagged: {multi}\n"));
    ok(rdpull(root, &["prune"]));
    assert_eq!(snapshot_dirs(root), 0);
    assert_eq!(blobs(root), 0);
    assert_eq!(snapshots(root), (vec![], vec![]));
    assert_eq!(listed(root), Vec::<serde_json::Value>::new());
    let out = stdout(&ok(rdpull(root, &["prune"])));
    assert_eq!(out, "Total reclaimed space: 0B\n");
}
