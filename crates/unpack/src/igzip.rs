//! Streaming gzip decompression with ISA-L's igzip (through `isal-sys`).
//!
//! Inflate is the largest single cost of a gzip pull, and igzip inflates about 1.2x as
//! fast as zlib-rs on this project's layers (`cargo bench --bench stages`, README
//! "Performance"). Reads multi-member streams, as Go's gzip reader does for containerd and
//! Docker; each member's CRC-32 and length are checked by igzip.

use std::io::{self, BufRead, Read};

use isal_sys::igzip_lib as isal;

/// A gzip decoder over a buffered reader, which it consumes only as far as it has read.
pub struct IgzipDecoder<R> {
    inner: R,
    // Boxed: the state holds igzip's tables and window (tens of KiB).
    state: Box<isal::inflate_state>,
    /// The last member ended and no input follows.
    done: bool,
}

impl<R: BufRead> IgzipDecoder<R> {
    pub fn new(inner: R) -> Self {
        let mut state = Box::<isal::inflate_state>::new_uninit();
        // SAFETY: isal_inflate_init initialises every field of the state it is given.
        let mut state = unsafe {
            isal::isal_inflate_init(state.as_mut_ptr());
            state.assume_init()
        };
        state.crc_flag = isal::IGZIP_GZIP;
        IgzipDecoder {
            inner,
            state,
            done: false,
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

fn member_finished(state: &isal::inflate_state) -> bool {
    state.block_state == isal::isal_block_state_ISAL_BLOCK_FINISH
}

impl<R: BufRead> Read for IgzipDecoder<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() || self.done {
            return Ok(0);
        }
        // igzip counts in u32.
        let out_len = out.len().min(u32::MAX as usize);
        loop {
            let input = self.inner.fill_buf()?;
            if member_finished(&self.state) {
                if input.is_empty() {
                    self.done = true;
                    return Ok(0);
                }
                // Another member follows.
                // SAFETY: the state was initialised by isal_inflate_init.
                unsafe { isal::isal_inflate_reset(&mut *self.state) };
                self.state.crc_flag = isal::IGZIP_GZIP;
            }
            let in_len = input.len().min(u32::MAX as usize);
            self.state.next_in = input.as_ptr().cast_mut();
            self.state.avail_in = in_len as u32;
            self.state.next_out = out.as_mut_ptr();
            self.state.avail_out = out_len as u32;
            // SAFETY: next_in/avail_in and next_out/avail_out describe live buffers of those
            // lengths; igzip only reads the input (the cast to *mut is its API's).
            let ret = unsafe { isal::isal_inflate(&mut *self.state) };
            let consumed = in_len - self.state.avail_in as usize;
            let produced = out_len - self.state.avail_out as usize;
            // Input igzip has not taken stays in `inner` for the next call, or for the
            // caller to hash and drain after the stream.
            self.state.next_in = std::ptr::null_mut();
            self.state.avail_in = 0;
            self.inner.consume(consumed);
            if ret < 0 {
                return Err(inflate_error(ret));
            }
            if produced > 0 {
                return Ok(produced);
            }
            if member_finished(&self.state) {
                continue;
            }
            if in_len == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream ends inside a gzip member",
                ));
            }
            if consumed == 0 {
                // igzip buffers partial input internally, so this means it is stuck.
                return Err(io::Error::other(format!(
                    "igzip made no progress (state {})",
                    self.state.block_state
                )));
            }
        }
    }
}

