//! Two layers on any bytes, as root: the first two bytes say where the lower layer's tar
//! ends and the upper one's begins. Both are applied, then the upper is settled on the
//! lower (symlinks followed, metadata and hard links taken from below). No panic; the
//! canary beside them is untouched, nothing appears beside the three directories, and
//! settling writes nothing in the lower layer.
#![no_main]

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rdpull_testkit::dir_names;
use rdpull_unpack::{apply_tar, settle_on_lowers, ApplyOptions};

/// Every entry below `dir`: path, inode, mode, owner, size, mtime.
fn tree(dir: &Path, out: &mut Vec<(String, u64, u32, u32, u32, u64, i64)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        out.push((p.display().to_string(), m.ino(), m.mode(), m.uid(), m.gid(), m.size(), m.mtime()));
        if m.is_dir() {
            tree(&p, out);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let split = (usize::from(u16::from_le_bytes([data[0], data[1]])) % (data.len() - 1)) + 2;
    let (lower_tar, upper_tar) = data[2..].split_at(split - 2);
    let sandbox = tempfile::tempdir_in("/dev/shm").unwrap();
    let top = sandbox.path();
    let (lower, upper, canary) = (top.join("l0"), top.join("l1"), top.join("canary"));
    for d in [&lower, &upper, &canary] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(canary.join("file"), b"canary").unwrap();
    let options = ApplyOptions::default();
    let _ = apply_tar(&mut &lower_tar[..], &lower, &options);
    if let Ok(stats) = apply_tar(&mut &upper_tar[..], &upper, &options) {
        let mut before = Vec::new();
        tree(&lower, &mut before);
        let _ = settle_on_lowers(&upper, &[lower.as_path()], stats.lower_refs, &options);
        let mut after = Vec::new();
        tree(&lower, &mut after);
        assert_eq!(before, after, "settling changed the lower layer");
    }
    assert_eq!(dir_names(top), ["canary", "l0", "l1"]);
    assert_eq!(dir_names(&canary), ["file"]);
    assert_eq!(std::fs::read(canary.join("file")).unwrap(), b"canary");
});
