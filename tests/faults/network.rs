//! Downloads that survive the network: resume with Range after truncation, retries with
//! backoff and Retry-After, servers that ignore Range, redirects across origins, stalls,
//! expired tokens, and one blob over several connections. Needs root (unpacking).

use crate::common::{fails, ok, rdpull};
use rdpull_testkit::registry::{FakeRegistry, Fault, Reply, Request};
use rdpull_testkit::skip_unless_root;
use rdpull_testkit::{listing, Tar};
use std::time::{Duration, Instant};

/// A layer whose gzip blob is about `n` bytes (incompressible content).
fn incompressible_layer(n: usize) -> Vec<u8> {
    let data = rdpull_testkit::noise(n, 0x9e3779b97f4a7c15);
    Tar::default().file("data", &data).finish()
}

fn pull(
    reg: &FakeRegistry,
    root: &std::path::Path,
    image: &str,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec!["--plain-http"];
    args.extend_from_slice(extra);
    let reference = format!("{}/{image}", reg.addr);
    args.extend(["pull", reference.as_str()]);
    rdpull(root, &args)
}

fn unpacked(root: &std::path::Path, reference: &str) -> Vec<String> {
    let dir = root.join("rootfs-check");
    let _ = std::fs::remove_dir_all(&dir);
    ok(rdpull(root, &["unpack", reference, dir.to_str().unwrap()]));
    listing(&dir)
}

#[test]
fn truncated_body_resumes_from_the_first_missing_byte() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let p = reg.push("app", "v1", &[incompressible_layer(3 << 20)]);
    let path = FakeRegistry::blob_path("app", &p.layer_digests[0]);
    reg.faults(
        &path,
        vec![Fault::Truncate(1_000_000), Fault::Truncate(1_000_000)],
    );
    let root = tempfile::tempdir().unwrap();
    ok(pull(&reg, root.path(), "app:v1", &[]));
    let reqs = reg.requests(&path);
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert_eq!(reqs[0].headers.get("range"), None);
    assert_eq!(
        reqs[1].headers.get("range").map(String::as_str),
        Some("bytes=1000000-")
    );
    assert_eq!(
        reqs[2].headers.get("range").map(String::as_str),
        Some("bytes=2000000-")
    );
    assert_eq!(reg.sent(&path), p.blobs[0].len(), "no byte fetched twice");
}

#[test]
fn server_errors_are_retried_honouring_retry_after() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let p = reg.push("app", "v1", &[Tar::default().file("a", b"1").finish()]);
    let path = FakeRegistry::blob_path("app", &p.layer_digests[0]);
    reg.faults(
        &path,
        vec![Fault::Status(503, None), Fault::Status(429, Some(2))],
    );
    let manifest = "/v2/app/manifests/v1".to_string();
    reg.faults(&manifest, vec![Fault::Status(502, None)]);
    let root = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    ok(pull(&reg, root.path(), "app:v1", &[]));
    assert!(
        t0.elapsed() >= Duration::from_secs(2),
        "Retry-After: 2 was not honoured"
    );
    assert_eq!(reg.hits(&path), 3);
    assert_eq!(reg.hits(&manifest), 2);
}

#[test]
fn a_server_ignoring_range_is_skipped_to_the_right_byte() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let p = reg.push("app", "v1", &[incompressible_layer(2 << 20)]);
    let path = FakeRegistry::blob_path("app", &p.layer_digests[0]);
    reg.ignore_range(&path);
    reg.faults(&path, vec![Fault::Truncate(700_000)]);
    let root = tempfile::tempdir().unwrap();
    // Chunking asked for: the server answers 200, so one stream is used.
    ok(pull(
        &reg,
        root.path(),
        "app:v1",
        &["--chunked-min-size", "1", "--chunk-size", "100000"],
    ));
    let reqs = reg.requests(&path);
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        reqs[1].headers.get("range").map(String::as_str),
        Some("bytes=700000-")
    );
    // The second answer was the whole blob again; the first 700000 bytes were skipped.
    assert_eq!(reg.sent(&path), 700_000 + p.blobs[0].len());
    assert_eq!(
        unpacked(root.path(), &format!("{}/app:v1", reg.addr)).len(),
        1
    );
}