fn inflate_error(ret: i32) -> io::Error {
    let what = match ret {
        isal::ISAL_INVALID_BLOCK => "invalid deflate block",
        isal::ISAL_INVALID_SYMBOL => "invalid deflate symbol",
        isal::ISAL_INVALID_LOOKBACK => "back-reference before the start of the stream",
        isal::ISAL_INVALID_WRAPPER => "invalid gzip header",
        isal::ISAL_UNSUPPORTED_METHOD => "unsupported gzip compression method",
        isal::ISAL_INCORRECT_CHECKSUM => "CRC-32 or length mismatch in the gzip trailer",
        other => return io::Error::other(format!("igzip error {other}")),
    };
    io::Error::new(io::ErrorKind::InvalidData, what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn noise(n: usize) -> Vec<u8> {
        // Half random, half repetitive: both literal and match paths of the decoder.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if (i / 4096) % 2 == 0 {
                    x as u8
                } else {
                    (i % 251) as u8
                }
            })
            .collect()
    }

    /// Feeds `data` in pieces of `step` bytes, to cross every internal buffer boundary.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn decode(blob: &[u8], step: usize, out_step: usize) -> io::Result<Vec<u8>> {
        let input = io::BufReader::with_capacity(step, Trickle { data: blob, step });
        let mut d = IgzipDecoder::new(input);
        let mut out = Vec::new();
        let mut buf = vec![0; out_step];
        loop {
            match d.read(&mut buf)? {
                0 => return Ok(out),
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    #[test]
    fn round_trips_in_any_piece_sizes() {
        let data = noise(300_000);
        let blob = gzip(&data);
        for (step, out_step) in [(1, 7), (13, 4096), (4096, 1), (1 << 20, 1 << 20)] {
            assert_eq!(
                decode(&blob, step, out_step).unwrap(),
                data,
                "{step} {out_step}"
            );
        }
    }

    #[test]
    fn reads_every_member() {
        let (a, b) = (noise(70_000), b"second member".to_vec());
        let mut blob = gzip(&a);
        blob.extend(gzip(&b));
        blob.extend(gzip(b""));
        let want = [a, b].concat();
        assert_eq!(decode(&blob, 1000, 333).unwrap(), want);
        assert_eq!(decode(&blob, 1, 65536).unwrap(), want);
    }

    #[test]
    fn leaves_nothing_unconsumed_after_the_last_member() {
        let blob = gzip(&noise(10_000));
        let mut d = IgzipDecoder::new(&blob[..]);
        io::copy(&mut d, &mut io::sink()).unwrap();
        assert!(d.into_inner().is_empty());
    }

    #[test]
    fn truncation_is_an_error() {
        let blob = gzip(&noise(100_000));
        for cut in [5, 20, blob.len() / 2, blob.len() - 4, blob.len() - 1] {
            let e = decode(&blob[..cut], 4096, 4096).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}: {e}");
            assert_eq!(e.to_string(), "stream ends inside a gzip member");
        }
    }

    /// Damaged streams: whatever igzip makes of them, zlib (flate2) agrees. Both accept
    /// the same streams with the same output, and both refuse the rest.
    #[test]
    fn damaged_streams_agree_with_zlib() {
        let data = noise(20_000);
        let mut blob = gzip(&data);
        blob.extend(gzip(b"tail member"));
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut refused, mut accepted) = (0, 0);
        for _ in 0..3000 {
            let mut bad = blob.clone();
            match next() % 3 {
                0 => {
                    let i = next() as usize % bad.len();
                    bad[i] ^= 1 << (next() % 8);
                }
                1 => {
                    let i = next() as usize % bad.len();
                    bad[i] = next() as u8;
                }
                _ => bad.truncate(next() as usize % bad.len()),
            }
            let ours = decode(&bad, 1000, 4096);
            let mut zlib = Vec::new();
            let theirs = flate2::read::MultiGzDecoder::new(&bad[..]).read_to_end(&mut zlib);
            match (ours, theirs) {
                (Ok(ours), Ok(_)) => {
                    assert_eq!(ours, zlib);
                    accepted += 1;
                }
                (Err(_), Err(_)) => refused += 1,
                (ours, theirs) => panic!("igzip {:?}, zlib {:?}", ours.map(|v| v.len()), theirs),
            }
        }
        // Most damage is caught (by the CRC if nothing else); a bit flipped in the
        // header's mtime, say, is not damage a decoder can see.
        assert!(
            refused > 2500 && accepted > 0,
            "{refused} refused, {accepted} accepted"
        );
    }

    #[test]
    fn corruption_is_named() {
        let data = noise(100_000);
        let blob = gzip(&data);

        let mut bad = blob.clone();
        bad[0] = 0x1e;
        assert_eq!(
            decode(&bad, 4096, 4096).unwrap_err().to_string(),
            "invalid gzip header"
        );

        // A flipped bit in the CRC-32 of the trailer.
        let mut bad = blob.clone();
        let crc = bad.len() - 8;
        bad[crc] ^= 1;
        assert_eq!(
            decode(&bad, 4096, 4096).unwrap_err().to_string(),
            "CRC-32 or length mismatch in the gzip trailer"
        );

        // Garbage after a complete member is read as a member that is not gzip.
        let mut bad = blob.clone();
        bad.extend_from_slice(&[0; 32]);
        assert_eq!(
            decode(&bad, 4096, 4096).unwrap_err().to_string(),
            "invalid gzip header"
        );
    }
}
