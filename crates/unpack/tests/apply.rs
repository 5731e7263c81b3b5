//! Tar application: entry kinds, overlay whiteouts, and confinement to the layer root.
//! These tests need root (owners, devices, trusted.* xattrs), as rdpull itself does.
// A test is one scenario, steps and assertions in order; splitting it would hide it.
#![allow(clippy::too_many_lines)]

use std::io::Write;
use std::path::Path;

use rdpull_testkit::skip_unless_root;
use rdpull_testkit::{listing, Hdr, Tar};
use rdpull_unpack::{
    apply_tar, settle_on_lowers, unpack_layer, ApplyOptions, LayerDescriptor, LayerStats,
    UnpackError,
};
use rdpull_verify::Digest;

fn apply(tar: &[u8], dir: &Path) -> Result<LayerStats, UnpackError> {
    let mut r = tar;
    apply_tar(&mut r, dir, &ApplyOptions::default())
}

/// A sandbox: `<tmp>/outside` holds canaries, `<tmp>/layer` is the layer root.
struct Sandbox {
    _tmp: tempfile::TempDir,
    outside: std::path::PathBuf,
    layer: std::path::PathBuf,
}

fn sandbox() -> Sandbox {
    assert!(
        rustix::process::geteuid().is_root(),
        "the unpack tests need root"
    );
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    let layer = outside.join("layer");
    std::fs::create_dir_all(&layer).unwrap();
    std::fs::write(outside.join("canary"), "canary").unwrap();
    Sandbox {
        _tmp: tmp,
        outside,
        layer,
    }
}

/// Everything outside the layer dir, which must stay exactly as created.
fn outside_listing(s: &Sandbox) -> Vec<String> {
    listing(&s.outside)
        .into_iter()
        .filter(|l| !l.starts_with("/layer"))
        .collect()
}