#[test]
fn redirects_to_another_origin_carry_no_authorization() {
    skip_unless_root!();
    let registry = FakeRegistry::start();
    let cdn = FakeRegistry::start();
    registry.require_basic("user:secret");
    let p = registry.push(
        "app",
        "v1",
        &[Tar::default().file("a", b"via cdn").finish()],
    );
    let path = FakeRegistry::blob_path("app", &p.layer_digests[0]);
    let cdn_path = format!("/objects/{}", p.layer_digests[0]);
    cdn.set(
        &cdn_path,
        Reply::Body {
            content_type: "application/octet-stream".into(),
            body: p.blobs[0].clone().into(),
        },
    );
    registry.set(
        &path,
        Reply::Redirect(format!("http://{}{cdn_path}?sig=x", cdn.addr)),
    );
    let root = tempfile::tempdir().unwrap();
    ok(pull(
        &registry,
        root.path(),
        "app:v1",
        &["--user", "user:secret"],
    ));
    let at_registry = registry.requests(&path);
    assert!(at_registry
        .iter()
        .any(|r| r.headers.contains_key("authorization")));
    let at_cdn = cdn.requests(&cdn_path);
    assert_eq!(at_cdn.len(), 1);
    assert!(
        !at_cdn[0].headers.contains_key("authorization"),
        "credentials leaked to another origin"
    );
    assert_eq!(
        unpacked(root.path(), &format!("{}/app:v1", registry.addr)),
        vec!["/a f 0644 0:0 via cdn"]
    );
}

#[test]
fn a_stalled_body_fails_within_the_stall_timeout() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let p = reg.push("app", "v1", &[incompressible_layer(1 << 20)]);
    let path = FakeRegistry::blob_path("app", &p.layer_digests[0]);
    reg.faults(&path, vec![Fault::Stall(0); 8]);
    let root = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let e = fails(pull(&reg, root.path(), "app:v1", &["--stall-timeout", "1"]));
    // 5 attempts of 1 s each, plus backoff (at most 0.3+0.6+1.2+2.4 s).
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t0.elapsed()
    );
    assert!(
        e.contains("gave up after 5 attempts")
            && e.contains("stalled: no data within the stall timeout"),
        "{e}"
    );
    assert_eq!(reg.hits(&path), 5);

    // Stalls that each deliver something are progress: the count starts again, and the
    // download gets through.
    let root = tempfile::tempdir().unwrap();
    reg.faults(&path, vec![Fault::Stall(100_000); 8]);
    ok(pull(&reg, root.path(), "app:v1", &["--stall-timeout", "1"]));
    assert_eq!(reg.hits(&path), 5 + 9);
}

#[test]
fn an_expired_token_is_renewed_mid_pull() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    reg.require_bearer();
    let p = reg.push(
        "app",
        "v1",
        &[
            Tar::default().file("a", b"1").finish(),
            Tar::default().file("b", b"2").finish(),
        ],
    );
    let path = FakeRegistry::blob_path("app", &p.layer_digests[1]);
    reg.faults(&path, vec![Fault::ExpireToken]);
    let root = tempfile::tempdir().unwrap();
    ok(pull(&reg, root.path(), "app:v1", &["--parallel", "1"]));
    assert_eq!(reg.hits("/token"), 2, "one token, then one renewal");
    let reqs = reg.requests(&path);
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        reqs[0].headers.get("authorization").map(String::as_str),
        Some("Bearer tok-1")
    );
    assert_eq!(
        reqs[1].headers.get("authorization").map(String::as_str),
        Some("Bearer tok-2")
    );
}

