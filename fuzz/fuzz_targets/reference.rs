//! Image references: any string parses or is refused, and a parsed reference prints as
//! a string that parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rdpull_fetch::Reference;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = s.parse::<Reference>() {
        let printed = r.to_string();
        let again: Reference = printed.parse().expect("a printed reference parses");
        assert_eq!(again.to_string(), printed);
        let _ = (r.registry(), r.repository(), r.tag(), r.digest());
    }
});
