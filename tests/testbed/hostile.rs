//! The hostile-image family: images built here (busybox-static as the rootfs) that
//! attack the tool that runs them, each run through the four paths (the built-in
//! launcher, `--runtime runc`, `--runtime crun`, and `rdpull bundle` then `runc run`).
//! Every path must give the same answer, ran (with the same exit code and output) or
//! refused (with the same one line), and leave the host as it was: the canary
//! directories beside the store and in /tmp unchanged by content, mode, mtime and
//! nlink; no mount and no process left; `ps -a` empty after `--rm`; each run within a
//! bound. Sockets are not in the family: a tar cannot hold one.

use super::four_paths::{four_paths, ran, refused, Outcome};
use super::*;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

struct Case {
    name: String,
    /// The layer over busybox's.
    layer: Vec<u8>,
    /// The image config's `config` section.
    config: serde_json::Value,
    want: Outcome,
}

/// The directories an escape would write to: one beside the store, one in /tmp.
struct Canaries {
    beside: PathBuf,
    tmp: PathBuf,
}

impl Canaries {
    fn make(t: &Path) -> Canaries {
        let c = Canaries {
            beside: t.join("canary"),
            tmp: PathBuf::from(format!("/tmp/rdpull-canary-{}", std::process::id())),
        };
        for dir in [&c.beside, &c.tmp] {
            let _ = std::fs::remove_dir_all(dir);
            std::fs::create_dir_all(dir.join("pts")).unwrap();
            std::fs::write(dir.join("passwd"), "root:x:0:0::/canary-home:/bin/sh\n").unwrap();
            std::fs::write(dir.join("hosts"), "canary\n").unwrap();
        }
        c
    }

    /// Every entry with its type, mode, mtime, nlink and content.
    fn state(&self) -> Vec<String> {
        let mut out = Vec::new();
        for dir in [&self.beside, &self.tmp] {
            walk(dir, &mut out);
        }
        out
    }
}