#[test]
fn a_large_blob_is_fetched_over_several_connections() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let p = reg.push("app", "v1", &[incompressible_layer(5 << 20)]);
    let path = FakeRegistry::blob_path("app", &p.layer_digests[0]);
    let size = p.blobs[0].len();
    // Make later chunks answer first, so they arrive out of order.
    reg.faults(
        &path,
        vec![
            Fault::Delay(Duration::from_millis(300)),
            Fault::Delay(Duration::from_millis(200)),
        ],
    );
    let root = tempfile::tempdir().unwrap();
    let chunk = 1 << 20;
    ok(pull(
        &reg,
        root.path(),
        "app:v1",
        &[
            "--parallel",
            "4",
            "--chunked-min-size",
            "1",
            "--chunk-size",
            &chunk.to_string(),
        ],
    ));
    let mut ranges: Vec<(usize, usize)> = reg
        .requests(&path)
        .iter()
        .map(|r| {
            let h = r
                .headers
                .get("range")
                .expect("every chunk request has a Range");
            let (a, b) = h.strip_prefix("bytes=").unwrap().split_once('-').unwrap();
            (
                a.parse().unwrap(),
                if b.is_empty() {
                    size - 1
                } else {
                    b.parse().unwrap()
                },
            )
        })
        .collect();
    ranges.sort();
    let want: Vec<(usize, usize)> = (0..size)
        .step_by(chunk)
        .map(|a| (a, (a + chunk).min(size) - 1))
        .collect();
    assert_eq!(ranges, want, "chunks must tile the blob exactly once");
    assert_eq!(reg.sent(&path), size);
    assert_eq!(
        unpacked(root.path(), &format!("{}/app:v1", reg.addr)),
        vec!["/data f 0644 0:0 <5242880 bytes>"]
    );
}

