//! Applying one layer's tar stream to its own directory, in overlayfs format.
//!
//! Whiteouts become what overlayfs reads: `.wh.NAME` a 0:0 character device `NAME`,
//! `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on its directory. Because the
//! layer directory holds only this layer, a whiteout hides lower layers only, wherever it
//! stands in the tar: a whiteout next to a same-layer entry of that name turns into an
//! opaque directory (or nothing, for a non-directory, which hides the lower path anyway).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use tar::EntryType;

use crate::error::UnpackError;
use crate::header::{read_header, EntryHeader, Meta};
use crate::lower::{DeferredLink, LowerRefs};
use crate::overlay::{is_overlay_xattr, is_whiteout, make_whiteout, set_opaque};
use crate::path::{clean, display, split};
use crate::pax::{read_sparse_map_v1, SparseHeader};
use crate::root::{clear_slot, os, LayerRoot, Previous};
use crate::writeback::{start_writeback, WRITEBACK_MIN};

/// Size of the copy buffer for file data.
const COPY_BUF: usize = 256 << 10;

/// tar-rs's error for long-name or PAX headers that end the archive with no member after
/// them. GNU tar and Go ignore such a header; `dangling_extension_headers_are_ignored`
/// pins the text, so an upgrade that rewords it fails there.
const DANGLING_EXTENSION: &str =
    "members found describing a future member but no future member found";

/// How to apply a layer.
#[derive(Clone, Debug)]
pub struct ApplyOptions {
    /// Set owners from the tar headers (needs root; without it files belong to the caller).
    pub same_owner: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            same_owner: rustix::process::geteuid().is_root(),
        }
    }
}

/// What applying a layer did.
#[derive(Debug, Default)]
pub struct LayerStats {
    /// Tar entries applied (PAX and long-name headers not counted).
    pub entries: u64,
    /// Bytes of regular file content.
    pub file_bytes: u64,
    /// What the layer names of the layers below it, to settle before it is committed
    /// ([`crate::settle_on_lowers`]).
    pub lower_refs: LowerRefs,
}

