//! Real-world tar archives: Go's archive/tar test corpus (odd but real files from many
//! tar writers, from Debian's golang-1.19-src package, which scripts/test installs).
//! Every archive GNU tar extracts must apply to the tree GNU tar makes, except the
//! refusals the README lists with their reasons; what GNU tar refuses must fail cleanly.
//! Needs root, as rdpull does (owners, devices).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::fs::SeekFrom;
use rustix::io::Errno;

use rdpull_testkit::skip_unless_root;
use rdpull_testkit::testbed::tree_manifest;
use rdpull_unpack::{apply_tar, ApplyOptions};

/// The Go release whose corpus the lists below are written for, and which scripts/test
/// installs. Newer releases add and compress archives, so whichever Go happens to be
/// installed is not taken.
const GO_CORPUS: &str = "go-1.19";

/// The corpus: `$RDPULL_TAR_CORPUS`, or archive/tar's testdata of Go 1.19's source.
fn corpus() -> PathBuf {
    if let Some(dir) = std::env::var_os("RDPULL_TAR_CORPUS") {
        return dir.into();
    }
    pinned_corpus(Path::new("/usr/share")).unwrap_or_else(|| {
        panic!(
            "Go's archive/tar corpus is missing: apt-get install golang-1.19-src \
             (scripts/test does), or set RDPULL_TAR_CORPUS"
        )
    })
}

/// `share/go-1.19/src/archive/tar/testdata`, if it is there.
fn pinned_corpus(share: &Path) -> Option<PathBuf> {
    let dir = share.join(GO_CORPUS).join("src/archive/tar/testdata");
    dir.is_dir().then_some(dir)
}

#[test]
fn the_corpus_is_go_1_19_s_whatever_else_is_installed() {
    let share = tempfile::tempdir().unwrap();
    let testdata = |go: &str| share.path().join(go).join("src/archive/tar/testdata");
    std::fs::create_dir_all(testdata("go-1.26")).unwrap();
    assert_eq!(pinned_corpus(share.path()), None);
    std::fs::create_dir_all(testdata("go-1.19")).unwrap();
    std::fs::create_dir_all(testdata("go-1.21")).unwrap();
    assert_eq!(pinned_corpus(share.path()), Some(testdata("go-1.19")));
}

/// Archives whose result differs from GNU tar's on purpose, with rdpull's exact error.
const REFUSED: &[(&str, &str)] = &[
    // Two long names for one member: tar-rs refuses the parser-differential class behind
    // CVE-2025-62518 (GNU tar and Go take the last header; another parser may not).
    (
        "gnu-multi-hdrs.tar",
        "tar stream: two long name entries describing the same member",
    ),
    (
        "pax-multi-hdrs.tar",
        "tar stream: two pax extensions entries describing the same member",
    ),
];

/// Archives whose PAX `mtime` is not a time: rdpull keeps the header's mtime (and warns);
/// GNU tar reads the record's leading digits ("999xxx..." as 999 s), Go refuses the file.
const MTIME_FROM_HEADER: &[(&str, &str)] = &[("pax-bad-mtime-file.tar", "1442282516000000000")];

/// Archives GNU tar refuses that rdpull applies, as Go's archive/tar reads them.
const ACCEPTED_BEYOND_GNU: &[&str] = &[
    // Global PAX records (ignored by rdpull and Go; GNU tar fails on the empty 'path').
    "pax-global-records.tar",
];

