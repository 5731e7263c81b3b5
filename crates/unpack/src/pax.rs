//! The PAX records rdpull honours beyond what the tar crate applies itself (path,
//! linkpath and size): ownership and mtime overrides, xattrs, and GNU sparse maps.

use std::io::{self, Read};

/// Metadata an entry's PAX header overrides or adds.
#[derive(Default, Debug)]
pub(crate) struct PaxMeta {
    pub uid: Option<u64>,
    pub gid: Option<u64>,
    pub mtime: Option<(i64, u32)>,
    /// An `mtime` record that is not a time, ignored (GNU tar warns and goes on).
    pub bad_mtime: Option<String>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub sparse: Option<SparseHeader>,
}

/// A GNU sparse file described in PAX records (formats 0.0, 0.1 and 1.0).
#[derive(Debug, Default)]
pub(crate) struct SparseHeader {
    pub major: u32,
    pub minor: u32,
    pub name: Option<Vec<u8>>,
    pub real_size: Option<u64>,
    /// Formats 0.x carry the map in the header; 1.0 puts it at the start of the data.
    pub map: Vec<(u64, u64)>,
}

/// Data extents larger than this many are refused (the map lives in memory).
const MAX_SPARSE_EXTENTS: usize = 1 << 20;

/// A PAX record's value as a decimal number.
fn pax_number(key: &[u8], val: &[u8]) -> io::Result<u64> {
    std::str::from_utf8(val)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            bad(format!(
                "PAX {}: not a number",
                String::from_utf8_lossy(key)
            ))
        })
}

