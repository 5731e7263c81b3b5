//! End to end against the real Docker distribution registry of `../shared/testbed`: the
//! trees rdpull unpacks are compared with umoci's listings (`$TESTBED_DIR/expected`), or,
//! for images the testbed writes no listing of, with listings derived here from the
//! images' definitions in `make-images` / `mkmulti.py`. Needs root, python3 and apt.
//!
//! Every test needs root (overlay whiteouts are devices, layers set owners) and the
//! testbed's registry, which `setup` starts; as non-root each test says it is skipped.
//! Themes: [`bundle`] (OCI bundles that runc and crun run), [`conformance`] (trees equal umoci's, hostile images stay inside),
//! [`crosslayer`] (layers that write through, into and link to their lower layers),
//! [`registry_access`] (auth, credentials, hosts.toml, TLS, proxies), [`resume`] (a
//! killed big pull resumes), [`lifecycle`] (images, inspect, history, rmi, prune),
//! [`save`] (kept blobs, and an OCI archive skopeo and umoci read), [`run`] (containers
//! through the built-in launcher and runc: answers, exit codes, signals, cleanup),
//! [`launcher`] (the built-in launcher prints what runc prints, for a matrix of options),
//! [`containerd`] (containerd 1.6 with `rdpull snapshotter` as its snapshotter: plain and
//! remote pulls, fallback, GC, the daemon's lifecycle).
// A test is one scenario, steps and assertions in order; splitting it would hide it.
#![allow(clippy::too_many_lines)]

#[path = "../common/mod.rs"]
mod common;

mod bundle;
mod conformance;
mod containerd;
mod crosslayer;
mod four_paths;
mod hostile;
mod launcher;
mod lifecycle;
mod limits;
mod registry_access;
mod resume;
mod run;
mod save;
mod security;
mod v2_only;

use common::{
    command, fails, ok, rdpull, snapshots, stderr, stdout, testbed, testbed_dir, tree_manifest,
};
use rdpull_testkit::skip_unless_root;
use sha2::{Digest as _, Sha256};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;

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

/// Access-log lines of a registry log after the first `from`.
fn log_since(log: &Path, from: usize) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .skip(from)
        .map(String::from)
        .collect()
}

/// The command that runs the bundle in `dir` as container `id` with `runtime`: the
/// built-in launcher (`builtin`), `crun`, or an OCI runtime program run as `RUNTIME run
/// --bundle DIR ID`.
fn bundle_runtime(runtime: &str, dir: &Path, id: &str) -> Command {
    let mut c;
    match runtime {
        "builtin" => {
            c = Command::new(env!("CARGO_BIN_EXE_rdpull"));
            c.arg("__launch").arg(dir).arg(id);
        }
        "crun" => {
            // crun 1.8 refuses a hybrid cgroup host whose v2 hierarchy has controllers
            // (this VM's hugetlb); without the v2 mount, in a mount namespace of its own,
            // it runs the bundle as it is.
            c = Command::new("unshare");
            c.args(["-m", "--propagation", "private", "sh", "-c"])
                .arg(format!(
                    "umount /sys/fs/cgroup/unified 2>/dev/null; exec crun run --bundle {} {id}",
                    dir.display()
                ));
        }
        _ => {
            c = Command::new(runtime);
            c.args(["run", "--bundle"]).arg(dir).arg(id);
        }
    }
    c.current_dir(dir);
    c
}

/// Set in the tests [`v2_only`] runs again inside a v2-only mount namespace.
const V2_ONLY_ENV: &str = "RDPULL_TEST_V2_ONLY";

/// Does this test binary see a cgroup v2-only host (run by [`v2_only`])?
fn on_v2_only_host() -> bool {
    std::env::var_os(V2_ONLY_ENV).is_some()
}

/// The runtimes `rdpull run` is tested with here. crun 1.8 cannot run on this VM's
/// v2-only namespace: it raises RLIMIT_MEMLOCK for its device program, and this
/// sandbox's root lacks CAP_SYS_RESOURCE (on a real host it has it).
fn tested_runtimes() -> &'static [&'static str] {
    if on_v2_only_host() {
        &["builtin", "runc"]
    } else {
        &["builtin", "runc", "crun"]
    }
}

/// The container `id`'s cgroup directory for `controller` (v1), or its one directory
/// on a v2-only host.
fn container_cgroup(controller: &str, id: &str) -> std::path::PathBuf {
    if on_v2_only_host() {
        Path::new("/sys/fs/cgroup").join(id)
    } else {
        Path::new("/sys/fs/cgroup").join(controller).join(id)
    }
}

/// `rdpull` in a mount namespace of its own without this hybrid host's v2 hierarchy:
/// crun 1.8 refuses a hybrid host whose v2 hierarchy has controllers (this VM's
/// hugetlb), and so `--runtime crun` runs there (as `bundle_runtime` runs crun).
fn without_unified_hierarchy(rdpull: &Command) -> Command {
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(r#"umount /sys/fs/cgroup/unified 2>/dev/null; exec "$0" "$@""#)
        .arg(rdpull.get_program())
        .args(rdpull.get_args());
    for (k, v) in rdpull.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

/// Start `rdpull ARGS` (on `root`) whose container prints `ready` first; returns it once
/// that line is read, with the rest of its stdout to read.
fn start_until_ready(
    root: &Path,
    args: &[&str],
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStdout>,
) {
    let mut child = command(root, args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line, "ready\n", "{args:?}");
    (child, out)
}

/// `rdpull run --rm --runtime RUNTIME FLAGS debian sh -c SCRIPT`.
fn run_debian(root: &Path, runtime: &str, flags: &[&str], script: &str) -> Output {
    let image = format!("{REG}/debian:bookworm");
    let mut args = vec!["--plain-http", "-q", "run", "--rm", "--runtime", runtime];
    args.extend_from_slice(flags);
    args.extend([image.as_str(), "sh", "-c", script]);
    command(root, &args).output().unwrap()
}

/// `rdpull bundle FLAGS debian:bookworm DIR -- COMMAND` on `root`.
fn debian_bundle(root: &Path, dir: &Path, flags: &[&str], command: &[&str]) -> Output {
    let image = format!("{REG}/debian:bookworm");
    let mut all = vec!["--plain-http", "bundle"];
    all.extend_from_slice(flags);
    all.extend([image.as_str(), dir.to_str().unwrap(), "--"]);
    all.extend_from_slice(command);
    rdpull(root, &all)
}

/// The directory of the container in `root` (the only one), if there is one yet.
fn container_dir(root: &Path) -> Option<std::path::PathBuf> {
    Some(
        std::fs::read_dir(root.join("containers"))
            .ok()?
            .next()?
            .ok()?
            .path(),
    )
}
