//! One entry's header, read as GNU tar and Go's archive/tar read real archives.
//!
//! tar-rs frames the stream (sizes, checksums, long-name and PAX members); the fields
//! the applier uses are read here, leniently where real tools are lenient:
//! - numeric fields may be padded with NULs or spaces on either side, or left empty
//!   (read as 0), and may use the base-256 form (high bit set) of GNU and star;
//! - a name or link target holding a NUL ends at it, as C-based tar tools read it;
//! - an unparsable PAX `mtime` is ignored with a warning (the header's mtime is used),
//!   as GNU tar does.

use std::io::{self, Read};
use std::ops::Range;

use crate::error::UnpackError;
use crate::path::{clean, display};
use crate::pax::{PaxMeta, SparseHeader};

/// What the applier sets on a created path.
#[derive(Debug)]
pub(crate) struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, u32),
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// An entry's header: its name as written (the PAX sparse name wins), link target,
/// metadata (PAX values win over the header's), device numbers and sparse map.
#[derive(Debug)]
pub(crate) struct EntryHeader {
    pub raw_path: Vec<u8>,
    pub link: Vec<u8>,
    pub meta: Meta,
    pub dev: (u32, u32),
    pub sparse: Option<SparseHeader>,
}

/// Byte ranges of the numeric fields in a 512-byte header block (v7, ustar and GNU agree).
const MODE: Range<usize> = 100..108;
const UID: Range<usize> = 108..116;
const GID: Range<usize> = 116..124;
const MTIME: Range<usize> = 136..148;
const DEV_MAJOR: Range<usize> = 329..337;
const DEV_MINOR: Range<usize> = 337..345;

pub(crate) fn read_header<R: Read>(e: &mut tar::Entry<'_, R>) -> Result<EntryHeader, UnpackError> {
    let pax = match e.pax_extensions().map_err(UnpackError::Tar)? {
        Some(records) => PaxMeta::parse(records).map_err(UnpackError::Tar)?,
        None => PaxMeta::default(),
    };
    let raw_path = match pax.sparse.as_ref().and_then(|s| s.name.clone()) {
        Some(name) => name,
        None => e.path_bytes().into_owned(),
    };
    let raw_path = until_nul(raw_path);
    let link = until_nul(
        e.link_name_bytes()
            .map(|c| c.into_owned())
            .unwrap_or_default(),
    );
    let fields = Fields {
        block: e.header().as_bytes(),
        rel: clean(&raw_path),
    };
    if let Some(value) = &pax.bad_mtime {
        let path = display(&fields.rel);
        tracing::warn!("{path}: ignoring the unparsable PAX mtime {value:?}");
    }
    let mtime = match pax.mtime {
        Some(t) => t,
        None => number(&fields.block[MTIME])
            .map(|t| (t, 0))
            .ok_or_else(|| fields.bad("mtime", &fields.block[MTIME]))?,
    };
    let meta = Meta {
        mode: fields.id(MODE, None, "mode")? & 0o7777,
        uid: fields.id(UID, pax.uid, "uid")?,
        gid: fields.id(GID, pax.gid, "gid")?,
        mtime,
        xattrs: pax.xattrs,
    };
    Ok(EntryHeader {
        dev: (
            fields.id(DEV_MAJOR, None, "devmajor")?,
            fields.id(DEV_MINOR, None, "devminor")?,
        ),
        raw_path,
        link,
        meta,
        sparse: pax.sparse,
    })
}

/// A header block and its entry's cleaned path, for reading fields with errors that
/// name the entry.
struct Fields<'a> {
    block: &'a [u8; 512],
    rel: Vec<u8>,
}

impl Fields<'_> {
    /// A 32-bit field (mode, ids, device numbers); a PAX value wins over the header's.
    fn id(&self, range: Range<usize>, pax: Option<u64>, what: &str) -> Result<u32, UnpackError> {
        match pax {
            Some(n) => u32::try_from(n).map_err(|_| self.bad(what, n.to_string().as_bytes())),
            None => number(&self.block[range.clone()])
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| self.bad(what, &self.block[range])),
        }
    }

    fn bad(&self, what: &str, value: &[u8]) -> UnpackError {
        UnpackError::Entry {
            path: display(&self.rel),
            op: "header",
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{what} {:?} is not a valid number",
                    String::from_utf8_lossy(value)
                ),
            ),
        }
    }
}

fn until_nul(mut name: Vec<u8>) -> Vec<u8> {
    if let Some(i) = name.iter().position(|&b| b == 0) {
        name.truncate(i);
    }
    name
}

/// A numeric header field: octal text padded with NULs or spaces (empty is 0), or the
/// base-256 form, a two's-complement number after the marker bit. None if it is neither
/// or does not fit.
pub(crate) fn number(field: &[u8]) -> Option<i64> {
    match field.first() {
        Some(&first) if first & 0x80 != 0 => {
            let negative = first & 0x40 != 0;
            let inv = if negative { 0xff } else { 0 };
            let mut x: u64 = 0;
            for (i, &b) in field.iter().enumerate() {
                let b = if i == 0 { (b ^ inv) & 0x7f } else { b ^ inv };
                if x >> 56 != 0 {
                    return None;
                }
                x = x << 8 | u64::from(b);
            }
            let x = i64::try_from(x).ok()?;
            Some(if negative { !x } else { x })
        }
        _ => {
            let pad = |b: &u8| *b == 0 || *b == b' ';
            let start = field.iter().position(|b| !pad(b)).unwrap_or(field.len());
            let end = field.iter().rposition(|b| !pad(b)).map_or(start, |i| i + 1);
            let digits = &field[start..end];
            if digits.is_empty() {
                return Some(0);
            }
            if !digits.iter().all(|b| (b'0'..=b'7').contains(b)) {
                return None;
            }
            i64::from_str_radix(std::str::from_utf8(digits).ok()?, 8).ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_gnu_tar_and_go_read_them() {
        let cases: &[(&[u8], Option<i64>)] = &[
            (b"0000644\0", Some(0o644)),
            (b"   644 \0", Some(0o644)),
            (b"644\0\0\0\0\0", Some(0o644)),
            (b"\0\x000644", Some(0o644)),
            (b"\0 644  \0", Some(0o644)),
            (b"\0\0\0\0\0\0\0\0", Some(0)),
            (b"        ", Some(0)),
            (b"", Some(0)),
            (b"0000648\0", None),
            (b"64 4\0\0\0\0", None),
            (b"abc", None),
            (b"\x80\0\0\0\0\0\0\x01", Some(1)),
            (b"\x80\0\0\0\0\0\x01\0", Some(256)),
            (b"\xff\xff\xff\xff\xff\xff\xff\xff", Some(-1)),
            (b"\xff\xff\xff\xff\xff\xff\xff\xfe", Some(-2)),
            (b"\x80\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", None),
        ];
        for (field, want) in cases {
            assert_eq!(number(field), *want, "{field:?}");
        }
    }

    #[test]
    fn names_end_at_a_nul() {
        assert_eq!(until_nul(b"0123456789\0junk".to_vec()), b"0123456789");
        assert_eq!(until_nul(b"plain".to_vec()), b"plain");
        assert_eq!(until_nul(b"\0".to_vec()), b"");
    }
}
