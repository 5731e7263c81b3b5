//! Partial downloads: the compressed bytes of a blob received so far, kept in
//! `ingest/<algorithm>-<hex>` so that an interrupted pull continues where it stopped.
//!
//! A pull that downloads a blob holds its ingest file under an exclusive `flock`: a
//! second pull of the same blob meanwhile downloads without keeping, and a pull that dies
//! releases the lock with its process, so the next one takes the file over. The kept
//! bytes are only ever a prefix of what was received; the blob digest, checked over the
//! whole blob when the layer is unpacked, says whether they were right. With
//! `--keep-blobs`, a completed download moves into the content store
//! ([`Store::keep_blob`]) instead of being deleted.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use rdpull_verify::Digest;
use rustix::fs::{flock, FlockOperation};
use rustix::io::Errno;

use crate::error::{io_err, StoreError};
use crate::fsutil::{disk_usage, sync_dir};
use crate::store::Store;

/// A blob's partial download, held exclusively until dropped.
#[derive(Debug)]
pub struct Ingest {
    digest: Digest,
    size: u64,
    file: File,
    path: PathBuf,
    kept: u64,
}

/// A partial download as [`Store::partial_downloads`] finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartialDownload {
    pub digest: Digest,
    /// Bytes kept.
    pub bytes: u64,
    pub modified: SystemTime,
    /// A running pull is writing it.
    pub in_use: bool,
}

impl Store {
    fn ingest_dir(&self) -> PathBuf {
        self.root().join("ingest")
    }

    fn ingest_path(&self, digest: &Digest) -> PathBuf {
        self.ingest_dir()
            .join(format!("{}-{}", digest.algorithm().name(), digest.hex()))
    }

    /// The partial download of `digest`, a blob of `size` bytes: what earlier pulls kept
    /// (nothing if they kept more than `size` bytes, which cannot be a prefix), or a new
    /// empty one. `None` when another running pull holds it.
    pub fn ingest(&self, digest: &Digest, size: u64) -> Result<Option<Ingest>, StoreError> {
        let path = self.ingest_path(digest);
        let dir = self.ingest_dir();
        std::fs::create_dir_all(&dir).map_err(io_err(dir.display()))?;
        loop {
            let file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io_err(path.display()))?;
            match flock(file.as_fd(), FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(Errno::WOULDBLOCK) => return Ok(None),
                Err(e) => return Err(io_err(path.display())(e.into())),
            }
            // The holder before us may have removed the file after we opened it: then
            // ours is a name nobody will find again, so take the one at `path`.
            let held = rustix::fs::fstat(&file).map_err(|e| io_err(path.display())(e.into()))?;
            match rustix::fs::stat(&path) {
                Ok(st) if (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino) => {}
                Ok(_) | Err(Errno::NOENT) => continue,
                Err(e) => return Err(io_err(path.display())(e.into())),
            }
            let mut kept = held.st_size as u64;
            if kept > size {
                tracing::warn!(
                    "{}: {kept} bytes kept for a blob of {size}: discarded",
                    path.display()
                );
                file.set_len(0).map_err(io_err(path.display()))?;
                kept = 0;
            }
            return Ok(Some(Ingest {
                digest: digest.clone(),
                size,
                file,
                path,
                kept,
            }));
        }
    }

    /// The layer blob `digest` of `size` bytes, if the content store keeps it whole.
    pub fn kept_blob(&self, digest: &Digest, size: u64) -> Result<Option<File>, StoreError> {
        let path = self.blob_path(digest);
        match File::open(&path) {
            Ok(f) if f.metadata().is_ok_and(|m| m.len() == size) => Ok(Some(f)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(path.display())(e)),
        }
    }

    /// Keep a completed download, whose digest the unpacker verified, in the content
    /// store: written durably, then renamed into place. A download not kept whole (a
    /// write failed on the way) is deleted instead.
    pub fn keep_blob(&self, ingest: Ingest) -> Result<(), StoreError> {
        let len = ingest
            .file
            .metadata()
            .map_err(io_err(ingest.path.display()))?
            .len();
        if len != ingest.size {
            let why = format!("{len} of {} bytes kept: not kept", ingest.size);
            let path = ingest.path.display().to_string();
            ingest.discard()?;
            return Err(io_err(path)(std::io::Error::other(why)));
        }
        let path = self.blob_path(&ingest.digest);
        let dir = path.parent().expect("blob paths have a parent");
        std::fs::create_dir_all(dir).map_err(io_err(dir.display()))?;
        ingest
            .file
            .sync_all()
            .map_err(io_err(ingest.path.display()))?;
        std::fs::rename(&ingest.path, &path).map_err(io_err(path.display()))?;
        sync_dir(dir)
    }

    /// Remove a kept blob (one that did not verify).
    pub fn remove_kept_blob(&self, digest: &Digest) -> Result<(), StoreError> {
        let path = self.blob_path(digest);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(path.display())(e)),
            _ => Ok(()),
        }
    }

    /// Every partial download on disk.
    pub fn partial_downloads(&self) -> Result<Vec<PartialDownload>, StoreError> {
        let dir = self.ingest_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(dir.display())(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(dir.display()))?;
            let Some(digest) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.replacen('-', ":", 1).parse::<Digest>().ok())
            else {
                continue;
            };
            let Ok(file) = File::open(entry.path()) else {
                continue; // removed meanwhile
            };
            let md = file.metadata().map_err(io_err(entry.path().display()))?;
            let in_use = match flock(file.as_fd(), FlockOperation::NonBlockingLockShared) {
                Ok(()) => false,
                Err(Errno::WOULDBLOCK) => true,
                Err(e) => return Err(io_err(entry.path().display())(e.into())),
            };
            out.push(PartialDownload {
                digest,
                bytes: md.len(),
                modified: md.modified().map_err(io_err(entry.path().display()))?,
                in_use,
            });
        }
        out.sort_by_key(|p| p.digest.to_string());
        Ok(out)
    }

    /// Remove the partial downloads no pull is writing that were last written more than
    /// `older_than` ago. Returns their digests and the bytes they took on disk.
    pub(crate) fn remove_partial_downloads(
        &self,
        older_than: Duration,
    ) -> Result<(Vec<Digest>, u64), StoreError> {
        let mut removed = Vec::new();
        let mut bytes = 0;
        let now = SystemTime::now();
        for p in self.partial_downloads()? {
            let old = now
                .duration_since(p.modified)
                .is_ok_and(|age| age > older_than);
            if p.in_use || !old {
                continue;
            }
            // Taken as a pull would take it, so a pull starting now is not robbed.
            let Some(ingest) = self.ingest(&p.digest, u64::MAX)? else {
                continue;
            };
            bytes += disk_usage(&ingest.path).bytes;
            ingest.discard()?;
            removed.push(p.digest);
        }
        Ok((removed, bytes))
    }
}

