//! containerd with `rdpull snapshotter` as its proxy snapshotter, a private instance per
//! test (scripts/containerd-rdpull: own root, state and socket, CRI on), against the
//! testbed registry: the plain path (containerd unpacks into rdpull's snapshots), the
//! remote path (a CRI PullImage that rdpull pulls and containerd fetches no layer of), the
//! fallback, containerd's GC beside `rdpull pull`'s images, and a daemon killed or stopped
//! mid pull. The whole set runs on containerd 1.6.20 (Debian bookworm's), 1.7.24 and 2.1.9
//! (../shared/testbed/peer-versions); 2.1's other CRI pull modes run the remote path, and
//! its transfer service without the labels runs the fallback.

use std::path::PathBuf;

use super::*;
use crate::common::wait_until;

/// One private containerd at a time: they are heavy, and the registry log is counted.
static CONTAINERD: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/containerd-rdpull")
}

/// Which containerd, and for 2.1 how its CRI pulls (scripts/containerd-rdpull's
/// `CONTAINERD_VERSION` and `CRI_PULL`).
#[derive(Clone, Copy, Debug)]
struct Peer {
    version: &'static str,
    cri_pull: &'static str,
}

const V1_6: Peer = Peer {
    version: "1.6",
    cri_pull: "",
};
const V1_7: Peer = Peer {
    version: "1.7",
    cri_pull: "",
};
/// 2.1's default: the CRI pulls through the transfer service, which gives rdpull the
/// image's labels when the proxy plugin exports `enable_remote_snapshot_annotations`.
const V2_1: Peer = Peer {
    version: "2.1",
    cri_pull: "transfer",
};

impl Peer {
    fn with_cri_pull(self, cri_pull: &'static str) -> Peer {
        Peer { cri_pull, ..self }
    }

    /// `ctr` of this version.
    fn ctr(self) -> PathBuf {
        if self.version == "1.6" {
            return PathBuf::from("ctr");
        }
        let o = ok(Command::new("bash")
            .arg(testbed().join("peer-versions"))
            .args(["path", &format!("containerd-{}", self.version)])
            .output()
            .unwrap());
        Path::new(stdout(&o).trim()).join("ctr")
    }

    /// Where the test's store and containerd's root live: 1.6 on the root filesystem, as
    /// nodes have it; 1.7 and 2.1 on tmpfs, which halves their time in CI (the same
    /// tests, 1.1 GB of multi written several times each).
    fn scratch(self) -> &'static Path {
        Path::new(if self.version == "1.6" {
            "/var/tmp"
        } else {
            "/dev/shm"
        })
    }

    /// Does `ctr images pull` go through the transfer service (2.x), where `--local`
    /// asks for the client-side pull that unpacks into the snapshotter?
    fn ctr_pulls_by_transfer(self) -> bool {
        self.version.starts_with('2')
    }
}

/// A private containerd and its rdpull snapshotter, stopped (by their own pids) on drop.
struct Containerd {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    peer: Peer,
    ctr: PathBuf,
}

impl Containerd {
    /// Up with rdpull's store at `root`, the daemon given the testbed's hosts dir (CA of
    /// the TLS registries) and no credentials.
    fn up(root: &Path, peer: Peer) -> Containerd {
        let t = tempfile::Builder::new()
            .prefix("rdpull-containerd-")
            .tempdir_in(peer.scratch())
            .unwrap();
        let c = Containerd {
            dir: t.path().to_path_buf(),
            _dir: t,
            peer,
            ctr: peer.ctr(),
        };
        c.start(root);
        c
    }