impl SparseHeader {
    /// Take one `GNU.sparse.*` record. Returns whether it marks the entry as sparse
    /// (`numbytes` only completes an `offset`, which did).
    fn record(
        &mut self,
        key: &[u8],
        val: &[u8],
        pending_offset: &mut Option<u64>,
    ) -> io::Result<bool> {
        let num = || pax_number(key, val);
        match key {
            b"GNU.sparse.major" => self.major = num()? as u32,
            b"GNU.sparse.minor" => self.minor = num()? as u32,
            b"GNU.sparse.name" => self.name = Some(val.to_vec()),
            b"GNU.sparse.realsize" | b"GNU.sparse.size" => self.real_size = Some(num()?),
            b"GNU.sparse.map" => {
                let nums = std::str::from_utf8(val)
                    .map_err(|_| bad("GNU.sparse.map: not text".into()))?
                    .split(',')
                    .map(|s| s.trim().parse::<u64>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| bad("GNU.sparse.map: not numbers".into()))?;
                if nums.len() % 2 != 0 || nums.len() / 2 > MAX_SPARSE_EXTENTS {
                    return Err(bad("GNU.sparse.map: malformed".into()));
                }
                self.map = nums.chunks(2).map(|c| (c[0], c[1])).collect();
            }
            // Format 0.0: repeated offset/numbytes pairs.
            b"GNU.sparse.offset" => *pending_offset = Some(num()?),
            b"GNU.sparse.numbytes" => {
                let off = pending_offset
                    .take()
                    .ok_or_else(|| bad("GNU.sparse.numbytes without offset".into()))?;
                if self.map.len() >= MAX_SPARSE_EXTENTS {
                    return Err(bad("GNU sparse map too large".into()));
                }
                self.map.push((off, num()?));
                return Ok(false);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl PaxMeta {
    pub(crate) fn parse<'a, I>(records: I) -> io::Result<PaxMeta>
    where
        I: Iterator<Item = io::Result<tar::PaxExtension<'a>>>,
    {
        let mut m = PaxMeta::default();
        let mut sparse = SparseHeader::default();
        let mut is_sparse = false;
        let mut pending_offset: Option<u64> = None;
        for r in records {
            let r = r?;
            let key = r.key_bytes();
            let val = r.value_bytes();
            match key {
                b"uid" => m.uid = Some(pax_number(key, val)?),
                b"gid" => m.gid = Some(pax_number(key, val)?),
                b"mtime" => match parse_time(val) {
                    Ok(t) => m.mtime = Some(t),
                    Err(_) => m.bad_mtime = Some(String::from_utf8_lossy(val).into_owned()),
                },
                _ if key.starts_with(b"GNU.sparse.") => {
                    is_sparse |= sparse.record(key, val, &mut pending_offset)?;
                }
                _ => {
                    if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                        m.xattrs.push((name.to_vec(), val.to_vec()));
                    }
                }
            }
        }
        if is_sparse {
            m.sparse = Some(sparse);
        }
        Ok(m)
    }
}

/// A PAX time: decimal seconds with an optional fraction, possibly negative.
fn parse_time(v: &[u8]) -> io::Result<(i64, u32)> {
    let s = std::str::from_utf8(v).map_err(|_| bad("PAX mtime: not text".into()))?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().map_err(|_| bad(format!("PAX mtime {s:?}")))?;
    let mut nanos: u32 = 0;
    for (i, c) in frac.chars().take(9).enumerate() {
        let d = c
            .to_digit(10)
            .ok_or_else(|| bad(format!("PAX mtime {s:?}")))?;
        nanos += d * 10u32.pow(8 - i as u32);
    }
    Ok(if !neg {
        (secs, nanos)
    } else if nanos == 0 {
        (-secs, 0)
    } else {
        (-secs - 1, 1_000_000_000 - nanos)
    })
}

/// Read the sparse map that starts the data of a format 1.0 entry: decimal numbers, one
/// per line (count, then offset/size pairs), padded to a 512-byte block.
pub(crate) fn read_sparse_map_v1(r: &mut impl Read) -> io::Result<(Vec<(u64, u64)>, u64)> {
    let mut consumed = 0u64;
    let mut block = [0u8; 512];
    let mut pos = 512;
    let mut next_number = |consumed: &mut u64| -> io::Result<u64> {
        let mut n: u64 = 0;
        let mut digits = 0;
        loop {
            if pos == 512 {
                r.read_exact(&mut block)?;
                *consumed += 512;
                pos = 0;
            }
            let b = block[pos];
            pos += 1;
            match b {
                b'0'..=b'9' if digits < 20 => {
                    n = n
                        .checked_mul(10)
                        .and_then(|n| n.checked_add((b - b'0') as u64))
                        .ok_or_else(|| bad("sparse map number overflows".into()))?;
                    digits += 1;
                }
                b'\n' if digits > 0 => return Ok(n),
                _ => return Err(bad("malformed sparse map".into())),
            }
        }
    };
    let count = next_number(&mut consumed)? as usize;
    if count > MAX_SPARSE_EXTENTS {
        return Err(bad("sparse map too large".into()));
    }
    let mut map = Vec::with_capacity(count);
    for _ in 0..count {
        let off = next_number(&mut consumed)?;
        let len = next_number(&mut consumed)?;
        map.push((off, len));
    }
    Ok((map, consumed))
}

fn bad(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time(b"1700000000").unwrap(), (1700000000, 0));
        assert_eq!(
            parse_time(b"1700000000.123456789").unwrap(),
            (1700000000, 123456789)
        );
        assert_eq!(parse_time(b"1.5").unwrap(), (1, 500_000_000));
        assert_eq!(parse_time(b"-1.5").unwrap(), (-2, 500_000_000));
        assert!(parse_time(b"x").is_err());
    }

    #[test]
    fn sparse_map_v1() {
        let mut data = b"2\n0\n4\n1048576\n8\n".to_vec();
        data.resize(512, 0);
        data.extend_from_slice(b"DATA");
        let mut r = &data[..];
        let (map, used) = read_sparse_map_v1(&mut r).unwrap();
        assert_eq!(map, vec![(0, 4), (1048576, 8)]);
        assert_eq!(used, 512);
        assert_eq!(r, b"DATA");
        let mut junk = &b"2\nx\n"[..];
        assert!(read_sparse_map_v1(&mut junk).is_err());
    }
}
