//! End to end against the real Docker distribution registry of `../shared/testbed`: the
//! trees rdpull unpacks are compared with umoci's listings (`$TESTBED_DIR/expected`), or,
//! for images the testbed writes no listing of, with listings derived here from the
//! images' definitions in `make-images` / `mkmulti.py`. Needs root, python3 and apt.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use common::{fails, ok, rdpull, snapshots, stdout, testbed, testbed_dir, tree_manifest};
use sha2::{Digest as _, Sha256};

const REG: &str = "127.0.0.1:5000";

/// Held by the tests that fetch from the `debian` repository, so that counting its blob
/// requests in the registry's access log is exact.
static DEBIAN_REPO: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Start the registry and build the images once per test binary (both are idempotent).
fn setup() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        rdpull_testkit::testbed::run("registry-up", &[]);
        rdpull_testkit::testbed::run(
            "make-images",
            &["debian", "variants", "multi", "multiarch", "evil", "edge"],
        );
        // The pull-through cache (:5446) and the client-certificate registry (:5447).
        let extra = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/testbed-extra");
        let st = Command::new("bash")
            .arg(extra)
            .env("RDPULL_TESTBED", testbed())
            .status()
            .unwrap();
        assert!(st.success(), "scripts/testbed-extra failed");
    });
}

fn expected(name: &str) -> String {
    std::fs::read_to_string(testbed_dir().join("expected").join(format!("{name}.tsv"))).unwrap()
}

/// `rdpull unpack` IMAGE into a fresh store; returns the tree-manifest listing.
fn unpack(image: &str, extra: &[&str]) -> String {
    setup();
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("rootfs");
    let mut args = extra.to_vec();
    let reference = format!("{REG}/{image}");
    args.extend(["unpack", &reference, dir.to_str().unwrap()]);
    ok(rdpull(&t.path().join("store"), &args));
    tree_manifest(&dir)
}

fn assert_same(got: &str, want: &str, what: &str) {
    if got != want {
        let g: Vec<&str> = got.lines().collect();
        let w: Vec<&str> = want.lines().collect();
        let only_got: Vec<&&str> = g.iter().filter(|l| !w.contains(l)).take(10).collect();
        let only_want: Vec<&&str> = w.iter().filter(|l| !g.contains(l)).take(10).collect();
        panic!("{what}: trees differ\nonly rdpull: {only_got:#?}\nonly expected: {only_want:#?}");
    }
}

#[test]
fn debian_variants_equal_umoci() {
    let want = expected("debian_bookworm");
    let _serial = DEBIAN_REPO.lock().unwrap_or_else(|e| e.into_inner());
    for image in [
        "debian:bookworm",
        "debian:bookworm-zstd",
        "debian:bookworm-v2s2",
        "debian:bookworm-uncompressed",
    ] {
        assert_same(&unpack(image, &[]), &want, image);
    }
}