    fn start(&self, root: &Path) {
        let hosts = testbed_dir().join("certs.d");
        let o = Command::new(script())
            .args(["up", self.dir.to_str().unwrap()])
            .env("RDPULL_BIN", env!("CARGO_BIN_EXE_rdpull"))
            .env("RDPULL_ROOT", root)
            .env("RDPULL_ARGS", format!("--hosts-dir {}", hosts.display()))
            .env("CONTAINERD_HOSTS", &hosts)
            .env("CONTAINERD_VERSION", self.peer.version)
            .env("CRI_PULL", self.peer.cri_pull)
            .env("DOCKER_CONFIG", "/nonexistent/rdpull-tests")
            .output()
            .unwrap();
        assert!(o.status.success(), "containerd-rdpull up: {}", stderr(&o));
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    fn ctr(&self, args: &[&str]) -> Output {
        Command::new(&self.ctr)
            .arg("-a")
            .arg(self.socket())
            .args(args)
            .output()
            .unwrap()
    }

    fn daemon_pid(&self) -> i32 {
        std::fs::read_to_string(self.dir.join("rdpull.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("rdpull.log")).unwrap_or_default()
    }

    /// `ctr snapshots ls` of rdpull's snapshotter in namespace `ns`.
    fn snapshots_ls(&self, ns: &str) -> String {
        stdout(&ok(self.ctr(&[
            "-n",
            ns,
            "snapshots",
            "--snapshotter",
            "rdpull",
            "ls",
        ])))
    }

    /// Committed snapshots of namespace `ns` in rdpull's snapshotter, and the top one
    /// (the committed snapshot no other is built on; one image per namespace).
    fn top_snapshot(&self, ns: &str) -> String {
        let out = self.snapshots_ls(ns);
        let rows: Vec<Vec<&str>> = out
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect())
            .collect();
        let parents: Vec<&str> = rows.iter().filter(|r| r.len() == 3).map(|r| r[1]).collect();
        let tops: Vec<&str> = rows
            .iter()
            .filter(|r| r.last() == Some(&"Committed") && !parents.contains(&r[0]))
            .map(|r| r[0])
            .collect();
        assert_eq!(tops.len(), 1, "one top snapshot in {ns}: {out}");
        tops[0].to_string()
    }

    /// The tree of a read-only View of `parent` made and mounted through `snapshotter`'s
    /// own Mounts (not `ctr images mount`, which in 1.6 mounts overlayfs' copy).
    fn view_tree(&self, ns: &str, snapshotter: &str, parent: &str) -> String {
        let key = format!("view-{}", parent.len() + ns.len());
        let out = stdout(&ok(self.ctr(&[
            "-n",
            ns,
            "snapshots",
            "--snapshotter",
            snapshotter,
            "view",
            "--mounts",
            &key,
            parent,
        ])));
        let mounts: serde_json::Value = serde_json::from_str(&out).unwrap();
        let m = &mounts[0];
        let target = tempfile::tempdir().unwrap();
        let opts: Vec<&str> = m["Options"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o.as_str().unwrap())
            .collect();
        let kind = m["Type"].as_str().unwrap();
        let st = Command::new("mount")
            .args(["-t", if kind == "bind" { "none" } else { kind }])
            .args(["-o", &opts.join(",")])
            .arg(m["Source"].as_str().unwrap())
            .arg(target.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount {m}");
        let tree = tree_manifest(target.path());
        Command::new("umount").arg(target.path()).status().unwrap();
        // ctr's lease on the view ended with its command: containerd's GC may have
        // collected it already.
        let rm = self.ctr(&[
            "-n",
            ns,
            "snapshots",
            "--snapshotter",
            snapshotter,
            "rm",
            &key,
        ]);
        assert!(
            rm.status.success() || stderr(&rm).contains("not found"),
            "{}",
            stderr(&rm)
        );
        tree
    }

    /// `ctr run --rm` of an image the CRI pulled (namespace k8s.io), through rdpull's
    /// snapshotter; must succeed.
    fn cri_run(&self, image: &str, command: &[&str]) -> Output {
        let mut args = vec![
            "-n",
            "k8s.io",
            "run",
            "--rm",
            "--snapshotter",
            "rdpull",
            image,
            "c1",
        ];
        args.extend_from_slice(command);
        ok(self.ctr(&args))
    }

    /// `ctr -n NS images pull --plain-http --snapshotter SN IMAGE`, unpacked by containerd
    /// (`--local` on 2.x, whose default transfer service hands rdpull the labels).
    fn ctr_pull(&self, ns: &str, snapshotter: &str, image: &str) -> Output {
        let mut args = vec!["-n", ns, "images", "pull", "--plain-http"];
        if self.peer.ctr_pulls_by_transfer() {
            args.push("--local");
        }
        args.extend_from_slice(&["--snapshotter", snapshotter, image]);
        self.ctr(&args)
    }

    fn cri_pull(&self, image: &str) -> Result<String, String> {
        rdpull_testkit::cri::pull_image(&self.socket(), image, None).map_err(|e| e.to_string())
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .args(["down", self.dir.to_str().unwrap()])
            .status();
    }
}

/// A test's private containerd on a fresh store (`t/store`), holding the lock that runs
/// one at a time; dropped in reverse order: containerd, the directory, the lock.
fn fresh(
    peer: Peer,
) -> (
    std::sync::MutexGuard<'static, ()>,
    tempfile::TempDir,
    PathBuf,
    Containerd,
) {
    setup();
    let one = CONTAINERD.lock().unwrap_or_else(|e| e.into_inner());
    let t = tempfile::tempdir_in(peer.scratch()).unwrap();
    let store = t.path().join("store");
    let c = Containerd::up(&store, peer);
    (one, t, store, c)
}

/// Layer blob digests of `image` in the testbed registry.
fn layers(image: &str) -> Vec<String> {
    let o = ok(Command::new("python3")
        .arg(testbed().join("regtool.py"))
        .args(["layers", &format!("{REG}/{image}")])
        .output()
        .unwrap());
    stdout(&o)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

/// GETs of `repo`'s blob `digest` in access-log lines `log`, by user agent prefix.
fn blob_gets(log: &[String], repo: &str, digest: &str, agent: &str) -> usize {
    let path = format!("\"GET /v2/{repo}/blobs/{digest} ");
    let agent = format!("\"{agent}");
    log.iter()
        .filter(|l| l.contains(&path) && l.contains(&agent))
        .count()
}

fn registry_log() -> PathBuf {
    testbed_dir().join("registry/http.log")
}

fn log_len() -> usize {
    log_since(&registry_log(), 0).len()
}

/// `ctr images pull --snapshotter rdpull`: containerd unpacks into rdpull's snapshots,
/// and a View mounted through rdpull's Mounts lists as umoci's unpack does (debian,
/// multi) or as containerd's own overlayfs snapshotter does (the edge images).
fn plain_path_views_equal_umoci_and_overlayfs(peer: Peer) {
    skip_unless_root!();
    let (_one, _t, _store, c) = fresh(peer);
    for (image, want) in [
        ("debian:bookworm", "debian_bookworm"),
        ("multi:latest", "multi_latest"),
    ] {
        let ns = want.replace('_', "-");
        let r = format!("{REG}/{image}");
        ok(c.ctr_pull(&ns, "rdpull", &r));
        let top = c.top_snapshot(&ns);
        assert_same(&c.view_tree(&ns, "rdpull", &top), &expected(want), image);
    }
    if peer.ctr_pulls_by_transfer() {
        // Without --local, the transfer service pulls, and gives rdpull the labels.
        let r = format!("{REG}/debian:bookworm");
        let pull = ["-n", "transfer", "images", "pull", "--plain-http"];
        ok(c.ctr(&[&pull[..], &["--snapshotter", "rdpull", &r]].concat()));
        let top = c.top_snapshot("transfer");
        let tree = c.view_tree("transfer", "rdpull", &top);
        assert_same(&tree, &expected("debian_bookworm"), "debian by transfer");
    }
    for tag in [
        "gnu-sparse",
        "umoci-dir2file",
        "wh-then-readd",
        "wh-after-readd",
    ] {
        let r = format!("{REG}/edge:{tag}");
        let ns = format!("edge-{tag}");
        let pull = |sn: &str| c.ctr_pull(&ns, sn, &r);
        // Where containerd's applier refuses a layer, it does so into either snapshotter.
        let theirs = pull("overlayfs");
        let ours = pull("rdpull");
        assert_eq!(
            ours.status.success(),
            theirs.status.success(),
            "edge:{tag}: {}",
            stderr(&ours)
        );
        if !theirs.status.success() {
            continue;
        }
        let top = c.top_snapshot(&ns);
        // containerd names committed snapshots by ChainID in both snapshotters.
        let ours = c.view_tree(&ns, "rdpull", &top);
        let theirs = c.view_tree(&ns, "overlayfs", &top);
        assert_same(&ours, &theirs, &format!("edge:{tag}"));
    }
}

/// A CRI PullImage with rdpull as the CRI's snapshotter: rdpull pulls every layer,
/// containerd's user agent GETs none, the image runs through the proxy's mounts, and
/// the daemon logs one line for the pull.
fn remote_path_skips_containerds_layer_fetch(peer: Peer) {
    skip_unless_root!();
    let (_one, _t, store, c) = fresh(peer);
    let _serial = DEBIAN_REPO.lock().unwrap_or_else(|e| e.into_inner());
    for (repo, image) in [("debian", "debian:bookworm"), ("multi", "multi:latest")] {
        let before = log_len();
        let r = format!("{REG}/{image}");
        let image_ref = c.cri_pull(&r).unwrap();
        assert!(image_ref.starts_with("sha256:"), "{image_ref}");
        let log = log_since(&registry_log(), before);
        for layer in layers(image) {
            assert_eq!(
                blob_gets(&log, repo, &layer, "containerd"),
                0,
                "containerd fetched {layer}"
            );
            assert!(
                blob_gets(&log, repo, &layer, "rdpull") >= 1,
                "rdpull did not fetch {layer}"
            );
        }
        assert!(
            c.daemon_log()
                .contains(&format!("remote pull: {REG}/{repo}@sha256:")),
            "{}",
            c.daemon_log()
        );
        assert!(!c.daemon_log().contains("fallback"), "{}", c.daemon_log());
    }
    // The snapshots containerd recorded are rdpull's, named by ChainID.
    let names = c.snapshots_ls("k8s.io");
    assert_eq!(
        names.lines().count(),
        1 + 1 + layers("multi:latest").len(),
        "{names}"
    );
    assert!(
        names.lines().skip(1).all(|l| l.starts_with("sha256:")),
        "{names}"
    );
    let run = c.cri_run(
        &format!("{REG}/debian:bookworm"),
        &["cat", "/etc/os-release"],
    );
    assert!(
        stdout(&run).contains("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\""),
        "{}",
        stdout(&run)
    );
    // Images the daemon pulled belong to containerd: `rdpull images` does not list them.
    let images = stdout(&ok(rdpull(&store, &["images", "-q"])));
    assert_eq!(images, "");
}

/// A registry only containerd has credentials for: rdpull's pull fails on auth, the
/// daemon logs why, and containerd pulls the layers itself; the user's pull succeeds.
fn fallback_when_rdpull_cannot_pull(peer: Peer) {
    skip_unless_root!();
    let (_one, _t, _store, c) = fresh(peer);
    let image = "127.0.0.1:5443/debian:bookworm";
    let auth = rdpull_testkit::cri::AuthConfig {
        username: "rdpull".into(),
        password: "rdpull".into(),
        ..Default::default()
    };
    let image_ref = rdpull_testkit::cri::pull_image(&c.socket(), image, Some(auth)).unwrap();
    assert!(image_ref.starts_with("sha256:"));
    let log = c.daemon_log();
    assert!(
        log.contains("remote pull: 127.0.0.1:5443/debian@sha256:"),
        "{log}"
    );
    assert!(log.contains(": failed after "), "{log}");
    assert!(
        log.contains("fallback: k8s.io/") && log.contains("itself: rdpull's pull failed: "),
        "{log}"
    );
    let run = c.cri_run(image, &["cat", "/etc/debian_version"]);
    assert!(stdout(&run).starts_with("12."), "{}", stdout(&run));
}

/// containerd's GC removes the snapshots containerd created and releases the layers it
/// was lent, and leaves `rdpull pull`'s image, which it was served without a download.
fn containerd_gc_leaves_rdpull_images(peer: Peer) {
    skip_unless_root!();
    setup();
    let _one = CONTAINERD.lock().unwrap_or_else(|e| e.into_inner());
    let t = tempfile::tempdir_in(peer.scratch()).unwrap();
    let store = t.path().join("store");
    let multi = format!("{REG}/multi:latest");
    ok(rdpull(&store, &["pull", &multi]));
    let want = stdout(&ok(rdpull(&store, &["images", "-q"])));
    let c = Containerd::up(&store, peer);
    // CRI pull of the image rdpull has: no layer is fetched again.
    let before = log_len();
    c.cri_pull(&multi).unwrap();
    let log = log_since(&registry_log(), before);
    for layer in layers("multi:latest") {
        assert_eq!(
            blob_gets(&log, "multi", &layer, ""),
            0,
            "{layer} fetched again"
        );
    }
    // And a plain ctr pull that containerd unpacks into snapshots of its own.
    let debian = format!("{REG}/debian:bookworm");
    ok(c.ctr_pull("gc", "rdpull", &debian));
    assert!(!c.top_snapshot("gc").is_empty());
    // CRI removes every name of its image (tag, digest) as kubelet's image GC does.
    rdpull_testkit::cri::remove_image(&c.socket(), &multi).unwrap();
    ok(c.ctr(&["-n", "gc", "images", "rm", "--sync", &debian]));
    for ns in ["k8s.io", "gc"] {
        wait_until(&format!("containerd's GC of namespace {ns}"), 30, || {
            let left = c.snapshots_ls(ns);
            left.lines().count() == 1
        });
    }
    // containerd's own directories are gone; rdpull's image is whole.
    let own = std::fs::read_dir(store.join("containerd/snapshots"))
        .unwrap()
        .count();
    assert_eq!(own, 0);
    assert_eq!(stdout(&ok(rdpull(&store, &["images", "-q"]))), want);
    let dir = t.path().join("rootfs");
    ok(rdpull(&store, &["unpack", &multi, dir.to_str().unwrap()]));
    assert_same(
        &tree_manifest(&dir),
        &expected("multi_latest"),
        "multi after containerd's GC",
    );
}

/// A CRI pull of `image` on a thread, and `signal` sent to the daemon once rdpull's pull
/// has an active snapshot in `store` to leave behind; the thread answers the pull's result.
fn signal_mid_remote_pull(
    c: &Containerd,
    store: &Path,
    image: &str,
    signal: &str,
) -> std::thread::JoinHandle<Result<String, String>> {
    let (socket, image) = (c.socket(), image.to_string());
    let pulling = std::thread::spawn(move || {
        rdpull_testkit::cri::pull_image(&socket, &image, None).map_err(|e| e.to_string())
    });
    wait_until("an active snapshot in rdpull's store", 60, || {
        std::fs::read_dir(store.join("snapshots"))
            .map(|d| d.count() > 0)
            .unwrap_or(false)
    });
    let pid = c.daemon_pid().to_string();
    Command::new("kill").args([signal, &pid]).status().unwrap();
    pulling
}

/// The daemon killed with SIGKILL in the middle of a remote pull: that pull fails, the
/// restarted daemon serves containerd's next pull, and nothing half-done is left.
fn daemon_killed_mid_remote_pull(peer: Peer) {
    skip_unless_root!();
    let (_one, _t, store, c) = fresh(peer);
    let image = format!("{REG}/debian:bookworm");
    let pulling = signal_mid_remote_pull(&c, &store, &image, "-KILL");
    let first = pulling.join().unwrap();
    assert!(
        first.is_err(),
        "the pull through the killed daemon: {first:?}"
    );
    c.start(&store);
    // containerd's gRPC client reconnects with a backoff: retried as kubelet retries.
    let mut second = c.cri_pull(&image);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while second.is_err() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(500));
        second = c.cri_pull(&image);
    }
    assert!(second.is_ok(), "after the restart: {second:?}");
    let top = c.top_snapshot("k8s.io");
    assert_same(
        &c.view_tree("k8s.io", "rdpull", &top),
        &expected("debian_bookworm"),
        "after kill -9",
    );
    let (_, active) = snapshots(&store);
    assert!(
        active.is_empty(),
        "active snapshots left: {active:?}: {}",
        std::fs::read_to_string(store.join("metadata.json")).unwrap()
    );
}

/// SIGTERM in the middle of a remote pull: the daemon cancels the pull, which removes its
/// active snapshot, and exits 0 with its socket removed; containerd's pull falls back or
/// fails, and the restarted daemon serves the next one.
fn daemon_stopped_mid_remote_pull(peer: Peer) {
    skip_unless_root!();
    let (_one, _t, store, c) = fresh(peer);
    let image = format!("{REG}/debian:bookworm");
    let pid = c.daemon_pid();
    let pulling = signal_mid_remote_pull(&c, &store, &image, "-TERM");
    wait_until("the daemon's exit", 30, || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
    });
    let _ = pulling.join().unwrap();
    assert!(
        c.daemon_log().contains("stopping: cancelling remote pulls"),
        "{}",
        c.daemon_log()
    );
    assert!(
        c.daemon_log().trim_end().ends_with("stopped"),
        "{}",
        c.daemon_log()
    );
    assert!(!c.dir.join("rdpull.sock").exists());
    let (_, active) = snapshots(&store);
    assert!(active.is_empty(), "active snapshots left: {active:?}");
    c.start(&store);
    wait_until("a pull through the restarted daemon", 60, || {
        c.cri_pull(&image).is_ok()
    });
}

/// containerd 2.1's transfer service without `enable_remote_snapshot_annotations`: the
/// Prepares carry no labels, so containerd fetches and unpacks every layer into rdpull's
/// snapshots, the tree is right, and the daemon says once why and what sets it.
fn transfer_service_without_labels_falls_back(peer: Peer) {
    skip_unless_root!();
    let (_one, _t, _store, c) = fresh(peer);
    let _serial = DEBIAN_REPO.lock().unwrap_or_else(|e| e.into_inner());
    let before = log_len();
    let image = format!("{REG}/multi:latest");
    c.cri_pull(&image).unwrap();
    let log = log_since(&registry_log(), before);
    for layer in layers("multi:latest") {
        assert_eq!(
            blob_gets(&log, "multi", &layer, "rdpull"),
            0,
            "rdpull fetched {layer}"
        );
        assert!(
            blob_gets(&log, "multi", &layer, "containerd") >= 1,
            "containerd did not fetch {layer}"
        );
    }
    let said: Vec<String> = c
        .daemon_log()
        .lines()
        .filter(|l| l.contains("fallback: "))
        .map(String::from)
        .collect();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].contains("itself: no containerd.io/snapshot/cri.image-ref label: ")
            && said[0].contains(
                "enable_remote_snapshot_annotations = \"true\" in [proxy_plugins.rdpull.exports]"
            ),
        "{}",
        said[0]
    );
    let top = c.top_snapshot("k8s.io");
    assert_same(
        &c.view_tree("k8s.io", "rdpull", &top),
        &expected("multi_latest"),
        "multi unpacked by containerd",
    );
}

