//! Seccomp and capabilities as `docker run` gives them, the same on the four paths: a
//! static probe (`tests/probe/probe.rs`) makes the calls Docker's profile denies and
//! prints how each ended, its seccomp mode and effective capabilities, under Docker's
//! default profile, `--cap-add`, `--cap-drop ALL`, `seccomp=unconfined`, a profile file
//! and `--privileged`.

use std::sync::OnceLock;

use super::four_paths::{four_paths, Outcome};
use super::*;

/// The probe, built once per test binary as a static executable.
fn probe() -> &'static [u8] {
    static PROBE: OnceLock<Vec<u8>> = OnceLock::new();
    PROBE.get_or_init(|| {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("probe");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probe/probe.rs");
        let st = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .args([
                "--edition",
                "2021",
                "-O",
                "-C",
                "target-feature=+crt-static",
                "-o",
            ])
            .arg(&out)
            .arg(src)
            .status()
            .unwrap();
        assert!(st.success(), "building the probe");
        std::fs::read(out).unwrap()
    })
}

/// busybox, the probe as `/probe` (the image's command) and `/mnt`.
fn probe_image() -> String {
    let mut t = rdpull_testkit::Tar::default();
    t.dir("mnt/").entry(rdpull_testkit::Hdr {
        name: b"probe",
        mode: 0o755,
        data: probe(),
        ..Default::default()
    });
    rdpull_testkit::oci::push(
        REG,
        "probe",
        &std::process::id().to_string(),
        &[&rdpull_testkit::oci::busybox_layer(), &t.finish()],
        serde_json::json!({"Cmd": ["/probe"]}),
    )
}

/// What the four paths print for `flags`: all the same, returned once.
fn probe_everywhere(root: &Path, t: &Path, image: &str, flags: &[&str]) -> String {
    let all = four_paths(root, t, image, flags);
    let (first_path, first) = &all[0];
    for (path, got) in &all[1..] {
        assert_eq!(got, first, "{flags:?}: {path} against {first_path}");
    }
    match first {
        Outcome::Ran(0, out) => out.clone(),
        other => panic!("{flags:?}: {other:?}"),
    }
}

#[test]
fn seccomp_and_capabilities_follow_docker_run_on_every_path() {
    skip_unless_root!();
    setup();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    let image = probe_image();
    let probe = |flags: &[&str]| probe_everywhere(&root, t.path(), &image, flags);

    // Docker's default profile and capabilities.
    assert_eq!(
        probe(&[]),
        "keyctl=EPERM add_key=EPERM mount=EPERM bpf=EPERM userfaultfd=EPERM clone3=ENOSYS \
         getpid=ok unshare-user=EPERM seccomp=2 capeff=00000000a80425fb\n"
    );
    // CAP_SYS_ADMIN opens the calls the profile keeps for it.
    assert_eq!(
        probe(&["--cap-add", "sys_admin"]),
        "keyctl=EPERM add_key=EPERM mount=ok bpf=EINVAL userfaultfd=EPERM clone3=EINVAL \
         getpid=ok unshare-user=ok seccomp=2 capeff=00000000a82425fb\n"
    );
    assert_eq!(
        probe(&["--cap-drop", "ALL"]),
        "keyctl=EPERM add_key=EPERM mount=EPERM bpf=EPERM userfaultfd=EPERM clone3=ENOSYS \
         getpid=ok unshare-user=EPERM seccomp=2 capeff=0000000000000000\n"
    );
    // No filter: what remains refused is the kernel's (capabilities, sysctls).
    let unconfined = probe(&["--security-opt", "seccomp=unconfined"]);
    assert!(
        unconfined.starts_with("keyctl=ok add_key=ok mount=EPERM ")
            && unconfined.ends_with(" unshare-user=ok seccomp=0 capeff=00000000a80425fb\n"),
        "{unconfined}"
    );
    // A profile file in Docker's format.
    let file = t.path().join("profile.json");
    std::fs::write(
        &file,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["add_key"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", file.display());
    let custom = probe(&["--security-opt", &opt]);
    assert!(
        custom.starts_with("keyctl=ok add_key=EACCES ") && custom.contains(" getpid=EINVAL "),
        "{custom}"
    );
    assert!(
        custom.ends_with(" seccomp=2 capeff=00000000a80425fb\n"),
        "{custom}"
    );
    // Privileged: every capability this host can pass on (its bounding set), no filter.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let host = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:\t"))
        .unwrap();
    let privileged = probe(&["--privileged"]);
    assert!(
        privileged.contains(" mount=ok ")
            && privileged.ends_with(&format!(" seccomp=0 capeff={host}\n")),
        "{privileged}"
    );

    // Bad options are one line naming what was wrong, before anything starts.
    let cpus = std::thread::available_parallelism().unwrap().get();
    let cpus_line = format!("--cpus 0: the range is 0.01 to {cpus}.00");
    for (flags, line) in [
        (&["--cap-add", "CAP_NOPE"][..], "unknown capability: \"CAP_NOPE\""),
        (
            &["--security-opt", "apparmor=x"][..],
            "--security-opt \"apparmor=x\": takes seccomp=unconfined, seccomp=FILE.json or no-new-privileges",
        ),
        (&["--memory", "lots"][..], "--memory lots: not a size (e.g. 32m, 1g)"),
        (&["-m", "1k"][..], "--memory 1024: the least memory limit is 6MB"),
        (&["--memory-swap", "1g"][..], "--memory-swap 1073741824: needs --memory"),
        (&["--cpus", "0"][..], cpus_line.as_str()),
    ] {
        let mut args = vec!["--plain-http", "run", "--rm"];
        args.extend_from_slice(flags);
        args.push(&image);
        let o = rdpull(&root, &args);
        assert_eq!(o.status.code(), Some(125), "{flags:?}");
        assert_eq!(stderr(&o), format!("rdpull: error: {line}\n"));
    }
    let missing = format!("seccomp={}", t.path().join("none.json").display());
    let o = rdpull(
        &root,
        &[
            "--plain-http",
            "run",
            "--rm",
            "--security-opt",
            &missing,
            &image,
        ],
    );
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(
        stderr(&o),
        format!(
            "rdpull: error: seccomp profile {}: No such file or directory (os error 2)\n",
            t.path().join("none.json").display()
        )
    );
}

#[test]
fn ordinary_programs_run_under_the_default_profile() {
    skip_unless_root!();
    setup();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    // apt's checks, an account made and used through PAM's su, an archive round trip.
    let script = "apt-get check -q >/dev/null && useradd -m u1 && su u1 -c id && \
        tar -C /etc -czf /tmp/e.tgz passwd && tar -tzf /tmp/e.tgz && \
        grep Seccomp: /proc/self/status";
    for runtime in ["builtin", "runc"] {
        let o = ok(run_debian(&root, runtime, &[], script));
        assert_eq!(
            stdout(&o),
            "uid=1000(u1) gid=1000(u1) groups=1000(u1)\npasswd\nSeccomp:\t2\n",
            "{runtime}"
        );
    }
}
