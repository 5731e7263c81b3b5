//! Snapshot metadata at 10,000 snapshots: the snapshotter's redb store against the JSON
//! document rdpull's CLI store rewrites per change (the choice in docs/design.md
//! #containerd-snapshotter). Stat, List, and a Commit (prepare and remove untimed), each
//! on a store already holding 10k committed snapshots, on /var/tmp's filesystem; and Stat
//! while another thread commits.
//!   cargo bench -p rdpull-containerd-snapshotter --bench metadata

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use rdpull_containerd_snapshotter::metadata::{Files, Kind, Record, Usage};
use rdpull_containerd_snapshotter::snapshotter::Snapshotter;
use rdpull_snapshot::Store;

const N: usize = 10_000;

fn name(i: usize) -> String {
    format!("k8s.io/{i}/sha256:{i:064x}")
}

fn labels(i: usize) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "containerd.io/snapshot.ref".to_string(),
            format!("sha256:{i:064x}"),
        ),
        (
            "containerd.io/gc.root".to_string(),
            "2026-11-28T00:00:00Z".to_string(),
        ),
    ])
}

/// A snapshotter whose database holds N committed snapshots in chains of 10.
fn redb_store(dir: &std::path::Path) -> Snapshotter {
    let store = Arc::new(Store::open(dir).unwrap());
    let sn = Snapshotter::open(store.clone()).unwrap();
    drop(sn);
    let meta = rdpull_containerd_snapshotter::metadata::Metadata::open(
        &dir.join("containerd/metadata.redb"),
    )
    .unwrap();
    meta.write(|w| {
        for i in 0..N {
            w.put(&Record {
                name: name(i),
                parent: if i % 10 == 0 {
                    String::new()
                } else {
                    name(i - 1)
                },
                kind: Kind::Committed,
                labels: labels(i),
                created: 1,
                updated: 1,
                usage: Usage::default(),
                files: Files::Own(i as u64 + 1_000_000),
            })?;
        }
        Ok(())
    })
    .unwrap();
    drop(meta);
    // The parent the timed Prepares build on has files (a new upper takes their owner).
    let parent_fs = dir.join(format!("containerd/snapshots/{}/fs", N / 2 + 1_000_000));
    std::fs::create_dir_all(parent_fs).unwrap();
    Snapshotter::open(store).unwrap()
}

/// rdpull's CLI store with N committed snapshots in its JSON document.
fn json_store(dir: &std::path::Path) -> Store {
    let store = Store::open(dir).unwrap();
    let mut snapshots = serde_json::Map::new();
    for i in 0..N {
        snapshots.insert(
            name(i),
            serde_json::json!({
                "key": name(i), "id": i + 1_000_000,
                "parent": if i % 10 == 0 { None } else { Some(name(i - 1)) },
                "kind": "committed", "labels": labels(i), "created": 1, "updated": 1,
            }),
        );
    }
    let doc = serde_json::json!({"next_id": 2_000_000, "snapshots": snapshots});
    std::fs::write(
        dir.join("metadata.json"),
        serde_json::to_vec_pretty(&doc).unwrap(),
    )
    .unwrap();
    store
}

fn bench(c: &mut Criterion) {
    let t = tempfile::tempdir_in("/var/tmp").unwrap();
    let sn = redb_store(&t.path().join("redb"));
    let js = json_store(&t.path().join("json"));
    let mid = name(N / 2);
    let mut g = c.benchmark_group("metadata-10k");
    g.sample_size(20);
    g.bench_function("redb/stat", |b| {
        b.iter(|| black_box(sn.stat(&mid).unwrap()))
    });
    g.bench_function("json/stat", |b| {
        b.iter(|| black_box(js.stat(&mid).unwrap()))
    });
    g.bench_function("redb/list", |b| {
        b.iter(|| {
            let mut n = 0;
            sn.list(&[], |_| {
                n += 1;
                Ok(())
            })
            .unwrap();
            assert_eq!(n, N);
        });
    });
    g.bench_function("json/list", |b| {
        b.iter(|| assert_eq!(js.list().unwrap().len(), N))
    });
    g.finish();
    writes(c, &sn, &js, &mid);
    stat_while_committing(c, &sn, &mid);
}

/// Stat while another thread commits without pause: readers do not wait for the writer.
fn stat_while_committing(c: &mut Criterion, sn: &Snapshotter, mid: &str) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (key, done) = (format!("busy/{i}/active"), format!("busy/{i}/done"));
                sn.create(Kind::Active, &key, mid, BTreeMap::new()).unwrap();
                sn.commit(&done, &key, BTreeMap::new(), "").unwrap();
                sn.remove(&done).unwrap();
                i += 1;
            }
        });
        let mut g = c.benchmark_group("metadata-10k");
        g.sample_size(20);
        g.bench_function("redb/stat-while-committing", |b| {
            b.iter(|| black_box(sn.stat(mid).unwrap()));
        });
        g.finish();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

/// Prepare and Commit (each timed alone) on the stores of 10k snapshots.
fn writes(c: &mut Criterion, sn: &Snapshotter, js: &Store, mid: &str) {
    let mut g = c.benchmark_group("metadata-10k");
    g.sample_size(20);
    g.bench_function("redb/prepare", |b| {
        b.iter_custom(|iters| {
            timed(iters, |i| {
                let key = format!("bench/{i}/prepare");
                let t0 = Instant::now();
                sn.create(Kind::Active, &key, mid, BTreeMap::new()).unwrap();
                let d = t0.elapsed();
                sn.remove(&key).unwrap();
                d
            })
        });
    });
    g.bench_function("redb/commit", |b| {
        b.iter_custom(|iters| {
            timed(iters, |i| {
                let (key, done) = (format!("bench/{i}/active"), format!("bench/{i}/done"));
                sn.create(Kind::Active, &key, mid, BTreeMap::new()).unwrap();
                let t0 = Instant::now();
                sn.commit(&done, &key, BTreeMap::new(), "").unwrap();
                let d = t0.elapsed();
                sn.remove(&done).unwrap();
                d
            })
        });
    });
    g.bench_function("json/commit", |b| {
        b.iter_custom(|iters| {
            timed(iters, |i| {
                let (key, done) = (format!("bench/{i}/active"), format!("bench/{i}/done"));
                js.prepare(&key, Some(mid), BTreeMap::new()).unwrap();
                let t0 = Instant::now();
                js.commit(&done, &key, BTreeMap::new()).unwrap();
                let d = t0.elapsed();
                js.remove(&done).unwrap();
                d
            })
        });
    });
    g.finish();
}

fn timed(iters: u64, mut one: impl FnMut(u64) -> Duration) -> Duration {
    (0..iters).map(&mut one).sum()
}

criterion_group!(benches, bench);
criterion_main!(benches);