/// Each test of the whole set, on one containerd.
macro_rules! on_containerd {
    ($module:ident, $peer:expr) => {
        mod $module {
            #[test]
            fn plain_path_views_equal_umoci_and_overlayfs() {
                super::plain_path_views_equal_umoci_and_overlayfs($peer)
            }
            #[test]
            fn remote_path_skips_containerds_layer_fetch() {
                super::remote_path_skips_containerds_layer_fetch($peer)
            }
            #[test]
            fn fallback_when_rdpull_cannot_pull() {
                super::fallback_when_rdpull_cannot_pull($peer)
            }
            #[test]
            fn containerd_gc_leaves_rdpull_images() {
                super::containerd_gc_leaves_rdpull_images($peer)
            }
            #[test]
            fn daemon_killed_mid_remote_pull() {
                super::daemon_killed_mid_remote_pull($peer)
            }
            #[test]
            fn daemon_stopped_mid_remote_pull() {
                super::daemon_stopped_mid_remote_pull($peer)
            }
        }
    };
}

on_containerd!(v1_6, super::V1_6);
on_containerd!(v1_7, super::V1_7);
on_containerd!(v2_1, super::V2_1);

/// containerd 2.1's other CRI pull modes: the remote path in each.
mod v2_1_modes {
    use super::*;

