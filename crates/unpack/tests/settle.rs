//! Settling layers on their lower layers (`settle_on_lowers`): each stack of layers is
//! applied one directory per layer, settled bottom up as the pull commits them, and read
//! through a real read-only overlay mount, which must show what a sequential apply
//! gives. Needs root (overlay mounts, owners, trusted.* xattrs).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rdpull_testkit::{listing, skip_unless_root, Hdr, OverlayMount, Tar};
use rdpull_unpack::{apply_tar, settle_on_lowers, ApplyOptions};

/// The applied and settled layers of a stack, mounted; unmounted on drop (the mount
/// goes before the directories).
struct Stack {
    _mount: OverlayMount,
    _tmp: tempfile::TempDir,
    mnt: PathBuf,
}

impl Stack {
    fn listing(&self) -> Vec<String> {
        listing(&self.mnt)
    }

    fn ino(&self, path: &str) -> u64 {
        std::fs::symlink_metadata(self.mnt.join(path))
            .unwrap()
            .ino()
    }
}

/// Apply and settle `layers` (bottom first); the first error, or the mounted stack.
fn stack(layers: &[Vec<u8>]) -> Result<Stack, String> {
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (0..layers.len())
        .map(|i| tmp.path().join(format!("l{i}")))
        .collect();
    let options = ApplyOptions::default();
    for (i, tar) in layers.iter().enumerate() {
        std::fs::create_dir(&dirs[i]).unwrap();
        let stats = apply_tar(&mut &tar[..], &dirs[i], &options).map_err(|e| e.to_string())?;
        let lowers: Vec<&Path> = dirs[..i].iter().rev().map(PathBuf::as_path).collect();
        settle_on_lowers(&dirs[i], &lowers, stats.lower_refs, &options)
            .map_err(|e| e.to_string())?;
    }
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let lowers: Vec<PathBuf> = dirs.iter().rev().cloned().collect();
    Ok(Stack {
        _mount: OverlayMount::new(&lowers, &mnt),
        _tmp: tmp,
        mnt,
    })
}

/// A merged-/usr base: `bin -> usr/bin`.
fn merged_usr() -> Vec<u8> {
    let mut t = Tar::default();
    t.dir("usr");
    t.dir("usr/bin");
    t.file("usr/bin/sh", b"sh");
    t.symlink("bin", "usr/bin");
    t.finish()
}

#[test]
fn the_later_of_two_entries_for_one_file_wins() {
    skip_unless_root!();
    // Through the symlink first, then directly: the direct one is later.
    let mut t = Tar::default();
    t.file("bin/x", b"through bin");
    t.file("usr/bin/x", b"direct");
    let s = stack(&[merged_usr(), t.finish()]).unwrap();
    assert!(s
        .listing()
        .contains(&"/usr/bin/x f 0644 0:0 direct".to_string()));
    // And the other way round.
    let mut t = Tar::default();
    t.file("usr/bin/x", b"direct");
    t.file("bin/x", b"through bin");
    let s = stack(&[merged_usr(), t.finish()]).unwrap();
    assert_eq!(
        s.listing(),
        [
            "/bin l 0777 0:0 usr/bin",
            "/usr d 0755 0:0",
            "/usr/bin d 0755 0:0",
            "/usr/bin/sh f 0644 0:0 sh",
            "/usr/bin/x f 0644 0:0 through bin",
        ]
    );
}

#[test]
fn symlinks_below_symlinks_are_followed_at_every_level() {
    skip_unless_root!();
    let mut base = Tar::default();
    base.dir("b");
    base.entry(Hdr {
        name: b"b/d/",
        typ: b'5',
        mode: 0o711,
        uid: 5,
        gid: 6,
        ..Default::default()
    });
    base.symlink("a", "b");
    base.symlink("b/c", "/b/d");
    let mut t = Tar::default();
    t.file("a/c/file", b"f");
    let s = stack(&[base.finish(), t.finish()]).unwrap();
    assert_eq!(
        s.listing(),
        [
            "/a l 0777 0:0 b",
            "/b d 0755 0:0",
            "/b/c l 0777 0:0 /b/d",
            "/b/d d 0711 5:6",
            "/b/d/file f 0644 0:0 f",
        ]
    );
}

