//! The shared testbed (`../shared/testbed` beside the repository, or `$RDPULL_TESTBED`):
//! where its scripts are, and running them.

use std::path::PathBuf;
use std::process::Command;

/// The testbed's script directory.
pub fn scripts() -> PathBuf {
    match std::env::var_os("RDPULL_TESTBED") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/testbed"
        )),
    }
}

/// Run the bash script `script` with `args` (`registry-up`, `make-images debian`, ...);
/// panics if it fails. The scripts are idempotent.
pub fn run(script: &str, args: &[&str]) {
    let st = Command::new("bash")
        .arg(scripts().join(script))
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "testbed {script} {args:?} failed");
}
