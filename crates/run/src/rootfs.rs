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
        rustix::fs::openat2(
            &self.0,
            path.trim_start_matches('/'),
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
    }
}
