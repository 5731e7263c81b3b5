//! The tar applier on any bytes, as root: applied into a fresh layer directory beside a
//! canary directory. No panic; the canary is untouched and nothing appears beside the
//! two.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rdpull_unpack::{apply_tar, ApplyOptions};

fn sandbox_names(top: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(top)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fuzz_target!(|data: &[u8]| {
    // /dev/shm: the fuzzer's speed is the applier's, not a disk's.
    let sandbox = tempfile::tempdir_in("/dev/shm").unwrap();
    let (layer, canary) = (sandbox.path().join("layer"), sandbox.path().join("canary"));
    std::fs::create_dir(&layer).unwrap();
    std::fs::create_dir(&canary).unwrap();
    std::fs::write(canary.join("file"), b"canary").unwrap();
    let mut input = data;
    let _ = apply_tar(&mut input, &layer, &ApplyOptions::default());
    assert_eq!(sandbox_names(sandbox.path()), ["canary", "layer"]);
    assert_eq!(sandbox_names(&canary), ["file"]);
    assert_eq!(std::fs::read(canary.join("file")).unwrap(), b"canary");
});