#[test]
fn multi_equals_umoci() {
    assert_same(
        &unpack("multi:latest", &["--parallel", "16"]),
        &expected("multi_latest"),
        "multi:latest",
    );
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Root directory line of an image built on `umoci new` (an empty rootfs, mode 0755).
const ROOT: &str = "/\td\t0755\t0:0\t0\t-\t-\n";

fn dir_line(p: &str) -> String {
    format!("{p}\td\t0755\t0:0\t0\t-\t-\n")
}

fn file_line(p: &str, content: &[u8]) -> String {
    format!(
        "{p}\tf\t0644\t0:0\t{}\t{}\t-\n",
        content.len(),
        sha(content)
    )
}

#[test]
fn multiarch_both_platforms() {
    // amd64 is debian:bookworm pushed under another name (make-images `multiarch`).
    let debian = expected("debian_bookworm");
    assert_same(
        &unpack("multiarch:latest", &["--platform", "linux/amd64"]),
        &debian,
        "multiarch amd64",
    );
    assert_same(
        &unpack("multiarch:v2s2", &["--platform", "linux/amd64"]),
        &debian,
        "multiarch:v2s2 amd64",
    );
    // arm64: an empty umoci image plus /etc/testbed-arch.
    let arm = format!(
        "{ROOT}{}{}",
        dir_line("/etc"),
        file_line("/etc/testbed-arch", b"linux/arm64/v8\n")
    );
    for image in ["multiarch:latest", "multiarch:v2s2"] {
        assert_same(&unpack(image, &["--platform", "linux/arm64"]), &arm, image);
        assert_same(
            &unpack(image, &["--platform", "linux/arm64/v8"]),
            &arm,
            image,
        );
    }
    setup();
    let t = tempfile::tempdir().unwrap();
    let e = fails(rdpull(
        t.path(),
        &[
            "--platform",
            "linux/s390x",
            "pull",
            &format!("{REG}/multiarch:latest"),
        ],
    ));
    assert_eq!(
        e,
        format!("rdpull: error: manifest {REG}/multiarch:latest: no image for platform linux/s390x (available: linux/amd64, linux/arm64/v8)")
    );
}

/// The edge images (make-images `edge`). Neither umoci nor containerd 1.6 unpacks all of
/// them (`crosscheck`); rdpull's answers follow the OCI image spec, and equal umoci's
/// listing wherever umoci succeeds.
#[test]
fn edge_images() {
    // GNU tar's old sparse format ('S' entries): umoci and containerd refuse the layer
    // ("unhandled tar header type 83"). rdpull expands it: 64 MiB, 1 MiB of 'S' at 0 and
    // at 32 MiB (mkmulti.py edge_sparse_src).
    let mut holey = vec![0u8; 64 << 20];
    holey[..1 << 20].fill(b'S');
    holey[32 << 20..33 << 20].fill(b'S');
    let want = format!(
        "{ROOT}{}{}",
        dir_line("/sparse"),
        file_line("/sparse/holey-64MiB", &holey)
    );
    assert_same(&unpack("edge:gnu-sparse", &[]), &want, "edge:gnu-sparse");

    // umoci's own dir->file diff (a file, then whiteouts below it): containerd fails
    // ("mkparent ... not a directory"); umoci and rdpull show the file.
    let want = format!("{ROOT}{}", file_line("/dir2file", b"now a file\n"));
    assert_same(
        &unpack("edge:umoci-dir2file", &[]),
        &want,
        "edge:umoci-dir2file",
    );

    // Whiteout then re-add in one layer: the lower recreated/old is gone (umoci agrees;
    // containerd's overlay snapshot wrongly still shows it).
    let want = format!(
        "{ROOT}{}{}",
        dir_line("/recreated"),
        file_line("/recreated/new", b"only child of recreated/\n")
    );
    assert_same(
        &unpack("edge:wh-then-readd", &[]),
        &want,
        "edge:wh-then-readd",
    );

    // Re-add then whiteout: a whiteout hides only lower layers, so recreated/new stays
    // (umoci agrees; containerd fails "failed to convert whiteout file").
    let want = format!(
        "{ROOT}{}{}",
        dir_line("/recreated"),
        file_line(
            "/recreated/new",
            b"must survive: the whiteout below only hides lower layers\n"
        )
    );
    assert_same(
        &unpack("edge:wh-after-readd", &[]),
        &want,
        "edge:wh-after-readd",
    );
}

const GLOBAL_CANARIES: &[&str] = &[
    "/tmp/escape-via-abs-symlink.txt",
    "/tmp/escape-via-rel-symlink.txt",
    "/abs-escape.txt",
];

/// Paths under `top` that are neither in the rootfs nor in a snapshot's own directory.
fn stray_files(top: &Path) -> Vec<String> {
    let mut out = vec![];
    let mut stack = vec![top.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(top).unwrap().to_string_lossy().into_owned();
            let parts: Vec<&str> = rel.split('/').collect();
            let inside = parts[0] == "rootfs"
                || (parts.len() >= 4 && parts[1] == "snapshots" && parts[3] == "fs");
            if inside {
                continue;
            }
            let known = matches!(parts[0], "store")
                && (parts.len() == 1
                    || matches!(parts[1], "metadata.json" | "lock" | "content" | "tmp")
                    || (parts[1] == "snapshots"
                        && (parts.len() <= 3 || matches!(parts[3], "fs" | "work"))));
            if !known {
                out.push(rel.clone());
            }
            if p.is_dir()
                && !p.is_symlink()
                && parts[0] == "store"
                && parts.get(1) != Some(&"content")
            {
                stack.push(p);
            }
        }
    }
    out
}

