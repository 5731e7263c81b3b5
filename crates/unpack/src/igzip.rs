//! Streaming gzip decompression with ISA-L's igzip (through `isal-sys`).
//!
//! Inflate is the largest single cost of a gzip pull, and igzip inflates about 1.13x as
//! fast as zlib-rs on this project's layers (`cargo bench --bench stages`, README
//! "Performance"). Reads multi-member streams, as Go's gzip reader does for containerd and
//! Docker. Member headers (RFC 1952) are parsed here: igzip 2.31 misreads a header that
//! has several optional fields and arrives in pieces. igzip inflates each member's deflate
//! data and checks its trailer.

use std::io::{self, BufRead, Read};

use isal_sys::igzip_lib as isal;

/// A gzip decoder over a buffered reader, which it consumes only as far as it has read.
pub struct IgzipDecoder<R> {
    inner: R,
    // Boxed: the state holds igzip's tables and window (tens of KiB).
    state: Box<isal::inflate_state>,
    at: Position,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Position {
    /// Before a member header: the first, or one after a finished member.
    Between {
        first: bool,
    },
    InMember,
    /// After the last member.
    End,
}

impl<R: BufRead> IgzipDecoder<R> {
    pub fn new(inner: R) -> Self {
        let mut state = Box::<isal::inflate_state>::new_uninit();
        // SAFETY: isal_inflate_init initialises every field of the state it is given.
        let state = unsafe {
            isal::isal_inflate_init(state.as_mut_ptr());
            state.assume_init()
        };
        IgzipDecoder {
            inner,
            state,
            at: Position::Between { first: true },
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Read the next member's header, if another member follows, and get igzip ready
    /// for its deflate data.
    fn start_member(&mut self, first: bool) -> io::Result<()> {
        // An empty blob is not a gzip stream; the end after a member is the normal end.
        if !first && self.inner.fill_buf()?.is_empty() {
            self.at = Position::End;
            return Ok(());
        }
        skip_member_header(&mut self.inner)?;
        // SAFETY: the state was initialised by isal_inflate_init.
        unsafe { isal::isal_inflate_reset(&mut *self.state) };
        // Raw deflate, then the CRC-32 and length trailer, which igzip checks.
        self.state.crc_flag = isal::ISAL_GZIP_NO_HDR_VER;
        self.at = Position::InMember;
        Ok(())
    }
}

impl<R: BufRead> Read for IgzipDecoder<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        // igzip counts in u32.
        let out_len = out.len().min(u32::MAX as usize);
        loop {
            match self.at {
                Position::End => return Ok(0),
                Position::Between { first } => {
                    self.start_member(first)?;
                    continue;
                }
                Position::InMember => {}
            }
            let input = self.inner.fill_buf()?;
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
            // Input igzip has not taken stays in `inner`, for the next member or for the
            // caller to hash and drain after the stream.
            self.state.next_in = std::ptr::null_mut();
            self.state.avail_in = 0;
            self.inner.consume(consumed);
            if ret < 0 {
                return Err(inflate_error(ret));
            }
            if self.state.block_state == isal::isal_block_state_ISAL_BLOCK_FINISH {
                self.at = Position::Between { first: false };
            }
            if produced > 0 {
                return Ok(produced);
            }
            if self.at != Position::InMember {
                continue;
            }
            if in_len == 0 {
                return Err(truncated());
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

fn truncated() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "stream ends inside a gzip member",
    )
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Consume one gzip member header (RFC 1952, section 2.3) from `r`: the fixed ten bytes,
/// then the optional extra field, name, comment and header CRC that its flags announce.
fn skip_member_header<R: BufRead>(r: &mut R) -> io::Result<()> {
    let mut h = HeaderBytes { r, crc: !0 };
    let mut fixed = [0u8; 10];
    for b in &mut fixed {
        *b = h.next()?;
    }
    if fixed[..2] != [0x1f, 0x8b] {
        return Err(invalid("invalid gzip header"));
    }
    if fixed[2] != 8 {
        return Err(invalid("unsupported gzip compression method"));
    }
    let flags = fixed[3];
    if flags & 0xe0 != 0 {
        return Err(invalid("invalid gzip header (reserved flags set)"));
    }
    if flags & 0x04 != 0 {
        let len = u16::from_le_bytes([h.next()?, h.next()?]);
        for _ in 0..len {
            h.next()?;
        }
    }
    for field in [0x08, 0x10] {
        if flags & field != 0 {
            while h.next()? != 0 {}
        }
    }
    if flags & 0x02 != 0 {
        let want = !h.crc as u16;
        let got = u16::from_le_bytes([h.next()?, h.next()?]);
        if got != want {
            return Err(invalid("gzip header checksum mismatch"));
        }
    }
    Ok(())
}

/// Header bytes one at a time (headers are a few bytes; names are short), with the
/// running CRC-32 that the optional header checksum covers.
struct HeaderBytes<'a, R> {
    r: &'a mut R,
    crc: u32,
}

impl<R: BufRead> HeaderBytes<'_, R> {
    fn next(&mut self) -> io::Result<u8> {
        let b = *self.r.fill_buf()?.first().ok_or_else(truncated)?;
        self.r.consume(1);
        // Bitwise CRC-32 (IEEE, reflected): only ever run over header bytes.
        self.crc ^= u32::from(b);
        for _ in 0..8 {
            self.crc = (self.crc >> 1) ^ (0xedb8_8320 & (self.crc & 1).wrapping_neg());
        }
        Ok(b)
    }
}

fn inflate_error(ret: i32) -> io::Error {
    invalid(match ret {
        isal::ISAL_INVALID_BLOCK => "invalid deflate block",
        isal::ISAL_INVALID_SYMBOL => "invalid deflate symbol",
        isal::ISAL_INVALID_LOOKBACK => "back-reference before the start of the stream",
        isal::ISAL_INCORRECT_CHECKSUM => "CRC-32 or length mismatch in the gzip trailer",
        other => return io::Error::other(format!("igzip error {other}")),
    })
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

    /// A member with name, comment and extra field, as gzip(1) and pigz write for named
    /// files (FHCRC aside, which flate2 does not write).
    fn gzip_with_header_fields(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::GzBuilder::new()
            .filename("layer.tar")
            .comment("made by a test")
            .extra(vec![b'R', b'D', 4, 0, 1, 2, 3, 4])
            .mtime(1_700_000_000)
            .write(Vec::new(), flate2::Compression::default());
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
    fn skips_optional_header_fields() {
        let data = noise(50_000);
        let blob = gzip_with_header_fields(&data);
        for step in 1..40 {
            assert_eq!(
                decode(&blob, step, 1000).unwrap(),
                data,
                "input in {step}-byte pieces"
            );
        }
        assert_eq!(decode(&blob, 4096, 4096).unwrap(), data);
    }

    #[test]
    fn checks_the_optional_header_crc() {
        let data = noise(10_000);
        let plain = gzip(&data);
        // The same member with FHCRC: the low 16 bits of the CRC-32 of the header bytes.
        let mut header = plain[..10].to_vec();
        header[3] |= 0x02;
        let mut crc = flate2::Crc::new();
        crc.update(&header);
        let mut blob = header;
        blob.extend_from_slice(&(crc.sum() as u16).to_le_bytes());
        blob.extend_from_slice(&plain[10..]);
        assert_eq!(decode(&blob, 1, 4096).unwrap(), data);
        let mut zlib = Vec::new();
        flate2::read::MultiGzDecoder::new(&blob[..])
            .read_to_end(&mut zlib)
            .unwrap();
        assert_eq!(zlib, data);

        blob[10] ^= 0xff;
        assert_eq!(
            decode(&blob, 4096, 4096).unwrap_err().to_string(),
            "gzip header checksum mismatch"
        );
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
        // A member with every optional header field, then a plain one.
        let mut blob = gzip_with_header_fields(&data);
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
            // A third of the damage lands in the first member's header.
            let span = if next() % 3 == 0 { 40 } else { bad.len() };
            match next() % 3 {
                0 => {
                    let i = next() as usize % span;
                    bad[i] ^= 1 << (next() % 8);
                }
                1 => {
                    let i = next() as usize % span;
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
            refused > 2000 && accepted > 0,
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
