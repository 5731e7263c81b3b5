//! `rdpull run` through the built-in launcher, runc and crun: the container's answers,
//! `docker run`'s exit codes (the command's, 125, 126, 127, 128+N), signals forwarded,
//! orphans reaped, `--rm` leaving no snapshot,
//! directory or mount, and `ps`/`rm` for a container kept without `--rm`.

use std::process::Output;

use super::*;

fn run(root: &Path, args: &[&str]) -> Output {
    let image = format!("{REG}/debian:bookworm");
    let mut all = vec!["--plain-http", "run"];
    let split = args
        .iter()
        .position(|a| *a == "IMAGE")
        .unwrap_or(args.len());
    all.extend_from_slice(&args[..split]);
    all.push(&image);
    all.extend_from_slice(args.get(split + 1..).unwrap_or_default());
    let mut rdpull = command(root, &all);
    if !args.windows(2).any(|w| w == ["--runtime", "crun"]) {
        return rdpull.output().unwrap();
    }
    without_unified_hierarchy(&rdpull).output().unwrap()
}

/// Overlay mounts of `root`'s containers still in the mount table.
fn container_mounts(root: &Path) -> usize {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = root.join("containers").display().to_string();
    mounts.lines().filter(|l| l.contains(&dir)).count()
}

fn assert_nothing_left(root: &Path) {
    assert_eq!(container_mounts(root), 0, "no container mount left");
    let dirs = std::fs::read_dir(root.join("containers")).map_or(0, |d| d.count());
    assert_eq!(dirs, 0, "no container directory left");
    let (_, active) = snapshots(root);
    assert!(active.is_empty(), "no container snapshot left: {active:?}");
}

#[test]
fn run_gives_docker_answers_and_exit_codes_under_each_runtime() {
    skip_unless_root!();
    setup();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    for runtime in tested_runtimes() {
        let rt = ["--rm", "--runtime", runtime];
        let o = run(
            &root,
            &[
                &rt[..],
                &[
                    "-u",
                    "nobody",
                    "-e",
                    "A=1",
                    "-w",
                    "/tmp/w",
                    "--hostname",
                    "h1",
                    "IMAGE",
                ],
                &["sh", "-c", "id; hostname; pwd; echo A=$A; exit 42"],
            ]
            .concat(),
        );
        assert_eq!(o.status.code(), Some(42), "{runtime}: {}", stderr(&o));
        assert_eq!(
            stdout(&o),
            "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)\nh1\n/tmp/w\nA=1\n"
        );
        let code = |args: &[&str]| {
            let o = run(&root, &[&rt[..], args].concat());
            (o.status.code(), stderr(&o).trim().to_string())
        };
        assert_eq!(code(&["IMAGE", "true"]), (Some(0), String::new()));
        assert_eq!(code(&["IMAGE", "false"]), (Some(1), String::new()));
        assert_eq!(
            code(&["IMAGE", "nosuchcmd"]),
            (
                Some(127),
                "rdpull: error: exec: \"nosuchcmd\": executable file not found in $PATH".into()
            )
        );
        assert_eq!(
            code(&["IMAGE", "/etc/passwd"]),
            (
                Some(126),
                "rdpull: error: exec: /etc/passwd: permission denied".into()
            )
        );
        assert_eq!(
            code(&["IMAGE", "/etc"]),
            (
                Some(126),
                "rdpull: error: exec: /etc: is a directory".into()
            )
        );
        assert_eq!(
            code(&["-w", "relative", "IMAGE", "true"]),
            (
                Some(125),
                "rdpull: error: working directory \"relative\" is not an absolute path".into()
            )
        );
        assert_eq!(
            code(&["-e", "=x", "IMAGE", "true"]),
            (
                Some(125),
                "rdpull: error: invalid environment variable \"=x\"".into()
            )
        );
        assert_eq!(
            code(&["-u", "ghost", "IMAGE", "true"]),
            (
                Some(125),
                "rdpull: error: unable to find user ghost: no matching entries in passwd file"
                    .into()
            )
        );
        // Registry credentials typed after `run`: the error says where they go.
        assert_eq!(
            code(&["--user", "rdpull:secret", "IMAGE", "true"]),
            (
                Some(125),
                "rdpull: error: unable to find user rdpull: no matching entries in passwd file \
                 (registry credentials go before the command: rdpull --user USER:PASSWORD run ...)"
                    .into()
            )
        );
        assert_nothing_left(&root);
    }
    let o = run(
        &root,
        &["--rm", "--runtime", "/nonexistent/runc", "IMAGE", "true"],
    );
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(
        stderr(&o).trim(),
        "rdpull: error: runtime /nonexistent/runc: No such file or directory (os error 2)"
    );
    assert_nothing_left(&root);
    // A usage error of `run` is rdpull's failure too: 125, as `docker run --bogus`.
    let o = rdpull(&root, &["run", "--bogus", "debian", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).starts_with("error: unexpected argument '--bogus' found"),
        "{}",
        stderr(&o)
    );
}

