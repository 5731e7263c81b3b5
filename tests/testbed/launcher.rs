//! The built-in launcher against runc and crun: the same bundle, for a matrix of `run`
//! options, run by each; an in-container checker prints what the runtime spec decides
//! (identity, hostname, cwd, environment, umask, credentials and capabilities, rlimits,
//! device nodes, the mount table, cgroups, network devices, what is writable, what is
//! masked). The built-in launcher must print exactly what runc prints, mount ids and
//! anonymous device numbers aside.
//! crun 1.8.1 builds `/dev`, `/sys/fs/cgroup` and the masked and read-only paths its
//! own way (docs/conformance.md, "Runtimes compared"); those sections are compared with runc's
//! only for the other runtimes.

use super::*;

/// The checker, run by `sh -c` in the container.
const CHECKER: &str = r###"
echo "## id"; id
echo "## hostname"; hostname; cat /etc/hostname
echo "## cwd"; pwd
echo "## env"; env | sort
echo "## umask"; umask
echo "## status"; grep -E '^(Uid|Gid|Groups|Cap|NoNewPrivs|Seccomp)' /proc/self/status
echo "## limits"; cat /proc/self/limits
echo "## devices"; for f in /dev/* /dev/pts/*; do stat -c '%N %F %a %u:%g %t:%T' "$f"; done
echo "## mounts"; cat /proc/self/mountinfo
echo "## cgroup"; cat /proc/self/cgroup; ls /sys/fs/cgroup
echo "## net"; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '
echo "## writable"
for p in / /tmp /proc/sys /sys /dev /dev/shm /etc/hosts; do
  if [ -d $p ]; then f=$p/.w; else f=$p; fi
  (touch $f 2>/dev/null && echo "$p rw") || echo "$p ro"
done
echo "## masked"; wc -c < /proc/timer_list; ls /proc/acpi | wc -l
exit 42
"###;

/// The sections crun builds its own way (see the module doc).
const CRUN_OWN_WAY: &[&str] = &["## devices", "## mounts", "## cgroup"];

/// The checker's output with mount ids and device numbers dropped (they differ run to
/// run), split into its sections.
fn sections(out: &str) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = Vec::new();
    for line in out.lines() {
        if line.starts_with("## ") {
            all.push((line.to_string(), String::new()));
            continue;
        }
        let Some((name, body)) = all.last_mut() else {
            continue;
        };
        let line = if name == "## mounts" {
            line.splitn(4, ' ').nth(3).unwrap_or(line)
        } else {
            line
        };
        body.push_str(line);
        body.push('\n');
    }
    all
}

/// Run the bundle in `dir` as container `id` with `runtime`: the checker's sections and
/// the exit code.
fn run_bundle(runtime: &str, dir: &Path, id: &str) -> (Vec<(String, String)>, Option<i32>) {
    let o = bundle_runtime(runtime, dir, id).output().unwrap();
    assert!(o.stderr.is_empty(), "{runtime}: {}", stderr(&o));
    (sections(&stdout(&o)), o.status.code())
}

#[test]
fn the_builtin_launcher_matches_runc_for_a_matrix_of_options() {
    skip_unless_root!();
    setup();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    let matrix: &[(&str, &[&str])] = &[
        ("defaults", &[]),
        ("user-name", &["-u", "nobody", "--hostname", "h1"]),
        ("uid-gid", &["-u", "1000:1000", "-w", "/tmp/w"]),
        (
            "name-group",
            &["-u", "daemon:tty", "-e", "A=1", "-e", "HOME=/x"],
        ),
        ("read-only", &["--read-only", "-w", "/var/tmp"]),
        ("network-none", &["--network", "none"]),
        ("entrypoint", &["--entrypoint", "/bin/sh"]),
    ];
    for (name, args) in matrix {
        let dir = t.path().join(name);
        let command: &[&str] = if args.contains(&"--entrypoint") {
            &["-c", CHECKER]
        } else {
            &["sh", "-c", CHECKER]
        };
        ok(debian_bundle(&root, &dir, args, command));
        let id = format!("rdpull-matrix-{name}-{}", std::process::id());
        let (runc, runc_code) = run_bundle("runc", &dir, &id);
        assert_eq!(runc_code, Some(42), "{name}: runc");
        assert_eq!(runc.len(), 13, "{name}: every section printed: {runc:?}");
        let (builtin, code) = run_bundle("builtin", &dir, &id);
        assert_eq!(code, Some(42), "{name}: builtin");
        for (want, got) in runc.iter().zip(&builtin) {
            assert_same(
                &got.1,
                &want.1,
                &format!("{name}: builtin vs runc, {}", want.0),
            );
        }
        assert_eq!(builtin.len(), runc.len());
        // Nothing left: the launcher removes its cgroups.
        assert!(
            !container_cgroup("devices", &id).exists(),
            "{name}: no cgroup left"
        );
        if !tested_runtimes().contains(&"crun") {
            continue;
        }
        let (crun, code) = run_bundle("crun", &dir, &id);
        assert_eq!(code, Some(42), "{name}: crun");
        for (want, got) in runc.iter().zip(&crun) {
            if !CRUN_OWN_WAY.contains(&want.0.as_str()) {
                assert_same(
                    &got.1,
                    &want.1,
                    &format!("{name}: crun vs runc, {}", want.0),
                );
            }
        }
    }
}

#[test]
fn a_failed_step_is_one_line_with_its_exit_code_and_leaves_nothing() {
    skip_unless_root!();
    setup();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    let dir = t.path().join("b");
    ok(debian_bundle(&root, &dir, &[], &["/bad-interpreter"]));
    // A script whose interpreter is missing: execve's ENOENT, reported by the command
    // process over the pipe, is 127.
    let script = dir.join("rootfs/bad-interpreter");
    std::fs::write(&script, "#!/nonexistent\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let launch = |id: &str| {
        Command::new(env!("CARGO_BIN_EXE_rdpull"))
            .arg("__launch")
            .arg(&dir)
            .arg(id)
            .output()
            .unwrap()
    };
    let ids: Vec<String> = (1..=3)
        .map(|n| format!("rdpull-fail-{n}-{}", std::process::id()))
        .collect();
    let o = launch(&ids[0]);
    assert_eq!(o.status.code(), Some(127));
    assert_eq!(
        stderr(&o),
        "rdpull: error: launch: exec /bad-interpreter: No such file or directory (os error 2)\n"
    );
    // A mount the kernel refuses, in the container's PID 1: 125, naming the mount.
    let config = dir.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    spec["mounts"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(
            {"destination": "/x", "type": "nosuchfs", "source": "none"}
        ));
    std::fs::write(&config, serde_json::to_vec(&spec).unwrap()).unwrap();
    let o = launch(&ids[1]);
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(
        stderr(&o),
        "rdpull: error: launch: mount /x (nosuchfs): No such device (os error 19)\n"
    );
    // A spec it cannot read: 125 before anything is made.
    std::fs::write(&config, "{").unwrap();
    let o = launch(&ids[2]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).starts_with(&format!(
            "rdpull: error: launch: spec {}: ",
            config.display()
        )),
        "{}",
        stderr(&o)
    );
    for id in &ids {
        assert!(
            !container_cgroup("devices", id).exists(),
            "{id}: cgroup left"
        );
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(dir.to_str().unwrap()),
        "no mount left: {mounts}"
    );
}

#[test]
fn a_killed_launcher_takes_its_container_along_and_rm_removes_its_cgroups() {
    skip_unless_root!();
    setup();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    let image = format!("{REG}/debian:bookworm");
    let (mut child, _out) = start_until_ready(
        &root,
        &[
            "--plain-http",
            "-q",
            "run",
            &image,
            "sh",
            "-c",
            "echo ready; exec sleep 100",
        ],
    );
    let dir = container_dir(&root).unwrap();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("container.json")).unwrap()).unwrap();
    let id = record["id"].as_str().unwrap().to_string();
    let cgroup = container_cgroup("pids", &id);
    let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap();
    assert_eq!(procs.lines().count(), 2, "init and sleep: {procs}");
    let launcher = record["runtime_pid"].as_u64().unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(launcher as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    // rdpull reports the launcher's death as the container's, and unmounts.
    assert_eq!(child.wait().unwrap().code(), Some(137));
    // The container died with it (its PID 1 has SIGKILL as parent-death signal).
    for _ in 0..100 {
        if std::fs::read_to_string(cgroup.join("cgroup.procs"))
            .unwrap_or_default()
            .is_empty()
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap(),
        ""
    );
    assert!(cgroup.exists(), "the launcher could not remove it");
    ok(rdpull(&root, &["rm", &id[..12]]));
    assert!(!cgroup.exists(), "rm removed the left cgroups");
    assert!(!container_cgroup("devices", &id).exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(root.to_str().unwrap()), "no mount left");
}
