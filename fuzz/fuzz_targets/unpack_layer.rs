//! A whole layer on any bytes: gzip, zstd or plain by the first byte, the blob digest and
//! size right (so that decompression and the tar stream are reached), the DiffID of the
//! bytes themselves (so that its check runs and almost always fails). No panic, nothing
//! outside the layer directory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rdpull_unpack::{unpack_layer, ApplyOptions, LayerDescriptor};
use rdpull_verify::Digest;

const MEDIA_TYPES: [&str; 3] = [
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.v1.tar",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, blob)) = data.split_first() else {
        return;
    };
    let sandbox = tempfile::tempdir_in("/dev/shm").unwrap();
    let layer = sandbox.path().join("layer");
    std::fs::create_dir(&layer).unwrap();
    let digest = Digest::sha256_of(blob);
    let desc = LayerDescriptor {
        digest: &digest,
        size: blob.len() as u64,
        media_type: MEDIA_TYPES[pick as usize % MEDIA_TYPES.len()],
        diff_id: &digest,
    };
    let _ = unpack_layer(blob, &desc, &layer, &ApplyOptions::default());
    let names: Vec<_> = std::fs::read_dir(sandbox.path()).unwrap().collect();
    assert_eq!(
        names.len(),
        1,
        "something appeared beside the layer directory"
    );
});
