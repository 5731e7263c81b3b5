//! Throughput of each pipeline stage on real layer data, to choose backends and techniques
//! (docs/performance.md). Inputs: the testbed's debian:bookworm layer (gzip and zstd),
//! fetched once from the registry that `../shared/testbed/registry-up` starts; synthetic
//! tars for tar application. Tar application writes to /dev/shm so that the numbers are
//! the unpacker's CPU and syscall cost, not this VM's disk (docs/performance.md, on
//! deleted inodes). The C backends compared here (ISA-L igzip, zlib-ng, libdeflate,
//! aws-lc, ring) are why this is a crate of its own, outside the default members: building
//! them needs nasm, autotools and cmake (`scripts/build-deps`).
//!
//!     scripts/build-deps && cargo bench -p rdpull-stage-bench

mod c_backends;

use std::path::Path;
use std::process::Command;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rdpull_testkit::{testbed, Tar};
use rdpull_unpack::{Compression, Decoder};
use sha2::Digest as _;

use c_backends::{igzip_gunzip, zlib_ng_gunzip};

/// The single layer blob of `image` on the testbed registry, cached under target/.
fn layer_blob(image: &str) -> Vec<u8> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(image.replace([':', '/'], "_"));
    if let Ok(b) = std::fs::read(&file) {
        return b;
    }
    testbed::run("registry-up", &[]);
    testbed::run("make-images", &["debian", "variants"]);
    let out = Command::new("python3")
        .arg(testbed::scripts().join("regtool.py"))
        .args(["layers", &format!("127.0.0.1:5000/{image}")])
        .output()
        .unwrap();
    let digest = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let repo = image.split(':').next().unwrap();
    let st = Command::new("curl")
        .args(["-sf", "-o"])
        .arg(&file)
        .arg(format!("http://127.0.0.1:5000/v2/{repo}/blobs/{digest}"))
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::read(&file).unwrap()
}

fn gunzip_len(gz: &[u8]) -> usize {
    let mut d = flate2::read::MultiGzDecoder::new(gz);
    std::io::copy(&mut d, &mut std::io::sink()).unwrap() as usize
}

/// Read `r` to its end in pieces of the unpacker's pipe buffer (256 KiB), as a layer's
/// decoding thread does: smaller output buffers slow some decoders down.
fn drain(r: &mut impl std::io::Read) -> usize {
    drain_into(r, |_| {})
}

/// `drain`, handing each piece to `each` as it comes (the DiffID hash, in the fused group).
fn drain_into(r: &mut impl std::io::Read, mut each: impl FnMut(&[u8])) -> usize {
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0;
    loop {
        match r.read(&mut buf).unwrap() {
            0 => return total,
            n => {
                each(&buf[..n]);
                total += n
            }
        }
    }
}

/// The raw deflate stream of a single-member gzip file (RFC 1952 header skipped).
fn deflate_payload(gz: &[u8]) -> &[u8] {
    let flags = gz[3];
    let mut i = 10;
    if flags & 4 != 0 {
        i += 2 + u16::from_le_bytes([gz[i], gz[i + 1]]) as usize;
    }
    for bit in [8, 16] {
        if flags & bit != 0 {
            i += gz[i..].iter().position(|&b| b == 0).unwrap() + 1;
        }
    }
    if flags & 2 != 0 {
        i += 2;
    }
    &gz[i..gz.len() - 8]
}

fn hashing(c: &mut Criterion) {
    let data = vec![0x5au8; 64 << 20];
    let mut g = c.benchmark_group("sha256");
    g.sample_size(10)
        .throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("sha2 (SHA-NI when present)", |b| {
        b.iter(|| sha2::Sha256::digest(&data))
    });
    g.bench_function("aws-lc-rs", |b| {
        b.iter(|| aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &data))
    });
    g.bench_function("ring", |b| {
        b.iter(|| ring::digest::digest(&ring::digest::SHA256, &data))
    });
    g.finish();
}

