//! The rootfs made safe to hand to any runtime, before one sees it.
//!
//! A runtime mounts on, creates and writes the spec's mount destinations while the
//! rootfs is not yet its root: an old runtime (Debian's runc 1.1.5) joins those paths
//! as strings and follows an image's symlinks to the host. So before hand-off, every
//! destination that lies in the image's own files (not inside an earlier mount such as
//! `/dev`'s tmpfs or `/sys`) is made what the runtime expects, walking each component
//! without following symlinks:
//!
//! * the destination itself, if it is anything else (a symlink, a file where a directory
//!   is wanted, a FIFO, a device), is replaced, in the rootfs given: for a container
//!   that is its own upper layer (an overlay whiteout), never the image's layers. The
//!   mount hides whatever was there anyway.
//! * a parent that is not a real directory (`/etc` as a symlink) is refused: replacing
//!   it would hide the image's files. So is a directory where a file is bound.
//!
//! The working directory is made inside the rootfs as `docker run` makes it (symlinks
//! resolved as if the rootfs were `/`, which is how every runtime reaches it: after
//! `pivot_root`), and must end up a directory.

use std::os::fd::OwnedFd;
use std::path::{Component, Path};

use oci_spec::runtime::Spec;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::SpecError;
use crate::rootfs::{kind_name, RootDir};

/// What the runtime mounts on a destination: a directory, or a file (a bind of one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Dir,
    File,
}

/// Make every mount destination of `spec` in `rootfs` (bind sources relative to
/// `bundle`) and its working directory safe for any runtime; see the module doc.
pub(crate) fn secure_rootfs(rootfs: &Path, bundle: &Path, spec: &Spec) -> Result<(), SpecError> {
    let root = RootDir::open(rootfs).map_err(|source| SpecError::Rootfs {
        path: rootfs.display().to_string(),
        source,
    })?;
    let mut mounted: Vec<String> = Vec::new();
    for m in spec.mounts().iter().flatten() {
        let dest = clean_destination(m.destination())?;
        // Below an earlier mount, the path is that mount's (a fresh tmpfs, sysfs), not
        // the image's.
        if !mounted.iter().any(|d| is_below(&dest, d)) {
            let is_bind = m.typ().as_deref() == Some("bind")
                || m.options()
                    .iter()
                    .flatten()
                    .any(|o| o == "bind" || o == "rbind");
            let source = m.source().clone().unwrap_or_default();
            let source_is_file =
                is_bind && bundle.join(&source).metadata().is_ok_and(|s| !s.is_dir());
            let want = if source_is_file {
                Target::File
            } else {
                Target::Dir
            };
            make_target(&root, &dest, want)?;
        }
        mounted.push(dest);
    }
    if let Some(process) = spec.process() {
        let cwd = process.cwd().to_string_lossy().into_owned();
        let made = root.make_dirs(&cwd).and_then(|_| {
            root.open_in(&cwd, OFlags::PATH | OFlags::DIRECTORY)
                .map(drop)
        });
        made.map_err(|e| SpecError::Workdir {
            path: cwd,
            source: e.into(),
        })?;
    }
    Ok(())
}

/// `dest` as `/a/b`: absolute, with no `.` or `..` component (a runtime would join it
/// as it is).
fn clean_destination(dest: &Path) -> Result<String, SpecError> {
    let unsafe_path = |why: &str| SpecError::UnsafePath {
        path: dest.display().to_string(),
        why: why.to_string(),
    };
    if !dest.is_absolute() {
        return Err(unsafe_path("mount destination is not absolute"));
    }
    let mut out = String::new();
    for c in dest.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => {
                out.push('/');
                out.push_str(&n.to_string_lossy());
            }
            Component::ParentDir | Component::Prefix(_) => {
                return Err(unsafe_path("mount destination has a .. component"));
            }
        }
    }
    Ok(if out.is_empty() { "/".into() } else { out })
}

/// Is `path` `dir` or below it (whole components)?
fn is_below(path: &str, dir: &str) -> bool {
    dir == "/" || path == dir || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// Walk `dest` component by component, never following a symlink; make what is
/// missing, replace a wrong last component, refuse a wrong parent.
fn make_target(root: &RootDir, dest: &str, want: Target) -> Result<(), SpecError> {
    let names: Vec<&str> = dest.split('/').filter(|n| !n.is_empty()).collect();
    let mut dir = root
        .open_in("/", OFlags::PATH | OFlags::DIRECTORY)
        .map_err(|e| rootfs_err("/", e))?;
    let mut walked = String::new();
    for (i, name) in names.iter().enumerate() {
        walked.push('/');
        walked.push_str(name);
        let last = i + 1 == names.len();
        let here = if last { want } else { Target::Dir };
        match rustix::fs::statat(&dir, *name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => create(&dir, name, here).map_err(|e| rootfs_err(&walked, e))?,
            Err(e) => return Err(rootfs_err(&walked, e)),
            Ok(st) => {
                let ft = FileType::from_raw_mode(st.st_mode);
                let fits = match here {
                    Target::Dir => ft == FileType::Directory,
                    Target::File => ft == FileType::RegularFile,
                };
                if !fits {
                    if !last || ft == FileType::Directory {
                        return Err(SpecError::UnsafePath {
                            path: walked,
                            why: format!("{} in the image, where {dest} is mounted", kind_name(ft)),
                        });
                    }
                    rustix::fs::unlinkat(&dir, *name, AtFlags::empty())
                        .and_then(|()| create(&dir, name, here))
                        .map_err(|e| rootfs_err(&walked, e))?;
                }
            }
        }
        if !last {
            dir = rustix::fs::openat(
                &dir,
                *name,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| rootfs_err(&walked, e))?;
        }
    }
    Ok(())
}

fn create(dir: &OwnedFd, name: &str, what: Target) -> rustix::io::Result<()> {
    match what {
        Target::Dir => rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o755)),
        Target::File => rustix::fs::openat(
            dir,
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map(drop),
    }
}

