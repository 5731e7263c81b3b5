//! Lexical cleaning of tar entry names, and the byte paths every `*at` call takes.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// Clean a tar entry name into a path relative to the layer root: leading `/` dropped,
/// `.` and empty components removed, `..` popping a component but never going above the
/// root (as `filepath.Join("/", name)` in containerd, or openat2's RESOLVE_IN_ROOT, treat
/// it). The result has no leading or trailing `/`; the root itself is empty.
pub fn clean(name: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join(&b'/')
}

/// Split a cleaned path into (parent, name). The root has no name.
pub(crate) fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&[], rel),
    }
}

/// A path for messages: `/` plus the cleaned path, invalid UTF-8 replaced.
pub(crate) fn display(rel: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(rel))
}

/// A path's bytes as an `OsStr`, for the `*at` calls.
pub(crate) fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_like_a_rooted_join() {
        let cases: &[(&str, &str)] = &[
            ("a/b/c", "a/b/c"),
            ("./a/./b/", "a/b"),
            ("/abs/file", "abs/file"),
            ("../escape", "escape"),
            ("a/../../escape-mid.txt", "escape-mid.txt"),
            ("../../../../etc/hostname", "etc/hostname"),
            ("a//b", "a/b"),
            ("./", ""),
            ("..", ""),
            ("a/..", ""),
            ("..double-dot-prefix", "..double-dot-prefix"),
        ];
        for (i, o) in cases {
            assert_eq!(String::from_utf8(clean(i.as_bytes())).unwrap(), *o, "{i}");
        }
    }

    #[test]
    fn splits() {
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
        assert_eq!(display(b"a/b"), "/a/b");
    }
}