#[test]
fn evil_images_stay_inside_the_root() {
    setup();
    use std::os::unix::fs::MetadataExt;
    let links = std::fs::metadata("/etc/hostname").unwrap().nlink();
    let ok_line = file_line("/ok.txt", b"the only benign entry\n");
    let cases: &[(&str, Option<String>)] = &[
        (
            "dotdot",
            Some(format!(
                "{ROOT}{}{}{ok_line}",
                file_line("/escape-dotdot.txt", b"escaped?\n"),
                file_line("/escape-mid.txt", b"escaped?\n")
            )),
        ),
        (
            "absolute",
            Some(format!(
                "{ROOT}{}{ok_line}",
                file_line("/abs-escape.txt", b"escaped?\n")
            )),
        ),
        (
            "symlink-abs",
            Some(format!(
                "{ROOT}{ok_line}/sl-abs\tl\t0777\t0:0\t4\t/tmp\t-\n{}{}",
                dir_line("/tmp"),
                file_line("/tmp/escape-via-abs-symlink.txt", b"escaped?\n")
            )),
        ),
        (
            "symlink-rel",
            Some(format!(
                "{ROOT}{ok_line}/sl-rel\tl\t0777\t0:0\t21\t../../../../../../tmp\t-\n{}{}",
                dir_line("/tmp"),
                file_line("/tmp/escape-via-rel-symlink.txt", b"escaped?\n")
            )),
        ),
        // The whiteouts land on the root of the layer and hide nothing.
        ("whiteout-out", Some(format!("{ROOT}{ok_line}"))),
        ("hardlink-out", None),
        ("latest", None),
    ];
    for (case, want) in cases {
        for c in GLOBAL_CANARIES {
            let _ = std::fs::remove_file(c);
        }
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("rootfs");
        let out = rdpull(
            &t.path().join("store"),
            &[
                "unpack",
                &format!("{REG}/evil:{case}"),
                dir.to_str().unwrap(),
            ],
        );
        match want {
            Some(w) => {
                ok(out);
                assert_same(&tree_manifest(&dir), w, case);
            }
            None => {
                // umoci and containerd refuse these too (a hard link to /etc/hostname).
                let e = fails(out);
                assert!(
                    e.ends_with(": /hl-escape: refused: hard link target /etc/hostname is not in this layer"),
                    "{case}: {e}"
                );
                assert!(!dir.exists());
                assert!(snapshots(&t.path().join("store")).1.is_empty());
            }
        }
        assert_eq!(
            stray_files(t.path()),
            Vec::<String>::new(),
            "evil:{case} wrote outside the root"
        );
        for c in GLOBAL_CANARIES {
            assert!(!Path::new(c).exists(), "evil:{case} wrote {c}");
        }
        assert_eq!(
            std::fs::metadata("/etc/hostname").unwrap().nlink(),
            links,
            "evil:{case}"
        );
    }
}