impl Drop for Canaries {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

fn walk(path: &Path, out: &mut Vec<String>) {
    let m = std::fs::symlink_metadata(path).unwrap();
    let content = if m.is_file() {
        std::fs::read(path).unwrap()
    } else {
        vec![]
    };
    out.push(format!(
        "{} {:o} {}.{} {} {:?}",
        path.display(),
        m.mode(),
        m.mtime(),
        m.mtime_nsec(),
        m.nlink(),
        String::from_utf8_lossy(&content)
    ));
    if m.is_dir() {
        let mut names: Vec<PathBuf> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for n in names {
            walk(&n, out);
        }
    }
}

/// `../` enough times to climb out of any rootfs, then `to` (absolute) from `/`.
fn climbing(to: &Path) -> String {
    format!(
        "{}{}",
        "../".repeat(24),
        to.display().to_string().trim_start_matches('/')
    )
}

/// A layer with `entries` after the directories their paths need.
fn layer(dirs: &[&str], build: impl FnOnce(&mut rdpull_testkit::Tar)) -> Vec<u8> {
    let mut t = rdpull_testkit::Tar::default();
    for d in dirs {
        t.dir(&format!("{d}/"));
    }
    build(&mut t);
    t.finish()
}

/// A node of tar type `typ` (`'3'` char device, `'4'` block, `'6'` FIFO) at `name`.
fn node(t: &mut rdpull_testkit::Tar, name: &str, typ: u8, dev: (u32, u32)) {
    t.entry(rdpull_testkit::Hdr {
        name: name.as_bytes(),
        typ,
        mode: 0o644,
        dev,
        ..Default::default()
    });
}

/// The parents a destination's layer must make (`/dev` for `/dev/pts`).
fn parents(dest: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = dest[at..].find('/') {
        out.push(&dest[..at + i]);
        at += i + 1;
    }
    out.retain(|d| *d != "etc");
    out
}

const DESTINATIONS: &[&str] = &[
    "proc",
    "sys",
    "dev",
    "etc/hosts",
    "etc/hostname",
    "etc/resolv.conf",
    "dev/pts",
    "dev/shm",
    "dev/mqueue",
    "sys/fs/cgroup",
];

fn cmd(args: &[&str]) -> serde_json::Value {
    serde_json::json!({"Cmd": args})
}

/// Symlinks (absolute, climbing, chained) and odd nodes at every mount destination.
fn destination_cases(c: &Canaries) -> Vec<Case> {
    let mut cases = Vec::new();
    for dest in DESTINATIONS {
        let targets = [
            ("absolute", c.tmp.display().to_string()),
            ("climbing", climbing(&c.beside)),
            ("chained", "/hop1".to_string()),
        ];
        for (kind, target) in targets {
            cases.push(Case {
                name: format!("{dest} {kind} symlink"),
                layer: layer(&parents(dest), |t| {
                    t.symlink("hop1", "hop2")
                        .symlink("hop2", &c.tmp.display().to_string())
                        .symlink(dest, &target);
                }),
                config: cmd(&["true"]),
                want: ran(""),
            });
        }
        let is_file = dest.starts_with("etc/");
        let mut nodes: Vec<(&str, u8, (u32, u32))> =
            vec![("FIFO", b'6', (0, 0)), ("device", b'4', (254, 0))];
        if !is_file {
            nodes.push(("file", b'0', (0, 0)));
        }
        for (kind, typ, dev) in nodes {
            cases.push(Case {
                name: format!("{dest} as a {kind}"),
                layer: layer(&parents(dest), |t| node(t, dest, typ, dev)),
                config: cmd(&["true"]),
                want: ran(""),
            });
        }
        if is_file {
            cases.push(Case {
                name: format!("{dest} as a directory"),
                layer: layer(&parents(dest), |t| {
                    t.dir(&format!("{dest}/"));
                }),
                config: cmd(&["true"]),
                want: refused(&format!(
                    "unsafe image path /{dest}: a directory in the image, where /{dest} is mounted"
                )),
            });
        }
    }
    cases
}

/// The rest: `/etc` itself, the working directory, account files, users, sizes.
fn other_cases(c: &Canaries) -> Vec<Case> {
    let tmp = c.tmp.display().to_string();
    let fifo = |name: &'static str| layer(&[], move |t| node(t, name, b'6', (0, 0)));
    let big_passwd = {
        let mut data = b"root:x:0:0::/root:/bin/sh\n".to_vec();
        data.resize(200 << 20, b'#');
        data
    };
    let env: Vec<String> = (0..5000).map(|i| format!("V{i}=x{i}")).collect();
    let mut many_args = vec!["echo".to_string()];
    many_args.extend((0..70_000).map(|_| "a".repeat(23)));
    let range = |u: &str| {
        refused(&format!(
            "user {u}: uids and gids must be in range 0-2147483647"
        ))
    };
    let user = |name: &str, u: &str, want: Outcome| Case {
        name: name.to_string(),
        layer: layer(&[], |_| {}),
        config: serde_json::json!({"User": u, "Cmd": ["id", "-u"]}),
        want,
    };
    vec![
        Case {
            name: "/etc as a symlink".into(),
            layer: layer(&[], |t| {
                t.symlink("etc", &tmp);
            }),
            config: cmd(&["true"]),
            want: refused(
                "unsafe image path /etc: a symlink in the image, where /etc/hostname is mounted",
            ),
        },
        Case {
            name: "workdir through an absolute symlink".into(),
            layer: layer(&[], |t| {
                t.symlink("w", &tmp);
            }),
            config: serde_json::json!({"WorkingDir": "/w/made", "Cmd": ["sh", "-c", "pwd"]}),
            // Made where the link points, inside the rootfs.
            want: ran(&format!("{tmp}/made\n")),
        },
        Case {
            name: "workdir through a climbing symlink".into(),
            layer: layer(&[], |t| {
                t.symlink("w", &climbing(&c.beside));
            }),
            config: serde_json::json!({"WorkingDir": "/w/made", "Cmd": ["true"]}),
            want: ran(""),
        },
        Case {
            name: "workdir as a FIFO".into(),
            layer: fifo("w"),
            config: serde_json::json!({"WorkingDir": "/w", "Cmd": ["true"]}),
            want: refused("working directory /w: Not a directory (os error 20)"),
        },
        Case {
            name: "/etc/passwd as a FIFO".into(),
            layer: fifo("etc/passwd"),
            config: cmd(&["true"]),
            want: refused("rootfs /etc/passwd: not a regular file (a FIFO)"),
        },
        Case {
            name: "/etc/group as a FIFO".into(),
            layer: fifo("etc/group"),
            config: cmd(&["true"]),
            want: refused("rootfs /etc/group: not a regular file (a FIFO)"),
        },
        Case {
            name: "/etc/passwd as a device".into(),
            layer: layer(&[], |t| node(t, "etc/passwd", b'3', (1, 5))),
            config: cmd(&["true"]),
            want: refused("rootfs /etc/passwd: not a regular file (a character device)"),
        },
        Case {
            name: "/etc/passwd of 200 MB".into(),
            layer: layer(&[], |t| {
                t.file("etc/passwd", &big_passwd);
            }),
            config: cmd(&["true"]),
            want: refused(
                "rootfs /etc/passwd: 209715200 bytes, more than the 16777216 rdpull reads",
            ),
        },
        Case {
            name: "/etc/passwd with bytes that are not UTF-8".into(),
            layer: layer(&[], |t| {
                t.file(
                    "etc/passwd",
                    b"root:x:0:0:\xff\xfe:/root:/bin/sh\nbin\xff:x:1:1::/:/bin/sh\nweb:x:33:33::/srv\xff:/bin/sh\n",
                );
            }),
            config: serde_json::json!({"User": "web", "Cmd": ["sh", "-c", "id -u; echo $HOME"]}),
            want: ran("33\n/srv\u{fffd}\n"),
        },
        Case {
            name: "/etc/passwd as a symlink to a host file".into(),
            layer: layer(&[], |t| {
                t.symlink("etc/passwd", &format!("{tmp}/passwd"));
            }),
            config: cmd(&["sh", "-c", "echo $HOME"]),
            want: ran("/\n"),
        },
        user("user 4294967295", "4294967295", range("4294967295")),
        user("user -1", "-1", range("-1")),
        user(
            "a huge user",
            "99999999999999999999",
            range("99999999999999999999"),
        ),
        user("group 4294967295", "0:4294967295", range("0:4294967295")),
        user("user 65536", "65536", ran("65536\n")),
        Case {
            name: "5000 environment entries".into(),
            layer: layer(&[], |_| {}),
            config: serde_json::json!({"Env": env, "Cmd": ["sh", "-c", "echo $V4999"]}),
            want: ran("x4999\n"),
        },
        Case {
            name: "an argument of 200 KB".into(),
            layer: layer(&[], |_| {}),
            config: serde_json::json!({"Entrypoint": ["echo", "a".repeat(200_000)]}),
            want: refused("exec: argument 1 is 200000 bytes, more than the 131071 execve takes"),
        },
        Case {
            name: "70000 arguments".into(),
            layer: layer(&[], |_| {}),
            config: serde_json::json!({"Entrypoint": many_args}),
            want: refused("exec: 70001 arguments and 3 environment entries take"),
        },
    ]
}

/// Does any process still have its root or cwd under `dir`?
fn processes_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        for link in ["root", "cwd"] {
            if let Ok(p) = std::fs::read_link(e.path().join(link)) {
                if p.starts_with(dir) {
                    found.push(format!("{} {link} {}", e.path().display(), p.display()));
                }
            }
        }
    }
    found
}

