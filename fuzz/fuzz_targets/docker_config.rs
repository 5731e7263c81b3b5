//! The docker CLI's config.json: any bytes give credentials, a helper, nothing, or one
//! error, for a Hub name and a host:port.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rdpull_fetch::docker_config;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/root/.docker/config.json");
    for registry in ["docker.io", "registry.example:5000"] {
        let _ = docker_config::parse(data, path, registry);
    }
});
