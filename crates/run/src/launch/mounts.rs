//! The container's filesystem, built inside its new mount namespace: mounts made
//! private, the rootfs bound onto itself, the spec's mounts (the cgroup one as runc
//! builds it on a v1 host), the standard device nodes, `pivot_root`, then the masked
//! and read-only paths and a read-only root.
//!
//! Every mount target inside the rootfs is created and opened with openat2
//! `RESOLVE_IN_ROOT` and mounted on through `/proc/self/fd`, so an image's symlinks
//! cannot point a mount at a host path.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use oci_spec::runtime::{Mount, Spec};
use rustix::fs::{Mode, OFlags};

use super::cgroup::Cgroups;
use super::report::{Context, Failure, Step};
use super::spec_name;
use crate::rootfs::RootDir;

const NONE: Option<&str> = None;

/// Mount flags, propagation and file-system data from a mount's options.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct MountOptions {
    pub(crate) flags: MsFlags,
    pub(crate) propagation: MsFlags,
    pub(crate) data: Vec<String>,
}

/// The options that are mount flags: each sets its flag, or (false) clears it.
const FLAG_OPTIONS: &[(&str, MsFlags, bool)] = &[
    ("ro", MsFlags::MS_RDONLY, true),
    ("rw", MsFlags::MS_RDONLY, false),
    ("nosuid", MsFlags::MS_NOSUID, true),
    ("suid", MsFlags::MS_NOSUID, false),
    ("nodev", MsFlags::MS_NODEV, true),
    ("dev", MsFlags::MS_NODEV, false),
    ("noexec", MsFlags::MS_NOEXEC, true),
    ("exec", MsFlags::MS_NOEXEC, false),
    ("sync", MsFlags::MS_SYNCHRONOUS, true),
    ("async", MsFlags::MS_SYNCHRONOUS, false),
    ("dirsync", MsFlags::MS_DIRSYNC, true),
    ("mand", MsFlags::MS_MANDLOCK, true),
    ("nomand", MsFlags::MS_MANDLOCK, false),
    ("noatime", MsFlags::MS_NOATIME, true),
    ("atime", MsFlags::MS_NOATIME, false),
    ("nodiratime", MsFlags::MS_NODIRATIME, true),
    ("diratime", MsFlags::MS_NODIRATIME, false),
    ("relatime", MsFlags::MS_RELATIME, true),
    ("norelatime", MsFlags::MS_RELATIME, false),
    ("strictatime", MsFlags::MS_STRICTATIME, true),
    ("nostrictatime", MsFlags::MS_STRICTATIME, false),
    ("bind", MsFlags::MS_BIND, true),
    ("rbind", MsFlags::MS_BIND.union(MsFlags::MS_REC), true),
    ("remount", MsFlags::MS_REMOUNT, true),
];

impl MountOptions {
    pub(crate) fn parse(options: &[String]) -> MountOptions {
        let mut o = MountOptions {
            flags: MsFlags::empty(),
            propagation: MsFlags::empty(),
            data: Vec::new(),
        };
        for opt in options {
            if let Some((_, flag, set)) = FLAG_OPTIONS.iter().find(|(name, ..)| name == opt) {
                o.flags.set(*flag, *set);
            } else if let Some(p) = propagation(opt) {
                o.propagation = p;
            } else {
                o.data.push(opt.clone());
            }
        }
        o
    }

    fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }

    /// The flags a bind mount gets by a remount (a bind ignores them at first).
    fn remount_flags(&self) -> MsFlags {
        self.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT)
    }

    fn data(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }
}