    #[test]
    fn local_image_pull_takes_the_remote_path() {
        remote_path_skips_containerds_layer_fetch(V2_1.with_cri_pull("local"));
    }

    #[test]
    fn snapshot_annotations_take_the_remote_path() {
        remote_path_skips_containerds_layer_fetch(V2_1.with_cri_pull("annotations"));
    }

    #[test]
    fn transfer_service_without_labels_falls_back() {
        super::transfer_service_without_labels_falls_back(
            V2_1.with_cri_pull("transfer-unlabelled"),
        );
    }
}

/// One daemon per root and per socket, a stale socket replaced, mode 0600 (0660 with
/// --socket-group), bad flags named.
#[test]
fn daemon_refusals_and_socket() {
    skip_unless_root!();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let t = tempfile::tempdir().unwrap();
    let (root, sock) = (t.path().join("store"), t.path().join("s/rdpull.sock"));
    let daemon = |root: &Path, extra: &[&str]| {
        let mut args = vec!["snapshotter", "--address", sock.to_str().unwrap()];
        args.extend_from_slice(extra);
        command(root, &args)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // A stale socket (no server behind it) is replaced.
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let mut first = daemon(&root, &[]);
    wait_until("the daemon's socket", 30, || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let second = fails(
        command(
            &root,
            &[
                "snapshotter",
                "--address",
                t.path().join("other.sock").to_str().unwrap(),
            ],
        )
        .output()
        .unwrap(),
    );
    assert_eq!(
        second,
        format!(
            "rdpull: error: another rdpull snapshotter serves the store {}",
            root.display()
        )
    );
    let other_root = t.path().join("store2");
    let busy = fails(
        command(
            &other_root,
            &["snapshotter", "--address", sock.to_str().unwrap()],
        )
        .output()
        .unwrap(),
    );
    assert_eq!(
        busy,
        format!(
            "rdpull: error: {}: a server is listening there already",
            sock.display()
        )
    );
    let group = fails(
        command(
            &other_root,
            &["snapshotter", "--socket-group", "no-such-group"],
        )
        .output()
        .unwrap(),
    );
    assert_eq!(
        group,
        "rdpull: error: --socket-group no-such-group: no such group in /etc/group"
    );
    let file = t.path().join("not-a-socket");
    std::fs::write(&file, "").unwrap();
    let not_socket = fails(
        command(
            &other_root,
            &["snapshotter", "--address", file.to_str().unwrap()],
        )
        .output()
        .unwrap(),
    );
    assert_eq!(
        not_socket,
        format!(
            "rdpull: error: {}: exists and is not a socket",
            file.display()
        )
    );
    Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(first.wait().unwrap().success());
    assert!(!sock.exists());
    let mut grouped = daemon(&root, &["--socket-group", "daemon"]);
    wait_until("the daemon's socket", 30, || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    let md = std::fs::metadata(&sock).unwrap();
    assert_eq!((md.permissions().mode() & 0o777, md.gid()), (0o660, 1));
    Command::new("kill")
        .args(["-INT", &grouped.id().to_string()])
        .status()
        .unwrap();
    assert!(grouped.wait().unwrap().success());
}
