//! What the container's cgroups hold it to, on this hybrid host and (run again by
//! [`super::v2_only`]) on a v2-only one: the device rules (v1 `devices` controller, or
//! the eBPF device program on v2) deny a host disk and `/dev/mem` to a root that may
//! make their nodes; `--pids-limit`, `--memory` and `--cpus` hold as in `docker run`.

use super::*;

#[test]
fn the_device_rules_deny_a_host_disk_and_dev_mem() {
    skip_unless_root!();
    setup();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    // The disk this host's root file system is on, a loop device (which this VM's root
    // may open, unlike its disk), /dev/mem, and /dev/null, each made by the container's
    // root (it may: mknod is allowed) and opened.
    let dev = rustix::fs::stat("/").unwrap().st_dev;
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    let script = format!(
        "mknod /tmp/disk b {major} {minor} && mknod /tmp/loop b 7 0 && mknod /tmp/mem c 1 1 || exit 9; \
         for d in /tmp/disk /tmp/loop /tmp/mem /dev/null; do \
           if head -c 1 $d >/dev/null 2>/tmp/err; then echo $d opened; \
           else echo $d $(sed 's/.*: //' /tmp/err); fi; \
         done"
    );
    let denied = "/tmp/disk Operation not permitted\n/tmp/loop Operation not permitted\n\
        /tmp/mem Operation not permitted\n/dev/null opened\n";
    for runtime in ["builtin", "runc"] {
        let o = run_debian(&root, runtime, &[], &script);
        assert_eq!(stdout(&o), denied, "{runtime}: {}", stderr(&o));
    }
    // The rules, not something else, deny them: --privileged allows every device (this
    // VM has no /dev/mem driver, and its root may not open its disk even on the host).
    let o = run_debian(&root, "builtin", &["--privileged"], &script);
    let out = stdout(&o);
    assert!(
        out.contains("/tmp/loop opened\n") && out.contains("/tmp/mem No such device or address\n"),
        "{out}"
    );
}

#[test]
fn pids_memory_and_cpu_limits_hold() {
    skip_unless_root!();
    setup();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    // On a v2-only host each controller must be one the v2 hierarchy has; this VM binds
    // memory, pids and cpu to its v1 hierarchies, so there the launcher refuses.
    let v2_controllers =
        std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
    let available =
        |c: &str| !on_v2_only_host() || v2_controllers.split_whitespace().any(|x| x == c);
    let refused = |flags: &[&str], controller: &str| {
        let o = run_debian(&root, "builtin", flags, "true");
        assert_eq!(o.status.code(), Some(125), "{flags:?}");
        assert_eq!(
            stderr(&o),
            format!(
                "rdpull: error: launch: cgroup /sys/fs/cgroup (the {controller} controller is not \
                 available there): Operation not supported (os error 95)\n"
            )
        );
    };

    // A fork bomb stays within --pids-limit: forks stop short of 64 processes.
    let bomb = "(i=0; while [ $i -lt 200 ]; do sleep 5 & i=$((i+1)); echo $i >/tmp/n; done) \
        2>/dev/null; read n </tmp/n; echo $n";
    if available("pids") {
        for runtime in ["builtin", "runc"] {
            let o = run_debian(&root, runtime, &["--pids-limit", "64"], bomb);
            let started: u32 = stdout(&o)
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{runtime}: {o:?}"));
            assert!((50..=62).contains(&started), "{runtime}: {started} forks");
            let o = run_debian(&root, runtime, &[], bomb);
            assert_eq!(stdout(&o), "200\n", "{runtime}: no limit");
        }
    } else {
        refused(&["--pids-limit", "64"], "pids");
    }

    // More than --memory: the OOM killer, exit 137, reported.
    let hog = "head -c 200m /dev/zero | tail >/dev/null";
    if available("memory") {
        for runtime in ["builtin", "runc"] {
            let o = run_debian(&root, runtime, &["--memory", "32m"], hog);
            assert_eq!(o.status.code(), Some(137), "{runtime}: {}", stderr(&o));
            if runtime == "builtin" {
                assert!(
                    stderr(&o).ends_with(
                        "rdpull: the container reached its memory limit: the kernel's OOM killer killed it\n"
                    ),
                    "{}",
                    stderr(&o)
                );
            }
        }
        assert_eq!(
            run_debian(&root, "builtin", &["--memory", "512m"], hog)
                .status
                .code(),
            Some(0)
        );
    } else {
        refused(&["--memory", "32m"], "memory");
    }

    // The values the cgroup files hold, as the container sees them.
    let (files, want) = if on_v2_only_host() {
        (
            "cat /sys/fs/cgroup/cpu.max /sys/fs/cgroup/cpu.weight",
            "50000 100000\n20\n",
        )
    } else {
        (
            "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.shares \
             /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes",
            "50000\n512\n33554432\n67108864\n",
        )
    };
    let flags = ["--cpus", "0.5", "--cpu-shares", "512", "--memory", "32m"];
    if available("cpu") && available("memory") {
        for runtime in ["builtin", "runc"] {
            let o = run_debian(&root, runtime, &flags, files);
            assert_eq!(stdout(&o), want, "{runtime}: {}", stderr(&o));
        }
    } else {
        refused(&flags, "memory");
    }
}
