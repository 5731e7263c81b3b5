//! What Docker's default seccomp filter costs a container start: generating its program
//! with libseccomp (a start with a profile not seen before), reading it from the cache
//! (every later start), and loading it (a forked child that loads it and exits,
//! against one that only exits).
//!
//!     cargo bench -p rdpull-run --bench seccomp

use criterion::{criterion_group, criterion_main, Criterion};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult};
use oci_spec::image::ImageConfiguration;
use rdpull_run::{runtime_spec, RunOptions};

fn spec() -> oci_spec::runtime::Spec {
    let rootfs = tempfile::tempdir().unwrap();
    let config: ImageConfiguration =
        serde_json::from_value(serde_json::json!({"architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []}, "config": {"Cmd": ["true"]}}))
        .unwrap();
    runtime_spec(&config, rootfs.path(), &RunOptions::default(), "bench").unwrap()
}

/// Fork a child that runs `child` and exits; wait for it.
fn in_child(child: impl FnOnce()) {
    // SAFETY: the child only runs `child` and `_exit`s.
    #[allow(unsafe_code)]
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            child();
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { nix::libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            waitpid(child, None).unwrap();
        }
    }
}

fn seccomp(c: &mut Criterion) {
    let spec = spec();
    let filter = |load| rdpull_run::launch::seccomp_filter_for_bench(&spec, load).unwrap();
    let mut g = c.benchmark_group("seccomp (Docker's default profile)");
    g.bench_function("generate", |b| b.iter(|| filter(false)));
    g.bench_function("fork, exit", |b| b.iter(|| in_child(|| {})));
    g.bench_function("fork, generate and load, exit", |b| {
        b.iter(|| in_child(|| filter(true)));
    });
    let cache = tempfile::tempdir().unwrap();
    std::env::set_var(rdpull_run::launch::SECCOMP_CACHE_ENV, cache.path());
    filter(false);
    g.bench_function("read from the cache", |b| b.iter(|| filter(false)));
    g.bench_function("fork, read from the cache and load, exit", |b| {
        b.iter(|| in_child(|| filter(true)));
    });
    g.finish();
}

criterion_group!(benches, seccomp);
criterion_main!(benches);