/// Apply the tar stream `reader` to the existing directory `dir`.
///
/// Reads the archive up to its end marker; the caller drains whatever follows.
pub fn apply_tar<R: Read>(
    reader: &mut R,
    dir: &Path,
    options: &ApplyOptions,
) -> Result<LayerStats, UnpackError> {
    let root = LayerRoot::open(dir).map_err(|source| UnpackError::Root {
        path: dir.display().to_string(),
        source,
    })?;
    let mut a = Applier {
        root,
        options: options.clone(),
        euid: rustix::process::geteuid().as_raw(),
        egid: rustix::process::getegid().as_raw(),
        whiteouts: HashSet::new(),
        setgid_dirs: false,
        links: Vec::new(),
        placeholders: HashMap::new(),
        dir_times: Vec::new(),
        buf: vec![0; COPY_BUF],
        stats: LayerStats::default(),
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(UnpackError::Tar)? {
        match entry {
            Ok(entry) => a.entry(entry)?,
            Err(e) if e.to_string() == DANGLING_EXTENSION => {
                tracing::warn!("ignoring a long-name or PAX header with no member after it at the end of the layer");
                break;
            }
            Err(e) => return Err(UnpackError::Tar(e)),
        }
    }
    a.finish()
}

struct Applier {
    root: LayerRoot,
    options: ApplyOptions,
    euid: u32,
    egid: u32,
    /// Whiteout devices this layer created (cleaned paths).
    whiteouts: HashSet<Vec<u8>>,
    /// A directory of the layer is setgid, so a file made in one may get its group
    /// rather than the caller's: owners are then always set.
    setgid_dirs: bool,
    /// Hard links to files not in this layer, settled at commit time.
    links: Vec<DeferredLink>,
    /// Their placeholders' inodes, and the target each stands for.
    placeholders: HashMap<u64, Vec<u8>>,
    /// Directory mtimes, applied last so later entries do not disturb them.
    dir_times: Vec<(Vec<u8>, (i64, u32))>,
    buf: Vec<u8>,
    stats: LayerStats,
}

fn entry_err<'a>(rel: &'a [u8], op: &'static str) -> impl FnOnce(io::Error) -> UnpackError + 'a {
    move |source| UnpackError::Entry {
        path: display(rel),
        op,
        source,
    }
}

fn errno<'a>(op: &'static str, rel: &'a [u8]) -> impl FnOnce(Errno) -> UnpackError + 'a {
    move |e| entry_err(rel, op)(e.into())
}

impl Applier {
    fn entry<R: Read>(&mut self, mut e: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let kind = e.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader) {
            return Ok(());
        }
        let EntryHeader {
            raw_path,
            link,
            meta,
            dev,
            sparse,
        } = read_header(&mut e)?;
        let rel = clean(&raw_path);
        self.stats.entries += 1;
        self.root.seq = self.stats.entries;
        let (parent, name) = split(&rel);
        if let Some(target) = name.strip_prefix(b".wh.") {
            return self.whiteout(parent, target, &rel, &meta);
        }
        // A GNU incremental dumpdir ('D') is a directory whose data lists its contents;
        // extracted outside incremental mode it is just the directory, as GNU tar makes it.
        let is_dir = kind == EntryType::Directory
            || kind.as_byte() == b'D'
            || (matches!(kind, EntryType::Regular | EntryType::Continuous)
                && raw_path.ends_with(b"/"));
        if rel.is_empty() && !is_dir {
            return Err(UnpackError::Refused {
                path: String::from_utf8_lossy(&raw_path).into_owned(),
                why: "a non-directory entry names the layer root".into(),
            });
        }
        match kind {
            _ if is_dir => self.directory(&rel, &meta),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.file(&rel, &mut e, &meta, sparse)
            }
            EntryType::Symlink => self.symlink(&rel, &link, &meta),
            EntryType::Link => self.hardlink(&rel, &link),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let ft = match kind {
                    EntryType::Char => FileType::CharacterDevice,
                    EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                self.special(&rel, ft, rfs::makedev(dev.0, dev.1), &meta)
            }
            other => Err(UnpackError::Refused {
                path: display(&rel),
                why: format!(
                    "unsupported tar entry type '{}'",
                    other.as_byte().escape_ascii()
                ),
            }),
        }
    }

    /// Make `parent/name` with `make`, replacing whatever an earlier entry put there.
    /// Returns what was replaced.
    fn create<T>(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        rel: &[u8],
        op: &'static str,
        make: impl Fn(&OwnedFd, &[u8]) -> rustix::io::Result<T>,
    ) -> Result<(T, Previous), UnpackError> {
        let made = match make(parent, name) {
            Ok(t) => (t, Previous::Nothing),
            Err(Errno::EXIST) => {
                let prev = clear_slot(parent, name, false).map_err(entry_err(rel, "replace"))?;
                if matches!(
                    prev,
                    Previous::Directory | Previous::Other(FileType::Symlink)
                ) {
                    self.root.invalidate();
                }
                (make(parent, name).map_err(errno(op, rel))?, prev)
            }
            Err(e) => return Err(errno(op, rel)(e)),
        };
        self.note(parent, name, rel)?;
        Ok(made)
    }

    /// The entry `rel` was just made at `name` in `parent`: record its place in the order.
    fn note(&mut self, parent: &OwnedFd, name: &[u8], rel: &[u8]) -> Result<(), UnpackError> {
        self.root
            .note(split(rel).0, parent, name)
            .map_err(entry_err(rel, "stat parent"))
    }

    fn parent_dir(&mut self, rel: &[u8]) -> Result<Arc<OwnedFd>, UnpackError> {
        self.root
            .dir(split(rel).0)
            .map_err(entry_err(rel, "parent directory"))
    }

    fn directory(&mut self, rel: &[u8], meta: &Meta) -> Result<(), UnpackError> {
        if rel.is_empty() {
            let root = self.root.root_fd();
            self.fd_meta(&root, meta, rel, true)?;
            self.dir_times.push((Vec::new(), meta.mtime));
            return Ok(());
        }
        let parent = self.parent_dir(rel)?;
        let name = split(rel).1;
        let mkdir = |p: &OwnedFd, n: &[u8]| rfs::mkdirat(p, os(n), Mode::from_raw_mode(0o700));
        let mut opaque = false;
        match mkdir(&parent, name) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                // An existing directory is merged (new metadata, contents kept).
                match clear_slot(&*parent, name, true).map_err(entry_err(rel, "replace"))? {
                    Previous::Directory => {}
                    prev => {
                        if prev == Previous::Other(FileType::Symlink) {
                            self.root.invalidate();
                        }
                        // Whiteout then directory in one layer: the new directory
                        // replaces the lower one, so it must hide the lower contents.
                        opaque = self.whiteouts.remove(rel);
                        mkdir(&parent, name).map_err(errno("mkdir", rel))?;
                    }
                }
            }
            Err(e) => return Err(errno("mkdir", rel)(e)),
        }
        let fd = rfs::openat(
            &*parent,
            os(name),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno("open", rel))?;
        self.fd_meta(&fd, meta, rel, true)?;
        if opaque {
            set_opaque(&fd).map_err(entry_err(rel, "set opaque"))?;
        }
        if meta.mode & 0o2000 != 0 {
            self.setgid_dirs = true;
        }
        self.note(&parent, name, rel)?;
        self.root.remember(rel, Arc::new(fd));
        self.dir_times.push((rel.to_vec(), meta.mtime));
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        rel: &[u8],
        data: &mut R,
        meta: &Meta,
        sparse: Option<SparseHeader>,
    ) -> Result<(), UnpackError> {
        let parent = self.parent_dir(rel)?;
        let name = split(rel).1;
        let mode_at_create = self.mode_at_create(meta);
        let create_mode = if mode_at_create { meta.mode } else { 0o600 };
        let (fd, _) = self.create(&parent, name, rel, "create", |p, n| {
            rfs::openat(
                p,
                os(n),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(create_mode),
            )
        })?;
        let file = File::from(fd);
        let (size, written) = match sparse {
            None => self.copy(&file, data, 0, None),
            Some(s) => self.copy_sparse(&file, data, s),
        }
        .map_err(entry_err(rel, "write"))?;
        if written < size {
            // A trailing zero run was skipped, not written: give the file its full size.
            rfs::ftruncate(&file, size).map_err(errno("truncate", rel))?;
        }
        self.stats.file_bytes += size;
        if written >= WRITEBACK_MIN {
            start_writeback(&file);
        }
        self.fd_meta(&file, meta, rel, !mode_at_create)?;
        rfs::futimens(&file, &times(meta.mtime)).map_err(errno("set mtime", rel))?;
        Ok(())
    }

    /// Can the file be created with its final mode? Yes when the umask cannot strip a
    /// bit of it and no chown follows (chown clears setuid/setgid): no fchmod then.
    fn mode_at_create(&self, meta: &Meta) -> bool {
        !self.needs_chown(meta) && create_mode_is_exact(meta.mode)
    }

    fn needs_chown(&self, meta: &Meta) -> bool {
        self.options.same_owner
            && ((meta.uid, meta.gid) != (self.euid, self.egid) || self.setgid_dirs)
    }

    /// Copy `limit` bytes (or all) of `r` into `file` at `offset`, leaving holes where
    /// whole buffers are zero. Returns the end offset and the end of the last write.
    fn copy(
        &mut self,
        file: &File,
        r: &mut impl Read,
        offset: u64,
        limit: Option<u64>,
    ) -> io::Result<(u64, u64)> {
        copy_with_holes(&mut self.buf, file, r, offset, limit)
    }

    fn copy_sparse(
        &mut self,
        file: &File,
        r: &mut impl Read,
        s: SparseHeader,
    ) -> io::Result<(u64, u64)> {
        let map = match (s.major, s.minor) {
            (1, 0) => read_sparse_map_v1(r)?.0,
            (0, _) => s.map,
            (ma, mi) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unsupported GNU sparse format {ma}.{mi}"),
                ))
            }
        };
        let (mut end, mut written) = (0, 0);
        for (off, len) in map {
            let (e, w) = self.copy(file, r, off, Some(len))?;
            end = e;
            written = written.max(w);
        }
        // Whatever padding is left belongs to no extent.
        io::copy(r, &mut io::sink())?;
        Ok((s.real_size.unwrap_or(end).max(end), written))
    }

    fn symlink(&mut self, rel: &[u8], target: &[u8], meta: &Meta) -> Result<(), UnpackError> {
        let parent = self.parent_dir(rel)?;
        let name = split(rel).1;
        self.create(&parent, name, rel, "symlink", |p, n| {
            rfs::symlinkat(os(target), p, os(n))
        })?;
        self.at_meta(&parent, name, rel, meta, false)
    }

    fn hardlink(&mut self, rel: &[u8], target: &[u8]) -> Result<(), UnpackError> {
        let target_rel = clean(target);
        let refuse = |why: String| UnpackError::Refused {
            path: display(rel),
            why,
        };
        if target_rel.is_empty() {
            return Err(refuse("hard link to the layer root".into()));
        }
        if target_rel == rel {
            return Ok(());
        }
        let (tp, tn) = split(&target_rel);
        let tparent = match self.root.lookup_dir(tp) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {
                return self.defer_link(rel, target_rel)
            }
            Err(e) => return Err(entry_err(rel, "hard link target")(e)),
        };
        match rfs::statat(&tparent, os(tn), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                return Err(refuse(format!(
                    "hard link target {} is a directory",
                    display(&target_rel)
                )))
            }
            Ok(st) if is_whiteout(&st) => {
                return Err(refuse(format!(
                    "hard link target {} is deleted by this layer",
                    display(&target_rel)
                )))
            }
            Ok(st) => {
                // A link to a placeholder waits for the same lower file.
                if let Some(lower) = self.placeholders.get(&st.st_ino) {
                    let lower = lower.clone();
                    return self.defer_link(rel, lower);
                }
            }
            Err(Errno::NOENT) => return self.defer_link(rel, target_rel),
            Err(e) => return Err(errno("hard link target", rel)(e)),
        }
        let parent = self.parent_dir(rel)?;
        let name = split(rel).1;
        self.create(&parent, name, rel, "hard link", |p, n| {
            rfs::linkat(&tparent, os(tn), p, os(n), AtFlags::empty())
        })?;
        Ok(())
    }

    /// A hard link to `target`, which is not in this layer: an empty placeholder stands
    /// at `rel` until the link is settled on the lower layers.
    fn defer_link(&mut self, rel: &[u8], target: Vec<u8>) -> Result<(), UnpackError> {
        self.root.order.start();
        let parent = self.parent_dir(rel)?;
        let name = split(rel).1;
        let (fd, _) = self.create(&parent, name, rel, "hard link", |p, n| {
            rfs::openat(
                p,
                os(n),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
        })?;
        let ino = rfs::fstat(&fd).map_err(errno("stat", rel))?.st_ino;
        self.placeholders.insert(ino, target.clone());
        self.links.push(DeferredLink {
            parent,
            name: name.to_vec(),
            ino,
            target,
            entry: rel.to_vec(),
            seq: self.root.seq,
        });
        Ok(())
    }

    fn special(
        &mut self,
        rel: &[u8],
        ft: FileType,
        dev: rfs::Dev,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let parent = self.parent_dir(rel)?;
        let name = split(rel).1;
        self.create(&parent, name, rel, "mknod", |p, n| {
            rfs::mknodat(p, os(n), ft, Mode::from_raw_mode(0o600), dev)
        })?;
        self.at_meta(&parent, name, rel, meta, true)
    }

    /// `.wh..wh..opq` (the entry `rel`): the directory `parent_rel` hides the lower
    /// layers' contents.
    fn opaque_marker(&mut self, parent_rel: &[u8], rel: &[u8]) -> Result<(), UnpackError> {
        let dir = self
            .root
            .dir(parent_rel)
            .map_err(entry_err(rel, "opaque directory"))?;
        let fd = rfs::openat(
            &*dir,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno("open", parent_rel))?;
        set_opaque(&fd).map_err(entry_err(parent_rel, "set opaque"))
    }

    fn whiteout(
        &mut self,
        parent_rel: &[u8],
        target: &[u8],
        rel: &[u8],
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        if target == b".wh..opq" {
            return self.opaque_marker(parent_rel, rel);
        }
        if target.starts_with(b".wh.") {
            // Other AUFS bookkeeping (.wh..wh.plnk, .wh..wh.aufs): not content.
            return Ok(());
        }
        if target.is_empty() || target == b"." || target == b".." {
            return Err(UnpackError::Refused {
                path: display(rel),
                why: "invalid whiteout name".into(),
            });
        }
        let mut wrel = parent_rel.to_vec();
        if !wrel.is_empty() {
            wrel.push(b'/');
        }
        wrel.extend_from_slice(target);
        let parent = match self.root.dir(parent_rel) {
            Ok(fd) => fd,
            // A same-layer non-directory already hides everything below it.
            Err(e) if e.raw_os_error() == Some(Errno::NOTDIR.raw_os_error()) => return Ok(()),
            Err(e) => return Err(entry_err(rel, "parent directory")(e)),
        };
        match rfs::statat(&*parent, os(target), AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => {
                make_whiteout(&*parent, target).map_err(errno("whiteout", &wrel))?;
                self.note(&parent, target, &wrel)?;
                if self.needs_chown(meta) {
                    rfs::chownat(
                        &*parent,
                        os(target),
                        Some(uid(meta.uid)),
                        Some(gid(meta.gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(errno("chown", &wrel))?;
                }
                self.whiteouts.insert(wrel);
                Ok(())
            }
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                // Re-added earlier in this layer: keep it, hide the lower one.
                let fd = rfs::openat(
                    &*parent,
                    os(target),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(errno("open", &wrel))?;
                set_opaque(&fd).map_err(entry_err(&wrel, "set opaque"))
            }
            Ok(_) => Ok(()),
            Err(e) => Err(errno("whiteout", &wrel)(e)),
        }
    }

    /// Owner, mode and xattrs through an open fd (files, directories).
    fn fd_meta(
        &self,
        fd: &impl std::os::fd::AsFd,
        meta: &Meta,
        rel: &[u8],
        chmod: bool,
    ) -> Result<(), UnpackError> {
        if self.needs_chown(meta) {
            rfs::fchown(fd, Some(uid(meta.uid)), Some(gid(meta.gid)))
                .map_err(errno("chown", rel))?;
        }
        if chmod {
            // After chown, which clears setuid/setgid.
            rfs::fchmod(fd, Mode::from_raw_mode(meta.mode)).map_err(errno("chmod", rel))?;
        }
        for (k, v) in &meta.xattrs {
            if skip_xattr(k) {
                continue;
            }
            rfs::fsetxattr(fd, os(k), v, XattrFlags::empty()).map_err(errno("set xattr", rel))?;
        }
        Ok(())
    }

    /// Owner, mode, xattrs and mtime by name (symlinks, devices, fifos), never following
    /// the final component.
    fn at_meta(
        &self,
        parent: &OwnedFd,
        name: &[u8],
        rel: &[u8],
        meta: &Meta,
        chmod: bool,
    ) -> Result<(), UnpackError> {
        if self.needs_chown(meta) {
            rfs::chownat(
                parent,
                os(name),
                Some(uid(meta.uid)),
                Some(gid(meta.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(errno("chown", rel))?;
        }
        if chmod {
            // Not a symlink (we just made it), so following is moot.
            rfs::chmodat(
                parent,
                os(name),
                Mode::from_raw_mode(meta.mode),
                AtFlags::empty(),
            )
            .map_err(errno("chmod", rel))?;
        }
        if !meta.xattrs.is_empty() {
            // The parent fd through /proc, the last component not followed.
            let mut p = format!("/proc/self/fd/{}/", parent.as_raw_fd()).into_bytes();
            p.extend_from_slice(name);
            for (k, v) in &meta.xattrs {
                if skip_xattr(k) || (!chmod && k.starts_with(b"user.")) {
                    // Linux allows no user.* xattrs on symlinks.
                    continue;
                }
                rfs::lsetxattr(os(&p), os(k), v, XattrFlags::empty())
                    .map_err(errno("set xattr", rel))?;
            }
        }
        rfs::utimensat(
            parent,
            os(name),
            &times(meta.mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(errno("set mtime", rel))?;
        Ok(())
    }

    fn finish(mut self) -> Result<LayerStats, UnpackError> {
        // Deepest last-listed first; a directory replaced since is simply skipped.
        for (rel, t) in self.dir_times.iter().rev() {
            let fd = if rel.is_empty() {
                Ok(self.root.root_fd())
            } else {
                let (p, n) = split(rel);
                self.root.lookup_dir(p).and_then(|pfd| {
                    Ok(Arc::new(rfs::openat(
                        &pfd,
                        os(n),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )?))
                })
            };
            if let Ok(fd) = fd {
                rfs::futimens(&*fd, &times(*t)).map_err(errno("set mtime", rel))?;
            }
        }
        self.stats.lower_refs = LowerRefs {
            implicit: std::mem::take(&mut self.root.implicit),
            links: std::mem::take(&mut self.links),
            order: std::mem::take(&mut self.root.order),
        };
        Ok(self.stats)
    }
}

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

fn uid(u: u32) -> rfs::Uid {
    rfs::Uid::from_raw(u)
}

fn gid(g: u32) -> rfs::Gid {
    rfs::Gid::from_raw(g)
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

/// Would `open(O_CREAT, mode)` give exactly `mode`? Only if it has no setuid, setgid or
/// sticky bit (kept as-is only by chmod) and the process umask clears none of its bits.
fn create_mode_is_exact(mode: u32) -> bool {
    static UMASK: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    // Read, not set: umask(2) would change it for the whole process.
    let umask = UMASK.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(line.trim(), 8).ok()
    });
    match umask {
        Some(umask) => mode & 0o7000 == 0 && mode & umask == 0,
        None => false,
    }
}
