//! Failed and killed pulls: nothing half-committed, committed layers kept and reused.

use super::*;

/// A failure in the top layer: the lower layers that were committed stay, and the next
/// pull fetches only what is missing.
#[test]
fn failure_keeps_committed_layers_and_the_retry_fetches_only_the_rest() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let tars: Vec<Vec<u8>> = (0..3)
        .map(|i| one_file_layer(&format!("f{i}"), &[b'0' + i as u8]))
        .collect();
    let p = reg.push("app", "v1", &tars);
    let top = FakeRegistry::blob_path("app", &p.layer_digests[2]);
    reg.set(&top, Reply::Status(503));
    let root = tempfile::tempdir().unwrap();
    fails(pull(&reg, root.path(), "app:v1"));
    assert_clean(root.path());
    let (committed, _) = snapshots(root.path());
    assert!(
        committed.len() <= 2,
        "the failed layer must not be committed: {committed:?}"
    );
    // Now the registry behaves.
    reg.set(
        &top,
        Reply::Body {
            content_type: "application/octet-stream".into(),
            body: p.blobs[2].clone().into(),
        },
    );
    let before: Vec<usize> = p
        .layer_digests
        .iter()
        .map(|d| reg.hits(&FakeRegistry::blob_path("app", d)))
        .collect();
    ok(pull(&reg, root.path(), "app:v1"));
    let after: Vec<usize> = p
        .layer_digests
        .iter()
        .map(|d| reg.hits(&FakeRegistry::blob_path("app", d)))
        .collect();
    assert_eq!(snapshots(root.path()).0.len(), 3);
    for i in 0..3 {
        // A layer committed by the failed pull is not fetched again.
        let was_committed = i < committed.len();
        assert_eq!(
            after[i] - before[i],
            usize::from(!was_committed),
            "layer {i}"
        );
    }
    let dir = root.path().join("rootfs");
    unpack(&reg, root.path(), "app:v1", &dir);
    assert_eq!(
        listing(&dir),
        vec!["/f0 f 0644 0:0 0", "/f1 f 0644 0:0 1", "/f2 f 0644 0:0 2"]
    );
}

/// kill -9 in the middle of a layer: nothing committed for it; the next run cleans up and
/// completes.
#[test]
fn killed_pull_leaves_nothing_committed_and_the_rerun_completes() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let tar = Tar::default()
        .file(
            "big",
            &(0..400_000u32)
                .flat_map(|i| i.to_le_bytes())
                .collect::<Vec<u8>>(),
        )
        .finish();
    let p = reg.push("app", "v1", std::slice::from_ref(&tar));
    let path = stall_halfway(&reg, &p, 0);
    let root = tempfile::tempdir().unwrap();
    let image = format!("{}/app:v1", reg.addr);
    let mut child = common::spawn(root.path(), &["--plain-http", "pull", &image]);
    // Wait until the download is under way (an active snapshot exists), then kill -9.
    common::wait_until("the pull to start", 30, || {
        !snapshots(root.path()).1.is_empty()
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    let (committed, active) = snapshots(root.path());
    assert!(committed.is_empty(), "{committed:?}");
    assert_eq!(
        active.len(),
        1,
        "the interrupted layer stays active, never committed"
    );
    reg.set(
        &path,
        Reply::Body {
            content_type: "application/octet-stream".into(),
            body: p.blobs[0].clone().into(),
        },
    );
    ok(pull(&reg, root.path(), "app:v1"));
    let (committed, active) = snapshots(root.path());
    assert_eq!((committed.len(), active.len()), (1, 0));
    assert_eq!(
        snapshot_dirs(root.path()),
        1,
        "the stale snapshot's files are gone"
    );
}

/// One layer fails while another is stalled mid-body: the pull reports the failure at
/// once (it does not wait out the stall timeout), and removes both active snapshots only
/// after their unpackers have stopped.
#[test]
fn a_failed_layer_cancels_the_others() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let big = Tar::default().file("big", &vec![7u8; 3 << 20]).finish();
    let p = reg.push("app", "v1", &[big, one_file_layer("b", b"2")]);
    stall_halfway(&reg, &p, 0);
    reg.set(
        &FakeRegistry::blob_path("app", &p.layer_digests[1]),
        Reply::Status(500),
    );
    let root = tempfile::tempdir().unwrap();
    let t0 = std::time::Instant::now();
    let out = rdpull(
        root.path(),
        &[
            "--plain-http",
            "--stall-timeout",
            "120",
            "pull",
            &format!("{}/app:v1", reg.addr),
        ],
    );
    let e = fails(out);
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(60),
        "cancellation did not stop the stalled download"
    );
    assert!(
        e.starts_with(&format!(
            "rdpull: error: layer 2/2 {}: ",
            p.layer_digests[1]
        )),
        "{e}"
    );
    assert!(e.ends_with("HTTP 500 (UNKNOWN injected failure)"), "{e}");
    assert_clean(root.path());
    assert!(snapshots(root.path()).0.is_empty());
}

