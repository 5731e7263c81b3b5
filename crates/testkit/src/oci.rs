//! Images made by tests, pushed to the testbed's real registry: layers as tars (from
//! [`crate::Tar`], so any hostile entry can be written), an image config, written as
//! an OCI layout and copied with `skopeo` (as a user would push one).

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Go's name for this machine's architecture, as image configs spell it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Write `data` as a blob of the OCI layout `dir`; returns its descriptor.
fn blob(dir: &Path, media_type: &str, data: &[u8]) -> serde_json::Value {
    let digest = sha256(data);
    let hex = digest.trim_start_matches("sha256:");
    std::fs::write(dir.join("blobs/sha256").join(hex), data).unwrap();
    serde_json::json!({"mediaType": media_type, "digest": digest, "size": data.len()})
}

/// Push an image of `layers` (uncompressed tars, gzipped here) with the image config's
/// `config` section to `registry` (plain HTTP) as `repo:tag`; returns the reference.
pub fn push(
    registry: &str,
    repo: &str,
    tag: &str,
    layers: &[&[u8]],
    config: serde_json::Value,
) -> String {
    let t = tempfile_dir();
    let dir = t.as_path();
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for tar in layers {
        diff_ids.push(sha256(tar));
        let gz = crate::registry::gzip(tar);
        descriptors.push(blob(
            dir,
            "application/vnd.oci.image.layer.v1.tar+gzip",
            &gz,
        ));
    }
    let image_config = serde_json::json!({
        "architecture": go_arch(),
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config_blob = serde_json::to_vec(&image_config).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": blob(dir, "application/vnd.oci.image.config.v1+json", &config_blob),
        "layers": descriptors,
    });
    let mut m = blob(
        dir,
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    m["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [m]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    let reference = format!("{registry}/{repo}:{tag}");
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:{tag}", dir.display()))
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo (scripts/test installs it)");
    assert!(
        out.status.success(),
        "skopeo copy to {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
    reference
}

/// A fresh directory under the system's temporary directory.
fn tempfile_dir() -> std::path::PathBuf {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("rdpull-oci-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A layer with busybox (Debian's static build, `/bin/busybox`) as `/bin/busybox` and
/// its applets the tests use as links, a root and a `nobody` account, and `/tmp`.
pub fn busybox_layer() -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox")
        .expect("/bin/busybox (busybox-static; scripts/test installs it)");
    let mut t = crate::Tar::default();
    t.dir("bin/").dir("etc/").dir("root/");
    t.entry(crate::Hdr {
        name: b"tmp/",
        typ: b'5',
        mode: 0o1777,
        ..Default::default()
    });
    t.entry(crate::Hdr {
        name: b"bin/busybox",
        mode: 0o755,
        data: &busybox,
        ..Default::default()
    });
    for applet in [
        "sh", "cat", "echo", "true", "id", "ls", "env", "wc", "touch", "stat", "sleep", "head",
        "mknod", "grep", "mount", "unshare",
    ] {
        t.symlink(&format!("bin/{applet}"), "busybox");
    }
    t.file(
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    );
    t.file("etc/group", b"root:x:0:\nnogroup:x:65534:\n");
    t.finish()
}