/// The README's first command, as a new user runs it: no --plain-http (a loopback
/// registry without TLS is talked to over HTTP, as Docker does), root from RDPULL_ROOT.
/// The second pull fetches no blob, counted in the registry's own access log.
#[test]
fn headline_command_and_no_refetch() {
    setup();
    let _serial = DEBIAN_REPO.lock().unwrap_or_else(|e| e.into_inner());
    let t = tempfile::tempdir().unwrap();
    let log = testbed_dir().join("registry/http.log");
    let layer = {
        let o = Command::new("python3")
            .arg(testbed().join("regtool.py"))
            .args(["layers", &format!("{REG}/debian:bookworm")])
            .output()
            .unwrap();
        String::from_utf8(o.stdout)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let log_lines = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    // GETs of the layer blob (ranged chunk requests included) after the first `from` lines.
    let layer_gets = |from: usize| {
        let needle = format!("\"GET /v2/debian/blobs/{layer}");
        log_lines()
            .iter()
            .skip(from)
            .filter(|l| l.contains(&needle))
            .count()
    };
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_rdpull"))
            .args(["--parallel", "16", &format!("{REG}/debian:bookworm")])
            .env("RDPULL_ROOT", t.path())
            .output()
            .unwrap()
    };
    let before = log_lines().len();
    let out = stdout(&ok(run()));
    assert!(
        out.contains(": Pull complete") && out.contains("Status: Downloaded newer image"),
        "{out}"
    );
    assert!(
        layer_gets(before) >= 1,
        "the first pull did not fetch the layer"
    );
    let first = log_lines().len();
    let out = stdout(&ok(run()));
    assert!(
        out.contains(": Already exists") && out.contains("Status: Image is up to date"),
        "{out}"
    );
    assert_eq!(
        layer_gets(first),
        0,
        "the second pull fetched the layer again"
    );
}

/// The TLS endpoints: Basic auth (:5443) and Docker Hub style Bearer tokens (:5444, the
/// testbed's token server), trusted through --tls-ca.
#[test]
fn tls_basic_and_bearer_auth() {
    setup();
    let ca = testbed_dir().join("ca.pem");
    let ca = ca.to_str().unwrap();
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let pull = |args: &[&str]| {
        let mut a = vec!["--tls-ca", ca];
        a.extend_from_slice(args);
        rdpull(root, &a)
    };
    // Anonymous Bearer token (pull scope is granted to anyone).
    ok(pull(&["pull", "127.0.0.1:5444/debian:bookworm"]));
    let log = std::fs::read_to_string(testbed_dir().join("registry/tokenserver.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("\"authed\": false") && l.contains("\"name\": \"debian\"")),
        "no anonymous token for debian in the token server log"
    );
    // Bearer with credentials, Basic with credentials.
    ok(pull(&[
        "--user",
        "rdpull:rdpull",
        "pull",
        "127.0.0.1:5444/multi:latest",
    ]));
    ok(pull(&[
        "--user",
        "rdpull:rdpull",
        "pull",
        "127.0.0.1:5443/debian:bookworm",
    ]));
    assert_eq!(
        fails(pull(&["pull", "127.0.0.1:5443/debian:bookworm"])),
        "rdpull: error: registry: https://127.0.0.1:5443/v2/: not authorized (Basic auth required: pass --user USER:PASSWORD or docker login)"
    );
    assert_eq!(
        fails(pull(&["--user", "rdpull:wrong", "pull", "127.0.0.1:5444/debian:bookworm"])),
        "rdpull: error: token request to https://127.0.0.1:5445/token: HTTP 401 (credentials rejected)"
    );
    // Without the CA: the certificate is refused, and the message says so.
    let e = fails(rdpull(root, &["pull", "127.0.0.1:5443/debian:bookworm"]));
    assert!(
        e.contains("https://127.0.0.1:5443/v2/") && e.contains("UnknownIssuer"),
        "{e}"
    );
    // Secrets never appear in output.
    let out = pull(&[
        "--user",
        "rdpull:rdpull",
        "pull",
        "127.0.0.1:5443/debian:bookworm",
    ]);
    assert!(
        !stdout(&out).contains("rdpull:rdpull") && !common::stderr(&out).contains("rdpull:rdpull")
    );
}

