//! Kept blobs and `save`: `pull --keep-blobs` keeps each layer blob, verified; `save`
//! writes an OCI layout tar that skopeo reads and umoci unpacks, and that podman loads
//! and mounts, to the tree rdpull unpacks; an image pulled without kept blobs is refused until a `--keep-blobs` pull
//! fetches the blobs of its present layers; `rmi` and `prune` remove the kept blobs.

use super::*;

#[test]
fn kept_blobs_save_to_an_oci_archive_that_skopeo_umoci_and_podman_read() {
    skip_unless_root!();
    setup();
    let _debian = DEBIAN_REPO.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let image = format!("{REG}/debian:bookworm");
    let archive = tmp.path().join("debian.tar");

    // Pulled without kept blobs: save says what to do, and leaves no file.
    ok(rdpull(&root, &["--plain-http", "-q", "pull", &image]));
    let inspected: serde_json::Value =
        serde_json::from_str(&stdout(&ok(rdpull(&root, &["inspect", &image])))).unwrap();
    let layers: Vec<String> = inspected[0]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    assert!(inspected[0]["layers"][0]["kept_blob"].is_null());
    let e = fails(rdpull(&root, &["save", &image, archive.to_str().unwrap()]));
    assert_eq!(
        e,
        format!(
            "rdpull: error: layer blob {} is not kept: pull the image with --keep-blobs first",
            layers[0]
        )
    );
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "only the root"
    );

    // --keep-blobs on the present image fetches and keeps its blobs, each its digest.
    ok(rdpull(
        &root,
        &["--plain-http", "-q", "--keep-blobs", "pull", &image],
    ));
    let inspected: serde_json::Value =
        serde_json::from_str(&stdout(&ok(rdpull(&root, &["inspect", &image])))).unwrap();
    for (d, l) in layers
        .iter()
        .zip(inspected[0]["layers"].as_array().unwrap())
    {
        let kept = root.join("content/blobs/sha256").join(&d[7..]);
        assert_eq!(l["kept_blob"].as_str(), kept.to_str(), "inspect shows it");
        let bytes = std::fs::read(&kept).unwrap();
        assert_eq!(format!("sha256:{:x}", Sha256::digest(&bytes)), *d);
    }
    let store: serde_json::Value =
        serde_json::from_str(&stdout(&ok(rdpull(&root, &["inspect"])))).unwrap();
    let kept: Vec<(&str, &serde_json::Value)> = store["kept_blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["digest"].as_str().unwrap(), &b["images"]))
        .collect();
    assert_eq!(kept, [(layers[0].as_str(), &serde_json::json!([image]))]);
    ok(rdpull(&root, &["save", &image, archive.to_str().unwrap()]));
    podman_loads(tmp.path(), &archive, &image, &inspected[0]["config_digest"]);

    let layout = tmp.path().join("layout");
    let st = Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("oci:{}:saved", layout.display()))
        .status()
        .unwrap();
    assert!(st.success(), "skopeo copy oci-archive: failed");
    let bundle = tmp.path().join("bundle");
    let st = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:saved", layout.display()))
        .arg(&bundle)
        .status()
        .unwrap();
    assert!(st.success(), "umoci unpack failed");
    assert_eq!(
        tree_manifest(&bundle.join("rootfs")),
        expected("debian_bookworm")
    );

    // rmi and prune take the kept blobs too.
    ok(rdpull(&root, &["rmi", &image]));
    let pruned = stdout(&ok(rdpull(&root, &["prune"])));
    for d in &layers {
        assert!(pruned.contains(&format!("Deleted blob: {d}")), "{pruned}");
    }
    assert_eq!(
        std::fs::read_dir(root.join("content/blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
}

/// `podman load` reads the archive under the image's name, with the config's digest as
/// its id, and `podman image mount` shows the tree umoci unpacks. Podman's storage is
/// private to the test (vfs driver under `tmp`).
fn podman_loads(tmp: &Path, archive: &Path, image: &str, config_digest: &serde_json::Value) {
    let podman = |args: &[&str]| {
        let out = Command::new("podman")
            .arg("--root")
            .arg(tmp.join("podman-root"))
            .arg("--runroot")
            .arg(tmp.join("podman-run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .output()
            .expect("podman (scripts/test installs it)");
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout(&out).trim().to_string()
    };
    let loaded = podman(&["load", "--quiet", "-i", archive.to_str().unwrap()]);
    assert_eq!(loaded, format!("Loaded image: {image}"));
    let id = podman(&["image", "inspect", "--format", "{{.Id}}", image]);
    assert_eq!(format!("sha256:{id}"), config_digest.as_str().unwrap());
    let rootfs = podman(&["image", "mount", image]);
    let listing = tree_manifest(Path::new(&rootfs));
    podman(&["image", "unmount", image]);
    assert_eq!(listing, expected("debian_bookworm"));
}