#[test]
fn every_entry_kind_and_its_metadata() {
    skip_unless_root!();
    let s = sandbox();
    let mut t = Tar::default();
    t.dir("etc/");
    t.entry(Hdr {
        name: b"etc/setuid",
        mode: 0o4755,
        uid: 1000,
        gid: 1000,
        data: b"suid",
        ..Default::default()
    });
    t.entry(Hdr {
        name: b"sticky",
        typ: b'5',
        mode: 0o1777,
        ..Default::default()
    });
    t.entry(Hdr {
        name: b"setgid-dir",
        typ: b'5',
        mode: 0o2775,
        uid: 3,
        gid: 4,
        ..Default::default()
    });
    // Modes the umask would strip at create, and setuid without a chown.
    t.entry(Hdr {
        name: b"etc/setuid-root",
        mode: 0o4755,
        data: b"suid0",
        ..Default::default()
    });
    t.entry(Hdr {
        name: b"etc/world-writable",
        mode: 0o666,
        data: b"w",
        ..Default::default()
    });
    t.symlink("etc/link", "/does/not/exist");
    t.file("etc/a", b"aaa");
    t.hardlink("etc/hard", "etc/a");
    t.entry(Hdr {
        name: b"dev/null",
        typ: b'3',
        mode: 0o666,
        dev: (1, 3),
        ..Default::default()
    });
    t.entry(Hdr {
        name: b"dev/loop0",
        typ: b'4',
        mode: 0o660,
        dev: (7, 0),
        ..Default::default()
    });
    t.entry(Hdr {
        name: b"dev/fifo",
        typ: b'6',
        mode: 0o600,
        ..Default::default()
    });
    t.pax(&[
        ("SCHILY.xattr.user.rdpull", b"hello"),
        ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
        ("uid", b"3000000"),
        ("gid", b"3000001"),
        ("mtime", b"1700000000.5"),
    ]);
    t.file("xattr", b"x");
    let long = format!("long/{}", "L".repeat(150));
    t.pax(&[("path", long.as_bytes())]);
    t.file("ignored-short-name", b"pax path");
    let gnu = format!("gnu/{}", "g".repeat(150));
    t.gnu_long_name(gnu.as_bytes());
    t.file("ignored-too", b"gnu long name");
    t.file("replaced", b"first");
    t.file("replaced", b"second");
    t.dir("dir-then-file");
    t.file("dir-then-file/child", b"c");
    t.file("dir-then-file", b"now a file");
    t.file("file-then-dir", b"f");
    t.dir("file-then-dir");
    t.file("implicit/parent/child", b"i");
    let stats = apply(&t.finish(), &s.layer).unwrap();
    assert_eq!(
        stats.lower_refs.implicit_dirs(),
        vec!["/dev", "/long", "/gnu", "/implicit", "/implicit/parent"]
    );
    assert_eq!(stats.entries, 23);

    let want = vec![
        "/dev d 0755 0:0".to_string(),
        "/dev/fifo p 0600 0:0".into(),
        "/dev/loop0 b 0660 0:0 7,0".into(),
        "/dev/null c 0666 0:0 1,3".into(),
        "/dir-then-file f 0644 0:0 now a file".into(),
        "/etc d 0755 0:0".into(),
        "/etc/a f 0644 0:0 aaa".into(),
        "/etc/hard f 0644 0:0 aaa".into(),
        "/etc/link l 0777 0:0 /does/not/exist".into(),
        "/etc/setuid f 4755 1000:1000 suid".into(),
        "/etc/setuid-root f 4755 0:0 suid0".into(),
        "/etc/world-writable f 0666 0:0 w".into(),
        "/file-then-dir d 0755 0:0".into(),
        "/gnu d 0755 0:0".into(),
        format!("/{gnu} f 0644 0:0 gnu long name"),
        "/implicit d 0755 0:0".into(),
        "/implicit/parent d 0755 0:0".into(),
        "/implicit/parent/child f 0644 0:0 i".into(),
        "/long d 0755 0:0".into(),
        format!("/{long} f 0644 0:0 pax path"),
        "/replaced f 0644 0:0 second".into(),
        "/setgid-dir d 2775 3:4".into(),
        "/sticky d 1777 0:0".into(),
        // The overlay redirect xattr from the layer is dropped: layers must not forge it.
        "/xattr f 0644 3000000:3000001 x user.rdpull=hello".into(),
    ];
    assert_eq!(listing(&s.layer), want);
    use std::os::unix::fs::MetadataExt;
    let a = std::fs::metadata(s.layer.join("etc/a")).unwrap();
    let h = std::fs::metadata(s.layer.join("etc/hard")).unwrap();
    assert_eq!(a.ino(), h.ino(), "hard link shares the inode");
    let x = std::fs::metadata(s.layer.join("xattr")).unwrap();
    assert_eq!((x.mtime(), x.mtime_nsec()), (1_700_000_000, 500_000_000));
    let d = std::fs::metadata(s.layer.join("sticky")).unwrap();
    assert_eq!(d.mtime(), 1_700_000_000, "directory mtimes are set last");
}

#[test]
fn whiteouts_in_overlay_format() {
    skip_unless_root!();
    let s = sandbox();
    let mut t = Tar::default();
    t.file(".wh.gone", b"");
    t.dir("opq");
    t.file("opq/.wh..wh..opq", b"");
    t.file("opq/new", b"n");
    t.file("deep/dir/.wh.x", b"");
    // Whiteout then re-add: the new directory hides the lower one.
    t.file(".wh.readd-after", b"");
    t.dir("readd-after");
    t.file("readd-after/new", b"1");
    // Re-add then whiteout: the whiteout still hides only lower layers.
    t.dir("readd-before");
    t.file("readd-before/new", b"2");
    t.file(".wh.readd-before", b"");
    // A file replaced the lower directory; whiteouts below it are moot.
    t.file("dir2file", b"file");
    t.file("dir2file/.wh.c1", b"");
    t.file(".wh..wh.plnk", b"");
    apply(&t.finish(), &s.layer).unwrap();
    assert_eq!(
        listing(&s.layer),
        vec![
            "/deep d 0755 0:0",
            "/deep/dir d 0755 0:0",
            "/deep/dir/x c 0000 0:0 0,0",
            "/dir2file f 0644 0:0 file",
            "/gone c 0000 0:0 0,0",
            "/opq d 0755 0:0 trusted.overlay.opaque=y",
            "/opq/new f 0644 0:0 n",
            "/readd-after d 0755 0:0 trusted.overlay.opaque=y",
            "/readd-after/new f 0644 0:0 1",
            "/readd-before d 0755 0:0 trusted.overlay.opaque=y",
            "/readd-before/new f 0644 0:0 2",
        ]
    );
}