fn propagation(option: &str) -> Option<MsFlags> {
    Some(match option {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// The path through which a mount lands on `fd`.
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Build the container's filesystem in `rootfs` and make it the root.
pub(crate) fn build_root(
    spec: &Spec,
    rootfs: &Path,
    bundle: &Path,
    cgroups: &Cgroups,
) -> Result<(), Failure> {
    let recursive_private = MsFlags::MS_REC | MsFlags::MS_PRIVATE;
    mount(NONE, "/", NONE, recursive_private, NONE).step(Step::Mount, "/ (rprivate)")?;
    let what = rootfs.display().to_string();
    let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
    mount(Some(rootfs), rootfs, NONE, bind, NONE).step(Step::Mount, &what)?;
    let root = RootDir::open(rootfs).map_err(|e| Failure::new(Step::Mount, &what, e))?;
    for m in spec.mounts().iter().flatten() {
        if m.typ().as_deref() == Some("cgroup") {
            mount_cgroups(&root, m, cgroups, cgroup_namespace(spec))?;
        } else {
            mount_one(&root, m, bundle)?;
        }
    }
    make_devices(&root)?;
    make_spec_devices(&root, spec)?;
    pivot_root(rootfs)?;
    let linux = spec.linux().clone().unwrap_or_default();
    // runc's order, so that the two mount tables read alike.
    for p in linux.readonly_paths().iter().flatten() {
        read_only(p)?;
    }
    for p in linux.masked_paths().iter().flatten() {
        mask(p)?;
    }
    if spec
        .root()
        .as_ref()
        .is_some_and(|r| r.readonly() == Some(true))
    {
        remount_read_only("/", Step::Mount)?;
    }
    Ok(())
}

fn mount_one(root: &RootDir, m: &Mount, bundle: &Path) -> Result<(), Failure> {
    let dest = m.destination().to_string_lossy().into_owned();
    let opts = MountOptions::parse(&m.options().clone().unwrap_or_default());
    let typ = m.typ().clone().unwrap_or_default();
    let what = format!("{dest} ({typ})");
    let source = m.source().clone().unwrap_or_default();
    if opts.is_bind() || typ == "bind" {
        let source = if source.is_absolute() {
            source
        } else {
            bundle.join(source)
        };
        let is_dir = std::fs::metadata(&source)
            .map_err(|e| Failure::new(Step::Mount, source.display().to_string(), e))?
            .is_dir();
        let target = if is_dir {
            root.make_dirs(&dest)
        } else {
            root.make_file(&dest)
        }
        .step(Step::Mount, &what)?;
        let flags = MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC);
        mount(Some(&source), &fd_path(&target), NONE, flags, NONE).step(Step::Mount, &what)?;
        let extra = opts.remount_flags();
        if !extra.is_empty() {
            let top = root.open_in(&dest, OFlags::PATH).step(Step::Mount, &what)?;
            let remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra;
            mount(NONE, &fd_path(&top), NONE, remount, NONE).step(Step::Mount, &what)?;
        }
    } else {
        let target = root.make_dirs(&dest).step(Step::Mount, &what)?;
        let source = source.to_string_lossy().into_owned();
        let data = opts.data();
        mount(
            Some(source.as_str()),
            &fd_path(&target),
            Some(typ.as_str()),
            opts.flags,
            data.as_deref(),
        )
        .step(Step::Mount, &what)?;
    }
    if !opts.propagation.is_empty() {
        let top = root.open_in(&dest, OFlags::PATH).step(Step::Mount, &what)?;
        mount(NONE, &fd_path(&top), NONE, opts.propagation, NONE).step(Step::Mount, &what)?;
    }
    Ok(())
}

/// Does the container get a cgroup namespace of its own?
fn cgroup_namespace(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|n| {
            n.iter()
                .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Cgroup)
        })
}

