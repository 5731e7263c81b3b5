//! File helpers shared by applying and settling: copying data with holes, copying
//! metadata between open files, times, removing a tree and clearing a name. Every call is
//! an `*at` or `f*` call on an fd the caller holds; nothing here resolves a path.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;

use rustix::fs::{
    self as rfs, AtFlags, FileType, Mode, OFlags, Stat, Timespec, Timestamps, XattrFlags,
};
use rustix::io::Errno;

use crate::overlay::is_overlay_xattr;
use crate::path::os;

/// xattrs never taken from a layer: overlayfs's own (a layer must not forge redirects or
/// metacopy markers) and SELinux labels (the host's policy decides those).
pub(crate) fn skip_xattr(name: &[u8]) -> bool {
    is_overlay_xattr(name) || name == b"security.selinux"
}

pub(crate) fn times((secs, nanos): (i64, u32)) -> Timestamps {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: nanos as _,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Copy `limit` bytes (or all) of `r` into `file` at `offset` through `buf`, leaving
/// holes where whole buffers are zero. Returns the end offset and the end of the last
/// write (the caller gives the file its full size).
pub(crate) fn copy_with_holes(
    buf: &mut [u8],
    file: &File,
    r: &mut impl Read,
    mut offset: u64,
    limit: Option<u64>,
) -> io::Result<(u64, u64)> {
    let mut written = 0;
    let mut left = limit.unwrap_or(u64::MAX);
    while left > 0 {
        let want = buf.len().min(left.min(usize::MAX as u64) as usize);
        let n = match r.read(&mut buf[..want]) {
            Ok(0) if limit.is_some() => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &buf[..n];
        if !is_zero(chunk) {
            file.write_all_at(chunk, offset)?;
            written = offset + n as u64;
        }
        offset += n as u64;
        left -= n as u64;
    }
    Ok((offset, written))
}

/// True when every byte is zero. Checked a 64-byte block at a time without an early exit
/// inside a block, which the compiler turns into vector ORs.
pub(crate) fn is_zero(b: &[u8]) -> bool {
    let mut chunks = b.chunks_exact(64);
    for c in &mut chunks {
        if c.iter().fold(0u8, |a, &x| a | x) != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&x| x == 0)
}

/// `st`'s mtime, for both times, as the applier sets them.
pub(crate) fn stat_times(st: &Stat) -> Timestamps {
    times((st.st_mtime, st.st_mtime_nsec as u32))
}

/// Copy a file's bytes, leaving holes where whole blocks are zero.
pub(crate) fn copy_data(src: &File, dst: &File) -> io::Result<()> {
    let mut buf = vec![0u8; 256 << 10];
    let (end, _) = copy_with_holes(&mut buf, dst, &mut &*src, 0, None)?;
    dst.set_len(end)
}

/// Give `dst` the owner of `st` (when `same_owner`), then its mode: chown clears
/// setuid and setgid, so the order matters.
pub fn copy_owner_mode(st: &Stat, dst: &impl AsFd, same_owner: bool) -> io::Result<()> {
    if same_owner {
        rfs::fchown(
            dst,
            Some(rfs::Uid::from_raw(st.st_uid)),
            Some(rfs::Gid::from_raw(st.st_gid)),
        )?;
    }
    Ok(rfs::fchmod(dst, Mode::from_raw_mode(st.st_mode & 0o7777))?)
}

/// Give `dst` the owner (when `same_owner`), mode, xattrs and times of `src`; both are
/// open files or directories.
pub(crate) fn copy_meta(src: &impl AsFd, dst: &impl AsFd, same_owner: bool) -> io::Result<()> {
    let st = rfs::fstat(src)?;
    copy_owner_mode(&st, dst, same_owner)?;
    let mut names = vec![0u8; 64 << 10];
    let n = rfs::flistxattr(src, &mut names)?;
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if skip_xattr(name) {
            continue;
        }
        let mut value = vec![0u8; 64 << 10];
        let len = rfs::fgetxattr(src, os(name), &mut value)?;
        rfs::fsetxattr(dst, os(name), &value[..len], XattrFlags::empty())?;
    }
    Ok(rfs::futimens(dst, &stat_times(&st))?)
}

pub(crate) fn open_dir(parent: &impl AsFd, name: &[u8]) -> rustix::io::Result<OwnedFd> {
    rfs::openat(
        parent,
        os(if name.is_empty() { b"." } else { name }),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// What was at a name before an entry took its place.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Previous {
    Nothing,
    Directory,
    Other(FileType),
}

/// Remove whatever is at `parent/name` (recursively for a directory), unless it is a
/// directory and `keep_dir` is set. Reports what was there.
pub(crate) fn clear_slot(parent: &impl AsFd, name: &[u8], keep_dir: bool) -> io::Result<Previous> {
    let st = match rfs::statat(parent, os(name), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(Previous::Nothing),
        Err(e) => return Err(e.into()),
    };
    let ft = FileType::from_raw_mode(st.st_mode);
    if ft == FileType::Directory {
        if !keep_dir {
            remove_all(parent, name)?;
        }
        return Ok(Previous::Directory);
    }
    rfs::unlinkat(parent, os(name), AtFlags::empty())?;
    Ok(Previous::Other(ft))
}

/// `rm -rf parent/name` without following symlinks and without leaving `parent`.
pub fn remove_all(parent: &impl AsFd, name: &[u8]) -> io::Result<()> {
    match rfs::unlinkat(parent, os(name), AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(e) => return Err(e.into()),
    }
    let dir = open_dir(parent, name)?;
    let mut children = Vec::new();
    for e in rfs::Dir::read_from(&dir)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            children.push((n.to_vec(), e.file_type() == FileType::Directory));
        }
    }
    for (child, is_dir) in children {
        if is_dir {
            remove_all(&dir, &child)?;
        } else {
            match rfs::unlinkat(&dir, os(&child), AtFlags::empty()) {
                Err(Errno::ISDIR) => remove_all(&dir, &child)?,
                r => r?,
            }
        }
    }
    rfs::unlinkat(parent, os(name), AtFlags::REMOVEDIR)?;
    Ok(())
}