/// Each escape kind from the issue; afterwards nothing outside the layer has changed.
#[test]
fn hostile_names_stay_inside_the_root() {
    skip_unless_root!();
    let s = sandbox();
    let before = outside_listing(&s);
    let mut t = Tar::default();
    t.escapes(b"overwritten?");
    t.symlink("sl-dir", "/tmp");
    t.file("sl-dir/created-in-root.txt", b"x");
    apply(&t.finish(), &s.layer).unwrap();
    assert_eq!(
        outside_listing(&s),
        before,
        "something changed outside the layer"
    );
    assert_eq!(
        listing(&s.layer),
        vec![
            "/abs-escape.txt f 0644 0:0 x",
            "/canary f 0644 0:0 overwritten?",
            "/chain1 l 0777 0:0 chain2",
            "/chain2 l 0777 0:0 ../../chain3",
            "/chain3 l 0777 0:0 /..",
            "/escape-dotdot.txt f 0644 0:0 x",
            "/escape-mid.txt f 0644 0:0 x",
            "/escape-target c 0000 0:0 0,0",
            "/sl-abs l 0777 0:0 /",
            "/sl-dir l 0777 0:0 /tmp",
            "/sl-rel l 0777 0:0 ../../../../../../..",
            "/tmp d 0755 0:0",
            "/tmp/created-in-root.txt f 0644 0:0 x",
            "/via-chain.txt f 0644 0:0 x",
            "/via-rel.txt f 0644 0:0 x",
        ]
    );
}

#[test]
fn hard_links_out_of_the_layer_are_refused() {
    skip_unless_root!();
    // Each link waits for a lower layer; a first layer has none, so settling refuses it.
    let refused = |tar: &[u8], layer: &Path| {
        let stats = apply(tar, layer).unwrap();
        assert_eq!(stats.lower_refs.deferred_links(), ["/hl"]);
        settle_on_lowers(layer, &[], stats.lower_refs, &ApplyOptions::default())
            .unwrap_err()
            .to_string()
    };
    for target in ["../../../../etc/hostname", "/etc/hostname", "../canary"] {
        let s = sandbox();
        let before = outside_listing(&s);
        let mut t = Tar::default();
        t.file("ok.txt", b"ok");
        t.hardlink("hl", target);
        let shown = rdpull_unpack::clean_path(target.as_bytes());
        assert_eq!(
            refused(&t.finish(), &s.layer),
            format!(
                "/hl: refused: hard link target /{} is in no layer below",
                String::from_utf8_lossy(&shown)
            )
        );
        assert_eq!(outside_listing(&s), before);
    }
    // Through a symlink that points out: resolved inside, so still not found.
    let s = sandbox();
    let mut t = Tar::default();
    t.symlink("out", "../..");
    t.hardlink("hl", "out/canary");
    assert_eq!(
        refused(&t.finish(), &s.layer),
        "/hl: refused: hard link target /out/canary is in no layer below"
    );
    assert_eq!(
        std::fs::metadata(s.outside.join("canary")).unwrap().len(),
        6
    );
}

#[test]
fn symlink_loops_and_files_as_parents_fail_cleanly() {
    skip_unless_root!();
    let s = sandbox();
    let mut t = Tar::default();
    t.symlink("loop-a", "loop-b");
    t.symlink("loop-b", "loop-a");
    t.file("loop-a/x", b"x");
    let e = apply(&t.finish(), &s.layer).unwrap_err().to_string();
    assert!(e.starts_with("/loop-a/x: parent directory: "), "{e}");
    assert!(e.contains("symbolic links"), "{e}");

    let s = sandbox();
    let mut t = Tar::default();
    t.file("f", b"x");
    t.file("f/child", b"x");
    let e = apply(&t.finish(), &s.layer).unwrap_err().to_string();
    assert!(
        e.starts_with("/f/child: parent directory: Not a directory"),
        "{e}"
    );
}