/// `/sys/fs/cgroup` as runc makes it on a v1 host: a tmpfs with each hierarchy's
/// container directory bound read-only under the host's name for it (and a symlink per
/// controller of a shared one, `cpu -> cpu,cpuacct`). On a v2-only host, a cgroup2
/// mount made in the container's cgroup namespace (its root is the container's cgroup),
/// or without one the container's v2 directory bound read-only.
fn mount_cgroups(
    root: &RootDir,
    m: &Mount,
    cgroups: &Cgroups,
    namespace: bool,
) -> Result<(), Failure> {
    let dest = m.destination().to_string_lossy().into_owned();
    let opts = MountOptions::parse(&m.options().clone().unwrap_or_default());
    let what = format!("{dest} (cgroup)");
    let target = root.make_dirs(&dest).step(Step::Mount, &what)?;
    let v1: Vec<_> = cgroups.hierarchies.iter().filter(|h| !h.is_v2()).collect();
    let flags = opts.remount_flags() | MsFlags::MS_RDONLY;
    // Bound at `at` (open on `path`), then made read-only through the new mount.
    let bind_ro = |source: &Path, at: &OwnedFd, path: &str| -> Result<(), Failure> {
        mount(Some(source), &fd_path(at), NONE, MsFlags::MS_BIND, NONE).step(Step::Mount, path)?;
        let top = root.open_in(path, OFlags::PATH).step(Step::Mount, path)?;
        let remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags;
        mount(NONE, &fd_path(&top), NONE, remount, NONE).step(Step::Mount, path)
    };
    if v1.is_empty() && namespace {
        let source = m.source().clone().unwrap_or_else(|| "cgroup".into());
        return mount(
            Some(&source),
            &fd_path(&target),
            Some("cgroup2"),
            opts.flags,
            NONE,
        )
        .step(Step::Mount, &what);
    }
    if v1.is_empty() {
        if let Some(h) = cgroups.hierarchies.first() {
            bind_ro(&h.dir, &target, &dest)?;
        }
        return Ok(());
    }
    let tmpfs_flags = opts.flags & !MsFlags::MS_RDONLY;
    mount(
        Some("tmpfs"),
        &fd_path(&target),
        Some("tmpfs"),
        tmpfs_flags,
        Some("mode=755"),
    )
    .step(Step::Mount, &what)?;
    for h in v1 {
        let at = format!("{dest}/{}", h.name());
        let dir = root.make_dirs(&at).step(Step::Mount, &at)?;
        bind_ro(&h.dir, &dir, &at)?;
        if h.name().contains(',') {
            let parent = root
                .open_in(&dest, OFlags::PATH | OFlags::DIRECTORY)
                .step(Step::Mount, &what)?;
            for c in h.name().split(',') {
                match rustix::fs::symlinkat(h.name(), &parent, c) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(Failure::new(Step::Mount, format!("{dest}/{c}"), e)),
                }
            }
        }
    }
    Ok(())
}

/// The spec's own device nodes (`linux.devices`: the host's under `--privileged`), in
/// the container's `/dev`, with their owners and modes.
fn make_spec_devices(root: &RootDir, spec: &Spec) -> Result<(), Failure> {
    let devices = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default();
    for d in devices {
        let path = d.path().to_string_lossy().into_owned();
        let Some((parent, name)) = path.rsplit_once('/') else {
            continue;
        };
        root.make_dirs(parent).step(Step::Devices, parent)?;
        let dir = root
            .open_in(parent, OFlags::DIRECTORY | OFlags::RDONLY)
            .step(Step::Devices, parent)?;
        let kind = match spec_name(&d.typ()).as_str() {
            "b" => rustix::fs::FileType::BlockDevice,
            "p" => rustix::fs::FileType::Fifo,
            _ => rustix::fs::FileType::CharacterDevice,
        };
        let mode = Mode::from_raw_mode(d.file_mode().unwrap_or(0o666) & 0o7777);
        let dev = rustix::fs::makedev(d.major() as u32, d.minor() as u32);
        match rustix::fs::mknodat(&dir, name, kind, mode, dev) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => continue,
            Err(e) => return Err(Failure::new(Step::Devices, &path, e)),
        }
        rustix::fs::chmodat(&dir, name, mode, rustix::fs::AtFlags::empty())
            .step(Step::Devices, &path)?;
        let owner = (
            d.uid().map(rustix::fs::Uid::from_raw),
            d.gid().map(rustix::fs::Gid::from_raw),
        );
        rustix::fs::chownat(
            &dir,
            name,
            owner.0,
            owner.1,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .step(Step::Devices, &path)?;
    }
    Ok(())
}

