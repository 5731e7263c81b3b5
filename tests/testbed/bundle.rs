//! `rdpull bundle`: an OCI bundle with Docker's defaults that runc and crun run as they
//! are, with the same answers under both: user, groups, hostname, working directory,
//! environment, capabilities, masked and read-only paths, a read-only rootfs, and the
//! exit code. A bad user leaves no bundle behind.

use super::*;

/// What the container prints: identity, place, environment, and its confinement.
const PROBE: &str = "id; hostname; pwd; echo A=$A HOME=$HOME; cat /etc/hostname; \
    grep -E '^(CapPrm|CapEff|CapBnd|NoNewPrivs)' /proc/self/status; \
    echo timer_list=$(wc -c </proc/timer_list); \
    (echo x >/proc/sys/kernel/hostname) 2>/dev/null || echo proc-sys-ro; \
    touch /x 2>/dev/null || echo rootfs-ro; exit 42";

fn bundle(root: &Path, dir: &Path, args: &[&str]) -> Output {
    debian_bundle(root, dir, args, &["sh", "-c", PROBE])
}

/// Run the bundle with `runtime` (`runc` or `crun`); stdout and exit code.
fn run(runtime: &str, dir: &Path) -> (String, i32) {
    let id = format!("rdpull-test-{runtime}-{}", std::process::id());
    let out = bundle_runtime(runtime, dir, &id)
        .output()
        .expect("runtime (scripts/test installs runc and crun)");
    (stdout(&out), out.status.code().unwrap_or(-1))
}

#[test]
fn runc_and_crun_run_the_bundle_as_it_is() {
    skip_unless_root!();
    setup();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");

    let dir = t.path().join("nobody");
    let args = [
        "-u",
        "nobody",
        "-e",
        "A=1",
        "-w",
        "/tmp/wd",
        "--hostname",
        "h1",
        "--read-only",
    ];
    let said = stdout(&ok(bundle(&root, &dir, &args)));
    assert!(
        said.contains("(rootfs flattened), for container "),
        "{said}"
    );
    let want = "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)\nh1\n/tmp/wd\n\
        A=1 HOME=/nonexistent\nh1\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n\
        CapBnd:\t00000000a80425fb\nNoNewPrivs:\t0\ntimer_list=0\nproc-sys-ro\nrootfs-ro\n";
    for runtime in ["runc", "crun"] {
        assert_eq!(run(runtime, &dir), (want.to_string(), 42), "{runtime}");
    }

    // Root, the default hostname (the id's first 12 characters), a writable rootfs.
    let dir = t.path().join("root");
    let said = stdout(&ok(bundle(&root, &dir, &[])));
    let id = said.trim().rsplit(' ').next().unwrap().to_string();
    assert_eq!(id.len(), 64, "{said}");
    let host = &id[..12];
    let want = format!(
        "uid=0(root) gid=0(root) groups=0(root)\n{host}\n/\nA= HOME=/root\n{host}\n\
         CapPrm:\t00000000a80425fb\nCapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\n\
         NoNewPrivs:\t0\ntimer_list=0\nproc-sys-ro\n"
    );
    for runtime in ["runc", "crun"] {
        assert_eq!(run(runtime, &dir), (want.clone(), 42), "{runtime}");
    }
}

#[test]
fn a_bad_user_or_an_existing_dir_leaves_nothing() {
    skip_unless_root!();
    setup();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    let dir = t.path().join("b");
    let e = fails(bundle(&root, &dir, &["-u", "ghost"]));
    assert_eq!(
        e,
        "rdpull: error: unable to find user ghost: no matching entries in passwd file"
    );
    assert!(!dir.exists(), "no half bundle");
    let e = fails(bundle(&root, &dir, &["--user", "root:secret"]));
    assert_eq!(
        e,
        "rdpull: error: unable to find group secret: no matching entries in group file \
         (registry credentials go before the command: rdpull --user USER:PASSWORD bundle ...)"
    );
    assert!(!dir.exists(), "no half bundle");
    std::fs::create_dir(&dir).unwrap();
    let e = fails(bundle(&root, &dir, &[]));
    assert_eq!(
        e,
        format!(
            "rdpull: error: create bundle {}: File exists (os error 17)",
            dir.display()
        )
    );
}
