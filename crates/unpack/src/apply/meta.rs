//! Owners, modes, xattrs and times from the tar headers, by fd where the entry is open
//! and by name (never following the last component) where it is not.

use std::os::fd::{AsRawFd, OwnedFd};

use rustix::fs::{self as rfs, AtFlags, Mode, XattrFlags};

use super::{errno, Applier};
use crate::error::UnpackError;
use crate::files::{skip_xattr, times};
use crate::header::Meta;
use crate::path::os;

impl Applier {
    pub(super) fn needs_chown(&self, meta: &Meta) -> bool {
        self.options.same_owner
            && ((meta.uid, meta.gid) != (self.euid, self.egid) || self.setgid_dirs)
    }

    /// Owner, mode and xattrs through an open fd (files, directories).
    pub(super) fn fd_meta(
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
    pub(super) fn at_meta(
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
}

pub(super) fn uid(u: u32) -> rfs::Uid {
    rfs::Uid::from_raw(u)
}

pub(super) fn gid(g: u32) -> rfs::Gid {
    rfs::Gid::from_raw(g)
}
