//! A bounded, buffer-recycling byte pipe between two threads of one layer's unpacking.
//!
//! The decompressing thread fills fixed-size buffers and sends them; the applying thread
//! reads them through [`PipeReader`] and hands each one back once consumed, so a layer
//! allocates `depth + 2` buffers however large it is. Memory per layer is bounded by
//! `(depth + 2) × buffer`.

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};

/// One filled buffer; bytes past `len` are stale.
struct Chunk {
    buf: Vec<u8>,
    len: usize,
}

/// Why the writing side stopped early.
#[derive(Debug)]
pub(crate) enum PumpError {
    /// The source failed; the reader has been told.
    Read(io::Error),
    /// The reader is gone (it failed or finished early).
    Closed,
}

pub(crate) struct PipeWriter {
    tx: SyncSender<io::Result<Chunk>>,
    recycled: Receiver<Vec<u8>>,
    buffer: usize,
}

pub(crate) struct PipeReader {
    rx: Receiver<io::Result<Chunk>>,
    recycle: SyncSender<Vec<u8>>,
    current: Chunk,
    pos: usize,
}

/// A pipe holding at most `depth` filled buffers of `buffer` bytes in flight.
pub(crate) fn pipe(depth: usize, buffer: usize) -> (PipeWriter, PipeReader) {
    let (tx, rx) = sync_channel(depth);
    // Room for every buffer that can exist, so handing one back never blocks.
    let (recycle, recycled) = sync_channel(depth + 2);
    (
        PipeWriter {
            tx,
            recycled,
            buffer,
        },
        PipeReader {
            rx,
            recycle,
            current: Chunk {
                buf: Vec::new(),
                len: 0,
            },
            pos: 0,
        },
    )
}

impl PipeWriter {
    /// Copy all of `source` into the pipe. Each buffer is filled completely (except the
    /// last) so the reader wakes once per buffer, not once per small read.
    pub(crate) fn pump(&self, source: &mut impl Read) -> Result<u64, PumpError> {
        let mut total = 0u64;
        loop {
            let mut buf = self
                .recycled
                .try_recv()
                .unwrap_or_else(|_| vec![0; self.buffer]);
            let mut len = 0;
            while len < buf.len() {
                match source.read(&mut buf[len..]) {
                    Ok(0) => break,
                    Ok(n) => len += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // The reader must not take a clean end for the end of the data.
                        let told = io::Error::new(e.kind(), e.to_string());
                        let _ = self.tx.send(Err(told));
                        return Err(PumpError::Read(e));
                    }
                }
            }
            if len == 0 {
                return Ok(total);
            }
            total += len as u64;
            let last = len < buf.len();
            self.tx
                .send(Ok(Chunk { buf, len }))
                .map_err(|_| PumpError::Closed)?;
            if last {
                return Ok(total);
            }
        }
    }
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.current.len {
            let next = match self.rx.recv() {
                Ok(chunk) => chunk?,
                Err(_) => return Ok(0), // the writer is done
            };
            let used = std::mem::replace(&mut self.current, next);
            self.pos = 0;
            if !used.buf.is_empty() {
                match self.recycle.try_send(used.buf) {
                    Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
                }
            }
        }
        let n = out.len().min(self.current.len - self.pos);
        out[..n].copy_from_slice(&self.current.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that returns odd-sized reads, then optionally an error.
    struct Jagged {
        data: Vec<u8>,
        pos: usize,
        fail_at_end: bool,
    }

    impl Read for Jagged {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos == self.data.len() {
                return if self.fail_at_end {
                    Err(io::Error::new(io::ErrorKind::InvalidData, "corrupt"))
                } else {
                    Ok(0)
                };
            }
            let n = buf.len().min(777).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    #[test]
    fn bytes_arrive_in_order_with_recycled_buffers() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (w, mut r) = pipe(2, 4096);
        let mut src = Jagged {
            data: data.clone(),
            pos: 0,
            fail_at_end: false,
        };
        let got = std::thread::scope(|s| {
            let reader = s.spawn(move || {
                let mut v = Vec::new();
                r.read_to_end(&mut v).unwrap();
                v
            });
            assert_eq!(w.pump(&mut src).unwrap(), data.len() as u64);
            drop(w);
            reader.join().unwrap()
        });
        assert_eq!(got, data);
    }

    #[test]
    fn a_source_error_reaches_the_reader() {
        let (w, mut r) = pipe(2, 1024);
        let mut src = Jagged {
            data: vec![1; 3000],
            pos: 0,
            fail_at_end: true,
        };
        let read = std::thread::scope(|s| {
            let reader = s.spawn(move || {
                let mut v = Vec::new();
                r.read_to_end(&mut v).map(|_| v.len())
            });
            assert!(matches!(w.pump(&mut src), Err(PumpError::Read(_))));
            drop(w);
            reader.join().unwrap()
        });
        assert_eq!(read.unwrap_err().to_string(), "corrupt");
    }

    #[test]
    fn a_gone_reader_stops_the_writer() {
        let (w, r) = pipe(1, 16);
        drop(r);
        let mut src = io::repeat(0).take(1 << 20);
        assert!(matches!(w.pump(&mut src), Err(PumpError::Closed)));
    }
}
