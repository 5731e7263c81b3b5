//! Bad input from a registry: wrong digests, schema 1, oversized manifests, truncated
//! or missing blobs, hostile layers. Each fails with one clear line and exit 1.

use super::*;

#[test]
fn pulls_and_a_second_pull_fetches_no_layer() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let tars = vec![one_file_layer("a", b"1"), one_file_layer("b", b"2")];
    let p = reg.push("app", "v1", &tars);
    let root = tempfile::tempdir().unwrap();
    let out = stdout(&ok(pull(&reg, root.path(), "app:v1")));
    assert!(
        out.contains(&format!("Digest: {}", p.manifest_digest)),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "Status: Downloaded newer image for {}/app:v1",
            reg.addr
        )),
        "{out}"
    );
    assert_eq!(out.matches(": Pull complete").count(), 2, "{out}");
    for d in &p.layer_digests {
        assert_eq!(reg.hits(&FakeRegistry::blob_path("app", d)), 1);
    }
    let out = stdout(&ok(pull(&reg, root.path(), "app:v1")));
    assert_eq!(out.matches(": Already exists").count(), 2, "{out}");
    assert!(
        out.contains(&format!(
            "Status: Image is up to date for {}/app:v1",
            reg.addr
        )),
        "{out}"
    );
    for d in &p.layer_digests {
        assert_eq!(
            reg.hits(&FakeRegistry::blob_path("app", d)),
            1,
            "layer fetched again"
        );
    }
    // By digest too, and unpack from the store without any new request.
    let by_digest = format!("{}/app@{}", reg.addr, p.manifest_digest);
    ok(rdpull(root.path(), &["--plain-http", "pull", &by_digest]));
    let dir = root.path().join("rootfs");
    ok(rdpull(
        root.path(),
        &["unpack", &by_digest, dir.to_str().unwrap()],
    ));
    assert_eq!(listing(&dir), vec!["/a f 0644 0:0 1", "/b f 0644 0:0 2"]);
    for d in &p.layer_digests {
        assert_eq!(reg.hits(&FakeRegistry::blob_path("app", d)), 1);
    }
    let images = stdout(&ok(rdpull(root.path(), &["images"])));
    assert!(
        images.contains(&format!("{}/app:v1", reg.addr)) && images.contains(&p.manifest_digest),
        "{images}"
    );
}

#[test]
fn wrong_blob_digest() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let p = reg.push("app", "v1", &[one_file_layer("a", b"1")]);
    // Same size, other bytes.
    let mut bad = p.blobs[0].clone();
    let n = bad.len();
    bad[n - 5] ^= 0xff;
    reg.set(
        &FakeRegistry::blob_path("app", &p.layer_digests[0]),
        Reply::Body {
            content_type: "application/octet-stream".into(),
            body: bad.clone().into(),
        },
    );
    let root = tempfile::tempdir().unwrap();
    let e = fails(pull(&reg, root.path(), "app:v1"));
    assert_eq!(
        e,
        format!(
            "rdpull: error: layer 1/1 {d}: compressed blob: digest mismatch: expected {d}, got {}",
            sha256(&bad),
            d = p.layer_digests[0]
        )
    );
    assert_clean(root.path());
    assert!(snapshots(root.path()).0.is_empty());
}

#[test]
fn wrong_diff_id() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let tar = one_file_layer("a", b"1");
    let p = reg.push("app", "v1", std::slice::from_ref(&tar));
    // A config whose diff_id is not the layer's.
    let wrong = sha256(b"not the tar");
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [wrong]},
    }))
    .unwrap();
    let cd = reg.put_blob("app", &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": LAYER_GZIP, "digest": p.layer_digests[0], "size": p.blobs[0].len()}],
    }))
    .unwrap();
    reg.put_manifest("app", "v2", OCI_MANIFEST, &manifest);
    let root = tempfile::tempdir().unwrap();
    let e = fails(pull(&reg, root.path(), "app:v2"));
    assert_eq!(
        e,
        format!(
            "rdpull: error: layer 1/1 {}: uncompressed content (DiffID): digest mismatch: expected {wrong}, got {}",
            p.layer_digests[0],
            sha256(&tar)
        )
    );
    assert_clean(root.path());
}