fn gnu_tar(archive: &Path, dir: &Path) -> bool {
    Command::new("tar")
        .args([
            "--extract",
            "--numeric-owner",
            "--same-owner",
            "--same-permissions",
        ])
        .args(["--xattrs", "--xattrs-include=*"])
        .arg("--file")
        .arg(archive)
        .arg("--directory")
        .arg(dir)
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn go_corpus_applies_as_gnu_tar_extracts_it() {
    skip_unless_root!();
    let mut archives: Vec<PathBuf> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tar"))
        .collect();
    archives.sort();
    assert!(archives.len() >= 40, "corpus too small: {archives:?}");
    let mut same = 0;
    for archive in &archives {
        let name = archive.file_name().unwrap().to_str().unwrap();
        let ours = tempfile::tempdir().unwrap();
        let theirs = tempfile::tempdir().unwrap();
        let data = std::fs::read(archive).unwrap();
        let result = apply_tar(&mut &data[..], ours.path(), &ApplyOptions::default());
        let gnu_ok = gnu_tar(archive, theirs.path());
        if let Some((_, why)) = REFUSED.iter().find(|(n, _)| *n == name) {
            assert!(gnu_ok, "{name}: GNU tar extracts it");
            assert_eq!(result.unwrap_err().to_string(), *why, "{name}");
        } else if gnu_ok {
            if let Err(e) = &result {
                panic!("{name}: GNU tar extracts it, rdpull says: {e}");
            }
            let header_mtime = MTIME_FROM_HEADER.iter().find(|(n, _)| *n == name);
            let (ours_list, theirs_list) = match header_mtime {
                None => (listing(ours.path()), listing(theirs.path())),
                Some((_, mtime)) => {
                    let (ours_list, theirs_list) = (listing(ours.path()), listing(theirs.path()));
                    assert!(ours_list
                        .lines()
                        .all(|l| l.ends_with("\t-") || l.ends_with(mtime)));
                    (without_mtimes(&ours_list), without_mtimes(&theirs_list))
                }
            };
            assert_eq!(
                ours_list, theirs_list,
                "{name}: tree differs from GNU tar's"
            );
            same_files(ours.path(), theirs.path());
            same += 1;
        } else if ACCEPTED_BEYOND_GNU.contains(&name) {
            assert!(result.is_ok(), "{name}: {result:?}");
        } else {
            let e = result.expect_err(name).to_string();
            assert!(!e.contains('\n'), "{name}: one line: {e}");
        }
    }
    assert!(same >= 30, "only {same} archives compared");
}

/// The testbed's listing with mtimes, sizes for content: [`same_files`] compares the
/// bytes (the corpus has 60 GB sparse files, which hashing would read in full).
fn listing(dir: &Path) -> String {
    tree_manifest(dir, &["--mtime", "--no-hash"])
}

fn without_mtimes(listing: &str) -> String {
    listing
        .lines()
        .map(|l| l.rsplit_once('\t').unwrap().0.to_string() + "\n")
        .collect()
}

/// Every regular file below `a` has the same bytes as its namesake below `b` (the
/// listings, already equal, say which exist).
fn same_files(a: &Path, b: &Path) {
    for entry in std::fs::read_dir(a).unwrap() {
        let entry = entry.unwrap();
        let (pa, pb) = (entry.path(), b.join(entry.file_name()));
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            same_files(&pa, &pb);
        } else if kind.is_file() {
            assert!(same_content(&pa, &pb), "{}: content differs", pa.display());
        }
    }
}

/// Whether two files of one length hold the same bytes, reading only the data extents
/// of either (holes read as zeros), so that sparse files compare in milliseconds.
fn same_content(a: &Path, b: &Path) -> bool {
    let (fa, fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let len = fa.metadata().unwrap().len();
    assert_eq!(len, fb.metadata().unwrap().len());
    let mut extents = data_extents(&fa, len);
    extents.extend(data_extents(&fb, len));
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    extents.into_iter().all(|(mut off, end)| {
        while off < end {
            let n = (end - off).min(ba.len() as u64) as usize;
            fa.read_exact_at(&mut ba[..n], off).unwrap();
            fb.read_exact_at(&mut bb[..n], off).unwrap();
            if ba[..n] != bb[..n] {
                return false;
            }
            off += n as u64;
        }
        true
    })
}

fn data_extents(f: &File, len: u64) -> Vec<(u64, u64)> {
    let mut extents = Vec::new();
    let mut off = 0;
    while off < len {
        let start = match rustix::fs::seek(f, SeekFrom::Data(off)) {
            Ok(start) => start,
            Err(Errno::NXIO) => break,
            Err(e) => panic!("SEEK_DATA: {e}"),
        };
        let end = rustix::fs::seek(f, SeekFrom::Hole(start)).unwrap();
        extents.push((start, end));
        off = end;
    }
    extents
}
