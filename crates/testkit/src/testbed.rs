//! The shared testbed (`../shared/testbed` beside the repository, or `$RDPULL_TESTBED`):
//! where its scripts are, and running them.

use std::path::{Path, PathBuf};
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

/// The testbed's canonical listing of the tree `dir` (`tree-manifest`, run by python3),
/// with extra `args` such as `--mtime`; panics if it fails.
pub fn tree_manifest(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("python3")
        .arg(scripts().join("tree-manifest"))
        .arg(dir)
        .args(args)
        .output()
        .expect("run tree-manifest");
    assert!(
        o.status.success(),
        "tree-manifest: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}
