//! Small new regular files handed off the applying thread.
//!
//! Creating a file costs ext4 about 25 µs, far more than the syscalls around it, and
//! the tar stream is read by one thread. So small files (≤ 64 KiB, no xattrs, no chown,
//! a mode the umask keeps) can be given to a writer that creates them elsewhere while
//! the applying thread parses on: worker threads ([`crate::pool`]) or io_uring
//! ([`crate::uring`]). Which one is used was decided by measurement (README).
//!
//! Ordering is kept here, the same for both writers: a file whose path, or an
//! ancestor's, is still in flight waits until every file has landed, and the applier
//! empties the writer before any other kind of entry. A file whose name turns out to
//! be taken is returned to the applier, which redoes it the plain way with the same
//! result.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use rustix::io::Errno;

use crate::pool::FilePool;
use crate::uring::FileRing;

/// How small regular files are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmallFileWriter {
    /// On the applying thread, like every other entry.
    Inline,
    /// By two worker threads per layer, sharded by directory.
    Threads,
    /// By io_uring chains (plain calls where io_uring is unavailable).
    IoUring,
}

/// A file handed to a writer.
pub(crate) struct SmallFile {
    pub parent: Arc<OwnedFd>,
    pub name: CString,
    pub rel: Vec<u8>,
    pub data: Vec<u8>,
    pub mode: u32,
    pub mtime: (i64, u32),
}

/// A file a writer is done with: `failed` names the first step that did not succeed.
pub(crate) struct Finished {
    pub file: SmallFile,
    pub failed: Option<(&'static str, Errno)>,
    /// The writer set the mtime itself (io_uring cannot).
    pub mtime_set: bool,
}

enum Backend {
    Pool(FilePool),
    Ring(Box<FileRing>),
}

pub(crate) struct SmallFiles {
    backend: Backend,
    /// Paths in flight.
    paths: HashSet<Vec<u8>>,
}

impl SmallFiles {
    /// A writer of the kind asked for; `None` for `Inline`, or when it cannot be set up.
    pub(crate) fn new(kind: SmallFileWriter) -> Option<SmallFiles> {
        let backend = match kind {
            SmallFileWriter::Inline => return None,
            SmallFileWriter::Threads => Backend::Pool(FilePool::new()?),
            SmallFileWriter::IoUring => Backend::Ring(Box::new(FileRing::new()?)),
        };
        Some(SmallFiles {
            backend,
            paths: HashSet::new(),
        })
    }

    /// Is `rel`, or any directory above it, a file still in flight?
    pub(crate) fn conflicts(&self, rel: &[u8]) -> bool {
        if self.paths.is_empty() {
            return false;
        }
        let mut end = rel.len();
        loop {
            if self.paths.contains(&rel[..end]) {
                return true;
            }
            match rel[..end].iter().rposition(|&b| b == b'/') {
                Some(i) => end = i,
                None => return false,
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Hand `file` over; files finished meanwhile are appended to `done`.
    pub(crate) fn push(&mut self, file: SmallFile, done: &mut Vec<Finished>) {
        self.paths.insert(file.rel.clone());
        let from = done.len();
        match &mut self.backend {
            Backend::Pool(p) => p.push(file, done),
            Backend::Ring(r) => r.push(file, done),
        }
        self.landed(&done[from..]);
    }

    /// Wait until every file has finished.
    pub(crate) fn drain(&mut self, done: &mut Vec<Finished>) {
        while !self.paths.is_empty() {
            let from = done.len();
            match &mut self.backend {
                Backend::Pool(p) => p.wait(done),
                Backend::Ring(r) => r.wait(done),
            }
            self.landed(&done[from..]);
        }
    }

    fn landed(&mut self, finished: &[Finished]) {
        for f in finished {
            self.paths.remove(&f.file.rel);
        }
    }
}
