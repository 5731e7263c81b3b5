//! Regular files: data copied with holes left where the tar has zeros (GNU sparse maps
//! too), created with their final mode when nothing would change it afterwards.

use std::fs::File;
use std::io::{self, Read};

use rustix::fs::{self as rfs, Mode, OFlags};

use super::{entry_err, errno, Applier};
use crate::error::UnpackError;
use crate::files::{copy_with_holes, times};
use crate::header::Meta;
use crate::path::{os, split};
use crate::pax::{read_sparse_map_v1, SparseHeader};
use crate::writeback::{start_writeback, WRITEBACK_MIN};

impl Applier {
    pub(super) fn file<R: Read>(
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
    pub(super) fn mode_at_create(&self, meta: &Meta) -> bool {
        !self.needs_chown(meta) && create_mode_is_exact(meta.mode)
    }

    /// Copy `limit` bytes (or all) of `r` into `file` at `offset`, leaving holes where
    /// whole buffers are zero. Returns the end offset and the end of the last write.
    pub(super) fn copy(
        &mut self,
        file: &File,
        r: &mut impl Read,
        offset: u64,
        limit: Option<u64>,
    ) -> io::Result<(u64, u64)> {
        copy_with_holes(&mut self.buf, file, r, offset, limit)
    }

    pub(super) fn copy_sparse(
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
