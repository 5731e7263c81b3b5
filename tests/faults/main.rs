//! rdpull against an in-process registry ([`rdpull_testkit::registry::FakeRegistry`]) that
//! misbehaves on request. Needs root (unpacking sets owners and makes devices); as
//! non-root each test says it is skipped.
//!
//! Themes: [`bad_input`] (every bad input fails the pull with one clear line and exit 1,
//! and hostile layers stay inside), [`interruption`] (failures and kills leave nothing
//! half-committed and keep what was committed), [`concurrency`] (several processes on
//! one root), [`crash`] (SIGKILL at many points), [`disk`] (a full disk), [`network`] (downloads that survive the
//! network), [`resume`] (a killed pull's bytes kept and continued).
// A test is one scenario, steps and assertions in order; splitting it would hide it.
#![allow(clippy::too_many_lines)]

#[path = "../common/mod.rs"]
mod common;

mod bad_input;
mod concurrency;
mod crash;
mod disk;
mod interruption;
mod network;
mod resume;

use common::{fails, ok, rdpull, snapshot_dirs, snapshots, stdout};
use rdpull_testkit::registry::{
    gzip, one_file_layer, sha256, FakeRegistry, Fault, Pushed, Reply, LAYER_GZIP, OCI_MANIFEST,
};
use rdpull_testkit::skip_unless_root;
use rdpull_testkit::{listing, Tar};

fn pull(reg: &FakeRegistry, root: &std::path::Path, image: &str) -> std::process::Output {
    rdpull(
        root,
        &["--plain-http", "pull", &format!("{}/{image}", reg.addr)],
    )
}

/// `rdpull unpack` of `image` (on `reg`) into `dir`, with the store at `root`.
fn unpack(reg: &FakeRegistry, root: &std::path::Path, image: &str, dir: &std::path::Path) {
    ok(rdpull(
        root,
        &[
            "unpack",
            &format!("{}/{image}", reg.addr),
            dir.to_str().unwrap(),
        ],
    ));
}

/// Make layer `i` of `app` send half its blob, then hang. Returns the blob's path.
fn stall_halfway(reg: &FakeRegistry, p: &Pushed, i: usize) -> String {
    let path = FakeRegistry::blob_path("app", &p.layer_digests[i]);
    reg.set(
        &path,
        Reply::Stall {
            body: p.blobs[i].clone(),
            send: p.blobs[i].len() / 2,
        },
    );
    path
}

/// After a failed pull: no active snapshot and no directory beyond the committed ones.
fn assert_clean(root: &std::path::Path) {
    let (committed, active) = snapshots(root);
    assert!(active.is_empty(), "active snapshots left: {active:?}");
    assert_eq!(
        snapshot_dirs(root),
        committed.len(),
        "orphan snapshot directories"
    );
}