#[test]
fn manifest_by_digest_must_hash_to_that_digest() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let p = reg.push("app", "v1", &[one_file_layer("a", b"1")]);
    let other = reg.push("app", "v2", &[one_file_layer("b", b"2")]);
    // The registry answers the digest of v1 with v2's manifest.
    reg.put_manifest("app", &p.manifest_digest, OCI_MANIFEST, &other.manifest);
    let root = tempfile::tempdir().unwrap();
    let e = fails(pull(
        &reg,
        root.path(),
        &format!("app@{}", p.manifest_digest),
    ));
    assert_eq!(
        e,
        format!(
            "rdpull: error: manifest {a}/app@{d}: digest mismatch: expected {d}, got {}",
            other.manifest_digest,
            a = reg.addr,
            d = p.manifest_digest
        )
    );
}

#[test]
fn schema1_is_refused() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let body = br#"{"schemaVersion":1,"name":"app","tag":"old","architecture":"amd64","fsLayers":[],"history":[],"signatures":[]}"#;
    reg.put_manifest(
        "app",
        "old",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        body,
    );
    let root = tempfile::tempdir().unwrap();
    let e = fails(pull(&reg, root.path(), "app:old"));
    assert_eq!(
        e,
        format!(
            "rdpull: error: manifest {}/app:old is Docker schema 1 (application/vnd.docker.distribution.manifest.v1+prettyjws), which is deprecated and not supported: push the image again with a current client",
            reg.addr
        )
    );
}

#[test]
fn oversized_manifest_is_refused_before_it_is_read() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let mut big = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{"x":""#.to_vec();
    big.resize(5 << 20, b'x');
    big.extend_from_slice(b"\"}}");
    reg.put_manifest("app", "huge", OCI_MANIFEST, &big);
    let root = tempfile::tempdir().unwrap();
    let e = fails(pull(&reg, root.path(), "app:huge"));
    assert_eq!(
        e,
        format!(
            "rdpull: error: manifest {}/app:huge: larger than the 4194304-byte limit ({} bytes)",
            reg.addr,
            big.len()
        )
    );
}

#[test]
fn truncated_gzip_layer() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let tar = Tar::default().file("big", &vec![9u8; 200_000]).finish();
    let full = gzip(&tar);
    let cut = full[..full.len() / 2].to_vec();
    // A layer whose blob really is a truncated gzip (digest and size match the bytes).
    let d = reg.put_blob("app", &cut);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha256(&tar)]},
    }))
    .unwrap();
    let cd = reg.put_blob("app", &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": LAYER_GZIP, "digest": d, "size": cut.len()}],
    }))
    .unwrap();
    reg.put_manifest("app", "cut", OCI_MANIFEST, &manifest);
    let root = tempfile::tempdir().unwrap();
    let e = fails(pull(&reg, root.path(), "app:cut"));
    assert!(
        e.starts_with(&format!("rdpull: error: layer 1/1 {d}: gzip data: ")),
        "{e}"
    );
    assert_clean(root.path());
}

#[test]
fn blob_missing_and_server_errors() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let p = reg.push("app", "v1", &[one_file_layer("a", b"1")]);
    let path = FakeRegistry::blob_path("app", &p.layer_digests[0]);
    reg.set(&path, Reply::Status(500));
    let root = tempfile::tempdir().unwrap();
    let e = fails(pull(&reg, root.path(), "app:v1"));
    assert_eq!(
        e,
        format!(
            "rdpull: error: layer 1/1 {d}: gave up after 5 attempts: blob {d}: http://{a}/v2/app/blobs/{d}: HTTP 500 (UNKNOWN injected failure)",
            d = p.layer_digests[0],
            a = reg.addr
        )
    );
    assert_clean(root.path());
    let e = fails(pull(&reg, root.path(), "app:nope"));
    assert!(e.contains("manifest") && e.contains("HTTP 404"), "{e}");
    let e = fails(rdpull(root.path(), &["pull", "Not/A/Valid:ref"]));
    assert_eq!(
        e,
        "rdpull: error: invalid reference \"Not/A/Valid:ref\": repository name must be lowercase"
    );
}

