//! Early writeback of large files, so that the `syncfs` before a layer commits finds most
//! of the layer already on disk: the disk works while the rest of the layer is still
//! being decompressed.
#![allow(unsafe_code)] // sync_file_range(2) has no safe wrapper in rustix.

use std::fs::File;
use std::os::fd::AsRawFd;

/// Files at least this large have their writeback started as soon as they are written.
pub(crate) const WRITEBACK_MIN: u64 = 32 << 10;

/// Start writing `file`'s dirty pages to disk without waiting for them.
pub(crate) fn start_writeback(file: &File) {
    // SAFETY: sync_file_range only reads its integer arguments; the fd is valid for the
    // duration of the call because `file` is borrowed. A failure only loses the head start.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}
