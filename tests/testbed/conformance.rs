//! The trees rdpull unpacks equal umoci's listings (`$TESTBED_DIR/expected`) or the
//! listings derived here from the images' definitions; hostile images write nothing
//! outside the root.

use super::*;

#[test]
fn debian_variants_equal_umoci() {
    skip_unless_root!();
    let want = expected("debian_bookworm");
    let _serial = DEBIAN_REPO.lock().unwrap_or_else(|e| e.into_inner());
    for image in [
        "debian:bookworm",
        "debian:bookworm-zstd",
        "debian:bookworm-v2s2",
        "debian:bookworm-uncompressed",
    ] {
        assert_same(&unpack(image, &[]), &want, image);
    }
}

#[test]
fn multi_equals_umoci() {
    skip_unless_root!();
    assert_same(
        &unpack("multi:latest", &["--parallel", "16"]),
        &expected("multi_latest"),
        "multi:latest",
    );
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Root directory line of an image built on `umoci new` (an empty rootfs, mode 0755).
const ROOT: &str = "/\td\t0755\t0:0\t0\t-\t-\n";

fn dir_line(p: &str) -> String {
    format!("{p}\td\t0755\t0:0\t0\t-\t-\n")
}

fn file_line(p: &str, content: &[u8]) -> String {
    format!(
        "{p}\tf\t0644\t0:0\t{}\t{}\t-\n",
        content.len(),
        sha(content)
    )
}

#[test]
fn multiarch_both_platforms() {
    skip_unless_root!();
    // amd64 is debian:bookworm pushed under another name (make-images `multiarch`).
    let debian = expected("debian_bookworm");
    assert_same(
        &unpack("multiarch:latest", &["--platform", "linux/amd64"]),
        &debian,
        "multiarch amd64",
    );
    assert_same(
        &unpack("multiarch:v2s2", &["--platform", "linux/amd64"]),
        &debian,
        "multiarch:v2s2 amd64",
    );
    // arm64: an empty umoci image plus /etc/testbed-arch.
    let arm = format!(
        "{ROOT}{}{}",
        dir_line("/etc"),
        file_line("/etc/testbed-arch", b"linux/arm64/v8\n")
    );
    for image in ["multiarch:latest", "multiarch:v2s2"] {
        assert_same(&unpack(image, &["--platform", "linux/arm64"]), &arm, image);
        assert_same(
            &unpack(image, &["--platform", "linux/arm64/v8"]),
            &arm,
            image,
        );
    }
    setup();
    let t = tempfile::tempdir().unwrap();
    let e = fails(rdpull(
        t.path(),
        &[
            "--platform",
            "linux/s390x",
            "pull",
            &format!("{REG}/multiarch:latest"),
        ],
    ));
    assert_eq!(
        e,
        format!("rdpull: error: manifest {REG}/multiarch:latest: no image for platform linux/s390x (available: linux/amd64, linux/arm64/v8)")
    );
}

/// The edge images (make-images `edge`). Neither umoci nor containerd 1.6 unpacks all of
/// them (`crosscheck`); rdpull's answers follow the OCI image spec, and equal umoci's
/// listing wherever umoci succeeds.
#[test]
fn edge_images() {
    skip_unless_root!();
    // GNU tar's old sparse format ('S' entries): umoci and containerd refuse the layer
    // ("unhandled tar header type 83"). rdpull expands it: 64 MiB, 1 MiB of 'S' at 0 and
    // at 32 MiB (mkmulti.py edge_sparse_src).
    let mut holey = vec![0u8; 64 << 20];
    holey[..1 << 20].fill(b'S');
    holey[32 << 20..33 << 20].fill(b'S');
    let want = format!(
        "{ROOT}{}{}",
        dir_line("/sparse"),
        file_line("/sparse/holey-64MiB", &holey)
    );
    assert_same(&unpack("edge:gnu-sparse", &[]), &want, "edge:gnu-sparse");

    // umoci's own dir->file diff (a file, then whiteouts below it): containerd fails
    // ("mkparent ... not a directory"); umoci and rdpull show the file.
    let want = format!("{ROOT}{}", file_line("/dir2file", b"now a file\n"));
    assert_same(
        &unpack("edge:umoci-dir2file", &[]),
        &want,
        "edge:umoci-dir2file",
    );

    // Whiteout then re-add in one layer: the lower recreated/old is gone (umoci agrees;
    // containerd's overlay snapshot wrongly still shows it).
    let want = format!(
        "{ROOT}{}{}",
        dir_line("/recreated"),
        file_line("/recreated/new", b"only child of recreated/\n")
    );
    assert_same(
        &unpack("edge:wh-then-readd", &[]),
        &want,
        "edge:wh-then-readd",
    );

    // Re-add then whiteout: a whiteout hides only lower layers, so recreated/new stays
    // (umoci agrees; containerd fails "failed to convert whiteout file").
    let want = format!(
        "{ROOT}{}{}",
        dir_line("/recreated"),
        file_line(
            "/recreated/new",
            b"must survive: the whiteout below only hides lower layers\n"
        )
    );
    assert_same(
        &unpack("edge:wh-after-readd", &[]),
        &want,
        "edge:wh-after-readd",
    );
}

const GLOBAL_CANARIES: &[&str] = &[
    "/tmp/escape-via-abs-symlink.txt",
    "/tmp/escape-via-rel-symlink.txt",
    "/abs-escape.txt",
];

/// Paths under `top` that are neither in the rootfs nor in a snapshot's own directory.
fn stray_files(top: &Path) -> Vec<String> {
    let mut out = vec![];
    let mut stack = vec![top.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(top).unwrap().to_string_lossy().into_owned();
            let parts: Vec<&str> = rel.split('/').collect();
            let inside = parts[0] == "rootfs"
                || (parts.len() >= 4 && parts[1] == "snapshots" && parts[3] == "fs");
            if inside {
                continue;
            }
            let known = matches!(parts[0], "store")
                && (parts.len() == 1
                    || matches!(
                        parts[1],
                        "metadata.json" | "lock" | "lease.lock" | "content" | "tmp" | "ingest"
                    )
                    || (parts[1] == "snapshots"
                        && (parts.len() <= 3 || matches!(parts[3], "fs" | "work"))));
            if !known {
                out.push(rel.clone());
            }
            if p.is_dir()
                && !p.is_symlink()
                && parts[0] == "store"
                && parts.get(1) != Some(&"content")
            {
                stack.push(p);
            }
        }
    }
    out
}