/// Memory stays bounded whatever the blob size: a 2 GiB layer, fetched in 8 MiB chunks
/// with a window of 4 and 24 MiB for prefetched chunks, must not make rdpull's peak RSS
/// grow with it.
#[test]
fn memory_stays_bounded_for_a_multi_gib_blob() {
    skip_unless_root!();
    const SIZE: usize = 2 << 30;
    let tar = Tar::default().file("zeros", &vec![0u8; SIZE]).finish();
    let diff_id = rdpull_testkit::registry::sha256(&tar);
    let reg = FakeRegistry::start();
    reg.push_layers(
        "big",
        "v1",
        vec![(tar, "application/vnd.oci.image.layer.v1.tar", diff_id)],
    );
    let root = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rdpull"))
        .args([
            "--root",
            root.path().to_str().unwrap(),
            "--plain-http",
            "--parallel",
            "4",
            "-q",
        ])
        .args([
            "--chunk-size",
            &(8 << 20).to_string(),
            "--chunk-window",
            "4",
            "--chunk-memory",
            &(24 << 20).to_string(),
        ])
        .args(["pull", &format!("{}/big:v1", reg.addr)])
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if let Ok(s) = std::fs::read_to_string(&status_file) {
            if let Some(l) = s.lines().find(|l| l.starts_with("VmHWM:")) {
                peak_kib = l.split_whitespace().nth(1).unwrap().parse().unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let peak = peak_kib << 10;
    // Prefetched chunk buffers, including those still referenced by slices in the
    // channels: the 24 MiB chunk memory. The streamed chunk's pieces: 8 + 8 in the
    // channels, each holding at most one of hyper's read buffers (8 KiB + 400 KiB). The
    // program itself (runtime, TLS, per-thread allocator arenas, buffers): under 64 MiB.
    // None of it grows with the blob.
    let bound = (24 << 20) + (8 + 8) * ((8 << 10) + (400 << 10)) + (64 << 20);
    assert!(peak > 0, "no RSS reading");
    assert!(
        peak < bound,
        "peak RSS {} MiB above the bound {} MiB",
        peak >> 20,
        bound >> 20
    );

    eprintln!(
        "peak RSS for a 2 GiB blob: {} MiB (bound {} MiB)",
        peak >> 20,
        bound >> 20
    );
}

/// A token about to expire is renewed before the request, not after a 401.
#[test]
fn tokens_are_renewed_before_they_expire() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    // 5 s tokens: inside rdpull's 10 s renewal margin, so every later request renews.
    reg.require_bearer_ttl(5);
    let p = reg.push("app", "v1", &[Tar::default().file("a", b"1").finish()]);
    let root = tempfile::tempdir().unwrap();
    ok(pull(&reg, root.path(), "app:v1", &[]));
    // The ping and the first request meet the challenge; renewals need no 401.
    assert_eq!(reg.unauthorized(), 2);
    let blob = reg.requests(&FakeRegistry::blob_path("app", &p.layer_digests[0]));
    let token = blob[0].headers.get("authorization").unwrap();
    assert!(reg.hits("/token") >= 2, "no renewal");
    assert_eq!(
        token,
        &format!("Bearer tok-{}", reg.hits("/token")),
        "the newest token is used"
    );
}

/// A pull of a layer that trickles about 200 bytes a second, against a minimum of 1000
/// over 1 s windows, with `args` added: its error, how long it took, the layer's digest
/// and the requests for its blob.
fn trickling_pull(args: &[&str]) -> (String, Duration, String, Vec<Request>) {
    let reg = FakeRegistry::start();
    let p = reg.push("app", "v1", &[incompressible_layer(100_000)]);
    let path = FakeRegistry::blob_path("app", &p.layer_digests[0]);
    reg.set(
        &path,
        Reply::Trickle {
            body: p.blobs[0].clone(),
            piece: 20,
            every: Duration::from_millis(100),
        },
    );
    let root = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let mut all = vec!["--stall-timeout", "1", "--min-rate", "1000"];
    all.extend_from_slice(args);
    let e = fails(pull(&reg, root.path(), "app:v1", &all));
    let took = t0.elapsed();
    (e, took, p.layer_digests[0].clone(), reg.requests(&path))
}

#[test]
fn a_trickling_blob_fails_within_a_bound_naming_its_rate() {
    skip_unless_root!();
    // The longer budget, asked for: five windows.
    let (e, took, blob, reqs) = trickling_pull(&["--slow-windows", "5"]);
    // 5 windows of 1 s, plus backoff (at most 0.3+0.6+1.2+2.4 s).
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(
        e.contains("gave up after 5 attempts")
            && e.contains(&format!("blob {blob}: too slow: "))
            && e.contains(" bytes/s over 1 s, below the minimum of 1000 bytes/s"),
        "{e}"
    );
    // Each attempt after the first resumes with Range from what had arrived.
    assert_eq!(reqs.len(), 5);
    for r in &reqs[1..] {
        let range = r.headers.get("range").map(String::as_str).unwrap_or("");
        assert!(
            range.starts_with("bytes=") && range != "bytes=0-",
            "{range:?}"
        );
    }
}

#[test]
fn a_trickling_blob_fails_after_two_slow_windows_by_default() {
    skip_unless_root!();
    let (e, took, blob, reqs) = trickling_pull(&[]);
    // 2 windows of 1 s and one backoff (at most 0.3 s): far below the 5 windows'.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        e.contains("gave up after 2 attempts") && e.contains(&format!("blob {blob}: too slow: ")),
        "{e}"
    );
    assert_eq!(reqs.len(), 2);
}

#[test]
fn a_trickling_manifest_is_bounded_by_the_request_timeout() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let p = reg.push("app", "v1", &[incompressible_layer(1000)]);
    let path = "/v2/app/manifests/v1";
    reg.set(
        path,
        Reply::Trickle {
            body: p.manifest.clone(),
            piece: 1,
            every: Duration::from_millis(200),
        },
    );
    let root = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let e = fails(pull(
        &reg,
        root.path(),
        "app:v1",
        &["--request-timeout", "2"],
    ));
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
    assert_eq!(
        e,
        format!(
            "rdpull: error: manifest {}/app:v1: not done within 2 s",
            reg.addr
        )
    );
}
