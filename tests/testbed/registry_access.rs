//! Reaching real registries: the README's headline command, TLS with Basic and Bearer
//! auth, docker config credentials, hosts.toml mirrors and TLS, and proxies.

use super::*;

/// The README's first command, as a new user runs it: no --plain-http (a loopback
/// registry without TLS is talked to over HTTP, as Docker does), root from RDPULL_ROOT.
/// The second pull fetches no blob, counted in the registry's own access log.
#[test]
fn headline_command_and_no_refetch() {
    skip_unless_root!();
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
    skip_unless_root!();
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
    // After the command too, as skopeo and crane take it.
    ok(pull(&[
        "pull",
        "--user",
        "rdpull:rdpull",
        "127.0.0.1:5443/multi:latest",
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
    skip_unless_root!();
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

/// A mirror from hosts.toml: a real pull-through cache (docker-registry proxy) in front of
/// the testbed registry. The upstream sees the image only through the mirror; a dead
/// mirror falls back to the server.
#[test]
fn hosts_toml_mirror_and_fallback() {
    skip_unless_root!();
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
    skip_unless_root!();
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
        e.starts_with("rdpull: error: registry ping: https://127.0.0.1:5447/v2/: ")
            && e.ends_with(
                ": the registry may require a client certificate: pass --tls-cert and \
                 --tls-key, or set `client` in its hosts.toml"
            ),
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
    skip_unless_root!();
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