/// Every escape kind from a registry layer, with canaries beside the store root.
#[test]
fn hostile_layers_write_nothing_outside_the_root() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    let mut t = Tar::default();
    t.file("ok.txt", b"ok").escapes(b"overwritten");
    reg.push("evil", "all", &[t.finish()]);
    let hl = Tar::default()
        .file("ok.txt", b"ok")
        .hardlink("hl", "../../../canary")
        .finish();
    let hp = reg.push("evil", "hardlink", &[hl]);

    let sandbox = tempfile::tempdir().unwrap();
    std::fs::write(sandbox.path().join("canary"), "canary").unwrap();
    let root = sandbox.path().join("store");
    let before = listing(sandbox.path());
    ok(pull(&reg, &root, "evil:all"));
    let dir = sandbox.path().join("rootfs");
    unpack(&reg, &root, "evil:all", &dir);
    let outside: Vec<String> = listing(sandbox.path())
        .into_iter()
        .filter(|l| !l.starts_with("/store") && !l.starts_with("/rootfs"))
        .collect();
    assert_eq!(outside, before);
    assert_eq!(
        listing(&dir),
        vec![
            "/abs-escape.txt f 0644 0:0 x",
            "/canary f 0644 0:0 overwritten",
            "/chain1 l 0777 0:0 chain2",
            "/chain2 l 0777 0:0 ../../chain3",
            "/chain3 l 0777 0:0 /..",
            "/escape-dotdot.txt f 0644 0:0 x",
            "/escape-mid.txt f 0644 0:0 x",
            "/ok.txt f 0644 0:0 ok",
            "/sl-abs l 0777 0:0 /",
            "/sl-rel l 0777 0:0 ../../../../../../..",
            "/via-chain.txt f 0644 0:0 x",
            "/via-rel.txt f 0644 0:0 x",
        ]
    );
    let e = fails(pull(&reg, &root, "evil:hardlink"));
    assert_eq!(
        e,
        format!(
            "rdpull: error: layer 1/1 {}: /hl: refused: hard link target /canary is in no layer below",
            hp.layer_digests[0]
        )
    );
    let outside: Vec<String> = listing(sandbox.path())
        .into_iter()
        .filter(|l| !l.starts_with("/store") && !l.starts_with("/rootfs"))
        .collect();
    assert_eq!(outside, before);
    assert_clean(&root);
}

#[test]
fn commands_that_write_the_store_say_they_need_root() {
    skip_unless_root!();
    let root = tempfile::tempdir().unwrap();
    let nobody = 65534;
    for args in [
        &["pull", "127.0.0.1:1/app:v1"][..],
        &["unpack", "127.0.0.1:1/app:v1", "/nonexistent/x"],
        &["prune"],
        &["rmi", "app"],
    ] {
        let e = fails(common::rdpull_as(nobody, root.path(), args));
        assert_eq!(
            e,
            format!(
                "rdpull: error: {} needs root: layers set file owners, make device nodes and \
                 write trusted.* xattrs, and the store belongs to root; run rdpull as root \
                 (e.g. with sudo)",
                args[0]
            )
        );
    }
}

#[test]
fn save_of_an_unknown_image_or_to_an_unwritable_place_fails_in_one_line() {
    skip_unless_root!();
    let reg = FakeRegistry::start();
    reg.push("app", "v1", &[one_file_layer("a", b"1")]);
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out.tar");
    let e = fails(rdpull(
        root.path(),
        &["save", "nosuch", out.to_str().unwrap()],
    ));
    assert_eq!(e, "rdpull: error: no such image: nosuch");
    let image = format!("{}/app:v1", reg.addr);
    ok(rdpull(
        root.path(),
        &["--plain-http", "--keep-blobs", "pull", &image],
    ));
    let e = fails(rdpull(
        root.path(),
        &["save", &image, "/nonexistent/dir/out.tar"],
    ));
    assert_eq!(
        e,
        "rdpull: error: /nonexistent/dir/.out.tar.rdpull-tmp: No such file or directory (os error 2)"
    );
    ok(rdpull(
        root.path(),
        &["save", &image, out.to_str().unwrap()],
    ));
    assert!(out.metadata().unwrap().len() > 0);
    let stray: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("rdpull-tmp"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}
