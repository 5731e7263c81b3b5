//! Test helpers for rdpull's crates: a raw tar writer that can write any name (hostile
//! ones included, which well-behaved tar builders refuse), a compact tree lister,
//! [`registry::FakeRegistry`], an in-process registry that misbehaves on request, blobs
//! downloaded from it through rdpull-fetch ([`download`]), images pushed to the
//! testbed's registry ([`oci`]), and the way to the shared testbed's scripts
//! ([`testbed`]).

pub mod cri;
pub mod download;
pub mod oci;
pub mod registry;
pub mod testbed;

/// Does this process run as root? Most of rdpull's tests need it: whiteouts are device
/// nodes, layers set owners and `trusted.*` xattrs.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Return from the calling test, saying so on stderr, unless it runs as root.
/// `scripts/test` (and CI) run as root, so there every test runs.
#[macro_export]
macro_rules! skip_unless_root {
    () => {
        if !$crate::is_root() {
            eprintln!(
                "skipped {}: needs root (devices, owners, trusted.* xattrs); scripts/test runs it as root",
                std::thread::current().name().unwrap_or("this test")
            );
            return;
        }
    };
}

/// `n` bytes of xorshift noise from `seed`: incompressible, deterministic test data.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Default)]
pub struct Tar {
    pub out: Vec<u8>,
}

pub struct Hdr<'a> {
    pub name: &'a [u8],
    pub typ: u8,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub link: &'a [u8],
    pub data: &'a [u8],
    pub dev: (u32, u32),
}

impl Default for Hdr<'_> {
    fn default() -> Self {
        Hdr {
            name: b"",
            typ: b'0',
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            link: b"",
            data: b"",
            dev: (0, 0),
        }
    }
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0width$o}", v, width = field.len() - 1);
    field[..s.len()].copy_from_slice(s.as_bytes());
}

impl Tar {
    pub fn entry(&mut self, h: Hdr) -> &mut Self {
        let mut b = [0u8; 512];
        assert!(
            h.name.len() <= 100 && h.link.len() <= 100,
            "use pax() for long names"
        );
        b[..h.name.len()].copy_from_slice(h.name);
        octal(&mut b[100..108], h.mode as u64);
        octal(&mut b[108..116], h.uid as u64);
        octal(&mut b[116..124], h.gid as u64);
        octal(&mut b[124..136], h.data.len() as u64);
        octal(&mut b[136..148], h.mtime);
        b[156] = h.typ;
        b[157..157 + h.link.len()].copy_from_slice(h.link);
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        octal(&mut b[329..337], h.dev.0 as u64);
        octal(&mut b[337..345], h.dev.1 as u64);
        b[148..156].copy_from_slice(b"        ");
        let sum: u32 = b.iter().map(|&x| x as u32).sum();
        let s = format!("{sum:06o}\0 ");
        b[148..156].copy_from_slice(s.as_bytes());
        self.out.extend_from_slice(&b);
        self.out.extend_from_slice(h.data);
        let pad = (512 - h.data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0, pad));
        self
    }

    /// A PAX extended header applying to the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (k, v) in records {
            let body_len = 1 + k.len() + 1 + v.len() + 1;
            let mut len = body_len + 1;
            while format!("{len}").len() + body_len != len {
                len += 1;
            }
            data.extend_from_slice(format!("{len} {k}=").as_bytes());
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        self.entry(Hdr {
            name: b"PaxHeader",
            typ: b'x',
            data: &data,
            ..Default::default()
        })
    }

    /// A GNU long name ('L') for the next entry.
    pub fn gnu_long_name(&mut self, name: &[u8]) -> &mut Self {
        let mut d = name.to_vec();
        d.push(0);
        self.entry(Hdr {
            name: b"././@LongLink",
            typ: b'L',
            data: &d,
            ..Default::default()
        })
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(Hdr {
            name: name.as_bytes(),
            data,
            ..Default::default()
        })
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(Hdr {
            name: name.as_bytes(),
            typ: b'5',
            mode: 0o755,
            ..Default::default()
        })
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(Hdr {
            name: name.as_bytes(),
            typ: b'2',
            mode: 0o777,
            link: target.as_bytes(),
            ..Default::default()
        })
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(Hdr {
            name: name.as_bytes(),
            typ: b'1',
            link: target.as_bytes(),
            ..Default::default()
        })
    }

    /// Every way a tar entry may try to leave the directory it is applied to: `..` and
    /// absolute names, symlinks (absolute, relative, chained) that later entries write
    /// through, and whiteouts of names outside. A safe unpacker keeps each inside: the
    /// root's `/canary` gets `canary` through `sl-abs`, and the other writes through a
    /// symlink land at `/via-rel.txt` and `/via-chain.txt`.
    pub fn escapes(&mut self, canary: &[u8]) -> &mut Self {
        self.file("../escape-dotdot.txt", b"x")
            .file("a/../../escape-mid.txt", b"x")
            .file("/abs-escape.txt", b"x")
            .symlink("sl-abs", "/")
            .file("sl-abs/canary", canary)
            .symlink("sl-rel", "../../../../../../..")
            .file("sl-rel/via-rel.txt", b"x")
            .symlink("chain1", "chain2")
            .symlink("chain2", "../../chain3")
            .symlink("chain3", "/..")
            .file("chain1/via-chain.txt", b"x")
            .file("../.wh.canary", b"")
            .file("a/../../.wh.escape-target", b"")
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.out);
        v.extend(std::iter::repeat_n(0, 1024));
        v
    }
}

