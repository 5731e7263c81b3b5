//! Applying one layer's tar stream to its own directory, in overlayfs format.
//!
//! Whiteouts become what overlayfs reads: `.wh.NAME` a 0:0 character device `NAME`,
//! `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on its directory. Because the
//! layer directory holds only this layer, a whiteout hides lower layers only, wherever it
//! stands in the tar: a whiteout next to a same-layer entry of that name turns into an
//! opaque directory (or nothing, for a non-directory, which hides the lower path anyway).
//!
//! This module reads entries and makes directories; the other kinds are `file`, `link`
//! (symlinks, hard links, device nodes) and `whiteout`, and `meta` sets what the headers
//! say of owners, modes, xattrs and times.

mod file;
mod link;
mod meta;
mod whiteout;

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use rustix::fs::{self as rfs, FileType, Mode};
use rustix::io::Errno;
use tar::EntryType;

use crate::error::UnpackError;
use crate::files::{clear_slot, open_dir, times, Previous};
use crate::header::{read_header, EntryHeader, Meta};
use crate::options::ApplyOptions;
use crate::overlay::set_opaque;
use crate::path::{clean, display, os, split};
use crate::record::{DeferredLink, LowerRefs};
use crate::root::LayerRoot;

/// Size of the copy buffer for file data.
const COPY_BUF: usize = 256 << 10;

/// tar-rs's error for long-name or PAX headers that end the archive with no member after
/// them. GNU tar and Go ignore such a header; `dangling_extension_headers_are_ignored`
/// pins the text, so an upgrade that rewords it fails there.
const DANGLING_EXTENSION: &str =
    "members found describing a future member but no future member found";

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
        let fd = open_dir(&*parent, name).map_err(errno("open", rel))?;
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

    fn finish(mut self) -> Result<LayerStats, UnpackError> {
        // Deepest last-listed first; a directory replaced since is simply skipped.
        for (rel, t) in self.dir_times.iter().rev() {
            let fd = if rel.is_empty() {
                Ok(self.root.root_fd())
            } else {
                let (p, n) = split(rel);
                self.root
                    .lookup_dir(p)
                    .and_then(|pfd| Ok(Arc::new(open_dir(&pfd, n)?)))
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
