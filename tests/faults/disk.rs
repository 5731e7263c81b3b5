//! Full disks: a pull that runs out of space fails with one line naming the path, gives
//! the space back before it rewrites any metadata, leaves the store consistent, and the
//! next pull after space is freed succeeds. A read-only store fails the same way.
//! (EIO and EDQUOT take the same path; this kernel has neither device-mapper nor quota
//! support to produce them.)

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// A tmpfs of `mib` MiB mounted on a fresh directory, unmounted on drop.
struct SmallDisk {
    _dir: tempfile::TempDir,
    mnt: PathBuf,
}

impl SmallDisk {
    fn new(mib: u32) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("disk");
        std::fs::create_dir(&mnt).unwrap();
        mount(&mnt, &format!("size={mib}m"));
        SmallDisk { _dir: dir, mnt }
    }

    fn resize(&self, mib: u32) {
        mount(&self.mnt, &format!("remount,size={mib}m"));
    }

    /// Bytes in use on the disk.
    fn used(&self) -> u64 {
        let st = rustix::fs::statvfs(&self.mnt).unwrap();
        (st.f_blocks - st.f_bfree) * st.f_frsize
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

fn mount(at: &Path, options: &str) {
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", options, "tmpfs"])
        .arg(at)
        .status()
        .unwrap();
    assert!(st.success(), "mount -o {options} {}", at.display());
}

#[test]
fn a_full_disk_fails_the_pull_naming_the_path_and_gives_the_space_back() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    // 24 MiB that do not compress, and a small file after them.
    let mut layer = Tar::default();
    layer.file("big", &rdpull_testkit::noise(24 << 20, 7));
    layer.file("after", b"x");
    reg.push("app", "v1", &[one_file_layer("base", b"b"), layer.finish()]);
    let disk = SmallDisk::new(16);
    let root = disk.mnt.join("root");
    let e = fails(pull(&reg, &root, "app:v1"));
    assert!(
        e.starts_with("rdpull: error: layer 2/2 sha256:")
            && e.ends_with(": /big: write: No space left on device (os error 28)"),
        "{e}"
    );
    // The partial layer is gone and the base layer committed; the space is back.
    let (committed, active) = snapshots(&root);
    assert_eq!((committed.len(), active.len()), (1, 0));
    assert_clean(&root);
    assert!(disk.used() < 1 << 20, "{} bytes still used", disk.used());

    disk.resize(64);
    ok(pull(&reg, &root, "app:v1"));
    let dir = disk.mnt.join("rootfs");
    unpack(&reg, &root, "app:v1", &dir);
    assert_eq!(
        listing(&dir),
        [
            "/after f 0644 0:0 x",
            "/base f 0644 0:0 b",
            &format!("/big f 0644 0:0 <{} bytes>", 24 << 20)
        ]
    );
}

/// The store's `snapshots` directory read-only (a bind mount), unmounted on drop.
struct ReadOnly(PathBuf);

impl ReadOnly {
    fn new(dir: &Path) -> ReadOnly {
        for args in [&["--bind"][..], &["-o", "remount,bind,ro"]] {
            let st = Command::new("mount")
                .args(args)
                .arg(dir)
                .arg(dir)
                .status()
                .unwrap();
            assert!(st.success(), "mount {args:?} {}", dir.display());
        }
        ReadOnly(dir.to_path_buf())
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_read_only_store_fails_the_pull_naming_the_path_and_keeps_what_was_committed() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let base = one_file_layer("base", b"b");
    reg.push("base", "v1", std::slice::from_ref(&base));
    reg.push("app", "v1", &[base, one_file_layer("app", b"a")]);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    ok(pull(&reg, &root, "base:v1"));
    let e = {
        let _ro = ReadOnly::new(&root.join("snapshots"));
        fails(pull(&reg, &root, "app:v1"))
    };
    assert_eq!(
        e,
        format!(
            "rdpull: error: {}/snapshots/2/fs: Read-only file system (os error 30)",
            root.display()
        )
    );
    let (committed, active) = snapshots(&root);
    assert_eq!((committed.len(), active.len()), (1, 0));
    assert_clean(&root);

    ok(pull(&reg, &root, "app:v1"));
    let dir = tmp.path().join("rootfs");
    unpack(&reg, &root, "app:v1", &dir);
    assert_eq!(listing(&dir), ["/app f 0644 0:0 a", "/base f 0644 0:0 b"]);
}

/// Kept bytes are not to blame for a full disk: the pull that continues them fails on
/// the disk with one line, without fetching the layer again from byte 0.
#[test]
fn a_full_disk_while_continuing_kept_bytes_does_not_refetch_the_layer() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let mut layer = Tar::default();
    layer.file("big", &rdpull_testkit::noise(24 << 20, 9));
    let p = reg.push("app", "v1", &[layer.finish()]);
    let path = FakeRegistry::blob_path("app", &p.layer_digests[0]);
    let disk = SmallDisk::new(64);
    let root = disk.mnt.join("root");
    let kept = root
        .join("ingest")
        .join(p.layer_digests[0].replacen(':', "-", 1));
    let image = format!("{}/app:v1", reg.addr);
    let args = ["--resume-min-size", "0", "--plain-http", "pull", &image];
    reg.faults(&path, vec![Fault::Stall(1 << 20)]);
    let mut child = common::spawn(&root, &args);
    common::wait_until("the first MiB to be kept", 30, || {
        std::fs::metadata(&kept).is_ok_and(|m| m.len() == 1 << 20)
    });
    child.kill().unwrap();
    child.wait().unwrap();

    disk.resize(16);
    let e = fails(rdpull(&root, &args));
    assert!(
        e.ends_with(": /big: write: No space left on device (os error 28)"),
        "{e}"
    );
    let ranges: Vec<Option<String>> = reg
        .requests(&path)
        .into_iter()
        .map(|r| r.headers.get("range").cloned())
        .collect();
    assert_eq!(ranges, [None, Some(format!("bytes={}-", 1 << 20))]);
}
