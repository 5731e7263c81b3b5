//! Container start, as a user runs it: `rdpull run --rm IMAGE true` on an image already
//! pulled (snapshot, overlay mount, bundle, launch, exit, cleanup) with the built-in
//! launcher and with the runc hand-off, next to `runc run` of a bundle prepared once
//! (runc's own cost, the floor the hand-off adds to). Needs root. `scripts/bench-run`
//! adds containerd's `ctr run` and podman, and the cold path from an empty store.
//!
//!     cargo bench --bench run

use std::path::Path;
use std::process::Command;

use criterion::{criterion_group, criterion_main, Criterion};
use rdpull_testkit::testbed;

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rdpull(root: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rdpull"));
    c.arg("--root").arg(root).args(["--plain-http", "-q"]);
    c
}

fn start(c: &mut Criterion) {
    if !rustix::process::geteuid().is_root() {
        eprintln!("benches/run.rs needs root; skipped");
        return;
    }
    testbed::run("registry-up", &[]);
    testbed::run("make-images", &["debian"]);
    let reference = "127.0.0.1:5000/debian:bookworm";
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let bundle = dir.path().join("bundle");
    run(rdpull(&root).args(["pull", reference]));
    run(rdpull(&root)
        .args(["bundle", reference])
        .arg(&bundle)
        .args(["--", "true"]));
    let mut g = c.benchmark_group("run --rm IMAGE true");
    g.sample_size(20);
    g.bench_function("rdpull run (built-in launcher)", |b| {
        b.iter(|| run(rdpull(&root).args(["run", "--rm", reference, "true"])));
    });
    g.bench_function("rdpull run --runtime runc", |b| {
        b.iter(|| run(rdpull(&root).args(["run", "--rm", "--runtime", "runc", reference, "true"])));
    });
    let mut n = 0;
    g.bench_function("runc run (prepared bundle)", |b| {
        b.iter(|| {
            n += 1;
            run(Command::new("runc")
                .args(["run", "--bundle"])
                .arg(&bundle)
                .arg(format!("rdpull-bench-{}-{n}", std::process::id())));
        });
    });
    g.finish();
}

criterion_group!(benches, start);
criterion_main!(benches);