#[test]
fn evil_images_stay_inside_the_root() {
    skip_unless_root!();
    setup();
    use std::os::unix::fs::MetadataExt;
    let links = std::fs::metadata("/etc/hostname").unwrap().nlink();
    let ok_line = file_line("/ok.txt", b"the only benign entry\n");
    let cases: &[(&str, Option<String>)] = &[
        (
            "dotdot",
            Some(format!(
                "{ROOT}{}{}{ok_line}",
                file_line("/escape-dotdot.txt", b"escaped?\n"),
                file_line("/escape-mid.txt", b"escaped?\n")
            )),
        ),
        (
            "absolute",
            Some(format!(
                "{ROOT}{}{ok_line}",
                file_line("/abs-escape.txt", b"escaped?\n")
            )),
        ),
        (
            "symlink-abs",
            Some(format!(
                "{ROOT}{ok_line}/sl-abs\tl\t0777\t0:0\t4\t/tmp\t-\n{}{}",
                dir_line("/tmp"),
                file_line("/tmp/escape-via-abs-symlink.txt", b"escaped?\n")
            )),
        ),
        (
            "symlink-rel",
            Some(format!(
                "{ROOT}{ok_line}/sl-rel\tl\t0777\t0:0\t21\t../../../../../../tmp\t-\n{}{}",
                dir_line("/tmp"),
                file_line("/tmp/escape-via-rel-symlink.txt", b"escaped?\n")
            )),
        ),
        // The whiteouts land on the root of the layer and hide nothing.
        ("whiteout-out", Some(format!("{ROOT}{ok_line}"))),
        ("hardlink-out", None),
        ("latest", None),
    ];
    for (case, want) in cases {
        for c in GLOBAL_CANARIES {
            let _ = std::fs::remove_file(c);
        }
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("rootfs");
        let out = rdpull(
            &t.path().join("store"),
            &[
                "unpack",
                &format!("{REG}/evil:{case}"),
                dir.to_str().unwrap(),
            ],
        );
        match want {
            Some(w) => {
                ok(out);
                assert_same(&tree_manifest(&dir), w, case);
            }
            None => {
                // umoci and containerd refuse these too (a hard link to /etc/hostname).
                let e = fails(out);
                assert!(
                    e.ends_with(": /hl-escape: refused: hard link target /etc/hostname is in no layer below"),
                    "{case}: {e}"
                );
                assert!(!dir.exists());
                assert!(snapshots(&t.path().join("store")).1.is_empty());
            }
        }
        assert_eq!(
            stray_files(t.path()),
            Vec::<String>::new(),
            "evil:{case} wrote outside the root"
        );
        for c in GLOBAL_CANARIES {
            assert!(!Path::new(c).exists(), "evil:{case} wrote {c}");
        }
        assert_eq!(
            std::fs::metadata("/etc/hostname").unwrap().nlink(),
            links,
            "evil:{case}"
        );
    }
}