/// Credentials from the docker CLI's config: `auths` (base64 user:password) for Basic,
/// a `credHelpers` program for Bearer, an `identitytoken` through the OAuth2 POST
/// `refresh_token` grant. The secrets never show in rdpull's output.
#[test]
fn docker_config_credentials() {
    setup();
    let ca = testbed_dir().join("ca.pem");
    let t = tempfile::tempdir().unwrap();
    let cfg = t.path().join("docker");
    std::fs::create_dir(&cfg).unwrap();
    let run = |root: &str, image: &str, path_dir: Option<&Path>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rdpull"));
        c.args([
            "--root",
            t.path().join(root).to_str().unwrap(),
            "--tls-ca",
            ca.to_str().unwrap(),
        ])
        .args(["pull", image])
        .env("DOCKER_CONFIG", &cfg);
        if let Some(d) = path_dir {
            c.env(
                "PATH",
                format!("{}:{}", d.display(), std::env::var("PATH").unwrap()),
            );
        }
        c.output().unwrap()
    };
    let token_log =
        || std::fs::read_to_string(testbed_dir().join("registry/tokenserver.log")).unwrap();
    let secret_free = |o: &std::process::Output, secret: &str| {
        assert!(
            !stdout(o).contains(secret) && !common::stderr(o).contains(secret),
            "secret in output"
        );
    };

    // auths: Basic on :5443.
    std::fs::write(
        cfg.join("config.json"),
        r#"{"auths":{"https://127.0.0.1:5443":{"auth":"cmRwdWxsOnJkcHVsbA=="}}}"#,
    )
    .unwrap();
    let o = run("a", "127.0.0.1:5443/debian:bookworm", None);
    secret_free(&ok(o), "cmRwdWxsOnJkcHVsbA==");

    // credHelpers: a helper that records what it was asked and answers for :5444.
    let bin = t.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let asked = t.path().join("asked");
    let helper = bin.join("docker-credential-rdpulltest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\ncat > {}\necho '{{\"ServerURL\":\"x\",\"Username\":\"rdpull\",\"Secret\":\"'\"${{HELPER_SECRET:-rdpull}}\"'\"}}'\n",
            asked.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        cfg.join("config.json"),
        r#"{"credHelpers":{"127.0.0.1:5444":"rdpulltest"}}"#,
    )
    .unwrap();
    let before = token_log().lines().count();
    ok(run("b", "127.0.0.1:5444/multi:latest", Some(&bin)));
    assert_eq!(std::fs::read_to_string(&asked).unwrap(), "127.0.0.1:5444");
    let issued: Vec<String> = token_log().lines().skip(before).map(String::from).collect();
    assert!(
        issued
            .iter()
            .any(|l| l.contains("\"via\": \"GET\"") && l.contains("\"authed\": true")),
        "{issued:?}"
    );
    // A rejected secret from a helper: one clear line, and the secret is not in it.
    let o = {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rdpull"));
        c.args([
            "--root",
            t.path().join("c").to_str().unwrap(),
            "--tls-ca",
            ca.to_str().unwrap(),
        ])
        .args(["pull", "127.0.0.1:5444/multi:latest"])
        .env("DOCKER_CONFIG", &cfg)
        .env("HELPER_SECRET", "s3cret-wrong")
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        );
        c.output().unwrap()
    };
    secret_free(&o, "s3cret-wrong");
    assert_eq!(
        fails(o),
        "rdpull: error: token request to https://127.0.0.1:5445/token: HTTP 401 (credentials rejected)"
    );

    // identitytoken: get a refresh token as `docker login` would, then pull with it.
    let refresh = {
        let o = Command::new("curl")
            .args(["-sf", "--cacert", ca.to_str().unwrap(), "-d", "grant_type=password&username=rdpull&password=rdpull&service=rdpull-testbed-registry&client_id=test"])
            .arg("https://127.0.0.1:5445/token")
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("token server answer");
        v["refresh_token"].as_str().unwrap().to_string()
    };
    std::fs::write(
        cfg.join("config.json"),
        format!(r#"{{"auths":{{"127.0.0.1:5444":{{"auth":"","identitytoken":"{refresh}"}}}}}}"#),
    )
    .unwrap();
    let before = token_log().lines().count();
    let o = run("d", "127.0.0.1:5444/debian:bookworm", None);
    secret_free(&ok(o), &refresh);
    let issued: Vec<String> = token_log().lines().skip(before).map(String::from).collect();
    assert!(
        issued
            .iter()
            .any(|l| l.contains("\"via\": \"POST-refresh\"")),
        "{issued:?}"
    );
}

