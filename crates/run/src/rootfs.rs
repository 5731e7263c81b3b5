//! A container's rootfs opened once, and paths inside it resolved as if it were `/`
//! (openat2 `RESOLVE_IN_ROOT`): an image's symlinks cannot lead rdpull to a host file.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

pub(crate) struct RootDir(OwnedFd);

impl RootDir {
    pub(crate) fn open(rootfs: &Path) -> io::Result<RootDir> {
        let fd = rustix::fs::open(
            rootfs,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(RootDir(fd))
    }

    /// Open `path` (absolute or relative, both from the rootfs) with `flags`.
    pub(crate) fn open_in(&self, path: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
        let rel = path.trim_start_matches('/');
        rustix::fs::openat2(
            &self.0,
            if rel.is_empty() { "." } else { rel },
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
    }

    /// Make `path` and its missing parents as directories (mode 0755), each resolved in
    /// the rootfs; returns the directory opened `O_PATH`.
    pub(crate) fn make_dirs(&self, path: &str) -> rustix::io::Result<OwnedFd> {
        let mut done = String::new();
        for name in path.split('/').filter(|c| !c.is_empty()) {
            let parent = self.open_in(&done, OFlags::PATH | OFlags::DIRECTORY)?;
            match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e),
            }
            done = format!("{done}/{name}");
        }
        self.open_in(&done, OFlags::PATH)
    }

    /// Make `path` as an empty file (mode 0644) unless something is there, its parents
    /// as directories; returns it opened `O_PATH`.
    pub(crate) fn make_file(&self, path: &str) -> rustix::io::Result<OwnedFd> {
        let (parent, name) = path
            .trim_end_matches('/')
            .rsplit_once('/')
            .unwrap_or(("", path));
        let dir = self.make_dirs(parent)?;
        match rustix::fs::openat(
            &dir,
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        ) {
            Ok(_) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e),
        }
        self.open_in(path, OFlags::PATH)
    }
}