fn inflate(c: &mut Criterion) {
    let gz = layer_blob("debian:bookworm");
    let out_len = gunzip_len(&gz);
    let mut g = c.benchmark_group("inflate debian layer");
    g.sample_size(10)
        .throughput(Throughput::Bytes(out_len as u64));
    g.bench_function("flate2 + zlib-rs, streaming (used)", |b| {
        b.iter(|| {
            let mut d = Decoder::new(Compression::Gzip, &gz[..]).unwrap();
            drain(&mut d)
        })
    });
    g.bench_function("ISA-L igzip, streaming", |b| {
        let mut out = vec![0u8; 256 << 10];
        b.iter(|| assert_eq!(igzip_gunzip(&gz, &mut out, |_| {}), out_len))
    });
    g.bench_function("zlib-ng, streaming", |b| {
        let mut out = vec![0u8; 256 << 10];
        b.iter(|| assert_eq!(zlib_ng_gunzip(&gz, &mut out), out_len))
    });
    let raw = deflate_payload(&gz);
    g.bench_function("miniz_oxide, whole buffer", |b| {
        b.iter(|| miniz_oxide::inflate::decompress_to_vec(raw).unwrap().len())
    });
    g.bench_function("libdeflate, whole buffer", |b| {
        let mut out = vec![0u8; out_len];
        let mut d = libdeflater::Decompressor::new();
        b.iter(|| d.gzip_decompress(&gz, &mut out).unwrap())
    });
    g.finish();

    // What a layer's decoding thread does with each piece: inflate it, then hash it for the
    // DiffID. This, not inflate alone, decided the backend (docs/performance.md).
    let mut g = c.benchmark_group("inflate + sha256 debian layer");
    g.sample_size(10)
        .throughput(Throughput::Bytes(out_len as u64));
    g.bench_function("flate2 + zlib-rs (used)", |b| {
        b.iter(|| {
            let mut h = sha2::Sha256::new();
            let mut d = Decoder::new(Compression::Gzip, &gz[..]).unwrap();
            drain_into(&mut d, |p| h.update(p));
            h.finalize()
        })
    });
    g.bench_function("ISA-L igzip", |b| {
        let mut out = vec![0u8; 256 << 10];
        b.iter(|| {
            let mut h = sha2::Sha256::new();
            igzip_gunzip(&gz, &mut out, |p| h.update(p));
            h.finalize()
        })
    });
    g.finish();

    let zst = layer_blob("debian:bookworm-zstd");
    let mut g = c.benchmark_group("zstd debian layer");
    g.sample_size(10)
        .throughput(Throughput::Bytes(out_len as u64));
    g.bench_function("zstd (libzstd), streaming (used)", |b| {
        b.iter(|| {
            let mut d = zstd::stream::read::Decoder::new(&zst[..]).unwrap();
            drain(&mut d)
        })
    });
    g.finish();
}

fn tar_apply(c: &mut Criterion) {
    let mut small = Tar::default();
    for i in 0..20_000 {
        small.file(
            &format!("d{:03}/f{i:05}", i / 200),
            &vec![b'x'; 100 + i % 1900],
        );
    }
    let small = small.finish();
    let big = rdpull_testkit::noise(256 << 20, 1);
    let large = Tar::default().file("big", &big).finish();
    // tmpfs shows the unpacker's own CPU and syscall cost; the disk (ext4 under
    // target/) adds the filesystem's, which is what a pull pays.
    let disk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-apply");
    std::fs::create_dir_all(&disk).unwrap();
    for (fs, base) in [("tmpfs", Path::new("/dev/shm")), ("ext4", disk.as_path())] {
        let mut g = c.benchmark_group(format!("tar apply ({fs})"));
        g.sample_size(10)
            .warm_up_time(std::time::Duration::from_secs(1));
        let mut kept = Vec::new();
        for (name, tar, files) in [
            ("20k small files", &small, 20_000u64),
            ("one 256 MiB file", &large, 1),
        ] {
            g.throughput(if files > 1 {
                Throughput::Elements(files)
            } else {
                Throughput::Bytes(tar.len() as u64)
            });
            let options = rdpull_unpack::ApplyOptions::default();
            g.bench_with_input(BenchmarkId::new("applying thread", name), tar, |b, tar| {
                // Trees are removed only after the group: on this VM's ext4 (no
                // journal) creating files right after a large delete is several
                // times slower, which would measure the previous iteration's rm.
                b.iter_custom(|iters| {
                    let mut took = std::time::Duration::ZERO;
                    for _ in 0..iters {
                        let dir = tempfile::tempdir_in(base).unwrap();
                        let start = std::time::Instant::now();
                        let mut r = &tar[..];
                        rdpull_unpack::apply_tar(&mut r, dir.path(), &options).unwrap();
                        took += start.elapsed();
                        kept.push(dir);
                    }
                    took
                })
            });
        }
        g.finish();
        drop(kept);
    }
}

criterion_group!(benches, hashing, inflate, tar_apply);
criterion_main!(benches);