#[test]
fn writing_through_a_symlink_to_a_file_is_refused() {
    skip_unless_root!();
    let mut base = Tar::default();
    base.file("f", b"a file");
    base.symlink("l", "f");
    let mut t = Tar::default();
    t.file("l/x", b"x");
    assert_eq!(
        stack(&[base.finish(), t.finish()]).err().unwrap(),
        "/l: refused: written through a lower layer's symlink to f, which is not a directory"
    );
    // Nor one that leads back to where it stands.
    let mut base = Tar::default();
    base.symlink("loop", "loop");
    let mut t = Tar::default();
    t.file("loop/x", b"x");
    assert_eq!(
        stack(&[base.finish(), t.finish()]).err().unwrap(),
        "/loop: refused: written through a lower layer's symlink to loop, which leads into itself"
    );
}

#[test]
fn a_hard_link_to_a_lower_file_joins_all_its_names() {
    skip_unless_root!();
    let mut base = Tar::default();
    base.entry(Hdr {
        name: b"a",
        mode: 0o4750,
        uid: 7,
        gid: 8,
        data: b"shared",
        ..Default::default()
    });
    base.hardlink("b", "a");
    base.symlink("s", "a");
    base.file("gone", b"deleted above");
    base.hardlink("gone2", "gone");
    let mut t = Tar::default();
    t.hardlink("c", "b");
    t.hardlink("c2", "c");
    t.hardlink("hs", "s");
    let mut wh = Tar::default();
    wh.file(".wh.gone", b"");
    let mut t3 = Tar::default();
    t3.hardlink("g3", "gone2");
    let s = stack(&[base.finish(), t.finish(), wh.finish(), t3.finish()]).unwrap();
    let l = s.listing();
    for name in ["a", "b", "c", "c2"] {
        assert!(
            l.contains(&format!("/{name} f 4750 7:8 shared")),
            "{name}: {l:#?}"
        );
        assert_eq!(s.ino(name), s.ino("a"), "{name}");
    }
    assert!(l.contains(&"/hs l 0777 0:0 a".to_string()), "{l:#?}");
    assert_eq!(s.ino("hs"), s.ino("s"));
    // gone2 still shows; its deleted name does not come back.
    assert!(!l.iter().any(|x| x.starts_with("/gone ")), "{l:#?}");
    assert_eq!(s.ino("g3"), s.ino("gone2"));
}

#[test]
fn a_link_keeps_the_lower_file_that_a_later_entry_replaces() {
    skip_unless_root!();
    let mut base = Tar::default();
    base.file("d", b"old");
    let mut t = Tar::default();
    t.hardlink("link-d", "d");
    t.file("d", b"new");
    t.hardlink("link-new", "d");
    let s = stack(&[base.finish(), t.finish()]).unwrap();
    assert_eq!(
        s.listing(),
        [
            "/d f 0644 0:0 new",
            "/link-d f 0644 0:0 old",
            "/link-new f 0644 0:0 new"
        ]
    );
    assert_eq!(s.ino("d"), s.ino("link-new"));
    assert_ne!(s.ino("d"), s.ino("link-d"));
    // A link to a path the layer deleted first is refused.
    let mut base = Tar::default();
    base.file("d", b"old");
    let mut t = Tar::default();
    t.file(".wh.d", b"");
    t.hardlink("link-d", "d");
    let e = stack(&[base.finish(), t.finish()]).err().unwrap();
    assert_eq!(
        e,
        "/link-d: refused: hard link target /d is deleted by this layer"
    );
}

#[test]
fn a_path_deleted_and_written_again_hides_the_lower_one() {
    skip_unless_root!();
    let mut base = Tar::default();
    base.dir("d");
    base.file("d/old", b"old");
    base.symlink("l", "d");
    let mut t = Tar::default();
    t.file(".wh.d", b"");
    t.file("d/new", b"new");
    t.file(".wh.l", b"");
    t.file("l/new", b"l is a directory now");
    let s = stack(&[base.finish(), t.finish()]).unwrap();
    assert_eq!(
        s.listing(),
        [
            "/d d 0755 0:0",
            "/d/new f 0644 0:0 new",
            "/l d 0755 0:0",
            "/l/new f 0644 0:0 l is a directory now",
        ]
    );
}
