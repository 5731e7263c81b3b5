//! containerd's filter syntax (`pkg/filters`), for List.
//!
//! A filter is selectors joined by `,`, all of which must match; a List request's several
//! filters match when any does. A selector is `fieldpath`, `fieldpath==value` or
//! `fieldpath!=value`; a field or value is bare or a Go-quoted string. Snapshots have the
//! fields `name`, `parent`, `kind` and `labels.<key>`. Regular expressions (`~=`) are
//! refused as an invalid argument rather than matched wrongly.

use crate::error::SnapshotterError;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Present,
    Equal(String),
    NotEqual(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Selector {
    path: Vec<String>,
    op: Op,
}

/// One parsed filter: all its selectors must match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter(Vec<Selector>);

/// What a filter looks at: a field path's value, if the object has that field.
pub trait Fields {
    fn field(&self, path: &[String]) -> Option<String>;
}

impl Filter {
    pub fn parse(text: &str) -> Result<Filter, SnapshotterError> {
        let invalid =
            |why: &str| SnapshotterError::InvalidArgument(format!("filter {text:?}: {why}"));
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let mut selectors = Vec::new();
        if text.trim().is_empty() {
            return Ok(Filter(selectors));
        }
        loop {
            p.skip_space();
            let mut path = vec![p.field().map_err(|w| invalid(&w))?];
            while p.eat(".") {
                path.push(p.field().map_err(|w| invalid(&w))?);
            }
            p.skip_space();
            let op = if p.eat("==") {
                Op::Equal(p.value().map_err(|w| invalid(&w))?)
            } else if p.eat("!=") {
                Op::NotEqual(p.value().map_err(|w| invalid(&w))?)
            } else if p.eat("~=") {
                return Err(invalid("regular expressions (~=) are not supported"));
            } else {
                Op::Present
            };
            selectors.push(Selector { path, op });
            p.skip_space();
            if p.i == p.s.len() {
                return Ok(Filter(selectors));
            }
            if !p.eat(",") {
                return Err(invalid(&format!("unexpected input at byte {}", p.i)));
            }
        }
    }

    pub fn matches(&self, object: &impl Fields) -> bool {
        self.0.iter().all(|s| {
            let value = object.field(&s.path);
            match &s.op {
                Op::Present => value.is_some(),
                Op::Equal(v) => value.as_deref() == Some(v),
                Op::NotEqual(v) => value.as_deref().unwrap_or("") != v,
            }
        })
    }
}

/// Filters of one List request: any may match; none means everything.
pub fn parse_any(texts: &[String]) -> Result<Vec<Filter>, SnapshotterError> {
    texts.iter().map(|t| Filter::parse(t)).collect()
}

pub fn any_matches(filters: &[Filter], object: &impl Fields) -> bool {
    filters.is_empty() || filters.iter().any(|f| f.matches(object))
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, token: &str) -> bool {
        if self.s[self.i..].starts_with(token.as_bytes()) {
            self.i += token.len();
            true
        } else {
            false
        }
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn field(&mut self) -> Result<String, String> {
        match self.peek() {
            Some(b'"') => self.quoted(),
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.i;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
                {
                    self.i += 1;
                }
                Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
            }
            _ => Err(format!("expected a field name at byte {}", self.i)),
        }
    }

    fn value(&mut self) -> Result<String, String> {
        self.skip_space();
        if self.peek() == Some(b'"') {
            return self.quoted();
        }
        let start = self.i;
        while self
            .peek()
            .is_some_and(|c| c != b',' && !c.is_ascii_whitespace())
        {
            self.i += 1;
        }
        if start == self.i {
            return Err(format!("expected a value at byte {start}"));
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    /// A Go double-quoted string: the escapes containerd's `strconv.Unquote` accepts
    /// for the characters labels use.
    fn quoted(&mut self) -> Result<String, String> {
        let start = self.i;
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let c = self
                .peek()
                .ok_or_else(|| format!("unterminated quote at byte {start}"))?;
            self.i += 1;
            match c {
                b'"' => return Ok(String::from_utf8_lossy(&out).into_owned()),
                b'\\' => {
                    let e = self
                        .peek()
                        .ok_or_else(|| format!("unterminated quote at byte {start}"))?;
                    self.i += 1;
                    out.push(match e {
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'r' => b'\r',
                        b'\\' | b'"' | b'\'' | b'/' => e,
                        _ => {
                            return Err(format!(
                                "unsupported escape \\{} at byte {}",
                                e as char,
                                self.i - 2
                            ))
                        }
                    });
                }
                _ => out.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    struct Obj(BTreeMap<&'static str, &'static str>);

    impl Fields for Obj {
        fn field(&self, path: &[String]) -> Option<String> {
            self.0.get(path.join(".").as_str()).map(|s| s.to_string())
        }
    }

    fn obj(pairs: &[(&'static str, &'static str)]) -> Obj {
        Obj(pairs.iter().copied().collect())
    }

    #[test]
    fn containerds_remote_snapshot_lookup() {
        // As containerd's metadata snapshotter writes it (core/metadata/snapshot.go).
        let f = Filter::parse(
            r#"labels."containerd.io/snapshot.ref"==sha256:abc,parent=="default/4/sha256:def""#,
        )
        .unwrap();
        let hit = obj(&[
            ("labels.containerd.io/snapshot.ref", "sha256:abc"),
            ("parent", "default/4/sha256:def"),
        ]);
        let other_parent = obj(&[
            ("labels.containerd.io/snapshot.ref", "sha256:abc"),
            ("parent", "default/5/sha256:def"),
        ]);
        assert!(f.matches(&hit));
        assert!(!f.matches(&other_parent));
        // An empty parent is written as "" (a snapshot's parent field is always there).
        let root =
            Filter::parse(r#"labels."containerd.io/snapshot.ref"==sha256:abc,parent=="""#).unwrap();
        assert!(root.matches(&obj(&[
            ("labels.containerd.io/snapshot.ref", "sha256:abc"),
            ("parent", "")
        ])));
    }

    #[test]
    fn and_within_a_filter_or_across_filters() {
        let a = obj(&[("kind", "committed"), ("labels.x", "1")]);
        let b = obj(&[("kind", "active")]);
        let fs = parse_any(&["kind==committed,labels.x==1".into(), "kind==active".into()]).unwrap();
        assert!(any_matches(&fs, &a) && any_matches(&fs, &b));
        let one = parse_any(&["kind==committed,labels.x!=1".into()]).unwrap();
        assert!(!any_matches(&one, &a) && !any_matches(&one, &b));
        let present = parse_any(&["labels.x".into()]).unwrap();
        assert!(any_matches(&present, &a) && !any_matches(&present, &b));
        let absent_ne = parse_any(&["labels.x!=2".into()]).unwrap();
        assert!(any_matches(&absent_ne, &b));
        assert!(any_matches(&[], &b));
        assert!(any_matches(&parse_any(&[String::new()]).unwrap(), &b));
    }

    #[test]
    fn bad_filters_name_what_is_wrong() {
        for (text, why) in [
            (
                "labels.x~=a.*",
                "regular expressions (~=) are not supported",
            ),
            ("labels.\"x", "unterminated quote at byte 7"),
            ("kind==", "expected a value at byte 6"),
            ("==a", "expected a field name at byte 0"),
            ("kind==a b", "unexpected input at byte 8"),
        ] {
            let e = Filter::parse(text).unwrap_err();
            assert_eq!(e.to_string(), format!("filter {text:?}: {why}"));
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
        }
    }
}
