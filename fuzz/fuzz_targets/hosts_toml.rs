//! containerd's hosts.toml: any text gives endpoints or one error.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rdpull_fetch::hosts;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/containerd/certs.d/registry.example/hosts.toml");
    if let Ok(specs) = hosts::parse(text, path, "registry.example", "https://registry.example") {
        assert!(!specs.is_empty(), "the server is always the last endpoint");
    }
});
