//! The tar applier on any bytes, as root: applied into a fresh layer directory beside a
//! canary directory. No panic; the canary is untouched and nothing appears beside the
//! two.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rdpull_testkit::dir_names;
use rdpull_unpack::{apply_tar, ApplyOptions};

fuzz_target!(|data: &[u8]| {
    // /dev/shm: the fuzzer's speed is the applier's, not a disk's.
    let sandbox = tempfile::tempdir_in("/dev/shm").unwrap();
    let (layer, canary) = (sandbox.path().join("layer"), sandbox.path().join("canary"));
    std::fs::create_dir(&layer).unwrap();
    std::fs::create_dir(&canary).unwrap();
    std::fs::write(canary.join("file"), b"canary").unwrap();
    let mut input = data;
    let _ = apply_tar(&mut input, &layer, &ApplyOptions::default());
    assert_eq!(dir_names(sandbox.path()), ["canary", "layer"]);
    assert_eq!(dir_names(&canary), ["file"]);
    assert_eq!(std::fs::read(canary.join("file")).unwrap(), b"canary");
});