#[test]
fn dangling_extension_headers_are_ignored_and_unknown_types_named() {
    skip_unless_root!();
    // A PAX header, then a GNU long name, each with no member after it (tar-rs errors;
    // GNU tar and Go end the archive there). This pins the tar-rs text rdpull matches.
    for tail in [
        Tar::default().pax(&[("path", b"ghost")]).finish(),
        Tar::default().gnu_long_name(b"ghost").finish(),
    ] {
        let s = sandbox();
        let mut t = Tar::default();
        t.file("kept", b"k");
        let mut data = t.finish();
        data.truncate(data.len() - 1024);
        data.extend_from_slice(&tail);
        let stats = apply(&data, &s.layer).unwrap();
        assert_eq!(stats.entries, 1);
        assert_eq!(listing(&s.layer), ["/kept f 0644 0:0 k"], "{}", tail[156]);
    }

    let s = sandbox();
    let mut t = Tar::default();
    t.entry(Hdr {
        name: b"tape",
        typ: b'M',
        ..Default::default()
    });
    let e = apply(&t.finish(), &s.layer).unwrap_err().to_string();
    assert_eq!(e, "/tape: refused: unsupported tar entry type 'M'");
}

#[test]
fn pax_sparse_1_0() {
    skip_unless_root!();
    let s = sandbox();
    let mut data = b"2\n0\n4\n1048576\n3\n".to_vec();
    data.resize(512, 0);
    data.extend_from_slice(b"HEADEND");
    let mut t = Tar::default();
    t.pax(&[
        ("GNU.sparse.major", b"1"),
        ("GNU.sparse.minor", b"0"),
        ("GNU.sparse.name", b"sparse/holey"),
        ("GNU.sparse.realsize", b"2097152"),
    ]);
    t.file("GNUSparseFile.0/holey", &data);
    apply(&t.finish(), &s.layer).unwrap();
    let got = std::fs::read(s.layer.join("sparse/holey")).unwrap();
    assert_eq!(got.len(), 2 << 20);
    assert_eq!(&got[..4], b"HEAD");
    assert_eq!(&got[1048576..1048579], b"END");
    assert_eq!(got.iter().filter(|&&b| b != 0).count(), 7);
    assert!(!s.layer.join("GNUSparseFile.0").exists());
}

