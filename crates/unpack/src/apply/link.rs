//! Symlinks, hard links and device nodes. A hard link to a file that is not in this
//! layer is deferred: a placeholder stands at its name until settling links it.

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::{entry_err, errno, Applier};
use crate::error::UnpackError;
use crate::header::Meta;
use crate::overlay::is_whiteout;
use crate::path::{clean, display, os, split};
use crate::record::DeferredLink;

impl Applier {
    pub(super) fn symlink(
        &mut self,
        rel: &[u8],
        target: &[u8],
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let parent = self.parent_dir(rel)?;
        let name = split(rel).1;
        self.create(&parent, name, rel, "symlink", |p, n| {
            rfs::symlinkat(os(target), p, os(n))
        })?;
        self.at_meta(&parent, name, rel, meta, false)
    }

    pub(super) fn hardlink(&mut self, rel: &[u8], target: &[u8]) -> Result<(), UnpackError> {
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
    pub(super) fn defer_link(&mut self, rel: &[u8], target: Vec<u8>) -> Result<(), UnpackError> {
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

    pub(super) fn special(
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
}
