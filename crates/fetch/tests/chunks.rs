//! Chunked and resumed downloads reassemble to exactly the blob, whatever the sizes, the
//! order in which chunks arrive, and where bodies break off.

use std::time::Duration;

use futures_util::StreamExt;
use proptest::prelude::*;
use rdpull_fetch::{BlobStream, ChunkPolicy, ClientOptions, RetryPolicy};
use rdpull_testkit::download::{collect, open_blob};
use rdpull_testkit::registry::{FakeRegistry, Fault};

async fn download(reg: &FakeRegistry, data: &[u8], chunks: ChunkPolicy, streams: usize) -> Vec<u8> {
    download_from(reg, data, 0, chunks, streams).await
}

/// Bytes `start..` of `data`, downloaded.
async fn download_from(
    reg: &FakeRegistry,
    data: &[u8],
    start: u64,
    chunks: ChunkPolicy,
    streams: usize,
) -> Vec<u8> {
    collect(open(reg, data, start, chunks, streams).await)
        .await
        .unwrap()
}

/// Start downloading `data` (put into `reg` first) from `start` under a budget of `streams`.
async fn open(
    reg: &FakeRegistry,
    data: &[u8],
    start: u64,
    chunks: ChunkPolicy,
    streams: usize,
) -> BlobStream {
    let options = ClientOptions {
        chunks,
        retry: RetryPolicy {
            backoff_base: Duration::from_millis(1),
            ..RetryPolicy::default()
        },
        stall_timeout: Duration::from_secs(4),
        ..ClientOptions::default()
    };
    open_blob(reg, data, start, streams, options).await.unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn reassembled_stream_equals_the_blob(
        size in 1usize..1_500_000,
        chunk_size in 1u64..400_000,
        window in 1usize..6,
        streams in 1usize..6,
        memory in 0u64..1_000_000,
        delays in proptest::collection::vec(0u64..20, 0..12),
        truncations in proptest::collection::vec(proptest::option::of(1usize..50_000), 0..6),
        seed in any::<u64>(),
        start in proptest::option::of(0usize..1_600_000),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        let reg = FakeRegistry::start();
        let data = rdpull_testkit::noise(size, seed);
        let path = FakeRegistry::blob_path("r", &rdpull_testkit::registry::sha256(&data));
        // Random per-request delays reorder chunk arrivals; truncations force resumes.
        let mut faults: Vec<Fault> = Vec::new();
        for (i, d) in delays.iter().enumerate() {
            faults.push(Fault::Delay(Duration::from_millis(*d)));
            if let Some(Some(t)) = truncations.get(i) {
                faults.push(Fault::Truncate(*t));
            }
        }
        reg.faults(&path, faults);
        let policy = ChunkPolicy { min_size: 1, chunk_size, window, memory };
        // Some downloads continue from an offset, as a resumed layer does (past the end
        // included: nothing is fetched then).
        let start = start.unwrap_or(0).min(size);
        let got = rt.block_on(download_from(&reg, &data, start as u64, policy, streams));
        prop_assert_eq!(got.len(), data.len() - start);
        prop_assert!(got == data[start..], "reassembled bytes differ");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prefetch_uses_spare_streams_only() {
    let reg = FakeRegistry::start();
    let data = rdpull_testkit::noise(1 << 20, 7);
    let policy = ChunkPolicy {
        min_size: 1,
        chunk_size: 64 << 10,
        window: 4,
        memory: 1 << 20,
    };
    // One stream in the budget: no spare slot, so every chunk streams in turn.
    let got = download(&reg, &data, policy, 1).await;
    assert!(got == data);
    let path = FakeRegistry::blob_path("r", &rdpull_testkit::registry::sha256(&data));
    assert_eq!(reg.hits(&path), 16);
    assert_eq!(sent(&reg, &path, data.len()).await, data.len());
}

/// Prefetched chunks never hold more than the budget's memory, however wide the window.
/// The first chunk's response stalls, so the download waits on it while prefetching:
/// with room for one chunk, only one prefetch is requested; room for three fills the
/// window. The stalled chunk then resumes and the blob arrives whole.
#[tokio::test(flavor = "multi_thread")]
async fn prefetch_stays_within_the_memory_budget() {
    const CHUNK: u64 = 64 << 10;
    for (memory, prefetches) in [(CHUNK, 1), (3 * CHUNK, 3)] {
        let reg = FakeRegistry::start();
        let data = rdpull_testkit::noise(16 * CHUNK as usize, memory);
        let path = FakeRegistry::blob_path("r", &rdpull_testkit::registry::sha256(&data));
        reg.faults(&path, vec![Fault::Stall(1024)]);
        let policy = ChunkPolicy {
            min_size: 1,
            chunk_size: CHUNK,
            window: 4,
            memory,
        };
        let mut stream = open(&reg, &data, 0, policy, 8).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while reg.hits(&path) < 1 + prefetches && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Time for a prefetch beyond the budget to show up, if one were made; the stall
        // lasts until the 4 s stall timeout.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(reg.hits(&path), 1 + prefetches, "memory budget {memory}");
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        assert!(
            out == data,
            "memory budget {memory}: reassembled bytes differ"
        );
        // 16 chunks, and the stalled one asked for again from byte 1024.
        assert_eq!(reg.hits(&path), 17);
        assert_eq!(sent(&reg, &path, data.len()).await, data.len());
    }
}

/// Body bytes the registry sent for `path`, once they reach `want` or 5 s passed: the
/// server counts a body when its last write returned, which on a loaded machine can be
/// after the client has read it all.
async fn sent(reg: &FakeRegistry, path: &str, want: usize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while reg.sent(path) < want && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    reg.sent(path)
}
