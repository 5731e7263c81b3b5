//! A layer directory opened once, and every path inside it resolved relative to it.
//!
//! All filesystem calls are `*at` calls on directory fds obtained here, so a name is never
//! walked from `/`. Lookups use `openat2(RESOLVE_IN_ROOT)`: a symlink met on the way
//! (absolute, `..`-laden, chained) resolves as if the layer directory were `/`. Creating
//! missing parents walks component by component with the same semantics, so nothing a
//! tar entry names can land outside the directory.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::files::open_dir;
use crate::overlay::{is_whiteout, set_opaque};
use crate::path::os;
use crate::record::Order;

/// Linux's own limit for symlinks followed in one lookup.
const MAX_SYMLINKS: usize = 40;
/// Directory fds kept open per layer; tar streams visit directories in runs, so a small
/// cache catches nearly every parent lookup. Cleared when full (RLIMIT_NOFILE is finite
/// and several layers unpack at once).
const DIR_CACHE_MAX: usize = 128;

pub(crate) struct LayerRoot {
    root: Arc<OwnedFd>,
    dirs: HashMap<Vec<u8>, Arc<OwnedFd>>,
    /// Inodes of cached directories, for [`Order`]; cleared with `dirs`.
    inos: HashMap<Vec<u8>, u64>,
    /// Directories created because an entry needed them as parents (no entry of their
    /// own): physical paths, symlinks of the layer resolved.
    pub implicit: Vec<Vec<u8>>,
    /// When each entry was made, once it can matter (see [`Order`]).
    pub order: Order,
    /// The number of the entry being applied.
    pub seq: u64,
}

impl LayerRoot {
    pub(crate) fn open(dir: &Path) -> io::Result<LayerRoot> {
        let fd = rfs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(LayerRoot {
            root: Arc::new(fd),
            dirs: HashMap::new(),
            inos: HashMap::new(),
            implicit: Vec::new(),
            order: Order::default(),
            seq: 0,
        })
    }

    pub(crate) fn root_fd(&self) -> Arc<OwnedFd> {
        self.root.clone()
    }

    /// The directory at `rel` (cleaned, relative), created with its missing parents.
    pub(crate) fn dir(&mut self, rel: &[u8]) -> io::Result<Arc<OwnedFd>> {
        if rel.is_empty() {
            return Ok(self.root.clone());
        }
        if let Some(fd) = self.dirs.get(rel) {
            return Ok(fd.clone());
        }
        let fd = match self.lookup_dir(rel) {
            Ok(fd) => fd,
            // ENOTDIR: a whiteout of this layer may stand on the way.
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(Errno::NOTDIR.raw_os_error()) =>
            {
                self.walk_create(rel)?
            }
            Err(e) => return Err(e),
        };
        let fd = Arc::new(fd);
        self.remember(rel, fd.clone());
        Ok(fd)
    }

