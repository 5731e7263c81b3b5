//! Flattening: the tree an overlayfs mount of a snapshot chain would show, copied into one
//! ordinary directory (`rdpull unpack`, rootfs for runtimes that take a plain directory).
//!
//! Layers are applied bottom first, as overlayfs reads them: a 0:0 character device
//! removes the path, an opaque directory drops what lower layers had below it, a
//! directory takes the upper layer's metadata and keeps the lower contents, anything else
//! replaces the path. Hard links within a layer stay hard links; file holes stay holes.

mod image;

pub use image::flatten_image;

use std::collections::{BTreeMap, HashMap};

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use rustix::fs::{
    self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, SeekFrom, Stat, Timespec,
    Timestamps, XattrFlags,
};
use rustix::io::Errno;

use rdpull_unpack::copy_owner_mode;
use rdpull_unpack::overlay::{is_opaque, is_overlay_xattr, is_whiteout};

use crate::error::StoreError;

/// What flattening copied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlattenStats {
    pub entries: u64,
    pub file_bytes: u64,
}

fn os(b: &[u8]) -> &std::ffi::OsStr {
    std::os::unix::ffi::OsStrExt::from_bytes(b)
}

fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = rel.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Merge `layers` (bottom first, each an overlayfs-format directory) into the existing,
/// empty directory `dest`.
pub fn flatten(layers: &[impl AsRef<Path>], dest: &Path) -> Result<FlattenStats, StoreError> {
    flatten_until(layers, dest, &|| false)
}

/// [`flatten`], checking `stop` before each entry: once it says true, flattening ends
/// with an `Interrupted` I/O error and `dest` holds a partial tree for the caller to
/// remove.
pub fn flatten_until(
    layers: &[impl AsRef<Path>],
    dest: &Path,
    stop: &dyn Fn() -> bool,
) -> Result<FlattenStats, StoreError> {
    let open_dir = |p: &Path| {
        rfs::open(
            p,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| StoreError::Io {
            path: p.display().to_string(),
            source: e.into(),
        })
    };
    let dest_fd = open_dir(dest)?;
    let mut f = Flattener {
        dest: dest_fd,
        dir_times: BTreeMap::new(),
        links: HashMap::new(),
        stats: FlattenStats::default(),
        stop,
    };
    for (i, layer) in layers.iter().enumerate() {
        let src = open_dir(layer.as_ref())?;
        f.links.clear();
        let err = |rel: &[u8], op: &str, e: io::Error| StoreError::Io {
            path: format!(
                "flatten /{} (layer {})",
                String::from_utf8_lossy(rel),
                i + 1
            ),
            source: io::Error::new(e.kind(), format!("{op}: {e}")),
        };
        let st = rfs::fstat(&src).map_err(|e| err(b"", "stat", e.into()))?;
        f.dir_meta(
            &src,
            &f.dest.try_clone().map_err(|e| err(b"", "dup", e))?,
            &st,
        )
        .map_err(|e| err(b"", "metadata", e))?;
        f.dir_times.insert(Vec::new(), st.st_mtime_ts());
        f.merge(
            &src,
            &f.dest.try_clone().map_err(|e| err(b"", "dup", e))?,
            Vec::new(),
        )
        .map_err(|(rel, op, e)| err(&rel, op, e))?;
    }
    // Deepest first, so setting a child's time does not disturb its parent's.
    for (rel, t) in f.dir_times.iter().rev() {
        if let Ok(fd) = f.dest_dir(rel, OFlags::RDONLY) {
            let _ = rfs::futimens(&fd, &times(*t));
        }
    }
    Ok(f.stats)
}

trait MtimeTs {
    fn st_mtime_ts(&self) -> Timespec;
}

impl MtimeTs for Stat {
    fn st_mtime_ts(&self) -> Timespec {
        Timespec {
            tv_sec: self.st_mtime as _,
            tv_nsec: self.st_mtime_nsec as _,
        }
    }
}