/// `path type mode uid:gid content xattrs`, one line per entry below `root`, sorted.
/// Content: file bytes (lossy, or sha-free length for big files), link target, dev numbers.
pub fn listing(root: &Path) -> Vec<String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out.into_values().collect()
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        let md = std::fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        let rel = format!("/{}", p.strip_prefix(root).unwrap().display());
        let (t, content) = if ft.is_dir() {
            ("d", String::new())
        } else if ft.is_symlink() {
            ("l", std::fs::read_link(&p).unwrap().display().to_string())
        } else if ft.is_file() {
            let data = std::fs::read(&p).unwrap();
            let c = if data.len() <= 64 {
                String::from_utf8_lossy(&data).into_owned()
            } else {
                format!("<{} bytes>", data.len())
            };
            ("f", c)
        } else if ft.is_char_device() || ft.is_block_device() {
            let d = md.rdev();
            (
                if ft.is_char_device() { "c" } else { "b" },
                format!("{},{}", rustix::fs::major(d), rustix::fs::minor(d)),
            )
        } else if ft.is_fifo() {
            ("p", String::new())
        } else {
            ("?", String::new())
        };
        let mut xattrs = Vec::new();
        let mut names = vec![0u8; 65536];
        if let Ok(len) = rustix::fs::llistxattr(&p, &mut names[..]) {
            for n in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
                let name = String::from_utf8_lossy(n).into_owned();
                let mut v = vec![0u8; 4096];
                let len = rustix::fs::lgetxattr(&p, n, &mut v[..]).unwrap();
                v.truncate(len);
                xattrs.push(format!("{name}={}", String::from_utf8_lossy(&v)));
            }
        }
        xattrs.sort();
        let mut line = format!(
            "{rel} {t} {:04o} {}:{}",
            md.mode() & 0o7777,
            md.uid(),
            md.gid()
        );
        for field in [content, xattrs.join(",")] {
            if !field.is_empty() {
                line.push(' ');
                line.push_str(&field);
            }
        }
        out.insert(rel.clone(), line);
        if ft.is_dir() {
            walk(root, &p, out);
        }
    }
}

/// A read-only overlay mount of `lowers` (top first) at `mnt`, unmounted on drop, so that
/// a failing assertion leaks no mount. Needs root.
pub struct OverlayMount(PathBuf);

impl OverlayMount {
    pub fn new(lowers: &[PathBuf], mnt: &Path) -> OverlayMount {
        let lowers: Vec<String> = lowers.iter().map(|d| d.display().to_string()).collect();
        let st = std::process::Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!("ro,lowerdir={}", lowers.join(":")))
            .arg(mnt)
            .status()
            .expect("run mount");
        assert!(st.success(), "overlay mount of {lowers:?} failed");
        OverlayMount(mnt.to_path_buf())
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// The names in `dir`, sorted.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
