//! Chunked and resumed downloads against a server that misbehaves per request: the first
//! bytes pick the chunk size, window, stream and memory budgets and a list of faults
//! (truncated bodies, 5xx answers, delays that reorder chunks); the rest is the blob.
//! The stream must yield exactly the blob, or end in an error; never other bytes, a
//! panic, or a hang.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rdpull_fetch::{ChunkPolicy, ClientOptions, RetryPolicy};
use rdpull_testkit::download::{collect, open_blob};
use rdpull_testkit::registry::{sha256, FakeRegistry, Fault};

struct World {
    rt: tokio::runtime::Runtime,
    reg: FakeRegistry,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| World {
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
        reg: FakeRegistry::start(),
    })
}

/// One fault from a byte: its top two bits pick the kind, the rest its amount.
fn fault(b: u8) -> Fault {
    let n = (b & 0x3f) as usize;
    match b >> 6 {
        0 => Fault::Delay(Duration::from_millis(n as u64 % 4)),
        1 => Fault::Truncate(n * 7),
        2 => Fault::Status([500, 502, 503, 429][n % 4], None),
        _ => Fault::Truncate(0),
    }
}

async fn download(
    reg: &FakeRegistry,
    blob: &[u8],
    chunks: ChunkPolicy,
    streams: usize,
) -> Option<Vec<u8>> {
    let options = ClientOptions {
        chunks,
        retry: RetryPolicy {
            backoff_base: Duration::from_millis(1),
            backoff_max: Duration::from_millis(4),
            retry_after_max: Duration::ZERO,
            ..RetryPolicy::default()
        },
        ..ClientOptions::default()
    };
    collect(open_blob(reg, blob, 0, streams, options).await.ok()?)
        .await
        .ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((params, rest)) = data.split_first_chunk::<5>() else {
        return;
    };
    let faults = (params[4] % 16) as usize;
    if rest.len() < faults {
        return;
    }
    let (faults, blob) = rest.split_at(faults);
    let policy = ChunkPolicy {
        min_size: 1,
        // At least 64 bytes: a blob of up to 4 KiB then has at most 64 chunks.
        chunk_size: 64 + u64::from(params[0]) * 16,
        window: 1 + params[1] as usize % 6,
        memory: u64::from(params[3]) * 64,
    };
    let streams = 1 + params[2] as usize % 6;
    let w = world();
    let path = FakeRegistry::blob_path("r", &sha256(blob));
    w.reg
        .faults(&path, faults.iter().map(|&b| fault(b)).collect());
    let got = w.rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(30),
            download(&w.reg, blob, policy, streams),
        )
        .await
        .expect("the download hung")
    });
    if let Some(got) = got {
        assert!(
            got == blob,
            "reassembled {} bytes differ from the {}-byte blob",
            got.len(),
            blob.len()
        );
    }
});