fn rootfs_err(path: &str, e: Errno) -> SpecError {
    SpecError::Rootfs {
        path: path.to_string(),
        source: e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, FileTypeExt};

    fn spec(mounts: serde_json::Value, cwd: &str) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"cwd": cwd, "args": ["true"], "user": {"uid": 0, "gid": 0}},
            "mounts": mounts,
        }))
        .unwrap()
    }

    fn standard() -> serde_json::Value {
        serde_json::json!([
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts"},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs"},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"},
            {"destination": "/etc/hosts", "type": "bind", "source": "hosts", "options": ["rbind"]},
        ])
    }

    /// A bundle dir with `rootfs/` and a `hosts` file, and a canary dir beside it.
    fn bundle() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let rootfs = t.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::fs::write(t.path().join("hosts"), "h").unwrap();
        let canary = t.path().join("canary");
        std::fs::create_dir(&canary).unwrap();
        (t, rootfs, canary)
    }

    fn kind(p: &Path) -> &'static str {
        let m = std::fs::symlink_metadata(p).unwrap();
        match m.file_type() {
            t if t.is_symlink() => "symlink",
            t if t.is_dir() => "dir",
            t if t.is_file() => "file",
            t if t.is_fifo() => "fifo",
            _ => "other",
        }
    }

    #[test]
    fn symlinks_and_odd_files_at_destinations_are_replaced_inside_the_rootfs() {
        let (t, rootfs, canary) = bundle();
        symlink(&canary, rootfs.join("dev")).unwrap();
        symlink("../../../../canary", rootfs.join("proc")).unwrap();
        symlink("/chain", rootfs.join("sys")).unwrap();
        symlink(&canary, rootfs.join("chain")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            rootfs.join("etc/hosts"),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let s = spec(standard(), "/");
        secure_rootfs(&rootfs, t.path(), &s).unwrap();
        for d in ["dev", "proc", "sys"] {
            assert_eq!(kind(&rootfs.join(d)), "dir", "{d}");
        }
        assert_eq!(kind(&rootfs.join("etc/hosts")), "file");
        // Nothing was made outside; the chain's other link is the image's own business.
        assert_eq!(std::fs::read_dir(&canary).unwrap().count(), 0);
        assert_eq!(kind(&rootfs.join("chain")), "symlink");
        // Below /dev and /sys, the paths are their mounts': nothing made in the image.
        assert!(!rootfs.join("dev/pts").exists());
        assert!(!rootfs.join("sys/fs").exists());
    }

    #[test]
    fn a_parent_that_is_not_a_directory_is_refused_naming_it() {
        let (t, rootfs, canary) = bundle();
        std::fs::remove_dir(rootfs.join("etc")).unwrap();
        symlink(&canary, rootfs.join("etc")).unwrap();
        let err = secure_rootfs(&rootfs, t.path(), &spec(standard(), "/")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsafe image path /etc: a symlink in the image, where /etc/hosts is mounted"
        );
        assert_eq!(std::fs::read_dir(&canary).unwrap().count(), 0);
        let (t, rootfs, _) = bundle();
        std::fs::create_dir(rootfs.join("etc/hosts")).unwrap();
        let err = secure_rootfs(&rootfs, t.path(), &spec(standard(), "/")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsafe image path /etc/hosts: a directory in the image, where /etc/hosts is mounted"
        );
    }

    #[test]
    fn the_workdir_is_made_inside_and_must_be_a_directory() {
        let (t, rootfs, canary) = bundle();
        // Climbing from rootfs/w, the host's reading would reach the canary.
        symlink("../canary", rootfs.join("w")).unwrap();
        secure_rootfs(&rootfs, t.path(), &spec(serde_json::json!([]), "/w/x")).unwrap();
        assert!(rootfs.join("canary/x").is_dir());
        assert_eq!(std::fs::read_dir(&canary).unwrap().count(), 0);
        std::fs::write(rootfs.join("f"), "").unwrap();
        let err = secure_rootfs(&rootfs, t.path(), &spec(serde_json::json!([]), "/f")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "working directory /f: Not a directory (os error 20)"
        );
    }

    #[test]
    fn a_workdir_through_a_dangling_symlink_is_made_where_it_points_inside() {
        let (t, rootfs, _) = bundle();
        symlink("/nowhere/deep", rootfs.join("w")).unwrap();
        secure_rootfs(&rootfs, t.path(), &spec(serde_json::json!([]), "/w/x")).unwrap();
        assert!(rootfs.join("nowhere/deep/x").is_dir());
        assert!(!Path::new("/nowhere").exists());
    }

    #[test]
    fn destinations_must_be_clean_absolute_paths() {
        assert_eq!(clean_destination(Path::new("/a/./b/")).unwrap(), "/a/b");
        assert!(clean_destination(Path::new("/a/../b")).is_err());
        assert!(clean_destination(Path::new("a")).is_err());
        assert!(is_below("/dev/pts", "/dev"));
        assert!(!is_below("/devices", "/dev"));
    }
}