/// kill -9 with some layers committed and one mid-download: the rerun keeps the committed
/// layers (fetches none of them again) and completes the image.
#[test]
fn killed_pull_keeps_committed_layers() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let tars: Vec<Vec<u8>> = (0..3u8)
        .map(|i| {
            Tar::default()
                .file(&format!("f{i}"), &vec![i; 200_000 + i as usize])
                .finish()
        })
        .collect();
    let p = reg.push("app", "v1", &tars);
    let top = stall_halfway(&reg, &p, 2);
    let root = tempfile::tempdir().unwrap();
    let image = format!("{}/app:v1", reg.addr);
    let mut child = common::spawn(root.path(), &["--plain-http", "pull", &image]);
    common::wait_until("two layers committed", 30, || {
        snapshots(root.path()).0.len() >= 2
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let (committed, active) = snapshots(root.path());
    assert_eq!((committed.len(), active.len()), (2, 1));
    reg.set(
        &top,
        Reply::Body {
            content_type: "application/octet-stream".into(),
            body: p.blobs[2].clone().into(),
        },
    );
    let hits = |i: usize| reg.hits(&FakeRegistry::blob_path("app", &p.layer_digests[i]));
    let before = [hits(0), hits(1), hits(2)];
    ok(pull(&reg, root.path(), "app:v1"));
    assert_eq!(
        [
            hits(0) - before[0],
            hits(1) - before[1],
            hits(2) - before[2]
        ],
        [0, 0, 1]
    );
    assert_eq!(snapshots(root.path()).0.len(), 3);
    let dir = root.path().join("rootfs");
    unpack(&reg, root.path(), "app:v1", &dir);
    assert_eq!(
        listing(&dir),
        vec![
            "/f0 f 0644 0:0 <200000 bytes>",
            "/f1 f 0644 0:0 <200001 bytes>",
            "/f2 f 0644 0:0 <200002 bytes>"
        ]
    );
}

/// Send `signal` to a running rdpull.
fn send(child: &std::process::Child, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
}

/// Wait for `child` to exit, at most `secs` seconds; its exit code and stderr.
fn exit_within(child: std::process::Child, secs: u64) -> (Option<i32>, String) {
    let t0 = std::time::Instant::now();
    let mut child = child;
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed().as_secs() >= secs {
            child.kill().unwrap();
            panic!("rdpull did not exit within {secs} s of the signal");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sigint_and_sigterm_stop_a_pull_and_remove_what_it_had_not_committed() {
    skip_unless_root!();
    use rustix::process::Signal;
    for (signal, code, name) in [(Signal::INT, 130, "SIGINT"), (Signal::TERM, 143, "SIGTERM")] {
        let reg = FakeRegistry::start();
        let tars = vec![one_file_layer("a", b"1"), one_file_layer("b", b"2")];
        let p = reg.push("app", "v1", &tars);
        stall_halfway(&reg, &p, 1);
        let root = tempfile::tempdir().unwrap();
        let image = format!("{}/app:v1", reg.addr);
        let child = common::spawn_capturing(root.path(), &["--plain-http", "pull", &image]);
        // The first layer's ChainID is its DiffID.
        let first = vec![p.diff_ids[0].clone()];
        common::wait_until("layer 1 committed, layer 2 active", 30, || {
            let (committed, active) = snapshots(root.path());
            committed == first && active.len() == 1
        });
        send(&child, signal);
        let (status, stderr) = exit_within(child, 10);
        assert_eq!(status, Some(code), "{name}: {stderr}");
        assert_eq!(
            stderr.trim_end(),
            format!("rdpull: interrupted by {name}: what was committed is kept, the rest removed")
        );
        assert_eq!(snapshots(root.path()), (first, vec![]));
        assert_clean(root.path());
    }
}

#[test]
fn sigint_stops_unpack_and_removes_the_partial_rootfs() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let mut many = Tar::default();
    for i in 0..40_000 {
        many.file(&format!("d{}/f{i}", i % 100), b"x");
    }
    reg.push("app", "v1", &[many.finish()]);
    let root = tempfile::tempdir().unwrap();
    ok(pull(&reg, root.path(), "app:v1"));
    let out = root.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let dest = out.join("rootfs");
    let image = format!("{}/app:v1", reg.addr);
    let child = common::spawn_capturing(root.path(), &["unpack", &image, dest.to_str().unwrap()]);
    let hidden = out.join(format!(".rootfs.rdpull-{}", child.id()));
    common::wait_until("the hidden rootfs has files", 30, || {
        hidden.join("d0").exists()
    });
    send(&child, rustix::process::Signal::INT);
    let (status, stderr) = exit_within(child, 10);
    assert_eq!(status, Some(130), "{stderr}");
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        0,
        "partial rootfs left"
    );
}