/// The device nodes and links every container gets (runc's defaults).
fn make_devices(root: &RootDir) -> Result<(), Failure> {
    root.make_dirs("/dev").step(Step::Devices, "/dev")?;
    let dev = root
        .open_in("/dev", OFlags::DIRECTORY | OFlags::RDONLY)
        .step(Step::Devices, "/dev")?;
    let nodes = [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ];
    for (name, major, minor) in nodes {
        let kind = rustix::fs::FileType::CharacterDevice;
        let made = rustix::fs::mknodat(
            &dev,
            name,
            kind,
            Mode::from_raw_mode(0o666),
            rustix::fs::makedev(major, minor),
        );
        match made {
            // mknod applies the umask; the mode is set again to be exact.
            Ok(()) => rustix::fs::chmodat(
                &dev,
                name,
                Mode::from_raw_mode(0o666),
                rustix::fs::AtFlags::empty(),
            )
            .step(Step::Devices, &format!("/dev/{name}"))?,
            Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(Failure::new(Step::Devices, format!("/dev/{name}"), e)),
        }
    }
    let links = [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ];
    for (name, to) in links {
        match rustix::fs::symlinkat(to, &dev, name) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(Failure::new(Step::Devices, format!("/dev/{name}"), e)),
        }
    }
    Ok(())
}

/// Make `rootfs` the root and detach the old one.
fn pivot_root(rootfs: &Path) -> Result<(), Failure> {
    let what = rootfs.display().to_string();
    let new_root = rustix::fs::open(
        rootfs,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .step(Step::PivotRoot, &what)?;
    rustix::process::fchdir(&new_root).step(Step::PivotRoot, &what)?;
    rustix::process::pivot_root(".", ".").step(Step::PivotRoot, &what)?;
    umount2(".", MntFlags::MNT_DETACH).step(Step::PivotRoot, "old root")?;
    rustix::process::chdir("/").step(Step::PivotRoot, "/")
}

/// Hide `path`: a directory under an empty read-only tmpfs, a file under `/dev/null`.
/// A path that does not exist needs no hiding.
fn mask(path: &str) -> Result<(), Failure> {
    let st = match rustix::fs::stat(path) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(Failure::new(Step::MaskedPath, path, e)),
    };
    if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory {
        mount(Some("tmpfs"), path, Some("tmpfs"), MsFlags::MS_RDONLY, NONE)
    } else {
        mount(Some("/dev/null"), path, NONE, MsFlags::MS_BIND, NONE)
    }
    .step(Step::MaskedPath, path)
}

/// Make `path` read-only, keeping its mount's other flags.
fn read_only(path: &str) -> Result<(), Failure> {
    match mount(
        Some(path),
        path,
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        NONE,
    ) {
        Ok(()) => remount_read_only(path, Step::ReadonlyPath),
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(Failure::new(Step::ReadonlyPath, path, e)),
    }
}

fn remount_read_only(path: &str, step: Step) -> Result<(), Failure> {
    use rustix::fs::StatVfsMountFlags as V;
    let have = rustix::fs::statvfs(path).step(step, path)?.f_flag;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    for (v, m) in [
        (V::NOSUID, MsFlags::MS_NOSUID),
        (V::NODEV, MsFlags::MS_NODEV),
        (V::NOEXEC, MsFlags::MS_NOEXEC),
        (V::NOATIME, MsFlags::MS_NOATIME),
        (V::NODIRATIME, MsFlags::MS_NODIRATIME),
        (V::RELATIME, MsFlags::MS_RELATIME),
    ] {
        if have.contains(v) {
            flags |= m;
        }
    }
    mount(NONE, path, NONE, flags, NONE).step(step, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> MountOptions {
        MountOptions::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options_become_flags_propagation_and_data() {
        let o = opts(&["nosuid", "strictatime", "mode=755", "size=65536k"]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(o.data(), Some("mode=755,size=65536k".into()));
        let o = opts(&["rbind", "rprivate", "ro"]);
        assert!(o.is_bind());
        assert_eq!(o.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        assert_eq!(o.remount_flags(), MsFlags::MS_RDONLY);
        assert_eq!(o.data(), None);
        // A later option wins, as in mount(8).
        assert_eq!(opts(&["ro", "rw"]).flags, MsFlags::empty());
    }
}