#[test]
fn zero_runs_become_holes_with_identical_content() {
    skip_unless_root!();
    let s = sandbox();
    let mut content = vec![0u8; 4 << 20];
    content[3 << 20] = 1;
    let mut t = Tar::default();
    t.file("mostly-zero", &content);
    t.file("all-zero", &vec![0u8; 1 << 20]);
    apply(&t.finish(), &s.layer).unwrap();
    assert_eq!(std::fs::read(s.layer.join("mostly-zero")).unwrap(), content);
    assert_eq!(
        std::fs::read(s.layer.join("all-zero")).unwrap(),
        vec![0u8; 1 << 20]
    );
    use std::os::unix::fs::MetadataExt;
    let blocks = std::fs::metadata(s.layer.join("all-zero"))
        .unwrap()
        .blocks();
    assert_eq!(blocks, 0, "an all-zero file is written as a hole");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

const GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn unpack(
    blob: &[u8],
    digest: &Digest,
    size: u64,
    diff_id: &Digest,
    dir: &Path,
) -> Result<(), String> {
    let d = LayerDescriptor {
        digest,
        size,
        media_type: GZ,
        diff_id,
    };
    unpack_layer(blob, &d, dir, &ApplyOptions::default())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn unpack_layer_verifies_both_digests() {
    skip_unless_root!();
    let tar = Tar::default().file("hello", b"world").finish();
    let blob = gzip(&tar);
    let digest = Digest::sha256_of(&blob);
    let diff_id = Digest::sha256_of(&tar);
    let n = blob.len() as u64;

    let s = sandbox();
    unpack(&blob, &digest, n, &diff_id, &s.layer).unwrap();
    assert_eq!(listing(&s.layer), vec!["/hello f 0644 0:0 world"]);

    // Wrong blob digest.
    let wrong = Digest::sha256_of(b"something else");
    let s = sandbox();
    let e = unpack(&blob, &wrong, n, &diff_id, &s.layer).unwrap_err();
    assert_eq!(
        e,
        format!("compressed blob: digest mismatch: expected {wrong}, got {digest}")
    );

    // Wrong DiffID.
    let s = sandbox();
    let e = unpack(&blob, &digest, n, &wrong, &s.layer).unwrap_err();
    assert_eq!(
        e,
        format!("uncompressed content (DiffID): digest mismatch: expected {wrong}, got {diff_id}")
    );

    // More bytes than the descriptor says.
    let s = sandbox();
    let e = unpack(&blob, &digest, n - 1, &diff_id, &s.layer).unwrap_err();
    assert_eq!(
        e,
        format!("compressed blob: more than the declared {} bytes", n - 1)
    );

    // Fewer bytes (a truncated transfer): the size is wrong.
    let s = sandbox();
    let cut = &blob[..blob.len() - 10];
    let e = unpack(cut, &digest, n, &diff_id, &s.layer).unwrap_err();
    assert_eq!(
        e,
        format!(
            "compressed blob: size mismatch: expected {n} bytes, got {}",
            n - 10
        )
    );
}

#[test]
fn truncated_gzip_with_matching_digest_is_a_decompression_error() {
    skip_unless_root!();
    let tar = Tar::default().file("hello", &vec![7u8; 100_000]).finish();
    let blob = gzip(&tar);
    let cut = &blob[..blob.len() / 2];
    let s = sandbox();
    let e = unpack(
        cut,
        &Digest::sha256_of(cut),
        cut.len() as u64,
        &Digest::sha256_of(&tar),
        &s.layer,
    )
    .unwrap_err();
    assert!(e.starts_with("gzip data: "), "{e}");
}

#[test]
fn a_failed_download_is_reported_as_such() {
    skip_unless_root!();
    struct Failing<'a>(&'a [u8]);
    impl std::io::Read for Failing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() {
                return Err(std::io::Error::other("connection reset by peer"));
            }
            let n = buf.len().min(self.0.len()).min(100);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let tar = Tar::default().file("hello", &vec![7u8; 100_000]).finish();
    let blob = gzip(&tar);
    let s = sandbox();
    let d = Digest::sha256_of(&blob);
    let diff = Digest::sha256_of(&tar);
    let desc = LayerDescriptor {
        digest: &d,
        size: blob.len() as u64,
        media_type: GZ,
        diff_id: &diff,
    };
    let e = unpack_layer(
        Failing(&blob[..blob.len() / 2]),
        &desc,
        &s.layer,
        &ApplyOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(e, "download failed: connection reset by peer");
}

/// 300 small files over 7 directories, then one name written twice.
fn small_files_tar() -> Tar {
    let mut t = Tar::default();
    for i in 0..300 {
        t.file(
            &format!("d{}/f{i}", i % 7),
            format!("content {i}").as_bytes(),
        );
    }
    t.file("twice", b"first");
    t.file("twice", b"second");
    t
}

#[test]
fn many_small_files_and_replacements() {
    skip_unless_root!();
    let s = sandbox();
    let mut t = small_files_tar();
    t.file("empty", b"");
    t.file("becomes-dir", b"file");
    t.dir("becomes-dir");
    t.file("becomes-dir/inside", b"x");
    t.file("parent-is-file", b"p");
    t.file("parent-is-file/child", b"must fail: its parent is a file");
    let stats = apply(&t.finish(), &s.layer);
    assert_eq!(
        stats.unwrap_err().to_string(),
        "/parent-is-file/child: parent directory: Not a directory (os error 20)"
    );

    let s = sandbox();
    let mut t = small_files_tar();
    t.hardlink("link-to-twice", "twice");
    t.file("becomes-dir", b"file");
    t.dir("becomes-dir");
    t.file("becomes-dir/inside", b"x");
    t.file("zeros", &[0u8; 5000]);
    let stats = apply(&t.finish(), &s.layer).unwrap();
    assert_eq!(stats.entries, 307);
    assert_eq!(
        std::fs::read(s.layer.join("link-to-twice")).unwrap(),
        b"second"
    );
    assert_eq!(
        std::fs::read(s.layer.join("d3/f297")).unwrap(),
        b"content 297"
    );
    assert_eq!(
        std::fs::read(s.layer.join("zeros")).unwrap(),
        vec![0u8; 5000]
    );
}
