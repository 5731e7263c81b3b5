//! `WWW-Authenticate` headers: any value gives challenges or none, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rdpull_fetch::parse_challenges;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for c in parse_challenges(s) {
        let _ = (c.param("realm"), c.param("service"), c.param("scope"));
    }
});
