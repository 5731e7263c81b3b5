//! The overlayfs on-disk format of a layer directory, in one place for the writer (the
//! tar applier) and the readers (flattening in `rdpull-snapshot`).
//!
//! overlayfs reads two markers from an upper or lower directory: a character device
//! with device number 0:0 is a *whiteout* (the path is deleted from the layers below),
//! and the `trusted.overlay.opaque=y` xattr on a directory makes it *opaque* (nothing of
//! the lower directories of that name shows through). Other `trusted.overlay.*` xattrs
//! are overlayfs's own bookkeeping and are never taken from an image.

use std::io;
use std::os::fd::AsFd;

use rustix::fs::{self as rfs, FileType, Mode, Stat, XattrFlags};

use crate::path::os;

/// The xattr that marks an opaque directory.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// The prefix of every xattr that overlayfs reserves for itself.
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";

/// Is `st` a whiteout (a 0:0 character device)?
pub fn is_whiteout(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

/// Create the whiteout `name` in the directory `parent`.
pub fn make_whiteout(parent: &impl AsFd, name: &[u8]) -> rustix::io::Result<()> {
    rfs::mknodat(
        parent,
        os(name),
        FileType::CharacterDevice,
        Mode::empty(),
        0,
    )
}

/// Mark the directory `dir` opaque.
pub fn set_opaque(dir: &impl AsFd) -> io::Result<()> {
    Ok(rfs::fsetxattr(
        dir,
        OPAQUE_XATTR,
        b"y",
        XattrFlags::empty(),
    )?)
}

/// Is the directory `dir` opaque?
pub fn is_opaque(dir: &impl AsFd) -> bool {
    let mut v = [0u8; 2];
    matches!(rfs::fgetxattr(dir, OPAQUE_XATTR, &mut v), Ok(1) if v[0] == b'y')
}

/// Is `name` an xattr of overlayfs's own (opaque, redirect, metacopy, …)? A layer must
/// not forge these, and a flattened tree must not carry them.
pub fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(OVERLAY_XATTR_PREFIX)
}
