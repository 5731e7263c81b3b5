//! Manifests and indexes as a registry sends them: the media type decision and the
//! document parse, for two platforms, under the manifest size cap. First byte: which
//! Content-Type the "registry" sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rdpull_fetch::manifest::{document_media_type, parse_document};
use rdpull_fetch::{Platform, Reference};
use rdpull_verify::Digest;

const HEADER_TYPES: [&str; 6] = [
    "",
    "application/json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, doc)) = data.split_first() else {
        return;
    };
    if doc.len() > 4 << 20 {
        return; // the client refuses larger documents before it parses them
    }
    let header = HEADER_TYPES[pick as usize % HEADER_TYPES.len()].to_string();
    let Ok(media_type) = document_media_type(doc, "manifest", header) else {
        return;
    };
    let reference: Reference = "registry.example/app:v1".parse().unwrap();
    let digest = Digest::sha256_of(doc);
    for platform in ["linux/amd64", "linux/arm64/v8"] {
        let platform: Platform = platform.parse().unwrap();
        let _ = parse_document(doc, &media_type, &digest, &reference, &platform);
    }
});