impl Ingest {
    /// Bytes of the blob kept from earlier pulls: the download continues from here.
    pub fn kept(&self) -> u64 {
        self.kept
    }

    /// The file: bytes `0..kept` are the blob's first bytes, and received bytes are
    /// written after them (with positioned I/O, so readers and the writer share it).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The bytes are no use (the blob is complete elsewhere, or they did not verify):
    /// delete them.
    pub fn discard(self) -> Result<(), StoreError> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io_err(self.path.display())(e))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;
    use std::time::{Duration, SystemTime};

    use rdpull_verify::Digest;

    use crate::store::tests::store;

    #[test]
    fn kept_bytes_outlive_their_pull_and_one_pull_holds_them() {
        let (_tmp, s) = store();
        let d = Digest::sha256_of(b"blob");
        let first = s.ingest(&d, 100).unwrap().unwrap();
        assert_eq!(first.kept(), 0);
        first.file().write_all_at(b"0123456789", 0).unwrap();
        // Held: a second pull of the blob keeps nothing, and prune leaves it alone.
        assert!(s.ingest(&d, 100).unwrap().is_none());
        let listed = s.partial_downloads().unwrap();
        assert_eq!(
            (listed.len(), listed[0].bytes, listed[0].in_use),
            (1, 10, true)
        );
        assert!(s
            .remove_partial_downloads(Duration::ZERO)
            .unwrap()
            .0
            .is_empty());
        drop(first);

        let again = s.ingest(&d, 100).unwrap().unwrap();
        assert_eq!(again.kept(), 10);
        drop(again);
        // More than the blob's size cannot be its prefix.
        assert_eq!(s.ingest(&d, 5).unwrap().unwrap().kept(), 0);
    }

    #[test]
    fn prune_removes_partial_downloads_a_day_old() {
        let (_tmp, s) = store();
        let (old, fresh) = (Digest::sha256_of(b"old"), Digest::sha256_of(b"fresh"));
        for d in [&old, &fresh] {
            let i = s.ingest(d, 100).unwrap().unwrap();
            i.file().write_all_at(&[7; 50], 0).unwrap();
        }
        let i = s.ingest(&old, 100).unwrap().unwrap();
        i.file()
            .set_modified(SystemTime::now() - Duration::from_secs(2 * 24 * 3600))
            .unwrap();
        drop(i);
        let report = s.prune().unwrap();
        assert_eq!(report.partial_downloads, [old]);
        assert!(report.bytes_freed >= 50);
        let left: Vec<Digest> = s
            .partial_downloads()
            .unwrap()
            .into_iter()
            .map(|p| p.digest)
            .collect();
        assert_eq!(left, [fresh]);
    }
}
