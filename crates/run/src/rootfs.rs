//! A container's rootfs opened once, and paths inside it resolved as if it were `/`
//! (openat2 `RESOLVE_IN_ROOT`): an image's symlinks cannot lead rdpull to a host file.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};

use crate::error::SpecError;

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

    /// The contents of the image's file `path`, if there is one: it must be a regular
    /// file of at most `max` bytes. It is checked through an `O_PATH` descriptor before
    /// it is opened (through that descriptor), so a FIFO or a device is never opened: an
    /// image cannot make rdpull block or touch a driver.
    pub(crate) fn read_regular(&self, path: &str, max: u64) -> Result<Option<Vec<u8>>, SpecError> {
        let shown = format!("/{}", path.trim_start_matches('/'));
        let err = |e: io::Error| SpecError::Rootfs {
            path: shown.clone(),
            source: e,
        };
        let fd = match self.open_in(path, OFlags::PATH) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => return Err(err(e.into())),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| err(e.into()))?;
        let ft = FileType::from_raw_mode(st.st_mode);
        if ft != FileType::RegularFile {
            return Err(SpecError::NotRegular {
                path: shown,
                kind: kind_name(ft),
            });
        }
        let size = st.st_size as u64;
        if size > max {
            return Err(SpecError::TooLarge {
                path: shown,
                size,
                max,
            });
        }
        let reopened = rustix::fs::open(
            format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(),
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| err(e.into()))?;
        let mut bytes = Vec::new();
        std::fs::File::from(reopened)
            .take(max)
            .read_to_end(&mut bytes)
            .map_err(err)?;
        Ok(Some(bytes))
    }

    /// Make `path` and its missing parents as directories (mode 0755), each resolved in
    /// the rootfs (a dangling symlink gets what it points at made, inside the rootfs);
    /// returns the directory opened `O_PATH`.
    pub(crate) fn make_dirs(&self, path: &str) -> rustix::io::Result<OwnedFd> {
        self.make_dirs_following(path, 40)
    }

    /// [`RootDir::make_dirs`], following at most `links` dangling symlinks (the
    /// kernel's own bound for a path).
    fn make_dirs_following(&self, path: &str, links: u32) -> rustix::io::Result<OwnedFd> {
        let mut done = String::new();
        for name in path.split('/').filter(|c| !c.is_empty()) {
            let parent = self.open_in(&done, OFlags::PATH | OFlags::DIRECTORY)?;
            match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e),
            }
            let next = format!("{done}/{name}");
            if let Err(rustix::io::Errno::NOENT) = self.open_in(&next, OFlags::PATH) {
                if links == 0 {
                    return Err(rustix::io::Errno::LOOP);
                }
                let target = rustix::fs::readlinkat(&parent, name, Vec::new())?;
                let target = target.to_string_lossy();
                let target = if target.starts_with('/') {
                    target.into_owned()
                } else {
                    format!("{done}/{target}")
                };
                self.make_dirs_following(&target, links - 1)?;
            }
            done = next;
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

/// "a symlink", "a FIFO", ...: what an image put where rdpull wanted something else.
pub(crate) fn kind_name(ft: FileType) -> &'static str {
    match ft {
        FileType::Symlink => "a symlink",
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "of unknown type",
    }
}
