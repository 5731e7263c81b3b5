//! The container's cgroups: a child named for the container under the launcher's own
//! cgroup in every hierarchy (as runc does for a relative `cgroupsPath`), with the
//! spec's resource limits (`limits`) and the device allow-list (runc's default list, or
//! everything under `--privileged`).
//!
//! On a v1 or hybrid host the allow-list is the v1 `devices` controller's
//! (`devices.deny`, `devices.allow`). On a cgroup v2-only host it is an eBPF program
//! attached to the container's cgroup (`device_filter`), and the container's PID 1 is
//! cloned straight into that cgroup (`CLONE_INTO_CGROUP`), so no process is moved.
//! The device rules are what keeps a container's root, which has `CAP_MKNOD`, from
//! making and opening a node for a host disk.

mod device_filter;
mod limits;

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use oci_spec::runtime::{LinuxResources, Spec};
use rustix::fs::{Mode, OFlags};

use super::report::{Context, Failure, Step};
use device_filter::DeviceRule;

/// Devices a container may use: mknod of any, and read/write of the standard nodes,
/// pseudo-terminals and tun (runc's default list).
const ALLOWED_DEVICES: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
    "c 10:200 rwm",
];

/// One hierarchy's directory for the container.
#[derive(Debug)]
pub(crate) struct Hierarchy {
    /// Where the host mounts the hierarchy, e.g. `/sys/fs/cgroup/cpu,cpuacct`.
    mount_point: PathBuf,
    /// The container's directory in it.
    pub(crate) dir: PathBuf,
    /// Mount options naming the controllers (`cpu`, `name=systemd`); empty for v2.
    controllers: Vec<String>,
}

impl Hierarchy {
    pub(crate) fn is_v2(&self) -> bool {
        self.controllers.is_empty()
    }

    /// The directory name under `/sys/fs/cgroup` in the container: the host's.
    pub(crate) fn name(&self) -> String {
        self.mount_point
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// The container's cgroups; removed on drop (the container's processes are gone by
/// then: they all die with its PID 1).
#[derive(Debug)]
pub(crate) struct Cgroups {
    pub(crate) hierarchies: Vec<Hierarchy>,
    /// On a v2-only host, the container's cgroup opened, for `CLONE_INTO_CGROUP`.
    v2_only: Option<OwnedFd>,
    /// How often to try again a removal refused as busy, 10 ms apart.
    retries: u32,
}

/// Does the spec allow every device (`--privileged`): its last rule allows all?
fn allows_all_devices(resources: Option<&LinuxResources>) -> bool {
    resources
        .and_then(|r| r.devices().as_ref())
        .and_then(|d| d.last())
        .is_some_and(|d| {
            d.allow() && d.typ().is_none() && d.major().is_none() && d.minor().is_none()
        })
}

/// The device rules, as `devices.allow` lines: runc's default list, or all of them.
fn allowed_devices(all: bool) -> &'static [&'static str] {
    if all {
        &["a"]
    } else {
        ALLOWED_DEVICES
    }
}

impl Cgroups {
    /// Make the container's cgroup `name` in every hierarchy the host mounts, with the
    /// spec's limits and device rules set. Nothing is left made on failure.
    pub(crate) fn create(name: &str, spec: &Spec) -> Result<Cgroups, Failure> {
        let own =
            std::fs::read_to_string("/proc/self/cgroup").step(Step::Cgroup, "/proc/self/cgroup")?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .step(Step::Cgroup, "/proc/self/mountinfo")?;
        let mut made = Cgroups {
            hierarchies: Vec::new(),
            v2_only: None,
            retries: 100,
        };
        let found = hierarchies(&mountinfo, &own, name);
        let v1 = found.iter().any(|h| h.has("devices"));
        if !v1 && !found.iter().any(Hierarchy::is_v2) {
            return Err(Failure::new(
                Step::Cgroup,
                "no cgroup hierarchy is mounted",
                Errno::ENOTSUP,
            ));
        }
        let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
        let limits = resources
            .map(|r| limits::limit_files(r, !v1))
            .unwrap_or_default();
        for h in found {
            if h.is_v2() && !v1 {
                enable_controllers(&h, &limits)?;
            }
            std::fs::create_dir(&h.dir)
                .or_else(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => Ok(()),
                    _ => Err(e),
                })
                .map_err(|e| Failure::new(Step::Cgroup, h.dir.display().to_string(), e))?;
            made.hierarchies.push(h);
        }
        let all_devices = allows_all_devices(resources);
        for h in &made.hierarchies {
            h.configure(all_devices)?;
            h.write_limits(&limits, v1)?;
        }
        if !v1 {
            let h = made
                .hierarchies
                .iter()
                .find(|h| h.is_v2())
                .expect("a v2 hierarchy");
            made.v2_only = Some(h.attach_device_filter(all_devices)?);
        }
        Ok(made)
    }

