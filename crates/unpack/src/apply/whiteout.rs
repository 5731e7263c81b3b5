//! Whiteout entries: `.wh.NAME` as a 0:0 device, `.wh..wh..opq` as the opaque xattr, and
//! a whiteout of a name this layer made itself as an opaque directory.

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::meta::{gid, uid};
use super::{entry_err, errno, Applier};
use crate::error::UnpackError;
use crate::files::open_dir;
use crate::header::Meta;
use crate::overlay::{make_whiteout, set_opaque};
use crate::path::{display, os};

impl Applier {
    /// `.wh..wh..opq` (the entry `rel`): the directory `parent_rel` hides the lower
    /// layers' contents.
    pub(super) fn opaque_marker(
        &mut self,
        parent_rel: &[u8],
        rel: &[u8],
    ) -> Result<(), UnpackError> {
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

    pub(super) fn whiteout(
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
                let fd = open_dir(&*parent, target).map_err(errno("open", &wrel))?;
                set_opaque(&fd).map_err(entry_err(&wrel, "set opaque"))
            }
            Ok(_) => Ok(()),
            Err(e) => Err(errno("whiteout", &wrel)(e)),
        }
    }
}