/// Start `rdpull run --rm IMAGE sh -c SCRIPT` with `runtime`, once it printed `ready`.
fn start_ready(
    root: &Path,
    runtime: &str,
    script: &str,
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStdout>,
) {
    let image = format!("{REG}/debian:bookworm");
    let args = [
        "run",
        "--rm",
        "--runtime",
        runtime,
        &image,
        "sh",
        "-c",
        script,
    ];
    start_until_ready(root, &args)
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    rustix::process::kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap(), sig)
        .unwrap();
}

/// The host pid of the container's process named `comm` (its cgroup is named for the
/// container under every runtime here), once it has that name.
fn container_process(root: &Path, comm: &str) -> u32 {
    let dir = container_dir(root).unwrap();
    let id = dir.file_name().unwrap();
    let procs = container_cgroup("pids", &id.to_string_lossy()).join("cgroup.procs");
    for _ in 0..100 {
        let found = std::fs::read_to_string(&procs)
            .unwrap_or_default()
            .lines()
            .filter_map(|p| p.parse::<u32>().ok())
            .find(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default()
                    == format!("{comm}\n")
            });
        if let Some(pid) = found {
            return pid;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("no {comm} in {}", procs.display())
}

#[test]
fn sigterm_reaches_the_container_and_rm_leaves_nothing() {
    skip_unless_root!();
    setup();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    ok(rdpull(
        &root,
        &[
            "--plain-http",
            "-q",
            "pull",
            &format!("{REG}/debian:bookworm"),
        ],
    ));
    for runtime in ["builtin", "runc"] {
        // SIGTERM to rdpull reaches the command, which traps it: 143.
        let trap = "trap 'echo got TERM; exit 143' TERM; echo ready; sleep 100 & wait";
        let (mut child, mut out) = start_ready(&root, runtime, trap);
        signal(child.id(), rustix::process::Signal::TERM);
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
        assert_eq!(rest, "got TERM\n", "{runtime}");
        assert_eq!(child.wait().unwrap().code(), Some(143), "{runtime}");
        assert_nothing_left(&root);
        // Killed by signal 9 from outside: 128 + 9.
        let (mut child, _out) = start_ready(&root, runtime, "echo ready; exec sleep 100");
        signal(
            container_process(&root, "sleep"),
            rustix::process::Signal::KILL,
        );
        assert_eq!(child.wait().unwrap().code(), Some(137), "{runtime}");
        assert_nothing_left(&root);
    }
    // Under the built-in launcher the command is not PID 1 (its init is): a SIGTERM it
    // does not trap ends it, as with `docker run --init`.
    let (mut child, _out) = start_ready(&root, "builtin", "echo ready; exec sleep 100");
    signal(child.id(), rustix::process::Signal::TERM);
    assert_eq!(child.wait().unwrap().code(), Some(143));
    // And its init reaps orphans: none is left a zombie.
    let zombies = "(sh -c 'sleep 0.1' &); sleep 1; \
        grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l; \
        grep -c . /proc/1/cmdline >/dev/null && tr '\\0' ' ' </proc/1/comm";
    let o = ok(run(&root, &["--rm", "IMAGE", "sh", "-c", zombies]));
    assert_eq!(stdout(&o), "0\nrdpull\n");
    assert_nothing_left(&root);

    // Kept without --rm: listed by ps -a, its writes in its snapshot, gone after rm.
    ok(run(&root, &["IMAGE", "sh", "-c", "echo kept >/kept"]));
    let ps = stdout(&ok(rdpull(&root, &["ps", "-a"])));
    let lines: Vec<&str> = ps.lines().collect();
    assert_eq!(lines.len(), 2, "{ps}");
    assert!(lines[1].ends_with("Exited (0)"), "{ps}");
    assert_eq!(
        stdout(&ok(rdpull(&root, &["ps"]))).lines().count(),
        1,
        "none running"
    );
    let short = lines[1].split_whitespace().next().unwrap();
    let (_, active) = snapshots(&root);
    assert_eq!(active.len(), 1);
    assert_eq!(container_mounts(&root), 0, "unmounted once it exited");
    // The image goes, its layers stay while the container builds on them.
    ok(rdpull(&root, &["rmi", &format!("{REG}/debian:bookworm")]));
    ok(rdpull(&root, &["prune"]));
    let (committed, active) = snapshots(&root);
    assert_eq!(
        (committed.len(), active.len()),
        (1, 1),
        "prune keeps the container's chain"
    );
    let removed = stdout(&ok(rdpull(&root, &["rm", short])));
    assert!(
        removed.starts_with(short) && removed.trim().len() == 64,
        "{removed}"
    );
    assert_nothing_left(&root);
    ok(rdpull(&root, &["prune"]));
    assert_eq!(
        snapshots(&root),
        (vec![], vec![]),
        "then prune takes the layers"
    );
    assert_eq!(
        fails(rdpull(&root, &["rm", short])),
        format!("rdpull: error: no such container: {short}")
    );
}

#[test]
fn rm_unmounts_a_container_a_killed_run_left_mounted_before_it_started() {
    skip_unless_root!();
    setup();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    ok(run(&root, &["IMAGE", "true"]));
    // What a run killed between mounting the rootfs and starting the runtime leaves: the
    // record (written first, status "created") and the rootfs still mounted.
    let dir = container_dir(&root).unwrap();
    let record = dir.join("container.json");
    let mut r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    r["status"] = "created".into();
    r["exit_code"] = serde_json::Value::Null;
    std::fs::write(&record, serde_json::to_vec(&r).unwrap()).unwrap();
    let rootfs = dir.join("rootfs");
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "left", rootfs.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(container_mounts(&root), 1);
    let ps = stdout(&ok(rdpull(&root, &["ps", "-a"])));
    assert!(ps.lines().nth(1).unwrap().ends_with("created"), "{ps}");
    let id = r["id"].as_str().unwrap();
    assert_eq!(
        stdout(&ok(rdpull(&root, &["rm", &id[..12]]))),
        format!("{id}\n")
    );
    assert_nothing_left(&root);
}

#[test]
fn a_killed_rdpull_leaves_no_mount_once_its_container_ends() {
    skip_unless_root!();
    setup();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    // --network none: a network namespace of its own, with only a loopback.
    let o = ok(run(
        &root,
        &["--rm", "--network", "none", "IMAGE", "ls", "/sys/class/net"],
    ));
    assert_eq!(stdout(&o), "lo\n");

    let mut child = command(
        &root,
        &["run", &format!("{REG}/debian:bookworm"), "sleep", "2"],
    )
    .spawn()
    .unwrap();
    // Wait until the container runs, then kill rdpull outright.
    let record = || -> Option<serde_json::Value> {
        let dir = container_dir(&root)?;
        serde_json::from_slice(&std::fs::read(dir.join("container.json")).ok()?).ok()
    };
    let mut runtime = None;
    for _ in 0..200 {
        if let Some(r) = record().filter(|r| r["status"] == "running") {
            runtime = r["runtime_pid"].as_u64();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let runtime = runtime.expect("the container ran");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        container_mounts(&root),
        1,
        "the container still runs, mounted"
    );
    let id = record().unwrap()["id"].as_str().unwrap().to_string();
    assert_eq!(
        fails(rdpull(&root, &["rm", &id[..12]])),
        format!("rdpull: error: container {id} is running")
    );
    // The runtime (runc) outlives rdpull and ends with its container.
    for _ in 0..200 {
        if !Path::new(&format!("/proc/{runtime}")).exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let ps = stdout(&ok(rdpull(&root, &["ps", "-a"])));
    assert!(
        ps.lines()
            .nth(1)
            .unwrap()
            .ends_with("Exited (unknown: rdpull was killed)"),
        "{ps}"
    );
    assert_eq!(container_mounts(&root), 0, "ps unmounted it");
    let short = ps
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    ok(rdpull(&root, &["rm", &short]));
    assert_eq!(
        fails(rdpull(&root, &["rm", ""])),
        "rdpull: error: no such container: "
    );
    assert_nothing_left(&root);
}

#[test]
fn a_terminal_with_t() {
    skip_unless_root!();
    setup();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    // `script` gives rdpull a pty as its terminal, as a user's shell would.
    // The terminal's settings before and after (raw mode while it runs, then restored).
    let rdpull_cmd = format!(
        "stty -g; {} --root {} --plain-http run --rm -t {REG}/debian:bookworm sh -c 'tty; echo TERM=$TERM; exit 3'; code=$?; stty -g; exit $code",
        env!("CARGO_BIN_EXE_rdpull"),
        root.display()
    );
    let o = Command::new("script")
        .args(["-qec", &rdpull_cmd, "/dev/null"])
        .env_remove("RDPULL_ROOT")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let out = stdout(&o).replace('\0', "");
    assert!(out.contains("/dev/pts/0\r\nTERM=xterm\r\n"), "{out:?}");
    // `stty -g`: hex fields separated by colons.
    let settings: Vec<&str> = out
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| {
            l.matches(':').count() > 10 && l.chars().all(|c| c == ':' || c.is_ascii_hexdigit())
        })
        .collect();
    assert_eq!(settings.len(), 2, "{out:?}");
    assert_eq!(settings[0], settings[1], "the terminal is restored");
    assert_nothing_left(&root);
}
