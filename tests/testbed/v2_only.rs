//! A cgroup v2-only host, as most hosts are today, made here as a private mount
//! namespace with only cgroup2 at `/sys/fs/cgroup` (this VM is a v1+v2 hybrid): this
//! test binary runs its launcher, run and limits tests again inside one, where they
//! see what they would see on such a host.

use super::*;

/// The tests run again on the v2-only host, and how many they are.
const AGAIN: &[(&str, usize)] = &[("launcher::", 3), ("run::", 5), ("limits::", 2)];

/// The shell that makes the namespace a v2-only host, then runs its arguments.
const MAKE_V2_ONLY: &str = r#"set -e
for m in $(awk '$9 ~ /^cgroup/ || ($5 == "/sys/fs/cgroup" && $9 == "tmpfs") {print $5}' /proc/self/mountinfo | sort -r); do
  umount -l "$m"
done
mount -t cgroup2 cgroup2 /sys/fs/cgroup
exec "$0" "$@""#;

#[test]
fn the_launcher_matrix_run_and_limits_tests_pass_on_a_v2_only_host() {
    skip_unless_root!();
    if on_v2_only_host() {
        return;
    }
    setup();
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "private", "sh", "-c", MAKE_V2_ONLY])
        .arg(std::env::current_exe().unwrap())
        .args(AGAIN.iter().map(|(filter, _)| *filter))
        .args(["--test-threads", "2"])
        .env(V2_ONLY_ENV, "1");
    let o = c.output().unwrap();
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    let want: usize = AGAIN.iter().map(|(_, n)| n).sum();
    assert!(
        out.contains(&format!("test result: ok. {want} passed; 0 failed")),
        "{out}"
    );
}
