//! Whole pulls, as a user runs them: the `rdpull` binary against the testbed's loopback
//! registry (started and filled by the bench itself), into a fresh store each iteration.
//! The store lives on /dev/shm so the figure is the pipeline's own cost (network, hashing,
//! decompression, tar application, commit) and not this VM's disk, whose ext4 (no
//! journal) creates files slowly for minutes after a large delete, so back-to-back runs
//! drift (docs/performance.md). `scripts/bench-compare` covers the on-disk pull next to the peer tools.
//!
//!     cargo bench --bench pull

use std::process::Command;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rdpull_testkit::testbed;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Uncompressed size of `image` (the sum of its layers' tar streams).
fn uncompressed(reference: &str) -> u64 {
    let out = run(Command::new("python3")
        .arg(testbed::scripts().join("regtool.py"))
        .args(["usize", reference]));
    out.trim().parse().unwrap()
}

fn pull(c: &mut Criterion) {
    testbed::run("registry-up", &[]);
    testbed::run("make-images", &["debian", "variants", "multi"]);
    let mut g = c.benchmark_group("pull (store on tmpfs)");
    g.sample_size(10);
    for image in ["debian:bookworm", "debian:bookworm-zstd", "multi:latest"] {
        let reference = format!("127.0.0.1:5000/{image}");
        g.throughput(Throughput::Bytes(uncompressed(&reference)));
        g.bench_with_input(BenchmarkId::new("rdpull", image), &reference, |b, r| {
            b.iter_batched(
                || tempfile::tempdir_in("/dev/shm").unwrap(),
                |root| {
                    run(Command::new(env!("CARGO_BIN_EXE_rdpull"))
                        .arg("--root")
                        .arg(root.path())
                        .args(["--plain-http", "-q", r]));
                    root
                },
                criterion::BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, pull);
criterion_main!(benches);