    /// The directory at `rel` if it exists (symlinks resolved inside the root).
    pub(crate) fn lookup_dir(&self, rel: &[u8]) -> io::Result<OwnedFd> {
        if rel.is_empty() {
            return Ok(rfs::openat(
                &*self.root,
                ".",
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?);
        }
        Ok(rfs::openat2(
            &*self.root,
            os(rel),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )?)
    }

    /// Remember an open directory (one we just created, say) for later lookups.
    pub(crate) fn remember(&mut self, rel: &[u8], fd: Arc<OwnedFd>) {
        if self.dirs.len() >= DIR_CACHE_MAX {
            self.dirs.clear();
            self.inos.clear();
        }
        self.dirs.insert(rel.to_vec(), fd);
    }

    /// Forget every cached directory: a directory or symlink was removed or replaced, so a
    /// cached path may now name something else.
    pub(crate) fn invalidate(&mut self) {
        self.dirs.clear();
        self.inos.clear();
    }

    /// Entry `self.seq` was just made at `name` in the directory `parent` (at `rel`):
    /// record it in the order, once the order is recorded. The parent's inode is looked
    /// up once per cached directory, not once per entry.
    pub(crate) fn note(&mut self, rel: &[u8], parent: &OwnedFd, name: &[u8]) -> io::Result<()> {
        if !self.order.is_on() {
            return Ok(());
        }
        let ino = match self.inos.get(rel) {
            Some(&ino) => ino,
            None => {
                let ino = rfs::fstat(parent)?.st_ino;
                if rel.is_empty() || self.dirs.contains_key(rel) {
                    self.inos.insert(rel.to_vec(), ino);
                }
                ino
            }
        };
        self.order.note(ino, name, self.seq);
        Ok(())
    }

    /// Walk `rel` one component at a time from the root, following symlinks inside the
    /// root and creating missing directories (mode 0755, like containerd and umoci). A
    /// whiteout of this layer on the way is replaced by an opaque directory: the entry
    /// re-creates a path the layer deleted, which must not show the lower one's contents.
    fn walk_create(&mut self, rel: &[u8]) -> io::Result<OwnedFd> {
        // stack[i] is the directory at names[..i]; stack[0] is the root.
        let mut stack: Vec<OwnedFd> = vec![dup_dir(&self.root)?];
        let mut names: Vec<Vec<u8>> = Vec::new();
        let mut todo: std::collections::VecDeque<Vec<u8>> =
            rel.split(|&b| b == b'/').map(<[u8]>::to_vec).collect();
        let mut links = 0;
        while let Some(c) = todo.pop_front() {
            match &c[..] {
                b"" | b"." => continue,
                b".." => {
                    if stack.len() > 1 {
                        stack.pop();
                        names.pop();
                    }
                    continue;
                }
                _ => {}
            }
            let cur = stack.last().unwrap();
            match rfs::statat(cur, os(&c), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => match FileType::from_raw_mode(st.st_mode) {
                    FileType::Directory => {}
                    FileType::Symlink => {
                        links += 1;
                        if links > MAX_SYMLINKS {
                            return Err(Errno::LOOP.into());
                        }
                        let target = rfs::readlinkat(cur, os(&c), Vec::new())?.into_bytes();
                        if target.first() == Some(&b'/') {
                            stack.truncate(1);
                            names.clear();
                        }
                        for part in target.split(|&b| b == b'/').rev() {
                            todo.push_front(part.to_vec());
                        }
                        continue;
                    }
                    _ if is_whiteout(&st) => {
                        rfs::unlinkat(cur, os(&c), AtFlags::empty())?;
                        self.make_parent(cur, &names, &c, true)?;
                    }
                    _ => return Err(Errno::NOTDIR.into()),
                },
                Err(Errno::NOENT) => self.make_parent(cur, &names, &c, false)?,
                Err(e) => return Err(e.into()),
            }
            let next = rfs::openat(
                cur,
                os(&c),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            stack.push(next);
            names.push(c);
        }
        Ok(stack.pop().unwrap())
    }
}

impl LayerRoot {
    /// A directory `name` in `cur` (at `names`) for the entry being applied: opaque
    /// where it replaces a whiteout of the layer, else recorded as implicit. From here on
    /// the order of entries counts (`Order`).
    fn make_parent(
        &mut self,
        cur: &OwnedFd,
        names: &[Vec<u8>],
        name: &[u8],
        opaque: bool,
    ) -> io::Result<()> {
        rfs::mkdirat(cur, os(name), Mode::from_raw_mode(0o755))?;
        if !opaque {
            let mut path = names.join(&b'/');
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(name);
            self.implicit.push(path);
        } else {
            let dir = open_dir(cur, name)?;
            set_opaque(&dir)?;
        }
        self.order.start();
        self.order.note(rfs::fstat(cur)?.st_ino, name, self.seq);
        Ok(())
    }
}

fn dup_dir(fd: &OwnedFd) -> io::Result<OwnedFd> {
    Ok(rfs::openat(
        fd,
        ".",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}
