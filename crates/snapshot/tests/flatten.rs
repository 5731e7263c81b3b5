//! `flatten` must produce exactly the tree overlayfs shows for the same layer directories.
//! Needs root (overlay mounts, whiteout devices, trusted.* xattrs).
// A test is one scenario, steps and assertions in order; splitting it would hide it.
#![allow(clippy::too_many_lines)]

use std::path::Path;
use std::process::Command;

use rdpull_snapshot::flatten;
use rdpull_testkit::skip_unless_root;
use rdpull_testkit::{listing, Hdr, Tar};
use rdpull_unpack::{apply_tar, ApplyOptions};

fn layer(dir: &Path, tar: Vec<u8>) {
    std::fs::create_dir_all(dir).unwrap();
    apply_tar(&mut &tar[..], dir, &ApplyOptions::default()).unwrap();
}

#[test]
fn flatten_equals_an_overlay_mount() {
    skip_unless_root!();
    assert!(rustix::process::geteuid().is_root(), "needs root");
    let t = tempfile::tempdir().unwrap();
    let (l1, l2, l3) = (
        t.path().join("l1"),
        t.path().join("l2"),
        t.path().join("l3"),
    );
    let mut a = Tar::default();
    a.dir("a").file("a/x", b"x").file("a/y", b"y");
    a.dir("b").file("b/old", b"old");
    a.file("links/target", b"t")
        .hardlink("links/hard", "links/target");
    a.dir("dir2file").file("dir2file/c", b"c");
    a.file("file2dir", b"f");
    a.dir("opq")
        .file("opq/old1", b"1")
        .file("opq/sub/old2", b"2");
    a.pax(&[("SCHILY.xattr.user.k", b"v1")]);
    a.dir("xdir");
    a.symlink("sl", "a/x");
    a.file("zero", &vec![0u8; 3 << 20]);
    layer(&l1, a.finish());

    let mut b = Tar::default();
    b.file(".wh.b", b"");
    b.file("a/.wh.x", b"");
    b.entry(Hdr {
        name: b"a",
        typ: b'5',
        mode: 0o700,
        uid: 5,
        gid: 6,
        ..Default::default()
    });
    b.dir("opq")
        .file("opq/.wh..wh..opq", b"")
        .file("opq/new", b"n");
    b.file("dir2file", b"now a file");
    b.dir("file2dir").file("file2dir/child", b"c");
    b.dir("xdir"); // no xattr in this layer: the merged dir has none
    b.file("links/target", b"replaced, so no longer linked");
    layer(&l2, b.finish());

    let mut c = Tar::default();
    c.file("b/new", b"re-added");
    c.file(".wh.a", b"").dir("a").file("a/z", b"z");
    c.file("l3/hl-src", b"h").hardlink("l3/hl-dst", "l3/hl-src");
    layer(&l3, c.finish());

    let out = t.path().join("out");
    std::fs::create_dir(&out).unwrap();
    flatten(&[&l1, &l2, &l3], &out).unwrap();

    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let lower = format!(
        "lowerdir={}:{}:{}",
        l3.display(),
        l2.display(),
        l1.display()
    );
    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &lower])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success(), "overlay mount failed");
    let overlay = listing(&mnt);
    let _ = Command::new("umount").arg(&mnt).status();
    let flat = listing(&out);
    assert_eq!(flat, overlay, "flatten differs from overlayfs");

    let want = [
        "/a d 0755 0:0",
        "/a/z f 0644 0:0 z",
        "/b d 0755 0:0",
        "/b/new f 0644 0:0 re-added",
        "/dir2file f 0644 0:0 now a file",
        "/file2dir d 0755 0:0",
        "/file2dir/child f 0644 0:0 c",
        "/l3 d 0755 0:0",
        "/l3/hl-dst f 0644 0:0 h",
        "/l3/hl-src f 0644 0:0 h",
        "/links d 0755 0:0",
        "/links/hard f 0644 0:0 t",
        "/links/target f 0644 0:0 replaced, so no longer linked",
        "/opq d 0755 0:0",
        "/opq/new f 0644 0:0 n",
        "/sl l 0777 0:0 a/x",
        "/xdir d 0755 0:0",
        "/zero f 0644 0:0 <3145728 bytes>",
    ];
    assert_eq!(flat, want);
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &str| std::fs::metadata(out.join(p)).unwrap().ino();
    assert_eq!(
        ino("l3/hl-src"),
        ino("l3/hl-dst"),
        "hard links survive flattening"
    );
    assert_eq!(
        std::fs::metadata(out.join("zero")).unwrap().blocks(),
        0,
        "holes stay holes"
    );
}
