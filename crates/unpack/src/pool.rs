//! Small files created by worker threads.
//!
//! Each file goes to the worker that owns its parent directory (by hash), so files of
//! one directory are created in tar order by one thread: two threads creating in the
//! same directory only queue on its lock, while different directories proceed in
//! parallel (two concurrent GNU tar runs into different directories of this VM's ext4:
//! 1.6x the files per second of one). Bytes in flight are bounded per layer.

use std::collections::hash_map::DefaultHasher;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;

use rustix::fs::{self as rfs, Mode, OFlags};
use rustix::io::Errno;

use crate::apply::{is_zero, start_writeback, times, WRITEBACK_MIN};
use crate::root::os;
use crate::small::{Finished, SmallFile};

const WORKERS: usize = 2;
/// File bytes queued or being written, at most, per layer.
const MAX_BYTES: usize = 4 << 20;
/// Files queued or being written, at most, per layer (bounds the per-file overhead).
const MAX_FILES: usize = 2048;
/// Files go to a worker in batches, and come back in batches: one wake-up per file
/// cost 14% of a multi:latest pull's CPU in context switches.
const BATCH_FILES: usize = 64;
const BATCH_BYTES: usize = 256 << 10;

pub(crate) struct FilePool {
    queues: Vec<Sender<Vec<SmallFile>>>,
    /// The batch being filled for each worker, and its bytes.
    pending: Vec<(Vec<SmallFile>, usize)>,
    finished: Receiver<Vec<Finished>>,
    workers: Vec<JoinHandle<()>>,
    files: usize,
    bytes: usize,
}

impl FilePool {
    pub(crate) fn new() -> Option<FilePool> {
        let (done_tx, finished) = channel();
        let mut queues = Vec::new();
        let mut workers = Vec::new();
        for i in 0..WORKERS {
            let (tx, rx) = channel::<Vec<SmallFile>>();
            let done = done_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("rdpull-create{i}"))
                .spawn(move || {
                    for batch in rx {
                        let out = batch
                            .into_iter()
                            .map(|file| Finished {
                                failed: create(&file).err(),
                                file,
                                mtime_set: true,
                            })
                            .collect();
                        if done.send(out).is_err() {
                            return;
                        }
                    }
                })
                .ok()?;
            queues.push(tx);
            workers.push(handle);
        }
        Some(FilePool {
            pending: (0..WORKERS).map(|_| (Vec::new(), 0)).collect(),
            queues,
            finished,
            workers,
            files: 0,
            bytes: 0,
        })
    }

    pub(crate) fn push(&mut self, file: SmallFile, done: &mut Vec<Finished>) {
        while self.files >= MAX_FILES || self.bytes + file.data.len() > MAX_BYTES {
            self.wait(done);
        }
        let mut h = DefaultHasher::new();
        crate::path::split(&file.rel).0.hash(&mut h);
        let worker = (h.finish() % self.queues.len() as u64) as usize;
        self.files += 1;
        self.bytes += file.data.len();
        let (batch, bytes) = &mut self.pending[worker];
        *bytes += file.data.len();
        batch.push(file);
        if batch.len() >= BATCH_FILES || *bytes >= BATCH_BYTES {
            self.send(worker, done);
        }
        while let Ok(batch) = self.finished.try_recv() {
            self.landed(done, batch);
        }
    }

    /// Wait for at least one batch to finish.
    pub(crate) fn wait(&mut self, done: &mut Vec<Finished>) {
        for worker in 0..self.queues.len() {
            self.send(worker, done);
        }
        match self.finished.recv() {
            Ok(batch) => self.landed(done, batch),
            Err(_) => unreachable!("the pool holds a sender while files are in flight"),
        }
        while let Ok(batch) = self.finished.try_recv() {
            self.landed(done, batch);
        }
    }

    fn send(&mut self, worker: usize, done: &mut Vec<Finished>) {
        let (batch, _) = std::mem::take(&mut self.pending[worker]);
        if batch.is_empty() {
            return;
        }
        if let Err(back) = self.queues[worker].send(batch) {
            // The worker is gone (it panicked): its files fail with it.
            let failed = back
                .0
                .into_iter()
                .map(|file| Finished {
                    file,
                    failed: Some(("create", Errno::IO)),
                    mtime_set: true,
                })
                .collect();
            self.landed(done, failed);
        }
    }

    fn landed(&mut self, done: &mut Vec<Finished>, batch: Vec<Finished>) {
        for f in batch {
            self.files -= 1;
            self.bytes -= f.file.data.len();
            done.push(f);
        }
    }
}

impl Drop for FilePool {
    fn drop(&mut self) {
        self.queues.clear();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// What the plain writer does for a file, from one buffer: create exclusively with its
/// final mode, write (an all-zero file stays a hole), set the size and mtime.
fn create(f: &SmallFile) -> Result<(), (&'static str, Errno)> {
    let fd = rfs::openat(
        &*f.parent,
        os(f.name.as_bytes()),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(f.mode),
    )
    .map_err(|e| ("create", e))?;
    let file = File::from(fd);
    if !f.data.is_empty() {
        if is_zero(&f.data) {
            rfs::ftruncate(&file, f.data.len() as u64).map_err(|e| ("truncate", e))?;
        } else {
            file.write_all_at(&f.data, 0)
                .map_err(|e| ("write", Errno::from_io_error(&e).unwrap_or(Errno::IO)))?;
            if f.data.len() as u64 >= WRITEBACK_MIN {
                start_writeback(&file);
            }
        }
    }
    rfs::futimens(&file, &times(f.mtime)).map_err(|e| ("set mtime", e))
}
