//! Layers that only make sense on top of their lower layers (`scripts/crosslayer.py`,
//! built and pushed by `scripts/make-crosslayer-images`): writes through lower symlinks,
//! implicit parents of lower directories, hard links to lower files, and whiteouts mixed
//! with them. rdpull's trees equal `umoci unpack`'s, both flattened and as the overlay
//! mount of the committed snapshots; containerd 1.6's answers, recorded by the same
//! script, are pinned where docs/conformance.md describes them.

use std::path::PathBuf;

use super::*;

/// Build the images and the peers' listings once (idempotent); their directory.
fn crosslayer() -> PathBuf {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        setup();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-crosslayer-images");
        let st = Command::new("bash")
            .arg(script)
            .arg("--containerd")
            .env("RDPULL_TESTBED", testbed())
            .status()
            .unwrap();
        assert!(st.success(), "scripts/make-crosslayer-images failed");
    });
    testbed_dir().join("crosslayer/expected")
}

fn image_names() -> Vec<String> {
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/crosslayer.py"))
        .arg("list")
        .output()
        .unwrap();
    assert!(out.status.success());
    stdout(&out)
        .lines()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect()
}

/// Pull `image` into a fresh store and list the read-only overlay mount of its layers.
fn mounted(image: &str) -> String {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let reference = format!("{REG}/{image}");
    ok(rdpull(&store, &["pull", &reference]));
    let inspect: serde_json::Value =
        serde_json::from_str(&stdout(&ok(rdpull(&store, &["inspect", &reference])))).unwrap();
    let mut lowers: Vec<PathBuf> = inspect[0]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| PathBuf::from(l["snapshot_dir"].as_str().unwrap()))
        .collect();
    assert!(lowers.len() >= 2, "{image}: an overlay needs two layers");
    lowers.reverse();
    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _mounted = rdpull_testkit::OverlayMount::new(&lowers, &mnt);
    tree_manifest(&mnt)
}

#[test]
fn crosslayer_images_equal_umoci() {
    skip_unless_root!();
    let expected = crosslayer();
    let names = image_names();
    assert_eq!(names.len(), 6, "{names:?}");
    for name in names {
        let image = format!("crosslayer:{name}");
        match std::fs::read_to_string(expected.join(format!("{name}.umoci.tsv"))) {
            Ok(want) => {
                assert_same(&unpack(&image, &[]), &want, &format!("{image} flattened"));
                assert_same(&mounted(&image), &want, &format!("{image} mounted"));
            }
            Err(_) => {
                // umoci refuses it; so does rdpull, and keeps only the good lower layer.
                let umoci =
                    std::fs::read_to_string(expected.join(format!("{name}.umoci.err"))).unwrap();
                assert!(umoci.contains("no such file or directory"), "{umoci}");
                let t = tempfile::tempdir().unwrap();
                let store = t.path().join("store");
                let e = fails(rdpull(&store, &["pull", &format!("{REG}/{image}")]));
                assert!(e.starts_with("rdpull: error: layer 2/2 sha256:"), "{e}");
                assert!(
                    e.ends_with(
                        ": /link-nowhere: refused: hard link target /data/nowhere is in no layer below"
                    ),
                    "{e}"
                );
                let (committed, active) = snapshots(&store);
                assert_eq!((committed.len(), active.len()), (1, 0), "{image}");
            }
        }
    }
}

/// containerd 1.6.20 (`ctr images pull` + `ctr images mount`) on the same images, as the
/// docs/conformance.md states it.
#[test]
fn containerd_differs_where_the_readme_says() {
    skip_unless_root!();
    let expected = crosslayer();
    let read = |f: &str| std::fs::read_to_string(expected.join(f)).unwrap();
    // Implicit parents and a directory over a symlink: containerd agrees.
    for name in ["parents", "dir-over-symlink"] {
        assert_eq!(
            read(&format!("{name}.containerd.tsv")),
            read(&format!("{name}.umoci.tsv")),
            "{name}"
        );
    }
    // Writes through lower symlinks: containerd's directories hide the symlinks (and with
    // them /usr/bin), and the whiteout written through bin/ deletes nothing.
    let ctr = read("symlinks.containerd.tsv");
    for line in [
        "/bin\td\t0755",
        "/bin/new\tf",
        "/lib/x/y\tf",
        "/usr/bin/old\tf",
    ] {
        assert!(
            ctr.contains(line),
            "containerd's symlinks tree lacks {line}"
        );
    }
    assert_ne!(ctr, read("symlinks.umoci.tsv"));
    // Hard links to lower files, and a path re-created below a whiteout: it fails.
    let hardlinks = read("hardlinks.containerd.err");
    assert!(
        hardlinks.contains("failed to extract layer")
            && hardlinks.contains("/link-a: no such file"),
        "{hardlinks}"
    );
    let whiteouts = read("whiteouts.containerd.err");
    assert!(
        whiteouts.contains("mkparent") && whiteouts.contains("/gone: not a directory"),
        "{whiteouts}"
    );
}