/// Run `case`'s image through the four paths; each must end as the case wants.
fn run_case(root: &Path, t: &Path, image: &str, case: &Case) {
    for (path, got) in four_paths(root, t, image, &[]) {
        let what = format!("{}: {path}", case.name);
        match (&case.want, &got) {
            // The size case's line ends in numbers computed from the environment.
            (Outcome::Refused(w), Outcome::Refused(g)) if w.ends_with(" take") => {
                assert!(g.starts_with(w.as_str()), "{what}: {g}");
            }
            _ => assert_eq!(got, case.want, "{what}"),
        }
    }
}

#[test]
fn hostile_images_are_refused_or_run_harmlessly_the_same_way_on_every_path() {
    skip_unless_root!();
    setup();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    let canaries = Canaries::make(t.path());
    let before = canaries.state();
    let base = rdpull_testkit::oci::busybox_layer();
    let mut cases = destination_cases(&canaries);
    cases.extend(other_cases(&canaries));
    for (i, case) in cases.iter().enumerate() {
        let image = rdpull_testkit::oci::push(
            REG,
            "hostile",
            &format!("case{i}-{}", std::process::id()),
            &[&base, &case.layer],
            case.config.clone(),
        );
        ok(rdpull(&root, &["--plain-http", "-q", "pull", &image]));
        let layers = rdpull_testkit::listing(&root.join("snapshots"));
        run_case(&root, t.path(), &image, case);
        // The image's layers never change: a run's writes go to its own snapshot.
        assert_eq!(
            rdpull_testkit::listing(&root.join("snapshots")),
            layers,
            "{}: layers",
            case.name
        );
        assert_eq!(canaries.state(), before, "{}: a canary changed", case.name);
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        for dir in [&canaries.beside, &canaries.tmp, &root] {
            assert!(
                !mounts.contains(dir.to_str().unwrap()),
                "{}: a mount left on {}",
                case.name,
                dir.display()
            );
        }
        assert_eq!(
            processes_under(t.path()),
            Vec::<String>::new(),
            "{}: processes left",
            case.name
        );
        let (_, active) = snapshots(&root);
        assert!(
            active.is_empty(),
            "{}: snapshots left: {active:?}",
            case.name
        );
    }
}