    /// The cgroups of container `name` as [`Cgroups::create`] would make them, to remove
    /// what a killed launcher left (on drop).
    pub(crate) fn existing(name: &str) -> Cgroups {
        let read = |p| std::fs::read_to_string(p).unwrap_or_default();
        let found = hierarchies(
            &read("/proc/self/mountinfo"),
            &read("/proc/self/cgroup"),
            name,
        );
        Cgroups {
            hierarchies: found.into_iter().filter(|h| h.dir.exists()).collect(),
            v2_only: None,
            retries: 0,
        }
    }

    /// On a v2-only host, the container's cgroup, to clone PID 1 into.
    pub(crate) fn clone_target(&self) -> Option<&OwnedFd> {
        self.v2_only.as_ref()
    }

    /// Move process `pid` (with its threads) into every hierarchy's directory.
    pub(crate) fn add(&self, pid: i32) -> Result<(), Failure> {
        for h in &self.hierarchies {
            write(&h.dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Did the kernel's OOM killer kill a process of the container (its memory limit)?
    pub(crate) fn oom_killed(&self) -> bool {
        self.hierarchies.iter().any(|h| {
            let file = if h.is_v2() {
                "memory.events"
            } else {
                "memory.oom_control"
            };
            std::fs::read_to_string(h.dir.join(file)).is_ok_and(|text| {
                text.lines().any(|l| {
                    l.strip_prefix("oom_kill ")
                        .is_some_and(|n| n.trim().parse::<u64>().is_ok_and(|n| n > 0))
                })
            })
        })
    }
}

/// Make the parent's controllers available to the container's cgroup (its
/// `cgroup.subtree_control`, as runc does); those the limits need must be.
fn enable_controllers(h: &Hierarchy, limits: &[limits::LimitFile]) -> Result<(), Failure> {
    let parent = h.dir.parent().unwrap_or(&h.dir);
    let available = std::fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
    let mut enabled = Vec::new();
    for c in available.split_whitespace() {
        // A parent with processes of its own (not the root) cannot pass controllers on.
        if std::fs::write(parent.join("cgroup.subtree_control"), format!("+{c}")).is_ok() {
            enabled.push(c);
        }
    }
    match limits.iter().find(|l| !enabled.contains(&l.controller)) {
        None => Ok(()),
        Some(l) => Err(Failure::new(
            Step::Cgroup,
            format!(
                "{} (the {} controller is not available there)",
                parent.display(),
                l.controller
            ),
            Errno::ENOTSUP,
        )),
    }
}

impl Hierarchy {
    /// Attach the device rules' eBPF program to this (v2) directory; returns it open,
    /// for `CLONE_INTO_CGROUP`.
    fn attach_device_filter(&self, all_devices: bool) -> Result<OwnedFd, Failure> {
        let what = self.dir.display().to_string();
        let dir = rustix::fs::open(
            &self.dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .step(Step::Cgroup, &what)?;
        let rules: Vec<DeviceRule> = allowed_devices(all_devices)
            .iter()
            .filter_map(|l| DeviceRule::parse(l))
            .collect();
        device_filter::attach(dir.as_fd(), &rules)
            .map_err(|e| Failure::new(Step::Cgroup, format!("{what} (device filter)"), e))?;
        Ok(dir)
    }

    fn configure(&self, all_devices: bool) -> Result<(), Failure> {
        if self.has("cpuset") {
            // A new cpuset has no cpus or mems, and nothing can join it until it does.
            let parent = self.dir.parent().unwrap_or(&self.dir);
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let value = std::fs::read_to_string(parent.join(file)).map_err(|e| {
                    Failure::new(Step::Cgroup, parent.join(file).display().to_string(), e)
                })?;
                write(&self.dir.join(file), value.trim())?;
            }
        }
        if self.has("devices") {
            write(&self.dir.join("devices.deny"), "a")?;
            for rule in allowed_devices(all_devices) {
                write(&self.dir.join("devices.allow"), rule)?;
            }
        }
        Ok(())
    }

    /// Write the limit files this hierarchy owns: the v1 controller's, or on a v2-only
    /// host all of them. A swap limit where the kernel keeps no swap account is left
    /// out, as runc leaves it.
    fn write_limits(&self, limits: &[limits::LimitFile], v1_host: bool) -> Result<(), Failure> {
        for l in limits {
            let mine = if v1_host {
                self.has(l.controller)
            } else {
                self.is_v2()
            };
            let path = self.dir.join(l.file);
            if !mine || (l.file.contains("sw") && !path.exists()) {
                continue;
            }
            write(&path, &l.value)?;
        }
        Ok(())
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for h in &self.hierarchies {
            // The last exiting tasks may still be leaving the cgroup: a few tries.
            for _ in 0..=self.retries {
                match rustix::fs::rmdir(&h.dir) {
                    Err(rustix::io::Errno::BUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    _ => break,
                }
            }
        }
    }
}

fn write(path: &Path, value: &str) -> Result<(), Failure> {
    std::fs::write(path, value)
        .map_err(|e| Failure::new(Step::Cgroup, path.display().to_string(), e))
}

/// Every cgroup hierarchy in `mountinfo`, with the container's directory `name` under
/// the cgroup that `own` (`/proc/self/cgroup`) gives for it. In a hybrid host the v2
/// hierarchy is joined too, as runc does.
fn hierarchies(mountinfo: &str, own: &str, name: &str) -> Vec<Hierarchy> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let rfields: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(mount_point), Some(fstype), Some(options)) = (
            fields.get(3),
            fields.get(4),
            rfields.first(),
            rfields.get(2),
        ) else {
            continue;
        };
        let controllers: Vec<String> = match *fstype {
            "cgroup" => options
                .split(',')
                .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("xattr"))
                .map(String::from)
                .collect(),
            "cgroup2" => Vec::new(),
            _ => continue,
        };
        let Some(path) = own_path(own, &controllers) else {
            continue;
        };
        let below_root = path
            .strip_prefix(root)
            .unwrap_or(path)
            .trim_start_matches('/');
        let mut dir = PathBuf::from(unescape(mount_point));
        if !below_root.is_empty() {
            dir.push(below_root);
        }
        dir.push(name);
        out.push(Hierarchy {
            mount_point: PathBuf::from(unescape(mount_point)),
            dir,
            controllers,
        });
    }
    out
}

