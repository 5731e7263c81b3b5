//! Shared helpers for rdpull's integration tests: running the binary, listing trees with
//! the testbed's `tree-manifest`, and an in-process registry that injects faults.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The testbed scripts: `$RDPULL_TESTBED` or `../shared/testbed` beside the checkout.
#[allow(unused_imports)] // used by the testbed binary only
pub(crate) use rdpull_testkit::testbed::scripts as testbed;

pub(crate) fn testbed_dir() -> PathBuf {
    PathBuf::from(std::env::var("TESTBED_DIR").unwrap_or_else(|_| "/var/tmp/rdpull-testbed".into()))
}

/// The rdpull command with `--root root` and `args`, isolated from the machine's
/// RDPULL_ROOT and docker config (no stray credentials).
pub(crate) fn command(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rdpull"));
    c.arg("--root")
        .arg(root)
        .args(args)
        .env_remove("RDPULL_ROOT")
        .env("DOCKER_CONFIG", "/nonexistent/rdpull-tests");
    c
}

/// Run rdpull as the user `uid`, with `--root root` and the given arguments.
pub(crate) fn rdpull_as(uid: u32, root: &Path, args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    command(root, args).uid(uid).output().expect("run rdpull")
}

/// Run rdpull with `--root root` and the given arguments.
pub(crate) fn rdpull(root: &Path, args: &[&str]) -> Output {
    command(root, args).output().expect("run rdpull")
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert success, showing the output otherwise.
pub(crate) fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "rdpull failed: {}\n{}",
        stderr(&o),
        stdout(&o)
    );
    o
}

/// Assert failure with exit code 1 and exactly one stderr line; return that line.
pub(crate) fn fails(o: Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected failure, got {:?}: {}",
        o.status,
        stdout(&o)
    );
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "error must be one line: {err}");
    lines[0].to_string()
}

/// The testbed's canonical listing of a tree (python3 tree-manifest).
pub(crate) fn tree_manifest(dir: &Path) -> String {
    rdpull_testkit::testbed::tree_manifest(dir, &[])
}

/// Snapshot store state: (committed keys, active keys), from the store's metadata.
pub(crate) fn snapshots(root: &Path) -> (Vec<String>, Vec<String>) {
    let meta = match std::fs::read(root.join("metadata.json")) {
        Ok(m) => m,
        Err(_) => return (vec![], vec![]),
    };
    let v: serde_json::Value = serde_json::from_slice(&meta).unwrap();
    let mut committed = vec![];
    let mut active = vec![];
    for (k, info) in v["snapshots"].as_object().unwrap() {
        match info["kind"].as_str().unwrap() {
            "committed" => committed.push(k.clone()),
            _ => active.push(k.clone()),
        }
    }
    (committed, active)
}

/// Snapshot directories on disk (to check nothing is left behind).
pub(crate) fn snapshot_dirs(root: &Path) -> usize {
    std::fs::read_dir(root.join("snapshots"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Start rdpull with `--root root` and `args` in the background (stdout discarded).
pub(crate) fn spawn(root: &Path, args: &[&str]) -> std::process::Child {
    command(root, args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start rdpull")
}

/// [`spawn`], with stderr kept for the test to read.
pub(crate) fn spawn_capturing(root: &Path, args: &[&str]) -> std::process::Child {
    command(root, args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start rdpull")
}

/// Poll `cond` every 20 ms; fail the test with `what` after `secs` seconds.
pub(crate) fn wait_until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !cond() {
        assert!(t0.elapsed().as_secs() < secs, "timed out waiting: {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