/// A hosts directory with one `hosts.toml` for `registry`.
fn hosts_dir(t: &Path, registry: &str, toml: &str) -> std::path::PathBuf {
    let d = t.join("hosts");
    std::fs::create_dir_all(d.join(registry)).unwrap();
    std::fs::write(d.join(registry).join("hosts.toml"), toml).unwrap();
    d
}

/// Access-log lines of a registry log after the first `from`.
fn log_since(log: &Path, from: usize) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .skip(from)
        .map(String::from)
        .collect()
}

/// A mirror from hosts.toml: a real pull-through cache (docker-registry proxy) in front of
/// the testbed registry. The upstream sees the image only through the mirror; a dead
/// mirror falls back to the server.
#[test]
fn hosts_toml_mirror_and_fallback() {
    setup();
    // A repository no other test touches, so the logs can be attributed.
    let st = Command::new("skopeo")
        .args([
            "copy",
            "-q",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .args([
            &format!("docker://{REG}/multi:latest"),
            &format!("docker://{REG}/mirrortest/multi:latest"),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let t = tempfile::tempdir().unwrap();
    let upstream = testbed_dir().join("registry/http.log");
    let mirror = testbed_dir().join("extra/mirror.log");
    let hosts = hosts_dir(
        t.path(),
        REG,
        "server = \"http://127.0.0.1:5000\"\n[host.\"http://127.0.0.1:5446\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
    );
    let (u0, m0) = (log_since(&upstream, 0).len(), log_since(&mirror, 0).len());
    let dir = t.path().join("rootfs");
    let image = format!("{REG}/mirrortest/multi:latest");
    ok(rdpull(
        &t.path().join("a"),
        &[
            "--hosts-dir",
            hosts.to_str().unwrap(),
            "unpack",
            &image,
            dir.to_str().unwrap(),
        ],
    ));
    assert_same(
        &tree_manifest(&dir),
        &expected("multi_latest"),
        "multi via the mirror",
    );
    let ours = |l: &String| l.contains("/v2/mirrortest/") && l.contains("\"rdpull/");
    let at_mirror: Vec<String> = log_since(&mirror, m0).into_iter().filter(ours).collect();
    assert!(
        at_mirror
            .iter()
            .any(|l| l.contains("GET /v2/mirrortest/multi/manifests/latest?ns=127.0.0.1%3A5000")),
        "{at_mirror:?}"
    );
    assert!(at_mirror
        .iter()
        .any(|l| l.contains("GET /v2/mirrortest/multi/blobs/sha256:")));
    assert_eq!(
        log_since(&upstream, u0).iter().filter(|l| ours(l)).count(),
        0,
        "rdpull went around the mirror"
    );
    assert!(
        log_since(&upstream, u0)
            .iter()
            .any(|l| l.contains("/v2/mirrortest/multi/")),
        "the cache did not fetch from the upstream"
    );

    // A dead mirror first: the server answers instead.
    let t2 = tempfile::tempdir().unwrap();
    let hosts = hosts_dir(
        t2.path(),
        REG,
        "server = \"http://127.0.0.1:5000\"\n[host.\"http://127.0.0.1:1\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
    );
    let u1 = log_since(&upstream, 0).len();
    ok(rdpull(
        &t2.path().join("b"),
        &["--hosts-dir", hosts.to_str().unwrap(), "pull", &image],
    ));
    assert!(
        log_since(&upstream, u1).iter().any(ours),
        "the server was not used after the dead mirror"
    );
}

/// TLS settings from hosts.toml (`ca`, `client`) and from flags (`--tls-cert`), against
/// the testbed's Basic-auth registry and a registry that requires client certificates;
/// `--insecure-skip-tls-verify` works and warns.
#[test]
fn tls_from_hosts_toml_client_certificates_and_skip_verify() {
    setup();
    let tb = testbed_dir();
    let ca = tb.join("ca.pem");
    let (cert, key) = (tb.join("extra/client.pem"), tb.join("extra/client-key.pem"));
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    let hosts = hosts_dir(
        t.path(),
        "127.0.0.1:5443",
        &format!(
            "server = \"https://127.0.0.1:5443\"\nca = \"{}\"\n",
            ca.display()
        ),
    );
    let h = hosts.to_str().unwrap();
    ok(rdpull(
        &root,
        &[
            "--hosts-dir",
            h,
            "--user",
            "rdpull:rdpull",
            "pull",
            "127.0.0.1:5443/debian:bookworm",
        ],
    ));
    // Client certificate by flags, then by hosts.toml.
    let image = "127.0.0.1:5447/debian:bookworm";
    let e = fails(rdpull(
        &root,
        &["--tls-ca", ca.to_str().unwrap(), "pull", image],
    ));
    assert!(
        e.starts_with("rdpull: error: registry ping: https://127.0.0.1:5447/v2/: "),
        "{e}"
    );
    let (ca_s, cert_s, key_s) = (
        ca.to_str().unwrap(),
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
    );
    ok(rdpull(
        &root,
        &[
            "--tls-ca",
            ca_s,
            "--tls-cert",
            cert_s,
            "--tls-key",
            key_s,
            "pull",
            image,
        ],
    ));
    let hosts = hosts_dir(
        &t.path().join("h2"),
        "127.0.0.1:5447",
        &format!("server = \"https://127.0.0.1:5447\"\nca = \"{ca_s}\"\nclient = [[\"{cert_s}\", \"{key_s}\"]]\n"),
    );
    ok(rdpull(
        &t.path().join("store2"),
        &["--hosts-dir", hosts.to_str().unwrap(), "pull", image],
    ));
    // No CA at all, but verification off: works, and says loudly what that means.
    let o = ok(rdpull(
        &t.path().join("store3"),
        &[
            "--insecure-skip-tls-verify",
            "--user",
            "rdpull:rdpull",
            "pull",
            "127.0.0.1:5443/multi:latest",
        ],
    ));
    assert!(
        common::stderr(&o).contains("WARNING: TLS certificate verification is OFF"),
        "{}",
        common::stderr(&o)
    );
}

/// HTTP_PROXY, HTTPS_PROXY and NO_PROXY as curl reads them. The proxy here is the test's
/// fake registry: it answers absolute-form requests itself, and tunnels CONNECT to the
/// testbed's TLS registry.
#[test]
fn proxies_from_the_environment() {
    use rdpull_testkit::registry::{one_file_layer, FakeRegistry};
    setup();
    let proxy = FakeRegistry::start();
    proxy.push("app", "v1", &[one_file_layer("a", b"via proxy")]);
    let t = tempfile::tempdir().unwrap();
    let run = |root: &str, args: &[&str], env: &[(&str, String)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rdpull"));
        c.args(["--root", t.path().join(root).to_str().unwrap()])
            .args(args);
        for k in [
            "http_proxy",
            "https_proxy",
            "no_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "NO_PROXY",
            "ALL_PROXY",
        ] {
            c.env_remove(k);
        }
        c.env("DOCKER_CONFIG", "/nonexistent/rdpull-tests");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let url = format!("http://{}", proxy.addr);
    // Nothing listens on 127.0.0.1:1: only the proxy can answer.
    ok(run(
        "a",
        &["--plain-http", "pull", "127.0.0.1:1/app:v1"],
        &[("HTTP_PROXY", url.clone())],
    ));
    let via: Vec<_> = proxy
        .all_requests()
        .into_iter()
        .filter(|r| r.proxied_to.as_deref() == Some("127.0.0.1:1"))
        .collect();
    assert!(
        via.iter().any(|r| r.path.starts_with("/v2/app/blobs/")),
        "{via:?}"
    );
    // NO_PROXY: straight to 127.0.0.1:1, which refuses.
    let e = fails(run(
        "b",
        &["--plain-http", "pull", "127.0.0.1:1/app:v1"],
        &[
            ("HTTP_PROXY", url.clone()),
            ("NO_PROXY", "127.0.0.1".into()),
        ],
    ));
    assert!(e.contains("127.0.0.1:1") && e.contains("onnect"), "{e}");
    // HTTPS through a CONNECT tunnel, TLS end to end with the real registry.
    let ca = testbed_dir().join("ca.pem");
    let before = proxy.all_requests().len();
    ok(run(
        "c",
        &[
            "--tls-ca",
            ca.to_str().unwrap(),
            "--user",
            "rdpull:rdpull",
            "pull",
            "127.0.0.1:5443/debian:bookworm",
        ],
        &[("HTTPS_PROXY", url)],
    ));
    let connects: Vec<_> = proxy
        .all_requests()
        .into_iter()
        .skip(before)
        .filter(|r| r.method == "CONNECT")
        .collect();
    assert!(
        !connects.is_empty()
            && connects
                .iter()
                .all(|r| r.proxied_to.as_deref() == Some("127.0.0.1:5443")),
        "{connects:?}"
    );
}

/// kill -9 in the middle of a pull of the testbed's big image (2.3 GB, 6 layers), then
/// the same command again: it completes, fetches no layer that was committed, and the
/// result equals a clean pull. Needs `make-images big` (a benchmark image, not built for
/// CI): run with `cargo test --test testbed -- --ignored`.
#[test]
#[ignore = "needs the big testbed image: make-images big"]
fn killed_big_pull_resumes_and_equals_a_clean_pull() {
    setup();
    let st = Command::new("bash")
        .arg(testbed().join("make-images"))
        .arg("big")
        .status()
        .unwrap();
    assert!(st.success());
    let image = format!("{REG}/big:latest");
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    let log = testbed_dir().join("registry/http.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rdpull"))
        .args([
            "--root",
            root.to_str().unwrap(),
            "--parallel",
            "2",
            "pull",
            &image,
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while snapshots(&root).0.is_empty() {
        assert!(t0.elapsed().as_secs() < 120, "no layer committed");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the pull ended before it could be killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (committed, _) = snapshots(&root);
    assert!(
        committed.len() < 6,
        "everything was committed before the kill"
    );
    // Which layer blobs were committed: from the store's metadata labels.
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("metadata.json")).unwrap()).unwrap();
    let done: Vec<String> = meta["snapshots"]
        .as_object()
        .unwrap()
        .values()
        .filter(|i| i["kind"] == "committed")
        .map(|i| {
            i["labels"]["rdpull.io/layer.digest"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let from = log_since(&log, 0).len();
    let dir = t.path().join("rootfs");
    ok(rdpull(
        &root,
        // The rerun on single streams, the clean pull chunked: chunking must not change a byte.
        &[
            "--parallel",
            "16",
            "--chunk-window",
            "1",
            "unpack",
            &image,
            dir.to_str().unwrap(),
        ],
    ));
    for d in &done {
        let refetched = log_since(&log, from)
            .iter()
            .filter(|l| l.contains(&format!("GET /v2/big/blobs/{d}")))
            .count();
        assert_eq!(refetched, 0, "committed layer {d} fetched again");
    }
    let clean = t.path().join("clean");
    let from = log_since(&log, 0).len();
    ok(rdpull(
        &t.path().join("store2"),
        &[
            "--parallel",
            "16",
            "unpack",
            &image,
            clean.to_str().unwrap(),
        ],
    ));
    // The largest layer (244 MB) came over several connections.
    let largest = {
        let o = Command::new("python3")
            .arg(testbed().join("regtool.py"))
            .args(["layers", &image])
            .output()
            .unwrap();
        let text = String::from_utf8(o.stdout).unwrap();
        let mut layers: Vec<(u64, String)> = text
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[2].parse().unwrap(), f[0].to_string())
            })
            .collect();
        layers.sort();
        layers.pop().unwrap().1
    };
    let gets = log_since(&log, from)
        .iter()
        .filter(|l| l.contains(&format!("\"GET /v2/big/blobs/{largest}")))
        .count();
    assert!(gets >= 8, "largest layer fetched in {gets} request(s)");
    assert_same(
        &tree_manifest(&dir),
        &tree_manifest(&clean),
        "resumed vs clean pull of big:latest",
    );
}