/// The launcher's own cgroup in the hierarchy of `controllers` (empty: v2).
fn own_path<'a>(own: &'a str, controllers: &[String]) -> Option<&'a str> {
    own.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, list, path) = (parts.next()?, parts.next()?, parts.next()?);
        let mut listed: Vec<&str> = list.split(',').filter(|c| !c.is_empty()).collect();
        let mut wanted: Vec<&str> = controllers.iter().map(String::as_str).collect();
        listed.sort_unstable();
        wanted.sort_unstable();
        (listed == wanted).then_some(path)
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        match rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            Some(b) => {
                out.push(char::from(b));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const OWN: &str = "\
9:name=systemd:/user.slice
5:devices:/
4:memory:/process_api/d46f
1:cpuacct,cpu:/
0::/user.slice/s1
";

    #[test]
    fn each_hierarchy_gets_a_child_of_the_launchers_cgroup() {
        let hs = hierarchies(MOUNTINFO, OWN, "c1");
        let dirs: Vec<(String, String, bool)> = hs
            .iter()
            .map(|h| (h.name(), h.dir.display().to_string(), h.is_v2()))
            .collect();
        let expect = [
            ("cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct/c1", false),
            ("memory", "/sys/fs/cgroup/memory/process_api/d46f/c1", false),
            ("devices", "/sys/fs/cgroup/devices/c1", false),
            ("systemd", "/sys/fs/cgroup/systemd/user.slice/c1", false),
            ("unified", "/sys/fs/cgroup/unified/user.slice/s1/c1", true),
        ];
        let expect: Vec<(String, String, bool)> = expect
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), *c))
            .collect();
        assert_eq!(dirs, expect);
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/a\040b\134c"), r"/a b\c");
        assert_eq!(unescape(r"/plain"), "/plain");
    }
}
