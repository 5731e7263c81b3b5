//! Small regular files created through io_uring instead of four blocking syscalls each.
//!
//! A file goes in as one linked chain (`openat` into a direct descriptor, `write`,
//! `close`). The kernel cannot create a file without blocking, so it runs each chain on
//! an io-wq worker: the applying thread moves on to the next tar entry while the
//! previous files are being created, on whichever core is free. The mtime has no
//! io_uring operation and must follow the write, so it is set with one `utimensat`
//! when the chain completes.
//!
//! Ordering is kept by [`crate::small`].

use std::os::fd::AsRawFd;

use io_uring::{opcode, squeue, types, IoUring};
use rustix::io::Errno;

use crate::small::{Finished, SmallFile};

/// Chains in flight at most; each holds one direct-descriptor slot.
const SLOTS: u32 = 64;

struct InFlight {
    file: SmallFile,
    ops_left: u8,
    failed: Option<(&'static str, Errno)>,
}

pub(crate) struct FileRing {
    ring: IoUring,
    free: Vec<u32>,
    slots: Vec<Option<InFlight>>,
    unsubmitted: usize,
}

const OPS: [&str; 3] = ["create", "write", "close"];

impl FileRing {
    /// A ring, or `None` where io_uring or direct descriptors are unavailable (old
    /// kernels, `kernel.io_uring_disabled`, seccomp): the caller then uses plain calls.
    pub(crate) fn new() -> Option<FileRing> {
        let ring = IoUring::new(SLOTS * 4).ok()?;
        ring.submitter().register_files_sparse(SLOTS).ok()?;
        Some(FileRing {
            ring,
            free: (0..SLOTS).rev().collect(),
            slots: (0..SLOTS).map(|_| None).collect(),
            unsubmitted: 0,
        })
    }

    /// Queue `file`; chains that finished meanwhile go to `done`.
    pub(crate) fn push(&mut self, file: SmallFile, done: &mut Vec<Finished>) {
        if self.free.is_empty() {
            self.wait(done);
        }
        let slot = self.free.pop().expect("a slot was reaped");
        let dest = types::DestinationSlot::try_from_slot_target(slot).expect("slot in range");
        // No O_CLOEXEC: a direct descriptor is never in the fd table, and the kernel
        // refuses the flag for one.
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let mut entries =
            vec![
                opcode::OpenAt::new(types::Fd(file.parent.as_raw_fd()), file.name.as_ptr())
                    .file_index(Some(dest))
                    .flags(flags)
                    .mode(file.mode)
                    .build()
                    .flags(squeue::Flags::IO_LINK)
                    .user_data(u64::from(slot) << 2),
            ];
        if !file.data.is_empty() {
            entries.push(
                opcode::Write::new(
                    types::Fixed(slot),
                    file.data.as_ptr(),
                    file.data.len() as u32,
                )
                .offset(0)
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(u64::from(slot) << 2 | 1),
            );
        }
        entries.push(
            opcode::Close::new(types::Fixed(slot))
                .build()
                .user_data(u64::from(slot) << 2 | 2),
        );
        self.slots[slot as usize] = Some(InFlight {
            ops_left: entries.len() as u8,
            file,
            failed: None,
        });
        // SAFETY: the path and buffer the entries point to live in `self.slots` until
        // every one of the chain's completions has been reaped.
        unsafe {
            if self.ring.submission().push_multiple(&entries).is_err() {
                self.submit(0);
                self.ring
                    .submission()
                    .push_multiple(&entries)
                    .expect("the queue has room for a chain once submitted");
            }
        }
        self.unsubmitted += 1;
        // Hand chains to the kernel in small batches: one syscall for several files,
        // but soon enough that the workers are never idle for long.
        if self.unsubmitted >= 4 {
            self.submit(0);
        }
        self.collect(done);
    }

    /// Wait for at least one chain to finish.
    pub(crate) fn wait(&mut self, done: &mut Vec<Finished>) {
        let before = done.len();
        while done.len() == before {
            self.submit(1);
            self.collect(done);
        }
    }

    fn submit(&mut self, want: usize) {
        loop {
            match self.ring.submit_and_wait(want) {
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // EBUSY: completions must be reaped first; the caller does.
                Err(_) => break,
            }
        }
        self.unsubmitted = 0;
    }

    fn collect(&mut self, done: &mut Vec<Finished>) {
        let completions: Vec<(u64, i32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (ud, res) in completions {
            let slot = (ud >> 2) as usize;
            let op = (ud & 3) as usize;
            let f = self.slots[slot]
                .as_mut()
                .expect("completion for a live slot");
            if res < 0 && f.failed.is_none() {
                f.failed = Some((OPS[op], Errno::from_raw_os_error(-res)));
            } else if op == 1 && res >= 0 && res as usize != f.file.data.len() && f.failed.is_none()
            {
                f.failed = Some(("write", Errno::IO));
            }
            f.ops_left -= 1;
            if f.ops_left == 0 {
                let f = self.slots[slot].take().expect("live slot");
                self.free.push(slot as u32);
                done.push(Finished {
                    file: f.file,
                    failed: f.failed,
                    mtime_set: false,
                });
            }
        }
    }
}

impl Drop for FileRing {
    fn drop(&mut self) {
        // The kernel may still read paths and buffers owned by `slots`.
        let mut done = Vec::new();
        while self.free.len() < SLOTS as usize {
            self.wait(&mut done);
        }
    }
}