fn times(t: Timespec) -> Timestamps {
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

type MergeError = (Vec<u8>, &'static str, io::Error);

struct Flattener<'a> {
    dest: OwnedFd,
    /// Final mtime of every directory, applied at the end.
    dir_times: BTreeMap<Vec<u8>, Timespec>,
    /// This layer's multiply-linked inodes → the first destination path given to them.
    links: HashMap<(u64, u64), Vec<u8>>,
    stats: FlattenStats,
    stop: &'a dyn Fn() -> bool,
}

impl Flattener<'_> {
    /// A directory of the destination by relative path (the root for ""), refusing any
    /// symlink on the way: the destination only has directories we made there.
    fn dest_dir(&self, rel: &[u8], flags: OFlags) -> io::Result<OwnedFd> {
        let rel: &[u8] = if rel.is_empty() { b"." } else { rel };
        Ok(rfs::openat2(
            &self.dest,
            os(rel),
            flags | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
        )?)
    }

    fn forget_below(&mut self, rel: &[u8]) {
        let mut prefix = rel.to_vec();
        prefix.push(b'/');
        let doomed: Vec<Vec<u8>> = self
            .dir_times
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.dir_times.remove(&k);
        }
        self.dir_times.remove(rel);
    }

    /// Merge the directory `src` of a layer into `dst`, the destination directory `rel`.
    fn merge(&mut self, src: &OwnedFd, dst: &OwnedFd, rel: Vec<u8>) -> Result<(), MergeError> {
        let mut names = Vec::new();
        for e in rfs::Dir::read_from(src).map_err(|e| (rel.clone(), "read dir", e.into()))? {
            let e = e.map_err(|e| (rel.clone(), "read dir", e.into()))?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(n.to_vec());
            }
        }
        for name in names {
            self.merge_entry(src, dst, &name, join(&rel, &name))?;
        }
        Ok(())
    }

    /// One entry of a layer directory: a whiteout removes, a directory merges (or
    /// replaces, when opaque), anything else replaces.
    fn merge_entry(
        &mut self,
        src: &OwnedFd,
        dst: &OwnedFd,
        name: &[u8],
        crel: Vec<u8>,
    ) -> Result<(), MergeError> {
        let fail = |op: &'static str| {
            let crel = crel.clone();
            move |e: Errno| (crel, op, io::Error::from(e))
        };
        if (self.stop)() {
            return Err((crel, "flatten", io::ErrorKind::Interrupted.into()));
        }
        let st = rfs::statat(src, os(name), AtFlags::SYMLINK_NOFOLLOW).map_err(fail("stat"))?;
        let ft = FileType::from_raw_mode(st.st_mode);
        self.stats.entries += 1;
        if is_whiteout(&st) {
            // The path is gone from here up.
            return self.remove(dst, name, &crel, "whiteout");
        }
        let existing = match rfs::statat(dst, os(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(s) => Some(FileType::from_raw_mode(s.st_mode)),
            Err(Errno::NOENT) => None,
            Err(e) => return Err(fail("stat")(e)),
        };
        if ft == FileType::Directory {
            return self.merge_dir(src, dst, name, crel, &st, existing);
        }
        match existing {
            Some(FileType::Directory) => self.remove(dst, name, &crel, "replace")?,
            Some(_) => rfs::unlinkat(dst, os(name), AtFlags::empty()).map_err(fail("replace"))?,
            None => {}
        }
        let key = (st.st_dev, st.st_ino);
        if st.st_nlink > 1 {
            if let Some(first) = self.links.get(&key) {
                return self.link_to_first(first.clone(), dst, name, &crel);
            }
            self.links.insert(key, crel.clone());
        }
        self.copy_entry(src, dst, name, &st, ft)
            .map_err(|e| (crel, "copy", e))
    }

    /// A directory of a layer: merged into an existing directory unless it is opaque,
    /// else made anew; its metadata is the upper one's.
    fn merge_dir(
        &mut self,
        src: &OwnedFd,
        dst: &OwnedFd,
        name: &[u8],
        crel: Vec<u8>,
        st: &Stat,
        existing: Option<FileType>,
    ) -> Result<(), MergeError> {
        let fail = |op: &'static str| {
            let crel = crel.clone();
            move |e: Errno| (crel, op, io::Error::from(e))
        };
        let open = |dir: &OwnedFd| {
            rfs::openat(
                dir,
                os(name),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
        };
        let sfd = open(src).map_err(fail("open"))?;
        let keep_lower = existing == Some(FileType::Directory) && !is_opaque(&sfd);
        if !keep_lower {
            if existing.is_some() {
                self.remove(dst, name, &crel, "replace")?;
            }
            rfs::mkdirat(dst, os(name), Mode::from_raw_mode(0o700)).map_err(fail("mkdir"))?;
        }
        let dfd = open(dst).map_err(fail("open"))?;
        self.dir_meta(&sfd, &dfd, st)
            .map_err(|e| (crel.clone(), "metadata", e))?;
        self.dir_times.insert(crel.clone(), st.st_mtime_ts());
        self.merge(&sfd, &dfd, crel)
    }

    /// Remove `name` (of any type) from `dst`, and forget its directory times.
    fn remove(
        &mut self,
        dst: &OwnedFd,
        name: &[u8],
        crel: &[u8],
        op: &'static str,
    ) -> Result<(), MergeError> {
        rdpull_unpack::remove_all(dst, name).map_err(|e| (crel.to_vec(), op, e))?;
        self.forget_below(crel);
        Ok(())
    }

    /// Another name of an inode already copied from this layer: a hard link to its copy.
    fn link_to_first(
        &self,
        first: Vec<u8>,
        dst: &OwnedFd,
        name: &[u8],
        crel: &[u8],
    ) -> Result<(), MergeError> {
        let (fp, fname) = match first.iter().rposition(|&b| b == b'/') {
            Some(i) => (&first[..i], &first[i + 1..]),
            None => (&first[..0], &first[..]),
        };
        let pfd = self
            .dest_dir(fp, OFlags::PATH)
            .map_err(|e| (crel.to_vec(), "hard link", e))?;
        rfs::linkat(&pfd, os(fname), dst, os(name), AtFlags::empty())
            .map_err(|e| (crel.to_vec(), "hard link", e.into()))
    }

    /// Owner, mode and xattrs of a directory: overlayfs shows the upper one's, so any
    /// xattr the lower directory had and this one lacks is removed.
    fn dir_meta(&self, src: &OwnedFd, dst: &OwnedFd, st: &Stat) -> io::Result<()> {
        copy_owner_mode(st, dst, true)?;
        let want = list_xattrs(src);
        for n in list_xattrs(dst) {
            if !want.contains(&n) {
                rfs::fremovexattr(dst, os(&n))?;
            }
        }
        copy_xattrs(src, dst)
    }

    /// Copy a non-directory entry with its owner, mode, xattrs and mtime.
    fn copy_entry(
        &mut self,
        src: &OwnedFd,
        dst: &OwnedFd,
        name: &[u8],
        st: &Stat,
        ft: FileType,
    ) -> io::Result<()> {
        let mode = Mode::from_raw_mode(st.st_mode & 0o7777);
        match ft {
            FileType::RegularFile => return self.copy_file(src, dst, name, st),
            FileType::Symlink => {
                let target = rfs::readlinkat(src, os(name), Vec::new())?;
                rfs::symlinkat(target.as_c_str(), dst, os(name))?;
            }
            FileType::Fifo
            | FileType::CharacterDevice
            | FileType::BlockDevice
            | FileType::Socket => {
                rfs::mknodat(dst, os(name), ft, mode, st.st_rdev)?;
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "unknown file type",
                ))
            }
        }
        let (uid, gid) = owner(st);
        rfs::chownat(dst, os(name), uid, gid, AtFlags::SYMLINK_NOFOLLOW)?;
        if ft != FileType::Symlink {
            rfs::chmodat(dst, os(name), mode, AtFlags::empty())?;
        }
        copy_xattrs_at(src, dst, name)?;
        rfs::utimensat(
            dst,
            os(name),
            &times(st.st_mtime_ts()),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(())
    }

    /// A regular file: its data extents (holes stay holes), then its metadata by fd.
    fn copy_file(
        &mut self,
        src: &OwnedFd,
        dst: &OwnedFd,
        name: &[u8],
        st: &Stat,
    ) -> io::Result<()> {
        let s = rfs::openat(
            src,
            os(name),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let d = rfs::openat(
            dst,
            os(name),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        copy_data(&s, &d, st.st_size as u64)?;
        self.stats.file_bytes += st.st_size as u64;
        copy_owner_mode(st, &d, true)?;
        copy_xattrs(&s, &d)?;
        rfs::futimens(&d, &times(st.st_mtime_ts()))?;
        Ok(())
    }
}

/// `/proc/self/fd/N/name`: the directory by fd, the last component not followed by the
/// `l*xattr` calls.
fn proc_path(dir: &OwnedFd, name: &[u8]) -> Vec<u8> {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    p
}

/// Copy the data extents of `s` into `d` (holes stay holes) with copy_file_range.
fn copy_data(s: &OwnedFd, d: &OwnedFd, size: u64) -> io::Result<()> {
    let mut pos = 0u64;
    while pos < size {
        let start = match rfs::seek(s, SeekFrom::Data(pos)) {
            Ok(p) => p,
            Err(Errno::NXIO) => break, // only a hole is left
            Err(e) => return Err(e.into()),
        };
        let end = rfs::seek(s, SeekFrom::Hole(start))?.min(size);
        let (mut i, mut o) = (start, start);
        while i < end {
            let want = (end - i).min(1 << 30) as usize;
            let n = rfs::copy_file_range(s, Some(&mut i), d, Some(&mut o), want)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        pos = end;
    }
    rfs::ftruncate(d, size)?;
    Ok(())
}

fn owner(st: &Stat) -> (Option<rfs::Uid>, Option<rfs::Gid>) {
    (
        Some(rfs::Uid::from_raw(st.st_uid)),
        Some(rfs::Gid::from_raw(st.st_gid)),
    )
}

/// The xattrs of `name` in `src` onto `name` in `dst`, by path so that a symlink's own
/// are copied, not its target's.
fn copy_xattrs_at(src: &OwnedFd, dst: &OwnedFd, name: &[u8]) -> io::Result<()> {
    let sp = proc_path(src, name);
    let dp = proc_path(dst, name);
    let mut names = vec![0u8; 64 << 10];
    let n = rfs::llistxattr(os(&sp), &mut names[..]).unwrap_or(0);
    for x in names[..n]
        .split(|&b| b == 0)
        .filter(|x| !x.is_empty() && !is_overlay_xattr(x))
    {
        let mut v = vec![0u8; 64 << 10];
        let len = rfs::lgetxattr(os(&sp), os(x), &mut v[..])?;
        rfs::lsetxattr(os(&dp), os(x), &v[..len], XattrFlags::empty())?;
    }
    Ok(())
}

fn list_xattrs(fd: &impl AsFd) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; 64 << 10];
    let n = rfs::flistxattr(fd, &mut buf[..]).unwrap_or(0);
    buf[..n]
        .split(|&b| b == 0)
        .filter(|x| !x.is_empty() && !is_overlay_xattr(x))
        .map(<[u8]>::to_vec)
        .collect()
}

fn get_xattr(fd: &impl AsFd, name: &[u8]) -> Option<Vec<u8>> {
    let mut v = vec![0u8; 64 << 10];
    let n = rfs::fgetxattr(fd, os(name), &mut v[..]).ok()?;
    v.truncate(n);
    Some(v)
}

fn copy_xattrs(src: &impl AsFd, dst: &impl AsFd) -> io::Result<()> {
    for n in list_xattrs(src) {
        if let Some(v) = get_xattr(src, &n) {
            rfs::fsetxattr(dst, os(&n), &v, XattrFlags::empty())?;
        }
    }
    Ok(())
}
