//! Small filesystem helpers of the store: durability and removal.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{flock, FlockOperation};

use crate::error::{io_err, StoreError};

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir.display()))
}

/// `rm -rf`, quiet when nothing is there.
pub(crate) fn remove_dir(dir: &Path) -> Result<(), StoreError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(dir.display())(e)),
        _ => Ok(()),
    }
}

pub(crate) fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Space a tree takes: blocks allocated, and inodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskUsage {
    pub bytes: u64,
    pub inodes: u64,
}

/// What `path` and everything below it take, hard links counted once, symlinks not
/// followed (containerd's `fs.DiskUsage`); what cannot be read counts as nothing.
pub fn disk_usage(path: &Path) -> DiskUsage {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = DiskUsage::default();
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
            continue;
        }
        total.bytes += md.blocks() * 512;
        total.inodes += 1;
        if md.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&p) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

/// Open (creating) the lock file `path` and take `op` on it; released when the file is
/// dropped.
pub(crate) fn lock_file(path: &Path, op: FlockOperation) -> Result<File, StoreError> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err(path.display()))?;
    flock(file.as_fd(), op).map_err(|e| io_err(path.display())(e.into()))?;
    Ok(file)
}
